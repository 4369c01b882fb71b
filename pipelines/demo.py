"""`make demo`: seed the demo landing zone, then run the nightly job for every demo day.

Runs go into the persistent instance in DAGSTER_HOME, so `make ui` shows them afterwards.
"""

from __future__ import annotations

import sys

from dagster import DagsterInstance

from labelops.demo import days, seed_landing
from pipelines.definitions import defs


# Step-level debug logs stay in the instance (and the UI); the terminal gets a line per day.
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def main() -> int:
    storage = defs.resources["storage"]
    counts = seed_landing(storage.landing_store)
    print(f"seeded {storage.landing}: {counts}")
    job = defs.resolve_job_def("nightly_job")
    instance = DagsterInstance.get()
    failed = []
    for day in days():
        result = job.execute_in_process(
            partition_key=day, instance=instance, raise_on_error=False, run_config=QUIET
        )
        checks = result.get_asset_check_evaluations()
        failing = [f"{c.asset_key.to_user_string()}:{c.check_name}" for c in checks if not c.passed]
        counts = _row_counts(result)
        print(
            f"{day}: run {result.run_id[:8]} {'succeeded' if result.success else 'FAILED'}; "
            f"{counts}; failed checks: {failing or 'none'}"
        )
        if not result.success:
            failed.append(day)
    print(f"warehouse: {storage.warehouse}")
    return 1 if failed else 0


def _row_counts(result) -> str:
    """Rows per table asset of the run, as the operator would read them off the UI."""
    shown = ("label_exports", "validated_annotations", "quarantined_annotations", "dataset_snapshot")
    counts = {}
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization
        name = materialization.asset_key.to_user_string()
        if name in shown:
            counts[name] = materialization.metadata["dagster/row_count"].value
    return ", ".join(f"{name} {counts[name]}" for name in shown if name in counts)


if __name__ == "__main__":
    sys.exit(main())
