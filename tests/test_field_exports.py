"""Exports shaped as labeling teams produce them: each case reads, counts and quarantines exactly."""

from __future__ import annotations

import io
import json
import os
import time
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from labelops import ingest, validation
from labelops.expectations import load_suites, run_suites
from labelops.guidelines import load_guidelines
from labelops.storage import LocalStore

REPO = Path(__file__).resolve().parents[1]
DAY, NEXT = "2024-06-13", "2024-06-14"  # guideline v2 in force
NOW = datetime(2024, 6, 15, tzinfo=UTC)


def ls_task(task_id: int, item: str, annotations: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": task_id,
        "data": {"image": f"/data/upload/1/{item}.jpg"},
        "annotations": annotations,
        "predictions": [{"id": 900 + task_id, "result": []}],
    }


def ls_annotation(
    annotation_id: int,
    who: int,
    updated: str,
    scene: str | None,
    boxes: list[tuple[str, float]],
    cancelled: bool = False,
) -> dict[str, Any]:
    result: list[dict[str, Any]] = []
    if scene:
        result.append(
            {
                "id": f"s{annotation_id}",
                "type": "choices",
                "from_name": "scene",
                "to_name": "image",
                "value": {"choices": [scene]},
            }
        )
    for n, (label, x) in enumerate(boxes):
        result.append(
            {
                "id": f"b{annotation_id}-{n}",
                "type": "rectanglelabels",
                "from_name": "label",
                "to_name": "image",
                "original_width": 1000,
                "original_height": 500,
                "value": {"x": x, "y": 10.0, "width": 10.0, "height": 20.0, "rotation": 0, "rectanglelabels": [label]},
            }
        )
    return {
        "id": annotation_id,
        "completed_by": who,
        "updated_at": updated,
        "created_at": "2024-06-12T08:00:00Z",
        "was_cancelled": cancelled,
        "result": result,
    }


def detection_project() -> bytes:
    """The most common Label Studio project: a scene choice and boxes, no polygon anywhere."""
    tasks = [
        ls_task(
            1,
            "img-1",
            [
                ls_annotation(11, 1, "2024-06-12T09:00:00Z", "urban", [("car", 5.0), ("truck", 40.0)]),
                ls_annotation(12, 2, "2024-06-12T09:30:00Z", "urban", [("car", 5.0)]),
            ],
        ),
        ls_task(
            2,
            "img-2",
            [
                ls_annotation(21, 1, "2024-06-12T10:00:00Z", None, [("car", 60.0)]),  # boxes only
                ls_annotation(22, 2, "2024-06-12T10:05:00Z", "highway", []),  # scene only
                ls_annotation(23, 3, "2024-06-12T10:10:00Z", "urban", [("car", 1.0)], cancelled=True),
            ],
        ),
    ]
    return json.dumps(tasks).encode()


def validate(table: pd.DataFrame, day: str = DAY) -> tuple[pd.DataFrame, pd.DataFrame]:
    guidelines = load_guidelines(LocalStore(REPO / "config"))
    frame = validation.validation_frame(table, pd.DataFrame(), guidelines, day, NOW)
    outcome = run_suites(frame, load_suites(LocalStore(REPO / "expectations")), asset_name="annotations")
    return validation.split_validated(frame, outcome.failures)


def rules(quarantined: pd.DataFrame) -> dict[str, int]:
    return quarantined["rule"].str.split("; ").explode().value_counts().to_dict()


def test_label_studio_boxes_and_choices_without_polygons(tmp_path: Path) -> None:
    landing = LocalStore(tmp_path)
    landing.write_bytes(f"exports/{DAY}/project.json", detection_project())
    result = ingest.read_exports(landing, DAY)
    entry = result.ledger.iloc[0]
    assert (entry["status"], entry["rows"]) == ("ok", 7)  # 2 scenes + 4 boxes + 1 scene; cancelled one skipped
    assert json.loads(entry["skipped"]) == {"prediction": 2, "cancelled annotation": 2}
    assert result.table["kind"].value_counts().to_dict() == {"bbox": 4, "classification": 3}
    assert result.table["points"].isna().all()
    validated, quarantined = validate(result.table)
    assert (len(validated), len(quarantined)) == (7, 0)


def test_any_failure_inside_a_parser_fails_that_file_alone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from labelops.formats import cvat

    landing = LocalStore(tmp_path)
    landing.write_bytes(f"exports/{DAY}/project.json", detection_project())
    landing.write_bytes(f"exports/{DAY}/task.xml", b"<annotations><version>1.1</version></annotations>")

    def explode(*_: object) -> None:
        raise ZeroDivisionError("a bug in a parser")

    monkeypatch.setattr(cvat, "parse", explode)
    result = ingest.read_exports(landing, DAY)
    ledger = result.ledger.set_index("source_file")
    assert ledger.loc[f"exports/{DAY}/project.json", "status"] == "ok" and len(result.table) == 7
    assert ledger.loc[f"exports/{DAY}/task.xml", "status"] == "error"
    assert ledger.loc[f"exports/{DAY}/task.xml", "error"] == (
        f"exports/{DAY}/task.xml: malformed values (ZeroDivisionError: a bug in a parser)"
    )


def test_the_same_export_twice_counts_once_within_a_day_and_across_days(tmp_path: Path) -> None:
    landing, warehouse = LocalStore(tmp_path / "landing"), LocalStore(tmp_path / "warehouse")
    for name in ("project.json", "project (1).json"):
        landing.write_bytes(f"exports/{DAY}/{name}", detection_project())
    landing.write_bytes(f"exports/{NEXT}/redelivered.json", detection_project())

    first = ingest.read_exports(landing, DAY, known=ingest.known_judgments(warehouse, DAY))
    ingest.record_judgments(warehouse, DAY, first.table)
    assert first.ledger.set_index("source_file")["duplicates"].to_dict() == {  # files are read in name order
        f"exports/{DAY}/project (1).json": 0,
        f"exports/{DAY}/project.json": 7,
    }
    validated, quarantined = validate(first.table)
    assert (len(validated), len(quarantined)) == (7, 7)
    assert rules(quarantined) == {"duplicate": 7}
    assert set(quarantined["duplicate_of"]) == set(validated["annotation_id"])
    assert validated.groupby("annotator_id").size().to_dict() == {"1": 4, "2": 3}  # no annotator counted twice

    second = ingest.read_exports(landing, NEXT, known=ingest.known_judgments(warehouse, NEXT))
    assert second.ledger["duplicates"].tolist() == [7]
    assert set(second.table["duplicate_of"]) == set(validated["annotation_id"])
    validated_next, quarantined_next = validate(second.table, NEXT)
    assert (len(validated_next), len(quarantined_next)) == (0, 7)
    # rerunning the first day compares only with days before it: the same answer
    again = ingest.read_exports(landing, DAY, known=ingest.known_judgments(warehouse, DAY))
    pd.testing.assert_frame_equal(again.table, first.table)


def test_a_moved_box_is_a_new_judgment(tmp_path: Path) -> None:
    landing = LocalStore(tmp_path)
    landing.write_bytes(f"exports/{DAY}/a.json", detection_project())
    moved = detection_project().replace(b'"x": 60.0', b'"x": 61.0')
    landing.write_bytes(f"exports/{DAY}/b.json", moved)
    result = ingest.read_exports(landing, DAY)
    assert result.ledger["duplicates"].tolist() == [0, 6]


def test_label_studio_latest_version_wins_wherever_it_stands(tmp_path: Path) -> None:
    older = ls_annotation(11, 1, "2024-06-12T09:00:00Z", "urban", [("car", 5.0)])
    newer = ls_annotation(11, 1, "2024-06-12T17:00:00+00:00", "highway", [("truck", 50.0), ("car", 70.0)])
    for order in ([newer, older], [older, newer]):
        document = [ls_task(1, "img-1", [order[0]]), ls_task(1, "img-1", [order[1]])]
        landing = LocalStore(tmp_path / str(len(list(tmp_path.iterdir()))))
        landing.write_bytes(f"exports/{DAY}/p.json", json.dumps(document).encode())
        result = ingest.read_exports(landing, DAY)
        assert sorted(result.table["label"]) == ["car", "highway", "truck"]
        assert json.loads(result.ledger["skipped"].iloc[0])["superseded annotation version"] == 2


def test_an_annotation_submitted_empty_is_counted_by_every_reader(tmp_path: Path) -> None:
    """ "Nothing to label" in Label Studio: an annotation with no result is no judgment, but it is an input record,
    so the ledger counts it, whichever of the three readers takes the file."""
    from labelops.formats import label_studio, label_studio_arrow, label_studio_typed

    document = [
        ls_task(1, "img-1", [ls_annotation(11, 1, "2024-06-12T09:00:00Z", "urban", [("car", 5.0)])]),
        ls_task(2, "img-2", [ls_annotation(21, 1, "2024-06-12T09:00:00Z", None, []), {"id": 22, "completed_by": 2}]),
    ]
    data = json.dumps(document).encode()
    readers = {
        "general": lambda: label_studio.parse("p.json", json.loads(data), {}),
        "arrow": lambda: label_studio_arrow.parse("p.json", data, {}),
        "typed": lambda: label_studio_typed.parse("p.json", data, {}),
    }
    skipped = {}
    for name, read in readers.items():
        parsed = read()
        assert parsed is not None and len(parsed.objects) == 2, name
        skipped[name] = dict(parsed.skipped)
    assert skipped["general"]["empty annotation"] == 2 and skipped["general"] == skipped["arrow"] == skipped["typed"]
    landing = LocalStore(tmp_path)
    landing.write_bytes(f"exports/{DAY}/p.json", data)
    assert json.loads(ingest.read_exports(landing, DAY).ledger["skipped"].iloc[0]) == skipped["general"]


def coco(annotations: list[dict[str, Any]]) -> bytes:
    return json.dumps(
        {
            "images": [{"id": 1, "file_name": "img-1.jpg", "width": 1000, "height": 500}],
            "categories": [{"id": 1, "name": "car"}, {"id": 2, "name": "crosswalk"}],
            "annotations": annotations,
            "info": {"contributor": "vendor-a"},
        }
    ).encode()


def test_coco_geometry_never_changes_kind_silently(tmp_path: Path) -> None:
    square = [10.0, 10.0, 110.0, 10.0, 110.0, 60.0, 10.0, 60.0]
    annotations = [
        {"id": 1, "image_id": 1, "category_id": 2, "bbox": [10, 10, 100, 50], "segmentation": [square], "area": 5000},
        {
            "id": 2,
            "image_id": 1,
            "category_id": 2,
            "bbox": [10, 10, 100, 50],
            "segmentation": [[10, 10, 110, 60]],
            "area": 10,
        },  # a two-point "polygon"
        {"id": 3, "image_id": 1, "category_id": 1, "bbox": [300, 10, 100, 50], "area": -5000},
        {
            "id": 4,
            "image_id": 1,
            "category_id": 2,
            "bbox": [500, 100, 100, 50],
            "segmentation": [square],
            "area": 5000,
        },  # its box is elsewhere
        {"id": 5, "image_id": 1, "category_id": 1, "bbox": [600, 10, 100, 50], "area": 5000},
        {"id": 5, "image_id": 1, "category_id": 1, "bbox": [700, 10, 100, 50], "area": 5000},  # id repeated
        {"id": 6, "image_id": 1, "category_id": 1, "bbox": [800, 10, 100, 50], "area": 5000},
        {"id": 6, "image_id": 1, "category_id": 1, "bbox": [800, 10, 100, 50], "area": 5000},  # the same twice
    ]
    landing = LocalStore(tmp_path)
    landing.write_bytes(f"exports/{DAY}/vendor.json", coco(annotations))
    table = ingest.read_exports(landing, DAY).table
    assert table["kind"].tolist() == ["polygon", "polygon", "bbox", "polygon", "bbox", "bbox", "bbox", "bbox"]
    validated, quarantined = validate(table)
    assert len(validated) + len(quarantined) == 8
    assert validated["source_ref"].tolist() == ["annotation=1", "annotation=5", "annotation=6"]
    by_ref = dict(
        zip(
            quarantined["source_ref"] + "/" + quarantined.groupby("source_ref").cumcount().astype(str),
            quarantined["rule"],
            strict=True,
        )
    )
    assert by_ref == {
        "annotation=2/0": "polygon_min_points",
        "annotation=3/0": "area_non_negative",
        "annotation=4/0": "polygon_matches_box",
        "annotation=5/0": "record_id_unique",
        "annotation=6/0": "duplicate",
    }


def test_item_ids_have_one_spelling_everywhere(tmp_path: Path) -> None:
    landing = LocalStore(tmp_path)
    landing.write_bytes(f"items/{DAY}/items.csv", b"item_id,uri,width,height\n img-1 ,s3://b/img-1.jpg,1000,500\n")
    landing.write_bytes(f"production/{DAY}/log.csv", b"item_id,predicted_label,confidence\nimg-1 ,car,0.9\n")
    landing.write_bytes(f"exports/{DAY}/crowd.csv", b"item_id,annotator_id,label\n  img-1,u1,urban\nimg-1,u2,urban\n")
    items = ingest.read_items(landing, DAY).table
    predictions = ingest.read_predictions(landing, DAY).table
    annotations = ingest.read_exports(landing, DAY).table
    assert items["item_id"].tolist() == ["img-1"] and predictions["item_id"].tolist() == ["img-1"]
    assert annotations["item_id"].tolist() == ["img-1", "img-1"]
    assert len(annotations.merge(items, on="item_id")) == 2


def yolo_folder(landing: LocalStore, label_bytes: int) -> None:
    landing.write_bytes(f"exports/{DAY}/partner/obj.names", b"car\n")
    for name in ("a", "b"):
        landing.write_bytes(f"exports/{DAY}/partner/labels/{name}.txt", b"0 0.5 0.5 0.1 0.1\n" * (label_bytes // 18))


class CountingStore(LocalStore):
    reads: list[str]

    def read_bytes(self, key: str) -> bytes:
        self.reads.append(key)
        return super().read_bytes(key)


def test_an_oversized_export_is_refused_as_a_whole_before_reading(tmp_path: Path) -> None:
    landing = CountingStore(tmp_path)
    landing.reads = []
    yolo_folder(landing, 3_000)  # two label files of 3 kB: each under the per-file limit, together over it
    policy = ingest.ReadPolicy(max_file_bytes=4_000, max_export_bytes=5_000)
    result = ingest.read_exports(landing, DAY, {"a": (100, 100), "b": (100, 100)}, policy=policy)
    assert landing.reads == []
    entry = result.ledger.iloc[0]
    assert entry["status"] == "error" and entry["error"].startswith(
        f"exports/{DAY}/partner: export is 5980 bytes in 3 file(s), above the 5000-byte limit for one export"
    )
    relaxed = ingest.read_exports(
        landing, DAY, {"a": (100, 100), "b": (100, 100)}, policy=ingest.ReadPolicy(max_export_bytes=10_000)
    )
    assert relaxed.ledger["rows"].tolist() == [332]


def test_a_file_still_being_written_is_deferred_not_read(tmp_path: Path) -> None:
    landing = LocalStore(tmp_path)
    landing.write_bytes(f"exports/{DAY}/old.json", detection_project())
    landing.write_bytes(f"exports/{DAY}/new.json", detection_project().replace(b"img-", b"pic-"))
    landing.write_bytes(f"items/{DAY}/items.csv", b"item_id,width,height\nimg-1,1000,500\n")
    an_hour_ago = time.time() - 3600
    os.utime(landing.path(f"exports/{DAY}/old.json"), (an_hour_ago, an_hour_ago))
    policy = ingest.ReadPolicy.settling(60)
    result = ingest.read_exports(landing, DAY, policy=policy)
    assert result.ledger[["source_file", "status", "rows"]].values.tolist() == [
        [f"exports/{DAY}/new.json", ingest.STILL_ARRIVING, 0],
        [f"exports/{DAY}/old.json", "ok", 7],
    ]
    assert ingest.read_items(landing, DAY, policy=policy).ledger["status"].tolist() == [ingest.STILL_ARRIVING]
    later = ingest.read_exports(landing, DAY, policy=ingest.ReadPolicy.settling(60, now=time.time() + 120))
    assert later.ledger["rows"].tolist() == [7, 7] and later.ledger["duplicates"].tolist() == [0, 0]


def test_a_yolo_zip_export_counts_its_archive_once(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("obj.names", "car\n")
        archive.writestr("labels/a.txt", "0 0.5 0.5 0.1 0.1\n0 0.5 0.5 0.1 0.1\n")  # the same box twice
    landing = LocalStore(tmp_path)
    landing.write_bytes(f"exports/{DAY}/partner.zip", buffer.getvalue())
    result = ingest.read_exports(landing, DAY, {"a": (100, 100)})
    assert result.ledger[["rows", "duplicates"]].values.tolist() == [[2, 1]]
