"""A Parquet IO manager for daily-partitioned tables in the warehouse.

Layout: ``tables/<asset>/<YYYY-MM-DD>.parquet`` per partition and
``tables/<asset>/all.parquet`` for unpartitioned assets. Writes go through the
store's atomic write, so a crashed run leaves the previous file or none.

A daily asset returns ``{day: frame}`` for the days of its run (several in a
single-run backfill) and gets one file per day. A daily input arrives as
`DayTables`, a mapping of the days that exist to their tables, each read when it
is used: a year of look-back costs a directory listing, not a year of tables in
memory. Outside a run (``defs.load_asset_value(key, partition_key=day)``) a day
loads as its DataFrame. A day never materialized is simply absent, so a fresh warehouse does not
break ``--select '*' --partition DAY`` (see assets/partitioned.py).
"""

import hashlib
import io
import posixpath
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from dagster import ConfigurableIOManager, InputContext, OutputContext, ResourceDependency
from pydantic import PrivateAttr

from labelops import layers, warehouse
from labelops.layers import Layered
from labelops.storage import Data, Store, mapped, parquet_file
from resources.settings import not_partitions
from resources.storage import StorageResource

# An output's `guideline_version` metadata entry (the guideline it was computed under) is also written into its
# Parquet footer, so the warehouse itself says which days a new guideline version has not reached yet.
GUIDELINE_VERSION = "guideline_version"
FOOTER_GUIDELINE = b"labelops.guideline_version"
FOOTER_PROBE = 64 * 1024  # most footers fit: one read


class DayTables(Mapping[str, pd.DataFrame]):
    """Days of a daily table that exist, in day order; a day's table is read on each access."""

    def __init__(
        self,
        days: list[str],
        read: Callable[..., pd.DataFrame],
        keep: tuple[str, ...] | None = None,
        drop: frozenset[str] = frozenset(),
        open_file: Callable[[str], pq.ParquetFile] | None = None,
        items: pa.Array | None = None,
        count: Callable[[str], int] | None = None,
        read_arrow: Callable[..., pa.Table] | None = None,
    ) -> None:
        self._days, self._read, self._keep, self._drop = sorted(days), read, keep, drop
        self._open, self._items, self._count, self._read_arrow = open_file, items, count, read_arrow

    def select(self, keep: Iterable[str] | None = None, drop: Iterable[str] = ()) -> "DayTables":
        """The same days, reading only some columns: Parquet decodes nothing else."""
        keep = tuple(keep) if keep is not None else None
        return DayTables(
            self._days, self._read, keep, frozenset(drop), self._open, self._items, self._count, self._read_arrow
        )

    def only_items(self, item_ids: pd.Series | pd.Index | np.ndarray | Sequence[str]) -> "DayTables":
        """The same days and columns, only the rows of these items: each part of the file is filtered in Arrow as
        it is decoded, so the other rows never become pandas (an asset that needs the labeled items' rows of a
        day's million production rows holds a tenth of them)."""
        items = pa.array(item_ids, type=pa.string()).unique()
        return DayTables(
            self._days, self._read, self._keep, self._drop, self._open, items, self._count, self._read_arrow
        )

    def _file(self, day: str) -> pq.ParquetFile:
        if day not in self._days:
            raise KeyError(day)
        if self._open is None:  # a table given whole (tests): read it
            return pq.ParquetFile(pa.BufferReader(_parquet_bytes(self._read(day))))
        return self._open(day)

    def _names(self, file: pq.ParquetFile) -> list[str]:
        return [n for n in file.schema_arrow.names if (self._keep is None or n in self._keep) and n not in self._drop]

    def _decoded(self, names: list[str]) -> list[str]:
        """The columns to decode: the selected ones, and item_id when rows are chosen by it."""
        return names if self._items is None or "item_id" in names else [*names, "item_id"]

    def _groups(self, file: pq.ParquetFile) -> list[int]:
        """The row groups that may hold the chosen items: a group whose item_id statistics (bounds) hold none of
        them is never decoded. Ingest writes a group per landing file, so a day's labeled items, drawn from a few
        files, skip most of the production table."""
        groups = list(range(file.num_row_groups))
        if self._items is None:
            return groups
        column = [file.schema.column(i).path for i in range(len(file.schema))].index("item_id")

        def may_hold(group: int) -> bool:
            stats = file.metadata.row_group(group).column(column).statistics
            if stats is None or not stats.has_min_max:
                return True
            inside = pc.and_(pc.greater_equal(self._items, stats.min), pc.less_equal(self._items, stats.max))
            return bool(pc.any(inside).as_py())

        return [g for g in groups if may_hold(g)]

    def _kept(self, part: pa.Table | pa.RecordBatch, names: list[str]) -> pa.Table | pa.RecordBatch:
        """Decoded rows: those of the chosen items, if chosen (filtered in Arrow), in the selected columns."""
        if self._items is not None:
            part = part.filter(pc.field("item_id").isin(self._items))
        return part.select(names)

    def rows(self, day: str) -> int:
        """The day's row count (every row, chosen items or not), from the Parquet footer alone: on S3 the file's
        last bytes, not the object."""
        if self._count is not None and day in self._days:
            return self._count(day)
        return self._file(day).metadata.num_rows

    def batches(self, day: str, rows: int) -> Iterator[pd.DataFrame]:
        """The day's table in parts of at most ``rows`` rows (the selected columns and items only): a table of any
        length is read in bounded memory."""
        file = self._file(day)
        names = self._names(file)
        found = False
        for batch in file.iter_batches(batch_size=rows, row_groups=self._groups(file), columns=self._decoded(names)):
            found = True
            yield self._kept(batch, names).to_pandas()
        if not found:
            yield file.schema_arrow.empty_table().select(names).to_pandas()

    def __getitem__(self, day: str) -> pd.DataFrame:
        if day not in self._days:
            raise KeyError(day)
        if self._items is None:
            return self._read(day, keep=self._keep, drop=self._drop)
        return self.arrow(day).to_pandas()  # the chosen items' rows, filtered in Arrow

    def arrow(self, day: str) -> pa.Table:
        """The day's table (the selected columns, the chosen items) as Arrow: for an asset that counts and selects
        in a table of millions of rows before any of them becomes pandas. Text columns the file stores
        dictionary-encoded may stay dictionaries (a vote table's files, kinds, labels: a fraction of the memory
        of their text); ``labelops.columns.plain`` gives the types pandas would get, best after selecting rows."""
        if self._items is None and self._read_arrow is not None:
            if day not in self._days:
                raise KeyError(day)
            return self._read_arrow(day, keep=self._keep, drop=self._drop, dictionaries=True)
        file = self._file(day)
        names = self._names(file)
        # the groups at once: the items' lookup table is built once, not per batch
        return self._kept(file.read_row_groups(self._groups(file), columns=self._decoded(names)), names)

    def __contains__(self, day: object) -> bool:  # without reading the table
        return day in self._days

    def __iter__(self) -> Iterator[str]:
        return iter(self._days)

    def __len__(self) -> int:
        return len(self._days)


# Tables several later steps of a night read (the snapshot, coverage, the task outbox, the quality report): a run
# keeps those it writes in memory for its later steps, instead of each decoding the million-row file again.
SHARED_IN_RUN = frozenset({"label_state", "item_index"})


Stamp = tuple[str, int, bytes]


def stamp(key: str, data: Data) -> Stamp:
    """A file as a run knows it again: its key, size and last 64 KiB (its Parquet footer: row groups, column sizes,
    item id bounds, schema), so bytes written anew under the key are a new file."""
    return key, len(data), hashlib.sha256(data[-64 * 1024 :]).digest()


class FileDigests:
    """The SHA-256 of files a run read, for its later checks of the same file (known by :func:`stamp`). A layered
    table's read checks its base file's bytes against the digest the layer recorded, and a night checks the vote
    table's base (167 MB, 0.14-0.16 s to hash) twice, in `label_votes` and in `label_state`.

    A file whose digest a later step of the run will ask for (a :data:`SHARED_READS` table's file is the base of
    the layer its asset writes next) is hashed in a thread from its read on: hashing holds no lock, so the digest is
    computed on the second core while the step folds the day, not after it (a night that writes the table whole, a
    compaction, leaves that digest unused)."""

    def __init__(self) -> None:
        self._known: dict[Stamp, Future[str]] = {}
        self._hashing: ThreadPoolExecutor | None = None

    def prefetch(self, key: str, data: Data) -> None:
        known = stamp(key, data)
        if known not in self._known:
            if self._hashing is None:
                self._hashing = ThreadPoolExecutor(max_workers=1, thread_name_prefix="digest")
            self._known[known] = self._hashing.submit(layers.sha256, data)

    def of(self, key: str, data: Data) -> str:
        known = stamp(key, data)
        if known not in self._known:
            done: Future[str] = Future()
            done.set_result(layers.sha256(data))
            self._known[known] = done
        return self._known[known].result()


# A night decodes the vote table's base file twice: `label_votes` reads the columns that decide what the day changes,
# then `label_state` reads the judgments, eight columns of them the same (night 60 of bench.nights: 6.6 M rows).
SHARED_READS = frozenset({"label_votes"})


class ColumnsRead:
    """Columns a run decoded of a :data:`SHARED_READS` asset's file (one file per asset, known by :func:`stamp`),
    kept until a later read of the same file takes them: that read decodes only the columns it lacks. The same
    arrays, types and footer metadata as the file gives."""

    def __init__(self) -> None:
        self._kept: dict[str, tuple[tuple[Stamp, bool], pa.Table]] = {}

    def columns(
        self, key: str, data: Data, names: list[str], dictionaries: bool, decode: Callable[[list[str]], pa.Table]
    ) -> pa.Table:
        """The ``names`` of the file ``data`` (under ``key``), read with ``dictionaries`` or not: the kept ones from
        memory (then released), the others decoded by ``decode``; a read that found none keeps what it decoded."""
        asset = posixpath.dirname(key)
        known = (stamp(key, data), dictionaries)
        earlier = self._kept.pop(asset, None)
        if earlier is None or earlier[0] != known:
            table = decode(names)
            self._kept[asset] = (known, table)
            return table
        kept = earlier[1]
        missing = [n for n in names if n not in kept.column_names]
        decoded = decode(missing) if missing else kept
        source = {n: decoded if n in missing else kept for n in names}
        schema = pa.schema([source[n].field(n) for n in names], metadata=kept.schema.metadata)
        return pa.Table.from_arrays([source[n].column(n) for n in names], schema=schema)


class ParquetIOManager(ConfigurableIOManager):
    """Pandas frames in, Parquet files out; the Arrow schema travels with the file.

    Dagster gives each run its own instance, shared by the run's steps when they run in one process (the nightly
    job's in-process executor). The latest partition of each :data:`SHARED_IN_RUN` asset a run writes is kept by
    that instance as the Arrow table its file holds (a layer: the whole table, resolved at its first read), and the
    run's later reads of it are served from memory: the same columns, types and values as the file gives. Another
    process (a multiprocess executor's step, a sensor, a notebook) reads the files."""

    storage: ResourceDependency[StorageResource]
    _written_in_run: dict[str, pa.Table | None] = PrivateAttr(default_factory=dict)
    _digests: FileDigests = PrivateAttr(default_factory=FileDigests)
    _read_in_run: ColumnsRead = PrivateAttr(default_factory=ColumnsRead)

    @staticmethod
    def key(asset_path: Sequence[str], partition: str | None) -> str:
        return warehouse.table_key(asset_path, partition)

    def handle_output(
        self, context: OutputContext, obj: pd.DataFrame | Mapping[str, pd.DataFrame | Layered] | None
    ) -> None:
        if obj is None:
            return
        name = context.asset_key.to_user_string()
        if context.has_asset_partitions:
            days = sorted(context.asset_partition_keys)
            if not days and isinstance(obj, Mapping):  # a run tagged with a day the partitions do not hold
                raise ValueError(f"{name}: {not_partitions(sorted(obj))}")
            if not isinstance(obj, Mapping) or sorted(obj) != days:
                got = f"days {sorted(obj)}" if isinstance(obj, Mapping) else type(obj).__name__
                raise TypeError(f"{name}: expected {{day: DataFrame}} for days {days}, got {got}")
            frames = dict(obj)
        else:
            frames = {None: obj}
        guideline = context.output_metadata.get(GUIDELINE_VERSION)
        guideline = getattr(guideline, "value", guideline)  # a MetadataValue, or the plain value
        for partition, frame in frames.items():
            if not isinstance(frame, pd.DataFrame | Layered):
                raise TypeError(f"{name} {partition or ''}: expected a pandas DataFrame, got {type(frame).__name__}")
            table = self._table(context.asset_key.path, frame)
            version = guideline.get(partition) if isinstance(guideline, Mapping) else guideline  # one per day
            if version is not None:
                table = table.replace_schema_metadata(
                    {**(table.schema.metadata or {}), FOOTER_GUIDELINE: str(version).encode()}
                )
            key = self.key(context.asset_key.path, partition)
            self.storage.warehouse_store.write_bytes(key, parquet_bytes(table))
            if name in SHARED_IN_RUN:  # the asset's latest day written; a layer kept whole once a read resolves it
                prefix = warehouse.table_prefix(context.asset_key.path) + "/"
                for earlier in [k for k in self._written_in_run if k.startswith(prefix)]:
                    del self._written_in_run[earlier]  # a run of many days holds one of them, not all
                self._written_in_run[key] = None if isinstance(frame, Layered) else table  # as a read returns it

    def load_input(self, context: InputContext) -> pd.DataFrame | DayTables:
        path = context.asset_key.path
        if not context.has_asset_partitions:
            return self._read(self.key(path, None))
        if not context.has_input_name:  # read from outside a run (defs.load_asset_value, a notebook): the table
            return pd.concat(
                [self._read(self.key(path, day)) for day in context.asset_partition_keys], ignore_index=True
            )
        existing = set(self.storage.warehouse_store.list(warehouse.table_prefix(path)))
        days = [p for p in context.asset_partition_keys if self.key(path, p) in existing]
        store = self.storage.warehouse_store
        return DayTables(
            days,
            lambda day, **columns: self._read(self.key(path, day), **columns),
            open_file=lambda day: self._open(self.key(path, day)),
            count=lambda day: table_rows(store, self.key(path, day)),
            read_arrow=lambda day, **columns: self._arrow(self.key(path, day), **columns),
        )

    def _arrow(
        self,
        key: str,
        keep: Iterable[str] | None = None,
        drop: Iterable[str] = frozenset(),
        *,
        dictionaries: bool = False,
    ) -> pa.Table:
        """:func:`arrow_table`, from memory for a shared table this run wrote (its text columns then plain, not
        dictionaries: the types pandas gets either way)."""
        store = self.storage.warehouse_store
        if key not in self._written_in_run:
            shared = self._read_in_run if posixpath.basename(posixpath.dirname(key)) in SHARED_READS else None
            return arrow_table(store, key, keep, drop, dictionaries=dictionaries, digests=self._digests, shared=shared)
        whole = self._written_in_run[key]
        if whole is None:
            whole = self._written_in_run[key] = arrow_table(store, key, digests=self._digests)
        drop = set(drop)
        return whole.select([n for n in whole.column_names if (keep is None or n in keep) and n not in drop])

    def _table(self, asset_path: Sequence[str], frame: pd.DataFrame | Layered) -> pa.Table:
        """What a partition stores: a layer over its base partition (labelops.layers) when the asset gives one and
        it pays, else the whole table (for a layer that does not pay, its base with the layer applied)."""
        if not isinstance(frame, Layered):
            return pa.Table.from_pandas(frame, preserve_index=False)
        store = self.storage.warehouse_store
        base_key = self.key(asset_path, frame.base)
        base_bytes = mapped(store, base_key)
        base = pq.ParquetFile(pa.BufferReader(base_bytes))
        base_rows = layers.rows(base.schema_arrow) or base.metadata.num_rows
        if base_rows != frame.base_rows:
            raise layers.StaleLayerError(
                f"{base_key} holds {base_rows} rows, and this day was folded into it when it held {frame.base_rows}: "
                "it was re-materialized meanwhile; materialize this day again"
            )
        depth = layers.depth(base.schema_arrow)
        if depth < layers.MAX_DEPTH and frame.rows() <= layers.MAX_SHARE * (base_rows + len(frame.appended)):
            table = layers.layer_table(frame, _data_schema(base.schema_arrow))
            if table is not None:
                rows = base_rows + len(frame.appended)
                digest = self._digests.of(base_key, base_bytes)
                return table.replace_schema_metadata(layers.footer(frame, digest, depth, rows))
        whole = frame.whole(read_arrow(store, base_key, data=base_bytes, digests=self._digests).to_pandas())
        return pa.Table.from_pandas(whole, preserve_index=False)

    def _open(self, key: str) -> pq.ParquetFile:
        """A partition's file to read in parts; a layer is resolved into its whole table first."""
        store = self.storage.warehouse_store
        file = parquet_file(store, key)
        if layers.base_of(file.schema_arrow) is None:
            return file
        buffer = io.BytesIO()
        pq.write_table(read_arrow(store, key, digests=self._digests), buffer)
        return pq.ParquetFile(pa.BufferReader(buffer.getvalue()))

    def _read(self, key: str, keep: tuple[str, ...] | None = None, drop: frozenset[str] = frozenset()) -> pd.DataFrame:
        return self._arrow(key, keep, drop).to_pandas()


def read_table(
    store: Store, key: str, keep: Iterable[str] | None = None, drop: Iterable[str] = frozenset()
) -> pd.DataFrame:
    """A warehouse table as the pipeline reads it (some columns, or all): a whole file, or a layer over its base
    partition (labelops.layers), which a Parquet reader alone would read as only the rows the layer holds."""
    return arrow_table(store, key, keep, drop).to_pandas()


def arrow_table(
    store: Store,
    key: str,
    keep: Iterable[str] | None = None,
    drop: Iterable[str] = frozenset(),
    *,
    dictionaries: bool = False,
    digests: FileDigests | None = None,
    shared: ColumnsRead | None = None,
) -> pa.Table:
    """:func:`read_table` before pandas (with ``dictionaries``, ``digests`` and ``shared``, as :func:`read_arrow`
    reads)."""
    keep, drop = (set(keep) if keep is not None else None), set(drop)
    data = mapped(store, key)
    schema = _data_schema(pq.read_schema(pa.BufferReader(data)))
    names = [n for n in schema.names if (keep is None or n in keep) and n not in drop]
    return read_arrow(store, key, names, data, dictionaries=dictionaries, digests=digests, shared=shared)


def read_arrow(
    store: Store,
    key: str,
    names: list[str] | None = None,
    data: Data | None = None,
    *,
    dictionaries: bool = False,
    digests: FileDigests | None = None,
    shared: ColumnsRead | None = None,
) -> pa.Table:
    """The table a file holds: read whole, or a layer put over its base (read the same way, checked to be the
    base the layer was written over). With ``dictionaries``, the text columns a file stores dictionary-encoded
    stay dictionaries (each part of a layered table with its own); with ``digests``, a base file this run hashed
    already is not hashed again; with ``shared``, a whole file's columns decoded by the run's previous read of it
    are not decoded again."""
    data = data if data is not None else mapped(store, key)
    file = pq.ParquetFile(pa.BufferReader(data))
    found = layers.base_of(file.schema_arrow)
    if found is None:
        if shared is None:
            return _read_columns(data, file, names, dictionaries)
        if digests is not None:  # the base of the layer the asset writes next: its digest is wanted then
            digests.prefetch(key, data)
        return shared.columns(
            key,
            data,
            names if names is not None else file.schema_arrow.names,
            dictionaries,
            lambda missing: _read_columns(data, file, missing, dictionaries),
        )
    base, digest, changed = found
    base_key = f"{posixpath.dirname(key)}/{base}.parquet"
    if not store.exists(base_key):
        raise layers.StaleLayerError(
            f"{key}: a layer over {base_key}, which is gone; re-materialize this partition to write it whole"
        )
    base_data = mapped(store, base_key)
    if (digests.of(base_key, base_data) if digests is not None else layers.sha256(base_data)) != digest:
        raise layers.StaleLayerError(
            f"{key}: a layer over {base_key}, which was re-materialized after it; re-materialize this partition "
            "(for the state assets, the state sensor folds the later days again in order)"
        )
    names = names if names is not None else _data_schema(file.schema_arrow).names
    layer = _read_columns(data, file, [*names, layers.ROW], dictionaries)
    base_table = read_arrow(
        store, base_key, names, base_data, dictionaries=dictionaries, digests=digests, shared=shared
    )
    return layers.resolve(base_table, layer, changed)


DICTIONARY_SAMPLE = 20_000  # rows whose distinct values decide whether a column is dictionary-encoded


def parquet_bytes(table: pa.Table) -> bytes:
    """A table's file as the warehouse stores it: zstd, the few-valued columns dictionary-encoded, the item id's
    bounds alone recorded. The benchmark's history is written by it too, so a night reads files like its own."""
    buffer = io.BytesIO()
    pq.write_table(
        table,
        buffer,
        compression="zstd",
        use_dictionary=dictionary_columns(table),
        write_statistics=statistics_columns(table),
    )
    return buffer.getvalue()


def dictionary_columns(table: pa.Table) -> list[str]:
    """The columns worth dictionary-encoding: those with at most a tenth as many distinct values as rows in their
    first ``DICTIONARY_SAMPLE`` rows (kinds, labels, days, files, annotators; any column of a small table).

    Parquet's default tries a dictionary for every column and falls back to plain values once it outgrows a page:
    ids, lists of days and coordinates then carry a useless first dictionary page. A label state of 1.2 M rows
    was written in 0.57 s and read into pandas in 0.40 s that way; with these columns alone, 0.47 s and 0.19 s."""
    sample = table.slice(0, DICTIONARY_SAMPLE)
    limit = max(1_000, sample.num_rows // 10)
    chosen = []
    for name, column in zip(sample.column_names, sample.columns, strict=True):
        if pa.types.is_nested(column.type) or pa.types.is_null(column.type):  # lists of points; no values at all
            continue
        if pc.count_distinct(column, mode="all").as_py() <= limit:
            chosen.append(name)
    return chosen


STATISTICS = ("item_id",)  # the column readers skip row groups by (DayTables.only_items)


def statistics_columns(table: pa.Table) -> list[str] | bool:
    """The columns whose minimum and maximum the file records: the item id, which readers skip row groups by. The
    bounds of every other column cost a fifth of a write (a 1.2 M-row label state: 0.60 s with them, 0.49 s
    without) and no reader here uses them."""
    return [name for name in STATISTICS if name in table.column_names] or False


def _read_columns(data: Data, file: pq.ParquetFile, names: list[str] | None, dictionaries: bool = False) -> pa.Table:
    """``file.read(columns=names)`` (``file`` opened on ``data``), with the text columns the file stores
    dictionary-encoded throughout read as their dictionaries and indices, then expanded by Arrow: the same table,
    but Parquet's own expansion of a vote table's low-cardinality texts (kinds, labels, days, files) took 0.6-3 s
    for 6.6 M rows and 14 columns, against 0.4 s read as dictionaries."""
    names = names if names is not None else file.schema_arrow.names
    coded = _dictionary_encoded(file, names)
    if not coded:
        return file.read(columns=names)
    table = pq.ParquetFile(pa.BufferReader(data), read_dictionary=coded).read(columns=names)
    if dictionaries:
        return table
    for name in coded:
        index = table.schema.get_field_index(name)
        field = file.schema_arrow.field(name)
        table = table.set_column(index, field, table.column(index).cast(field.type))
    return table


def _dictionary_encoded(file: pq.ParquetFile, names: list[str]) -> list[str]:
    """Text columns whose data pages hold only dictionary indices in every row group (under 4 bytes a value on
    average, uncompressed): a dictionary that outgrew Parquet's page limit falls back to plain values, which are
    read faster as plain strings (ids)."""
    meta, schema = file.metadata, file.schema_arrow
    if not meta.num_rows or not meta.num_row_groups:
        return []
    text = {
        f.name for f in schema if f.name in names and (pa.types.is_string(f.type) or pa.types.is_large_string(f.type))
    }
    sizes: dict[str, int] = {}
    for group in range(meta.num_row_groups):
        row_group = meta.row_group(group)
        for index in range(row_group.num_columns):
            column = row_group.column(index)
            if column.path_in_schema in text:
                sizes[column.path_in_schema] = sizes.get(column.path_in_schema, 0) + column.total_uncompressed_size
    return [name for name, size in sizes.items() if size < 4 * meta.num_rows]


def _data_schema(schema: pa.Schema) -> pa.Schema:
    """A file's table columns: a layer's row positions are not one of them."""
    index = schema.get_field_index(layers.ROW)
    return schema if index < 0 else schema.remove(index)


def _parquet_bytes(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), buffer)
    return buffer.getvalue()


def footer(store: Store, key: str) -> pq.FileMetaData:
    """A Parquet file's footer, read from its last bytes only (one ranged read on S3, two for a large footer)."""
    tail = store.read_tail(key, FOOTER_PROBE)
    length = struct.unpack("<I", tail[-8:-4])[0]
    if length + 8 > len(tail):
        tail = store.read_tail(key, length + 8)
    # the footer with the file's leading magic bytes is a file pyarrow reads the metadata of
    return pq.read_metadata(pa.BufferReader(b"PAR1" + tail[-(length + 8) :]))


def table_rows(store: Store, key: str) -> int:
    """A warehouse table's rows from its footer: a layer's footer records its whole table's."""
    meta = footer(store, key)
    return layers.rows(meta.schema.to_arrow_schema()) or meta.num_rows


def recorded_guideline(store: Store, key: str) -> str | None:
    """The guideline version a warehouse table was computed under, from its Parquet footer alone (None when it
    records none): a sensor can check every day without reading the data."""
    value = (footer(store, key).schema.to_arrow_schema().metadata or {}).get(FOOTER_GUIDELINE)
    return value.decode() if value is not None else None
