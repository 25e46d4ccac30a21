"""Stop on a NaN or inf before it reaches the weights, naming the quantity and the step.

A non-finite loss, reward or gradient norm is checked before the optimizer step that would use it (under DeepSpeed,
whose engine steps inside backward(), the gradient norm right after that step), so every checkpoint on disk stays
finite; the run stops with one message (exit status 2, like other errors the user has to look into) that names the
last good checkpoint to resume from once the cause is fixed.
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
    """Raise NonFinite unless every element of `value` (a number or a tensor) is finite, on every process: the
    processes agree first, so that one rank's NaN stops them all here rather than leaving the others waiting in the
    next collective. None passes. The test-only fault seam (align.runtime.faults) makes `quantity` NaN at `step`
    here, so that the guard is what a test exercises."""
    require_all_finite({quantity: value}, run_dir, step, unit)


def require_all_finite(values: dict, run_dir: Path, step: int, unit: str = "step") -> None:
    """require_finite for several quantities at once, with one agreement between the processes (every process must
    pass the same names, in the same order). The first non-finite one is named."""
    problem = None
    for quantity, value in values.items():
        problem = problem or non_finite(quantity, faults.poison(quantity, step, value))
    bad_ranks = failing_ranks(problem is None)
    if problem is None and not bad_ranks:
        return
    last = newest_complete(run_dir)
    where = f" on rank {', '.join(map(str, bad_ranks))}" if bad_ranks else ""
    raise NonFinite(f"non-finite {problem or 'value'} at {unit} {step}{where}: stopped before anything of this step "
                    f"was saved; the last good checkpoint is {last or 'none (nothing was saved yet)'}. Re-running "
                    "resumes from it, so fix the cause first (learning rate, data, the reward model's weights)")


def non_finite(quantity: str, value) -> str | None:
    """`quantity (its first non-finite value)` if `value` has one, else None; None passes."""
    if value is None:
        return None
    if isinstance(value, (int, float)):
        return None if math.isfinite(value) else f"{quantity} ({value})"
    import torch

    finite = torch.isfinite(value)
    return None if bool(finite.all()) else f"{quantity} ({value[~finite].flatten()[0].item()})"


def failing_ranks(finite: bool) -> list[int] | None:
    """With several processes, the ranks whose check failed, the same list on every process (one all-reduce of a
    flag per rank); None in a one-process run."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return None
    flags = torch.zeros(dist.get_world_size(), device="cuda" if dist.get_backend() == "nccl" else "cpu")
    flags[dist.get_rank()] = 0.0 if finite else 1.0
    dist.all_reduce(flags)
    return [rank for rank, flag in enumerate(flags.tolist()) if flag]
