"""Snapshot exports in the formats training code reads: COCO instances JSON and a YOLO zip.

Both round-trip through labelops' own parsers, which the tests check: export, ingest, same boxes.
Item ids come from vendors and may hold anything, so the exports name files by :func:`safe_stem`
of the ids, never by the ids themselves.
"""

from __future__ import annotations

import io
import json
import zipfile

import numpy as np
import pandas as pd

SAFE_STEM = r"[A-Za-z0-9_-][A-Za-z0-9._-]*"
MAX_STEM = 100  # characters: with an extension, still far below every file system's name limit


def safe_stem(item_ids: pd.Series) -> pd.Series:
    """File stems for item ids: safe as a path segment on any file system, and distinct for distinct ids.

    An id that is already a safe stem (only ``[A-Za-z0-9._-]``, no leading dot, at most :data:`MAX_STEM`
    characters) stays as it is, so ordinary datasets keep their file names. Any other id has each unsafe
    character replaced with ``_``, leading dots dropped and its length cut, then gets ``-`` and 16 hex
    digits of a hash of the original id, so ``a/b`` and ``a_b`` never share a file. The hash is pandas'
    fixed-key SipHash: an id has the same stem in every run. A safe id that spells another id's altered
    stem is altered too, so two ids share a stem only if two different ids share a 64-bit hash.
    """
    text = item_ids.astype(str)
    digest = np.strings.mod("%016x", pd.util.hash_pandas_object(text, index=False).to_numpy())
    cleaned = text.str.replace(r"[^A-Za-z0-9._-]", "_", regex=True).str.lstrip(".").str[: MAX_STEM - 17]
    altered = (cleaned + "-").where(cleaned != "", "") + digest
    kept = text.str.fullmatch(SAFE_STEM) & (text.str.len() <= MAX_STEM)
    kept &= ~text.isin(altered[~kept])
    return text.where(kept, altered)


def to_coco(items: pd.DataFrame, labels: pd.DataFrame, *, description: str) -> bytes:
    """Box and polygon-free COCO: images with their split, boxes with category names.

    ``file_name`` is the item's :func:`safe_stem`; ``item_id`` keeps the id itself for readers that want it.
    """
    boxes = labels[labels["kind"] == "bbox"]
    names = sorted(boxes["label"].unique())
    category = {name: i + 1 for i, name in enumerate(names)}
    image_id = {item: i + 1 for i, item in enumerate(items["item_id"])}
    images = pd.DataFrame(
        {
            "id": items["item_id"].map(image_id).to_numpy(),
            "file_name": (safe_stem(items["item_id"]) + ".jpg").to_numpy(),
            "item_id": items["item_id"].to_numpy(),
            "width": items["width"].to_numpy(),
            "height": items["height"].to_numpy(),
            "split": items["split"].to_numpy(),
        }
    )
    annotations = pd.DataFrame(
        {
            "id": np.arange(1, len(boxes) + 1),
            "image_id": boxes["item_id"].map(image_id).to_numpy(),
            "category_id": boxes["label"].map(category).to_numpy(),
            "bbox": boxes[["x", "y", "w", "h"]].to_numpy().tolist(),
            "area": (boxes["w"] * boxes["h"]).to_numpy(),
            "iscrowd": 0,
        }
    )
    document = {
        "info": {"description": description},
        "images": json.loads(images.to_json(orient="records", double_precision=15)),
        "annotations": json.loads(annotations.to_json(orient="records", double_precision=15)),
        "categories": [{"id": i, "name": n} for n, i in category.items()],
    }
    return json.dumps(document, sort_keys=True).encode()


def to_yolo(items: pd.DataFrame, labels: pd.DataFrame) -> bytes:
    """A YOLO zip: ``classes.txt`` and ``labels/<split>/<stem>.txt`` (the item's :func:`safe_stem`) with
    normalized centre boxes, one line per box. One archive, not a file per item: a snapshot of 100,000
    items stays one write, and the zip (entries sorted, timestamps fixed) is byte-identical for identical content."""
    catalog = items[["item_id", "width", "height", "split"]].assign(stem=safe_stem(items["item_id"]))
    boxes = labels[labels["kind"] == "bbox"].merge(catalog, on="item_id")
    names = sorted(boxes["label"].unique())
    index = {name: i for i, name in enumerate(names)}
    files = {"classes.txt": "\n".join(names) + "\n"}
    if boxes.empty:
        return _zip(files)
    lines = (
        boxes["label"].map(index).astype(str)
        + " "
        + ((boxes["x"] + boxes["w"] / 2) / boxes["width"]).map("{:.10f}".format)
        + " "
        + ((boxes["y"] + boxes["h"] / 2) / boxes["height"]).map("{:.10f}".format)
        + " "
        + (boxes["w"] / boxes["width"]).map("{:.10f}".format)
        + " "
        + (boxes["h"] / boxes["height"]).map("{:.10f}".format)
    )
    grouped = pd.DataFrame({"path": "labels/" + boxes["split"] + "/" + boxes["stem"] + ".txt", "line": lines})
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
