"""A Parquet IO manager for daily-partitioned tables in the warehouse.

Layout: ``tables/<asset>/<YYYY-MM-DD>.parquet`` per partition and
``tables/<asset>/all.parquet`` for unpartitioned assets. Writes go through the
store's atomic write, so a crashed run leaves the previous file or none.

An unpartitioned asset reading a daily one receives the days that exist,
concatenated in day order; a day never materialized is simply absent, so a fresh
warehouse does not break ``--select '*' --partition DAY``.
"""

import io

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from dagster import ConfigurableIOManager, InputContext, OutputContext, ResourceDependency

from resources.storage import StorageResource

UNPARTITIONED = "all"


class ParquetIOManager(ConfigurableIOManager):
    """Pandas frames in, Parquet files out; the Arrow schema travels with the file."""

    storage: ResourceDependency[StorageResource]

    @staticmethod
    def key(asset_path: list[str], partition: str | None) -> str:
        return "/".join(["tables", *asset_path, f"{partition or UNPARTITIONED}.parquet"])

    def handle_output(self, context: OutputContext, obj: pd.DataFrame | None) -> None:
        if obj is None:
            return
        if not isinstance(obj, pd.DataFrame):
            raise TypeError(f"{context.asset_key.to_user_string()}: expected a pandas DataFrame, got {type(obj).__name__}")
        partitions = context.asset_partition_keys if context.has_asset_partitions else [None]
        if len(partitions) > 1:
            raise ValueError(
                f"{context.asset_key.to_user_string()}: one output for {len(partitions)} partitions; "
                "this asset is materialized one partition per run"
            )
        buffer = io.BytesIO()
        pq.write_table(pa.Table.from_pandas(obj, preserve_index=False), buffer, compression="zstd")
        self.storage.warehouse_store.write_bytes(self.key(context.asset_key.path, partitions[0]), buffer.getvalue())

    def load_input(self, context: InputContext) -> pd.DataFrame:
        path = context.asset_key.path
        store = self.storage.warehouse_store
        if not context.has_asset_partitions:
            return self._read(self.key(path, None))
        wanted = context.asset_partition_keys
        if len(wanted) == 1:
            return self._read(self.key(path, wanted[0]))
        existing = set(store.list("/".join(["tables", *path])))
        frames = [self._read(k) for k in (self.key(path, p) for p in sorted(wanted)) if k in existing]
        if not frames:
            return pd.DataFrame()
        return pd.concat([f for f in frames if len(f)] or frames[:1], ignore_index=True)

    def _read(self, key: str) -> pd.DataFrame:
        data = self.storage.warehouse_store.read_bytes(key)
        return pq.read_table(pa.BufferReader(data)).to_pandas()
