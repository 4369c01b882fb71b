"""Gold files parsed once: a night reads the gold of every earlier day again, and a file already parsed is read
back from the warehouse's parse cache, with the same rows, types and ledger as a parse."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from labelops import ingest
from labelops.storage import LocalStore
from labelops.warehouse import PARSED

FILES = {
    # polygons, and shapes the reader skips and counts
    "gold/2024-06-01/cvat.xml": "datumaro/tests/assets/cvat_dataset/for_images/export_project/annotations.xml",
    # a real Label Studio 1.23.2 export: predictions and a cancelled annotation skipped
    "gold/2024-06-02/answers.json": "label-studio-real/relabel_answers_export.json",
}


def _landing(real: Path, root: Path) -> LocalStore:
    landing = LocalStore(root)
    for key, source in FILES.items():
        landing.write_bytes(key, (real / source).read_bytes())
    landing.write_bytes("gold/2024-06-02/broken.json", b'{"images": [')
    return landing


def test_gold_read_through_the_cache_equals_the_gold_parsed(real: Path, tmp_path: Path) -> None:
    landing, warehouse = _landing(real, tmp_path / "landing"), LocalStore(tmp_path / "warehouse")
    parsed = ingest.read_gold(landing, "2024-06-02")
    first = ingest.read_gold(landing, "2024-06-02", cache=warehouse)
    cached = warehouse.list(PARSED)
    assert len(cached) == 2  # the two good files; an error is never cached
    again = ingest.read_gold(landing, "2024-06-02", cache=warehouse)
    for result in (first, again):
        pd.testing.assert_frame_equal(result.table, parsed.table, check_exact=True)
        pd.testing.assert_frame_equal(result.ledger, parsed.ledger)
    assert parsed.table["points"].notna().any()
    ledger = again.ledger.set_index("source_file")
    assert ledger.loc["gold/2024-06-02/broken.json", "status"] == "error"
    assert "cancelled annotation" in ledger.loc["gold/2024-06-02/answers.json", "skipped"]
    assert "unsupported shape" in ledger.loc["gold/2024-06-01/cvat.xml", "skipped"]
    assert warehouse.list(PARSED) == cached  # nothing parsed the second time


def test_a_gold_file_delivered_again_with_other_bytes_is_parsed_again(real: Path, tmp_path: Path) -> None:
    landing, warehouse = _landing(real, tmp_path / "landing"), LocalStore(tmp_path / "warehouse")
    ingest.read_gold(landing, "2024-06-02", cache=warehouse)
    key = "gold/2024-06-01/cvat.xml"
    landing.write_bytes(key, (real / FILES[key]).read_bytes().replace(b'label="', b'label="new_', 1))  # edited
    copy = (real / FILES["gold/2024-06-02/answers.json"]).read_bytes()
    landing.write_bytes("gold/2024-06-02/copy.json", copy)  # the same bytes under another name (its source_file)
    changed = ingest.read_gold(landing, "2024-06-02", cache=warehouse)
    pd.testing.assert_frame_equal(changed.table, ingest.read_gold(landing, "2024-06-02").table, check_exact=True)
    assert changed.table["label"].str.startswith("new_").any()
    assert len(warehouse.list(PARSED)) == 4  # the edited file under its new content, the copy under its name


def test_a_damaged_cache_entry_is_parsed_again_not_an_error(real: Path, tmp_path: Path) -> None:
    """A cache entry that cannot be read (truncated by hand, a disk fault) costs a parse, never the gold file."""
    landing, warehouse = _landing(real, tmp_path / "landing"), LocalStore(tmp_path / "warehouse")
    parsed = ingest.read_gold(landing, "2024-06-02", cache=warehouse)
    for entry in warehouse.list(PARSED):
        warehouse.write_bytes(entry, warehouse.read_bytes(entry)[:100])
    again = ingest.read_gold(landing, "2024-06-02", cache=warehouse)
    pd.testing.assert_frame_equal(again.table, parsed.table, check_exact=True)
    pd.testing.assert_frame_equal(again.ledger, parsed.ledger)
    assert (again.ledger["status"] == "ok").sum() == 2
