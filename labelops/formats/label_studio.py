"""Label Studio JSON export (the full "JSON" format, not JSON-MIN).

One task holds several annotations; each annotation is one annotator's work
(``completed_by``). Region coordinates are percentages of the original image,
converted to pixels here. Cancelled (skipped) annotations and model predictions
are not labels: they are counted in ``skipped``. When an export holds an annotation
twice (the same task and annotation id by the same annotator, as concatenated or
re-exported snapshots do),
the version with the latest ``updated_at`` is read, wherever it stands in the file,
and the older versions are counted as superseded.

Tasks and annotations are walked one by one, but their results (a million boxes in
a large export) are read column by column: each field is pulled out of every result
by one comprehension and converted at once, percentages to pixels included. A bad
value found that way is reported as the walk in document order would have met it
first: an error names the first bad result of the file, and the rule it breaks first.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any

import numpy as np
import pandas as pd

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

MEDIA_KEYS = ("image", "img", "url", "uri", "video", "audio", "ocr", "pdf")
REGION_TYPES = {"rectanglelabels": "bbox", "polygonlabels": "polygon"}
# Result types that describe a region rather than stand alone (per-region attributes).
REGION_ATTRIBUTE_TYPES = ("choices", "taxonomy", "textarea", "number", "rating", "datetime")
# Where each attribute type keeps its value: Label Studio names the key after the type, except for text areas.
VALUE_KEYS = {"textarea": "text"}
# Result types that hold no value to read: links between regions, not labels (counted as skipped).
VALUELESS_TYPES = ("relation",)
# A rectangle's numbers in the order they are read: the first unreadable one is the one an error names.
BOX_KEYS = ("x", "y", "width", "height")
_MISSING = object()
# Attribute values that can key a cache of attribute sets: other types may be unhashable, or hash equal and
# print differently (1, 1.0 and True).
_PLAIN = {str, type(None)}


def looks_like(document: Any) -> bool:
    return (
        isinstance(document, list)
        and bool(document)
        and isinstance(document[0], dict)
        and "data" in document[0]
        and ("annotations" in document[0] or "completions" in document[0])
    )


def parse(source_file: str, document: list[dict[str, Any]], image_sizes: Mapping[str, tuple[float, float]]) -> Parsed:
    parsed = Parsed(format="label_studio", objects=objects_frame([]))
    tasks, superseded = _tasks(source_file, document)
    kept = _Annotations()
    failure: Exception | None = None
    try:
        for t_index, (task, task_id, annotations) in enumerate(tasks):
            kept.read(source_file, t_index, task, task_id, annotations, superseded, parsed)
    except Exception as error:  # raised below, unless a result read before it is bad: errors keep document order
        failure = error
    kept.columns()
    results = _Results(source_file, kept, image_sizes)
    results.check(failure)
    check_one_file_per_item(source_file, kept.task_media, kept.task_item_id)
    for reason, count in results.skipped.items():
        parsed.skip(reason, count)
    parsed.objects = objects_frame(results.frame())
    if kept.emptied:
        parsed.emptied = emptied_frame(*zip(*kept.emptied, strict=True))
    return parsed


def _tasks(
    source_file: str, document: list[Any]
) -> tuple[list[tuple[dict[str, Any], Any, list[dict[str, Any]]]], set[tuple[int, int]]]:
    """Every task's id and annotations, and the positions of superseded annotation versions.

    A version is superseded by a later ``updated_at`` of the same (task id, annotation id, annotator); ties go
    to the last one. The annotator is part of it because two instances' exports concatenated into one file (ours
    and a vendor's, which imported the same tasks) number tasks and annotations alike. Most exports hold each
    annotation once: only ids seen twice have their times read.
    """
    tasks = []
    malformed: ExportError | None = None
    for t_index, task in enumerate(document):
        if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
            malformed = ExportError(source_file, f"task #{t_index} has no 'data' object")
            break
        task_id = task.get("id", t_index)
        try:
            tasks.append((task, task_id, _annotations(source_file, task, task_id)))
        except ExportError as error:
            malformed = error
            break
    keys = [_version_key(task_id, a) for _, task_id, listed in tasks for a in listed if a.get("id") is not None]
    repeated = len(set(keys)) < len(keys)  # an id that cannot be a key (a list) fails here, before a later task
    if malformed is not None:
        raise malformed
    superseded: set[tuple[int, int]] = set()
    if not repeated:
        return tasks, superseded
    versions: dict[tuple[Any, Any, str], list[tuple[int, int]]] = {}
    for t_index, (_, task_id, in_task) in enumerate(tasks):
        for a_index, annotation in enumerate(in_task):
            if annotation.get("id") is not None:
                versions.setdefault(_version_key(task_id, annotation), []).append((t_index, a_index))
    for positions in versions.values():
        stamps = [_stamp(_annotated_at(tasks[t][2][a])) for t, a in positions]
        latest = 0
        for n in range(1, len(positions)):
            if stamps[n] >= stamps[latest]:
                latest = n
        superseded.update(position for n, position in enumerate(positions) if n != latest)
    return tasks, superseded


def _version_key(task_id: Any, annotation: dict[str, Any]) -> tuple[Any, Any, str]:
    """The annotation whose versions compete: its task, its id and its annotator (``state.annotation_keys``)."""
    return task_id, annotation["id"], _annotator(annotation.get("completed_by"))


def _annotations(source_file: str, task: dict[str, Any], task_id: Any) -> list[dict[str, Any]]:
    annotations = task.get("annotations", task.get("completions")) or []
    if not isinstance(annotations, list):
        raise ExportError(source_file, f"task {task_id}: 'annotations' is not a list")
    if not all(isinstance(a, dict) for a in annotations):
        raise ExportError(source_file, f"task {task_id}: an annotation is not an object")
    return annotations


def _stamp(value: Any) -> datetime:
    """An annotation's time for ordering its versions; a missing or unreadable one sorts first."""
    try:
        stamp = datetime.fromisoformat(str(value))
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


def _annotated_at(annotation: dict[str, Any]) -> Any:
    return annotation.get("updated_at") or annotation.get("created_at")


class _Annotations:
    """The annotations whose results are read, and the fields of their tasks.

    The walk over tasks only decides which annotations count; their own fields are then read as columns.
    """

    def __init__(self) -> None:
        self.annotations: list[dict[str, Any]] = []
        self.results: list[list[Any]] = []
        self.task: list[int] = []  # by annotation: its task's place in the task columns below
        self.task_id: list[Any] = []
        self.task_item_id: list[str] = []
        self.task_version: list[str | None] = []
        self.task_batch: list[str | None] = []
        self.task_media: list[str | None] = []  # the media reference of a task whose item id comes from it
        self.emptied: list[tuple[str, str, str, Any]] = []  # item, annotator, ref, time

    def read(
        self,
        source_file: str,
        t_index: int,
        task: dict[str, Any],
        task_id: Any,
        annotations: list[dict[str, Any]],
        superseded: set[tuple[int, int]],
        parsed: Parsed,
    ) -> None:
        item_id = _item_id(source_file, task, task_id)
        version = task["data"].get("guideline_version")
        # our own outbox tasks: an answer names the request it answers; a honeypot's answer is an ordinary
        # judgment of a gold item (it scores the labeler), not an answer that replaces labels
        meta = task.get("meta")
        meta = meta if isinstance(meta, dict) else {}
        batch = None if meta.get("honeypot") else task["data"].get("batch_id")
        parsed.skip("prediction", len(task.get("predictions") or []))
        if annotations:
            hash(task_id)  # a task id that cannot key its annotations' versions (a list) fails the file
        place = len(self.task_id)
        self.task_id.append(task_id)
        self.task_item_id.append(item_id)
        self.task_media.append(_media_reference(task["data"]))
        self.task_version.append(None if version is None else str(version))
        self.task_batch.append(None if batch is None else str(batch))
        for a_index, annotation in enumerate(annotations):
            results = annotation.get("result") or []
            if superseded and (t_index, a_index) in superseded:
                parsed.skip("superseded annotation version", max(len(results) if isinstance(results, list) else 1, 1))
                continue
            if annotation.get("was_cancelled"):
                parsed.skip("cancelled annotation", max(len(results), 1))
                self.empty(item_id, task_id, annotation, "cancelled")
                continue
            if not isinstance(results, list):
                ref = f"task={task_id}/annotation={annotation.get('id')}"
                raise ExportError(source_file, f"{ref}: 'result' is not a list")
            if not results:  # submitted with nothing drawn or chosen: no judgment, but counted
                parsed.skip("empty annotation", 1)
                self.empty(item_id, task_id, annotation, "empty")
            self.annotations.append(annotation)
            self.results.append(results)
            self.task.append(place)

    def empty(self, item_id: str, task_id: Any, annotation: dict[str, Any], why: str) -> None:
        """Note an annotation delivered without a judgment (``Parsed.emptied``)."""
        who = annotation.get("completed_by")
        self.emptied.append(
            (
                item_id,
                who if type(who) is str else _annotator(who),
                f"task={task_id}/annotation={annotation.get('id')}/{why}",
                annotation.get("updated_at") or annotation.get("created_at"),
            )
        )

    def columns(self) -> None:
        """The fields of every kept annotation, its task's included, as object arrays (one entry each)."""
        annotations, task = self.annotations, np.asarray(self.task, dtype=np.int64)
        self.item_id = _objects(self.task_item_id)[task]
        self.version = _objects(self.task_version)[task]
        self.batch = _objects(self.task_batch)[task]
        who = [a.get("completed_by") for a in annotations]
        self.annotator = _objects([w if type(w) is str else _annotator(w) for w in who])
        self.annotated_at = _objects([a.get("updated_at") or a.get("created_at") for a in annotations])
        self.ground_truth = [bool(a.get("ground_truth")) for a in annotations]
        task_id = self.task_id
        self.ref = _objects(
            [f"task={task_id[t]}/annotation={a.get('id')}" for t, a in zip(self.task, annotations, strict=True)]
        )


def _media_reference(data: dict[str, Any]) -> str | None:
    """The media reference a task's item id comes from: none when the task names its item (``data.item_id``)."""
    if str(data.get("item_id") or "").strip():
        return None
    return next((v for v in map(data.get, MEDIA_KEYS) if isinstance(v, str) and v), None)


def _item_id(source_file: str, task: dict[str, Any], task_id: Any) -> str:
    data = task["data"]
    if str(data.get("item_id") or "").strip():
        return str(data["item_id"]).strip()
    for key in MEDIA_KEYS:
        value = data.get(key)
        if isinstance(value, str) and value:
            return item_id_from_reference(source_file, value, url=True)
    return f"ls-task-{task_id}"


def _annotator(who: Any) -> str:
    if isinstance(who, dict):  # newer exports embed the user; the email is what teams recognize
        who = who.get("email") or who.get("id")
    if isinstance(who, float) and who.is_integer():
        who = int(who)  # a user id through a tool that reads numbers as floats: user 7, not "7.0"
    return "unknown" if who is None else str(who)


def _region_attributes(results: list[Any]) -> tuple[set[Any], dict[Any, dict[Any, Any]]]:
    """The ids of an annotation's regions, and the attribute results that describe them, by region id."""
    region_ids = {r.get("id") for r in results if isinstance(r, dict) and r.get("type") in REGION_TYPES}
    extra: dict[Any, dict[Any, Any]] = {}
    for result in results:
        if isinstance(result, dict) and result.get("id") in region_ids and result.get("type") in REGION_ATTRIBUTE_TYPES:
            value = result.get("value") or {}
            key = VALUE_KEYS.get(result["type"], result["type"])
            extra.setdefault(result["id"], {})[result.get("from_name", result["type"])] = value.get(key)
    return region_ids, extra


def _objects(values: list[Any]) -> np.ndarray:
    """A 1-d object array of ``values`` as they are (``np.array`` would make rows of equal-length lists 2-d)."""
    return np.fromiter(values, dtype=object, count=len(values))


def _among(values: list[Any], choices: tuple[str, ...]) -> np.ndarray:
    """``value in choices`` for every value, decided once for each distinct value."""
    try:
        found = {value: value in choices for value in set(values)}
    except TypeError:  # a value that cannot be hashed (a list) is in no tuple of names
        return np.fromiter((value in choices for value in values), dtype=bool, count=len(values))
    return np.fromiter(map(found.__getitem__, values), dtype=bool, count=len(values))


def _field(values: list[dict[str, Any]], key: str) -> list[Any]:
    """``value[key]`` of every value, ``_MISSING`` where it has none."""
    try:
        return list(map(itemgetter(key), values))
    except KeyError:
        return [v.get(key, _MISSING) for v in values]


def _floats(values: list[Any], key: str | None = None) -> tuple[np.ndarray, dict[int, Exception]]:
    """``float()`` of every value, and the error of each one that has none (``key``: a missing key's name)."""
    try:
        return np.fromiter(map(float, values), dtype=float, count=len(values)), {}
    except (TypeError, ValueError, OverflowError):
        pass
    out = np.full(len(values), np.nan)
    errors: dict[int, Exception] = {}
    for n, value in enumerate(values):
        try:
            out[n] = float(value)
        except (TypeError, ValueError, OverflowError) as error:
            errors[n] = KeyError(key) if value is _MISSING else error
    return out, errors


def _polygon(raw_points: Any, sx: float, sy: float) -> tuple[list[float], tuple[float, ...]]:
    if raw_points is _MISSING:
        raise KeyError("points")
    raw = np.asarray(raw_points, dtype=float)
    if raw.size == 0 and isinstance(raw_points, list):  # a polygon with no points: a row validation quarantines
        raw = raw.reshape(0, 2)
    if raw.ndim != 2 or raw.shape[1] != 2:
        raise ValueError("points must be [[x, y], ...]")
    points = (raw * [sx, sy]).ravel()
    return points.tolist(), polygon_bounds(points) if len(points) else (np.nan,) * 4


class _Results:
    """The results of the kept annotations, read as columns: one entry per result, in document order.

    Every rule a result can break is checked for all results at once; each breach is kept with its place
    (annotation, result, the rank of the rule in the order the rules are applied to one result), and
    :meth:`check` raises the first.
    """

    def __init__(self, source_file: str, kept: _Annotations, image_sizes: Mapping[str, tuple[float, float]]) -> None:
        self.source_file = source_file
        self.kept = kept
        self.errors: list[tuple[tuple[int, int, int], BaseException]] = []
        self.skipped: Counter[str] = Counter()
        lengths = np.fromiter(map(len, kept.results), dtype=np.int64, count=len(kept.results))
        self.start = np.cumsum(lengths) - lengths
        self.owner = np.repeat(np.arange(len(lengths)), lengths)
        self.position = np.arange(len(self.owner)) - np.repeat(self.start, lengths)
        results = [r for rs in kept.results for r in rs]
        for n in np.flatnonzero([not isinstance(r, dict) for r in results]).tolist():
            k, r = self._place(n)
            self._fail(n, 0, ExportError(source_file, f"{kept.ref[k]}: result #{r} is not an object"))
            results[n] = {}
        self.results: list[dict[str, Any]] = results
        self.type_list = [r.get("type") for r in results]
        self.types = _objects(self.type_list)
        self.ids = [r.get("id", _MISSING) for r in results]
        attribute = self._attribute_results()
        relation = _among(self.type_list, VALUELESS_TYPES)
        self.skipped.update(f"{t} result" for t in self.types[relation])
        values = [r.get("value") for r in results]
        for n in np.flatnonzero([not isinstance(v, dict) for v in values]).tolist():
            if not relation[n]:
                self._fail(n, 1, ExportError(source_file, f"{self._ref(n)}: 'value' is not an object"))
            values[n] = {}
        self.values: list[dict[str, Any]] = values
        self.choices = np.flatnonzero(_among(self.type_list, ("choices",)) & ~attribute)
        self.boxes = np.flatnonzero(_among(self.type_list, ("rectanglelabels",)))
        self.regions = np.flatnonzero(_among(self.type_list, tuple(REGION_TYPES)))
        other = ~relation & ~attribute
        other[self.choices] = other[self.regions] = False
        self.skipped.update(f"unsupported result type {t}" for t in self.types[other])
        read = np.zeros(len(self.types), dtype=bool)
        read[self.regions] = read[self.choices] = True
        self.read = np.flatnonzero(read)  # the results that become rows: regions and scene choices
        self.labels = self._choice_labels()
        # a choices result with nothing chosen gives no row: counted, so every result is accounted for
        if (empty := sum(not labels for labels in self.labels)) > 0:
            self.skipped["empty choices"] += empty
        self.opened: set[int] = set()  # the polygons left open (_geometry)
        self.geometry = self._geometry(image_sizes)
        self.attributes = self._attributes()

    def _place(self, n: int) -> tuple[int, int]:
        return int(self.owner[n]), int(self.position[n])

    def _fail(self, n: int, rank: int, error: BaseException) -> None:
        self.errors.append(((*self._place(n), rank), error))

    def _refs(self, rows: np.ndarray) -> np.ndarray:
        """``task=…/annotation=…/result=<id, or its place without one>`` of each result in ``rows``."""
        ids = [self.ids[n] for n in rows.tolist()]
        if set(map(type, ids)) - {str}:
            ids = [f"{p if i is _MISSING else i}" for i, p in zip(ids, self.position[rows].tolist(), strict=True)]
        return self.kept.ref[self.owner[rows]] + "/result=" + _objects(ids)

    def _ref(self, n: int) -> str:
        return self._refs(np.array([n]))[0]

    def _attribute_results(self) -> np.ndarray:
        """Which results are attributes of a region of their annotation (folded into it, not read alone).

        Only annotations with attribute results, or with ids or types no export writes (lists), are looked
        at, one by one; the attributes of their regions are kept by annotation and region id.
        """
        self.extra: dict[int, dict[Any, dict[Any, Any]]] = {}
        attribute = np.zeros(len(self.types), dtype=bool)
        odd = _among(self.type_list, REGION_ATTRIBUTE_TYPES)
        if set(map(type, self.type_list)) - {str, type(None)}:
            odd |= [t is not None and type(t) is not str for t in self.type_list]
        if set(map(type, self.ids)) & {list, dict}:
            odd |= [isinstance(rid, list | dict) for rid in self.ids]
        for k in sorted(set(self.owner[odd].tolist())):
            try:
                region_ids, self.extra[k] = _region_attributes(self.kept.results[k])
            except Exception as error:  # raised by check(), unless a result before this annotation is bad
                self.errors.append(((k, -1, 0), error))
                break
            for n in range(self.start[k], self.start[k] + len(self.kept.results[k])):
                attribute[n] = self.types[n] in REGION_ATTRIBUTE_TYPES and self.results[n].get("id") in region_ids
        return attribute

    def _choice_labels(self) -> list[list[str]]:
        labels = [self.values[n].get("choices") or [] for n in self.choices.tolist()]
        for n, choices in zip(self.choices.tolist(), labels, strict=True):
            if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
                self._fail(n, 2, ExportError(self.source_file, f"{self._ref(n)}: 'choices' must be a list of strings"))
        return labels

    def _geometry(self, image_sizes: Mapping[str, tuple[float, float]]) -> dict[str, Any]:
        """Labels, pixel boxes and polygon points of every region, and the rotation of every rotated box."""
        regions, values, results = self.regions, self.values, self.results
        types = self.types[regions]
        labels: list[Any] = [values[n].get(t) for n, t in zip(regions.tolist(), types.tolist(), strict=True)]
        exactly_one = set(map(type, labels)) <= {list} and set(map(len, labels)) <= {1}
        if not (exactly_one and {type(label) for (label,) in labels} <= {str}):  # as exports write them: skip the walk
            for n, t, label in zip(regions.tolist(), types.tolist(), labels, strict=True):
                if not isinstance(label, list) or len(label) != 1 or not isinstance(label[0], str):
                    message = f"{self._ref(n)}: '{t}' must hold exactly one label, got {label!r}"
                    self._fail(n, 3, ExportError(self.source_file, message))
        in_regions = [results[n] for n in regions.tolist()]
        widths, heights = [r.get("original_width") for r in in_regions], [r.get("original_height") for r in in_regions]
        sizes = list(zip(widths, heights, strict=True))
        for m in [m for m, (w, h) in enumerate(sizes) if w is None or h is None]:
            item = self.kept.item_id[int(self.owner[regions[m]])]
            if item in image_sizes:
                sizes[m] = image_sizes[item]
            else:
                message = f"no original_width/height and item {item!r} is not in the item catalog"
                self._fail(regions[m], 4, ExportError(self.source_file, f"{self._ref(regions[m])}: {message}"))
                sizes[m] = (0.0, 0.0)
        width, width_errors = _floats([w for w, _ in sizes])
        height, height_errors = _floats([h for _, h in sizes])
        for rank, errors in enumerate((width_errors, height_errors)):
            for m, error in errors.items():
                self._conversion_error(regions[m], types[m], rank, error)
        scale = np.stack([width / 100.0, height / 100.0, width / 100.0, height / 100.0], axis=1)
        xywh = np.full((len(regions), 4), np.nan)
        box = _among(types.tolist(), ("rectanglelabels",))
        boxes = [values[n] for n in self.boxes.tolist()]
        for i, key in enumerate(BOX_KEYS):
            numbers, errors = _floats(_field(boxes, key), key)
            with np.errstate(over="ignore", invalid="ignore"):  # inf and NaN, silently, as Python's floats give them
                xywh[box, i] = numbers * scale[box, i]
            for m, error in errors.items():
                self._conversion_error(self.boxes[m], "rectanglelabels", 2 + i, error)
        rotation, errors = _floats([v.get("rotation") or 0.0 for v in boxes])
        for m, error in errors.items():
            self._conversion_error(self.boxes[m], "rectanglelabels", 6, error)
        points: list[list[float] | None] = [None] * len(regions)
        for m in np.flatnonzero(~box).tolist():
            try:
                points[m], xywh[m] = _polygon(values[regions[m]].get("points", _MISSING), scale[m, 0], scale[m, 1])
            except (KeyError, TypeError, ValueError, OverflowError) as error:
                self._conversion_error(regions[m], "polygonlabels", 2, error)
        # a polygon the labeler left open (Label Studio writes ``closed: false``) keeps the flag, which validation
        # quarantines it by (``polygon_closed``)
        self.opened = {n for n in regions[~box].tolist() if values[n].get("closed") is False}
        return region_geometry(labels, xywh, points, width, height, self.boxes, rotation)

    def _conversion_error(self, n: int, rtype: str, rank: int, error: BaseException) -> None:
        if isinstance(error, KeyError | TypeError | ValueError):
            error = ExportError(self.source_file, f"{self._ref(n)}: bad {rtype} value ({error})")
        self._fail(n, 5 + rank, error)

    def _attributes(self) -> np.ndarray:
        """The attributes (as canonical JSON) of every region and scene choice, in the order of their results.

        Most results share a handful of attribute sets (the same tool, origin and batch): each is written once.
        """
        listed, owner = self.read.tolist(), self.owner[self.read]
        rotation = self.geometry["rotation"]
        read = [self.results[n] for n in listed]
        from_name, origin = [r.get("from_name") for r in read], [r.get("origin") for r in read]
        keys = list(
            zip(
                from_name,
                origin,
                [self.kept.ground_truth[k] for k in owner.tolist()],
                self.kept.batch[owner].tolist(),
                [rotation.get(n) for n in listed] if rotation else [None] * len(listed),
                strict=True,
            )
        )
        described = set(self.extra)  # annotations whose regions may carry attribute results
        odd = {n for n, k in zip(listed, owner.tolist(), strict=True) if k in described} if described else set()
        odd &= set(self.regions.tolist())
        opened = self.opened
        if not odd and not opened and set(map(type, from_name)) | set(map(type, origin)) <= _PLAIN:
            written = {key: _attributes_json(*key) for key in set(keys)}
            return _objects([written[key] for key in keys])
        written = {}
        out = np.empty(len(listed), dtype=object)
        for m, (n, key) in enumerate(zip(listed, keys, strict=True)):
            if n not in odd and n not in opened and type(key[0]) in _PLAIN and type(key[1]) in _PLAIN:
                if key not in written:
                    written[key] = _attributes_json(*key)
                out[m] = written[key]
                continue
            extra = self.extra[int(self.owner[n])].get(self.results[n].get("id")) if n in odd else None
            if n in opened:
                extra = {**(extra or {}), "closed": False}
            try:
                out[m] = _attributes_json(*key, extra)
            except TypeError as error:  # keys of several types (a number among names) cannot be sorted
                self._fail(n, 12, error)
        return out

    def check(self, failure: Exception | None) -> None:
        """Raise the first error in document order: a bad result, or else what stopped the walk of the tasks."""
        if self.errors:
            raise min(self.errors, key=lambda e: e[0])[1]
        if failure is not None:
            raise failure

    def frame(self) -> pd.DataFrame:
        """One row per region and per scene choice, in document order, with the columns ``pd.DataFrame``
        infers from one dict per row (a key a row lacks is NaN; box columns only if some region was read)."""
        layout = RowLayout.of(len(self.types), self.regions, self.choices, [len(c) for c in self.labels])
        if not layout.rows:
            return pd.DataFrame([])
        rows, source, choice_rows, region_rows = layout.rows, layout.source, layout.choice_rows, layout.region_rows
        owner = self.owner[source]
        geometry = self.geometry
        kind = np.empty(rows, dtype=object)
        kind[choice_rows] = "classification"
        kind[region_rows] = _objects([REGION_TYPES[t] for t in self.types[self.regions]])
        label = np.empty(rows, dtype=object)
        label[choice_rows] = _objects([c for choices in self.labels for c in choices])
        label[region_rows] = _objects([labels[0] for labels in geometry["labels"]])
        ref = self._refs(source)
        ref[choice_rows] += "/choice=" + label[choice_rows]
        kept = self.kept
        columns: dict[str, Any] = {
            "item_id": kept.item_id[owner].tolist(),
            "annotator_id": kept.annotator[owner].tolist(),
            "kind": kind.tolist(),
            "label": label.tolist(),
            "attributes": self.attributes[np.searchsorted(self.read, source)].tolist(),
            "annotated_at": kept.annotated_at[owner].tolist(),
            "guideline_version": kept.version[owner].tolist(),
            "source_ref": ref.tolist(),
        }
        if len(self.regions):
            columns.update(region_columns(geometry, self.regions, len(self.types), source))
        return pd.DataFrame(columns)


def _attributes_json(
    from_name: Any, origin: Any, ground_truth: bool, batch: str | None, rotation: float | None, extra: Any = None
) -> str:
    attributes: dict[Any, Any] = {"from_name": from_name, "origin": origin}
    if ground_truth:
        attributes["ground_truth"] = True
    if batch is not None:
        attributes["batch_id"] = batch
    attributes.update(extra or {})
    if rotation is not None:
        attributes["rotation"] = rotation
    return to_json(attributes)


@dataclass(frozen=True)
class RowLayout:
    """Where each read result's output rows go, in document order: a region is one row, a choices result one
    row per chosen label. Both readers lay rows out this way, so their frames agree row for row."""

    rows: int
    source: np.ndarray  # for each row, the result it comes from
    choice_rows: np.ndarray
    region_rows: np.ndarray

    @classmethod
    def of(cls, results: int, regions: np.ndarray, choices: np.ndarray, chosen: Sequence[int]) -> RowLayout:
        """``regions``/``choices``: the positions of region and choices results; ``chosen``: how many labels
        each choices result chose."""
        count = np.zeros(results, dtype=np.int64)
        count[regions] = 1
        count[choices] = chosen
        start = np.cumsum(count) - count
        return cls(
            rows=int(count.sum()),
            source=np.repeat(np.arange(results), count),
            choice_rows=np.repeat(start[choices], count[choices]) + _ranks(count[choices]),
            region_rows=start[regions],
        )


def _ranks(counts: np.ndarray) -> np.ndarray:
    """0, 1, … within each run of ``counts``."""
    return np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)


def region_geometry(
    labels: Any,
    xywh: np.ndarray,
    points: list[Any],
    width: np.ndarray,
    height: np.ndarray,
    boxes: np.ndarray,
    rotation: np.ndarray,
) -> dict[str, Any]:
    """The regions' geometry as every reader hands it to the frame helpers below: per region its labels, pixel
    box, polygon points (``None`` for a box) and image size; ``boxes`` are the box results' positions and
    ``rotation`` their rotations, of which the rotated ones are kept by position (NaN too, as
    ``if float(rotation)`` reads it)."""
    rotated = rotation != 0
    return {
        "labels": labels,
        "xywh": xywh,
        "points": points,
        "width": width,
        "height": height,
        "rotation": dict(zip(boxes[rotated].tolist(), rotation[rotated].tolist(), strict=True)),
    }


def region_rows_of(regions: np.ndarray, results: int, source: np.ndarray) -> np.ndarray:
    """For each output row (``source``: the result it comes from), the position of its region among the read
    regions, or -1 for a scene-choice row."""
    at = np.full(results, -1)
    at[regions] = np.arange(len(regions))
    return at[source]


def region_columns(geometry: dict[str, Any], regions: np.ndarray, results: int, source: np.ndarray) -> dict[str, Any]:
    """The box, image-size and points columns of every row (``source``: the result it comes from)."""
    region_of = region_rows_of(regions, results, source)
    columns: dict[str, Any] = geometry_columns(geometry, region_of)
    if (region_of >= 0).all() and not any(geometry["points"]):  # boxes only: no point lists to place
        columns["points"] = np.full(len(source), None, dtype=object)
    else:
        columns["points"] = points_column(geometry, region_of)
    return columns


def geometry_columns(geometry: dict[str, Any], region_of: np.ndarray) -> dict[str, np.ndarray]:
    """The box and image-size columns of every row, NaN on rows that are not regions."""
    region = region_of >= 0
    columns = {}
    for name, numbers in zip(
        ("x", "y", "w", "h", "image_width", "image_height"),
        (*geometry["xywh"].T, geometry["width"], geometry["height"]),
        strict=True,
    ):
        columns[name] = np.full(len(region_of), np.nan)
        columns[name][region] = numbers[region_of[region]]
    return columns


def points_column(geometry: dict[str, Any], region_of: np.ndarray) -> list:
    """Each region row's polygon points (a box's are empty), NaN on the other rows."""
    region = region_of >= 0
    points = np.full(len(region_of), np.nan, dtype=object)
    points[region] = _objects(geometry["points"])[region_of[region]]
    return points.tolist()
