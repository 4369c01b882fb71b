"""Bad files fail alone, with an error that names them; the rest of the day still loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from labelops import ingest
from labelops.errors import ExportError
from labelops.formats import parse_file
from labelops.storage import LocalStore, PathEscapeError, safe_key

DAY = "2024-06-01"
GOOD_LS = "label-studio-converter/tests/data/test_export_yolo/data.json"
GOOD_CVAT = "datumaro/tests/assets/cvat_dataset/for_images/export_task/train.xml"

BAD_FILES = {
    "truncated.json": (lambda good: good[: len(good) // 2], r"truncated.json: invalid JSON at line \d+"),
    "wrong_types.json": (
        lambda good: json.dumps(
            [
                {
                    "id": 1,
                    "data": {"image": "a.jpg"},
                    "annotations": [
                        {
                            "id": 1,
                            "completed_by": 1,
                            "result": [
                                {
                                    "id": "r",
                                    "type": "rectanglelabels",
                                    "original_width": 10,
                                    "original_height": 10,
                                    "value": {"x": "left", "y": 1, "width": 2, "height": 2, "rectanglelabels": ["car"]},
                                }
                            ],
                        }
                    ],
                }
            ]
        ).encode(),
        r"wrong_types.json: task=1/annotation=1/result=r: bad rectanglelabels value",
    ),
    "wrong_types.csv": (
        lambda good: b"item_id,annotator_id,label,x,y,w,h\na,u1,car,1,2,3,4\nb,u1,car,1,2,three,4\n",
        r"wrong_types.csv: line 3: column 'w' holds 'three', not a number",
    ),
    "no_annotator.csv": (
        lambda good: b"item_id,annotator_id,label\nimg-1,w1,car\nimg-1,,car\nimg-3,w2,urban\n",
        r"no_annotator.csv: line 3: empty annotator_id",
    ),
    "no_item.csv": (
        lambda good: b"item_id,annotator_id,label\nimg-1,w1,car\n  ,w1,car\n",
        r"no_item.csv: line 3: empty item_id",
    ),
    "label_studio_export.csv": (  # the header of Label Studio's own CSV export, one box region as JSON text
        lambda good: (
            b"annotation_id,annotator,created_at,id,image,label,lead_time,updated_at\n"
            b'501,carol@x.com,2024-06-04T09:00:00Z,101,/data/upload/2/img-1.jpg,"[{""x"": 5, ""y"": 10, '
            b'""width"": 10, ""height"": 20, ""rectanglelabels"": [""car""]}]",3.2,2024-06-04T09:00:00Z\n'
        ),
        r"label_studio_export.csv: a Label Studio CSV/TSV export, .* export the project as JSON",
    ),
    "label_studio_our_tasks.csv": (  # the same export of a project importing our task files: data.item_id too
        lambda good: (
            b"annotation_id,annotator,created_at,id,image,item_id,lead_time,scene,updated_at\n"
            b"501,7,2024-06-04T09:00:00Z,101,s3://media/img-1.jpg,img-1,3.2,urban,2024-06-04T09:00:00Z\n"
        ),
        r"label_studio_our_tasks.csv: a Label Studio CSV/TSV export, .* export the project as JSON",
    ),
    "mystery.bin": (lambda good: b"\x89PNG\r\n\x1a\n....", r"mystery.bin: unknown export format"),
    "empty.json": (lambda good: b"", r"empty.json: the file is empty"),
    "blank.csv": (lambda good: b"  \n\n", r"blank.csv: the file is empty"),
    "escape.xml": (
        lambda good: (
            b'<annotations><version>1.1</version><image id="0" name="../../../etc/passwd" width="4" height="4">'
            b'<box label="a" xtl="0" ytl="0" xbr="1" ybr="1"/></image></annotations>'
        ),
        r"escape.xml: media reference '../../../etc/passwd'.*outside the root",
    ),
    "absolute.json": (
        lambda good: json.dumps(
            {
                "images": [{"id": 1, "file_name": "/etc/shadow", "width": 4, "height": 4}],
                "annotations": [],
                "categories": [],
            }
        ).encode(),
        r"absolute.json: media reference '/etc/shadow': absolute path",
    ),
    "bad_coco.json": (
        lambda good: json.dumps(
            {
                "images": [],
                "annotations": [{"id": 7, "image_id": 3, "category_id": 1, "bbox": [1, 2, 3, 4]}],
                "categories": [{"id": 1, "name": "car"}],
            }
        ).encode(),
        r"bad_coco.json: annotation 7 references an image id not in 'images'",
    ),
    "bomb.xml": (
        lambda good: (
            b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]>'
            b"<annotations><version>1.1</version></annotations>"
        ),
        r"bomb.xml: unsafe XML refused",
    ),
    "xxe.xml": (
        lambda good: (
            b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
            b"<annotations><version>1.1</version><meta>&x;</meta></annotations>"
        ),
        r"xxe.xml: unsafe XML refused",
    ),
    "latin1.csv": (
        lambda good: "item_id,annotator_id,label\nx,u,caf\xe9\n".encode("latin-1"),
        r"latin1.csv: not UTF-8 text",
    ),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_each_bad_file_names_itself(real: Path, name: str) -> None:
    make, message = BAD_FILES[name]
    with pytest.raises(ExportError, match=message) as raised:
        parse_file(name, make((real / GOOD_LS).read_bytes()))
    assert raised.value.source_file == name


def test_bad_files_do_not_take_the_day_down(real: Path, tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    good = (real / GOOD_LS).read_bytes()
    store.write_bytes(f"exports/{DAY}/good_ls.json", good)
    store.write_bytes(f"exports/{DAY}/good_cvat.xml", (real / GOOD_CVAT).read_bytes())
    for name, (make, _) in BAD_FILES.items():
        store.write_bytes(f"exports/{DAY}/{name}", make(good))
    store.write_bytes(f"exports/{DAY}/.DS_Store", b"\x00")  # travels with exports, holds no labels

    result = ingest.read_exports(store, DAY)

    ledger = result.ledger.set_index("source_file")
    assert ledger.loc[f"exports/{DAY}/good_ls.json", "rows"] == 6
    assert ledger.loc[f"exports/{DAY}/good_cvat.xml", "rows"] == 2
    assert len(result.table) == 8
    errors = result.ledger[result.ledger["status"] == "error"]
    assert set(errors["source_file"]) == {f"exports/{DAY}/{n}" for n in BAD_FILES}
    for source_file, error in zip(errors["source_file"], errors["error"], strict=True):
        assert error.startswith(source_file + ": ")
    assert f"exports/{DAY}/.DS_Store" not in ledger.index


def test_store_keys_cannot_escape(tmp_path: Path) -> None:
    for key in ("../x", "a/../../x", "/etc/passwd", "C:\\windows", "a\x00b", ""):
        with pytest.raises(PathEscapeError):
            safe_key(key)
    assert safe_key("a/./b//c.json") == "a/b/c.json"
    store = LocalStore(tmp_path / "root")
    with pytest.raises(PathEscapeError):
        store.write_bytes("../outside.txt", b"x")
    assert not (tmp_path / "outside.txt").exists()


def test_yolo_zip_slip_and_bomb_are_refused() -> None:
    import io
    import zipfile

    slip = io.BytesIO()
    with zipfile.ZipFile(slip, "w") as archive:
        archive.writestr("obj.names", "car\n")
        archive.writestr("../../evil.txt", "0 0.5 0.5 0.1 0.1\n")
    with pytest.raises(ExportError, match=r"slip.zip: zip member '../../evil.txt'"):
        parse_file("slip.zip", slip.getvalue())

    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("obj.names", "car\n")
        archive.writestr("labels/a.txt", b"0" * 50_000_000)
    with pytest.raises(ExportError, match=r"bomb\.zip: zip unpacks to .* refused as a zip bomb"):
        parse_file("bomb.zip", bomb.getvalue())


def test_yolo_bad_class_index_names_file_and_line() -> None:
    files = {"obj.names": b"car\ntruck\n", "labels/a.txt": b"0 0.5 0.5 0.1 0.1\n7 0.5 0.5 0.1 0.1\n"}
    from labelops.formats import parse_folder

    with pytest.raises(ExportError, match=r"partner: labels/a.txt line 2: class 7 is not in the class list of 2"):
        parse_folder("partner", files, {"a": (100, 100)})


def test_oversized_file_is_refused_before_reading(real: Path, tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    store.write_bytes(f"exports/{DAY}/big.json", (real / GOOD_LS).read_bytes())
    result = ingest.read_exports(store, DAY, policy=ingest.ReadPolicy(max_file_bytes=100))
    assert result.ledger["error"].iloc[0].startswith(f"exports/{DAY}/big.json: file is ")


def test_a_real_label_studio_csv_export_is_refused_with_what_to_do(real: Path) -> None:
    """The label-studio-converter's own CSV export fixture (tab-separated, as Label Studio writes it)."""
    path = real / "label-studio-converter/tests/data/test_export_csv/csv_test2_result.csv"
    with pytest.raises(ExportError, match=r"a Label Studio CSV/TSV export, .* export the project as JSON"):
        parse_file("exports/2024-06-05/project-4.csv", path.read_bytes())
