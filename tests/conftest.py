"""Shared fixtures: the offline tiny world built once per session, its tokenizer, the tiny pipeline run.

Helpers (composing configs, running entry points) are in helpers.py; test files import them from there."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import REPO, offline_env, run_module, tiny_config


@pytest.fixture(scope="session")
def tiny_data_root(tmp_path_factory) -> Path:
    """A data root with the tiny world (default options) built into it once."""
    from align.core.config import compose, load
    from data_prep.prepare import ensure_prepared

    root = tmp_path_factory.mktemp("data")
    cfg = load(compose(["+experiment=tiny", f"paths.data={root}", "paths.root=unused"], stage="sft"))
    ensure_prepared(cfg.data, [cfg.data.sft_train])
    return root


@pytest.fixture(scope="module")
def tokenizer(tiny_data_root):
    """The tiny world's chat tokenizer, as the stages load it."""
    from align.modeling.models import load_tokenizer

    return load_tokenizer(tiny_config(f"paths.data={tiny_data_root}").model)


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory, tiny_data_root) -> Path:
    """The runs root of the README's main job, `python -m align.pipeline +experiment=tiny`, run the hard way:
    killed (SIGKILL) once PPO has written its first checkpoint, then run again to the end. The second run's output
    is in rerun.log under that root."""
    root = tmp_path_factory.mktemp("runs")
    args = [sys.executable, "-m", "align.pipeline", "+experiment=tiny", f"paths.root={root}",
            f"paths.data={tiny_data_root}"]
    with open(root / "first.log", "w") as log:
        first = subprocess.Popen(args, cwd=REPO, env=offline_env(), stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 2400
            while first.poll() is None and not list((root / "tiny" / "ppo-baseline").glob("checkpoint-*")):
                assert time.monotonic() < deadline, "the pipeline wrote no PPO checkpoint in 40 minutes"
                time.sleep(0.5)
            assert first.poll() is None, f"the pipeline ended before PPO's first checkpoint: see {root}/first.log"
        finally:
            first.kill()
            first.wait()
    rerun = run_module("align.pipeline", "+experiment=tiny", f"paths.root={root}", f"paths.data={tiny_data_root}")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    (root / "rerun.log").write_text(rerun.stdout + rerun.stderr)
    return root


@pytest.fixture(scope="session")
def tiny_sft_dir(tiny_pipeline) -> Path:
    """The SFT run directory of the tiny pipeline."""
    return tiny_pipeline / "tiny" / "sft"


@pytest.fixture(scope="session")
def tiny_rm_dir(tiny_pipeline) -> Path:
    """The RM run directory of the tiny pipeline."""
    return tiny_pipeline / "tiny" / "rm"
