"""Tables a run writes and its later steps read again (the label state, the item index): the run's IO manager
serves them from memory, and every read gives what a read of the file gives; other tables, and other runs, read
the files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from dagster import AssetKey, DailyPartitionsDefinition, build_input_context, build_output_context

from labelops import layers
from labelops.layers import Layered
from resources.io_manager import SHARED_IN_RUN, DayTables, ParquetIOManager
from resources.storage import StorageResource

DAYS = ["2024-06-01", "2024-06-02"]
PARTITIONS = DailyPartitionsDefinition(start_date=DAYS[0])


def _manager(tmp_path: Path) -> ParquetIOManager:
    """A run's IO manager: Dagster makes one per run."""
    return ParquetIOManager(
        storage=StorageResource(landing=str(tmp_path / "landing"), warehouse=str(tmp_path / "warehouse"))
    )


def _write(manager: ParquetIOManager, name: str, day: str, frame: pd.DataFrame | Layered) -> None:
    manager.handle_output(build_output_context(asset_key=AssetKey(name), partition_key=day), {day: frame})


def _tables(manager: ParquetIOManager, name: str, day: str) -> DayTables:
    context = build_input_context(
        name=name, asset_key=AssetKey(name), partition_key=day, asset_partitions_def=PARTITIONS
    )
    tables = manager.load_input(context)
    assert isinstance(tables, DayTables)
    return tables


def _state(n: int, seed: int) -> pd.DataFrame:
    """Rows shaped as the label state's: text, numbers with missing values, counts, a text column of objects
    mostly empty."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "item_id": pd.Series([f"img-{i:05d}" for i in range(n)], dtype="str"),
            "kind": pd.Series(rng.choice(["classification", "bbox"], n), dtype="str"),
            "label": pd.Series(rng.choice(np.array(["car", "bus", None], dtype=object), n), dtype="str"),
            "confidence": np.where(rng.random(n) < 0.2, np.nan, rng.uniform(0, 1, n)),
            "rounds": rng.integers(1, 4, n),
            "answered_batch": pd.Series([f"relabel-{i}" if i % 97 == 0 else None for i in range(n)], dtype=object),
        }
    )


def _file_reads(tmp_path: Path, name: str, day: str) -> dict[str, Any]:
    """What another run (a new IO manager) reads of a day: whole, some columns, Arrow."""
    tables = _tables(_manager(tmp_path), name, day)
    return {
        "whole": tables[day],
        "some": tables.select(keep=["item_id", "label", "nope"])[day],
        "dropped": tables.select(drop=["label"])[day],
        "arrow": tables.select(keep=["item_id", "confidence"]).arrow(day),
    }


@pytest.mark.parametrize("name", ["label_state", "review_queue"])
def test_a_table_the_run_wrote_reads_back_as_its_file(tmp_path: Path, name: str) -> None:
    manager = _manager(tmp_path)
    _write(manager, name, DAYS[0], _state(3_000, 1))
    kept = name in SHARED_IN_RUN
    assert (f"tables/{name}/{DAYS[0]}.parquet" in manager._written_in_run) == kept
    tables = _tables(manager, name, DAYS[0])
    files = _file_reads(tmp_path, name, DAYS[0])
    for _ in range(2):  # and again, from the same memory
        pd.testing.assert_frame_equal(tables[DAYS[0]], files["whole"], check_exact=True)
        pd.testing.assert_frame_equal(tables.select(keep=["item_id", "label", "nope"])[DAYS[0]], files["some"])
        pd.testing.assert_frame_equal(tables.select(drop=["label"])[DAYS[0]], files["dropped"])
        arrow = tables.select(keep=["item_id", "confidence"]).arrow(DAYS[0])
        assert isinstance(arrow, pa.Table) and arrow.equals(files["arrow"])


def test_a_layer_the_run_wrote_is_kept_whole_once_read(tmp_path: Path) -> None:
    """The item index of a day that only adds items is written as a layer; the run's first read resolves the whole
    table, which its later reads (of any columns) take from memory."""
    manager = _manager(tmp_path)
    first = _state(2_000, 2).drop(columns="answered_batch")
    _write(manager, "item_index", DAYS[0], first)
    added = _state(2_100, 3).drop(columns="answered_batch").iloc[2_000:].reset_index(drop=True)
    _write(manager, "item_index", DAYS[1], Layered(DAYS[0], pd.DataFrame({layers.ROW: []}), added, len(first)))
    key = f"tables/item_index/{DAYS[1]}.parquet"
    assert manager._written_in_run[key] is None  # a layer: resolved at its first read
    tables, files = _tables(manager, "item_index", DAYS[1]), _file_reads(tmp_path, "item_index", DAYS[1])
    pd.testing.assert_frame_equal(tables.select(keep=["item_id", "label", "nope"])[DAYS[1]], files["some"])
    assert manager._written_in_run[key] is not None
    pd.testing.assert_frame_equal(tables[DAYS[1]], files["whole"], check_exact=True)
    assert len(files["whole"]) == 2_100 and list(files["whole"]["item_id"][-100:]) == list(added["item_id"])


def test_another_run_reads_the_file_as_it_stands(tmp_path: Path) -> None:
    """A run's memory is its own: a new run (a new IO manager) reads the file, rewritten since by another run."""
    first = _manager(tmp_path)
    _write(first, "label_state", DAYS[0], _state(500, 4))
    _write(_manager(tmp_path), "label_state", DAYS[0], _state(700, 5))
    assert len(_tables(_manager(tmp_path), "label_state", DAYS[0])[DAYS[0]]) == 700
    # the run itself goes on reading the table it wrote, as its later steps would take its output
    assert len(_tables(first, "label_state", DAYS[0])[DAYS[0]]) == 500


def test_a_run_of_many_days_keeps_the_latest_day_it_wrote(tmp_path: Path) -> None:
    """A run writing several days of the state keeps the last of them; an earlier day is read from its file."""
    manager = _manager(tmp_path)
    for n, day in enumerate(DAYS):
        _write(manager, "label_state", day, _state(100 + n, n))
    assert list(manager._written_in_run) == [f"tables/label_state/{DAYS[-1]}.parquet"]
    pd.testing.assert_frame_equal(
        _tables(manager, "label_state", DAYS[0])[DAYS[0]], _file_reads(tmp_path, "label_state", DAYS[0])["whole"]
    )
