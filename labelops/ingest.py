"""Normalization of a day's landing files into the canonical tables.

Each function reads every file it is given and returns the good rows together
with a per-file ledger. A bad file fails alone: it appears in the ledger with the
error that names it, and the other files still load.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date
from functools import cache, cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from labelops import landing
from labelops.columns import isin, text
from labelops.errors import ExportError
from labelops.formats import is_ignored, parse_file, parse_folder, table, yolo
from labelops.formats.common import Parsed
from labelops.schema import (
    ANNOTATION_SCHEMA,
    GOLD_SCHEMA,
    ITEM_CORE_SCHEMA,
    PREDICTION_CORE_SCHEMA,
    annotation_identity,
    answer_batches,
    arrow_type_of,
    conform,
    conform_table,
    normalize_item_ids,
    tool_annotations,
)
from labelops.storage import FileInfo, StorageUnavailableError, Store, parquet_file, readable
from labelops.warehouse import EMPTIED, JUDGMENTS, PARSED, outbox

DEFAULT_MAX_FILE_BYTES = 512 * 1024 * 1024
DEFAULT_MAX_EXPORT_BYTES = 1024 * 1024 * 1024
LEDGER_COLUMNS = ["source_file", "format", "status", "rows", "skipped", "duplicates", "error"]
STILL_ARRIVING = "still arriving"


@dataclass(frozen=True)
class ReadPolicy:
    """What the readers refuse or put off before reading a byte.

    Limits are checked against the listing, so an oversized export costs nothing to
    refuse: one file may not exceed ``max_file_bytes``, and an export (a file, or a YOLO
    folder's files together) may not exceed ``max_export_bytes``. A file modified at or
    after ``settled_before`` (seconds since the epoch) may still be being written: it is
    deferred with the ledger status "still arriving" and read by a later run.
    """

    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    max_export_bytes: int = DEFAULT_MAX_EXPORT_BYTES
    settled_before: float | None = None

    @classmethod
    def settling(cls, seconds: float, now: float | None = None, **limits: int) -> ReadPolicy:
        """A policy that defers files younger than ``seconds`` (0 reads everything)."""
        cutoff = (time.time() if now is None else now) - seconds if seconds > 0 else None
        return cls(settled_before=cutoff, **limits)

    def arriving(self, files: list[FileInfo]) -> bool:
        return self.settled_before is not None and any(f.modified >= self.settled_before for f in files)

    def check_sizes(self, name: str, files: Mapping[str, FileInfo]) -> None:
        for key, info in files.items():
            if info.size > self.max_file_bytes:
                raise ExportError(key, f"file is {info.size} bytes, above the {self.max_file_bytes}-byte limit")
        total = sum(info.size for info in files.values())
        if total > self.max_export_bytes:
            raise ExportError(
                name,
                f"export is {total} bytes in {len(files)} file(s), above the "
                f"{self.max_export_bytes}-byte limit for one export",
            )


@dataclass
class Ingested:
    """A canonical table and the ledger of the files it came from."""

    table: pd.DataFrame
    ledger: pd.DataFrame
    # exports only: the tool annotations delivered without a judgment (``canonical_emptied``), which withdraw
    # their earlier versions in the label state
    emptied: pd.DataFrame = field(default_factory=lambda: no_emptied())


def _ledger(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=LEDGER_COLUMNS)
    return frame.astype({"rows": "int64", "duplicates": "int64"})


def _ok_row(name: str, fmt: str, rows: int, skipped: Mapping[str, int] | None = None) -> dict:
    return {
        "source_file": name,
        "format": fmt,
        "status": "ok",
        "rows": rows,
        "skipped": json.dumps(dict(skipped or {}), sort_keys=True),
        "duplicates": 0,
        "error": None,
    }


def _error_row(name: str, error: ExportError) -> dict:
    return {
        "source_file": name,
        "format": None,
        "status": "error",
        "rows": 0,
        "skipped": "{}",
        "duplicates": 0,
        "error": str(error),
    }


def _deferred_row(name: str) -> dict:
    return {
        "source_file": name,
        "format": None,
        "status": STILL_ARRIVING,
        "rows": 0,
        "skipped": "{}",
        "duplicates": 0,
        "error": None,
    }


def _as_export_error(name: str, error: Exception) -> ExportError:
    """Whatever a parser raised fails its file alone; an unreachable store still fails the run."""
    if isinstance(error, StorageUnavailableError):
        raise error
    if isinstance(error, ExportError):
        return error
    return ExportError(name, f"malformed values ({type(error).__name__}: {error})")


def annotation_ids(source_file: pd.Series, source_ref: pd.Series) -> pd.api.extensions.ExtensionArray:
    """Stable ids: a 64-bit hash of the export's name within its day and the record's ref.

    The day folder is left out, so a vendor re-delivering the same export on a
    later day produces the same ids; a ref repeated within a file gets an
    occurrence number so that ids stay unique.

    A table holds the rows of a few files: their names are cut and hashed once each (a categorical column
    hashes as its values do), and the refs are hashed as they are, without a copy into Python objects and
    without first collecting their distinct values (``categorize`` changes the speed, not the hashes).
    """
    if source_file.isna().any() or source_ref.isna().any():
        return _annotation_ids_by_row(source_file, source_ref)
    codes, files = pd.factorize(source_file)  # by Arrow: a Python string per row cost 0.1 s a million rows
    scopes = pd.Series(files, dtype=object).str.replace(DAY_FOLDER, "", regex=True)
    scope_codes, names = pd.factorize(scopes.to_numpy(dtype=object))
    keyed = pd.DataFrame(
        {"f": pd.Categorical.from_codes(scope_codes[codes], categories=names), "r": source_ref.array},
        index=source_ref.index,
    )
    hashed = pd.util.hash_pandas_object(keyed, index=False, categorize=False).to_numpy()  # same hashes, no factorizing
    if pd.Series(hashed).duplicated().any():  # a ref repeated within a file: numbered by the rows' own path
        return _annotation_ids_by_row(source_file, source_ref)
    return hex_strings(hashed)


DAY_FOLDER = r"^exports/\d{4}-\d{2}-\d{2}/"


def _annotation_ids_by_row(source_file: pd.Series, source_ref: pd.Series) -> pd.api.extensions.ExtensionArray:
    scope = source_file.str.replace(DAY_FOLDER, "", regex=True)
    keyed = pd.DataFrame({"f": scope.to_numpy(), "r": source_ref.to_numpy()})
    hashed = pd.util.hash_pandas_object(keyed, index=False).to_numpy()
    if pd.Series(hashed).duplicated().any():
        occurrence = keyed.groupby(["f", "r"], sort=False).cumcount()
        keyed["r"] = keyed["r"].where(occurrence == 0, keyed["r"] + "#" + occurrence.astype(str))
        hashed = pd.util.hash_pandas_object(keyed, index=False).to_numpy()
    return hex_strings(hashed)


# Each lowercase hex digit's value, by its character code.
_NIBBLES = np.zeros(256, dtype=np.uint8)
_NIBBLES[np.frombuffer(b"0123456789abcdef", dtype=np.uint8)] = np.arange(16, dtype=np.uint8)
# Each byte's two lowercase hex digits, by byte value.
_HEX_PAIRS = np.frombuffer("".join(f"{b:02x}" for b in range(256)).encode(), dtype=np.uint8).reshape(256, 2)


def hex_strings(values: np.ndarray) -> pd.api.extensions.ExtensionArray:
    """uint64 values as 16-character lowercase hex, pandas text backed by the Arrow buffer the digits are written
    into: no Python loop and no Python string per value (1 s per million ids, made and then read back by Arrow)."""
    octets = np.ascontiguousarray(values.astype(np.uint64), dtype=">u8").view(np.uint8)
    digits = np.ascontiguousarray(_HEX_PAIRS[octets])
    offsets = np.arange(0, 16 * len(values) + 1, 16, dtype=np.int64)
    return text(
        pa.Array.from_buffers(pa.large_string(), len(values), [None, pa.py_buffer(offsets), pa.py_buffer(digits)])
    )


def canonical_annotations(parsed: Parsed, source_file: str, export_date: date) -> pd.DataFrame:
    """Parser output plus ids and provenance, cast to the canonical schema."""
    frame = parsed.objects.copy()
    frame["source_format"] = parsed.format
    frame["source_file"] = source_file
    frame["export_date"] = export_date
    frame["annotated_at"] = _timestamps(source_file, frame["annotated_at"], frame["source_ref"])
    label = frame["label"].astype(object)
    frame["label"] = label.where(label.notna() & (label.astype(str).str.strip() != ""), None)  # "" is no label
    frame["annotation_id"] = annotation_ids(frame["source_file"], frame["source_ref"])
    return conform(frame, ANNOTATION_SCHEMA)


def canonical_emptied(parsed: Parsed, source_file: str, export_date: date) -> pd.DataFrame:
    """A file's ``Parsed.emptied`` with its provenance, its times as the canonical table's. A time that is no
    timestamp is missing (such a version loses to a dated one of the day), not an error: these annotations were
    only counted as skipped before, and a file that read then still reads."""
    frame = parsed.emptied.copy()
    frame["annotated_at"] = pd.to_datetime(frame["annotated_at"], utc=True, errors="coerce", format="ISO8601")
    return frame.assign(source_format=parsed.format, source_file=source_file, export_date=export_date.isoformat())


def no_emptied() -> pd.DataFrame:
    """``canonical_emptied`` of no file."""
    return canonical_emptied(Parsed(format="", objects=pd.DataFrame()), "", date.min).iloc[:0]


def record_emptied(warehouse: Store, day: str, emptied: pd.DataFrame) -> None:
    """Keep the day's emptied annotations for ``label_votes``, which reads them after validation."""
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(emptied, preserve_index=False), buffer, compression="zstd")
    warehouse.write_bytes(f"{EMPTIED}/{day}.parquet", buffer.getvalue())


def read_emptied(warehouse: Store, day: str) -> pd.DataFrame:
    """The day's emptied annotations as :func:`record_emptied` kept them (none when the day wrote none)."""
    key = f"{EMPTIED}/{day}.parquet"
    if not warehouse.exists(key):
        return no_emptied()
    return pq.read_table(pa.BufferReader(warehouse.read_bytes(key))).to_pandas()


def _timestamps(source_file: str, values: pd.Series, refs: pd.Series) -> pd.Series:
    parsed = pd.to_datetime(values, utc=True, errors="coerce", format="ISO8601")
    bad = parsed.isna() & values.notna()
    if bad.any():
        index = bad.to_numpy().nonzero()[0][0]
        raise ExportError(source_file, f"{refs.iloc[index]}: {values.iloc[index]!r} is not an ISO 8601 timestamp")
    return parsed


def content_ids(frame: pd.DataFrame) -> pd.api.extensions.ExtensionArray:
    """Identity by content (:func:`content_hashes`) as hex."""
    return hex_strings(content_hashes(frame))


def content_hashes(frame: pd.DataFrame) -> np.ndarray:
    """Identity by content: a 64-bit hash of (annotator, item, kind, label, geometry), and for an answer to
    one of our relabel tasks, of its batch too.

    Coordinates are compared to a hundredth of a pixel, so the same judgment converted
    twice from percentages (Label Studio) or re-exported by a tool hashes the same, while
    a box moved by a pixel is a new judgment. Attributes, file names and refs are not part
    of the identity: the same export under two names is the same set of judgments. The
    relabel batch is: a labeler who answers a later request as they answered an earlier one
    (or a honeypot of the same item) gives a new answer, which must supersede, not a copy
    (the item would wait for its answer until the request lapsed). The hashes of rows that
    answer no batch are those of the judgment alone, as they always were.
    """
    if frame.empty:
        return np.empty(0, dtype=np.uint64)
    geometry = frame[["x", "y", "w", "h"]].astype(float).round(2) + 0.0  # + 0.0 folds -0.0 into 0.0
    points = pa.array(frame["points"].to_numpy(dtype=object), type=pa.list_(pa.float64()))
    rounded = pc.add(pc.round(points.flatten(), 2), 0.0)
    as_text = pa.ListArray.from_arrays(points.offsets, pc.cast(rounded, pa.string()), mask=points.is_null())
    keyed = pd.DataFrame(
        {
            "annotator": _hashable(frame["annotator_id"]),
            "item": _hashable(frame["item_id"]),
            "kind": _hashable(frame["kind"]),
            # a missing label hashes as "" (which ingest never keeps: "" is no label); the ids stored so far were
            # made by pandas' fillna("\x00"), which pandas 3 stores as "" (NUL ends the text)
            "label": _hashable(frame["label"], missing=""),
            **{c: geometry[c].to_numpy() for c in geometry},
            "points": _hashable(pd.Series(pc.fill_null(pc.binary_join(as_text, ","), ""))),
        }
    )
    hashes = pd.util.hash_pandas_object(keyed, index=False, categorize=False).to_numpy()
    if "attributes" not in frame:
        return hashes
    batch = answer_batches(frame["attributes"])
    answers = np.flatnonzero(batch.notna().to_numpy())
    if len(answers):
        with_batch = pd.DataFrame({"judgment": hashes[answers], "batch": batch.iloc[answers].to_numpy(dtype=object)})
        hashes = hashes.copy()  # pandas' result is read-only
        hashes[answers] = pd.util.hash_pandas_object(with_batch, index=False).to_numpy()
    return hashes


def _hashable(column: pd.Series, missing: str | None = None) -> pd.Categorical:
    """A text column as a categorical, which ``hash_pandas_object`` hashes as it hashes the values themselves
    (each distinct text once; a missing value, code -1, as a missing object), encoded by Arrow: pandas'
    factorize and the copy into Python objects cost 1–2 s per million texts. ``missing``: the text a missing
    value stands for."""
    values = pa.Array.from_pandas(column)
    if isinstance(values, pa.ChunkedArray):  # a text column read from Parquet: one dictionary for all chunks
        values = values.combine_chunks()
    if missing is not None:
        values = pc.fill_null(values, missing)
    encoded = values.dictionary_encode()
    categories = pd.Index(encoded.dictionary.to_numpy(zero_copy_only=False), dtype=object)
    return pd.Categorical.from_codes(pc.fill_null(encoded.indices, -1).to_numpy(), categories=categories)


def mark_duplicates(frame: pd.DataFrame, known: JudgmentLedger | None = None) -> pd.DataFrame:
    """``content_id`` for every row, and ``duplicate_of`` for every judgment delivered before.

    ``known`` holds earlier days' first deliveries; within the day, the first row in file order is the
    delivery and later copies point at it. A copy is kept in the table (and quarantined by validation with
    rule ``duplicate``) so every input row stays accounted for, but it is never counted twice. Copies are
    found on the 64-bit hashes, not on their hex text.
    """
    hashes = content_hashes(frame)
    codes, distinct = pd.factorize(hashes)  # codes in order of first appearance
    first_rows = np.flatnonzero(~pd.Series(hashes).duplicated().to_numpy())
    annotation_ids = frame["annotation_id"].to_numpy(dtype=object)
    delivered = annotation_ids[first_rows]  # the day's first delivery of each distinct content
    out = frame.copy(deep=False)  # two columns added, none changed: the others are shared, not copied
    out["content_id"] = hex_strings(hashes)
    origin = np.where(np.arange(len(frame)) == first_rows[codes], None, delivered[codes]) if len(frame) else []
    earlier = known.lookup(distinct) if known is not None and len(distinct) else None
    if earlier is not None and len(earlier):
        earlier = earlier.drop_duplicates("content_id")
        position = pd.Index(distinct).get_indexer(hex_values(earlier["content_id"]))
        before = np.full(len(distinct), None, dtype=object)
        before[position] = earlier["annotation_id"].to_numpy(dtype=object)
        origin = np.where(pd.isna(before[codes]), origin, before[codes])
    out["duplicate_of"] = pd.Series(origin, index=out.index, dtype=object)
    return out


def hex_values(texts: pd.Series) -> np.ndarray:
    """:func:`hex_strings` undone: 16-character hex texts as uint64, without a Python loop (nor a Python string
    per value: the digits are read from the Arrow buffer that holds them, 16 bytes apart)."""
    nibbles = _NIBBLES[_hex_digits(texts)]
    octets = np.ascontiguousarray((nibbles[:, 0::2] << 4) | nibbles[:, 1::2])
    return octets.view(">u8").ravel().astype(np.uint64)


def _hex_digits(texts: pd.Series) -> np.ndarray:
    """The texts' bytes as rows of 16, from their Arrow buffer when it holds them back to back."""
    column = pa.array(texts.array, from_pandas=True)
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if (pa.types.is_string(column.type) or pa.types.is_large_string(column.type)) and not column.null_count:
        width = np.int64 if pa.types.is_large_string(column.type) else np.int32
        offsets = np.frombuffer(column.buffers()[1], dtype=width)[column.offset : column.offset + len(column) + 1]
        if len(column) and (np.diff(offsets) == 16).all():
            data = np.frombuffer(column.buffers()[2], dtype=np.uint8)
            return data[offsets[0] : offsets[-1]].reshape(-1, 16)
    return np.frombuffer("".join(texts.to_numpy(dtype=object)).encode(), dtype=np.uint8).reshape(-1, 16)


def record_judgments(warehouse: Store, day: str, table: pd.DataFrame) -> None:
    """Keep the day's first deliveries (copies excluded), which later days compare against: their content ids,
    also as the 64-bit values (``content_key``) that later days probe, and annotation ids."""
    firsts = table.loc[table["duplicate_of"].isna(), ["content_id", "annotation_id"]]
    firsts.insert(1, "content_key", hex_values(firsts["content_id"]) if len(firsts) else np.array([], np.uint64))
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(firsts, preserve_index=False), buffer, compression="zstd")
    warehouse.write_bytes(f"{JUDGMENTS}/{day}.parquet", buffer.getvalue())


@dataclass(frozen=True)
class JudgmentLedger:
    """The first deliveries recorded (:func:`record_judgments`) on the days before ``day``.

    Looked up by the day's content ids, never read whole: the ledger grows with every day, a day's
    exports do not, so only the matching rows leave Arrow (the filter runs over the ids in Arrow).
    """

    store: Store
    day: str

    def lookup(self, contents: np.ndarray) -> pd.DataFrame:
        """Earlier first deliveries (content_id, annotation_id) of these distinct contents (their 64-bit
        values, as :func:`hex_strings` writes them for ``content_id``), oldest day first."""
        keys = sorted(
            k for k in self.store.list(JUDGMENTS) if k.endswith(".parquet") and k.rsplit("/", 1)[-1][:-8] < self.day
        )
        # hashed once, probed by every day; pandas' unique, not numpy's: numpy 2.4's plain np.unique took 0.6-0.9 s
        # for a day's million distinct keys (its sorting variants and pandas 0.02-0.05 s), and order is not needed
        wanted = pd.Index(pd.unique(np.asarray(contents, dtype=np.uint64)))

        @cache
        def wanted_text() -> pa.Array:
            """The contents as hex ids, for days recorded before the keys were: made only if one is probed."""
            return pa.array(hex_strings(wanted.to_numpy()))

        def matches(key: str) -> pa.Table | None:
            # the 64-bit keys first, compared as integers; a day's copies of earlier judgments are few, so most
            # days' other columns are never read (on local disk, only the key column's bytes leave the file)
            file = parquet_file(self.store, key)
            if "content_key" in file.schema_arrow.names:
                day_keys = file.read(columns=["content_key"])["content_key"].to_numpy()
                hit = pa.array(wanted.get_indexer(day_keys) >= 0)
            else:  # a day recorded before the keys were: its hex ids
                ids = file.read(columns=["content_id"])["content_id"]
                hit = pc.is_in(ids, value_set=wanted_text().cast(ids.type))
            return file.read(columns=["content_id", "annotation_id"]).filter(hit) if pc.any(hit).as_py() else None

        # the days' files read and decoded two at a time (Arrow and the disk let go of the interpreter lock); the
        # index's hash table is built before, not by two threads at once
        wanted.get_indexer(wanted[:1])
        with ThreadPoolExecutor(max_workers=2) as pool:
            found = [table for table in pool.map(matches, keys) if table is not None]
        if not found:
            return pd.DataFrame({"content_id": pd.Series(dtype=object), "annotation_id": pd.Series(dtype=object)})
        return pa.concat_tables(found).to_pandas()


def known_judgments(warehouse: Store, day: str) -> JudgmentLedger:
    """First deliveries of every day before ``day``, as recorded by :func:`record_judgments`."""
    return JudgmentLedger(warehouse, day)


class ImageSizes(Mapping[str, tuple[float, float]]):
    """A day's catalogued items' (width, height) by item id, for the exports that give boxes without their image's
    size (YOLO, some Label Studio regions). Built at the first lookup: most exports carry their sizes, and a
    million-annotation day's 200,000 items cost 0.23 s as a dict. The catalog's last row of an item wins."""

    def __init__(self, items: pd.DataFrame) -> None:
        self._items = items

    @cached_property
    def _sizes(self) -> dict[str, tuple[float, float]]:
        items = self._items
        return dict(zip(items["item_id"], zip(items["width"], items["height"], strict=True), strict=True))

    def __getitem__(self, item_id: str) -> tuple[float, float]:
        return self._sizes[item_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._sizes)

    def __len__(self) -> int:
        return len(self._sizes)


def read_exports(
    store: Store,
    day: str,
    image_sizes: Mapping[str, tuple[float, float]] | None = None,
    *,
    policy: ReadPolicy = ReadPolicy(),
    known: JudgmentLedger | None = None,
    protect: Callable[[Ingested], Ingested] | None = None,
) -> Ingested:
    """All annotation exports of one day, normalized, with judgments delivered before marked.

    ``known`` is :func:`known_judgments` for the day; without it only copies within the
    day are found. ``protect`` (the deployment's annotator id policy) is applied before
    judgments get their content ids, so no id is ever derived from a raw annotator id.
    """
    listing = store.stat(f"exports/{day}")
    keys = [k for k in landing.day_keys(list(listing), "exports", day) if not is_ignored(k)]
    units = landing.export_units(keys, day, folder_markers=yolo.CLASS_LISTS)
    export_date = date.fromisoformat(day)
    frames: list[pd.DataFrame] = []
    emptied: list[pd.DataFrame] = []
    rows: list[dict] = []
    for unit in units:
        files = {k: listing[k] for k in unit.keys}
        if policy.arriving(list(files.values())):
            rows.append(_deferred_row(unit.name))
            continue
        try:
            policy.check_sizes(unit.name, files)
            if unit.is_folder:
                parsed = parse_folder(
                    unit.name, {k[len(unit.name) + 1 :]: store.read_bytes(k) for k in unit.keys}, image_sizes
                )
            else:
                parsed = parse_file(unit.name, store.read_bytes(unit.name), image_sizes)
            frame = canonical_annotations(parsed, unit.name, export_date)
            empty = canonical_emptied(parsed, unit.name, export_date)
        except Exception as error:
            rows.append(_error_row(unit.name, _as_export_error(unit.name, error)))
            continue
        frames.append(frame)
        emptied.append(empty)
        rows.append(_ok_row(unit.name, parsed.format, len(frame), parsed.skipped))
    table_ = pd.concat(frames, ignore_index=True) if frames else conform(pd.DataFrame(), ANNOTATION_SCHEMA)
    nothing = pd.concat([e for e in emptied if len(e)] or [no_emptied()], ignore_index=True)
    table_, rows, nothing = _latest_versions(table_, rows, nothing)
    exports = Ingested(table=table_, ledger=_ledger(rows), emptied=nothing)
    if protect is not None:
        exports = protect(exports)
    table_ = mark_duplicates(exports.table, known)
    copies = table_.loc[table_["duplicate_of"].notna(), "source_file"].value_counts()
    ledger = exports.ledger.assign(duplicates=exports.ledger["source_file"].map(copies).fillna(0).astype("int64"))
    return Ingested(table=table_, ledger=ledger, emptied=exports.emptied)


def _latest_versions(
    table: pd.DataFrame, rows: list[dict], emptied: pd.DataFrame
) -> tuple[pd.DataFrame, list[dict], pd.DataFrame]:
    """Of a tool annotation delivered in several files of the day (the project exported at 10:00 and again at
    18:00, edited in between), only the latest version (``annotated_at``: a Label Studio annotation's
    ``updated_at``, a CVAT task's ``updated``) is read; the older ones are counted as skipped in their files'
    ledger rows, as within one export. Otherwise both versions would vote: an edit across days replaces its
    earlier version in the label state, but two versions of one day are both new. The same version in two files
    stays a copy. An annotation is :func:`annotation_identity` (as ``state.annotation_keys`` keys it; a CVAT
    task's image): two instances number their annotations alike. Only a tool with two files or more that day is
    looked at: the keys cost seconds per million rows, and a file holds one version of each annotation already.
    An annotation a file delivers ``emptied`` is a version too: the later of it and a version with judgments is
    read, except when that version answers a relabel request. An answer stays final when a later day's export
    gives it empty (``state``), so an emptied version of the same day does not hide it either."""
    read = [r for r in rows if r["status"] == "ok" and r["format"] in ("label_studio", "cvat")]
    files = Counter(r["format"] for r in read)
    tool_files = sorted(r["source_file"] for r in read if files[r["format"]] > 1)
    if not tool_files:
        return table, rows, emptied
    ids = tool_annotations(table["source_ref"].where(isin(table["source_file"], pd.Series(tool_files))))
    keyed = np.flatnonzero(ids.notna().to_numpy())
    blank = tool_annotations(emptied["source_ref"].where(isin(emptied["source_file"], pd.Series(tool_files))))
    blank_keyed = np.flatnonzero(blank.notna().to_numpy())
    part = _versions(table, ids, keyed)
    if len(blank_keyed):
        answers = part.loc[answer_batches(table["attributes"].iloc[keyed]).notna().to_numpy(), "key"]
        blank_part = _versions(emptied, blank, blank_keyed)
        of_answer = isin(blank_part["key"], answers)
        ignored, blank_keyed = blank_keyed[of_answer], blank_keyed[~of_answer]
        part = pd.concat([part, blank_part[~of_answer]], ignore_index=True)
        emptied = emptied.drop(index=emptied.index[ignored]).reset_index(drop=True)
        blank_keyed -= np.searchsorted(ignored, blank_keyed)  # their positions once the ignored rows are gone
    versions = part.groupby(["key", "file"], sort=False)["time"].max().reset_index()
    latest = versions.groupby("key")["time"].transform("max")
    older = versions[(versions["time"] < latest) | (versions["time"].isna() & latest.notna())]
    if older.empty:
        return table, rows, emptied
    dropped = part.merge(older[["key", "file"]].assign(drop=True), on=["key", "file"], how="left")["drop"]
    dropped = dropped.eq(True).to_numpy()
    drop = np.zeros(len(table), dtype=bool)
    drop[keyed[dropped[: len(keyed)]]] = True
    drop_blank = np.zeros(len(emptied), dtype=bool)
    drop_blank[blank_keyed[dropped[len(keyed) :]]] = True
    emptied = emptied[~drop_blank].reset_index(drop=True)
    counts = table["source_file"][drop].value_counts()
    for row in rows:
        n = int(counts.get(row["source_file"], 0))
        if n:
            skipped = json.loads(row["skipped"])
            skipped["superseded annotation version"] = skipped.get("superseded annotation version", 0) + n
            row.update(rows=row["rows"] - n, skipped=json.dumps(skipped, sort_keys=True))
    return table[~drop].reset_index(drop=True), rows, emptied


def _versions(frame: pd.DataFrame, ids: pd.Series, keyed: np.ndarray) -> pd.DataFrame:
    """The annotation (:func:`annotation_identity`), file and time of ``frame``'s rows at ``keyed``."""
    return pd.DataFrame(
        {
            "key": annotation_identity(
                frame["item_id"].iloc[keyed], frame["annotator_id"].iloc[keyed], ids.iloc[keyed]
            ),
            "file": frame["source_file"].iloc[keyed].to_numpy(dtype=object),
            "time": frame["annotated_at"].iloc[keyed].to_numpy(),
        }
    )


def read_gold(store: Store, day: str, *, policy: ReadPolicy = ReadPolicy(), cache: Store | None = None) -> Ingested:
    """Gold labels in force on ``day``, in any export format.

    Gold accumulates: a day's gold is every dated gold folder up to it, so night 60 reads 60 files, 59 of which
    an earlier night parsed already. With a ``cache`` (the warehouse), each file's parsed rows are kept under its
    content and the parser's code (:func:`parsed_gold`), and a file read again costs a small Parquet read instead
    of a parse; a file whose bytes or parser changed is parsed again. The files' rows become pandas at once, after
    they are joined: a small table's conversion costs about 2 ms, whatever its rows."""
    tables, rows = [], []
    listing = store.stat("gold")
    for key in landing.gold_keys(list(listing), day):
        if is_ignored(key):
            continue
        if policy.arriving([listing[key]]):
            rows.append(_deferred_row(key))
            continue
        try:
            policy.check_sizes(key, {key: listing[key]})
            parsed, fmt, skipped = parsed_gold(key, store.read_bytes(key), cache)
        except Exception as error:
            rows.append(_error_row(key, _as_export_error(key, error)))
            continue
        tables.append(parsed)
        rows.append(_ok_row(key, fmt, parsed.num_rows, skipped))
    table_ = pa.concat_tables(tables).to_pandas() if tables else conform(pd.DataFrame(), GOLD_SCHEMA)
    return Ingested(table=table_, ledger=_ledger(rows))


CACHED_FORMAT = b"labelops.parsed.format"
CACHED_SKIPPED = b"labelops.parsed.skipped"


def parsed_gold(key: str, data: bytes, cache: Store | None = None) -> tuple[pa.Table, str, dict[str, int]]:
    """One gold file's rows (conformed to ``GOLD_SCHEMA``), its format and the records it skipped; from ``cache``
    when this file's bytes were parsed by this parser before (the rows then come back as Arrow stored them,
    the table the parse gives). Errors are never cached: a bad file fails again, naming itself."""
    fingerprint = _parser_fingerprint() if cache is not None else None
    entry = f"{PARSED}/gold/{_parse_digest(fingerprint, key, data)}.parquet" if fingerprint is not None else None
    if cache is not None and entry is not None and cache.exists(entry):
        try:
            stored = pq.read_table(pa.BufferReader(cache.read_bytes(entry)))
            meta = stored.schema.metadata or {}
            return stored, meta[CACHED_FORMAT].decode(), json.loads(meta[CACHED_SKIPPED])
        except (OSError, KeyError, ValueError, pa.ArrowException):  # an entry that cannot be read: parsed again
            pass
    parsed = parse_file(key, data, require_annotator=False)
    table_ = conform_table(
        parsed.objects.assign(source_format=parsed.format, source_file=key), GOLD_SCHEMA, extra="drop"
    )
    if cache is not None and entry is not None:  # written whole or not at all (the store's writes are atomic)
        extra = {CACHED_FORMAT: parsed.format.encode(), CACHED_SKIPPED: json.dumps(dict(parsed.skipped)).encode()}
        buffer = io.BytesIO()
        pq.write_table(table_.replace_schema_metadata({**(table_.schema.metadata or {}), **extra}), buffer)
        cache.write_bytes(entry, buffer.getvalue())
    return table_, parsed.format, dict(parsed.skipped)


def _parse_digest(fingerprint: str, key: str, data: bytes) -> str:
    """A file's cache name: the parser's fingerprint, the file's name (the format is read from it) and bytes."""
    digest = hashlib.sha256(fingerprint.encode())
    digest.update(key.encode() + b"\0")
    digest.update(data)
    return digest.hexdigest()


@cache
def _parser_fingerprint() -> str | None:
    """The parsing code as it stands (the format readers, this module, the schemas) and the libraries that
    decide its types: any change to them parses every file again. None where the code's sources cannot be read
    (an installation without them): nothing is cached then, rather than kept across code it cannot tell apart."""
    root = Path(__file__).parent
    digest = hashlib.sha256(f"pandas {pd.__version__} pyarrow {pa.__version__}".encode())
    try:
        for path in sorted([root / "ingest.py", root / "schema.py", *(root / "formats").glob("*.py")]):
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    except OSError:
        return None
    return digest.hexdigest()


def read_items(store: Store, day: str, *, policy: ReadPolicy = ReadPolicy()) -> Ingested:
    """The item catalog delivered on ``day``; extra columns are slice attributes (text)."""
    return _read_records(store, "items", day, ITEM_CORE_SCHEMA, _items_frame, policy)


def read_sent_items(store: Store, since: str | None, before: str) -> pd.DataFrame:
    """Item rows our own relabel batches wrote for the production items they sent (``outbox/relabel/<day>/
    *.items.csv``), for the batches sent on ``since`` <= day < ``before``: an answer to such an item can only
    enter a snapshot if the item is catalogued. A batch's day stands in for the delivery day."""
    frames = []
    for key in sorted(store.list(outbox("relabel"))):
        parts = key.split("/")
        sent = parts[2] if len(parts) == 4 else ""
        if not key.endswith(".items.csv") or not sent < before or (since is not None and sent < since):
            continue
        frame = _items_frame(key, _record_frame(key, store.read_bytes(key)))
        frames.append(
            conform(frame.assign(source_file=key, export_date=date.fromisoformat(sent)), ITEM_CORE_SCHEMA, extra="keep")
        )
    return pd.concat(frames, ignore_index=True) if frames else conform(pd.DataFrame(), ITEM_CORE_SCHEMA)


def read_predictions(store: Store, day: str, *, policy: ReadPolicy = ReadPolicy()) -> Ingested:
    """Production inference logs of ``day``; extra columns are model input features."""
    return _read_records(store, "production", day, PREDICTION_CORE_SCHEMA, _predictions_frame, policy)


def _read_records(
    store: Store,
    area: str,
    day: str,
    schema: pa.Schema,
    shape: Callable[[str, pd.DataFrame], pd.DataFrame],
    policy: ReadPolicy,
) -> Ingested:
    frames, rows = [], []
    export_date = date.fromisoformat(day)
    listing = store.stat(f"{area}/{day}")
    for key in landing.day_keys(list(listing), area, day):
        if is_ignored(key):
            continue
        if policy.arriving([listing[key]]):
            rows.append(_deferred_row(key))
            continue
        try:
            policy.check_sizes(key, {key: listing[key]})
            frame = shape(key, _record_frame(key, store.read_bytes(key)))
            frame = conform(frame.assign(source_file=key, export_date=export_date), schema, extra="keep")
        except Exception as error:
            rows.append(_error_row(key, _as_export_error(key, error)))
            continue
        frames.append(frame)
        rows.append(_ok_row(key, key.rsplit(".", 1)[-1].lower(), len(frame)))
    table_ = pd.concat(frames, ignore_index=True) if frames else conform(pd.DataFrame(), schema)
    return Ingested(table=table_, ledger=_ledger(rows))


def _record_frame(key: str, data: bytes) -> pd.DataFrame:
    if not data.strip():
        raise ExportError(key, "the file is empty")
    if key.lower().endswith(".jsonl"):
        try:
            return pd.read_json(pd.io.common.StringIO(data.decode("utf-8")), lines=True, dtype=False)
        except (UnicodeDecodeError, ValueError) as error:
            raise ExportError(key, f"invalid JSON lines ({error})") from None
    if not key.lower().endswith(table.TABLE_FILES):
        raise ExportError(key, "unknown file type (expected CSV, TSV, Parquet or JSON lines)")
    frame = table.read_frame(key, data)
    if "item_id" not in frame.columns:
        raise ExportError(key, f"no 'item_id' column; columns are {list(frame.columns)[:12]}")
    return frame


def _timestamp_column(key: str, frame: pd.DataFrame, column: str) -> pd.Series:
    """The column as UTC instants; a value that is not a timestamp stops the file, naming its line.

    Arrow's cast parses zoned ISO 8601 text seven times faster than pandas (0.03 s against 0.19 s
    for 1,000,000 log rows); pandas takes what Arrow refuses (no zone, dates alone, other types)
    and reports the bad line.
    """
    if pd.api.types.is_object_dtype(frame[column]) or pd.api.types.is_string_dtype(frame[column]):
        try:
            parsed = pc.cast(pa.array(frame[column], type=pa.string()), pa.timestamp("us", tz="UTC"))
            if parsed.null_count < len(parsed):  # an all-empty column keeps the unit pandas gives it
                return parsed.to_pandas().set_axis(frame.index).rename(column)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            pass
    values = pd.to_datetime(frame[column], utc=True, errors="coerce", format="ISO8601")
    bad = values.isna() & frame[column].notna()
    if bad.any():
        line = frame.index[bad][0]
        raise ExportError(key, f"line {line}: column '{column}' holds {frame.loc[line, column]!r}, not a timestamp")
    return values


def _items_frame(key: str, frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    for column in ("width", "height"):
        if column in frame:
            frame[column] = table.numeric_column(key, frame, column)
    if "captured_at" in frame:
        frame["captured_at"] = _timestamp_column(key, frame, "captured_at")
    core = set(ITEM_CORE_SCHEMA.names)
    for column in frame.columns:
        if column not in core:
            frame[column] = frame[column].astype("string").astype(object).where(frame[column].notna(), None)
    frame["item_id"] = normalize_item_ids(frame["item_id"])
    return frame.drop_duplicates("item_id", keep="last")


def _numbers(column: pd.Series) -> pd.Series | None:
    """The column as floats when every non-empty value is a number, else None (it stays text).

    Arrow's cast parses a clean column in milliseconds; pandas' to_numeric, tried only when the
    cast refuses (spaces, mixed notations), is two orders of magnitude slower on 1,000,000 rows.
    """
    if pd.api.types.is_numeric_dtype(column):
        return column.astype(float)
    try:
        return pd.Series(
            pc.cast(pa.array(column, type=pa.string()), pa.float64()).to_numpy(zero_copy_only=False), index=column.index
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        head = column.dropna().head(1000)
        if pd.to_numeric(head, errors="coerce").isna().any():  # a text column: no need to parse it all
            return None
        numbers = pd.to_numeric(column, errors="coerce")
        return numbers.astype(float) if numbers.notna().sum() == column.notna().sum() else None


def _predictions_frame(key: str, frame: pd.DataFrame, text: frozenset[str] = frozenset()) -> pd.DataFrame:
    """``text``: feature columns kept as text even where this part of them holds only numbers."""
    frame = frame.copy()
    if "confidence" in frame:
        frame["confidence"] = table.numeric_column(key, frame, "confidence")
    if "ts" in frame:
        frame["ts"] = _timestamp_column(key, frame, "ts")
    core = set(PREDICTION_CORE_SCHEMA.names)
    for column in frame.columns:
        if column in core:
            continue
        numbers = None if column in text else _numbers(frame[column])
        if numbers is not None:
            frame[column] = numbers
        else:  # text, kept in Arrow: the table is written from it without a Python string per value
            frame[column] = frame[column].astype("str")
    frame["item_id"] = normalize_item_ids(frame["item_id"])
    return frame


DEFAULT_BATCH_ROWS = 1_000_000


@dataclass
class StreamedDay:
    """A day's production logs written to one Parquet file part by part, and what was seen on the way."""

    ledger: pd.DataFrame
    rows: int
    preview: pd.DataFrame  # the first rows, with the table's dtypes
    predicted_labels: pd.Series  # rows per predicted label
    confidence_sum: float = 0.0
    confidence_rows: int = 0
    model_versions: set[str] = field(default_factory=set)
    passes: int = 1  # 2 or more when a later part changed the table's schema or a file failed part-way


def _prediction_parts(
    store: Store, key: str, rows: int, block_bytes: int = table.BLOCK_BYTES
) -> Iterator[pd.DataFrame]:
    """A production file as frames of about ``rows`` raw rows; JSON lines are read whole (their size is bounded
    by the read policy), CSV/TSV/Parquet in parts (delimited text parsed in blocks of ``block_bytes``)."""
    lower = key.lower()
    if lower.endswith(".jsonl") or not lower.endswith(table.TABLE_FILES):
        frame = _record_frame(key, store.read_bytes(key))
        for start in range(0, max(len(frame), 1), rows):
            yield frame.iloc[start : start + rows]
        return
    source = readable(store, key)
    if isinstance(source, bytes):
        head, size = source[:4096], len(source)
    else:
        with open(source, "rb") as handle:
            head, size = handle.read(4096), Path(source).stat().st_size
    if not head.strip() and size <= 4096:
        raise ExportError(key, "the file is empty")
    for frame in table.read_batches(key, source, rows, block_bytes=block_bytes):
        if "item_id" not in frame.columns:
            raise ExportError(key, f"no 'item_id' column; columns are {list(frame.columns)[:12]}")
        yield frame


def write_predictions(
    store: Store,
    day: str,
    path: Path,
    *,
    policy: ReadPolicy = ReadPolicy(),
    batch_rows: int = DEFAULT_BATCH_ROWS,
) -> StreamedDay:
    """:func:`read_predictions` in bounded memory: the day's production files are read in parts of about
    ``batch_rows`` rows, each shaped and checked as the in-memory reader does, and appended to the Parquet
    file at ``path`` (zstd, a row group per part). The table and ledger equal :func:`read_predictions`'s.

    A feature column's type is the day's: numbers only if every part of every file holds only numbers. When a
    later part shows text in a column already written as numbers, or a column not seen before, or a file fails
    after some of its rows were written, the day is written again from the start with what was learnt (the
    file left out, the column as text): rare, and never more passes than there are columns and files.
    """
    columns: dict[str, pa.DataType] = {}
    failed: dict[str, ExportError] = {}
    passes = 0
    while True:
        passes += 1
        known = (dict(columns), dict(failed))
        result = _write_pass(store, day, path, policy, batch_rows, columns, failed)
        if result is not None:
            result.passes = passes
            return result
        if (dict(columns), dict(failed)) == known:  # cannot happen: every restart learns something
            raise RuntimeError(f"production {day}: the streamed write did not settle")


PROBE_ROWS = 10_000
# a probe parses a file in blocks of a megabyte, not 16 MB (a production file's first 10,000 rows: 0.03 s, not 0.16 s);
# a file with a longer line is not probed, and its columns are learnt by the pass that reads it
PROBE_BLOCK_BYTES = 1 << 20


def _probe_columns(store: Store, keys: list[str], columns: dict[str, pa.DataType]) -> None:
    """Learn the feature columns of every file from its first rows before any is written: a column that only a
    later file has would otherwise make the day be written again (a day of detections and of plain predictions
    in two files was written twice). A file's problems are left for the pass that reads it whole."""
    for key in keys:
        try:
            raw = next(iter(_prediction_parts(store, key, PROBE_ROWS, PROBE_BLOCK_BYTES)))
            _learn_columns(_predictions_frame(key, raw, _text_columns(columns)), columns)
        except Exception:
            continue


def _text_columns(columns: dict[str, pa.DataType]) -> frozenset[str]:
    return frozenset(c for c, t in columns.items() if t == pa.string())


def _learn_columns(frame: pd.DataFrame, columns: dict[str, pa.DataType]) -> bool:
    """Add the frame's feature columns to ``columns`` (in order of first appearance) with their type, and make a
    column typed as numbers so far text when the frame holds text in it (text for the whole day). True when
    ``columns`` was written to: rows already written were written with the older columns."""
    changed = False
    for column in frame.columns:
        if column in PREDICTION_CORE_COLUMNS:
            continue
        kind = arrow_type_of(frame[column])
        if column not in columns:
            columns[column] = kind
            changed = True
        elif columns[column] != kind and frame[column].notna().any():
            columns[column] = pa.string()
            changed = True
    return changed


PREDICTION_CORE_COLUMNS = frozenset(PREDICTION_CORE_SCHEMA.names)


def _write_pass(
    store: Store,
    day: str,
    path: Path,
    policy: ReadPolicy,
    batch_rows: int,
    columns: dict[str, pa.DataType],
    failed: dict[str, ExportError],
) -> StreamedDay | None:
    """One pass over the day's files; None when the file must be written again (``columns``/``failed`` updated)."""
    export_date = date.fromisoformat(day)
    listing = store.stat(f"production/{day}")
    writer: pq.ParquetWriter | None = None
    restart = False
    rows: list[dict] = []
    total = 0
    preview: pd.DataFrame | None = None
    labels = pd.Series(dtype="int64")
    confidence_sum, confidence_rows, versions = 0.0, 0, set()

    def schema() -> pa.Schema:
        return pa.schema([*PREDICTION_CORE_SCHEMA, *(pa.field(c, t) for c, t in columns.items())])

    keys = [k for k in landing.day_keys(list(listing), "production", day) if not is_ignored(k)]
    if len(keys) > 1:
        _probe_columns(store, [k for k in keys if k not in failed and not policy.arriving([listing[k]])], columns)
    try:
        for key in keys:
            if policy.arriving([listing[key]]):
                rows.append(_deferred_row(key))
                continue
            if key in failed:
                rows.append(_error_row(key, failed[key]))
                continue
            count, wrote = 0, False
            try:
                policy.check_sizes(key, {key: listing[key]})
                for raw in _prediction_parts(store, key, batch_rows):
                    frame = _predictions_frame(key, raw, _text_columns(columns))
                    frame = frame.assign(source_file=key, export_date=export_date)
                    restart = restart or (_learn_columns(frame, columns) and writer is not None)
                    part = conform_table(frame, schema())
                    count += len(frame)
                    if restart:
                        continue  # still read on: every file's problems and types are learnt in this pass
                    opened = writer if writer is not None else pq.ParquetWriter(path, part.schema, compression="zstd")
                    opened.write_table(part)
                    writer = opened
                    wrote = True
                    total += len(frame)
                    if preview is None:
                        preview = part.slice(0, 10).to_pandas()
                    seen = part.select(["predicted_label", "confidence", "model_version"]).to_pandas()
                    labels = labels.add(seen["predicted_label"].value_counts(dropna=False), fill_value=0)
                    confidence_sum += float(seen["confidence"].sum())
                    confidence_rows += int(seen["confidence"].notna().sum())
                    versions.update(seen["model_version"].dropna().astype(str).unique())
            except Exception as error:
                failed[key] = _as_export_error(key, error)
                rows.append(_error_row(key, failed[key]))
                restart = restart or wrote  # its written rows must go
                continue
            rows.append(_ok_row(key, key.rsplit(".", 1)[-1].lower(), count))
    finally:
        if writer is not None:
            writer.close()
    if restart:
        return None
    if writer is None:  # no rows: an empty table, as the in-memory reader returns
        pq.write_table(conform_table(pd.DataFrame(), schema()), path, compression="zstd")
        preview = conform(pd.DataFrame(), schema())
    assert preview is not None
    return StreamedDay(
        ledger=_ledger(rows),
        rows=total,
        preview=preview,
        predicted_labels=labels.astype("int64").sort_values(ascending=False, kind="stable"),
        confidence_sum=confidence_sum,
        confidence_rows=confidence_rows,
        model_versions=versions,
    )
