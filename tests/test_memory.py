"""The code location's Arrow allocator: jemalloc (or the system's where Arrow lacks it), unless Arrow's own
setting chose one; and what the garbage collector leaves alone (the loaded code location, Great Expectations once
imported). Each case runs in a fresh interpreter: the pool and the collector are the process's."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHOSEN = {"jemalloc", "system"}  # system only where this Arrow was built without jemalloc


def _pool(probe: str, **env: str) -> str:
    """What ``probe`` prints last, run in a fresh interpreter with ``env`` and Arrow's own setting unset."""
    settings = {k: v for k, v in os.environ.items() if k != "ARROW_DEFAULT_MEMORY_POOL"}
    done = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", probe],
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
    assert _pool("import pipelines.definitions, pyarrow as pa; print(pa.default_memory_pool().backend_name)") in CHOSEN


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
