"""Export file names: item ids become safe, distinct file stems; an id is never a path in an export."""

from __future__ import annotations

import io
import json
import zipfile

import pandas as pd
from test_snapshots import curate, inputs

from labelops.export import MAX_STEM, safe_stem, to_coco, to_yolo
from labelops.formats import parse_file
from labelops.storage import safe_key

HOSTILE = ["a/b", "../../etc/x", "a_b", " .hidden", "x\\y"]


def hostile_snapshot() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Five items (two boxes each) renamed to the hostile ids, curated with their splits."""
    consensus, items = inputs(5)
    rename = dict(zip(items["item_id"], HOSTILE, strict=True))
    consensus["item_id"], items["item_id"] = consensus["item_id"].map(rename), items["item_id"].map(rename)
    curated = curate(consensus, items)
    return curated.items, curated.labels


def test_hostile_ids_become_distinct_safe_zip_members_that_read_back() -> None:
    items, labels = hostile_snapshot()
    archive = to_yolo(items, labels)
    members = [name for name in zipfile.ZipFile(io.BytesIO(archive)).namelist() if name.startswith("labels/")]
    assert len(members) == 5 and len(set(members)) == 5
    assert all(safe_key(name) == name and ".." not in name.split("/") for name in members)
    assert "labels/" + items.loc[items["item_id"] == "a_b", "split"].iloc[0] + "/a_b.txt" in members  # a safe id stays
    stems = safe_stem(items["item_id"])
    sizes = dict(zip(stems, zip(items["width"], items["height"], strict=True), strict=True))
    objects = parse_file("yolo.zip", archive, sizes).objects
    assert len(objects) == 10 and (objects["item_id"].value_counts() == 2).all()
    assert set(objects["item_id"]) == set(stems)


def test_coco_file_names_are_unique_stems_and_keep_the_original_ids() -> None:
    items, labels = hostile_snapshot()
    document = json.loads(to_coco(items, labels, description="test"))
    names = [image["file_name"] for image in document["images"]]
    assert len(names) == 5 and len(set(names)) == 5
    assert all(safe_key(name) == name and "/" not in name for name in names)
    assert sorted(image["item_id"] for image in document["images"]) == sorted(HOSTILE)
    assert len(document["annotations"]) == 10
    objects = parse_file("coco.json", json.dumps(document).encode()).objects
    assert len(objects) == 10
    assert set(objects["item_id"].str.strip()) == {h.strip() for h in HOSTILE}  # read back as the original ids


def test_safe_stem_keeps_safe_ids_and_alters_the_rest_safely_and_stably() -> None:
    safe = pd.Series(["img-0001", "a_b", "x.y-z", "CAM_a.2024"])
    assert safe_stem(safe).tolist() == safe.tolist()
    assert safe_stem(pd.Series(["a/b"])).iloc[0] == "a_b-0d96685e8f68e767"  # the same stem in every run
    unsafe = pd.Series(
        ["a/b", "a\\b", "", ".", "..", ".env", "a\x00b", "a\nb", "caf\u00e9", "x" * 300, "x" * 301, "a b"]
    )
    spelled = pd.concat([unsafe, safe_stem(pd.Series(["a/b"]))], ignore_index=True)  # a safe id spelling a/b's stem
    stems = safe_stem(spelled)
    assert stems.nunique() == 13 and (stems != spelled).all()
    assert stems.str.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9._-]*").all() and (stems.str.len() <= MAX_STEM).all()
