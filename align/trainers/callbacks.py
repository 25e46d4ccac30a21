"""Callbacks that make the Trainer stages (SFT, RM) safe to interrupt and stop on NaN, without touching the loop.

- Checkpoints: each checkpoint the Trainer writes is marked complete (align.runtime.checkpoints) and only then are
  old ones removed, so resume always finds a complete one; on SIGTERM/SIGUSR1 the Trainer finishes its step, saves,
  and the stage stops with Preempted (exit status 75).
- Non-finite guard: a NaN or inf in a training forward pass's loss (where the model returns one) or logits (SFT's
  at labelled positions, the RM's rewards), or a non-finite gradient norm, stops the run before the optimizer step,
  so no checkpoint holds NaN weights.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import TrainerCallback

from align.core.console import is_main_process
from align.runtime import checkpoints, faults
from align.runtime.distributed import barrier
from align.runtime.guards import require_finite
from align.runtime.preemption import Preempted, stop_request
from align.runtime.runs import MetricsLog


def reliability_callbacks(metrics_log: MetricsLog, keep: int) -> list[TrainerCallback]:
    callbacks = [CompleteCheckpoints(metrics_log, keep), NonFiniteGuard()]
    if faults.target() is not None:
        callbacks.append(faults.nan_output_callback())
    return callbacks


class CompleteCheckpoints(TrainerCallback):
    """Marks checkpoints complete, keeps the newest `keep`, and turns a stop signal into save-then-Preempted."""

    def __init__(self, metrics_log: MetricsLog, keep: int):
        self.metrics_log = metrics_log
        self.keep = keep  # the Trainer's own rotation is off: it would delete before the new checkpoint is marked
        self.stop = stop_request()
        self.stopping = False

    def on_step_end(self, args, state, control, **kwargs):
        if self.stop.requested():
            self.stopping = control.should_save = control.should_training_stop = True

    def on_save(self, args, state, control, **kwargs):
        run_dir = Path(args.output_dir)
        checkpoint = run_dir / f"checkpoint-{state.global_step}"
        barrier()  # every process has written its part
        if is_main_process():
            checkpoints.mark_complete(checkpoint, len(self.metrics_log))
            checkpoints.remove_old(run_dir, self.keep)
        barrier()
        if self.stopping:
            raise Preempted(f"stopped on {self.stop.describe()} after step {state.global_step}: wrote {checkpoint}")


class NonFiniteGuard(TrainerCallback):
    """Checks the output of every training forward pass and the gradient norm before every optimizer step."""

    def __init__(self):
        self.step = 0
        self.run_dir = Path(".")
        self.handle = None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.run_dir = Path(args.output_dir)
        self.handle = model.register_forward_hook(self.check_output)

    def on_step_begin(self, args, state, control, **kwargs):
        self.step = state.global_step + 1

    def check_output(self, module, inputs, output):
        if module.training:
            name = "loss" if output.get("loss") is not None else "logits"
            require_finite(name, output[name].detach(), self.run_dir, self.step)

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        require_finite("gradient norm", torch.nn.utils.get_total_norm(grads), self.run_dir, self.step)

    def on_train_end(self, args, state, control, **kwargs):
        if self.handle is not None:
            self.handle.remove()
