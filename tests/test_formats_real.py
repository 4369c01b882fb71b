"""Every parser on real exports from the tools' own test suites, against the sources' own numbers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from labelops.errors import ExportError
from labelops.formats import parse_file, parse_folder

LS = "label-studio-converter/tests/data"
CVAT = "datumaro/tests/assets/cvat_dataset"
COCO_100 = "faster_coco_eval/tests/dataset/cocoapi/instances_val2014_100.json"


def parse(real: Path, relative: str, **kwargs):
    return parse_file(relative, (real / relative).read_bytes(), **kwargs)


def folder(real: Path, relative: str) -> dict[str, bytes]:
    root = real / relative
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


# --- COCO -------------------------------------------------------------------------------------------


def test_coco_val2014_subset_matches_pycocotools(real: Path) -> None:
    from pycocotools.coco import COCO

    coco = COCO(str(real / COCO_100))
    parsed = parse(real, COCO_100)
    objects = parsed.objects
    assert parsed.format == "coco"
    assert len(objects) == len(coco.getAnnIds()) == 839

    by_ref = objects.set_index("source_ref")
    anns = coco.loadAnns(coco.getAnnIds())
    expected_boxes = np.array([a["bbox"] for a in anns])
    got = by_ref.loc[[f"annotation={a['id']}" for a in anns], ["x", "y", "w", "h"]].to_numpy()
    np.testing.assert_array_equal(got, expected_boxes)  # pixel boxes are COCO's own bbox, bit for bit

    names = {c["id"]: c["name"] for c in coco.loadCats(coco.getCatIds())}
    assert list(by_ref.loc[[f"annotation={a['id']}" for a in anns], "label"]) == [names[a["category_id"]] for a in anns]
    per_category = objects["label"].value_counts()
    for cat_id, name in names.items():
        assert per_category.get(name, 0) == len(coco.getAnnIds(catIds=[cat_id]))

    crowd = [a for a in anns if a["iscrowd"]]
    assert len(crowd) == 9
    for a in crowd:  # RLE kept as an attribute, not dropped
        row = by_ref.loc[f"annotation={a['id']}"]
        assert row["kind"] == "bbox"
        assert json.loads(row["attributes"])["rle"]["size"] == a["segmentation"]["size"]
    polygon = next(a for a in anns if not a["iscrowd"])
    row = by_ref.loc[f"annotation={polygon['id']}"]
    assert row["kind"] == "polygon"
    assert list(row["points"]) == polygon["segmentation"][0]
    images = {i["id"]: i for i in coco.loadImgs(coco.getImgIds())}
    assert row["item_id"] == Path(images[polygon["image_id"]]["file_name"]).stem
    assert row["image_width"] == images[polygon["image_id"]]["width"]


def test_coco_datumaro_instances(real: Path) -> None:
    objects = parse(real, "datumaro/tests/assets/coco_dataset/coco_instances/annotations/instances_val.json").objects
    assert len(objects) == 2
    assert sorted(objects["kind"]) == ["bbox", "polygon"]


def test_coco_detection_results_are_refused(real: Path) -> None:
    with pytest.raises(ExportError, match=r"instances_val2014_fakebbox100_results\.json: COCO detection results"):
        parse(real, "faster_coco_eval/tests/dataset/cocoapi/instances_val2014_fakebbox100_results.json")


# --- Label Studio -----------------------------------------------------------------------------------


def test_label_studio_rectangles_to_pixels_and_annotators(real: Path) -> None:
    path = f"{LS}/test_export_yolo/data.json"
    tasks = json.loads((real / path).read_text())
    objects = parse(real, path).objects
    results = [(t, a, r) for t in tasks for a in t["annotations"] for r in a["result"]]
    assert len(objects) == len(results) == 6
    for task, annotation, result in results:
        row = objects[objects["source_ref"] == f"task={task['id']}/annotation={annotation['id']}/result={result['id']}"]
        assert len(row) == 1
        v, w, h = result["value"], result["original_width"], result["original_height"]
        assert row.iloc[0][["x", "y", "w", "h"]].tolist() == pytest.approx(
            [v["x"] * w / 100, v["y"] * h / 100, v["width"] * w / 100, v["height"] * h / 100], rel=1e-12
        )
        assert row.iloc[0]["annotator_id"] == str(annotation["completed_by"])
        assert row.iloc[0]["label"] == v["rectanglelabels"][0]
    # Task 1 was annotated twice, by users 2 and 1: two annotators on one item.
    first = objects[objects["source_ref"].str.startswith("task=1/")]
    assert sorted(first["annotator_id"].unique()) == ["1", "2"]


def test_label_studio_rotation_kept_in_attributes(real: Path) -> None:
    path = f"{LS}/test_export_yolo/data_obb.json"
    tasks = json.loads((real / path).read_text())
    objects = parse(real, path).objects
    rotations = [
        r["value"]["rotation"]
        for t in tasks
        for a in t["annotations"]
        for r in a["result"]
        if r["type"] == "rectanglelabels"
    ]
    assert len(objects) == len(rotations) == 25
    kept = [json.loads(a).get("rotation", 0.0) for a in objects["attributes"]]
    assert kept == pytest.approx(rotations)
    assert sum(r != 0 for r in rotations) > 0


def test_label_studio_polygons(real: Path) -> None:
    path = f"{LS}/test_export_yolo/data_polygons.json"
    task = json.loads((real / path).read_text())[0]
    result = task["annotations"][0]["result"][0]
    row = parse(real, path).objects.iloc[0]
    assert row["kind"] == "polygon"
    expected = np.asarray(result["value"]["points"]) * [result["original_width"] / 100, result["original_height"] / 100]
    np.testing.assert_allclose(np.asarray(row["points"]), expected.ravel())
    assert row["x"] == pytest.approx(expected[:, 0].min())
    assert row["w"] == pytest.approx(np.ptp(expected[:, 0]))


def test_label_studio_predictions_are_not_labels_and_choices_are(real: Path) -> None:
    parsed = parse(real, f"{LS}/test_export_csv/csv_test.json")
    assert len(parsed.objects) == 3  # the annotator's rectangles, two of them from accepted pre-annotations
    assert parsed.skipped == {"prediction": 2}
    origins = [json.loads(a)["origin"] for a in parsed.objects["attributes"]]
    assert sorted(origins) == ["manual", "prediction", "prediction-changed"]
    assert set(parsed.objects["annotator_id"]) == {"hakan@heartex.com"}  # the embedded user's e-mail

    history = parse(real, f"{LS}/test_export_csv/csv_test_history.json").objects
    assert history[["kind", "label", "annotator_id"]].values.tolist() == [
        ["classification", "Positive", "sergei@heartex.e2e"]
    ]


def test_label_studio_region_attributes_fold_into_region(real: Path) -> None:
    objects = parse(real, f"{LS}/test_export_json_min/data_repeater.json").objects
    assert len(objects) == 1  # the taxonomy result describes the rectangle, it is not a second object
    assert json.loads(objects.iloc[0]["attributes"])["categories_0"] == [["Archaea"]]


def test_label_studio_cancelled_annotations_are_counted_not_labels(real: Path) -> None:
    tasks = json.loads((real / f"{LS}/test_export_yolo/data.json").read_text())
    tasks[0]["annotations"][0]["was_cancelled"] = True
    parsed = parse_file("cancelled.json", json.dumps(tasks).encode())
    assert len(parsed.objects) == 4
    assert parsed.skipped["cancelled annotation"] == 2


# --- CVAT -------------------------------------------------------------------------------------------


def test_cvat_task_export(real: Path) -> None:
    parsed = parse(real, f"{CVAT}/for_images/export_task/train.xml")
    objects = parsed.objects.set_index("kind")
    box = objects.loc["bbox"]
    assert box[["x", "y", "w", "h"]].tolist() == [0.0, 2.0, 4.0, 2.0]  # xtl=0 ytl=2 xbr=4 ybr=4
    assert box["label"] == "label1" and box["item_id"] == "img0"
    assert json.loads(box["attributes"]) == {
        "a1": "true",
        "a2": "v3",
        "a3": "0003",
        "a4": "2.4",
        "occluded": "1",
        "z_order": "1",
    }
    polygon = objects.loc["polygon"]
    assert list(polygon["points"]) == [1.0, 2.0, 3.0, 4.0, 6.0, 5.0]
    assert polygon[["x", "y", "w", "h"]].tolist() == [1.0, 2.0, 5.0, 3.0]
    assert (box["image_width"], polygon["image_width"]) == (8.0, 10.0)
    assert parsed.skipped == {"unsupported shape polyline": 1, "unsupported shape points": 1}


def test_cvat_project_export_keeps_subsets_apart(real: Path) -> None:
    parsed = parse(real, f"{CVAT}/for_images/export_project/annotations.xml")
    assert len(parsed.objects) == 6
    assert parsed.objects["source_ref"].is_unique
    assert parsed.objects["source_ref"].str.extract(r"subset=(\w+)")[0].value_counts().to_dict() == {
        "Test": 2,
        "Train": 2,
        "Validation": 2,
    }
    assert set(parsed.objects["annotator_id"]) == {"tester"}  # no assignee: the task owner


def test_cvat_video_export_is_refused_clearly(real: Path) -> None:
    with pytest.raises(ExportError, match=r"for_video/annotations.xml: CVAT for video export"):
        parse(real, f"{CVAT}/for_video/annotations.xml")


# --- YOLO -------------------------------------------------------------------------------------------


def test_yolo_strict_matches_datumaro(real: Path) -> None:
    files = folder(real, "datumaro/tests/assets/yolo_dataset/strict")
    # datumaro's own test: a 10x15 (h x w) image with Bbox(0, 2, 4, 2, label=2) and Bbox(3, 3, 2, 3, label=4)
    objects = parse_folder("yolo_strict", files, {"1": (15, 10)}).objects
    np.testing.assert_allclose(objects[["x", "y", "w", "h"]].to_numpy(), [[0, 2, 4, 2], [3, 3, 2, 3]], atol=1e-4)
    assert list(objects["label"]) == ["label_2", "label_4"]


def test_yolo_roboflow_data_yaml(real: Path) -> None:
    files = folder(real, "datumaro/tests/assets/roboflow_dataset/yolo")
    sizes = {"train_001": (10, 10), "train_002": (10, 10), "val_001": (10, 10)}
    objects = parse_folder("roboflow", files, sizes).objects
    assert set(objects["label"]) <= {"label_0", "label_1"}
    assert len(objects) == sum(len(v.splitlines()) for k, v in files.items() if k.endswith(".txt"))


def test_yolo_label_studio_import_data_and_unknown_sizes(real: Path) -> None:
    files = folder(real, f"{LS}/test_import_yolo_data")
    sizes = {f"img_{n}": (640, 329) for n in range(1, 8)}
    objects = parse_folder("ls_yolo", files, sizes).objects
    first = objects[objects["source_ref"] == "labels/img_1.txt:1"].iloc[0]
    assert first["label"] == "bus"
    assert first[["w", "h"]].tolist() == pytest.approx([0.9640625 * 640, 0.8693009118541033 * 329])
    with pytest.raises(ExportError, match="ls_yolo: image size unknown for 7 item"):
        parse_folder("ls_yolo", files, {})


# --- Long tables ------------------------------------------------------------------------------------


def test_snow_rte_long_table(real: Path) -> None:
    path = "bayesian_combination_tutorial2/all_collected_data/rte.standardized.tsv"
    source = pd.read_csv(real / path, sep="\t")
    objects = parse(real, path).objects
    assert len(objects) == len(source) == 8000
    assert objects["item_id"].nunique() == source["orig_id"].nunique() == 800
    assert objects["annotator_id"].nunique() == source["!amt_worker_ids"].nunique() == 164
    assert (objects["label"].astype(int).to_numpy() == source["response"].to_numpy()).all()
    assert set(objects["kind"]) == {"classification"}


@pytest.mark.parametrize("name", ["temp", "wsd"])
def test_snow_other_tasks_load(real: Path, name: str) -> None:
    path = f"bayesian_combination_tutorial2/all_collected_data/{name}.standardized.tsv"
    assert len(parse(real, path).objects) == len(pd.read_csv(real / path, sep="\t"))


def test_get_another_label_headerless(real: Path) -> None:
    path = "Get-Another-Label/data/AdultContent2/labels.txt"
    objects = parse(real, path).objects
    source = pd.read_csv(real / path, sep="\t", header=None, names=["worker", "object", "label"], dtype=str)
    assert len(objects) == len(source) == 92721
    assert objects["annotator_id"].nunique() == 825
    assert (objects["item_id"].to_numpy() == source["object"].to_numpy()).all()
    gold = parse(real, "Get-Another-Label/data/AdultContent2/gold.txt", require_annotator=False).objects
    assert len(gold) == 1517 and set(gold["label"]) <= {"G", "P", "R", "X"}
