"""Test-only fault injection: a NaN in one quantity at one step, to check that the guards stop the run.

Off unless the environment sets ALIGN_TEST_INJECT_NAN=<quantity>@<step> (PPO: `loss@3`, `reward@3`; SFT and
RM: `output@20`, every floating-point tensor of the model's output, so its loss), on every process or, with
ALIGN_TEST_INJECT_NAN_RANK=<rank>, on one;
no config key reaches it, so a normal run cannot turn it on by accident.
"""

from __future__ import annotations

import os
from functools import cache

VARIABLE = "ALIGN_TEST_INJECT_NAN"


@cache
def target() -> tuple[str, int] | None:
    """(quantity, step) from the environment, read once per process; with ALIGN_TEST_INJECT_NAN_RANK=<rank> only on
    that rank of a multi-process run."""
    spec = os.environ.get(VARIABLE)
    if not spec:
        return None
    only_rank = os.environ.get(f"{VARIABLE}_RANK")
    if only_rank is not None and only_rank != os.environ.get("RANK", "0"):
        return None
    quantity, step = spec.rsplit("@", 1)
    return quantity, int(step)


def poison(quantity: str, step: int, value):
    """`value` times NaN if this is the quantity and step to corrupt, else `value` unchanged (called by the guard,
    align.runtime.guards.require_finite, on what it checks)."""
    return value * float("nan") if target() == (quantity, step) else value


def nan_output_callback():
    """For Trainer stages: the model's output (and so the loss) is NaN during the training step `output@<step>`."""
    from transformers import TrainerCallback

    class InjectNaNOutput(TrainerCallback):
        handle = None

        def on_step_begin(self, args, state, control, model=None, **kwargs):
            if target() == ("output", state.global_step + 1):
                self.handle = model.register_forward_hook(self.corrupt, prepend=True)

        def on_step_end(self, args, state, control, **kwargs):
            if self.handle is not None:
                self.handle.remove()
                self.handle = None

        @staticmethod
        def corrupt(module, inputs, output):
            for key, value in output.items():
                if value.is_floating_point():
                    output[key] = value * float("nan")
            return output

    return InjectNaNOutput()
