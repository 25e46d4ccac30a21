"""Shared fixtures: composing the real config tree, and the offline tiny world built once per session."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

REPO = Path(__file__).resolve().parent.parent
CONF = REPO / "conf"
SHARED_DATA = REPO.parent / "shared" / "data"


def compose_config(*overrides: str, stage: str = "sft"):
    """The config a stage composes, as `python -m align.<stage> <overrides>` would (hydra node included)."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3", job_name=stage):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=True)


def run_module(module: str, *overrides: str, env: dict | None = None, timeout: int = 600):
    """Run `python -m module overrides` the way a user does; returns the CompletedProcess."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **(env or {})}
    return subprocess.run([sys.executable, "-m", module, *overrides], cwd=REPO, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def start_module(module: str, *overrides: str, log: Path) -> subprocess.Popen:
    """Start `python -m module overrides` in the background, its stdout and stderr going to the file `log`."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    with open(log, "w") as out:
        return subprocess.Popen([sys.executable, "-m", module, *overrides], cwd=REPO, env=env, stdout=out,
                                stderr=subprocess.STDOUT)


def wait_for(condition, process: subprocess.Popen, timeout: float = 300) -> None:
    """Poll until condition() holds; fails if the process ends first or the time runs out."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, f"the process ended (status {process.returncode}) before the condition held"
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def kill_after_checkpoint_then_resume(module: str, *overrides: str, checkpoint: Path):
    """Start `python -m module overrides`, SIGKILL it once `checkpoint` is complete, run the same command again;
    returns the second run's CompletedProcess."""
    from align.runtime.checkpoints import is_complete

    run_dir = checkpoint.parent
    process = start_module(module, *overrides, log=run_dir.parent / f"{run_dir.name}.killed.log")
    try:
        wait_for(lambda: is_complete(checkpoint), process)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert not (run_dir / "final").exists(), "the run finished before it could be interrupted"
    return run_module(module, *overrides)


def same_weights(first: Path, second: Path) -> bool:
    """Bitwise equal safetensors weights of two model directories."""
    from safetensors.torch import load_file

    a, b = load_file(first / "model.safetensors"), load_file(second / "model.safetensors")
    return a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)


def world_dir(data_root: Path) -> Path:
    """Where the tiny world's files are under a data root."""
    (built,) = data_root.glob("tiny_world-*/tiny_world")
    return built


@pytest.fixture(scope="session")
def tiny_data_root(tmp_path_factory) -> Path:
    """A data root with the tiny world (default options) built into it once."""
    from align.core.config import load
    from data_prep.prepare import ensure_prepared

    root = tmp_path_factory.mktemp("data")
    cfg = compose_config("+experiment=tiny", f"paths.data={root}", "paths.root=unused")
    cfg = load(_without_hydra(cfg))
    ensure_prepared(cfg.data, [cfg.data.sft_train])
    return root


def _without_hydra(cfg):
    from omegaconf import OmegaConf, open_dict

    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    with open_dict(cfg):
        cfg.pop("hydra", None)
    return cfg


def tiny_config(*overrides: str, stage: str = "sft"):
    """A validated Config for the tiny experiment."""
    from align.core.config import load

    return load(_without_hydra(compose_config("+experiment=tiny", *overrides, stage=stage)))


@pytest.fixture(scope="module")
def tokenizer(tiny_data_root):
    """The tiny world's chat tokenizer, as the stages load it."""
    from align.modeling.models import load_tokenizer

    return load_tokenizer(tiny_config(f"paths.data={tiny_data_root}").model)


@pytest.fixture(scope="session")
def tiny_pipeline(tmp_path_factory, tiny_data_root) -> Path:
    """The runs root of the README's main job, `python -m align.pipeline +experiment=tiny`, run the hard way:
    killed (SIGKILL) once PPO has written its first checkpoint, then run again to the end. The second run's output
    is in tiny_pipeline_rerun_log."""
    root = tmp_path_factory.mktemp("runs")
    args = [sys.executable, "-m", "align.pipeline", "+experiment=tiny", f"paths.root={root}",
            f"paths.data={tiny_data_root}"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    with open(root / "first.log", "w") as log:
        first = subprocess.Popen(args, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
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
