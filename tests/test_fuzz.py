"""Property-based fuzzing of every parser: no input crashes the process with anything but ExportError.

Seeds are real exports from the tools' own test suites (COCO, CVAT, Label Studio, YOLO, a long
table); hypothesis mutates their bytes (flips, cuts, splices, random bytes) and builds arbitrary
JSON documents, deep nesting included.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labelops.errors import ExportError
from labelops.formats import parse_file

REAL = Path(__file__).resolve().parents[1] / "data" / "real"
SEEDS = {
    "coco.json": REAL / "datumaro/tests/assets/coco_dataset/coco_instances/annotations/instances_train.json",
    "annotations.xml": REAL / "datumaro/tests/assets/cvat_dataset/for_images/export_task/train.xml",
    "label_studio.json": REAL / "label-studio-converter/tests/data/test_export_csv/csv_test2.json",
    "labels.csv": None,
    "yolo.zip": None,
}
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)


def seed_bytes(name: str) -> bytes:
    path = SEEDS[name]
    if path is not None:
        return path.read_bytes()
    if name == "labels.csv":
        return b"item_id,annotator_id,label,x,y,w,h\nimg-1,ann1,car,10,20,30,40\nimg-2,ann2,highway,,,,\n"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("obj.names", "car\nbus\n")
        archive.writestr("obj_train_data/img-1.txt", "0 0.5 0.5 0.2 0.2\n1 0.1 0.1 0.05 0.05\n")
    return buffer.getvalue()


def parse_or_refuse(name: str, data: bytes) -> None:
    try:
        parse_file(name, data, {"img-1": (640.0, 480.0)})
    except ExportError as error:
        assert str(error).startswith(name), f"the error must name the file: {error}"


@st.composite
def mutated(draw, name: str) -> bytes:
    data = bytearray(seed_bytes(name))
    for _ in range(draw(st.integers(1, 6))):
        action = draw(st.sampled_from(["flip", "cut", "insert", "splice"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if action == "flip" and data:
            data[at] = draw(st.integers(0, 255))
        elif action == "cut":
            del data[at : at + draw(st.integers(1, 200))]
        elif action == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=40))
        else:
            other = seed_bytes(draw(st.sampled_from(sorted(SEEDS))))
            start = draw(st.integers(0, max(len(other) - 1, 0)))
            data[at:at] = other[start : start + draw(st.integers(1, 300))]
    return bytes(data)


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_mutated_real_exports_only_raise_export_errors(name: str) -> None:
    @SETTINGS
    @given(mutated(name))
    def check(data: bytes) -> None:
        parse_or_refuse(name, data)

    check()


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(
            st.sampled_from(
                [
                    "images",
                    "annotations",
                    "categories",
                    "id",
                    "image_id",
                    "bbox",
                    "category_id",
                    "file_name",
                    "width",
                    "height",
                    "data",
                    "result",
                    "value",
                    "x",
                    "y",
                    "original_width",
                    "rectanglelabels",
                    "completed_by",
                    "segmentation",
                    "name",
                    "type",
                    "from_name",
                ]
            )
            | st.text(max_size=8),
            children,
            max_size=6,
        )
    ),
    max_leaves=40,
)


@SETTINGS
@given(JSON)
def test_arbitrary_json_documents_only_raise_export_errors(document: object) -> None:
    parse_or_refuse("export.json", json.dumps(document).encode())


@SETTINGS
@given(st.binary(max_size=2000), st.sampled_from(["a.json", "a.xml", "a.csv", "a.tsv", "a.zip", "a.parquet", "a.txt"]))
def test_random_bytes_only_raise_export_errors(data: bytes, name: str) -> None:
    parse_or_refuse(name, data)


@pytest.mark.parametrize("depth", [1_000, 100_000])
def test_deeply_nested_json_is_refused_not_a_crash(depth: int) -> None:
    for document in ("[" * depth + "]" * depth, '{"a":' * depth + "1" + "}" * depth):
        with pytest.raises(ExportError, match=r"deep\.json"):
            parse_file("deep.json", document.encode())
