"""A Parquet IO manager for daily-partitioned tables in the warehouse.

Layout: ``tables/<asset>/<YYYY-MM-DD>.parquet`` per partition and
``tables/<asset>/all.parquet`` for unpartitioned assets. Writes go through the
store's atomic write, so a crashed run leaves the previous file or none.

A daily asset returns ``{day: frame}`` for the days of its run (several in a
single-run backfill) and gets one file per day. A daily input arrives as
`DayTables`, a mapping of the days that exist to their tables, each read when it
is used: a year of look-back costs a directory listing, not a year of tables in
memory. A day never materialized is simply absent, so a fresh warehouse does not
break ``--select '*' --partition DAY`` (see assets/partitioned.py).
"""

import io
from collections.abc import Callable, Iterable, Iterator, Mapping

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from dagster import ConfigurableIOManager, InputContext, OutputContext, ResourceDependency

from resources.storage import StorageResource

UNPARTITIONED = "all"


class DayTables(Mapping[str, pd.DataFrame]):
    """Days of a daily table that exist, in day order; a day's table is read on each access."""

    def __init__(self, days: list[str], read: Callable[..., pd.DataFrame], keep: tuple[str, ...] | None = None,
                 drop: frozenset[str] = frozenset()) -> None:
        self._days, self._read, self._keep, self._drop = sorted(days), read, keep, drop

    def select(self, keep: Iterable[str] | None = None, drop: Iterable[str] = ()) -> "DayTables":
        """The same days, reading only some columns: Parquet decodes nothing else."""
        return DayTables(self._days, self._read, tuple(keep) if keep is not None else None, frozenset(drop))

    def __getitem__(self, day: str) -> pd.DataFrame:
        if day not in self._days:
            raise KeyError(day)
        return self._read(day, keep=self._keep, drop=self._drop)

    def __contains__(self, day: object) -> bool:  # without reading the table
        return day in self._days

    def __iter__(self) -> Iterator[str]:
        return iter(self._days)

    def __len__(self) -> int:
        return len(self._days)


class ParquetIOManager(ConfigurableIOManager):
    """Pandas frames in, Parquet files out; the Arrow schema travels with the file."""

    storage: ResourceDependency[StorageResource]

    @staticmethod
    def key(asset_path: list[str], partition: str | None) -> str:
        return "/".join(["tables", *asset_path, f"{partition or UNPARTITIONED}.parquet"])

    def handle_output(self, context: OutputContext, obj: pd.DataFrame | Mapping[str, pd.DataFrame] | None) -> None:
        if obj is None:
            return
        name = context.asset_key.to_user_string()
        if context.has_asset_partitions:
            days = sorted(context.asset_partition_keys)
            if not isinstance(obj, Mapping) or sorted(obj) != days:
                got = f"days {sorted(obj)}" if isinstance(obj, Mapping) else type(obj).__name__
                raise TypeError(f"{name}: expected {{day: DataFrame}} for days {days}, got {got}")
            frames = dict(obj)
        else:
            frames = {None: obj}
        for partition, frame in frames.items():
            if not isinstance(frame, pd.DataFrame):
                raise TypeError(f"{name} {partition or ''}: expected a pandas DataFrame, got {type(frame).__name__}")
            buffer = io.BytesIO()
            pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), buffer, compression="zstd")
            self.storage.warehouse_store.write_bytes(self.key(context.asset_key.path, partition), buffer.getvalue())

    def load_input(self, context: InputContext) -> pd.DataFrame | DayTables:
        path = context.asset_key.path
        if not context.has_asset_partitions:
            return self._read(self.key(path, None))
        existing = set(self.storage.warehouse_store.list("/".join(["tables", *path])))
        days = [p for p in context.asset_partition_keys if self.key(path, p) in existing]
        return DayTables(days, lambda day, **columns: self._read(self.key(path, day), **columns))

    def _read(self, key: str, keep: tuple[str, ...] | None = None, drop: frozenset[str] = frozenset()) -> pd.DataFrame:
        table = pq.ParquetFile(pa.BufferReader(self.storage.warehouse_store.read_bytes(key)))
        names = [n for n in table.schema_arrow.names if (keep is None or n in keep) and n not in drop]
        return table.read(columns=names).to_pandas()
