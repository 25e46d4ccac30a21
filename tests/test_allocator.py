"""align.runtime.allocator: with it, activation-sized tensors come from memory the process keeps, not from fresh
mappings."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from align.runtime.allocator import keep_freed_memory

GLIBC = platform.libc_ver()[0] == "glibc"

# A fresh interpreter each time, as glibc's thresholds move once a process frees memory. It allocates tensors of a
# training step's activation sizes and prints how many bytes glibc served as separate mappings (mallinfo2's hblkhd,
# glibc >= 2.33): those are unmapped on free, and a tensor allocated there next time faults in fresh pages.
CHILD = """
import ctypes, sys, torch
if sys.argv[1] == "keep":
    from align.runtime.allocator import keep_freed_memory
    assert keep_freed_memory()
class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]
libc = ctypes.CDLL(None)
if not hasattr(libc, "mallinfo2"):
    print("no-mallinfo2")
    sys.exit()
libc.mallinfo2.restype = MallInfo2
before = libc.mallinfo2().hblkhd
alive = [torch.ones(n * 2**18) for n in (1, 3, 24, 2, 7)]  # MiB of float32
print(libc.mallinfo2().hblkhd - before)
"""


def mapped_bytes(setting: str) -> int:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    out = subprocess.run([sys.executable, "-c", CHILD, setting], capture_output=True, text=True, check=True, env=env)
    if out.stdout.split()[-1] == "no-mallinfo2":
        pytest.skip("this glibc has no mallinfo2 (2.33 and later have it)")
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(not GLIBC, reason="the setting is glibc's")
def test_activation_sized_tensors_come_from_kept_memory():
    mib = 2**20
    assert mapped_bytes("default") >= 24 * mib  # glibc's defaults: at least the largest gets a mapping of its own
    assert mapped_bytes("keep") == 0


def test_it_sets_glibc_and_leaves_a_users_own_settings(monkeypatch):
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    assert keep_freed_memory() is GLIBC
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=65536")
    assert keep_freed_memory() is False
