"""Tables kept as layers: a day's table written as the rows that differ from an earlier day's.

A table that grows by a little each day but is read whole (``label_votes``: every judgment that ever counted,
6.6 M rows after 60 days of 110,000) would otherwise be converted, encoded and written whole every night, for
the 2 % of it that changed. A layer holds the rows of its base that the day changed, each with its position in
the base (``_base_row``), then the rows appended after the base's. Reading a layer reads its base (itself
possibly a layer), puts the changed rows in place and appends the new ones: exactly the table a whole write
would have stored, the same rows, order and types.

A layer's footer names its base partition and the SHA-256 of the base file's bytes, so a base that was
re-materialized after the layer was written is refused with a clear error instead of read as if nothing had
changed. A chain is cut (the table written whole) every ``MAX_DEPTH`` layers, when a layer would hold more
than ``MAX_SHARE`` of the table, or when its columns do not have the base's types; the first write of a table
is whole.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

ROW = "_base_row"  # a layer row's position in its base; null for a row appended after the base's
BASE = b"labelops.layer.base"  # the partition a layer builds on
BASE_SHA256 = b"labelops.layer.base_sha256"  # of the base file's bytes, as the layer was written
DEPTH = b"labelops.layer.depth"  # 1 for a layer over a whole table, n + 1 over a layer of depth n
MAX_DEPTH = 7  # a read opens at most 8 files; a week of nightly layers, then the table is written whole
MAX_SHARE = 0.25  # a layer holding more of the table than this saves too little: the table is written whole


class StaleLayerError(RuntimeError):
    """A layer whose base was rewritten after it: its rows no longer build on what the base holds."""


@dataclass(frozen=True)
class Layered:
    """A day's whole table, with what it shares with an earlier partition (its ``base``): its first
    ``base_rows`` rows are the base's rows in order, of which only those at ``changed`` differ. The IO manager
    writes a layer when that pays and the table whole otherwise; readers always get the whole table."""

    frame: pd.DataFrame
    base: str | None
    base_rows: int = 0
    changed: np.ndarray | None = None  # None: unknown (every row may differ), the table is written whole

    def layer(self) -> tuple[pd.DataFrame, np.ndarray] | None:
        """The rows a layer stores and their positions in the base (-1: appended); None when the table should
        be written whole."""
        if self.base is None or self.changed is None or len(self.frame) < self.base_rows:
            return None
        changed = np.asarray(self.changed, dtype=np.int64)
        appended = np.arange(self.base_rows, len(self.frame), dtype=np.int64)
        if len(changed) + len(appended) > MAX_SHARE * max(len(self.frame), 1):
            return None
        rows = self.frame.iloc[np.concatenate([changed, appended])].reset_index(drop=True)
        return rows, np.concatenate([changed, np.full(len(appended), -1, dtype=np.int64)])


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def footer(base: str, base_bytes: bytes, base_depth: int) -> dict[bytes, bytes]:
    """The footer entries of a layer over ``base`` (whose file is ``base_bytes``, at ``base_depth``)."""
    return {BASE: base.encode(), BASE_SHA256: sha256(base_bytes).encode(), DEPTH: str(base_depth + 1).encode()}


def base_of(schema: pa.Schema) -> tuple[str, str, int] | None:
    """A layer's base partition, the base file's SHA-256 and the layer's depth; None for a whole table."""
    meta = schema.metadata or {}
    if BASE not in meta:
        return None
    return meta[BASE].decode(), meta[BASE_SHA256].decode(), int(meta[DEPTH])


def depth(schema: pa.Schema) -> int:
    found = base_of(schema)
    return found[2] if found else 0


def layer_table(rows: pd.DataFrame, positions: np.ndarray, base: pa.Schema) -> pa.Table | None:
    """The layer's rows as Arrow in the base's column types (a column the day left empty takes the base's
    type); None when a column is missing or has another type, so the table is written whole instead."""
    table = pa.Table.from_pandas(rows, preserve_index=False)
    names = [f.name for f in base]
    if table.column_names != names:
        return None
    columns = []
    for field in base:
        column = table.column(field.name)
        if column.type != field.type:
            if column.type != pa.null():
                return None
            column = pa.nulls(len(table), field.type)
        columns.append(column)
    columns.append(pa.array(positions, type=pa.int64(), mask=positions < 0))
    return pa.Table.from_arrays(columns, schema=base.append(pa.field(ROW, pa.int64())).remove_metadata())


def resolve(base: pa.Table, layer: pa.Table) -> pa.Table:
    """The whole table: ``base`` with the layer's changed rows in their places and its new rows appended."""
    position = layer.column(ROW)
    data = layer.drop_columns([ROW]).cast(base.schema)
    changed = pc.is_valid(position)
    appended = data.filter(pc.invert(changed))
    if not pc.any(changed).as_py():
        whole = pa.concat_tables([base, appended])
    else:
        order = np.arange(len(base), dtype=np.int64)
        at = position.filter(changed).to_numpy()
        order[at] = len(base) + np.arange(len(at), dtype=np.int64)
        combined = pa.concat_tables([base, data.filter(changed)])
        whole = pa.concat_tables([combined.take(pa.array(order)), appended])
    return whole.replace_schema_metadata(_whole_metadata(base.schema, len(whole)))


def _whole_metadata(schema: pa.Schema, rows: int) -> dict[bytes, bytes]:
    """The base's footer without its layer entries, its pandas index sized for ``rows``: what a whole write of
    the table would have recorded."""
    meta = {k: v for k, v in (schema.metadata or {}).items() if k not in (BASE, BASE_SHA256, DEPTH)}
    if b"pandas" in meta:
        pandas = json.loads(meta[b"pandas"])
        for index in pandas.get("index_columns", []):
            if isinstance(index, dict) and index.get("kind") == "range":
                index.update(start=0, stop=rows, step=1)
        meta[b"pandas"] = json.dumps(pandas).encode()
    return meta
