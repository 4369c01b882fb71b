"""Tables kept as layers (labelops.layers, through the IO manager): a layered day reads back exactly as the same
table written whole, day after day, for every column selection; chains are cut; a rewritten base is refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from crowd_data import snow
from dagster import AssetKey, build_input_context, build_output_context
from test_state import DAYS as STATE_DAYS
from test_state import box, crowd_votes, validated

from labelops import layers, state
from labelops.columns import plain
from labelops.layers import Layered
from labelops.storage import LocalStore
from resources import io_manager as io_manager_module
from resources.io_manager import ParquetIOManager, table_rows
from resources.storage import StorageResource

DAYS = [d.date().isoformat() for d in pd.date_range("2024-06-01", periods=12)]


@pytest.fixture
def io_manager(tmp_path: Path) -> ParquetIOManager:
    storage = StorageResource(landing=str(tmp_path / "landing"), warehouse=str(tmp_path / "warehouse"))
    return ParquetIOManager(storage=storage)


def _write(io_manager: ParquetIOManager, name: str, day: str, frame: pd.DataFrame | Layered) -> None:
    io_manager.handle_output(build_output_context(asset_key=AssetKey(name), partition_key=day), {day: frame})


def _read(io_manager: ParquetIOManager, name: str, day: str) -> pd.DataFrame:
    frame = io_manager.load_input(build_input_context(asset_key=AssetKey(name), partition_key=day))
    assert isinstance(frame, pd.DataFrame)
    return frame


def _file(io_manager: ParquetIOManager, name: str, day: str) -> Path:
    return Path(io_manager.storage.warehouse) / "tables" / name / f"{day}.parquet"


def _days_of_votes(seed: int) -> list[tuple[pd.DataFrame, np.ndarray]]:
    """A vote table as label_votes grows it: each day appends judgments and marks a few earlier ones (superseded,
    replaced); ``answer_to`` stays empty until day 7 (its type changes from null to text then), and so does
    ``superseded_by`` in the first day's rows. Each day: the table and the positions of the earlier rows it changed."""
    rng = np.random.default_rng(seed)
    out, frame = [], None
    for n, day in enumerate(DAYS):
        rows = 4000 if n == 0 else 200 + 10 * n
        new = pd.DataFrame(
            {
                "item_id": pd.Series([f"img-{n}-{i % 97}" for i in range(rows)], dtype=object),
                "content_id": pd.Series([f"c-{n}-{i}" for i in range(rows)], dtype=object),
                "label": pd.Series(rng.choice(np.array(["car", "bus", None], dtype=object), rows), dtype=object),
                "x": np.where(rng.random(rows) < 0.3, np.nan, rng.uniform(0, 100, rows)),
                "export_date": day,
                "answer_to": pd.Series(
                    [f"relabel-{day}" if n >= 6 and i % 50 == 0 else None for i in range(rows)], dtype=object
                ),
                "superseded_by": pd.Series([None] * rows, dtype=object),
                "replaced_on": pd.Series(
                    ["2024-05-31" if n == 0 and i < 5 else None for i in range(rows)], dtype=object
                ),
            }
        )
        if frame is None:
            frame, changed = new, np.array([], dtype=np.int64)
        else:
            frame = frame.copy()
            changed = np.sort(rng.choice(len(frame), 15, replace=False))
            frame.loc[changed[:8], "superseded_by"] = f"relabel-{day}"
            frame.loc[changed[8:], "replaced_on"] = day
            frame.loc[changed[:2], "superseded_by"] = None  # set, then cleared again: still a change
            frame = pd.concat([frame, new], ignore_index=True)
        out.append((frame, changed))
    return out


def _layered(frame: pd.DataFrame, previous: pd.DataFrame, changed: np.ndarray, base: str) -> Layered:
    """The day's table as what it changed in the day before (``changed``: the earlier rows it marked)."""
    marks = frame.iloc[changed][state.MARKS].reset_index(drop=True).assign(**{layers.ROW: changed})
    return Layered(base, marks, frame.iloc[len(previous) :].reset_index(drop=True), len(previous))


def test_a_layered_day_reads_back_as_the_table_written_whole(io_manager: ParquetIOManager) -> None:
    days = _days_of_votes(1)
    depths = []
    for n, (day, (frame, changed)) in enumerate(zip(DAYS, days, strict=True)):
        _write(io_manager, "votes", day, frame if n == 0 else _layered(frame, days[n - 1][0], changed, DAYS[n - 1]))
        _write(io_manager, "whole", day, frame)
        depths.append(layers.depth(pq.read_schema(_file(io_manager, "votes", day))))
        pd.testing.assert_frame_equal(_read(io_manager, "votes", day), _read(io_manager, "whole", day))
        for keep in (("item_id", "superseded_by", "x"), ("content_id",), ("replaced_on", "answer_to")):
            pd.testing.assert_frame_equal(
                io_manager._read(io_manager.key(["votes"], day), keep),
                io_manager._read(io_manager.key(["whole"], day), keep),
            )
    # day 1 whole, day 2 too (superseded_by first holds text: another type than the base's); then layers until
    # answer_to first holds text on day 7
    assert depths == [0, 0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 5]
    assert _file(io_manager, "votes", DAYS[5]).stat().st_size < _file(io_manager, "whole", DAYS[5]).stat().st_size / 2


def test_chains_are_cut_at_max_depth_and_large_layers_are_written_whole(io_manager: ParquetIOManager) -> None:
    frame = pd.DataFrame({"item_id": [f"i{i}" for i in range(1000)], "v": np.arange(1000.0)})
    _write(io_manager, "t", DAYS[0], frame)
    for n, day in enumerate(DAYS[1:], start=1):
        grown = pd.concat([frame, pd.DataFrame({"item_id": [f"n{n}"], "v": [float(n)]})], ignore_index=True)
        grown.loc[n, "v"] = -1.0
        marks = pd.DataFrame({"v": [-1.0], layers.ROW: [n]})
        _write(
            io_manager,
            "t",
            day,
            Layered(DAYS[n - 1], marks, grown.iloc[len(frame) :].reset_index(drop=True), len(frame)),
        )
        pd.testing.assert_frame_equal(_read(io_manager, "t", day), grown)
        frame = grown
    depths = [layers.depth(pq.read_schema(_file(io_manager, "t", d))) for d in DAYS]
    assert depths == [0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3]
    # a layer marking most of the table is written whole, and reads back the same
    marks = pd.DataFrame({"v": np.zeros(600), layers.ROW: np.arange(600)})
    _write(io_manager, "t", DAYS[3], Layered(DAYS[2], marks, frame.iloc[:0], len(frame) - 9))
    assert layers.depth(pq.read_schema(_file(io_manager, "t", DAYS[3]))) == 0
    expected = _read(io_manager, "t", DAYS[2]).assign(v=lambda f: f["v"].where(f.index >= 600, 0.0))
    pd.testing.assert_frame_equal(_read(io_manager, "t", DAYS[3]), expected)


def test_a_rewritten_base_is_refused_and_a_rerun_with_the_same_rows_is_not(io_manager: ParquetIOManager) -> None:
    (first, _), (base, _), (table, changed) = _days_of_votes(2)[:3]
    _write(io_manager, "whole", DAYS[2], table)
    _write(io_manager, "votes", DAYS[1], base)
    layered = _layered(table, base, changed, DAYS[1])
    _write(io_manager, "votes", DAYS[2], layered)
    assert layers.depth(pq.read_schema(_file(io_manager, "votes", DAYS[2]))) == 1
    before = _file(io_manager, "votes", DAYS[2]).read_bytes()
    _write(io_manager, "votes", DAYS[1], base)  # a rerun: the same bytes, the layer still holds
    pd.testing.assert_frame_equal(_read(io_manager, "votes", DAYS[2]), _read(io_manager, "whole", DAYS[2]))
    _write(io_manager, "votes", DAYS[2], layered)
    assert _file(io_manager, "votes", DAYS[2]).read_bytes() == before
    _write(io_manager, "votes", DAYS[1], first)  # re-materialized with other rows
    with pytest.raises(layers.StaleLayerError, match=rf"votes/{DAYS[2]}\.parquet.*re-materialized after it"):
        _read(io_manager, "votes", DAYS[2])
    _file(io_manager, "votes", DAYS[1]).unlink()
    with pytest.raises(layers.StaleLayerError, match="which is gone"):
        _read(io_manager, "votes", DAYS[2])


class _TailOnly(LocalStore):
    """A store whose objects may only be read by their last bytes."""

    def read_bytes(self, key: str) -> bytes:
        raise AssertionError(f"{key} was read whole")


def test_day_tables_open_a_layer_as_its_whole_table(io_manager: ParquetIOManager) -> None:
    (_, _), (base, _), (table, changed) = _days_of_votes(3)[:3]
    _write(io_manager, "votes", DAYS[1], base)
    _write(io_manager, "votes", DAYS[2], _layered(table, base, changed, DAYS[1]))
    _write(io_manager, "whole", DAYS[2], table)
    tables = {}
    for name in ("votes", "whole"):
        context = build_input_context(asset_key=AssetKey(name), partition_key=DAYS[2], name=name)
        tables[name] = io_manager.load_input(context)
        assert not isinstance(tables[name], pd.DataFrame)
    assert tables["votes"].rows(DAYS[2]) == len(table)
    items = table["item_id"].iloc[::7]
    assert tables["votes"].only_items(items).rows(DAYS[2]) == len(table)
    # a day's rows come from the footer alone (on S3: the object's last bytes), a layer's from its own footer
    assert table_rows(_TailOnly(io_manager.storage.warehouse_store.root), io_manager.key(["votes"], DAYS[2])) == len(
        table
    )
    pd.testing.assert_frame_equal(
        tables["votes"].only_items(items)[DAYS[2]], tables["whole"].only_items(items)[DAYS[2]]
    )
    # as Arrow (the layer resolved, or its whole table; some columns, some items): what pandas gets, before pandas
    for name in ("votes", "whole"):
        # the text a file stores dictionary-encoded stays so, a layer's (its marks too) and its base's apart
        schema = tables[name].arrow(DAYS[2]).schema
        assert pa.types.is_dictionary(schema.field("label").type)
        assert pa.types.is_dictionary(schema.field("replaced_on").type)
        for chosen in (tables[name], tables[name].select(keep=["item_id", "x"]), tables[name].only_items(items)):
            arrow = chosen.arrow(DAYS[2])
            assert isinstance(arrow, pa.Table)
            pd.testing.assert_frame_equal(plain(arrow).to_pandas(), chosen[DAYS[2]])


def _edit(item: str, x: float, day: str) -> dict:
    """A Label Studio box annotation (task 1, annotation 7 of ``item``), as delivered on ``day``."""
    return {
        **box(item, "u3", "car", x, day),
        "source_format": "label_studio",
        "source_ref": f"task=1/annotation=7/{item}",
    }


def test_the_day_fold_as_a_layer_is_the_whole_fold() -> None:
    """fold_day reads only FOLD_INPUTS of the earlier votes and returns what the day changes; put over the
    earlier table it gives what fold_votes gives on every judgment: crowd rounds of RTE over three days, box
    answers that supersede earlier boxes, an edited Label Studio annotation that replaces its first version."""
    frame, _ = snow("rte")
    day_of = pd.util.hash_pandas_object(frame[["item_id", "annotator_id"]], index=False).to_numpy() % 3
    items = frame["item_id"].drop_duplicates().to_numpy()[:3]
    deliveries = [
        pd.concat(
            [
                crowd_votes(frame[day_of == n], day),
                validated(
                    [box(i, "u1", "car", 10.0 + n, day) for i in items]
                    + ([_edit(items[2], 50.0 + n, day)] if n else [])
                    + (
                        [box(items[0], "reviewer", "bus", 90.0, day, batch=f"relabel-{STATE_DAYS[0]}")]
                        if n == 2
                        else []
                    )
                ),
            ],
            ignore_index=True,
        )
        for n, day in enumerate(STATE_DAYS)
    ]
    whole = state.fold_votes(state.empty_votes(), deliveries[0])
    layered = whole
    for delivery in deliveries[1:]:
        earlier = pa.Table.from_pandas(_as_stored(layered)[state.FOLD_INPUTS], preserve_index=False)
        for name in ("kind", "export_date"):  # as the IO manager hands the low-cardinality text over: dictionaries
            earlier = earlier.set_column(
                earlier.schema.get_field_index(name), name, earlier.column(name).dictionary_encode()
            )
        marks, added = state.fold_day(earlier, delivery)
        layered = Layered("earlier", marks, added, len(layered)).whole(layered)
        whole = state.fold_votes(whole, delivery)
        pd.testing.assert_frame_equal(_as_stored(layered), _as_stored(whole))
        # counted as the night counts (the earlier votes in Arrow, the day's in pandas) or whole in pandas
        assert state.vote_summary(earlier, STATE_DAYS[2], marks, added) == state.vote_summary(whole, STATE_DAYS[2])
    assert whole["superseded_by"].notna().sum() == 3 and whole["replaced_on"].notna().sum() == 1


def _as_stored(frame: pd.DataFrame) -> pd.DataFrame:
    """The table as the warehouse stores it and hands it back."""
    return pa.Table.from_pandas(frame, preserve_index=False).to_pandas()


def test_marks_alone_a_new_column_and_a_base_rewritten_before_the_write(io_manager: ParquetIOManager) -> None:
    frame = pd.DataFrame(
        {"item_id": [f"i{i}" for i in range(100)], "mark": pd.Series([None] * 99 + ["x"], dtype=object)}
    )
    _write(io_manager, "t", DAYS[0], frame)
    # a day that only marks (an edited re-export adds no judgment): a layer, though its empty rows have no types
    empty = pd.DataFrame({"item_id": pd.Series(dtype="float64"), "mark": pd.Series(dtype="float64")})
    marks = pd.DataFrame({"mark": ["y"], layers.ROW: [3]})
    _write(io_manager, "t", DAYS[1], Layered(DAYS[0], marks, empty, 100))
    assert layers.depth(pq.read_schema(_file(io_manager, "t", DAYS[1]))) == 1
    pd.testing.assert_frame_equal(
        _read(io_manager, "t", DAYS[1]), frame.assign(mark=["y" if i == 3 else m for i, m in enumerate(frame["mark"])])
    )
    # a column the base lacks: the table is written whole, with it (missing in the earlier rows)
    new = pd.DataFrame({"item_id": ["n"], "mark": [None], "extra": [1.5]})
    _write(io_manager, "t", DAYS[2], Layered(DAYS[1], marks.iloc[:0], new, 100))
    got = _read(io_manager, "t", DAYS[2])
    assert layers.depth(pq.read_schema(_file(io_manager, "t", DAYS[2]))) == 0
    assert list(got.columns) == ["item_id", "mark", "extra"] and len(got) == 101
    assert got["extra"].isna().sum() == 100 and got["extra"].iloc[-1] == 1.5 and got["mark"].iloc[3] == "y"
    # the base rewritten between the fold (which saw 101 rows) and the write: refused, nothing written
    _write(io_manager, "t", DAYS[2], frame)
    before = _file(io_manager, "t", DAYS[3]).exists()
    with pytest.raises(layers.StaleLayerError, match=rf"t/{DAYS[2]}\.parquet holds 100 rows.*held 101"):
        _write(io_manager, "t", DAYS[3], Layered(DAYS[2], marks.iloc[:0], new, 101))
    assert _file(io_manager, "t", DAYS[3]).exists() == before


def test_text_stored_as_a_dictionary_is_read_as_one_and_expanded_to_the_same_table(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    rows = 300_000
    frame = pd.DataFrame(
        {
            "item_id": pd.Series([f"item-{i:07d}" for i in range(rows)], dtype="str"),  # too many for a dictionary
            "kind": pd.Series(rng.choice(["bbox", "classification", None], rows), dtype="str"),
            "answer_to": pd.Series([None] * rows, dtype=object),
            "x": rng.random(rows),
        }
    )
    path = tmp_path / "table.parquet"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)
    file = pq.ParquetFile(path)
    assert io_manager_module._dictionary_encoded(file, ["item_id", "kind", "x"]) == ["kind"]
    data = path.read_bytes()
    for names in (None, ["kind", "item_id"], ["x"]):
        read = io_manager_module._read_columns(data, pq.ParquetFile(pa.BufferReader(data)), names)
        expected = pq.read_table(path, columns=names)
        assert read.equals(expected) and read.schema.equals(expected.schema, check_metadata=True)


def _catalog(ids: list[str], day: str, **extra: object) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item_id": pd.Series(ids, dtype=object),
            "uri": pd.Series([f"s3://b/{i}.jpg" for i in ids], dtype=object),
            "width": 1280,
            "height": 720,
            "export_date": day,
            "source_file": f"items/{day}/items.csv",
            **extra,
        }
    )


def test_an_item_index_day_that_only_adds_items_is_a_layer_of_them(io_manager: ParquetIOManager) -> None:
    """The item index of a day that only adds items is stored as a layer of the new items' rows and reads back as
    the whole fold (its rows in another order: new items last, whatever their ids). A day that delivers a known
    item again (its row is replaced) or a column the index lacks is folded whole."""
    first = state.fold_items(pd.DataFrame(), pd.DataFrame(), _catalog([f"img-{i}" for i in range(5, 40)], DAYS[0]))
    _write(io_manager, "items", DAYS[0], first)
    # new ids sort before and between the known ones; a sent production item the catalog also delivers (the
    # catalog's row wins), one nobody catalogued (its sent row is added) and one already known (its row stays)
    catalog = _catalog(["img-0", "img-1", "img-55", "prod-2"], DAYS[1])
    sent = _catalog(["prod-1", "prod-2", "img-7"], DAYS[0]).assign(width=640, source_file="outbox/relabel/x.csv")
    known = pa.Table.from_pandas(_read(io_manager, "items", DAYS[0]), preserve_index=False)
    added = state.added_items(known, sent, catalog)
    assert added is not None and list(added["item_id"]) == ["img-0", "img-1", "img-55", "prod-1", "prod-2"]
    _write(io_manager, "items", DAYS[1], Layered(DAYS[0], pd.DataFrame({layers.ROW: []}), added, len(first)))
    assert layers.depth(pq.read_schema(_file(io_manager, "items", DAYS[1]))) == 1
    stored = _read(io_manager, "items", DAYS[1])
    whole = _as_stored(state.fold_items(_read(io_manager, "items", DAYS[0]), sent, catalog))
    assert list(stored["item_id"][-5:]) == list(added["item_id"])  # after the earlier items
    pd.testing.assert_frame_equal(stored.sort_values("item_id").reset_index(drop=True), whole)
    assert stored.loc[stored["item_id"] == "img-7", "source_file"].item() == f"items/{DAYS[0]}/items.csv"
    layered = pa.Table.from_pandas(stored, preserve_index=False)
    assert state.added_items(layered, sent.iloc[:0], _catalog(["img-9", "img-99"], DAYS[2])) is None  # img-9 again
    assert state.added_items(layered, sent.iloc[:0], _catalog(["img-99"], DAYS[2], region="eu")) is None
    nothing = state.added_items(layered, sent.iloc[:0], _catalog([], DAYS[2]))
    assert nothing is not None and nothing.empty and list(nothing.columns) == list(stored.columns)


@pytest.mark.parametrize("value", ["2024-06-02", "2024-06-09", "bbox"])
def test_text_compared_through_its_dictionary_equals_text_compared_plain(value: str) -> None:
    """The state finds a day's judgments among millions by comparing a dictionary-encoded column's few distinct
    texts, chunk by chunk (a layered table's chunks each bring their own dictionary): the same rows as comparing
    the texts, with missing values and a value one chunk lacks."""
    rng = np.random.default_rng(11)
    chunks = [
        pa.array(rng.choice(np.array(["2024-06-01", "2024-06-02", None, "bbox"], dtype=object), 500), pa.string()),
        pa.array(rng.choice(np.array(["2024-06-09", None], dtype=object), 300), pa.string()),
        pa.array([], pa.string()),
    ]
    plain_table = pa.table({"export_date": pa.chunked_array(chunks)})
    coded = pa.table({"export_date": pa.chunked_array([c.dictionary_encode() for c in chunks])})
    expected = (plain_table.to_pandas()["export_date"] == value).to_numpy()
    assert pa.types.is_dictionary(coded.column("export_date").type)
    for table in (plain_table, coded):
        assert list(state._equal(table, "export_date", value)) == list(expected)
    assert state._equal(coded, "export_date", value).sum() > 0


def test_a_run_hashes_a_base_file_once_and_anew_when_its_bytes_change(
    io_manager: ParquetIOManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A layer records its base file's digest when written, and every read checks the base against it; a run hashes
    the base's bytes once for all of these (the file known by its key, size and footer), a new run again, and
    the run again when the base was written anew, which is still refused."""
    (first, _), (base, _), (table, changed) = _days_of_votes(4)[:3]
    _write(io_manager, "votes", DAYS[1], base)
    hashed: list[int] = []
    original = layers.sha256
    monkeypatch.setattr(layers, "sha256", lambda data: hashed.append(len(data)) or original(data))
    _write(io_manager, "votes", DAYS[2], _layered(table, base, changed, DAYS[1]))
    for _ in range(3):
        pd.testing.assert_frame_equal(_read(io_manager, "votes", DAYS[2]), _as_stored(table))
    assert len(hashed) == 1
    another_run = ParquetIOManager(storage=io_manager.storage)
    _read(another_run, "votes", DAYS[2])
    assert len(hashed) == 2
    _write(io_manager, "votes", DAYS[1], first)  # the base re-materialized with other rows, within the run
    with pytest.raises(layers.StaleLayerError, match="re-materialized after it"):
        _read(io_manager, "votes", DAYS[2])
    assert len(hashed) == 3
