"""Label Studio JSON read by Arrow's JSON reader: the fast path for exports of boxes, polygons and scene choices.

Even typed, a million boxes decoded into Python objects cost some ten seconds to build, read and free
(bench/ingest.py). Here msgspec only splits the file into its tasks' raw bytes (a scan, no objects), the
tasks are handed to Arrow's JSON reader as lines with an explicit schema, and every field is read as an
Arrow column: nothing per result is ever a Python object.

Arrow's reader is strict where Python is lenient (a number where a name is expected, an id of 1.0, a
label list with a null), and a null cannot be told from a missing member. So this path reads only files it
reads to the same output as :mod:`labelops.formats.label_studio_typed` (and so the generic parser): a file
that does not fit the schema, or holds anything those readers treat specially (annotation versions,
attribute results, other result types, sizes from the item catalog, an id or reference the URL rules
must read), gives ``None`` and is read by them, with the same rows or the same error.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import msgspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

from labelops.formats.common import Parsed, check_one_file_per_item, emptied_frame, objects_frame
from labelops.formats.label_studio import (
    MEDIA_KEYS,
    REGION_ATTRIBUTE_TYPES,
    REGION_TYPES,
    VALUELESS_TYPES,
    RowLayout,
    _attributes_json,
    _item_id,
    region_columns,
    region_geometry,
)

_LABELS = pa.list_(pa.string())
_VALUE = pa.struct(
    [
        *[(key, pa.float64()) for key in ("x", "y", "width", "height", "rotation")],
        ("points", pa.list_(pa.list_(pa.float64()))),
        ("closed", pa.bool_()),
        ("rectanglelabels", _LABELS),
        ("polygonlabels", _LABELS),
        ("choices", _LABELS),
    ]
)
_RESULT = pa.struct(
    [
        *[(key, pa.string()) for key in ("id", "type", "from_name", "origin")],
        ("original_width", pa.float64()),
        ("original_height", pa.float64()),
        ("value", _VALUE),
    ]
)
_DATA = pa.struct([(key, pa.string()) for key in ("item_id", "guideline_version", "batch_id", *MEDIA_KEYS)])
# ``completed_by`` other than a name: a user id, or (newer exports) the user, known by email or else id.
_WHO: dict[type, pa.DataType] = {int: pa.int64(), dict: pa.struct([("email", pa.string()), ("id", pa.int64())])}
# A name used as it is: printable ASCII without surrounding spaces (``str.strip`` leaves it alone).
_PLAIN_NAME = r"^[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?$"
# The dtype pandas gives a column of Python strings (Arrow-backed text under pandas 3).
_TEXT = pd.Series(["text"]).dtype


class _Unsupported(Exception):
    """The file holds something only the other readers read to the same output."""


def parse(source_file: str, data: bytes, image_sizes: Mapping[str, tuple[float, float]]) -> Parsed | None:
    """The file read as a Label Studio export, or ``None`` when the other readers must read it."""
    del image_sizes  # a region without its image size is left to the other readers
    try:
        tasks = msgspec.json.decode(data.replace(b"\n", b" "), type=list[msgspec.Raw])  # newlines: whitespace only
    except (msgspec.DecodeError, RecursionError):
        return None
    if not tasks:
        return None
    try:
        count, schema, block = len(tasks), _schema(tasks), max(1 << 20, 2 * max(map(len, tasks)))
        lines = b"\n".join(tasks)  # one task per line, as Arrow's reader takes JSON
        del tasks  # and with them the file's copy
        if lines.count(b"\n{") + lines.startswith(b"{") != count:  # a task that is not an object (pyarrow 26
            return None  # crashes on a line of ``null``); the only newlines are the ones just put between tasks
        table = pajson.read_json(
            io.BytesIO(lines),
            read_options=pajson.ReadOptions(block_size=block),
            parse_options=pajson.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore"),
        )
        del lines
        if table.num_rows != count:
            return None
        return _read(source_file, table)
    except Exception:  # anything odd: the other readers give the same rows, or the error in document order
        return None


def _schema(tasks: list[msgspec.Raw]) -> pa.Schema:
    """The tasks' schema. ``completed_by`` (a name, a user id or the user object) and predictions (ids or
    objects, only counted) take the type the first of the first 100 tasks to hold one gives them; a file that
    mixes types fails Arrow's read and goes to the other readers."""
    who: pa.DataType = pa.string()
    predicted: pa.DataType = pa.int64()
    found_who = found_predicted = False
    for raw in tasks[:100]:
        task = msgspec.json.decode(raw)
        if not isinstance(task, dict) or (found_who and found_predicted):
            break
        annotations, predictions = task.get("annotations"), task.get("predictions")
        if not found_who and isinstance(annotations, list) and annotations and isinstance(annotations[0], dict):
            who, found_who = _WHO.get(type(annotations[0].get("completed_by")), who), True
        if not found_predicted and isinstance(predictions, list) and predictions:
            predicted, found_predicted = (pa.struct([]) if isinstance(predictions[0], dict) else predicted), True
    annotation = pa.struct(
        [
            ("id", pa.int64()),
            ("completed_by", who),
            ("was_cancelled", pa.bool_()),
            ("ground_truth", pa.bool_()),
            ("updated_at", pa.string()),
            ("created_at", pa.string()),
            ("result", pa.list_(_RESULT)),
        ]
    )
    return pa.schema(
        [
            ("id", pa.int64()),
            ("data", _DATA),
            ("annotations", pa.list_(annotation)),
            ("completions", pa.list_(pa.null())),  # only empty: annotations under the old name are not read here
            ("predictions", pa.list_(predicted)),
            ("meta", pa.struct([("honeypot", pa.bool_())])),
        ]
    )


def _require(condition: Any, what: str) -> None:
    if not condition:
        raise _Unsupported(what)


def _filled(array: pa.Array | pa.ChunkedArray, value: Any) -> np.ndarray:
    return pc.fill_null(array, value).to_numpy(zero_copy_only=False)


def _read(source_file: str, table: pa.Table) -> Parsed:
    parsed = Parsed(format="label_studio", objects=objects_frame([]))
    tasks = table.combine_chunks()
    task_ids, data, listed = (tasks[key].combine_chunks() for key in ("id", "data", "annotations"))
    _require(task_ids.null_count == 0 and data.null_count == 0, "a task without an id or data")
    _require(listed.is_valid()[0].as_py(), "a first task without annotations")  # what looks_like() takes
    parsed.skip("prediction", int(pc.sum(pc.list_value_length(tasks["predictions"])).as_py() or 0))
    item_ids, references = _item_ids(source_file, data, task_ids)
    check_one_file_per_item(
        source_file, references.to_numpy(zero_copy_only=False), item_ids.to_numpy(zero_copy_only=False)
    )
    honeypot = _filled(pc.struct_field(tasks["meta"], "honeypot"), False)
    batch = pc.if_else(pa.array(honeypot), pa.nulls(len(tasks), pa.string()), pc.struct_field(data, "batch_id"))
    annotations = pc.list_flatten(listed)
    _require(annotations.null_count == 0, "an annotation that is not an object")
    task_of = pc.list_parent_indices(listed).to_numpy()
    annotation_ids = pc.struct_field(annotations, "id")
    _require(annotation_ids.null_count == 0, "an annotation without an id")
    _require(pc.count_distinct(annotation_ids).as_py() == len(annotation_ids), "annotation versions")
    results = pc.struct_field(annotations, "result")
    lengths = _filled(pc.list_value_length(results), 0)
    cancelled = _filled(pc.struct_field(annotations, "was_cancelled"), False)
    empty = (lengths == 0) & ~cancelled
    if cancelled.any() or empty.any():
        parsed.emptied = _emptied(annotations, task_of, cancelled, empty, task_ids, item_ids)
    if cancelled.any():
        parsed.skip("cancelled annotation", int(np.maximum(lengths[cancelled], 1).sum()))
        keep = pa.array(~cancelled)
        annotations, results, task_of = annotations.filter(keep), results.filter(keep), task_of[~cancelled]
        lengths = lengths[~cancelled]
    if empty.any():  # submitted with nothing drawn or chosen: no judgment, but counted
        parsed.skip("empty annotation", int(empty.sum()))
    return _Results(parsed, annotations, results, task_of, task_ids, item_ids, data, batch).parsed()


def _emptied(
    annotations: pa.StructArray,
    task_of: np.ndarray,
    cancelled: np.ndarray,
    empty: np.ndarray,
    task_ids: pa.Array,
    item_ids: pa.Array,
) -> pd.DataFrame:
    """``label_studio._Annotations.empty`` of the cancelled and empty annotations, in order."""
    at = np.flatnonzero(cancelled | empty)
    chosen = annotations.take(pa.array(at, type=pa.int64()))
    task = pa.array(task_of[at], type=pa.int64())
    ref = pc.binary_join_element_wise(
        "task=",
        pc.cast(task_ids.take(task), pa.string()),
        "/annotation=",
        pc.cast(pc.struct_field(chosen, "id"), pa.string()),
        pa.array(np.where(cancelled[at], "/cancelled", "/empty"), type=pa.string()),
        "",
    )
    return emptied_frame(
        item_ids.take(task).to_pylist(),
        _annotators(pc.struct_field(chosen, "completed_by")).to_pylist(),
        ref.to_pylist(),
        _annotated_at(chosen).to_pylist(),
    )


def _annotated_at(annotations: pa.StructArray) -> pa.Array:
    """An annotation's ``updated_at``, else its ``created_at``."""
    updated = pc.struct_field(annotations, "updated_at")
    return pc.if_else(
        pc.fill_null(pc.not_equal(updated, ""), False), updated, pc.struct_field(annotations, "created_at")
    )


def _item_ids(source_file: str, data: pa.StructArray, task_ids: pa.Array) -> tuple[pa.Array, pa.Array]:
    """``label_studio._item_id`` of every task (a plain name or path in Arrow, anything else by that function),
    and ``label_studio._media_reference``."""
    given = pc.struct_field(data, "item_id")
    media = pc.coalesce(*[pc.if_else(pc.equal(m, ""), None, m) for m in (pc.struct_field(data, k) for k in MEDIA_KEYS)])
    named_item = pc.fill_null(pc.not_equal(pc.utf8_trim_whitespace(given), ""), False)
    references = pc.if_else(named_item, pa.nulls(len(data), pa.string()), media)
    named = pc.fill_null(pc.match_substring_regex(given, _PLAIN_NAME), False)
    plain = pc.and_(
        pc.fill_null(pc.match_substring_regex(media, _PLAIN_NAME), False),
        pc.invert(pc.fill_null(pc.match_substring_regex(media, r"[?#\\:]|\.\.|^//"), True)),
    )
    base = pc.struct_field(pc.extract_regex(pc.utf8_rtrim(media, "/"), r"(?P<base>[^/]*)$"), "base")
    cut = pc.struct_field(pc.extract_regex(base, r"^(?P<stem>.*[^.].*)\.[^.]*$"), "stem")
    stem = pc.coalesce(cut, base)
    empty = pc.fill_null(pc.equal(given, ""), True)
    from_media = pc.and_(pc.and_(empty, plain), pc.not_equal(stem, ""))
    ids = pc.if_else(named, given, pc.if_else(from_media, stem, None))
    other = np.flatnonzero(~_filled(pc.or_(named, from_media), False))
    if len(other) == 0:
        return ids, references
    rows = data.take(pa.array(other)).to_pylist()
    values = [
        _item_id(source_file, {"data": row}, t)
        for row, t in zip(rows, task_ids.take(pa.array(other)).to_pylist(), strict=True)
    ]
    found = ids.to_numpy(zero_copy_only=False).astype(object)
    found[other] = values
    return pa.array(found, type=pa.string()), references


class _Results:
    """The kept annotations' results as Arrow columns, and the frame of their rows (regions and scene choices)."""

    def __init__(
        self,
        parsed: Parsed,
        annotations: pa.StructArray,
        results: pa.ListArray,
        task_of: np.ndarray,
        task_ids: pa.Array,
        item_ids: pa.Array,
        data: pa.StructArray,
        batch: pa.Array,
    ) -> None:
        self._parsed = parsed
        self.annotations = annotations
        self.task_of = task_of
        self.task_ids = task_ids
        self.item_ids = item_ids
        self.versions = pc.struct_field(data, "guideline_version")
        self.batch = batch.take(pa.array(task_of, type=pa.int64()))
        self.results = pc.list_flatten(results)
        self.owner = pc.list_parent_indices(results).to_numpy()
        _require(self.results.null_count == 0, "a result that is not an object")
        self.types = pc.struct_field(self.results, "type")
        self.ids = pc.struct_field(self.results, "id")
        self.values = pc.struct_field(self.results, "value")

    def _of_type(self, *names: str) -> np.ndarray:
        return _filled(pc.is_in(self.types, pa.array(names)), False)

    def parsed(self) -> Parsed:
        region, choice = self._of_type(*REGION_TYPES), self._of_type("choices")
        self._no_attribute_results(region, self._of_type(*REGION_ATTRIBUTE_TYPES))
        read = region | choice
        _require(not (read & ~_filled(pc.is_valid(self.ids), False)).any(), "a region or choice without an id")
        valued = _filled(pc.is_valid(self.values), False)
        _require(not (~valued & ~self._of_type(*VALUELESS_TYPES)).any(), "a result without a value object")
        self.regions, self.choices = np.flatnonzero(region), np.flatnonzero(choice)
        choices = pc.struct_field(self.values, "choices").take(pa.array(self.choices, type=pa.int64()))
        choices = pc.fill_null(choices, pa.scalar([], _LABELS))
        self.choice_labels = pc.list_flatten(choices)
        _require(self.choice_labels.null_count == 0, "a chosen label that is not a name")
        self.choice_counts = pc.list_value_length(choices).to_numpy()
        self.geometry = self._geometry()
        skipped: dict[str, int] = {}
        if (empty := int((self.choice_counts == 0).sum())) > 0:  # nothing chosen: no row
            skipped["empty choices"] = empty
        if not read.all():  # relations, free text, result types not read: counted by reason, in document order
            for t in self.types.filter(pa.array(~read)).to_pylist():
                reason = f"{t} result" if t in VALUELESS_TYPES else f"unsupported result type {t}"
                skipped[reason] = skipped.get(reason, 0) + 1
        for reason, count in skipped.items():
            self._parsed.skip(reason, count)
        self._parsed.objects = objects_frame(self.frame())
        return self._parsed

    def _no_attribute_results(self, region: np.ndarray, attribute_type: np.ndarray) -> None:
        """A choices, text, … result with the id of a region of its annotation is that region's attribute: the
        typed reader folds those in."""
        if not region.any() or not attribute_type.any():
            return
        codes = _filled(pc.dictionary_encode(self.ids).indices, -1).astype(np.int64)
        keys = self.owner.astype(np.int64) * (int(codes.max()) + 2) + codes
        named = codes >= 0
        _require(not np.isin(keys[attribute_type & named], keys[region & named]).any(), "attribute results")

    def _geometry(self) -> dict[str, Any]:
        at = pa.array(self.regions, type=pa.int64())
        results, values = self.results.take(at), self.values.take(at)
        box = self._of_type("rectanglelabels")[self.regions]
        labels = pc.if_else(
            pa.array(box), pc.struct_field(values, "rectanglelabels"), pc.struct_field(values, "polygonlabels")
        )
        _require(pc.all(pc.equal(pc.list_value_length(labels), 1)).as_py() is not False, "a region without one label")
        _require(labels.null_count == 0, "a region without labels")
        names = pc.list_flatten(labels)
        _require(names.null_count == 0, "a region label that is not a name")
        sizes = [pc.struct_field(results, key) for key in ("original_width", "original_height")]
        _require(all(s.null_count == 0 for s in sizes), "a region without its image size")
        width, height = (s.to_numpy() for s in sizes)
        # Arrow reads an integer beyond a float's range as infinity, which the other readers refuse (and a
        # written 1e400 as the infinity they read): such a file is theirs
        _require(np.isfinite(width).all() and np.isfinite(height).all(), "a number beyond a float")
        scale = np.stack([width / 100.0, height / 100.0, width / 100.0, height / 100.0], axis=1)
        xywh = np.full((len(self.regions), 4), np.nan)
        boxes = values.filter(pa.array(box))
        numbers = [pc.struct_field(boxes, key) for key in ("x", "y", "width", "height")]
        _require(all(n.null_count == 0 for n in numbers), "a box without its place")
        place, rotation = (
            np.stack([n.to_numpy() for n in numbers], axis=1),
            _filled(pc.struct_field(boxes, "rotation"), 0.0),
        )
        _require(np.isfinite(place).all() and np.isfinite(rotation).all(), "a number beyond a float")
        with np.errstate(over="ignore", invalid="ignore"):  # inf and NaN, silently, as Python's floats give them
            xywh[box] = place * scale[box]
        points: list[Any] = [None] * len(self.regions)
        if not box.all():
            polygons = values.filter(pa.array(~box))
            _require(pc.any(pc.invert(pc.struct_field(polygons, "closed"))).as_py() is not True, "an open polygon")
            self._polygons(polygons, np.flatnonzero(~box), scale, xywh, points)
        return region_geometry(names, xywh, points, width, height, self.regions[box], rotation)

    @staticmethod
    def _polygons(
        values: pa.StructArray, at: np.ndarray, scale: np.ndarray, xywh: np.ndarray, points: list[Any]
    ) -> None:
        """``label_studio._polygon`` of every polygon: its points in pixels and the box around them."""
        nested = pc.struct_field(values, "points")
        _require(nested.null_count == 0, "a polygon without points")
        counts = pc.list_value_length(nested).to_numpy()
        _require((counts > 0).all(), "a polygon without points")
        pairs = pc.list_flatten(nested)
        _require(pairs.null_count == 0 and pc.all(pc.equal(pc.list_value_length(pairs), 2)).as_py(), "bad points")
        flat = pc.list_flatten(pairs)
        _require(flat.null_count == 0, "a point that is not a number")
        _require(np.isfinite(flat.to_numpy()).all(), "a number beyond a float")  # the others read it as written
        owner = np.repeat(np.arange(len(counts)), counts)
        xy = flat.to_numpy().reshape(-1, 2) * np.stack([scale[at, 0][owner], scale[at, 1][owner]], axis=1)
        starts = np.cumsum(counts) - counts
        x0, y0 = np.minimum.reduceat(xy[:, 0], starts), np.minimum.reduceat(xy[:, 1], starts)
        xywh[at] = np.stack(
            [x0, y0, np.maximum.reduceat(xy[:, 0], starts) - x0, np.maximum.reduceat(xy[:, 1], starts) - y0], axis=1
        )
        offsets = pa.array(np.append(2 * starts, 2 * len(xy)).astype(np.int32))
        for m, listed in zip(
            at.tolist(), pa.ListArray.from_arrays(offsets, pa.array(xy.ravel())).to_pylist(), strict=True
        ):
            points[m] = listed

    def _attributes(self, source: np.ndarray) -> tuple[list[str], np.ndarray]:
        """The distinct attribute texts, and which one each row has."""
        at = pa.array(source, type=pa.int64())
        results = self.results.take(at)
        owner = self.owner[source]
        truth = _filled(pc.struct_field(self.annotations, "ground_truth"), False)[owner]
        rotation = self.geometry["rotation"]
        turned = np.full(len(source), np.nan)
        if rotation:
            turned_at = np.fromiter(rotation, dtype=np.int64, count=len(rotation))
            where = np.searchsorted(source, turned_at)  # a region is one row
            turned[where] = np.fromiter(rotation.values(), dtype=float, count=len(rotation))
        keys = pd.DataFrame(
            {
                "from_name": pc.struct_field(results, "from_name").to_pandas(types_mapper=pd.ArrowDtype),
                "origin": pc.struct_field(results, "origin").to_pandas(types_mapper=pd.ArrowDtype),
                "truth": truth,
                "batch": self.batch.take(pa.array(owner, type=pa.int64())).to_pandas(types_mapper=pd.ArrowDtype),
                "rotation": turned,
            }
        )
        if all(pc.count_distinct(pa.array(keys[c]), mode="all").as_py() <= 1 for c in keys.columns):
            which = np.zeros(len(keys), dtype=np.int64)  # one tool, origin and batch, nothing rotated: one text
        else:
            which = keys.groupby(list(keys.columns), dropna=False, sort=False).ngroup().to_numpy()
        first = np.unique(which, return_index=True)[1]
        distinct = keys.iloc[first]
        columns = [[None if pd.isna(v) else v for v in distinct[c].tolist()] for c in keys.columns]
        texts = [_attributes_json(*key) for key in zip(*columns, strict=True)]
        return texts, which

    def frame(self) -> pd.DataFrame:
        """The typed reader's frame: the same columns and values, text columns built in Arrow."""
        layout = RowLayout.of(len(self.types), self.regions, self.choices, self.choice_counts)
        if not layout.rows:
            return pd.DataFrame([])
        rows, source, choice_rows, region_rows = layout.rows, layout.source, layout.choice_rows, layout.region_rows
        owner = self.owner[source]
        task = pa.array(self.task_of[owner], type=pa.int64())
        geometry = self.geometry
        kind = np.zeros(rows, dtype=np.int64)
        kind[region_rows] = np.where(self._of_type("rectanglelabels")[self.regions], 1, 2)
        label_of = np.zeros(rows, dtype=np.int64)
        label_of[choice_rows] = np.arange(len(choice_rows))
        label_of[region_rows] = len(choice_rows) + np.arange(len(region_rows))
        label = pa.concat_arrays([self.choice_labels, geometry["labels"]]).take(pa.array(label_of))
        owner_at = pa.array(owner, type=pa.int64())
        ref_parts = [
            "task=",
            pc.cast(self.task_ids, pa.string()).take(task),
            "/annotation=",
            pc.cast(pc.struct_field(self.annotations, "id"), pa.string()).take(owner_at),
            "/result=",
            self.ids.take(pa.array(source, type=pa.int64())),
        ]
        if len(choice_rows):
            choice = np.zeros(rows, dtype=bool)
            choice[choice_rows] = True
            ref_parts.append(pc.if_else(pa.array(choice), pc.binary_join_element_wise("/choice=", label, ""), ""))
        ref = pc.binary_join_element_wise(*ref_parts, "")
        who = _annotators(pc.struct_field(self.annotations, "completed_by"))
        annotated_at = _annotated_at(self.annotations)
        texts, which = self._attributes(source)
        kinds = pa.array(["classification", REGION_TYPES["rectanglelabels"], REGION_TYPES["polygonlabels"]])
        columns: dict[str, Any] = {
            "item_id": _text(self.item_ids.take(task)),
            "annotator_id": _text(who.take(owner_at)),
            "kind": _text(kinds.take(pa.array(kind))),
            "label": _text(label),
            "attributes": _text(pa.array(texts, type=pa.string()).take(pa.array(which))),
            "annotated_at": _text(annotated_at.take(owner_at)),
            "guideline_version": _text(self.versions.take(task)),
            "source_ref": _text(ref),
        }
        if len(self.regions):
            columns.update(region_columns(geometry, self.regions, len(self.types), source))
        return pd.DataFrame(columns)


def _annotators(who: pa.Array) -> pa.Array:
    """``label_studio._annotator`` of every annotation's ``completed_by``."""
    if pa.types.is_struct(who.type):
        email = pc.struct_field(who, "email")
        who = pc.if_else(
            pc.fill_null(pc.not_equal(email, ""), False), email, pc.cast(pc.struct_field(who, "id"), pa.string())
        )
    return pc.fill_null(pc.cast(who, pa.string()), "unknown")


def _text(values: pa.Array) -> Any:
    """A frame column as ``pd.DataFrame`` makes it of the same Python strings: text, or ``None`` throughout."""
    if values.null_count == len(values):
        return np.full(len(values), None, dtype=object)
    return pd.array(values, dtype=_TEXT)
