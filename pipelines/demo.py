"""`make demo`: seed the demo landing zone, then run the nightly job for every demo day.

Runs go into the persistent instance in DAGSTER_HOME, so `make ui` shows them afterwards.
"""

from __future__ import annotations

import os
import sys

# The demo writes its landing zone moments before the first run: nothing is still arriving.
os.environ.setdefault("LABELOPS_SETTLE_SECONDS", "0")

from dagster import DagsterInstance, build_sensor_context, materialize  # noqa: E402

from labelops.demo import days, seed_landing  # noqa: E402
from pipelines.automation import drift_sensor  # noqa: E402
from pipelines.definitions import defs  # noqa: E402


# Step-level debug logs stay in the instance (and the UI); the terminal gets a line per day.
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
# The demo's catalog has lighting, so its snapshots stratify by it as well as by the scene label.
NIGHTLY = {**QUIET, "ops": {"dataset_snapshot": {"config": {"stratify_by": ["label", "lighting"]}}}}
# The demo's production logs name no frames (no `uri` column): its production frames are taken to sit beside the raw
# ones, so relabel batches can send production items (docs/labeling.md).
PRODUCTION_FRAMES = "s3://fleet-camera/production/{day}/{item_id}.jpg"
RELABEL = {**QUIET, "ops": {"relabel_batch": {"config": {"production_uri_template": PRODUCTION_FRAMES}}}}


def main() -> int:
    storage = defs.resources["storage"]
    counts = seed_landing(storage.landing_store)
    print(f"seeded {storage.landing}: {counts}")
    job = defs.resolve_job_def("nightly_job")
    instance = DagsterInstance.get()
    failed = []
    cursor = None
    for day in days():
        result = job.execute_in_process(
            partition_key=day, instance=instance, raise_on_error=False, run_config=NIGHTLY
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
        cursor = _drift_tick(instance, cursor)
    print(f"warehouse: {storage.warehouse}")
    return 1 if failed else 0


def _drift_tick(instance: DagsterInstance, cursor: str | None) -> str | None:
    """What the daemon's drift sensor would do after the run: request relabel_batch for a drifted day."""
    context = build_sensor_context(instance=instance, cursor=cursor, definitions=defs)
    result = drift_sensor.evaluate_tick(context)
    for request in result.run_requests or []:
        run = materialize(list(defs.assets), selection=request.asset_selection, partition_key=request.partition_key,
                          instance=instance, resources=defs.resources, tags=request.tags, run_config=RELABEL)
        batch = run.asset_materializations_for_node("relabel_batch")[0].metadata
        print(f"  drift on {request.partition_key}: relabel_batch sent {batch['dagster/row_count'].value} items "
              f"{batch['by_kind'].value} ({request.run_key})")
    return result.cursor or cursor


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
