"""Item ids come from media file names: two different files of one export with one name fail the export, naming
both, instead of pooling two images' labels into one item (YOLO splits, frames of two sequences, two cameras)."""

from __future__ import annotations

import io
import json
import zipfile
from typing import Any

import pytest

from labelops.errors import ExportError
from labelops.formats import label_studio_arrow, label_studio_typed, parse_file


def coco(*file_names: str) -> bytes:
    images = [{"id": n, "file_name": name, "width": 100, "height": 100} for n, name in enumerate(file_names, 1)]
    annotations = [
        {"id": n, "image_id": n, "category_id": 1, "bbox": [1, 1, 10, 10]} for n in range(1, len(file_names) + 1)
    ]
    return json.dumps({"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "car"}]}).encode()


def cvat(*names: str) -> bytes:
    images = "".join(
        f'<image id="{n}" name="{name}" width="100" height="100">'
        '<box label="car" xtl="1" ytl="1" xbr="10" ybr="10" occluded="0"/></image>'
        for n, name in enumerate(names)
    )
    return f"<annotations><version>1.1</version>{images}</annotations>".encode()


def yolo(*label_files: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("obj.names", "car\n")
        for name in label_files:
            archive.writestr(name, "0 0.5 0.5 0.1 0.1\n")
    return buffer.getvalue()


def label_studio(*data: dict[str, Any]) -> bytes:
    box = {
        "id": "r",
        "type": "rectanglelabels",
        "from_name": "label",
        "to_name": "image",
        "original_width": 100,
        "original_height": 100,
        "value": {"x": 10, "y": 1, "width": 10, "height": 10, "rectanglelabels": ["car"]},
    }
    tasks = [
        {"id": n, "data": d, "annotations": [{"id": n, "completed_by": 7, "result": [box]}]}
        for n, d in enumerate(data, 1)
    ]
    return json.dumps(tasks).encode()


CLASHES = {
    "coco.json": (coco("train/0001.jpg", "val/0001.jpg"), "'0001' from 'train/0001.jpg' and 'val/0001.jpg'"),
    "cvat.xml": (
        cvat("seq1/frame_000001.png", "seq2/frame_000001.png"),
        "'frame_000001' from 'seq1/frame_000001.png' and 'seq2/frame_000001.png'",
    ),
    "yolo.zip": (
        yolo("labels/train/0001.txt", "labels/val/0001.txt"),
        "'0001' from 'labels/train/0001.txt' and 'labels/val/0001.txt'",
    ),
    "label_studio.json": (
        label_studio({"image": "s3://fleet/cam1/0001.jpg"}, {"image": "s3://fleet/cam2/0001.jpg"}),
        "'0001' from 's3://fleet/cam1/0001.jpg' and 's3://fleet/cam2/0001.jpg'",
    ),
}


@pytest.mark.parametrize("name", sorted(CLASHES))
def test_two_files_with_one_name_fail_the_export_naming_both(name: str) -> None:
    data, named = CLASHES[name]
    sizes = {"0001": (100.0, 100.0)}
    with pytest.raises(ExportError) as error:
        parse_file(name, data, sizes)
    message = str(error.value)
    assert message.startswith(f"{name}: 1 item id(s) name two or more media files, e.g. {named}")
    assert "merge two images into one item" in message


def test_the_fast_label_studio_readers_leave_a_clash_to_the_generic_parser() -> None:
    data, _ = CLASHES["label_studio.json"]
    assert label_studio_arrow.parse("ls.json", data, {}) is None
    assert label_studio_typed.parse("ls.json", data, {}) is None


@pytest.mark.parametrize(
    "name,data",
    [
        # the same file twice: one image (two COCO entries, two presigned URLs, a local file served two ways)
        ("coco.json", coco("train/0001.jpg", "train/0001.jpg")),
        (
            "presigned.json",
            label_studio(
                {"image": "s3://fleet/cam1/0001.jpg?X-Amz-Signature=a"},
                {"image": "s3://fleet/cam1/0001.jpg?X-Amz-Signature=b"},
            ),
        ),
        (
            "local.json",
            label_studio(
                {"image": "/data/local-files/?d=cam1/0001.jpg"},
                {"image": "http://ls:8080/data/local-files/?d=cam1/0001.jpg"},
            ),
        ),
        # the task names its item: the file name is not its id
        (
            "named.json",
            label_studio(
                {"image": "s3://fleet/cam1/0001.jpg", "item_id": "cam1-0001"},
                {"image": "s3://fleet/cam2/0001.jpg", "item_id": "cam2-0001"},
            ),
        ),
    ],
)
def test_one_file_referenced_twice_or_tasks_that_name_their_items_read_as_before(name: str, data: bytes) -> None:
    objects = parse_file(name, data, {"0001": (100.0, 100.0)}).objects
    assert len(objects) == 2
