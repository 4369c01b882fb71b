"""DayTables.only_items against reading the whole day and filtering it in pandas: the same rows, columns and
types, read whole or in batches, from local disk or an object's bytes, with row groups its statistics skip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from resources.io_manager import DayTables

DAY = "2024-06-03"


def _production(n: int, seed: int, *, ordered: bool) -> pd.DataFrame:
    """Labeled items (img-) and traffic (prod-), some items on several rows; ``ordered`` as ingest writes a day
    (grouped by source file, so row groups hold ranges of ids), else shuffled (every group spans every id)."""
    rng = np.random.default_rng(seed)
    ids = np.where(rng.random(n) < 0.3, "img-", "prod-") + rng.integers(0, n // 2, n).astype(str)
    frame = pd.DataFrame(
        {
            "item_id": ids,
            "predicted_label": pd.Series(rng.choice(["car", "bus", None], n), dtype=object),
            "confidence": rng.uniform(0, 1, n),
            "x": np.where(rng.random(n) < 0.5, np.nan, rng.uniform(0, 100, n)),
            "day": pd.Timestamp(DAY, tz="UTC") + pd.to_timedelta(rng.integers(0, 86_400, n), unit="s"),
        }
    )
    return frame.sort_values("item_id", kind="stable").reset_index(drop=True) if ordered else frame


def _tables(frame: pd.DataFrame, path: Path, source: str) -> DayTables:
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, row_group_size=150)

    def read(day: str, keep: tuple[str, ...] | None = None, drop: frozenset[str] = frozenset()) -> pd.DataFrame:
        names = [c for c in frame.columns if (keep is None or c in keep) and c not in drop]
        return pq.read_table(path, columns=names).to_pandas()

    if source == "given whole":  # no file to open: DayTables writes the table it reads
        return DayTables([DAY], read)
    return DayTables(
        [DAY],
        read,
        open_file=lambda day: pq.ParquetFile(pa.BufferReader(path.read_bytes()) if source == "bytes" else str(path)),
    )


def _id_sets(frame: pd.DataFrame, seed: int) -> dict[str, object]:
    rng = np.random.default_rng(seed)
    labeled = frame.loc[frame["item_id"].str.startswith("img-"), "item_id"].unique()
    return {
        "none": [],
        "missing only": ["nope", "img-x", "zzz"],
        "labeled and missing": pd.Series([*labeled[::3], "nope", "a"], dtype="str"),
        "duplicates": np.asarray([*labeled[:5], *labeled[:5]], dtype=object),
        "every item": pd.Index(frame["item_id"].unique()),
        "one row group's range": list(frame["item_id"].iloc[160:200]),
        "random": list(rng.choice(frame["item_id"].unique(), 40, replace=False)),
    }


@pytest.mark.parametrize("source", ["path", "bytes", "given whole"])
@pytest.mark.parametrize("ordered", [True, False])
def test_only_items_reads_the_rows_pandas_would_keep(tmp_path: Path, source: str, ordered: bool) -> None:
    frame = _production(1000, 1, ordered=ordered)
    tables = _tables(frame, tmp_path / f"{DAY}.parquet", source)
    whole = tables[DAY]  # what reading everything gives (the column types of a Parquet round trip)
    for name, ids in _id_sets(frame, 2).items():
        wanted = set(np.asarray(ids, dtype=object).tolist())
        for keep in (None, ["item_id", "confidence", "day"], ["x", "predicted_label"]):  # the last without item_id
            columns = [c for c in whole.columns if keep is None or c in keep]  # in the file's order, as select reads
            expected = whole.loc[whole["item_id"].isin(wanted), columns].reset_index(drop=True)
            chosen = tables.select(keep=keep).only_items(ids)
            for got in (chosen[DAY], tables.only_items(ids).select(keep=keep)[DAY], chosen.arrow(DAY).to_pandas()):
                pd.testing.assert_frame_equal(got, expected, obj=f"{name}, {keep}")  # either order, or as Arrow
            parts = list(chosen.batches(DAY, 64))
            assert parts and max(len(p) for p in parts) <= 64
            pd.testing.assert_frame_equal(pd.concat(parts, ignore_index=True), expected, obj=f"{name}, {keep}")
    pd.testing.assert_frame_equal(tables[DAY], whole)  # the tables it was made from still read every row


def test_row_groups_without_the_items_are_skipped_by_their_statistics(tmp_path: Path) -> None:
    """On a day ordered as ingest writes it, a few ids skip most groups; a group without statistics is read."""
    frame = _production(1000, 3, ordered=True)
    path = tmp_path / f"{DAY}.parquet"
    tables = _tables(frame, path, "path")
    file = pq.ParquetFile(path)
    ids = frame["item_id"].iloc[[10, 11, 700]].tolist()
    groups = tables.only_items(ids)._groups(file)
    assert groups == sorted({10 // 150, 700 // 150}) and file.num_row_groups == 7
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, row_group_size=150, write_statistics=False)
    assert tables.only_items(ids)._groups(pq.ParquetFile(path)) == list(range(7))
    whole = tables[DAY]
    pd.testing.assert_frame_equal(tables.only_items(ids)[DAY], whole[whole["item_id"].isin(ids)].reset_index(drop=True))


def test_only_low_cardinality_columns_are_dictionary_encoded() -> None:
    """The IO manager dictionary-encodes the columns of few distinct values (kinds, labels, days) and every column
    of a small table; ids and coordinates of a large one are written plain, and read back the same."""
    from resources.io_manager import dictionary_columns

    n = 50_000
    rng = np.random.default_rng(2)
    frame = pd.DataFrame(
        {
            "item_id": [f"img-{i:06d}" for i in range(n)],
            "kind": rng.choice(["bbox", "classification"], n),
            "x": rng.uniform(0, 100, n),
            "points": [[1.0, 2.0]] * n,
            "nothing": None,
        }
    )
    table = pa.Table.from_pandas(frame, preserve_index=False)
    assert dictionary_columns(table) == ["kind"]
    assert dictionary_columns(table.slice(0, 500)) == ["item_id", "kind", "x"]
    assert dictionary_columns(table.slice(0, 0)) == ["item_id", "kind", "x"]


def test_a_table_written_by_the_io_manager_reads_back_whatever_its_encoding(tmp_path: Path) -> None:
    from labelops.storage import LocalStore
    from resources.io_manager import dictionary_columns, read_table

    frame = _production(30_000, 4, ordered=True)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    pq.write_table(table, tmp_path / "t.parquet", compression="zstd", use_dictionary=dictionary_columns(table))
    encodings = {
        c.path_in_schema: c.encodings
        for c in (pq.ParquetFile(tmp_path / "t.parquet").metadata.row_group(0).column(i) for i in range(5))
    }
    assert "RLE_DICTIONARY" in encodings["predicted_label"] and "RLE_DICTIONARY" not in encodings["item_id"]
    pq.write_table(table, tmp_path / "default.parquet", compression="zstd")  # a dictionary tried for every column
    store = LocalStore(tmp_path)
    pd.testing.assert_frame_equal(read_table(store, "t.parquet"), read_table(store, "default.parquet"))


def test_the_io_manager_records_the_bounds_of_the_item_id_alone(tmp_path: Path) -> None:
    """A table the IO manager writes keeps the item id's minimum and maximum, which readers skip row groups by, and
    no other column's; a table without item ids keeps none."""
    from dagster import AssetKey, build_output_context

    from resources.io_manager import ParquetIOManager
    from resources.storage import StorageResource

    manager = ParquetIOManager(storage=StorageResource(landing=str(tmp_path / "l"), warehouse=str(tmp_path / "w")))
    for name, frame in (("with_ids", _production(5_000, 3, ordered=True)), ("without", pd.DataFrame({"n": [1, 2]}))):
        manager.handle_output(build_output_context(asset_key=AssetKey(name), partition_key=DAY), {DAY: frame})
        meta = pq.ParquetFile(tmp_path / "w" / "tables" / name / f"{DAY}.parquet").metadata.row_group(0)
        bounded = {meta.column(i).path_in_schema for i in range(meta.num_columns) if meta.column(i).is_stats_set}
        assert bounded == ({"item_id"} if name == "with_ids" else set())


def test_a_run_tagged_with_a_day_that_is_no_partition_names_the_day_and_why(tmp_path: Path) -> None:
    """`dagster job execute --tags '{"dagster/partition": "<today>"}'` runs a day whose partition does not exist
    yet (a day is a partition once it is over): the first write says so, not a type error."""
    from dagster import AssetKey, build_output_context

    from assets.partitions import daily_partitions
    from resources.io_manager import ParquetIOManager
    from resources.storage import StorageResource

    manager = ParquetIOManager(storage=StorageResource(landing=str(tmp_path / "l"), warehouse=str(tmp_path / "w")))
    context = build_output_context(
        asset_key=AssetKey("gold_labels"), partition_key="2999-01-01", asset_partitions_def=daily_partitions
    )
    with pytest.raises(ValueError, match=r"gold_labels: 2999-01-01 is not a day of the daily partitions.*is over"):
        manager.handle_output(context, {"2999-01-01": pd.DataFrame({"n": [1]})})


def test_a_run_tagged_with_today_stops_before_it_writes(tmp_path: Path) -> None:
    """`dagster job execute --tags '{"dagster/partition": "<today>"}'`: production ingest streams its day into
    the warehouse as it reads, so the day is checked before anything is read: nothing is written, and the
    failure says why."""
    from datetime import UTC, datetime

    from conftest import demo_resources
    from dagster import DagsterInstance, materialize

    from labelops.storage import LocalStore
    from pipelines.definitions import defs

    today = datetime.now(UTC).date().isoformat()
    LocalStore(tmp_path / "landing").write_bytes(
        f"production/{today}/p.csv",
        b"item_id,ts,model_version,predicted_label,confidence\na,2024-06-01T00:00:00Z,m,car,0.9\n",
    )
    result = materialize(
        [defs.get_assets_def("production_predictions")],
        resources=demo_resources(tmp_path, Path(__file__).resolve().parents[1] / "config"),
        tags={"dagster/partition": today},
        instance=DagsterInstance.ephemeral(),
        raise_on_error=False,
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE").step_failure_data.error
    assert f"{today} is not a day of the daily partitions" in failure.cause.message
    assert not list((tmp_path / "warehouse").rglob("*.parquet"))
