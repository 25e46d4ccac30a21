"""What a user reads on the terminal, written once however many processes a launcher started.

The rank comes from the environment the launcher sets (RANK), so this works before any process group exists and
without importing torch.
"""

from __future__ import annotations

import os


def is_main_process() -> bool:
    """Rank 0 of the launch (or the only process): the one that prints, logs and writes."""
    return int(os.environ.get("RANK", "0")) == 0


def print0(*args, **kwargs) -> None:
    """print() on the main process only."""
    if is_main_process():
        print(*args, **kwargs)
