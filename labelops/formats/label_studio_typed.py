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

import re
from collections.abc import Mapping
from itertools import chain
from operator import attrgetter, itemgetter
from typing import Any

import msgspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from msgspec import UNSET, UnsetType

from labelops.formats.common import (
    Parsed,
    check_one_file_per_item,
    emptied_frame,
    item_id_from_reference,
    objects_frame,
)
from labelops.formats.label_studio import (
    MEDIA_KEYS,
    REGION_ATTRIBUTE_TYPES,
    REGION_TYPES,
    VALUE_KEYS,
    VALUELESS_TYPES,
    RowLayout,
    _among,
    _annotator,
    _attributes_json,
    _objects,
    _polygon,
    region_columns,
    region_geometry,
)


class _Value(msgspec.Struct, gc=False):
    x: Any = UNSET
    y: Any = UNSET
    width: Any = UNSET
    height: Any = UNSET
    rotation: Any = None
    points: Any = UNSET
    closed: Any = None
    rectanglelabels: Any = None
    polygonlabels: Any = None
    choices: Any = None
    taxonomy: Any = None
    text: Any = None
    number: Any = None
    rating: Any = None
    datetime: Any = None


class _Result(msgspec.Struct, gc=False):
    id: Any = UNSET
    type: Any = None
    value: _Value | UnsetType | None = UNSET
    original_width: Any = None
    original_height: Any = None
    from_name: Any = UNSET
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


def parse(source_file: str, data: bytes, image_sizes: Mapping[str, tuple[float, float]]) -> Parsed | None:
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


# A media reference that is a plain path: no URL parts (scheme, host, query, fragment), no backslash, no ``..``,
# nothing urlsplit strips. Its item id is the file name without extension, as the URL rules also give it.
_PLAIN_PATH = re.compile(r"[^?#\\:.]*(?:\.(?!\.)[^?#\\:.]*)*")
# The dtype pandas gives a column of Python strings; when it is Arrow-backed text, such columns are built in Arrow.
_TEXT = pd.Series(["text"]).dtype
_ARROW_TEXT = isinstance(_TEXT, pd.StringDtype) and _TEXT.storage == "pyarrow"


def _item_id(source_file: str, data: _Data, task_id: Any) -> str:
    """``label_studio._item_id``; a plain path is cut to its stem without the URL rules."""
    text = str(data.item_id or "").strip()
    if text:
        return text
    for key in MEDIA_KEYS:
        value = getattr(data, key)
        if isinstance(value, str) and value:
            ref = value.strip()
            if ref.isprintable() and not ref.startswith("//") and _PLAIN_PATH.fullmatch(ref):
                base = ref.rstrip("/").rpartition("/")[2]
                dot = base.rfind(".")
                stem = base[:dot] if dot > 0 and base[:dot].strip(".") else base  # posixpath.splitext
                if stem:
                    return stem
            return item_id_from_reference(source_file, value, url=True)
    return f"ls-task-{task_id}"


def _media_references(data: list[_Data]) -> list[str | None]:
    """``label_studio._media_reference`` of every task."""
    return [
        None
        if str(d.item_id or "").strip()
        else next((v for v in (getattr(d, k) for k in MEDIA_KEYS) if isinstance(v, str) and v), None)
        for d in data
    ]


def _read(source_file: str, tasks: list[_Task], image_sizes: Mapping[str, tuple[float, float]]) -> Parsed | None:
    """``label_studio.parse``'s walk over the tasks, as one comprehension per field."""
    parsed = Parsed(format="label_studio", objects=objects_frame([]))
    task_ids: list[Any] = list(map(attrgetter("id"), tasks))
    if UNSET in task_ids:
        task_ids = [t if i is UNSET else i for t, i in enumerate(task_ids)]
    data = list(map(attrgetter("data"), tasks))
    item_ids = [_item_id(source_file, d, t) for d, t in zip(data, task_ids, strict=True)]
    check_one_file_per_item(source_file, _media_references(data), item_ids)
    versions = _names(list(map(attrgetter("guideline_version"), data)))
    batches = list(map(attrgetter("batch_id"), data))
    metas = list(map(attrgetter("meta"), tasks))
    if dict in set(map(type, metas)):  # our own outbox tasks: a honeypot's answer is no answer to a batch
        batches = [
            None if isinstance(m, dict) and m.get("honeypot") else b for m, b in zip(metas, batches, strict=True)
        ]
    batches = _names(batches)
    predictions = sum(len(p) for p in map(attrgetter("predictions"), tasks) if p)
    parsed.skip("prediction", predictions)
    listed_by_task: list[Any] = list(map(attrgetter("annotations"), tasks))
    if UNSET in listed_by_task:
        listed_by_task = [t.completions if a is UNSET else a for t, a in zip(tasks, listed_by_task, strict=True)]
    if UNSET in listed_by_task or None in listed_by_task:
        listed_by_task = [a or [] for a in listed_by_task]
    counts = list(map(len, listed_by_task))
    if not set(map(type, task_ids)) <= {int, str, type(None)}:
        for task_id, count in zip(task_ids, counts, strict=True):
            if count:
                hash(task_id)  # a task id that cannot key its annotations' versions (a list) fails the file
    listed: list[_Annotation] = list(chain.from_iterable(listed_by_task))
    _check_single_versions(task_ids, listed, counts)
    task_of = np.repeat(np.arange(len(counts)), counts)
    cancelled = list(map(attrgetter("was_cancelled"), listed))
    flags = np.zeros(len(listed), dtype=bool)
    if set(map(type, cancelled)) - {type(None), bool} or True in cancelled:
        flags = np.fromiter(map(bool, cancelled), dtype=bool, count=len(listed))
        skipped = sum(max(len(a.result or []), 1) for a, c in zip(listed, flags.tolist(), strict=True) if c)
        parsed.skip("cancelled annotation", skipped)
    empty = np.fromiter((not a.result for a in listed), dtype=bool, count=len(listed)) & ~flags
    if empty.any():  # submitted with nothing drawn or chosen: no judgment, but counted
        parsed.skip("empty annotation", int(empty.sum()))
    if flags.any() or empty.any():
        parsed.emptied = _emptied(listed, task_of, flags, empty, task_ids, item_ids)
        kept = [a for a, c in zip(listed, flags.tolist(), strict=True) if not c]
        task_of = task_of[~flags]
    else:
        kept = listed
    return _Columns(source_file, parsed, kept, task_of, task_ids, item_ids, versions, batches, image_sizes).parsed()


def _emptied(
    annotations: list[_Annotation],
    task_of: np.ndarray,
    cancelled: np.ndarray,
    empty: np.ndarray,
    task_ids: list[Any],
    item_ids: list[str],
) -> pd.DataFrame:
    """``label_studio._Annotations.empty`` of the cancelled and empty annotations (a few of a file), in order."""
    found = []
    for n in np.flatnonzero(cancelled | empty).tolist():
        a, task = annotations[n], int(task_of[n])
        who = a.completed_by if type(a.completed_by) is str else _annotator(a.completed_by)
        ref = f"task={task_ids[task]}/annotation={a.id}/{'cancelled' if cancelled[n] else 'empty'}"
        found.append((item_ids[task], who, ref, a.updated_at or a.created_at))
    return emptied_frame(*zip(*found, strict=True))


def _names(values: list[Any]) -> list[str | None]:
    """``None if value is None else str(value)`` of every value."""
    if set(map(type, values)) <= {str, type(None)}:
        return values
    return [None if v is None else str(v) for v in values]


def _check_single_versions(task_ids: list[Any], listed: list[_Annotation], counts: list[int]) -> None:
    """Annotation versions to choose between (a (task id, annotation id) held twice) are the generic parser's."""
    ids = [a.id for a in listed]
    if len(set(ids)) == len(ids) and None not in ids:
        return
    owners = np.repeat(np.arange(len(counts)), counts).tolist()
    keys = [(task_ids[t], i) for t, i in zip(owners, ids, strict=True) if i is not None]
    if len(set(keys)) < len(keys):
        raise _Unsupported("annotation versions")


def _text(values: np.ndarray, index: np.ndarray) -> Any:
    """``values[index]`` as a frame column, as ``pd.DataFrame`` makes it of the list: Arrow text when every
    value is a string (built in Arrow, not from a million Python strings), else the list itself."""
    listed = values.tolist()
    kinds = set(map(type, listed))
    if _ARROW_TEXT and kinds == {str}:
        return pd.array(pc.take(pa.array(listed, type=pa.string()), pa.array(index, type=pa.int64())), dtype=_TEXT)
    if kinds == {type(None)}:
        return np.full(len(index), None, dtype=object)
    return values[index].tolist()


def _uniform_ints(values: list[Any]) -> pa.Array | None:
    """The values as Arrow int64 when every one is a Python int (no bool) that fits, else None."""
    if set(map(type, values)) != {int}:
        return None
    try:
        return pa.array(values, type=pa.int64())
    except (OverflowError, pa.ArrowInvalid):
        return None


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
        image_sizes: Mapping[str, tuple[float, float]],
    ) -> None:
        self.source_file = source_file
        self._parsed = parsed
        self.image_sizes = image_sizes
        self.kept = kept
        self.task_of = task_of
        self.task_ids = task_ids
        self.task_item_id = _objects(item_ids)
        self.task_version = _objects(versions)
        self.batch = _objects(batches)[task_of]
        who = list(map(attrgetter("completed_by"), kept))
        if set(map(type, who)) != {str}:
            who = [w if type(w) is str else _annotator(w) for w in who]
        self.annotator = _objects(who)
        self.annotated_at = _objects([a.updated_at or a.created_at for a in kept])
        truth = list(map(attrgetter("ground_truth"), kept))
        if set(map(type, truth)) <= {type(None), bool} and True not in truth:
            self.ground_truth = np.zeros(len(kept), dtype=bool)
        else:
            self.ground_truth = np.fromiter(map(bool, truth), dtype=bool, count=len(kept))
        listed = list(map(attrgetter("result"), kept))
        if None in listed:
            listed = [rs or [] for rs in listed]
        lengths = np.fromiter(map(len, listed), dtype=np.int64, count=len(listed))
        self.owner = np.repeat(np.arange(len(lengths)), lengths)
        self.position = np.arange(len(self.owner)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        self.results = list(chain.from_iterable(listed))
        self.type_list = list(map(attrgetter("type"), self.results))
        self.ids = list(map(attrgetter("id"), self.results))
        if set(map(type, self.ids)) & {list, dict}:
            raise _Unsupported("a result id that is a list or an object")

    def parsed(self) -> Parsed:
        types = set(self.type_list)
        if types - {None} - {t for t in types if type(t) is str}:
            raise _Unsupported("result types that are not names")
        self.types = _objects(self.type_list)
        if len(types) == 1:  # one type of result (boxes only, say): every mask is all or nothing
            self.codes = np.zeros(len(self.type_list), dtype=np.int64)
            self.names: list[Any] = list(types)
        else:
            self.names = list(types)
            code = {t: n for n, t in enumerate(self.names)}
            self.codes = np.fromiter(map(code.__getitem__, self.type_list), dtype=np.int64, count=len(self.type_list))
        values: list[Any] = list(map(attrgetter("value"), self.results))
        if set(map(type, values)) - {_Value}:
            relation = self._of_type(*VALUELESS_TYPES).tolist()
            if any(not isinstance(v, _Value) for v, r in zip(values, relation, strict=True) if not r):
                raise _Unsupported("a result without a value object")
        self.values = values
        self.regions = np.flatnonzero(self._of_type(*REGION_TYPES))
        attribute = self._region_attributes(types & set(REGION_ATTRIBUTE_TYPES))
        choices = self._of_type("choices")
        self.choices = np.flatnonzero(choices & ~attribute if len(self.extra) else choices)
        skipped: dict[str, int] = {}
        if types - {*REGION_TYPES, "choices"}:
            other = ~self._of_type(*REGION_TYPES, "choices") & ~attribute
            for t in self.types[other].tolist():
                reason = f"{t} result" if t in VALUELESS_TYPES else f"unsupported result type {t}"
                skipped[reason] = skipped.get(reason, 0) + 1
        read = np.zeros(len(self.types), dtype=bool)
        read[self.regions] = read[self.choices] = True
        self.read = np.flatnonzero(read)
        self.labels = self._choice_labels()
        if (empty := sum(not labels for labels in self.labels)) > 0:  # nothing chosen: no row
            skipped["empty choices"] = empty
        self.geometry = self._geometry()
        self.attributes = self._attributes()
        for reason, count in skipped.items():
            self._parsed.skip(reason, count)
        self._parsed.objects = objects_frame(self.frame())
        return self._parsed

    def _of_type(self, *names: str) -> np.ndarray:
        """Which results have one of these types."""
        return np.isin(self.codes, [n for n, t in enumerate(self.names) if t in names])

    def _region_attributes(self, attribute_types: set[Any]) -> np.ndarray:
        """Which results are attributes of a region of their annotation (``label_studio._region_attributes``):
        choices, text areas, … with the id of a region. Their values are kept by annotation and region id."""
        self.extra: dict[int, dict[Any, dict[Any, Any]]] = {}
        attribute = np.zeros(len(self.type_list), dtype=bool)
        if not attribute_types:
            return attribute
        for k in sorted(set(self.owner[_among(self.type_list, REGION_ATTRIBUTE_TYPES)].tolist())):
            first = int(np.searchsorted(self.owner, k))
            results = self.kept[k].result or []
            region_ids = {None if r.id is UNSET else r.id for r in results if r.type in REGION_TYPES}
            extra: dict[Any, dict[Any, Any]] = {}
            for m, result in enumerate(results):
                rid = None if result.id is UNSET else result.id
                if rid in region_ids and result.type in REGION_ATTRIBUTE_TYPES:
                    if result.id is UNSET:
                        raise _Unsupported("an attribute result without an id")
                    value = result.value or _Value()
                    key = VALUE_KEYS.get(result.type, result.type)
                    name = result.type if result.from_name is UNSET else result.from_name
                    extra.setdefault(rid, {})[name] = getattr(value, key)
                    attribute[first + m] = True
            self.extra[k] = extra
        return attribute

    def _choice_labels(self) -> list[list[str]]:
        labels = [self.values[n].choices or [] for n in self.choices.tolist()]
        for choices in labels:
            if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
                raise _Unsupported("choices that are not a list of names")
        return labels

    def _geometry(self) -> dict[str, Any]:
        regions, values, results = self.regions.tolist(), self.values, self.results
        types = self.types[self.regions].tolist()
        if set(types) == {"rectanglelabels"}:
            labels = list(map(attrgetter("rectanglelabels"), map(values.__getitem__, regions)))
        else:
            labels = [getattr(values[n], t) for n, t in zip(regions, types, strict=True)]
        if not (set(map(type, labels)) <= {list} and set(map(len, labels)) <= {1}):
            raise _Unsupported("a region without exactly one label")
        names = list(map(itemgetter(0), labels))
        if not set(map(type, names)) <= {str}:
            raise _Unsupported("a region label that is not a name")
        in_regions = list(map(results.__getitem__, regions))
        widths = list(map(attrgetter("original_width"), in_regions))
        heights = list(map(attrgetter("original_height"), in_regions))
        try:
            width = np.fromiter(map(float, widths), dtype=float, count=len(widths))
            height = np.fromiter(map(float, heights), dtype=float, count=len(heights))
        except TypeError:  # a size missing (None): the item catalog's
            width = height = None
        if width is None or height is None:
            for m in [m for m, (w, h) in enumerate(zip(widths, heights, strict=True)) if w is None or h is None]:
                item = self.task_item_id[int(self.task_of[self.owner[regions[m]]])]
                widths[m], heights[m] = self.image_sizes[item]  # KeyError: the generic parser's error
            width = np.fromiter(map(float, widths), dtype=float, count=len(widths))
            height = np.fromiter(map(float, heights), dtype=float, count=len(heights))
        scale = np.stack([width / 100.0, height / 100.0, width / 100.0, height / 100.0], axis=1)
        xywh = np.full((len(regions), 4), np.nan)
        box = self._of_type("rectanglelabels")[self.regions]
        boxes = list(map(values.__getitem__, self.regions[box].tolist()))
        numbers = chain.from_iterable(map(attrgetter("x", "y", "width", "height"), boxes))  # one pass over the values
        floats = np.fromiter(map(float, numbers), dtype=float, count=4 * len(boxes)).reshape(-1, 4)  # UNSET: TypeError
        with np.errstate(over="ignore", invalid="ignore"):  # inf and NaN, silently, as Python's floats give them
            xywh[box] = floats * scale[box]
        turns = list(map(attrgetter("rotation"), boxes))
        if set(map(type, turns)) <= {int, float, type(None)} and not any(turns):
            rotation = np.zeros(len(boxes))
        else:
            rotation = np.fromiter((float(t or 0.0) for t in turns), dtype=float, count=len(boxes))
        points: list[list[float] | None] = [None] * len(regions)
        for m in np.flatnonzero(~box).tolist():
            raw = values[regions[m]].points
            if raw is UNSET:
                raise _Unsupported("a polygon without points")
            if values[regions[m]].closed is False:
                raise _Unsupported("an open polygon")
            points[m], xywh[m] = _polygon(raw, scale[m, 0], scale[m, 1])
        return region_geometry(names, xywh, points, width, height, self.regions[box], rotation)

    def _attributes(self) -> tuple[list[str], np.ndarray]:
        """The distinct attribute texts, and which one each region and scene choice has."""
        listed, owner = self.read.tolist(), self.owner[self.read]
        rotation = self.geometry["rotation"]
        read = list(map(self.results.__getitem__, listed))
        from_name, origin = list(map(attrgetter("from_name"), read)), list(map(attrgetter("origin"), read))
        named = set(map(type, from_name))
        if not (named | set(map(type, origin))) <= {str, type(None), UnsetType}:
            raise _Unsupported("a from_name or origin that is not a name")
        if UnsetType in named:
            from_name = [None if f is UNSET else f for f in from_name]
        truth, batch = self.ground_truth[owner].tolist(), self.batch[owner].tolist()
        columns = (from_name, origin, truth, batch)
        if not rotation and all(len(set(c)) <= 1 for c in columns):  # one tool, origin and batch: one text
            first: list[Any] = [c[0] if c else None for c in columns]
            texts = [_attributes_json(first[0], first[1], first[2], first[3], None)]
            index = np.zeros(len(listed), dtype=np.int64)
        else:
            rotations = [rotation.get(n) for n in listed] if rotation else [None] * len(listed)
            keys = list(zip(*columns, rotations, strict=True))
            codes: dict[tuple[Any, ...], int] = {}
            index = np.fromiter((codes.setdefault(k, len(codes)) for k in keys), dtype=np.int64, count=len(keys))
            texts = [_attributes_json(*key) for key in codes]
        if self.extra:  # regions of annotations with attribute results: their attributes folded in
            region = np.zeros(len(self.type_list), dtype=bool)
            region[self.regions] = True
            for m, (n, k) in enumerate(zip(listed, owner.tolist(), strict=True)):
                if k in self.extra and region[n]:
                    found = self.extra[k].get(None if self.ids[n] is UNSET else self.ids[n])
                    index[m] = len(texts)
                    key = (from_name[m], origin[m], truth[m], batch[m], rotation.get(n))
                    texts.append(_attributes_json(*key, found))
        return texts, index

    def _refs(self, rows: np.ndarray) -> Any:
        """``task=…/annotation=…/result=…`` of each result in ``rows``: Arrow text when ids are plain."""
        ids = [self.ids[n] for n in rows.tolist()]
        task_ids = _uniform_ints(self.task_ids)
        annotation_ids = _uniform_ints([a.id for a in self.kept])
        if _ARROW_TEXT and task_ids is not None and annotation_ids is not None and set(map(type, ids)) <= {str}:
            owner = pa.array(self.owner[rows], type=pa.int64())
            task = pc.take(pc.cast(task_ids, pa.string()), pc.take(pa.array(self.task_of, type=pa.int64()), owner))
            annotation = pc.take(pc.cast(annotation_ids, pa.string()), owner)
            result = pa.array(ids, type=pa.string())
            return pc.binary_join_element_wise("task=", task, "/annotation=", annotation, "/result=", result, "")
        if set(map(type, ids)) - {str}:
            ids = [f"{p if i is UNSET else i}" for i, p in zip(ids, self.position[rows].tolist(), strict=True)]
        refs = _objects(
            [
                f"task={self.task_ids[t]}/annotation={a.id}"
                for t, a in zip(self.task_of.tolist(), self.kept, strict=True)
            ]
        )
        return refs[self.owner[rows]] + "/result=" + _objects(ids)

    def frame(self) -> pd.DataFrame:
        """``label_studio._Results.frame``: the same columns and values, text columns built in Arrow."""
        layout = RowLayout.of(len(self.types), self.regions, self.choices, [len(c) for c in self.labels])
        if not layout.rows:
            return pd.DataFrame([])
        rows, source, choice_rows, region_rows = layout.rows, layout.source, layout.choice_rows, layout.region_rows
        owner = self.owner[source]
        task = self.task_of[owner]
        geometry = self.geometry
        kinds = ["classification", REGION_TYPES["rectanglelabels"], REGION_TYPES["polygonlabels"]]
        kind = np.zeros(rows, dtype=np.int64)
        kind[region_rows] = np.where(self._of_type("rectanglelabels")[self.regions], 1, 2)
        label = np.empty(rows, dtype=object)
        label[choice_rows] = _objects([c for choices in self.labels for c in choices])
        label[region_rows] = _objects(geometry["labels"])
        ref = self._refs(source)
        if len(choice_rows):
            ref = _objects(ref.tolist()) if isinstance(ref, pa.Array) else ref
            ref[choice_rows] += "/choice=" + label[choice_rows]
            ref = _text(ref, np.arange(rows))
        elif not isinstance(ref, pa.Array):
            ref = _text(ref, np.arange(rows))
        else:
            ref = pd.array(ref, dtype=_TEXT)
        texts, which = self.attributes
        columns: dict[str, Any] = {
            "item_id": _text(self.task_item_id, task),
            "annotator_id": _text(self.annotator, owner),
            "kind": _text(_objects(kinds), kind),
            "label": _text(label, np.arange(rows)),
            "attributes": _text(_objects(texts), which[np.searchsorted(self.read, source)]),
            "annotated_at": _text(self.annotated_at, owner),
            "guideline_version": _text(self.task_version, task),
            "source_ref": ref,
        }
        if len(self.regions):
            columns.update(region_columns(geometry, self.regions, len(self.types), source))
        return pd.DataFrame(columns)
