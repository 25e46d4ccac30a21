"""PPO checkpoints: everything needed to continue a run exactly, written atomically.

A checkpoint is a directory `checkpoint-<update>` holding the policy and value weights (safetensors), the optimizer
and scheduler states, and one loop state per rank (update count, KL coefficient, the global RNG, the prompt-order and
sampling generators, the prompts still queued). Under DeepSpeed, the weights and optimizer are the engine's own
checkpoint (every rank its shard), so a run resumes with the same number of processes it was saved with. A checkpoint
is written under a temporary name, flushed and marked complete (align.runtime.checkpoints), then renamed into place, so
a kill never leaves a directory that resume would trust. Our files are loaded with `weights_only=True`; DeepSpeed loads
its own with pickle.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_model, save_model

from align.core.console import is_main_process
from align.core.errors import UserError
from align.runtime import checkpoints
from align.runtime.distributed import barrier

DEEPSPEED_TAG = "deepspeed"  # the engine's own sub-directory


def save(run_dir: Path, update: int, accelerator, model, optimizer, scheduler, loop: dict, keep: int,
         metrics_rows: int) -> Path:
    """Called on every rank with the prepared model and optimizer; each rank writes its own part."""
    final = run_dir / f"checkpoint-{update}"
    tmp = run_dir / f".checkpoint-{update}.tmp"
    if is_main_process():
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier()
    if accelerator.state.deepspeed_plugin is not None:
        # ZeRO shards optimizer states (and under ZeRO-3 the weights): every rank saves its shard through the engine
        model.save_checkpoint(str(tmp), tag=DEEPSPEED_TAG)
    elif is_main_process():
        save_model(accelerator.unwrap_model(model), str(tmp / "model.safetensors"))  # ties GPT-2's shared weights
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    if is_main_process():
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    torch.save({**loop, "rng": torch.get_rng_state()}, tmp / f"loop-rank{accelerator.process_index}.pt")
    barrier()
    if is_main_process():
        checkpoints.mark_complete(tmp, metrics_rows)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        checkpoints.fsync_dir(run_dir)
        checkpoints.remove_old(run_dir, keep)
    barrier()
    return final


def load(path: Path, accelerator, model, optimizer, scheduler) -> dict:
    """Restore model, optimizer, scheduler and this rank's RNG in place; returns this rank's loop state."""
    ranks = len(list(path.glob("loop-rank*.pt")))
    if ranks != accelerator.num_processes:
        raise UserError(f"{path} was written by {ranks} processes; resume it with {ranks}, not "
                        f"{accelerator.num_processes}")
    if accelerator.state.deepspeed_plugin is not None:
        # DeepSpeed reads its own files with pickle: they are this run's, written by save() above
        model.load_checkpoint(str(path), tag=DEEPSPEED_TAG, load_lr_scheduler_states=False)
    else:
        load_model(accelerator.unwrap_model(model), str(path / "model.safetensors"))
        optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=True))
    loop = torch.load(path / f"loop-rank{accelerator.process_index}.pt", weights_only=True)
    torch.set_rng_state(loop.pop("rng"))
    return loop
