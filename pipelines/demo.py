"""`make demo`: seed the demo landing zone, then run every demo night as the daemon would.

A night is the nightly job, the relabel sensors' ticks (a relabel batch when the day drifted, or when its label state
holds items a guideline change left ambiguous) and, the next day, a simulated reviewer's answers to that batch as a
Label Studio export: the loop closes inside the demo.

Runs go into the persistent instance in DAGSTER_HOME, so `make ui` shows them afterwards.
"""

from __future__ import annotations

import io
import os
import sys
from datetime import date, timedelta
from typing import Any

# The demo writes its landing zone moments before the first run: nothing is still arriving.
os.environ.setdefault("LABELOPS_SETTLE_SECONDS", "0")

import pandas as pd
from dagster import DagsterInstance, SensorDefinition, build_sensor_context, materialize

from labelops import warehouse
from labelops.demo import answer_tasks, days, seed_landing
from pipelines.automation import drift_sensor, needs_relabel_sensor
from pipelines.definitions import ASSETS, defs

# Step-level debug logs stay in the instance (and the UI); the terminal gets a line per day.
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
# The demo's catalog has lighting, so its snapshots stratify by it as well as by the scene label.
NIGHTLY = {**QUIET, "ops": {"dataset_snapshot": {"config": {"stratify_by": ["label", "lighting"]}}}}
# The demo's production logs name no frames (no `uri` column): its production frames are taken to sit beside the raw
# ones, so relabel batches can send production items (docs/labeling.md).
PRODUCTION_FRAMES = "s3://fleet-camera/production/{day}/{item_id}.jpg"
RELABEL = {**QUIET, "ops": {"relabel_batch": {"config": {"production_uri_template": PRODUCTION_FRAMES}}}}
# The sensors that send relabel batches, ticked in this order after each night (drift first: a day it sent a batch
# for is left alone by the other).
RELABEL_SENSORS = (drift_sensor, needs_relabel_sensor)


def main() -> int:
    resources: dict[str, Any] = dict(defs.resources or {})
    storage = resources["storage"]
    seeded = seed_landing(storage.landing_store)
    print(f"seeded {storage.landing}: {seeded.counts}")
    instance = DagsterInstance.get()
    failed = run_nights(days(), instance, resources, seeded.truth)
    exports = materialize(
        ASSETS, selection=["snapshot_exports"], instance=instance, resources=resources, run_config=QUIET
    )
    version = exports.asset_materializations_for_node("snapshot_exports")[0].metadata["version"].value
    print(f"COCO and YOLO files of the latest snapshot: snapshots/{version}/export/ (snapshot_exports)")
    print(f"warehouse: {storage.warehouse}")
    return 1 if failed else 0


def run_nights(
    nights: list[str], instance: DagsterInstance, resources: dict[str, Any], truth: pd.DataFrame
) -> list[str]:
    """Each night as the daemon would run it: the nightly job, the relabel sensors' ticks (a relabel batch for a
    drifted day, or for a day whose state holds items waiting for a relabel), and the simulated reviewer's answers
    to that batch, delivered as a Label Studio export the next day. Returns the days whose run failed."""
    selection = list(defs.resolve_job_def("nightly_job").asset_layer.executable_asset_keys)
    failed: list[str] = []
    cursors: dict[str, str | None] = {}
    for day in nights:
        result = materialize(
            ASSETS,
            selection=selection,
            partition_key=day,
            instance=instance,
            resources=resources,
            raise_on_error=False,
            run_config=NIGHTLY,
        )
        checks = result.get_asset_check_evaluations()
        failing = [f"{c.asset_key.to_user_string()}:{c.check_name}" for c in checks if not c.passed]
        print(
            f"{day}: run {result.run_id[:8]} {'succeeded' if result.success else 'FAILED'}; "
            f"{_row_counts(result)}; failed checks: {failing or 'none'}"
        )
        if not result.success:
            failed.append(day)
        for sensor in RELABEL_SENSORS:
            cursors[sensor.name] = _relabel_tick(sensor, instance, resources, cursors.get(sensor.name), nights, truth)
    return failed


def _relabel_tick(
    sensor: SensorDefinition,
    instance: DagsterInstance,
    resources: dict[str, Any],
    cursor: str | None,
    nights: list[str],
    truth: pd.DataFrame,
) -> str | None:
    """What the daemon's relabel sensor would do after the run: request relabel_batch for a drifted day (drift_sensor)
    or for a day whose state holds items a guideline change left ambiguous (needs_relabel_sensor); then the
    reviewer answers the batch the next day."""
    context = build_sensor_context(instance=instance, cursor=cursor, definitions=defs)
    result = sensor.evaluate_tick(context)
    for request in result.run_requests or []:
        day = request.partition_key
        if day is None:
            raise RuntimeError(f"{sensor.name} requested a run without a day ({request.run_key})")
        run = materialize(
            ASSETS,
            selection=request.asset_selection,
            partition_key=day,
            instance=instance,
            resources=resources,
            tags=request.tags,
            run_config=RELABEL,
        )
        batch = run.asset_materializations_for_node("relabel_batch")[0].metadata
        print(
            f"  {request.tags['labelops/trigger']} on {day}: relabel_batch sent {batch['dagster/row_count'].value} "
            f"items {batch['by_kind'].value} ({request.run_key})"
        )
        _deliver_answers(resources, day, nights, truth)
    return result.cursor or cursor


def _deliver_answers(resources: dict[str, Any], day: str, nights: list[str], truth: pd.DataFrame) -> None:
    """The reviewer answers the day's batch in Label Studio; its export lands the next day (docs/labeling.md)."""
    answered_on = (date.fromisoformat(day) + timedelta(days=1)).isoformat()
    if answered_on not in nights:
        print(f"  answers to relabel-{day} would arrive on {answered_on}, after the demo's last night")
        return
    storage = resources["storage"]
    tasks = storage.warehouse_store.read_bytes(f"{warehouse.outbox('relabel', day)}/relabel-{day}.label_studio.json")
    production = pd.read_csv(io.BytesIO(storage.landing_store.read_bytes(f"production/{day}/predictions.csv")))
    export, answered = answer_tasks(tasks, truth, production, answered_on)
    key = f"exports/{answered_on}/label_studio_relabel-{day}_answers.json"
    storage.landing_store.write_bytes(key, export)
    print(f"  a reviewer answered {answered} tasks of relabel-{day}: {key}")


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
