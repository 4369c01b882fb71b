"""Daily assets that a backfill runs as one run per range of days.

With ``BackfillPolicy.single_run()`` Dagster hands an asset every day of a backfill range at
once (``context.partition_keys``). Each asset still computes day by day, exactly as a one-day
run does, and returns ``{day: frame}`` for the days of its run; the IO manager writes one
Parquet file per day. Every daily input arrives as `DayTables`, the days that exist mapped to
their tables, read when used (``select`` reads only some columns): `for_day` picks one day,
`concat_days` joins a window. Assets whose inputs look back over a window (coverage, drift, the
outboxes) keep one run per day, since a window per day cannot be cut from the union of windows.
"""

from collections.abc import Mapping

import pandas as pd
import pyarrow as pa
from dagster import AssetExecutionContext, BackfillPolicy

from assets.partitions import daily_partitions
from resources.io_manager import DayTables
from resources.settings import not_partitions

SINGLE_RUN = BackfillPolicy.single_run()

Frames = DayTables  # what a daily input is; a daily asset returns DayFrames
DayFrames = dict[str, pd.DataFrame]


def days(context: AssetExecutionContext) -> list[str]:
    """The run's days. A run tagged with a day the partitions do not hold (today's, before it is over) stops
    here, before an asset reads or writes anything of it."""
    keys = sorted(context.partition_keys)
    missing = [day for day in keys if not daily_partitions.has_partition_key(day)]
    if missing:
        raise ValueError(not_partitions(missing))
    return keys


def for_day(frames: Mapping[str, pd.DataFrame], day: str, asset: str) -> pd.DataFrame:
    _require(frames, day, asset)
    return frames[day]


def arrow_for_day(frames: DayTables, day: str, asset: str) -> pa.Table:
    """:func:`for_day` as Arrow (DayTables.arrow)."""
    _require(frames, day, asset)
    return frames.arrow(day)


def _require(frames: Mapping[str, pd.DataFrame], day: str, asset: str) -> None:
    if day not in frames:
        raise LookupError(f"{asset} has not been materialized for {day}; materialize it for that day first")


def concat_days(frames: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """A window of days as one table, in day order (days never materialized are absent)."""
    parts = [frames[day] for day in sorted(frames)]
    if not parts:
        return pd.DataFrame()
    if len(parts) == 1:
        return parts[0]
    non_empty = [f for f in parts if len(f)]
    return pd.concat(non_empty or parts[:1], ignore_index=True)
