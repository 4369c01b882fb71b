"""Which allocator Arrow uses in the code location's processes, and what the garbage collector looks at.

Where glibc keeps freed memory in one heap (pipelines.allocator, on by default), Arrow allocates through it too (the
system pool), so a table Arrow decodes reuses the memory pandas and numpy freed, and the other way round. Otherwise
Arrow takes its jemalloc: its default, the mimalloc it bundles, hands freed memory back to the system eagerly, so a
night that reads, drops and reads again tables of millions of rows pays for faulting the same memory in again and
again (night 60's `label_state` on the benchmark machine, a virtual machine where a first touch of a page is dear:
6.5 s of system time with mimalloc, 3.2-4.2 s with jemalloc). docs/benchmarks.md has the runs.
"""

from __future__ import annotations

import gc
import os

import pyarrow as pa

CHOICE = "ARROW_DEFAULT_MEMORY_POOL"  # Arrow's own setting: when it is set, it decides


def choose_arrow_pool(shared_heap: bool = False) -> str:
    """Arrow's jemalloc as its default pool (the system allocator where this Arrow has no jemalloc, or where glibc
    keeps freed memory in one heap, ``shared_heap``: pipelines.allocator), unless ``ARROW_DEFAULT_MEMORY_POOL`` chose
    one; the pool in use."""
    if not os.environ.get(CHOICE):
        if shared_heap:
            pa.set_memory_pool(pa.system_memory_pool())
            return pa.default_memory_pool().backend_name
        try:
            pa.set_memory_pool(pa.jemalloc_memory_pool())
        except NotImplementedError:  # an Arrow built without jemalloc (some platforms' wheels)
            pa.set_memory_pool(pa.system_memory_pool())
    return pa.default_memory_pool().backend_name


def freeze_loaded() -> int:
    """Move the objects alive now out of the cyclic garbage collector's reach (``gc.freeze``); how many it holds.

    Called once the code location is loaded: its 180,000 objects (Dagster's, pandas', Arrow's and ours: functions,
    classes, constants) live as long as the process, yet each full pass of the collector walked them all again.
    A night at a million annotations made two such passes, 0.5 s. Frozen objects are still freed by reference
    counting; only a cycle among them is never collected, and none of them is garbage at load."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
