"""Tables a run writes and its later steps read again (the label state, the item index), and files two of its steps
decode (the vote table's base): the run's IO manager serves them from memory, and every read gives what a read of
the file gives; other tables, and other runs, read the files."""

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
from resources import io_manager
from resources.io_manager import SHARED_IN_RUN, SHARED_READS, DayTables, ParquetIOManager
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


def _votes(n: int, seed: int) -> pd.DataFrame:
    """Rows shaped as the vote table's: ids, few-valued texts (stored dictionary-encoded), numbers, marks mostly
    empty."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "item_id": pd.Series([f"img-{i // 5:05d}" for i in range(n)], dtype="str"),
            "annotator_id": pd.Series(rng.choice([f"ann{a:02d}" for a in range(20)], n), dtype="str"),
            "kind": pd.Series(rng.choice(["classification", "bbox"], n), dtype="str"),
            "label": pd.Series(rng.choice(["car", "bus", "truck"], n), dtype="str"),
            "x": rng.uniform(0, 100, n),
            "export_date": pd.Series(rng.choice(DAYS, n), dtype=object),
            "superseded_by": pd.Series([DAYS[1] if i % 31 == 0 else None for i in range(n)], dtype=object),
        }
    )


def _decoding(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Records the columns each decode of a file reads."""
    decoded: list[list[str]] = []
    read = io_manager._read_columns

    def recorded(data: bytes, file: Any, names: list[str] | None, dictionaries: bool = False) -> pa.Table:
        decoded.append(list(names or []))
        return read(data, file, names, dictionaries)

    monkeypatch.setattr(io_manager, "_read_columns", recorded)
    return decoded


def test_a_file_two_steps_decode_is_decoded_once_per_column(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """label_votes decodes some columns of the vote table's base, label_state others, through the day's layer over
    it: the second read decodes only the columns the first did not, and gets what a fresh read of the file gives
    (values, types, dictionaries, footer metadata). The kept columns are released once taken."""
    assert "label_votes" in SHARED_READS
    writer = _manager(tmp_path)
    base = _votes(4_000, 6)
    _write(writer, "label_votes", DAYS[0], base)
    marks = pd.DataFrame({layers.ROW: [3, 10], "superseded_by": [DAYS[1], DAYS[1]]})
    _write(writer, "label_votes", DAYS[1], Layered(DAYS[0], marks, _votes(4_100, 7).iloc[4_000:], len(base)))
    fold, state = ["item_id", "annotator_id", "kind", "superseded_by"], ["item_id", "kind", "label", "x"]
    fresh = _manager(tmp_path)
    expected = {
        day: _tables(fresh, "label_votes", day).select(keep=k).arrow(day)
        for day, k in zip(DAYS, (fold, state), strict=True)
    }
    decoded = _decoding(monkeypatch)
    run = _manager(tmp_path)
    first = _tables(run, "label_votes", DAYS[0]).select(keep=fold).arrow(DAYS[0])
    assert decoded == [fold]
    # the day's layer, then its base: of the base only label and x are decoded
    second = _tables(run, "label_votes", DAYS[1]).select(keep=state).arrow(DAYS[1])
    assert decoded[1:] == [[*state, layers.ROW], ["label", "x"]]
    for got, day in ((first, DAYS[0]), (second, DAYS[1])):
        assert got.equals(expected[day], check_metadata=True)
        assert any(pa.types.is_dictionary(t) for t in got.schema.types)  # the few-valued texts stay dictionaries
    assert not run._read_in_run._kept  # released: a third read decodes the file again
    _tables(run, "label_votes", DAYS[0]).select(keep=["item_id"]).arrow(DAYS[0])
    assert decoded[-1] == ["item_id"]


def test_a_file_rewritten_since_the_first_read_is_decoded_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Columns kept from a file are served only for the same bytes: a day re-materialized meanwhile (by this run or
    another) is decoded afresh, and a read of other types (texts as plain strings) decodes too."""
    _write(_manager(tmp_path), "label_votes", DAYS[0], _votes(1_000, 8))
    decoded = _decoding(monkeypatch)
    run = _manager(tmp_path)
    tables = _tables(run, "label_votes", DAYS[0])
    tables.select(keep=["item_id", "kind"]).arrow(DAYS[0])
    rewritten = _votes(1_200, 9)
    _write(_manager(tmp_path), "label_votes", DAYS[0], rewritten)
    again = tables.select(keep=["item_id", "kind"]).arrow(DAYS[0])
    assert decoded == [["item_id", "kind"], ["item_id", "kind"]] and again.num_rows == 1_200
    plain = tables.select(keep=["kind"])[DAYS[0]]  # pandas: texts decoded as strings, not dictionaries
    assert decoded[-1] == ["kind"]
    pd.testing.assert_series_equal(plain["kind"], rewritten["kind"], check_dtype=False)


def test_other_tables_are_decoded_at_every_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write(_manager(tmp_path), "validated_annotations", DAYS[0], _votes(500, 10))
    decoded = _decoding(monkeypatch)
    tables = _tables(_manager(tmp_path), "validated_annotations", DAYS[0])
    for _ in range(2):
        tables.select(keep=["item_id", "kind"]).arrow(DAYS[0])
    assert decoded == [["item_id", "kind"], ["item_id", "kind"]]


def test_the_base_a_run_folds_into_is_hashed_once_beside_the_fold(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """label_votes reads the previous day's file, then writes the day as a layer over it (the layer records the
    base file's SHA-256), then label_state reads the layer (checking that digest): the base is hashed once, from the
    first read on, and the layer records the file's true digest."""
    _write(_manager(tmp_path), "label_votes", DAYS[0], _votes(2_000, 11))
    hashed: list[int] = []
    digest = layers.sha256

    def counted(data: bytes | memoryview) -> str:
        hashed.append(len(data))
        return digest(data)

    monkeypatch.setattr(layers, "sha256", counted)
    run = _manager(tmp_path)
    previous = _tables(run, "label_votes", DAYS[0]).select(keep=["item_id", "kind"]).arrow(DAYS[0])
    assert len(run._digests._known) == 1  # hashing from the read on, before the write asks
    marks = pd.DataFrame({layers.ROW: [5], "superseded_by": [DAYS[1]]})
    _write(run, "label_votes", DAYS[1], Layered(DAYS[0], marks, _votes(2_050, 12).iloc[2_000:], previous.num_rows))
    both = _tables(run, "label_votes", DAYS[1]).select(keep=["item_id", "superseded_by"]).arrow(DAYS[1])
    assert both.num_rows == 2_050 and len(hashed) == 1
    base = (tmp_path / "warehouse" / "tables" / "label_votes" / f"{DAYS[0]}.parquet").read_bytes()
    footer = io_manager.footer(run.storage.warehouse_store, f"tables/label_votes/{DAYS[1]}.parquet")
    assert layers.base_of(footer.schema.to_arrow_schema()) is not None
    assert footer.schema.to_arrow_schema().metadata[layers.BASE_SHA256].decode() == digest(base)
