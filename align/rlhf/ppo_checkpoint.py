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

from align.runtime import checkpoints

DEEPSPEED_TAG = "deepspeed"  # the engine's own sub-directory


def save(run_dir: Path, update: int, accelerator, model, optimizer, scheduler, loop: dict, keep: int,
         metrics_rows: int) -> Path:
    """Called on every rank with the prepared model and optimizer; each rank writes its own part."""
    from safetensors.torch import save_model

    final = run_dir / f"checkpoint-{update}"
    tmp = run_dir / f".checkpoint-{update}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    if accelerator.state.deepspeed_plugin is not None:
        # ZeRO shards optimizer states (and under ZeRO-3 the weights): every rank saves its shard through the engine
        model.save_checkpoint(str(tmp), tag=DEEPSPEED_TAG)
    elif accelerator.is_main_process:
        save_model(accelerator.unwrap_model(model), str(tmp / "model.safetensors"))  # ties GPT-2's shared weights
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    if accelerator.is_main_process:
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    torch.save({**loop, "rng": torch.get_rng_state()}, tmp / f"loop-rank{accelerator.process_index}.pt")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        checkpoints.mark_complete(tmp, metrics_rows)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        checkpoints.fsync_dir(run_dir)
        checkpoints.remove_old(run_dir, keep)
    accelerator.wait_for_everyone()
    return final


def load(path: Path, accelerator, model, optimizer, scheduler) -> dict:
    """Restore model, optimizer, scheduler and this rank's RNG in place; returns this rank's loop state."""
    from safetensors.torch import load_model

    from align.core.errors import UserError

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
