"""align.allocator: with it, activation-sized tensors come from memory the process keeps, not from fresh mappings."""

from __future__ import annotations

import subprocess
import sys

import pytest

from align.allocator import keep_freed_memory

# A fresh interpreter each time, as glibc's thresholds move once a process frees memory. It allocates tensors of a
# training step's activation sizes and prints how many bytes glibc served as separate mappings (mallinfo2's hblkhd):
# those are unmapped on free, and a tensor allocated there next time faults in fresh pages.
CHILD = """
import ctypes, sys, torch
if sys.argv[1] == "keep":
    from align.allocator import keep_freed_memory
    assert keep_freed_memory()
class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
before = libc.mallinfo2().hblkhd
alive = [torch.ones(n * 2**18) for n in (1, 3, 24, 2, 7)]  # MiB of float32
print(libc.mallinfo2().hblkhd - before)
"""


def mapped_bytes(setting: str) -> int:
    out = subprocess.run([sys.executable, "-c", CHILD, setting], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the setting is glibc's")
def test_activation_sized_tensors_come_from_kept_memory():
    mib = 2**20
    assert mapped_bytes("default") >= 37 * mib  # glibc's defaults: every one of them a mapping of its own
    assert mapped_bytes("keep") == 0


def test_it_reports_whether_it_could_set_the_allocator():
    assert keep_freed_memory() is sys.platform.startswith("linux")
