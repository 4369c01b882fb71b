"""Label Studio JSON export (the full "JSON" format, not JSON-MIN).

One task holds several annotations; each annotation is one annotator's work
(``completed_by``). Region coordinates are percentages of the original image,
converted to pixels here. Cancelled (skipped) annotations and model predictions
are not labels: they are counted in ``skipped``. When an export holds an annotation
twice (the same task and annotation id, as concatenated or re-exported snapshots do),
the version with the latest ``updated_at`` is read, wherever it stands in the file,
and the older versions are counted as superseded.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np

from labelops.errors import ExportError
from labelops.formats.common import Parsed, item_id_from_reference, objects_frame, polygon_bounds, to_json

MEDIA_KEYS = ("image", "img", "url", "uri", "video", "audio", "ocr", "pdf")
REGION_TYPES = {"rectanglelabels": "bbox", "polygonlabels": "polygon"}
# Result types that describe a region rather than stand alone (per-region attributes).
REGION_ATTRIBUTE_TYPES = ("choices", "taxonomy", "textarea", "number", "rating", "datetime")
# Where each attribute type keeps its value: Label Studio names the key after the type, except for text areas.
VALUE_KEYS = {"textarea": "text"}
# Result types that hold no value to read: links between regions, not labels (counted as skipped).
VALUELESS_TYPES = ("relation",)


def looks_like(document: Any) -> bool:
    return (
        isinstance(document, list)
        and bool(document)
        and isinstance(document[0], dict)
        and "data" in document[0]
        and ("annotations" in document[0] or "completions" in document[0])
    )


def parse(source_file: str, document: list[dict[str, Any]], image_sizes: dict[str, tuple[float, float]]) -> Parsed:
    parsed = Parsed(format="label_studio", objects=objects_frame([]))
    records: list[dict[str, Any]] = []
    latest = _latest_versions(source_file, document)
    for t_index, task in enumerate(document):
        task_id = task.get("id", t_index)
        item_id = _item_id(source_file, task, task_id)
        version = task["data"].get("guideline_version")
        # our own outbox tasks: an answer names the request it answers; a honeypot's answer is an ordinary
        # judgment of a gold item (it scores the labeler), not an answer that replaces labels
        meta = task.get("meta")
        meta = meta if isinstance(meta, dict) else {}
        batch = None if meta.get("honeypot") else task["data"].get("batch_id")
        parsed.skip("prediction", len(task.get("predictions") or []))
        for a_index, annotation in enumerate(_annotations(source_file, task, task_id)):
            results = annotation.get("result") or []
            if latest.get((task_id, annotation.get("id"))) not in (None, (t_index, a_index)):
                parsed.skip("superseded annotation version", max(len(results) if isinstance(results, list) else 1, 1))
                continue
            if annotation.get("was_cancelled"):
                parsed.skip("cancelled annotation", max(len(results), 1))
                continue
            records.extend(
                _annotation_records(
                    source_file,
                    item_id,
                    task_id,
                    annotation,
                    image_sizes,
                    parsed,
                    version,
                    None if batch is None else str(batch),
                )
            )
    parsed.objects = objects_frame(records)
    return parsed


def _annotations(source_file: str, task: dict[str, Any], task_id: Any) -> list[dict[str, Any]]:
    annotations = task.get("annotations", task.get("completions")) or []
    if not isinstance(annotations, list):
        raise ExportError(source_file, f"task {task_id}: 'annotations' is not a list")
    if not all(isinstance(a, dict) for a in annotations):
        raise ExportError(source_file, f"task {task_id}: an annotation is not an object")
    return annotations


def _latest_versions(source_file: str, document: list[Any]) -> dict[tuple[Any, Any], tuple[int, int]]:
    """For each (task id, annotation id), the position of its latest version (ties: the last one)."""
    best: dict[tuple[Any, Any], tuple[datetime, tuple[int, int]]] = {}
    for t_index, task in enumerate(document):
        if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
            raise ExportError(source_file, f"task #{t_index} has no 'data' object")
        task_id = task.get("id", t_index)
        for a_index, annotation in enumerate(_annotations(source_file, task, task_id)):
            if annotation.get("id") is None:
                continue
            stamp = _stamp(annotation.get("updated_at") or annotation.get("created_at"))
            key = (task_id, annotation["id"])
            if key not in best or stamp >= best[key][0]:
                best[key] = (stamp, (t_index, a_index))
    return {key: position for key, (_, position) in best.items()}


def _stamp(value: Any) -> datetime:
    """An annotation's time for ordering its versions; a missing or unreadable one sorts first."""
    try:
        stamp = datetime.fromisoformat(str(value))
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


def _item_id(source_file: str, task: dict[str, Any], task_id: Any) -> str:
    data = task["data"]
    if str(data.get("item_id") or "").strip():
        return str(data["item_id"]).strip()
    for key in MEDIA_KEYS:
        value = data.get(key)
        if isinstance(value, str) and value:
            return item_id_from_reference(source_file, value, url=True)
    return f"ls-task-{task_id}"


def _annotator(annotation: dict[str, Any]) -> str:
    who = annotation.get("completed_by")
    if isinstance(who, dict):  # newer exports embed the user; the email is what teams recognize
        who = who.get("email") or who.get("id")
    return "unknown" if who is None else str(who)


def _annotation_records(
    source_file: str,
    item_id: str,
    task_id: Any,
    annotation: dict[str, Any],
    image_sizes: dict[str, tuple[float, float]],
    parsed: Parsed,
    version: str | None,
    batch: str | None = None,
) -> list[dict[str, Any]]:
    annotator = _annotator(annotation)
    annotated_at = annotation.get("updated_at") or annotation.get("created_at")
    base_ref = f"task={task_id}/annotation={annotation.get('id')}"
    results = annotation.get("result") or []
    if not isinstance(results, list):
        raise ExportError(source_file, f"{base_ref}: 'result' is not a list")
    region_ids = {r.get("id") for r in results if isinstance(r, dict) and r.get("type") in REGION_TYPES}
    extra: dict[Any, dict[str, Any]] = {}
    for result in results:
        if isinstance(result, dict) and result.get("id") in region_ids and result.get("type") in REGION_ATTRIBUTE_TYPES:
            value = result.get("value") or {}
            key = VALUE_KEYS.get(result["type"], result["type"])
            extra.setdefault(result["id"], {})[result.get("from_name", result["type"])] = value.get(key)
    records = []
    for r_index, result in enumerate(results):
        if not isinstance(result, dict):
            raise ExportError(source_file, f"{base_ref}: result #{r_index} is not an object")
        rtype = result.get("type")
        if rtype in VALUELESS_TYPES:
            parsed.skip(f"{rtype} result")
            continue
        ref = f"{base_ref}/result={result.get('id', r_index)}"
        value = result.get("value")
        if not isinstance(value, dict):
            raise ExportError(source_file, f"{ref}: 'value' is not an object")
        attributes = {"from_name": result.get("from_name"), "origin": result.get("origin")}
        if annotation.get("ground_truth"):
            attributes["ground_truth"] = True
        if batch is not None:
            attributes["batch_id"] = batch
        common = {
            "item_id": item_id,
            "annotator_id": annotator,
            "annotated_at": annotated_at,
            "guideline_version": None if version is None else str(version),
        }
        if rtype == "choices" and result.get("id") not in region_ids:
            choices = value.get("choices") or []
            if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
                raise ExportError(source_file, f"{ref}: 'choices' must be a list of strings")
            records.extend(
                {
                    **common,
                    "kind": "classification",
                    "label": choice,
                    "attributes": to_json(attributes),
                    "source_ref": f"{ref}/choice={choice}",
                }
                for choice in choices
            )
            continue
        if rtype in REGION_TYPES:
            records.append(
                _region(
                    source_file,
                    ref,
                    rtype,
                    value,
                    result,
                    item_id,
                    image_sizes,
                    common,
                    {**attributes, **extra.get(result.get("id"), {})},
                )
            )
            continue
        if result.get("id") in region_ids and rtype in REGION_ATTRIBUTE_TYPES:
            continue  # folded into its region's attributes above
        parsed.skip(f"unsupported result type {rtype}")
    return records


def _region(
    source_file: str,
    ref: str,
    rtype: str,
    value: dict[str, Any],
    result: dict[str, Any],
    item_id: str,
    image_sizes: dict[str, tuple[float, float]],
    common: dict[str, Any],
    attributes: dict[str, Any],
) -> dict[str, Any]:
    labels = value.get(rtype)
    if not isinstance(labels, list) or len(labels) != 1 or not isinstance(labels[0], str):
        raise ExportError(source_file, f"{ref}: '{rtype}' must hold exactly one label, got {labels!r}")
    width, height = result.get("original_width"), result.get("original_height")
    if width is None or height is None:
        if item_id not in image_sizes:
            raise ExportError(
                source_file, f"{ref}: no original_width/height and item {item_id!r} is not in the item catalog"
            )
        width, height = image_sizes[item_id]
    try:
        width, height = float(width), float(height)
        sx, sy = width / 100.0, height / 100.0
        if rtype == "rectanglelabels":
            x, y = float(value["x"]) * sx, float(value["y"]) * sy
            w, h = float(value["width"]) * sx, float(value["height"]) * sy
            points = None
            if float(value.get("rotation") or 0.0):
                attributes["rotation"] = float(value["rotation"])
        else:
            raw = np.asarray(value["points"], dtype=float)
            if raw.ndim != 2 or raw.shape[1] != 2:
                raise ValueError("points must be [[x, y], ...]")
            points = (raw * [sx, sy]).ravel()
            x, y, w, h = polygon_bounds(points) if len(points) else (np.nan,) * 4
            points = points.tolist()
    except (KeyError, TypeError, ValueError) as error:
        raise ExportError(source_file, f"{ref}: bad {rtype} value ({error})") from None
    return {
        **common,
        "kind": REGION_TYPES[rtype],
        "label": labels[0],
        "x": x,
        "y": y,
        "w": w,
        "h": h,
        "points": points,
        "image_width": width,
        "image_height": height,
        "attributes": to_json(attributes),
        "source_ref": ref,
    }
