"""CVAT for images 1.1 XML, task and project exports.

Parsed with defusedxml: entity expansion and external entities are refused, so a
hostile file cannot exhaust memory or read local files. CVAT writes no annotator
per shape; the task's assignee (else its owner) is the annotator.
"""

from __future__ import annotations

from typing import Any
from xml.etree.ElementTree import Element

import numpy as np
from defusedxml import ElementTree as SafeET
from defusedxml.common import DefusedXmlException

from labelops.errors import ExportError
from labelops.formats.common import (
    Parsed,
    check_one_file_per_item,
    emptied_frame,
    item_id_from_reference,
    objects_frame,
    polygon_bounds,
    to_json,
)

SHAPES = {"box": "bbox", "polygon": "polygon", "tag": "classification"}
UNSUPPORTED_SHAPES = ("polyline", "points", "ellipse", "mask", "cuboid", "skeleton")


def root_of(source_file: str, data: bytes) -> Element:
    try:
        return SafeET.fromstring(data, forbid_dtd=True)
    except DefusedXmlException as error:
        raise ExportError(source_file, f"unsafe XML refused ({type(error).__name__})") from None
    except SafeET.ParseError as error:
        raise ExportError(source_file, f"invalid XML ({error})") from None


def looks_like(root: Element) -> bool:
    return root.tag == "annotations" and root.find("version") is not None


def parse(source_file: str, root: Element) -> Parsed:
    version = (root.findtext("version") or "").strip()
    if version != "1.1":
        raise ExportError(source_file, f"CVAT XML version {version!r} is not supported (expected 1.1)")
    if root.find("track") is not None:
        raise ExportError(source_file, "CVAT for video export (tracks) is not supported; export 'CVAT for images 1.1'")
    annotators, updated, created = _task_people(root)
    # a single-task export names no task on its images: its meta's task id names them, so a task exported alone
    # and within its project names its images alike (an edit delivered either way replaces the other)
    tasks = root.findall("./meta/task")
    single = (tasks[0].findtext("id") or "").strip() if len(tasks) == 1 else ""

    def named(task: str) -> str:
        """The task as refs name it: with the time it was created, where the meta gives it (the task on its
        instance, whoever is assigned to it: labelops.schema.annotation_identity). Both are escaped: an id that
        holds "@" must not pass for one named with its creation time."""
        when = created.get(task, created.get("")) if task else None
        return f"{_escaped(task)}@{_escaped(when)}" if when else _escaped(task)

    parsed = Parsed(format="cvat", objects=objects_frame([]))
    records: list[dict[str, Any]] = []
    # each image's name and item id; one name in two tasks of a project export is one image, labeled in each
    # annotator's task (how CVAT projects share images between annotators)
    media: dict[str, str] = {}
    emptied: list[tuple[str, str, str, str | None]] = []
    for image in root.iter("image"):
        name = image.get("name")
        if not name:
            raise ExportError(source_file, f"image id={image.get('id')} has no name")
        item_id = media[name] = item_id_from_reference(source_file, name)
        task = image.get("task_id") or single
        annotator = annotators.get(task, annotators.get("", "unknown"))
        width = _number(source_file, image, "width", required=False)
        height = _number(source_file, image, "height", required=False)
        read = len(records)
        for s_index, shape in enumerate(image):
            kind = SHAPES.get(shape.tag)
            if kind is None:
                parsed.skip(
                    f"unsupported shape {shape.tag}"
                    if shape.tag in UNSUPPORTED_SHAPES
                    else f"unknown element {shape.tag}"
                )
                continue
            subset = f"subset={image.get('subset')}/" if image.get("subset") else ""
            ref = f"{subset}task={named(task)}/image={image.get('id')}/{shape.tag}={s_index}"
            attributes: dict[str, Any] = {}
            for attribute in shape.findall("attribute"):
                name = attribute.get("name")
                if name is None:
                    raise ExportError(source_file, f"{ref}: an <attribute> has no name")
                attributes[name] = attribute.text or ""
            for key in ("occluded", "z_order", "source", "group_id", "rotation"):
                if shape.get(key) is not None:
                    attributes[key] = shape.get(key)
            record = {
                "item_id": item_id,
                "annotator_id": annotator,
                "kind": kind,
                "label": shape.get("label"),
                "image_width": width,
                "image_height": height,
                "annotated_at": updated.get(task, updated.get("")),
                "guideline_version": None,
                "source_ref": ref,
            }
            if kind == "bbox":
                xtl, ytl, xbr, ybr = (_number(source_file, shape, k) for k in ("xtl", "ytl", "xbr", "ybr"))
                record.update(x=xtl, y=ytl, w=xbr - xtl, h=ybr - ytl)
            elif kind == "polygon":
                points = _points(source_file, ref, shape.get("points", ""))
                x, y, w, h = polygon_bounds(points)
                record.update(x=x, y=y, w=w, h=h, points=points.tolist())
            record["attributes"] = to_json(attributes)
            records.append(record)
        if len(records) == read:  # a task export lists each of its images: this one holds no shape (any more)
            subset = f"subset={image.get('subset')}/" if image.get("subset") else ""
            when = updated.get(task, updated.get(""))
            emptied.append((item_id, annotator, f"{subset}task={named(task)}/image={image.get('id')}/empty", when))
    check_one_file_per_item(source_file, list(media), list(media.values()))
    parsed.objects = objects_frame(records)
    if emptied:
        parsed.emptied = emptied_frame(*zip(*emptied, strict=True))
    return parsed


def _task_people(root: Element) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """Annotator, last-update and creation time per task id ('' for a single-task export)."""
    people: dict[str, str] = {}
    updated: dict[str, str] = {}
    created: dict[str, str] = {}
    meta = root.find("meta")
    if meta is None:
        return people, updated, created
    tasks = meta.findall("./project/tasks/task") + meta.findall("./task")
    for task in tasks:
        task_id = (task.findtext("id") or "").strip()
        who = (task.findtext("assignee/username") or "").strip() or (task.findtext("owner/username") or "").strip()
        if who:
            people[task_id] = who
        when = (task.findtext("updated") or "").strip()
        if when:
            updated[task_id] = when
        born = (task.findtext("created") or "").strip()
        if born:
            created[task_id] = born
    if len(tasks) == 1:
        task_id = (tasks[0].findtext("id") or "").strip()
        for table in (people, updated, created):
            if task_id in table:
                table[""] = table[task_id]
    return people, updated, created


# "/" ends the task in a ref, "@" starts its creation time, "|" joins an annotation key's parts (and "%" escapes)
_ESCAPES = str.maketrans({"%": "%25", "/": "%2F", "@": "%40", "|": "%7C"})


def _escaped(text: str) -> str:
    return text.translate(_ESCAPES)


def _number(source_file: str, element: Element, key: str, *, required: bool = True) -> float:
    raw = element.get(key)
    if raw is None:
        if required:
            raise ExportError(source_file, f"<{element.tag}> is missing '{key}'")
        return float("nan")
    try:
        return float(raw)
    except ValueError:
        raise ExportError(source_file, f"<{element.tag}> has a non-numeric {key}={raw!r}") from None


def _points(source_file: str, ref: str, raw: str) -> np.ndarray:
    try:
        pairs = [pair.split(",") for pair in raw.split(";") if pair.strip()]
        points = np.asarray(pairs, dtype=float)
    except ValueError:
        raise ExportError(source_file, f"{ref}: malformed points {raw[:80]!r}") from None
    if points.ndim != 2 or points.shape[1] != 2 or len(points) == 0:
        raise ExportError(source_file, f"{ref}: malformed points {raw[:80]!r}")
    return points.ravel()
