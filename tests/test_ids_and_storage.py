"""Stable ids and atomic, escape-proof storage."""

from __future__ import annotations

import hashlib
from pathlib import Path

from labelops import ingest
from labelops.storage import LocalStore, mapped

DAY = "2024-06-01"
LS = "label-studio-converter/tests/data/test_export_yolo/data.json"


def test_reingesting_the_same_file_gives_the_same_ids(real: Path, tmp_path: Path) -> None:
    first, second = LocalStore(tmp_path / "a"), LocalStore(tmp_path / "b")
    data = (real / LS).read_bytes()
    first.write_bytes(f"exports/{DAY}/ls.json", data)
    second.write_bytes("exports/2024-06-09/ls.json", data)  # re-delivered on a later day
    a = ingest.read_exports(first, DAY).table
    b = ingest.read_exports(second, "2024-06-09").table
    assert a["annotation_id"].is_unique
    assert list(a["annotation_id"]) == list(b["annotation_id"])
    assert list(a["annotation_id"]) == list(ingest.read_exports(first, DAY).table["annotation_id"])


def test_repeated_refs_still_get_unique_ids() -> None:
    import pandas as pd

    files = pd.Series(["exports/2024-06-01/x.csv"] * 3)
    refs = pd.Series(["line=2", "line=2", "line=3"])
    ids = ingest.annotation_ids(files, refs)
    assert len(set(ids)) == 3


def test_local_writes_are_atomic_and_leave_no_temp_files(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.write_bytes("t/a.parquet", b"one")
    store.write_bytes("t/a.parquet", b"two")
    assert store.read_bytes("t/a.parquet") == b"two"
    assert [p.name for p in (tmp_path / "t").iterdir()] == ["a.parquet"]
    assert store.list() == ["t/a.parquet"]


def test_a_mapped_local_file_is_its_bytes_as_they_were_when_mapped(tmp_path: Path) -> None:
    """A reader that only decodes or digests a file maps it instead of copying it into memory; a file replaced
    meanwhile (writes rename) leaves the mapping as it was."""
    store = LocalStore(tmp_path)
    store.write_bytes("t/a.parquet", b"one" * 10_000)
    data = mapped(store, "t/a.parquet")
    assert isinstance(data, memoryview)
    store.write_bytes("t/a.parquet", b"two")
    assert bytes(data) == b"one" * 10_000 and len(data) == 30_000
    assert hashlib.sha256(data).digest() == hashlib.sha256(b"one" * 10_000).digest()
    assert bytes(mapped(store, "t/a.parquet")) == b"two"
    store.write_bytes("t/empty", b"")
    assert mapped(store, "t/empty") == b""


def test_a_day_with_no_files_is_an_empty_partition(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    for read in (ingest.read_exports, ingest.read_items, ingest.read_predictions, ingest.read_gold):
        result = read(store, DAY)
        assert result.table.empty and result.ledger.empty
    assert list(ingest.read_exports(store, DAY).table.columns) == ingest.ANNOTATION_SCHEMA.names


def test_image_sizes_are_the_catalogs_last_rows_looked_up_when_first_needed(tmp_path: Path) -> None:
    """The catalog's sizes by item id, as a dict of its rows would hold them (the last row of an item wins),
    built only when an export asks: a day of CSV exports, which carry no geometry to scale, never builds it."""
    import pandas as pd

    items = pd.DataFrame({"item_id": ["a", "b", "a"], "width": [640.0, 800.0, 1280.0], "height": [480.0, 600.0, 720.0]})
    sizes = ingest.ImageSizes(items)
    store = LocalStore(tmp_path)
    store.write_bytes(f"exports/{DAY}/v.csv", b"item_id,annotator_id,kind,label\na,ann1,classification,car\n")
    assert ingest.read_exports(store, DAY, sizes).table["item_id"].tolist() == ["a"]
    assert "_sizes" not in vars(sizes)
    assert dict(sizes) == {"a": (1280.0, 720.0), "b": (800.0, 600.0)}
    assert sizes["b"] == (800.0, 600.0) and "c" not in sizes and len(sizes) == 2
