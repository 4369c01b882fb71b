"""The daily partitions every dated asset shares: one per landing day, up to yesterday (or up to the configured
end, as the demo does, so the UI shows its days rather than years of empty ones)."""

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from dagster import AssetCheckSpec, AssetIn, AssetsDefinition, BackfillPolicy, DailyPartitionsDefinition, asset

from assets.metadata import OWNERS
from resources.settings import Settings

SETTINGS = Settings.from_env()
daily_partitions = DailyPartitionsDefinition(start_date=SETTINGS.start_date, end_date=SETTINGS.end_date, timezone="UTC")


def daily_asset(
    group: str,
    *,
    kinds: set[str],
    description: str,
    single_run: bool = False,
    code_version: str = "1",
    ins: Mapping[str, AssetIn] | None = None,
    check_specs: Sequence[AssetCheckSpec] | None = None,
) -> Callable[[Callable[..., Any]], AssetsDefinition]:
    """The decorator of a daily table asset: the partitions, its group's owners, and what differs per asset.
    ``single_run``: a range of days backfills in one run (the asset's inputs are the same days)."""
    return asset(
        partitions_def=daily_partitions,
        backfill_policy=BackfillPolicy.single_run() if single_run else None,
        group_name=group,
        owners=OWNERS[group],
        kinds=kinds,
        code_version=code_version,
        ins=ins,
        check_specs=check_specs,
        description=description,
    )
