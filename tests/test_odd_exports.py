"""Shapes real exports take that the format fixtures did not: numbers beyond a float, a COCO batch of negatives, an
annotator id on some annotations only, a flat COCO polygon, Windows paths in Label Studio, YOLO class maps."""

from __future__ import annotations

import io
import json
import re
import zipfile
from typing import Any

import pytest
from test_media_names import label_studio as tasks

from labelops.errors import ExportError
from labelops.formats import label_studio_arrow, label_studio_typed, parse_file

BIG = b"1" + b"0" * 400  # an integer literal no float holds
SIZES = {"0001": (100.0, 100.0)}


def label_studio(*images: str) -> bytes:
    """One task per image, each with one annotator's car box at x = 10 % of a 100-pixel image."""
    return tasks(*({"image": image} for image in images))


def coco(annotations: list[dict[str, Any]], file_name: str = "0001.jpg", **info: Any) -> bytes:
    return json.dumps(
        {
            "info": info,
            "images": [{"id": 1, "file_name": file_name, "width": 100, "height": 100}],
            "categories": [{"id": 1, "name": "car"}],
            "annotations": annotations,
        }
    ).encode()


def annotation(n: int, **fields: Any) -> dict[str, Any]:
    return {"id": n, "image_id": 1, "category_id": 1, "bbox": [1, 2, 4, 4], **fields}


def yolo(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "name,data",
    [
        ("box.json", label_studio("/a/0001.jpg").replace(b'"x": 10', b'"x": ' + BIG)),
        ("size.json", label_studio("/a/0001.jpg").replace(b'"original_width": 100', b'"original_width": ' + BIG)),
        ("rotation.json", label_studio("/a/0001.jpg").replace(b'"x": 10', b'"x": 10, "rotation": ' + BIG)),
        ("coco.json", coco([annotation(1)]).replace(b"[1, 2, 4, 4]", b"[" + BIG + b", 2, 4, 4]")),
        ("classes.zip", yolo({"obj.names": "car\n", "labels/0001.txt": "9" * 25 + " .5 .5 .1 .1\n"})),
    ],
)
def test_a_number_beyond_a_float_fails_its_file_by_name_in_every_reader(name: str, data: bytes) -> None:
    """Arrow's JSON reader would read the integer as infinity where Python refuses it: the fast readers leave
    such a file to the generic one, and no reader lets Python's OverflowError escape unnamed."""
    if name.endswith(".json") and name != "coco.json":
        assert label_studio_arrow.parse(name, data, {}) is None
        assert label_studio_typed.parse(name, data, {}) is None
    with pytest.raises(ExportError) as error:
        parse_file(name, data, SIZES)
    assert str(error.value).startswith(f"{name}: ")


def test_coco_images_without_annotations_are_zero_rows() -> None:
    """A batch in which every frame is a negative is a valid export, not a failed file."""
    assert len(parse_file("negatives.json", coco([]), SIZES).objects) == 0


def test_coco_annotator_ids_are_kept_as_written_and_the_contributor_fills_the_gaps() -> None:
    data = coco([annotation(1, annotator_id=7), annotation(2), annotation(3, annotator_id=" ")], contributor="vendorX")
    assert parse_file("mixed.json", data, SIZES).objects["annotator_id"].tolist() == ["7", "vendorX", "vendorX"]


def test_a_coco_box_that_is_not_numbers_names_its_annotation() -> None:
    data = coco([annotation(1), annotation(2, bbox=["12.5", None, 3, 4]), annotation(3, bbox=[1, "two", 3, 4])])
    with pytest.raises(ExportError, match=r"^bad\.json: annotation 3: a 'bbox' holds a value that is not a number$"):
        parse_file("bad.json", data, SIZES)


def test_a_flat_coco_polygon_is_a_polygon_not_a_box() -> None:
    data = coco([annotation(1, segmentation=[1, 2, 5, 2, 5, 6]), annotation(2, segmentation=[])])
    objects = parse_file("flat.json", data, SIZES).objects
    assert objects["kind"].tolist() == ["polygon", "bbox"]  # an empty segmentation: a box, as COCO writes boxes
    assert list(objects["points"].iloc[0]) == [1, 2, 5, 2, 5, 6]


def test_windows_paths_in_label_studio_name_the_item_as_coco_and_cvat_do() -> None:
    ids = parse_file("ls.json", label_studio("cam1\\0001.jpg", "C:\\data\\cam2\\0002.jpg"), {}).objects["item_id"]
    assert ids.tolist() == ["0001", "0002"]
    coco_ids = parse_file("coco.json", coco([annotation(1)], file_name="cam1\\0001.jpg"), SIZES).objects["item_id"]
    assert coco_ids.tolist() == ["0001"]
    with pytest.raises(ExportError, match=re.escape("'0001' from 'cam1\\\\0001.jpg' and 'cam2/0001.jpg'")):
        parse_file("two.json", label_studio("cam1\\0001.jpg", "cam2/0001.jpg"), {})


@pytest.mark.parametrize(
    "files,labels",
    [
        # a names map is read by its ids, whatever order it lists them in (text keys sort '10' before '2')
        ({"data.yaml": "names:\n" + "".join(f"  '{i}': c{i}\n" for i in range(12))}, ["c2", "c10"]),
        ({"data.yaml": "names:\n  10: c10\n  2: c2\n" + "".join(f"  {i}: c{i}\n" for i in (0, 1, 3))}, ["c2", "c10"]),
        # the class list at the root wins over a backup copy deeper down
        (
            {"data.yaml": "names: [c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10]\n", "old/data.yaml": "names: [x]\n"},
            None,
        ),
        # YAML's yes, no and null are class names here
        ({"data.yaml": "names: [a, b, yes, no, c, d, e, f, g, h, null]\n"}, ["yes", "null"]),
    ],
)
def test_yolo_class_lists_name_each_class_id(files: dict[str, str], labels: list[str] | None) -> None:
    data = yolo({**files, "labels/0001.txt": "2 .5 .5 .1 .1\n10 .5 .5 .1 .1\n"})
    read = parse_file("classes.zip", data, SIZES).objects["label"].tolist()
    assert read == (labels or ["c2", "c10"])


def test_a_yolo_class_id_a_names_map_skips_fails_the_file() -> None:
    data = yolo({"data.yaml": "names:\n  0: car\n  2: bus\n", "labels/0001.txt": "1 .5 .5 .1 .1\n"})
    with pytest.raises(ExportError, match="class 1 is not in the class list"):
        parse_file("gap.zip", data, SIZES)


def test_a_query_d_names_the_file_only_for_label_studio_local_files() -> None:
    """``/data/local-files/?d=<path>`` is how Label Studio serves local files; on any other URL a ``d`` parameter
    is part of the query, not the file."""
    local = "http://ls:8080/data/local-files/?d=cam1/0001.jpg"
    other = "gs://fleet/cam1/0007.jpg?d=x/0002.jpg"
    assert parse_file("ls.json", label_studio(local, other), {}).objects["item_id"].tolist() == ["0001", "0007"]


def test_repeated_slashes_name_one_file() -> None:
    data = json.dumps(
        {
            "images": [{"id": n, "file_name": name} for n, name in ((1, "a//0001.jpg"), (2, "a/0001.jpg"))],
            "categories": [{"id": 1, "name": "car"}],
            "annotations": [{"id": n, "image_id": n, "category_id": 1, "bbox": [1, 2, 4, 4]} for n in (1, 2)],
        }
    ).encode()
    assert parse_file("slashes.json", data, SIZES).objects["item_id"].tolist() == ["0001", "0001"]


def test_a_rotation_written_as_an_infinity_is_null_in_attributes() -> None:
    """Attributes stay JSON every reader takes: Python's json writes ``Infinity``, which strict parsers refuse."""
    data = label_studio("/a/0001.jpg").replace(b'"x": 10', b'"x": 10, "rotation": 1e400')
    attributes = parse_file("turned.json", data, {}).objects["attributes"].iloc[0]

    def refuse(constant: str) -> None:
        raise ValueError(constant)

    assert json.loads(attributes, parse_constant=refuse)["rotation"] is None
