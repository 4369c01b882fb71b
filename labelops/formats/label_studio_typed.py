"""Label Studio JSON read through typed structs: the fast path for exports as Label Studio writes them.

msgspec decodes the file straight into the structs below (``gc=False``, unknown members skipped), which are
several times cheaper to build, read and free than the dicts of a generic decode; the fields are then read as
columns, one comprehension each. The structs type only the shape (a task is an object with a ``data``
object, annotations and results are objects in lists); every member's value is read as the generic decode
gives it (``Any``) and goes through the same Python operations as in :mod:`labelops.formats.label_studio`.

This path reads only what it can read to the same output: a file that does not decode into the structs,
or holds anything the generic parser treats specially (annotation versions to choose between, attribute
results folded into regions, a value or label that breaks a rule, a reference that needs the full URL rules),
gives ``None``, and the caller reads it with the generic parser, which gives the same rows or the same error
as before this path existed.
"""

from __future__ import annotations

import posixpath
from typing import Any

import msgspec
import numpy as np
import pandas as pd
from msgspec import UNSET, UnsetType

from labelops.formats.common import Parsed, item_id_from_reference, objects_frame
from labelops.formats.label_studio import (
    MEDIA_KEYS,
    REGION_ATTRIBUTE_TYPES,
    REGION_TYPES,
    VALUELESS_TYPES,
    _annotator,
    _attributes_json,
    _objects,
    _polygon,
    _ranks,
)


class _Value(msgspec.Struct, gc=False):
    x: Any = UNSET
    y: Any = UNSET
    width: Any = UNSET
    height: Any = UNSET
    rotation: Any = None
    points: Any = UNSET
    rectanglelabels: Any = None
    polygonlabels: Any = None
    choices: Any = None


class _Result(msgspec.Struct, gc=False):
    id: Any = UNSET
    type: Any = None
    value: _Value | UnsetType | None = UNSET
    original_width: Any = None
    original_height: Any = None
    from_name: Any = None
    origin: Any = None


class _Annotation(msgspec.Struct, gc=False):
    id: Any = None
    completed_by: Any = None
    result: list[_Result] | None = None
    was_cancelled: Any = None
    ground_truth: Any = None
    updated_at: Any = None
    created_at: Any = None


class _Data(msgspec.Struct, gc=False):
    item_id: Any = None
    guideline_version: Any = None
    batch_id: Any = None
    image: Any = None
    img: Any = None
    url: Any = None
    uri: Any = None
    video: Any = None
    audio: Any = None
    ocr: Any = None
    pdf: Any = None


class _Task(msgspec.Struct, gc=False):
    data: _Data
    id: Any = UNSET
    annotations: list[_Annotation] | UnsetType | None = UNSET
    completions: list[_Annotation] | UnsetType | None = UNSET
    predictions: list[msgspec.Raw] | None = None
    meta: Any = None


_DECODER = msgspec.json.Decoder(list[_Task])


class _Unsupported(Exception):
    """The file holds something only the generic parser reads to the frozen output."""


def parse(source_file: str, data: bytes, image_sizes: dict[str, tuple[float, float]]) -> Parsed | None:
    """The file read as a Label Studio export, or ``None`` when the generic parser must read it."""
    try:
        tasks = _DECODER.decode(data)
    except (msgspec.DecodeError, RecursionError):  # msgspec.ValidationError is a DecodeError
        return None
    if not tasks or (tasks[0].annotations is UNSET and tasks[0].completions is UNSET):
        return None  # not what looks_like() takes for Label Studio
    try:
        return _read(source_file, tasks, image_sizes)
    except Exception:
        return None


def _item_id(source_file: str, data: _Data, task_id: Any) -> str:
    """``label_studio._item_id``; a plain path (no URL parts, no ``..``) is cut without the URL rules."""
    text = str(data.item_id or "").strip()
    if text:
        return text
    for key in MEDIA_KEYS:
        value = getattr(data, key)
        if isinstance(value, str) and value:
            ref = value.strip()
            if (
                ref.isprintable()
                and not ref.startswith("//")
                and ".." not in ref
                and not any(c in ref for c in "?#\\:")
            ):
                stem = posixpath.splitext(posixpath.basename(ref.rstrip("/")))[0]
                if stem:
                    return stem
            return item_id_from_reference(source_file, value, url=True)
    return f"ls-task-{task_id}"


def _read(source_file: str, tasks: list[_Task], image_sizes: dict[str, tuple[float, float]]) -> Parsed | None:
    parsed = Parsed(format="label_studio", objects=objects_frame([]))
    task_ids: list[Any] = []
    item_ids: list[str] = []
    versions: list[str | None] = []
    batches: list[str | None] = []
    listed: list[_Annotation] = []
    counts: list[int] = []
    for t_index, task in enumerate(tasks):
        task_id = t_index if task.id is UNSET else task.id
        data = task.data
        item_ids.append(_item_id(source_file, data, task_id))
        version = data.guideline_version
        meta = task.meta if isinstance(task.meta, dict) else {}
        batch = None if meta.get("honeypot") else data.batch_id
        if task.predictions:
            parsed.skip("prediction", len(task.predictions))
        annotations = task.completions if task.annotations is UNSET else task.annotations
        annotations = annotations or []
        if annotations:
            hash(task_id)
        task_ids.append(task_id)
        versions.append(None if version is None else str(version))
        batches.append(None if batch is None else str(batch))
        listed.extend(annotations)
        counts.append(len(annotations))
    _check_single_versions(task_ids, listed, counts)
    task_of = np.repeat(np.arange(len(counts)), counts)
    cancelled = [bool(a.was_cancelled) for a in listed]
    if any(cancelled):
        parsed.skip(
            "cancelled annotation",
            sum(max(len(a.result or []), 1) for a, c in zip(listed, cancelled, strict=True) if c),
        )
        kept = [a for a, c in zip(listed, cancelled, strict=True) if not c]
        task_of = task_of[~np.asarray(cancelled)]
    else:
        kept = listed
    return _Columns(source_file, parsed, kept, task_of, task_ids, item_ids, versions, batches, image_sizes).parsed()


def _check_single_versions(task_ids: list[Any], listed: list[_Annotation], counts: list[int]) -> None:
    """Annotation versions to choose between (a (task id, annotation id) held twice) are the generic parser's."""
    ids = [a.id for a in listed]
    if len(set(ids)) == len(ids) and None not in ids:
        return
    owners = np.repeat(np.arange(len(counts)), counts).tolist()
    keys = [(task_ids[t], i) for t, i in zip(owners, ids, strict=True) if i is not None]
    if len(set(keys)) < len(keys):
        raise _Unsupported("annotation versions")


class _Columns:
    """The kept annotations' results as columns, and the frame of their rows (regions and scene choices)."""

    def __init__(
        self,
        source_file: str,
        parsed: Parsed,
        kept: list[_Annotation],
        task_of: np.ndarray,
        task_ids: list[Any],
        item_ids: list[str],
        versions: list[str | None],
        batches: list[str | None],
        image_sizes: dict[str, tuple[float, float]],
    ) -> None:
        self.source_file = source_file
        self._parsed = parsed
        self.image_sizes = image_sizes
        self.item_id = _objects(item_ids)[task_of]
        self.version = _objects(versions)[task_of]
        self.batch = _objects(batches)[task_of]
        who = [a.completed_by for a in kept]
        self.annotator = _objects([w if type(w) is str else _annotator(w) for w in who])
        self.annotated_at = _objects([a.updated_at or a.created_at for a in kept])
        self.ground_truth = np.fromiter((bool(a.ground_truth) for a in kept), dtype=bool, count=len(kept))
        self.ref = _objects(
            [f"task={task_ids[t]}/annotation={a.id}" for t, a in zip(task_of.tolist(), kept, strict=True)]
        )
        listed = [a.result or [] for a in kept]
        lengths = np.fromiter(map(len, listed), dtype=np.int64, count=len(listed))
        self.owner = np.repeat(np.arange(len(lengths)), lengths)
        self.position = np.arange(len(self.owner)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        self.results = [r for rs in listed for r in rs]
        self.type_list = [r.type for r in self.results]
        if set(map(type, (r.id for r in self.results))) & {list, dict}:
            raise _Unsupported("a result id that is a list or an object")

    def parsed(self) -> Parsed:
        types = set(self.type_list)
        if types - {None} - {t for t in types if type(t) is str}:
            raise _Unsupported("result types that are not names")
        self.types = _objects(self.type_list)
        values = [r.value for r in self.results]
        relation = np.fromiter((t in VALUELESS_TYPES for t in self.type_list), dtype=bool, count=len(values))
        if any(v is UNSET or v is None for v, r in zip(values, relation.tolist(), strict=True) if not r):
            raise _Unsupported("a result without a value object")
        self.values = values
        self.regions = np.flatnonzero([t in REGION_TYPES for t in self.type_list])
        self.choices = np.flatnonzero(self.types == "choices")
        self._check_attributes(types & set(REGION_ATTRIBUTE_TYPES))
        skipped: dict[str, int] = {}
        for t in self.type_list:
            if t not in REGION_TYPES and t != "choices":
                reason = f"{t} result" if t in VALUELESS_TYPES else f"unsupported result type {t}"
                skipped[reason] = skipped.get(reason, 0) + 1
        read = np.zeros(len(self.types), dtype=bool)
        read[self.regions] = read[self.choices] = True
        self.read = np.flatnonzero(read)
        self.labels = self._choice_labels()
        self.geometry = self._geometry()
        self.attributes = self._attributes()
        for reason, count in skipped.items():
            self._parsed.skip(reason, count)
        self._parsed.objects = objects_frame(self.frame())
        return self._parsed

    def _check_attributes(self, attribute_types: set[Any]) -> None:
        """Attribute results (choices, text areas, …) with the id of a region of their annotation describe the
        region, and are left to the generic parser; the others are scene choices or skipped results."""
        if not attribute_types or not len(self.regions):
            return
        attributes = np.flatnonzero([t in attribute_types for t in self.type_list])
        described = set(self.owner[attributes].tolist())
        region_ids: dict[int, set[Any]] = {}
        for n in self.regions.tolist():
            k = int(self.owner[n])
            if k in described:
                rid = self.results[n].id
                region_ids.setdefault(k, set()).add(None if rid is UNSET else rid)
        for n in attributes.tolist():
            rid = self.results[n].id
            if (None if rid is UNSET else rid) in region_ids.get(int(self.owner[n]), ()):
                raise _Unsupported("attribute results that describe a region")

    def _choice_labels(self) -> list[list[str]]:
        labels = [self.values[n].choices or [] for n in self.choices.tolist()]
        for choices in labels:
            if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
                raise _Unsupported("choices that are not a list of names")
        return labels

    def _geometry(self) -> dict[str, Any]:
        regions, values, results = self.regions.tolist(), self.values, self.results
        types = self.types[self.regions].tolist()
        labels = [getattr(values[n], t) for n, t in zip(regions, types, strict=True)]
        if not (set(map(type, labels)) <= {list} and set(map(len, labels)) <= {1}):
            raise _Unsupported("a region without exactly one label")
        if not {type(label) for (label,) in labels} <= {str}:
            raise _Unsupported("a region label that is not a name")
        in_regions = [results[n] for n in regions]
        sizes = [(r.original_width, r.original_height) for r in in_regions]
        for m in [m for m, (w, h) in enumerate(sizes) if w is None or h is None]:
            sizes[m] = self.image_sizes[self.item_id[int(self.owner[regions[m]])]]  # KeyError: the generic error
        width = np.fromiter((float(w) for w, _ in sizes), dtype=float, count=len(sizes))
        height = np.fromiter((float(h) for _, h in sizes), dtype=float, count=len(sizes))
        scale = np.stack([width / 100.0, height / 100.0, width / 100.0, height / 100.0], axis=1)
        xywh = np.full((len(regions), 4), np.nan)
        box = np.fromiter((t == "rectanglelabels" for t in types), dtype=bool, count=len(types))
        boxes = [values[n] for n in self.regions[box].tolist()]
        columns = ([v.x for v in boxes], [v.y for v in boxes], [v.width for v in boxes], [v.height for v in boxes])
        for i, numbers in enumerate(columns):
            floats = np.fromiter(map(float, numbers), dtype=float, count=len(numbers))  # UNSET: TypeError
            with np.errstate(over="ignore", invalid="ignore"):
                xywh[box, i] = floats * scale[box, i]
        rotation = np.fromiter((float(v.rotation or 0.0) for v in boxes), dtype=float, count=len(boxes))
        points: list[list[float] | None] = [None] * len(regions)
        for m in np.flatnonzero(~box).tolist():
            raw = values[regions[m]].points
            if raw is UNSET:
                raise _Unsupported("a polygon without points")
            points[m], xywh[m] = _polygon(raw, scale[m, 0], scale[m, 1])
        rotated = rotation != 0
        box_results = self.regions[box]
        return {
            "labels": labels,
            "xywh": xywh,
            "points": points,
            "width": width,
            "height": height,
            "rotation": dict(zip(box_results[rotated].tolist(), rotation[rotated].tolist(), strict=True)),
        }

    def _attributes(self) -> np.ndarray:
        listed, owner = self.read.tolist(), self.owner[self.read]
        rotation = self.geometry["rotation"]
        read = [self.results[n] for n in listed]
        from_name, origin = [r.from_name for r in read], [r.origin for r in read]
        if not set(map(type, from_name)) | set(map(type, origin)) <= {str, type(None)}:
            raise _Unsupported("a from_name or origin that is not a name")
        keys = list(
            zip(
                from_name,
                origin,
                self.ground_truth[owner].tolist(),
                self.batch[owner].tolist(),
                [rotation.get(n) for n in listed] if rotation else [None] * len(listed),
                strict=True,
            )
        )
        written = {key: _attributes_json(*key) for key in set(keys)}
        return _objects([written[key] for key in keys])

    def _refs(self, rows: np.ndarray) -> np.ndarray:
        ids = [self.results[n].id for n in rows.tolist()]
        if set(map(type, ids)) - {str}:
            ids = [f"{p if i is UNSET else i}" for i, p in zip(ids, self.position[rows].tolist(), strict=True)]
        return self.ref[self.owner[rows]] + "/result=" + _objects(ids)

    def frame(self) -> pd.DataFrame:
        """``label_studio._Results.frame``: the same columns, built the same way."""
        count = np.zeros(len(self.types), dtype=np.int64)
        count[self.regions] = 1
        count[self.choices] = [len(c) for c in self.labels]
        rows = int(count.sum())
        if not rows:
            return pd.DataFrame([])
        start = np.cumsum(count) - count
        source = np.repeat(np.arange(len(count)), count)
        owner = self.owner[source]
        choice_rows = np.repeat(start[self.choices], count[self.choices]) + _ranks(count[self.choices])
        region_rows = start[self.regions]
        geometry = self.geometry
        kind = np.empty(rows, dtype=object)
        kind[choice_rows] = "classification"
        kind[region_rows] = _objects([REGION_TYPES[t] for t in self.types[self.regions]])
        label = np.empty(rows, dtype=object)
        label[choice_rows] = _objects([c for choices in self.labels for c in choices])
        label[region_rows] = _objects([labels[0] for labels in geometry["labels"]])
        ref = self._refs(source)
        ref[choice_rows] += "/choice=" + label[choice_rows]
        columns: dict[str, Any] = {
            "item_id": self.item_id[owner].tolist(),
            "annotator_id": self.annotator[owner].tolist(),
            "kind": kind.tolist(),
            "label": label.tolist(),
            "attributes": self.attributes[np.searchsorted(self.read, source)].tolist(),
            "annotated_at": self.annotated_at[owner].tolist(),
            "guideline_version": self.version[owner].tolist(),
            "source_ref": ref.tolist(),
        }
        if len(self.regions):
            at = np.full(len(count), -1)
            at[self.regions] = np.arange(len(self.regions))
            at = at[source]
            region = at >= 0
            for name, numbers in zip(
                ("x", "y", "w", "h", "image_width", "image_height"),
                (*geometry["xywh"].T, geometry["width"], geometry["height"]),
                strict=True,
            ):
                columns[name] = np.full(rows, np.nan)
                columns[name][region] = numbers[at[region]]
            points = np.full(rows, np.nan, dtype=object)
            points[region] = _objects(geometry["points"])[at[region]]
            columns["points"] = points.tolist()
        return pd.DataFrame(columns)
