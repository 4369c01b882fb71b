"""The code location's allocators: glibc keeping freed memory in one heap, shared with Arrow (jemalloc, or the
system's where Arrow lacks it, when glibc's settings are off), unless Arrow's own setting chose a pool; and what the
garbage collector leaves alone (the loaded code location, Great Expectations once imported). Each case runs in a
fresh interpreter: the allocators and the collector are the process's."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHOSEN = {"jemalloc", "system"}  # system only where this Arrow was built without jemalloc


def _pool(probe: str, *args: str, **env: str) -> str:
    """What ``probe`` prints last, run in a fresh interpreter (with ``args``) with ``env`` and Arrow's own setting
    unset."""
    settings = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    done = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", probe, *args],
        cwd=ROOT,
        env={**settings, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def test_jemalloc_unless_arrow_was_told() -> None:
    probe = "from resources.memory import choose_arrow_pool; print(choose_arrow_pool())"
    assert _pool(probe) in CHOSEN
    assert _pool(probe, ARROW_DEFAULT_MEMORY_POOL="system") == "system"


def test_loading_the_code_location_chooses_it() -> None:
    probe = "import pipelines.definitions, pyarrow as pa; print(pa.default_memory_pool().backend_name)"
    assert _pool(probe, LABELOPS_KEEP_FREED_MEMORY="0") in CHOSEN
    assert _pool(probe, LABELOPS_KEEP_FREED_MEMORY="0", ARROW_DEFAULT_MEMORY_POOL="system") == "system"


# After the code location is loaded and Arrow has read a table on its threads: whether glibc's settings apply, the
# pool, and how many arenas glibc holds (malloc_info's heaps, written to the file given as argv[1]).
ARENAS = """
import ctypes, sys
import pipelines.definitions
import pyarrow as pa, pyarrow.parquet as pq
from pipelines.allocator import KEPT
sink = pa.BufferOutputStream()
pq.write_table(pa.table({f"c{i}": pa.array([str(n) for n in range(200_000)]) for i in range(8)}), sink, row_group_size=10_000)
pq.read_table(pa.BufferReader(sink.getvalue()), use_threads=True).to_pandas()
libc = ctypes.CDLL(None)
libc.fopen.restype = ctypes.c_void_p
libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
libc.fclose.argtypes = [ctypes.c_void_p]
stream = libc.fopen(sys.argv[1].encode(), b"w")
libc.malloc_info(0, stream)
libc.fclose(stream)
print(KEPT, pa.default_memory_pool().backend_name)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator settings")
def test_glibc_keeps_freed_memory_in_one_heap_shared_with_arrow(tmp_path: Path) -> None:
    """Loading the code location first (as a run worker does) leaves one arena for every thread, Arrow's readers
    included, and Arrow allocating through it; ``LABELOPS_KEEP_FREED_MEMORY=0`` leaves glibc's defaults."""
    info = tmp_path / "malloc.xml"

    def probe(**env: str) -> tuple[str, int]:
        return _pool(ARENAS, str(info), **env), info.read_text().count("<heap nr=")

    assert probe() == ("True system", 1)
    kept, arenas = probe(LABELOPS_KEEP_FREED_MEMORY="0")
    assert kept.split()[0] == "False" and kept.split()[1] in CHOSEN and arenas > 1


def test_the_loaded_code_location_is_out_of_the_collectors_passes() -> None:
    """Loading the code location freezes what it made (gc.freeze), and leaves the collector running."""
    probe = "import gc, pipelines.definitions; print(gc.isenabled() and gc.get_freeze_count() > 100_000)"
    assert _pool(probe) == "True"


def test_great_expectations_is_imported_with_the_collector_paused_then_frozen() -> None:
    probe = (
        "import gc, sys; from labelops import expectations; before = gc.get_freeze_count(); "
        "expectations._import_great_expectations(); frozen = gc.get_freeze_count(); "
        "expectations._import_great_expectations(); "
        "print('great_expectations' in sys.modules and gc.isenabled() and frozen > before + 100_000 "
        "and gc.get_freeze_count() == frozen)"
    )
    assert _pool(probe) == "True"
