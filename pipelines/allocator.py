"""glibc's allocator told to keep the memory a night frees, for the next table to reuse.

A night reads, converts and drops tables of millions of rows step after step. By default glibc hands every large
block back to the kernel when it is freed (each is its own mapping), and each Arrow thread allocates from an arena
of its own, so the next table is built in fresh memory, which the kernel maps in page by page: on a virtual
machine, where a first touch of a page is dear, night 60 of bench.nights spent 8.2 s of system time against night
1's 3.4 s. Kept in one heap and reused (no mappings of their own, no trimming, one arena shared by numpy, pandas
and Arrow, which then allocates through the system allocator: resources.memory), the state, coverage and snapshot
steps of night 60 fault in half as many pages. The process keeps its peak heap until it exits, which is how a run
worker lives; ``LABELOPS_KEEP_FREED_MEMORY=0`` leaves glibc's defaults.

Imported by the ``pipelines`` package before anything else of the code location: the number of arenas is fixed
as soon as a second thread allocates, and numpy and Arrow start threads as they are imported.
"""

from __future__ import annotations

import ctypes
import os
import sys

SETTING = "LABELOPS_KEEP_FREED_MEMORY"
# mallopt's parameters (malloc.h)
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_MAX, M_ARENA_MAX = -1, -2, -4, -8
OPTIONS = (
    (M_ARENA_MAX, 1),  # one arena for every thread
    (M_MMAP_MAX, 0),  # large blocks from the heap, not mappings of their own
    (M_TRIM_THRESHOLD, 2**31 - 1),  # the heap's free top is kept (up to 2 GiB)
    (M_TOP_PAD, 256 << 20),  # and grows 256 MiB at a time
)


def keep_freed_memory() -> bool:
    """Apply :data:`OPTIONS` where the C library is glibc and the setting allows it; whether they apply."""
    if os.environ.get(SETTING, "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018  # glibc's own symbol: musl's mallopt does nothing
    except (OSError, AttributeError):
        return False
    return all(libc.mallopt(option, value) == 1 for option, value in OPTIONS)


KEPT = keep_freed_memory()
