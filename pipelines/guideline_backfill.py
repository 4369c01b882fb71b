"""A guideline change, backfilled: the days the warehouse computed under a version that is no longer the one in
force, recomputed in day order through the dataset snapshot.

`make backfill` (or `python -m pipelines.guideline_backfill [--dry-run]`) with the same settings as the nightly
job. Every table the guideline reaches records in its Parquet footer the version it was computed under; a day
is stale when one of its records differs from the version the configuration puts in force on it. That holds
whatever a sensor remembers: a version published before any sensor ran, or while it was stopped, is found the
same way. The guideline sensor (pipelines/automation.py) requests the same runs.

What a day's run recomputes: validation, quality, the label state, coverage, drift and the quality report (every
asset that reads labels under the guideline in force); not the ingest (the files as delivered) nor the outboxes
(tasks already sent stay sent). The state folds day by day, so the days run in order; the last one publishes a
snapshot from the corrected state, whose manifest names its guideline and whose diff lists what was remapped.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from typing import Any

from dagster import AssetsDefinition, AssetSelection, DagsterInstance, materialize

from labelops import landing, snapshots, warehouse
from labelops.guidelines import GuidelineError, GuidelineSet
from labelops.storage import Store
from resources.io_manager import recorded_guideline
from resources.storage import StorageResource

# The daily assets a guideline change recomputes, and the snapshot the last day's run publishes.
GUIDELINE_GROUPS = ("validate", "quality", "state", "coverage", "monitor", "reports")
DAY_ASSETS = AssetSelection.groups(*GUIDELINE_GROUPS)
SNAPSHOT = AssetSelection.assets("dataset_snapshot")
# Tables whose footers say which guideline a day was computed under: the first, the state, and the last reader.
WITNESSES = ("validated_annotations", "label_state", "coverage_report")


@dataclass(frozen=True)
class StaleDay:
    day: str
    in_force: str  # the version the configuration puts in force on the day
    recorded: dict[str, str]  # table -> the version it was computed under, for the tables that differ


def stale_days(store: Store, guidelines: GuidelineSet) -> list[StaleDay]:
    """Days whose tables were computed under another guideline than the one now in force on them, in day order.

    Only footers are read. A table that records no version (written before versions were recorded) is not
    judged; a day before the first version's effective date has no version to compare with."""
    recorded: dict[str, dict[str, str]] = {}
    for table in WITNESSES:
        prefix = warehouse.table_prefix([table])
        for key in store.list(prefix):
            day = key.rsplit("/", 1)[-1].removesuffix(".parquet")
            if landing.DAY.match(day):
                version = recorded_guideline(store, key)
                if version is not None:
                    recorded.setdefault(day, {})[table] = version
    stale = []
    for day, versions in sorted(recorded.items()):
        try:
            in_force = guidelines.in_force(day).version
        except GuidelineError:
            continue
        differ = {table: version for table, version in versions.items() if version != in_force}
        if differ:
            stale.append(StaleDay(day, in_force, differ))
    return stale


def snapshot_run_config(store: Store) -> dict:
    """Run config that curates the new snapshot as the latest one was curated (its manifest's `curation`): a
    backfill changes the labels' guideline, never the curation settings."""
    version = snapshots.latest(store)
    curation = snapshots.manifest(store, version).get("curation") if version else None
    return {"ops": {"dataset_snapshot": {"config": curation}}} if curation else {}


def describe(stale: list[StaleDay]) -> str:
    if not stale:
        return "every day's tables were computed under the guideline now in force: nothing to backfill"
    lines = [f"{len(stale)} day(s) to recompute, in order, then a new dataset snapshot:"]
    lines += [
        f"  {s.day}: in force {s.in_force}; computed under "
        + ", ".join(f"{table} {version}" for table, version in sorted(s.recorded.items()))
        for s in stale
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="list the days that would run, run nothing")
    args = parser.parse_args(argv)
    from pipelines.definitions import defs

    resources: dict[str, Any] = dict(defs.resources or {})
    storage: StorageResource = resources["storage"]
    store = storage.warehouse_store
    stale = stale_days(store, resources["guidelines"].load())
    print(describe(stale))
    if args.dry_run or not stale:
        return 0
    # runs go to the instance the UI reads when DAGSTER_HOME is set (as `make` sets it), else to a throwaway one
    instance = DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else DagsterInstance.ephemeral()
    assets = [a for a in defs.assets or [] if isinstance(a, AssetsDefinition)]
    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    curation = snapshot_run_config(store)
    version = None
    for day in stale:
        last = day is stale[-1]
        result = materialize(
            assets,
            selection=DAY_ASSETS | SNAPSHOT if last else DAY_ASSETS,
            partition_key=day.day,
            instance=instance,
            resources=resources,
            raise_on_error=False,
            tags={"labelops/trigger": f"guideline backfill {day.in_force}"},
            run_config={**quiet, **curation} if last else quiet,
        )
        print(f"{day.day}: run {result.run_id[:8]} {'succeeded' if result.success else 'FAILED'}")
        if not result.success:
            print(f"stopped at {day.day}: the later days fold into it; fix the failure and run again", file=sys.stderr)
            return 1
        if last:
            version = str(result.asset_materializations_for_node("dataset_snapshot")[0].metadata["version"].value)
    document = snapshots.manifest(store, str(version))
    print(
        f"snapshot {version} (guideline {document['guideline_version']}, parent {document['parent_version']}): "
        f"diff {document['diff_summary']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
