"""CPU memory allocation: keep freed tensor memory in the process for the next tensor of the same size.

glibc's malloc serves a block above its mmap threshold (128 KiB at first, raised as such blocks are freed, up to 32 MiB)
with a fresh mmap, and returns it to the kernel on free; the next tensor of that size then touches new pages, each a
page fault and a page of zeroes. A training step allocates and frees the same activation sizes over and over, and the
same computation runs several times slower on fresh pages than on reused ones (docs/benchmarks.md); which one a run got
depended on where the dynamic threshold happened to stand. Fixing the threshold at its maximum and not trimming the heap
keeps the pages mapped for reuse. The price: memory a stage has freed stays with its process (up to 1 GiB at the top of
the heap) until the process ends. Blocks above 32 MiB are still mapped and unmapped each time.
"""

from __future__ import annotations

import ctypes
import os

M_TRIM_THRESHOLD = -1  # from glibc's malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # glibc's ceiling on 64-bit machines
TRIM_THRESHOLD = 1024 * 1024 * 1024
# How a user sets glibc's malloc themselves: then their settings stand.
USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")


def keep_freed_memory() -> bool:
    """Set glibc's malloc to reuse freed blocks up to 32 MiB instead of unmapping them; False where it is not glibc
    or where the environment sets glibc's malloc already."""
    if any(name in os.environ for name in USER_SETTINGS) or "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library the interpreter runs on
    except (OSError, AttributeError, TypeError):  # not glibc (macOS, musl, Windows): its allocator is left as it is
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
