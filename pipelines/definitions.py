"""The one Definitions object of the labelops code location."""

from __future__ import annotations

import warnings

from dagster import AssetSelection, Definitions, define_asset_job, in_process_executor

from assets.coverage import coverage_assets
from assets.curate import dataset_snapshot, snapshot_exports
from assets.ingest import ingest_assets
from assets.labeling import labeling_tasks, relabel_batch
from assets.monitor import production_drift, production_sample
from assets.quality import quality_assets
from assets.reports import quality_report
from assets.state import state_assets
from assets.validate import validate_annotations
from pipelines.allocator import KEPT
from pipelines.automation import (
    drift_sensor,
    guideline_sensor,
    landing_sensor,
    needs_relabel_sensor,
    nightly_schedule,
    state_sensor,
)
from resources import build_resources
from resources.memory import choose_arrow_pool, freeze_loaded
from resources.settings import Settings

# before any table is read: every process that loads the code location allocates through it
choose_arrow_pool(shared_heap=KEPT)

ingest_job = define_asset_job(
    "ingest_job",
    selection=AssetSelection.groups("ingest"),
    description="Read one day's landing files into the canonical tables.",
)

# A job mixing single-run (ingest, validate, quality) and per-day (coverage, drift, outboxes) assets
# resolves to one partition per run, which is what the nightly job and the sensors' runs want;
# range backfills launched from the UI are asset backfills and honour each asset's own policy.
warnings.filterwarnings("ignore", message="Asset job .* materializes assets with varying BackfillPolicies")
# What a night refreshes: everything but the relabel batch (drift decides) and the snapshot's exports (training asks).
NIGHTLY_ASSETS = AssetSelection.all() - AssetSelection.assets("relabel_batch", "snapshot_exports")
nightly_job = define_asset_job(
    "nightly_job",
    selection=NIGHTLY_ASSETS,
    description="The nightly refresh of one day: ingest, validate, quality, coverage, snapshot, drift and new "
    "labeling tasks. relabel_batch runs when the drift sensor sees drift; snapshot_exports when training asks.",
)

ASSETS = [
    *ingest_assets,
    validate_annotations,
    *quality_assets,
    *state_assets,
    *coverage_assets,
    dataset_snapshot,
    snapshot_exports,
    production_sample,
    production_drift,
    relabel_batch,
    labeling_tasks,
    quality_report,
]

# Steps run one after another in the run's process. Dagster's default, the multiprocess executor, starts a process
# per step that imports the code location again (3-6 s here, 20 steps a night): a 10,000-annotation night through
# `dagster asset materialize` took 236 s with it and 73 s in process, on the same loaded 2-core machine. Where
# parallel steps pay, a job of its own can set `executor_def` (docs/operations.md).
defs = Definitions(
    assets=ASSETS,
    executor=in_process_executor,
    jobs=[ingest_job, nightly_job],
    schedules=[nightly_schedule],
    sensors=[drift_sensor, needs_relabel_sensor, guideline_sensor, landing_sensor, state_sensor],
    resources=build_resources(Settings.from_env()),
)
freeze_loaded()  # last: the code location, loaded, is left out of the collector's passes
