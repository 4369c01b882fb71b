"""annotation_ids hashes each file name once and the refs without factorizing; the ids are those of the
row-by-row hashing it replaced (kept as the path for refs repeated within a file and for missing values).
Content ids hash Arrow-encoded categories; ids and copies are those of the object hashing they replaced."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from labelops.ingest import (
    _annotation_ids_by_row,
    annotation_ids,
    content_ids,
    hex_strings,
    hex_values,
    known_judgments,
    mark_duplicates,
    record_judgments,
)
from labelops.storage import LocalStore
from labelops.warehouse import JUDGMENTS

FILES = ["exports/2024-06-01/a.json", "exports/2024-06-02/a.json", "b.json", "exports/2024-06-03/ü/é.json"]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("as_text", [False, True])
def test_ids_are_the_row_by_row_ids(seed: int, as_text: bool) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(0, 2000))
    files = rng.choice(FILES, n).tolist()
    pool = [f"task={i}/annotation=ä{i % 7}/result=r{i % 3}" for i in range(400)] + ["", " "]
    refs = rng.choice(pool, n).tolist() if seed % 2 else [f"t{i}/ß{j}" for i, j in enumerate(rng.integers(0, 9, n))]
    dtype = None if as_text else object  # pandas' own text dtype, or Python objects
    file_column, ref_column = pd.Series(files, dtype=dtype), pd.Series(refs, dtype=dtype, index=np.arange(n) + 3)
    ids = annotation_ids(file_column, ref_column)
    assert ids.dtype == "str" and all(type(i) is str for i in ids)
    assert ids.tolist() == _annotation_ids_by_row(file_column, ref_column).tolist()
    assert len(set(ids.tolist())) == n


def test_hex_strings() -> None:
    values = np.array([0, 1, 0xABCDEF, 2**64 - 1], dtype=np.uint64)
    assert hex_strings(values).tolist() == [f"{int(v):016x}" for v in values]
    assert hex_strings(np.array([], dtype=np.uint64)).tolist() == []


def _content_ids_by_objects(frame: pd.DataFrame) -> np.ndarray:
    """The content ids as the replaced code hashed them: every text column copied into Python objects."""
    geometry = frame[["x", "y", "w", "h"]].astype(float).round(2) + 0.0
    points = pa.array(frame["points"].to_numpy(dtype=object), type=pa.list_(pa.float64()))
    rounded = pc.add(pc.round(points.flatten(), 2), 0.0)
    as_text = pa.ListArray.from_arrays(points.offsets, pc.cast(rounded, pa.string()), mask=points.is_null())
    keyed = pd.DataFrame(
        {
            "annotator": frame["annotator_id"].to_numpy(dtype=object),
            "item": frame["item_id"].to_numpy(dtype=object),
            "kind": frame["kind"].to_numpy(dtype=object),
            "label": frame["label"].astype(object).fillna("\x00").to_numpy(dtype=object),
            **{c: geometry[c].to_numpy() for c in geometry},
            "points": pc.fill_null(pc.binary_join(as_text, ","), "").to_numpy(zero_copy_only=False).astype(object),
        }
    )
    return hex_strings(pd.util.hash_pandas_object(keyed, index=False).to_numpy())


def _judgments(rng: np.random.Generator, n: int, as_text: bool) -> pd.DataFrame:
    dtype = "str" if as_text else object
    pick = lambda pool: pd.Series(rng.choice(np.array(pool, dtype=object), n), dtype=dtype)  # noqa: E731
    boxes = rng.random(n) < 0.5
    corner = np.where(boxes, rng.integers(0, 4, n) * 10.004, np.nan)
    frame = pd.DataFrame(
        {
            "annotator_id": pick(["a1", "ü2", "", None, "nan"]),
            "item_id": pick([f"img{i}" for i in range(30)] + [None]),
            "kind": pick(["classification", "bbox", "polygon"]),
            "label": pick(["car", "Bus", "", None, "\x00"]),
            "x": corner,
            "y": -0.0 * corner,
            "w": np.where(boxes, 5.0, np.nan),
            "h": np.where(boxes, 5.0, np.nan),
            "points": [[1.0, 2.004, 3.0, 4.0] if p else None for p in rng.random(n) < 0.2],
        }
    )
    frame["annotation_id"] = hex_strings(rng.integers(0, 2**63, n).astype(np.uint64))
    return frame


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("shape", ["objects", "text", "chunked text"])  # "chunked": as read back from Parquet
def test_content_ids_and_copies_are_those_of_the_object_hashing(seed: int, shape: str, tmp_path) -> None:
    rng = np.random.default_rng(seed)
    frame = _judgments(rng, int(rng.integers(0, 600)), shape != "objects")
    if shape == "chunked text":
        half = len(frame) // 2
        frame = pa.concat_tables([pa.Table.from_pandas(frame[:half]), pa.Table.from_pandas(frame[half:])]).to_pandas()
    expected = _content_ids_by_objects(frame)
    assert content_ids(frame).tolist() == expected.tolist()
    # copies within the day point at the day's first delivery; earlier days' deliveries win over it
    store = LocalStore(tmp_path)
    earlier = frame.sample(frac=0.3, random_state=seed).assign(annotation_id=lambda f: "old-" + f["annotation_id"])
    record_judgments(store, "2024-06-01", mark_duplicates(earlier).assign(duplicate_of=None))
    for known in (None, known_judgments(store, "2024-06-02")):
        marked = mark_duplicates(frame, known)
        ids = pd.Series(expected)
        first = pd.Series(frame["annotation_id"].to_numpy(), index=expected)
        first = first[~first.index.duplicated()]
        want = ids.map(first).where(ids.duplicated(), None)
        if known is not None:
            recorded = pd.Series(earlier["annotation_id"].to_numpy(), index=_content_ids_by_objects(earlier))
            want = ids.map(recorded[~recorded.index.duplicated()]).fillna(want)
        assert marked["content_id"].tolist() == expected.tolist()
        assert marked["duplicate_of"].tolist() == [None if pd.isna(v) else v for v in want]
        assert marked.drop(columns=["content_id", "duplicate_of"]).equals(frame)


def test_hex_values_undo_hex_strings() -> None:
    values = np.array([0, 1, 0xABCDEF, 2**64 - 1, 2**63], dtype=np.uint64)
    assert hex_values(pd.Series(hex_strings(values))).tolist() == values.tolist()


def test_the_ledger_finds_earlier_deliveries_by_key_and_in_days_recorded_before_the_keys(tmp_path) -> None:
    store = LocalStore(tmp_path)
    values = np.array([5, 2**64 - 1, 0xABCDEF, 17], dtype=np.uint64)
    recorded = pd.DataFrame({"content_id": hex_strings(values), "annotation_id": ["a", "b", "c", "d"]})
    record_judgments(store, "2024-06-01", recorded.iloc[:2].assign(duplicate_of=None))
    # a day recorded by the code before content_key: content and annotation ids only
    older = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(recorded.iloc[2:], preserve_index=False), older)
    store.write_bytes(f"{JUDGMENTS}/2024-05-31.parquet", older.getvalue())
    assert "content_key" in pq.read_schema(tmp_path / JUDGMENTS / "2024-06-01.parquet").names
    found = known_judgments(store, "2024-06-02").lookup(values[[3, 1, 2]])
    assert found["content_id"].tolist() == list(hex_strings(values[[2, 3, 1]]))  # the oldest day first
    assert found["annotation_id"].tolist() == ["c", "d", "b"]
    assert known_judgments(store, "2024-06-02").lookup(np.array([9], dtype=np.uint64)).empty
