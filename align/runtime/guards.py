"""Stop on a NaN or inf before it reaches the weights, naming the quantity and the step.

A non-finite loss, reward or gradient norm is checked before the optimizer step that would use it, so the weights
and every checkpoint on disk stay finite; the run stops with one message (exit status 2, like other errors the user
has to look into) that names the last good checkpoint to resume from once the cause is fixed.
"""

from __future__ import annotations

import math
from pathlib import Path

from align.core.errors import UserError
from align.runtime import faults
from align.runtime.checkpoints import newest_complete


class NonFinite(UserError):
    """A loss, reward or gradient norm became NaN or inf."""


def require_finite(quantity: str, value, run_dir: Path, step: int, unit: str = "step") -> None:
    """Raise NonFinite unless every element of `value` (a number or a tensor) is finite. None passes: under
    DeepSpeed the gradient norm is only known after the optimizer step. The test-only fault seam
    (align.runtime.faults) makes `quantity` NaN at `step` here, so that the guard is what a test exercises."""
    if value is None:
        return
    value = faults.poison(quantity, step, value)
    if isinstance(value, (int, float)):
        finite, shown = math.isfinite(value), value
    else:
        import torch

        finite = bool(torch.isfinite(value).all())
        shown = value[~torch.isfinite(value)].flatten()[0].item() if not finite else None
    if not finite:
        last = newest_complete(run_dir)
        raise NonFinite(f"non-finite {quantity} ({shown}) at {unit} {step}: stopped before the optimizer step; the "
                        f"last good checkpoint is {last or 'none (nothing was saved yet)'}. Re-running resumes from "
                        f"it, so fix the cause first (learning rate, data, the reward model's weights)")
