"""Test helpers: composing the real config tree, running the entry points as a user does, comparing weights.

Test files import these with `from helpers import ...` (pytest puts tests/ on sys.path: the folder has no
__init__.py, so its conftest.py and test files are imported with their own folder prepended). conftest.py holds only
the fixtures.

torch-heavy imports (safetensors.torch, the checkpoint reader) stay inside the functions that need them, so that
importing this module, as every test file does, costs only Hydra.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict

REPO = Path(__file__).resolve().parent.parent
CONF = REPO / "conf"
SHARED_DATA = Path(os.environ.get("ALIGN_SHARED_DATA", REPO.parent / "shared" / "data"))  # docs/data.md


def offline_env(extra: dict | None = None) -> dict:
    """The environment the tests run the entry points in: this one, offline, no tokenizer threads, plus `extra`."""
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **(extra or {})}


def compose_config(*overrides: str, stage: str = "sft"):
    """The config a stage composes, as `python -m align.<stage> <overrides>` would, with Hydra's own node (run and
    sweep directories) for the tests that check it; align.core.config.compose gives the config without it."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3", job_name=stage):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=True)


def without_hydra(cfg):
    """A composed config without its `hydra` node (what a stage's main receives), interpolations unresolved."""
    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    with open_dict(cfg):
        cfg.pop("hydra", None)
    return cfg


def tiny_config(*overrides: str, stage: str = "sft"):
    """A validated Config for the tiny experiment."""
    from align.core.config import compose, load

    return load(compose(["+experiment=tiny", *overrides], stage=stage))


def rm_on_a_slice(data_root: Path, root: Path, *overrides: str, train: int, held_out: int = 100):
    """The tiny RM stage's config on the first `train` and `held_out` of the world's pairs, from a randomly initialised
    model saved in root/sft (its own SFT model would need an SFT run)."""
    from align.modeling.models import load_causal_lm, load_tokenizer

    cfg = tiny_config(f"paths.data={data_root}", f"paths.root={root}", "rm.eval_steps=100", "rm.save_steps=100",
                      "rm.normalize_samples=50", *overrides, stage="rm")
    for split, n in (("prefs_train", train), ("prefs_eval", held_out)):
        with open(getattr(cfg.data, split)) as records:
            (root / f"{split}.jsonl").write_text("".join(records.readlines()[:n]))
        setattr(cfg.data, split, str(root / f"{split}.jsonl"))
    tokenizer = load_tokenizer(cfg.model)
    load_causal_lm(cfg.model, tokenizer, None, seed=0).save_pretrained(root / "sft")
    tokenizer.save_pretrained(root / "sft")
    cfg.rm.init_from = str(root / "sft")
    return cfg


def run_module(module: str, *overrides: str, env: dict | None = None, timeout: int = 600):
    """Run `python -m module overrides` the way a user does; returns the CompletedProcess."""
    return subprocess.run([sys.executable, "-m", module, *overrides], cwd=REPO, env=offline_env(env),
                          capture_output=True, text=True, timeout=timeout)


def start_module(module: str, *overrides: str, log: Path) -> subprocess.Popen:
    """Start `python -m module overrides` in the background, its stdout and stderr going to the file `log`."""
    with open(log, "w") as out:
        return subprocess.Popen([sys.executable, "-m", module, *overrides], cwd=REPO, env=offline_env(), stdout=out,
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
