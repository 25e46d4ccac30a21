"""The import rule: composing a config, `python -m align.<stage> --cfg job` and importing align.core or align.runtime
import no torch, transformers or trl (so that a typo in an override fails in a second, and config tooling stays light).

Each case runs in a fresh interpreter with `python -X importtime`, which lists every module the process imports; a
failure names the forbidden module and the chain of imports that pulled it in.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from helpers import REPO, offline_env

FORBIDDEN = ("torch", "transformers", "trl")
HYDRA_STAGES = ["sft", "rm", "ppo", "eval", "pipeline", "chat"]  # the entry points with a Hydra main
LIGHT_MODULES = sorted(  # what every entry point imports before the config is composed
    ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
    for layer in ("core", "runtime") for path in (REPO / "align" / layer).glob("*.py")
)


def run_python(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-X", "importtime", *args], cwd=REPO, env=offline_env(),
                          capture_output=True, text=True, timeout=120)


def imported(stderr: str) -> list[tuple[int, str]]:
    """(nesting depth, module) of each `-X importtime` line, in the order the imports finished."""
    rows = []
    for line in stderr.splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            name = line.split("|")[2]
            if name.strip() == "imported package":
                continue
            rows.append(((len(name) - len(name.lstrip())) // 2, name.strip()))
    return rows


def forbidden_imports(stderr: str) -> list[str]:
    """One line per forbidden top-level package imported, with the chain of importers that led to it."""
    rows = imported(stderr)
    problems = []
    for package in FORBIDDEN:
        first = next((i for i, (_, name) in enumerate(rows) if name.split(".")[0] == package), None)
        if first is None:
            continue
        # An import's importer is the next finished line with a smaller nesting depth.
        chain, depth = [rows[first][1]], rows[first][0]
        for later_depth, name in rows[first + 1:]:
            if later_depth < depth:
                chain.append(name)
                depth = later_depth
        while len(chain) > 1 and chain[1].split(".")[0] == package:  # start at the package, not its first submodule
            chain.pop(0)
        problems.append(f"{package}: " + " <- ".join(chain))
    return problems


def test_the_check_sees_a_forbidden_import():
    # The checker itself can fail: a process that imports torch is caught, with the chain that imported it.
    result = run_python("-c", "import json, safetensors.torch")
    assert result.returncode == 0, result.stderr[-2000:]
    assert forbidden_imports(result.stderr) == ["torch: torch <- safetensors.torch"]


@pytest.mark.parametrize("stage", HYDRA_STAGES)
def test_cfg_job_imports_no_torch(stage):
    result = run_python("-m", f"align.{stage}", "+experiment=tiny", "--cfg", "job")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "model:" in result.stdout, "--cfg job printed no config"
    problems = forbidden_imports(result.stderr)
    assert not problems, f"python -m align.{stage} --cfg job imports:\n" + "\n".join(problems)


def test_report_help_imports_no_torch():
    # align.report has no Hydra main (it reads finished runs); its --help is its cheapest path.
    result = run_python("-m", "align.report", "--help")
    assert result.returncode == 0 and "usage:" in result.stdout, result.stderr[-3000:]
    problems = forbidden_imports(result.stderr)
    assert not problems, "python -m align.report --help imports:\n" + "\n".join(problems)


def test_core_modules_are_found():
    assert {"align.core", "align.core.config", "align.runtime.runs"} <= set(LIGHT_MODULES)


@pytest.mark.parametrize("module", ["align", "data_prep", *LIGHT_MODULES])
def test_importing_imports_no_torch(module):
    result = run_python("-c", f"import {module}")
    assert result.returncode == 0, result.stderr[-3000:]
    problems = forbidden_imports(result.stderr)
    assert not problems, f"import {module} imports:\n" + "\n".join(problems)


def test_composing_and_validating_a_config_imports_no_torch():
    code = ("from hydra import compose, initialize_config_dir\n"
            "from omegaconf import OmegaConf, open_dict\n"
            "from align.core.config import load\n"
            f"with initialize_config_dir(config_dir={str(REPO / 'conf')!r}, version_base='1.3', job_name='ppo'):\n"
            "    cfg = compose(config_name='config', overrides=['+experiment=tiny'])\n"
            "print(load(cfg).run_name)\n")
    result = run_python("-c", code)
    assert result.returncode == 0 and result.stdout.strip() == "tiny", result.stderr[-3000:]
    problems = forbidden_imports(result.stderr)
    assert not problems, "composing and loading a config imports:\n" + "\n".join(problems)
