"""Long tables, one row per judgment, as crowd platforms export them (CSV, TSV, Parquet).

Column names vary by platform, so a few well-known aliases are accepted (MTurk's
``!amt_worker_ids``, Snow et al.'s ``orig_id``/``response``, Toloka's
``INPUT:``/``OUTPUT:`` prefixes stripped). A headerless three-column file is read
the way Get-Another-Label writes it: worker, object, label.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from labelops.columns import text
from labelops.errors import ExportError
from labelops.formats.common import Parsed, objects_frame

ALIASES = {
    "item_id": ("item_id", "item", "orig_id", "object", "object_id", "task", "task_id", "image_id", "unit_id", "image"),
    "annotator_id": (
        "annotator_id",
        "annotator",
        "worker",
        "worker_id",
        "!amt_worker_ids",
        "_worker_id",
        "user",
        "performer",
    ),
    "label": ("label", "response", "answer", "class", "category", "result"),
    "x": ("x", "xmin", "x_min", "left"),
    "y": ("y", "ymin", "y_min", "top"),
    "w": ("w", "box_width", "bbox_width"),
    "h": ("h", "box_height", "bbox_height"),
    "annotated_at": ("annotated_at", "timestamp", "created_at", "submitted_at"),
    "guideline_version": ("guideline_version",),
    "image_width": ("image_width",),
    "image_height": ("image_height",),
}
HEADERLESS_ORDER = ("annotator_id", "item_id", "label")
BOX = ("x", "y", "w", "h")
TABLE_FILES = (".csv", ".tsv", ".txt", ".parquet")


def read_frame(source_file: str, data: bytes) -> pd.DataFrame:
    """The file as a frame of text columns (Parquet keeps its own types).

    The index holds the file's line numbers, so errors can point at a line.
    Delimited text goes through Arrow's multi-threaded CSV reader; only the empty
    string is null, so a label such as "NA" or "null" stays a label.
    """
    if source_file.lower().endswith(".parquet"):
        try:
            return pq.read_table(pa.BufferReader(data)).to_pandas()
        except (pa.ArrowInvalid, OSError) as error:
            raise ExportError(source_file, f"invalid Parquet file ({error})") from None
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    sep, names, has_header = _layout(source_file, data)
    try:
        table = pacsv.read_csv(pa.BufferReader(data), **_csv_options(names, sep, has_header))
    except pa.ArrowInvalid as error:
        problem = "not UTF-8 text" if "UTF8" in str(error) else f"malformed delimited text ({error})"
        raise ExportError(source_file, problem) from None
    frame = table.to_pandas()
    frame.index = frame.index + (2 if has_header else 1)
    return frame


def _layout(source_file: str, data: bytes) -> tuple[str, list[str], bool]:
    """Delimiter, column names and whether the first line is a header, from the file's first bytes."""
    lower = source_file.lower()
    try:
        first = data.split(b"\n", 1)[0].decode("utf-8").rstrip("\r")
    except UnicodeDecodeError:
        raise ExportError(source_file, "not UTF-8 text") from None
    sep = "\t" if lower.endswith((".tsv", ".txt")) or ("\t" in first and "," not in first) else ","
    header = [cell.strip() for cell in next(csv.reader([first], delimiter=sep), [])]
    known = {alias for aliases in ALIASES.values() for alias in aliases}
    has_header = any(_canonical(h) in known for h in header)
    names: list[str]
    if has_header:
        names = header
    elif len(header) == 3:
        names = list(HEADERLESS_ORDER)
    elif len(header) == 2:
        names = ["item_id", "label"]
    else:
        raise ExportError(source_file, f"no header with item_id/annotator_id/label and {len(header)} columns")
    if len(set(names)) != len(names):
        raise ExportError(source_file, f"duplicate column names in the header {names}")
    return sep, names, has_header


def _csv_options(names: list[str], sep: str, has_header: bool, block_size: int | None = None) -> dict[str, Any]:
    return {
        "read_options": pacsv.ReadOptions(
            column_names=names, skip_rows=1 if has_header else 0, **({"block_size": block_size} if block_size else {})
        ),
        "parse_options": pacsv.ParseOptions(delimiter=sep, newlines_in_values=True),
        "convert_options": pacsv.ConvertOptions(
            column_types={n: pa.string() for n in names}, null_values=[""], strings_can_be_null=True
        ),
    }


HEAD_BYTES = 1 << 20
BLOCK_BYTES = 16 << 20


def read_batches(
    source_file: str, source: str | bytes, rows: int, *, block_bytes: int = BLOCK_BYTES
) -> Iterator[pd.DataFrame]:
    """:func:`read_frame` in parts of about ``rows`` rows (at least one part, maybe empty), from a local path
    or bytes: a file of any size is read in bounded memory. The index still holds the file's line numbers.
    Delimited text is parsed in blocks of ``block_bytes``, which must hold the longest line."""
    if source_file.lower().endswith(".parquet"):
        try:
            file = pq.ParquetFile(source if isinstance(source, str) else pa.BufferReader(source))
            offset = 0
            for batch in file.iter_batches(batch_size=rows):
                frame = batch.to_pandas()
                frame.index = frame.index + offset
                offset += len(frame)
                yield frame
            if offset == 0:
                yield file.schema_arrow.empty_table().to_pandas()
        except (pa.ArrowInvalid, OSError) as error:
            raise ExportError(source_file, f"invalid Parquet file ({error})") from None
        return
    if isinstance(source, str):
        with open(source, "rb") as handle:
            head = handle.read(HEAD_BYTES)
    else:
        head = source[:HEAD_BYTES]
    if head.startswith(b"\xef\xbb\xbf"):  # Arrow's reader skips the mark itself
        head = head[3:]
    sep, names, has_header = _layout(source_file, head)
    first_line = 2 if has_header else 1
    try:
        reader = pacsv.open_csv(
            source if isinstance(source, str) else pa.BufferReader(source),
            **_csv_options(names, sep, has_header, block_bytes),
        )
        pending = reader.schema.empty_table()
        yielded = False
        for batch in reader:
            pending = pa.concat_tables([pending, pa.Table.from_batches([batch])])
            while pending.num_rows >= rows:
                frame = pending.slice(0, rows).to_pandas()
                frame.index = frame.index + first_line
                first_line += len(frame)
                pending, yielded = pending.slice(rows), True
                yield frame
        if pending.num_rows or not yielded:
            frame = pending.to_pandas()
            frame.index = frame.index + first_line
            yield frame
    except pa.ArrowInvalid as error:
        problem = "not UTF-8 text" if "UTF8" in str(error) else f"malformed delimited text ({error})"
        raise ExportError(source_file, problem) from None


def _canonical(name: str) -> str:
    lowered = name.strip().lower()
    for prefix in ("input:", "output:", "golden:"):
        if lowered.startswith(prefix):
            return lowered[len(prefix) :]
    return lowered


def rename_aliases(source_file: str, frame: pd.DataFrame) -> pd.DataFrame:
    """Map platform column names onto canonical names; the rest stay as attributes."""
    lowered = {_canonical(str(c)): c for c in frame.columns}
    renames: dict[str, str] = {}
    for canonical, aliases in ALIASES.items():
        found = [lowered[a] for a in aliases if a in lowered]
        if len(found) > 1 and canonical in ("item_id", "annotator_id", "label"):
            raise ExportError(source_file, f"columns {found} all look like '{canonical}': rename all but one")
        if found:
            renames[found[0]] = canonical
    return frame.rename(columns=renames)


def numeric_column(source_file: str, frame: pd.DataFrame, column: str) -> np.ndarray:
    """A column as float64; the first value that is not a number is named with its line.

    Arrow parses the plain spellings of numbers (to the double Python's ``float`` gives, eight times as fast); what
    it refuses (spaces around a number, digit separators, mixed Python objects) is left to pandas."""
    try:
        values = pa.array(frame[column].array, from_pandas=True)
        return pc.cast(values, pa.float64()).to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        pass
    try:
        return frame[column].astype("float64").to_numpy()
    except (TypeError, ValueError):
        values = pd.to_numeric(frame[column], errors="coerce")
        line = frame.index[values.isna() & frame[column].notna()][0]
        raise ExportError(
            source_file, f"line {line}: column '{column}' holds {frame.loc[line, column]!r}, not a number"
        ) from None


# Columns only Label Studio's CSV/TSV export writes beside the annotation id (the time spent on the annotation).
LABEL_STUDIO_TABLE = {"annotation_id", "lead_time"}


def parse(source_file: str, data: bytes, *, require_annotator: bool = True) -> Parsed:
    frame = read_frame(source_file, data)
    # told apart before the aliases: a project importing our task files exports `id` and `item_id`, which would
    # otherwise be refused as two item id columns
    if LABEL_STUDIO_TABLE <= {_canonical(str(c)) for c in frame.columns}:
        # read as a table, its regions would become labels made of JSON text, all quarantined: a blocking check
        # would then hold back the whole day
        raise ExportError(
            source_file,
            "a Label Studio CSV/TSV export, which flattens each region into JSON text without the image sizes; "
            "export the project as JSON (Export -> JSON) instead",
        )
    frame = rename_aliases(source_file, frame)
    required = ["item_id", "label"] + (["annotator_id"] if require_annotator else [])
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ExportError(source_file, f"missing column(s) {missing}; columns are {list(frame.columns)[:12]}")
    for column in ("item_id", "annotator_id") if require_annotator else ("item_id",):
        empty = frame[column].isna() | (frame[column].astype(str).str.strip() == "")
        if empty.any():
            raise ExportError(source_file, f"line {frame.index[empty][0]}: empty {column}")

    has_box = all(c in frame.columns for c in BOX)
    numbers: dict[str, np.ndarray] = {}
    for column in [*BOX, "image_width", "image_height"]:
        if column not in frame.columns:
            continue
        numbers[column] = numeric_column(source_file, frame, column)
    is_box = np.zeros(len(frame), bool)
    if has_box:
        present = np.column_stack([~np.isnan(numbers[c]) for c in BOX])
        partial = present.any(axis=1) & ~present.all(axis=1)
        if partial.any():
            raise ExportError(source_file, f"line {frame.index[partial][0]}: a box needs all of x, y, w, h")
        is_box = present.all(axis=1)

    extras = [c for c in frame.columns if c not in ALIASES]
    # text columns stay pandas' Arrow-backed text: as numpy object arrays the frame would convert them back
    attributes = (
        _attributes_json(frame[extras]) if extras else text(pc.fill_null(pa.nulls(len(frame), pa.large_string()), "{}"))
    )
    annotated_at = frame["annotated_at"] if "annotated_at" in frame else None
    objects = pd.DataFrame(
        {
            "item_id": frame["item_id"].astype(str).str.strip().array,
            "annotator_id": frame["annotator_id"].astype(str).str.strip().array
            if "annotator_id" in frame
            else "unknown",
            "kind": text(pc.if_else(pa.array(is_box), "bbox", "classification")),
            "label": frame["label"].astype(str).array,
            **{c: numbers.get(c, np.full(len(frame), np.nan)) for c in BOX},
            "points": None,
            "image_width": numbers.get("image_width", np.nan),
            "image_height": numbers.get("image_height", np.nan),
            "attributes": attributes,
            "annotated_at": annotated_at.array if annotated_at is not None else None,
            "guideline_version": frame["guideline_version"].array if "guideline_version" in frame else None,
            "source_ref": text(pc.binary_join_element_wise("line=", pc.cast(pa.array(frame.index), pa.string()), "")),
        }
    )
    return Parsed(format="table", objects=objects_frame(objects))


def _attributes_json(extras: pd.DataFrame) -> Any:
    """Extra columns as one sorted-key JSON object per row, built without a row loop."""
    ordered = extras[sorted(extras.columns, key=str)].astype(object).where(extras.notna(), None)
    ordered.columns = [str(c) for c in ordered.columns]
    lines = ordered.to_json(orient="records", lines=True, force_ascii=False).splitlines()
    return np.asarray(lines, dtype=object)
