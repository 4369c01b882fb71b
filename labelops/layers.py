"""Tables kept as layers: a day's table written as what the day changed in an earlier day's.

A table that grows by a little each day but is read whole (``label_votes``: every judgment that ever counted,
6.6 M rows after 60 days of 110,000) would otherwise be read, converted, encoded and written whole every
night, for the 2 % of it that changed. A layer holds the rows the day appended, with every column, and for the
earlier rows it changed only their position in the base (``_base_row``) and the columns it changed (the
footer lists them). Reading a layer reads its base (itself possibly a layer), puts the changed values in place
and appends the new rows: exactly the table a whole write would have stored, the same rows, order and pandas
dtypes.

A layer's footer names its base partition and the SHA-256 of the base file's bytes, so a base that was
re-materialized after the layer was written is refused with a clear error instead of read as if nothing had
changed. The table is written whole (a compaction) after ``MAX_DEPTH`` layers, when a layer would hold more
than ``MAX_SHARE`` of the table, or when a column is new or gets a type the base does not have.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from labelops.columns import chunks

ROW = "_base_row"  # a changed row's position in the base; null for a row appended after the base's
BASE = b"labelops.layer.base"  # the partition a layer builds on
BASE_SHA256 = b"labelops.layer.base_sha256"  # of the base file's bytes, as the layer was written
DEPTH = b"labelops.layer.depth"  # 1 for a layer over a whole table, n + 1 over a layer of depth n
ROWS = b"labelops.layer.rows"  # the whole table's rows
CHANGED = b"labelops.layer.changed"  # the columns the layer's changed rows hold (JSON list)
MAX_DEPTH = 7  # a read opens at most 8 files; a week of nightly layers, then the table is written whole
MAX_SHARE = 0.25  # a layer holding more rows than this share of the table saves too little: written whole


class StaleLayerError(RuntimeError):
    """A layer whose base was rewritten after it: its rows no longer build on what the base holds."""


@dataclass(frozen=True)
class Layered:
    """A day's table as what the day changed in an earlier partition (its ``base``): ``marks`` are the earlier
    rows it changed, their position in the base (``ROW``) and the new values of the columns it changed;
    ``appended`` the rows it added, every column. The IO manager writes it as a layer, or as the whole table
    when a chain is long, the layer large or a column's type new; readers always get the whole table."""

    base: str
    marks: pd.DataFrame
    appended: pd.DataFrame
    base_rows: int  # the rows of the base the day was folded into: a base rewritten since is refused at the write

    @property
    def changed(self) -> list[str]:
        return [c for c in self.marks.columns if c != ROW]

    def rows(self) -> int:
        return len(self.marks) + len(self.appended)

    def whole(self, base: pd.DataFrame) -> pd.DataFrame:
        """The whole table (what a compaction writes): ``base`` with the marks in place and the rows appended."""
        out = base.copy()
        at = self.marks[ROW].to_numpy(dtype=np.int64)
        for name in self.changed:
            column = out[name].astype(object).to_numpy(copy=True) if name in out else np.full(len(out), None)
            column[at] = self.marks[name].astype(object).to_numpy()
            out[name] = pd.Series(column, dtype=object).where(pd.notna(column), None)
        # a column the base lacks (written before it existed) is kept: missing in the base's rows
        return pd.concat([out, self.appended], ignore_index=True)


def sha256(data: bytes | memoryview) -> str:
    return hashlib.sha256(data).hexdigest()


def footer(layered: Layered, base_sha256: str, base_depth: int, rows: int) -> dict[bytes, bytes]:
    """The footer entries of a layer over its base (whose file's SHA-256 is ``base_sha256``, at ``base_depth``)
    that makes a table of ``rows`` rows."""
    return {
        BASE: layered.base.encode(),
        BASE_SHA256: base_sha256.encode(),
        DEPTH: str(base_depth + 1).encode(),
        ROWS: str(rows).encode(),
        CHANGED: json.dumps(layered.changed).encode(),
    }


def base_of(schema: pa.Schema) -> tuple[str, str, list[str]] | None:
    """A layer's base partition, the base file's SHA-256 and the columns its marked rows change; None for a
    whole table."""
    meta = schema.metadata or {}
    if BASE not in meta:
        return None
    return meta[BASE].decode(), meta[BASE_SHA256].decode(), json.loads(meta[CHANGED])


def depth(schema: pa.Schema) -> int:
    value = (schema.metadata or {}).get(DEPTH)
    return int(value) if value is not None else 0


def rows(schema: pa.Schema) -> int | None:
    """A layer's whole-table rows (None for a whole table: its file says)."""
    value = (schema.metadata or {}).get(ROWS)
    return int(value) if value is not None else None


def layer_table(layered: Layered, base: pa.Schema) -> pa.Table | None:
    """The layer as Arrow in the base's column types (a column the day left empty takes the base's type, text the
    base's width): the marked rows (only their changed columns; the others null), then the appended ones. None
    when a column is missing, new or has another type: the table is then written whole (with every column)."""
    names = [f.name for f in base]
    appended = pa.Table.from_pandas(layered.appended, preserve_index=False)
    marks = pa.Table.from_pandas(layered.marks[layered.changed], preserve_index=False)
    if appended.column_names != names or not set(marks.column_names) <= set(names):
        return None
    columns = []
    for field in base:
        parts = []
        for part in (marks, appended):
            column = part.column(field.name) if field.name in part.column_names else pa.nulls(len(part), field.type)
            if column.type != field.type:
                if column.type == pa.null() or len(part) == 0:  # no values: nothing to convert
                    column = pa.nulls(len(part), field.type)
                elif _text(column.type) and _text(field.type):  # pandas writes str columns as large_string
                    column = column.cast(field.type)
                else:
                    return None
            parts.append(column)
        columns.append(pa.chunked_array([c for p in parts for c in chunks(p)], field.type))
    at = layered.marks[ROW].to_numpy(dtype=np.int64)
    position = np.concatenate([at, np.full(len(appended), -1, dtype=np.int64)])
    columns.append(pa.chunked_array([pa.array(position, type=pa.int64(), mask=position < 0)]))
    return pa.Table.from_arrays(columns, schema=base.append(pa.field(ROW, pa.int64())).remove_metadata())


def _text(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_large_string(kind)


def resolve(base: pa.Table, layer: pa.Table, changed: list[str]) -> pa.Table:
    """The whole table: ``base`` with the layer's ``changed`` columns put in place at its marked rows, and its
    appended rows after."""
    position = layer.column(ROW)
    data = layer.drop_columns([ROW]).cast(base.schema)
    marked = pc.is_valid(position)
    appended = data.filter(pc.invert(marked))
    at = position.filter(marked).to_numpy()
    order = None
    if len(at):
        order = np.arange(len(base), dtype=np.int64)
        order[at] = len(base) + np.arange(len(at), dtype=np.int64)
    columns = []
    for name in base.column_names:
        column = base.column(name)
        if order is not None and name in changed:
            values = pa.chunked_array(column.chunks + data.column(name).filter(marked).chunks, column.type)
            column = values.take(pa.array(order))
        columns.append(pa.chunked_array(column.chunks + appended.column(name).chunks, column.type))
    whole = pa.Table.from_arrays(columns, schema=base.schema)
    return whole.replace_schema_metadata(_whole_metadata(base.schema, len(whole)))


def _whole_metadata(schema: pa.Schema, rows: int) -> dict[bytes, bytes]:
    """The base's footer without its layer entries, its pandas index sized for ``rows``: what a whole write of
    the table would have recorded."""
    meta = {k: v for k, v in (schema.metadata or {}).items() if k not in (BASE, BASE_SHA256, DEPTH, ROWS, CHANGED)}
    if b"pandas" in meta:
        pandas = json.loads(meta[b"pandas"])
        for index in pandas.get("index_columns", []):
            if isinstance(index, dict) and index.get("kind") == "range":
                index.update(start=0, stop=rows, step=1)
        meta[b"pandas"] = json.dumps(pandas).encode()
    return meta
