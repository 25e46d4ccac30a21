"""Pre-emption: SIGTERM or SIGUSR1 (what Slurm sends before it pre-empts a job or its time runs out) stops a stage.

`run_stage` installs the handlers before any work, so a signal that comes while data and models load is acted on
at the end of the first step. The handler only records the signal. The stage finishes the optimizer step it is in,
writes a complete checkpoint and raises Preempted; `run_stage` turns that into exit status PREEMPTED, which the
Slurm scripts turn into `scontrol requeue`. Re-running the same command resumes from that checkpoint.
"""

from __future__ import annotations

import signal

PREEMPTED = 75  # EX_TEMPFAIL from sysexits.h: "try again later"
SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class Preempted(Exception):
    """Raised once the checkpoint is on disk; the message names it."""


class StopRequest:
    """Installs the handlers; `requested()` says, at a point every process reaches together, whether to stop."""

    def __init__(self) -> None:
        self.signal: int | None = None
        for signum in SIGNALS:
            signal.signal(signum, self._record)

    def _record(self, signum, frame) -> None:
        self.signal = signum  # no printing here: the main thread may be inside a write to the same stream

    def requested(self) -> bool:
        """True if any process got a signal; with torch.distributed every process agrees (one tiny all-reduce)."""
        received = self.signal is not None
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            import torch

            device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
            flag = torch.tensor([int(received)], device=device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            received = bool(flag.item())
        return received

    def describe(self) -> str:
        return signal.Signals(self.signal).name if self.signal is not None else "a signal on another process"


_installed: StopRequest | None = None


def stop_request() -> StopRequest:
    """This process's StopRequest: the first call installs the handlers, later ones return the same object."""
    global _installed
    if _installed is None:
        _installed = StopRequest()
    return _installed
