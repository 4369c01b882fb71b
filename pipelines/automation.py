"""Schedules and sensors: the nightly refresh, drift -> relabel, items a guideline change left ambiguous -> relabel,
guideline changes -> backfill, new files -> the day's run, a re-materialized state day -> the later days folded again."""

import hashlib
import itertools
import json
import os
import time
from collections.abc import Mapping, Sequence
from datetime import timedelta

from dagster import (
    AssetKey,
    AssetRecordsFilter,
    AssetSelection,
    DagsterEventType,
    DagsterRunStatus,
    DefaultSensorStatus,
    EventLogRecord,
    RunRequest,
    RunsFilter,
    ScheduleEvaluationContext,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    schedule,
    sensor,
)

from assets.partitions import daily_partitions
from labelops import landing
from pipelines import guideline_backfill
from resources.storage import StorageResource
from resources.validation import GuidelinesResource

LANDING_AREAS = ("exports", "items", "production")
RELABEL_SELECTION = [AssetKey("relabel_batch"), AssetKey("quality_report")]
# Daily assets that fold into their own previous day (assets/state.py). annotator_model is written by label_state's
# step, so it goes with it in a run; staleness is judged on the three (a warehouse from before annotator_model
# existed has days without it).
STATE_ASSETS = [AssetKey("item_index"), AssetKey("label_votes"), AssetKey("label_state")]
STATE_RUN = [*STATE_ASSETS, AssetKey("annotator_model")]
NIGHTLY_TIMEZONE = os.environ.get("LABELOPS_TIMEZONE", "UTC")
UNFINISHED_STATUSES = (
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
    DagsterRunStatus.CANCELING,
)


@schedule(
    cron_schedule="0 2 * * *",
    job_name="nightly_job",
    execution_timezone=NIGHTLY_TIMEZONE,
    description="02:00 every night: the whole pipeline for the day that just ended.",
)
def nightly_schedule(context: ScheduleEvaluationContext) -> RunRequest:
    day = (context.scheduled_execution_time - timedelta(days=1)).date().isoformat()
    return RunRequest(run_key=f"nightly-{day}", partition_key=day, tags={"labelops/trigger": "nightly"})


@sensor(
    target=AssetSelection.assets(*RELABEL_SELECTION),
    minimum_interval_seconds=300,
    description="When a day's production_drift shows dataset drift, request that day's relabel_batch (and the "
    "day's quality report again, to show the batch), once.",
)
def drift_sensor(context: SensorEvaluationContext):
    records = _new_materializations(context, "production_drift")
    if not records:
        return SkipReason("no new production_drift materializations")
    requests, sent = [], []
    for record in records:
        materialization = record.asset_materialization
        if materialization is None:
            continue
        drifted = materialization.metadata.get("dataset_drift")
        day = materialization.partition
        if drifted is not None and drifted.value and day:
            if _batch_sent_or_requested(context, day):
                sent.append(day)
            else:
                requests.append(_relabel_request(day, "drift"))
    cursor = str(records[-1].storage_id)
    if not requests:
        reason = (
            f"drift on {', '.join(sent)}, whose relabel batch is already sent or requested"
            if sent
            else f"no drift in {len(records)} new production_drift materialization(s)"
        )
        return SensorResult(skip_reason=SkipReason(reason), cursor=cursor)
    return SensorResult(run_requests=requests, cursor=cursor)


@sensor(
    target=AssetSelection.assets(*RELABEL_SELECTION),
    minimum_interval_seconds=300,
    description="When the newest label_state day, materialized since the last tick, holds items waiting for a "
    "relabel that no open batch holds (status `needs_relabel`: a guideline change split, redefined or removed one "
    "of their classes), request that day's relabel_batch (and quality report) once, run key relabel_batch-<day> "
    "as drift_sensor's. A day whose batch is already materialized or requested is left alone. Without it, those "
    "items wait for a drifted day.",
)
def needs_relabel_sensor(context: SensorEvaluationContext):
    records = _new_materializations(context, "label_state")
    if not records:
        return SkipReason("no new label_state materializations")
    cursor = str(records[-1].storage_id)
    waiting: dict[str, int] = {}
    for record in records:
        materialization = record.asset_materialization
        if materialization is not None and materialization.partition:
            by_status = materialization.metadata.get("by_status")
            counts = by_status.value if by_status is not None else None
            count = counts.get("needs_relabel") if isinstance(counts, dict) else None
            waiting[materialization.partition] = count if isinstance(count, int) else 0
    # the newest day of the state, whatever the new records are: a rerun of an older day (a late file) is no
    # reason to send that day's batch now
    day = max(
        context.instance.get_latest_storage_id_by_partition(
            AssetKey("label_state"), DagsterEventType.ASSET_MATERIALIZATION
        ),
        default=None,
    )
    if day is None or day not in waiting:
        return SensorResult(
            skip_reason=SkipReason(f"the newest label_state day, {day}, was not materialized again"), cursor=cursor
        )
    if not waiting[day]:
        return SensorResult(skip_reason=SkipReason(f"no item of label_state {day} waits for a relabel"), cursor=cursor)
    if _batch_sent_or_requested(context, day):
        return SensorResult(skip_reason=SkipReason(f"relabel_batch-{day} is already sent or requested"), cursor=cursor)
    return SensorResult(run_requests=[_relabel_request(day, "needs_relabel")], cursor=cursor)


def _new_materializations(context: SensorEvaluationContext, asset: str) -> Sequence[EventLogRecord]:
    """The asset's materializations since the cursor (an event storage id), oldest first."""
    after = int(context.cursor or 0)
    return context.instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey(asset), after_storage_id=after), limit=500, ascending=True
    ).records


def _batch_sent_or_requested(context: SensorEvaluationContext, day: str) -> bool:
    """Whether the day's relabel batch is materialized, or a run of it requested by either relabel sensor: Dagster
    skips a repeated run key only for the sensor that used it, and the daemon ticks the sensors one after the other,
    so each checks the other's runs (a batch sent by hand, or by `make demo`, carries no run key)."""
    sent = context.instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey("relabel_batch"), asset_partitions=[day]), limit=1
    ).records
    return bool(sent) or bool(
        context.instance.get_runs_count(RunsFilter(tags={"dagster/run_key": f"relabel_batch-{day}"}))
    )


def _relabel_request(day: str, trigger: str) -> RunRequest:
    """A day's relabel batch, under the run key both relabel sensors use."""
    return RunRequest(
        run_key=f"relabel_batch-{day}",
        partition_key=day,
        asset_selection=RELABEL_SELECTION,
        tags={"labelops/trigger": trigger},
    )


@sensor(
    target=guideline_backfill.DAY_ASSETS | guideline_backfill.SNAPSHOT,
    minimum_interval_seconds=300,
    default_status=DefaultSensorStatus.RUNNING,
    description="When the warehouse holds days computed under another guideline version than the one now in force "
    "on them (a new version, or one changed), recompute exactly those days, in day order, through the dataset "
    "snapshot (the last day's run publishes it). The days come from the versions the tables record, not from a "
    "cursor: a version published before the sensor ran, or while it was stopped, is found all the same. "
    "`make backfill ARGS=--dry-run` lists them.",
)
def guideline_sensor(context: SensorEvaluationContext, guidelines: GuidelinesResource, storage: StorageResource):
    # the state folds day by day: while runs are active, a day may be half recomputed; look again when they are done
    active = context.instance.get_runs_count(RunsFilter(statuses=[*UNFINISHED_STATUSES]))
    if active:
        return SkipReason(f"waiting for {active} queued or running run(s) to finish")
    stale = guideline_backfill.stale_days(storage.warehouse_store, guidelines.load())
    if not stale:
        return SkipReason("every day's tables were computed under the guideline now in force on it")
    context.log.info(guideline_backfill.describe(stale))
    assert context.repository_def is not None  # a sensor is always evaluated with its definitions
    graph = context.repository_def.asset_graph
    day_assets = sorted(guideline_backfill.DAY_ASSETS.resolve(graph))
    with_snapshot = sorted(guideline_backfill.DAY_ASSETS.resolve(graph) | guideline_backfill.SNAPSHOT.resolve(graph))
    curation = guideline_backfill.snapshot_run_config(storage.warehouse_store)
    return [
        RunRequest(
            run_key=f"guideline-{s.in_force}-{s.day}-from-{'-'.join(sorted(set(s.recorded.values())))}",
            partition_key=s.day,
            tags={"labelops/trigger": f"guideline {s.in_force}"},
            asset_selection=with_snapshot if s is stale[-1] else day_assets,
            run_config=curation if s is stale[-1] else {},
        )
        for s in stale
    ]


@sensor(
    job_name="nightly_job",
    minimum_interval_seconds=120,
    description="When a day's landing files (exports, items, production logs) are new or change, run that day's "
    "nightly job — ingest and everything downstream — without waiting for the nightly schedule. A day whose files "
    "are still arriving (modified within the settle time) waits for a later tick, and so does a day that is not a "
    "partition yet: today's files run once the day is over (UTC).",
)
def landing_sensor(context: SensorEvaluationContext, storage: StorageResource):
    seen = json.loads(context.cursor) if context.cursor else {}
    settled_before = time.time() - storage.settle_seconds
    by_day: dict[str, list[str]] = {}
    arriving: set[str] = set()
    for area in LANDING_AREAS:
        for key, info in storage.landing_store.stat(area).items():
            parts = key.split("/")
            if len(parts) >= 3 and landing.DAY.match(parts[1]):
                by_day.setdefault(parts[1], []).append(f"{key}:{info.size}:{info.modified}")
                if storage.settle_seconds > 0 and info.modified >= settled_before:
                    arriving.add(parts[1])
    # a day is a partition once it is over (UTC) and within the configured days: files delivered today run
    # tonight, when the day's partition exists (the cursor does not record them until then)
    early = sorted(day for day in by_day if not daily_partitions.has_partition_key(day))
    if early:
        arriving.update(early)
    requests = []
    for day, files in sorted(by_day.items()):
        fingerprint = _fingerprint(files)
        if seen.get(day) != fingerprint and day not in arriving:
            requests.append(
                RunRequest(
                    run_key=f"landing-{day}-{fingerprint}", partition_key=day, tags={"labelops/trigger": "landing"}
                )
            )
            seen[day] = fingerprint
    still = sorted(arriving - set(early))
    waiting = (f"; still arriving: {', '.join(still)}" if still else "") + (
        f"; not a partition yet (a day runs once it is over, UTC) or outside the configured days: {', '.join(early)}"
        if early
        else ""
    )
    if not requests:
        return SensorResult(
            skip_reason=SkipReason(f"no new or changed landing files{waiting}"), cursor=json.dumps(seen, sort_keys=True)
        )
    if waiting:
        context.log.info(f"waiting for files{waiting}")
    return SensorResult(run_requests=requests, cursor=json.dumps(seen, sort_keys=True))


@sensor(
    target=AssetSelection.assets(*STATE_RUN, "dataset_snapshot"),
    minimum_interval_seconds=60,
    default_status=DefaultSensorStatus.RUNNING,
    description="When a day of the label state is materialized again (a rerun, a late export, a backfill), fold "
    "the later days again, one day per run and in day order, since each day folds into the one before; the "
    "run for the latest day publishes a dataset snapshot from the corrected state.",
)
def state_sensor(context: SensorEvaluationContext):
    # A run writing a day of the state while its successor is folded would race it: wait until none is active.
    active = context.instance.get_runs_count(RunsFilter(statuses=[*UNFINISHED_STATUSES]))
    if active:
        return SkipReason(f"waiting for {active} queued or running run(s) to finish")
    materialized = {
        key: context.instance.get_latest_storage_id_by_partition(key, DagsterEventType.ASSET_MATERIALIZATION)
        for key in STATE_ASSETS
    }
    stale = first_stale_day(materialized)
    if stale is None:
        return SkipReason("every day of the label state folds into the current state of the day before")
    day, cause = stale
    latest = max(max(ids, default="") for ids in materialized.values())
    selection = [*STATE_RUN, AssetKey("dataset_snapshot")] if day == latest else STATE_RUN
    return RunRequest(
        run_key=f"state-{day}-{cause}",
        partition_key=day,
        asset_selection=selection,
        tags={"labelops/trigger": "state catch-up"},
    )


def first_stale_day(materialized: Mapping[AssetKey, Mapping[str, int]]) -> tuple[str, int] | None:
    """The earliest day of the state materialized before the day it folds into was last materialized, with that
    day's latest storage id (a new change upstream gives a new run key); None when the state is current. Days
    some state asset was never materialized for (a run that failed half-way) are left to their own runs."""
    days = sorted(set.intersection(*(set(ids) for ids in materialized.values())))
    for previous, day in itertools.pairwise(days):
        before = max(ids.get(previous, 0) for ids in materialized.values())
        if min(ids.get(day, 0) for ids in materialized.values()) < before:
            return day, before
    return None


def _fingerprint(files: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(files)).encode()).hexdigest()[:16]
