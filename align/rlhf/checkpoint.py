"""PPO checkpoints: everything needed to continue a run exactly, written atomically.

A checkpoint is a directory `checkpoint-<update>` holding the policy and value weights (safetensors), the optimizer
and scheduler states, and the loop state (update count, KL coefficient, the global RNG, the prompt-order and
sampling generators, the prompts still queued). It is written under a temporary name, flushed and marked complete
(align.checkpoints), then renamed into place, so a kill never leaves a directory that resume would trust.
Everything is loaded with `weights_only=True`.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

from align import checkpoints


def save(run_dir: Path, update: int, model, optimizer, scheduler, loop: dict, keep: int, metrics_rows: int) -> Path:
    from safetensors.torch import save_model

    final = run_dir / f"checkpoint-{update}"
    tmp = run_dir / f".checkpoint-{update}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_model(model, str(tmp / "model.safetensors"))  # handles GPT-2's tied embedding and output weights
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    torch.save({**loop, "rng": torch.get_rng_state()}, tmp / "loop.pt")
    checkpoints.mark_complete(tmp, metrics_rows)
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    checkpoints.fsync_dir(run_dir)
    checkpoints.remove_old(run_dir, keep)
    return final


def load(path: Path, model, optimizer, scheduler) -> dict:
    """Restore model, optimizer, scheduler and the global RNG in place; returns the loop state."""
    from safetensors.torch import load_model

    load_model(model, str(path / "model.safetensors"))
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
    loop = torch.load(path / "loop.pt", weights_only=True)
    torch.set_rng_state(loop.pop("rng"))
    return loop
