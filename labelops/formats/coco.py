"""COCO instances JSON (``images``, ``annotations``, ``categories``).

``bbox`` is already in pixels with a top-left origin, so it is taken as is. Polygon
segmentations become polygons (their ``bbox`` kept as the enclosing box, which
validation checks against the points); RLE masks (crowd regions) stay boxes with the
mask kept in ``attributes`` rather than being dropped. ``area`` travels in ``attributes``
and a negative one is quarantined by validation.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd

from labelops.errors import ExportError
from labelops.formats.common import Parsed, check_one_file_per_item, item_ids_from_paths, objects_frame, to_json


def looks_like(document: Any) -> bool:
    return isinstance(document, dict) and {"images", "annotations", "categories"} <= document.keys()


def looks_like_results(document: Any) -> bool:
    return (
        isinstance(document, list)
        and bool(document)
        and isinstance(document[0], dict)
        and {"image_id", "category_id", "score"} <= document[0].keys()
    )


def parse(source_file: str, document: dict[str, Any]) -> Parsed:
    images = _frame(source_file, document, "images", ("id", "file_name"))
    categories = _frame(source_file, document, "categories", ("id", "name"))
    annotations = _frame(source_file, document, "annotations", ("id", "image_id", "category_id", "bbox"))
    if images["id"].duplicated().any():
        raise ExportError(source_file, "duplicate image ids in 'images'")
    info = document.get("info")
    info = info if isinstance(info, dict) else {}
    default_annotator = str(info.get("contributor") or "unknown")

    stems = pd.Series(item_ids_from_paths(source_file, images["file_name"]), index=images.index)
    references = images["file_name"].astype(object)
    if "item_id" in images:  # our own snapshots name files by a safe stem and keep the id beside it
        declared = images["item_id"].astype(object)
        given = declared.notna() & (declared.astype(str).str.strip() != "")
        stems = declared.where(given, stems).astype(str)
        references = references.where(~given, None)
    check_one_file_per_item(source_file, references.to_numpy(), stems.to_numpy(dtype=object))
    images = images.assign(item_id=stems.to_numpy(dtype=object)).set_index("id")
    category_names = categories.set_index("id")["name"].astype(str)

    missing_images = ~annotations["image_id"].isin(images.index)
    if missing_images.any():
        bad = annotations.loc[missing_images, "id"].iloc[0]
        raise ExportError(source_file, f"annotation {bad} references an image id not in 'images'")
    missing_categories = ~annotations["category_id"].isin(category_names.index)
    if missing_categories.any():
        bad = annotations.loc[missing_categories, "id"].iloc[0]
        raise ExportError(source_file, f"annotation {bad} references a category id not in 'categories'")

    boxes = _boxes(source_file, annotations)
    image_rows = images.loc[annotations["image_id"].to_numpy()]
    segmentation = (
        annotations["segmentation"] if "segmentation" in annotations else pd.Series([None] * len(annotations))
    )
    crowd = (
        annotations["iscrowd"].fillna(0).astype(int)
        if "iscrowd" in annotations
        else pd.Series(np.zeros(len(annotations), int))
    )
    # Any polygon segmentation stays a polygon, however few its points: validation quarantines a
    # degenerate one with its reason instead of it silently becoming a plain box. Some tools write one
    # polygon flat ([x1, y1, x2, y2, ...]) rather than as a list of parts: it is that one part.
    segmentation = segmentation.map(_as_parts)
    is_polygon = segmentation.map(lambda s: isinstance(s, list) and len(s) > 0 and isinstance(s[0], list))
    annotator = (
        _annotators(annotations["annotator_id"], default_annotator)
        if "annotator_id" in annotations
        else pd.Series([default_annotator] * len(annotations))
    )

    area = (
        pd.to_numeric(annotations["area"], errors="coerce")
        if "area" in annotations
        else pd.Series(np.nan, index=annotations.index)
    )
    attributes = _attributes(segmentation, is_polygon, crowd, area)
    objects = pd.DataFrame(
        {
            "item_id": image_rows["item_id"].to_numpy(),
            "annotator_id": annotator.to_numpy(),
            "kind": np.where(is_polygon.to_numpy(), "polygon", "bbox"),
            "label": category_names.loc[annotations["category_id"].to_numpy()].to_numpy(),
            "x": boxes[:, 0],
            "y": boxes[:, 1],
            "w": boxes[:, 2],
            "h": boxes[:, 3],
            "points": _first_parts(segmentation, is_polygon),
            "image_width": pd.to_numeric(image_rows.get("width"), errors="coerce").to_numpy()
            if "width" in image_rows
            else np.nan,
            "image_height": pd.to_numeric(image_rows.get("height"), errors="coerce").to_numpy()
            if "height" in image_rows
            else np.nan,
            "attributes": attributes,
            "annotated_at": None,
            "guideline_version": info.get("guideline_version"),
            "source_ref": "annotation=" + annotations["id"].astype(str),
        }
    )
    return Parsed(format="coco", objects=objects_frame(objects))


def _as_parts(segmentation: Any) -> Any:
    """A flat polygon (numbers, no parts) as the one part it is; any other segmentation as it is."""
    if isinstance(segmentation, list) and segmentation and not isinstance(segmentation[0], list | dict):
        return [segmentation]
    return segmentation


def _annotators(given: pd.Series, default: str) -> pd.Series:
    """Each annotation's ``annotator_id`` as written, ``default`` (``info.contributor``) where it is missing or
    blank. Where some annotation lacks one, the frame made the column float: its whole numbers are ids (7, not
    7.0)."""
    if pd.api.types.is_float_dtype(given):
        whole = given.dropna()
        if (whole == whole.round()).all():
            given = given.astype("Int64")
    text = given.astype(object).astype(str).str.strip()
    return text.where(given.notna().to_numpy() & (text != "").to_numpy(), default)


def _frame(source_file: str, document: dict[str, Any], key: str, required: tuple[str, ...]) -> pd.DataFrame:
    records = document.get(key)
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise ExportError(source_file, f"'{key}' must be a list of objects")
    frame = pd.DataFrame(records)
    if records:
        missing = [c for c in required if c not in frame.columns or frame[c].isna().any()]
        if missing:
            raise ExportError(source_file, f"every entry of '{key}' needs {missing}")
    else:
        frame = pd.DataFrame(columns=list(required))
    return frame


def _boxes(source_file: str, annotations: pd.DataFrame) -> np.ndarray:
    if annotations.empty:
        return np.empty((0, 4))
    lengths = annotations["bbox"].map(lambda b: len(b) if isinstance(b, list) else -1)
    if (lengths != 4).any():
        bad = annotations.loc[lengths != 4, "id"].iloc[0]
        raise ExportError(source_file, f"annotation {bad}: 'bbox' must be [x, y, width, height]")
    try:
        return np.asarray(annotations["bbox"].tolist(), dtype=float)
    except (TypeError, ValueError):
        # found again, entry by entry, only to name it: the file fails either way
        bad = annotations["bbox"].map(lambda b: not all(_is_number(v) for v in b))
        where = f"annotation {annotations.loc[bad, 'id'].iloc[0]}: " if bad.any() else ""
        raise ExportError(source_file, f"{where}a 'bbox' holds a value that is not a number") from None


def _is_number(value: Any) -> bool:
    """What numpy reads as a float (None as NaN)."""
    if value is None:
        return True
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return True


def _first_parts(segmentation: pd.Series, is_polygon: pd.Series) -> np.ndarray:
    """The first polygon of each polygon segmentation (the others go to attributes)."""
    points = np.full(len(segmentation), None, dtype=object)
    if is_polygon.any():
        points[is_polygon.to_numpy()] = segmentation[is_polygon].str[0].to_numpy()
    return points


def _attributes(segmentation: pd.Series, is_polygon: pd.Series, iscrowd: pd.Series, area: pd.Series) -> np.ndarray:
    """Per-object attributes as JSON: area and iscrowd for all, the mask or extra parts where they exist.

    Built column-wise; only multi-part polygons and RLE masks (a few per cent of
    COCO) need a JSON object of their own.
    """
    if segmentation.empty:  # images without objects (every frame a negative)
        return np.empty(0, dtype=object)
    plain = pd.DataFrame({"area": area.to_numpy(), "iscrowd": iscrowd.to_numpy()})
    out = np.asarray(plain.to_json(orient="records", lines=True, double_precision=15).splitlines(), dtype=object)
    parts = segmentation.map(lambda s: len(s) if isinstance(s, list) else 0).to_numpy()
    rle = segmentation.map(lambda s: isinstance(s, dict)).to_numpy()
    for index in np.flatnonzero((is_polygon.to_numpy() & (parts > 1)) | rle):
        extra = {"rle": segmentation.iloc[index]} if rle[index] else {"polygon_parts": segmentation.iloc[index]}
        out[index] = to_json({**json.loads(out[index]), **extra})
    return out
