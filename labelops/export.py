"""Snapshot exports in the formats training code reads: COCO instances JSON and a YOLO zip.

Both round-trip through labelops' own parsers, which the tests check: export, ingest, same boxes.
"""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pandas as pd


def to_coco(items: pd.DataFrame, labels: pd.DataFrame, *, description: str) -> bytes:
    """Box and polygon-free COCO: images with their split, boxes with category names."""
    boxes = labels[labels["kind"] == "bbox"]
    names = sorted(boxes["label"].unique())
    category = {name: i + 1 for i, name in enumerate(names)}
    image_id = {item: i + 1 for i, item in enumerate(items["item_id"])}
    images = pd.DataFrame({
        "id": items["item_id"].map(image_id).to_numpy(), "file_name": items["item_id"].astype(str) + ".jpg",
        "width": items["width"].to_numpy(), "height": items["height"].to_numpy(), "split": items["split"].to_numpy(),
    })
    annotations = pd.DataFrame({
        "id": np.arange(1, len(boxes) + 1), "image_id": boxes["item_id"].map(image_id).to_numpy(),
        "category_id": boxes["label"].map(category).to_numpy(),
        "bbox": boxes[["x", "y", "w", "h"]].to_numpy().tolist(),
        "area": (boxes["w"] * boxes["h"]).to_numpy(), "iscrowd": 0,
    })
    document = {
        "info": {"description": description},
        "images": json.loads(images.to_json(orient="records", double_precision=15)),
        "annotations": json.loads(annotations.to_json(orient="records", double_precision=15)),
        "categories": [{"id": i, "name": n} for n, i in category.items()],
    }
    return json.dumps(document, sort_keys=True).encode()


def to_yolo(items: pd.DataFrame, labels: pd.DataFrame) -> bytes:
    """A YOLO zip: ``classes.txt`` and ``labels/<split>/<item>.txt`` with normalized centre boxes, one line
    per box. One archive, not a file per item: a snapshot of 100,000 items stays one write, and the
    zip (entries sorted, timestamps fixed) is byte-identical for identical content."""
    boxes = labels[labels["kind"] == "bbox"].merge(items[["item_id", "width", "height", "split"]], on="item_id")
    names = sorted(boxes["label"].unique())
    index = {name: i for i, name in enumerate(names)}
    files = {"classes.txt": "\n".join(names) + "\n"}
    if boxes.empty:
        return _zip(files)
    lines = (
        boxes["label"].map(index).astype(str) + " "
        + ((boxes["x"] + boxes["w"] / 2) / boxes["width"]).map("{:.10f}".format) + " "
        + ((boxes["y"] + boxes["h"] / 2) / boxes["height"]).map("{:.10f}".format) + " "
        + (boxes["w"] / boxes["width"]).map("{:.10f}".format) + " "
        + (boxes["h"] / boxes["height"]).map("{:.10f}".format)
    )
    grouped = pd.DataFrame({"path": "labels/" + boxes["split"] + "/" + boxes["item_id"].astype(str) + ".txt", "line": lines})
    files.update((grouped.groupby("path", sort=True)["line"].agg("\n".join) + "\n").to_dict())
    return _zip(files)


def _zip(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, date_time=(2000, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, files[name], compresslevel=1)
    return buffer.getvalue()
