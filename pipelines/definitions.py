"""The one Definitions object of the labelops code location."""

from __future__ import annotations

from dagster import AssetSelection, Definitions, define_asset_job

from assets.coverage import coverage_assets
from assets.curate import dataset_snapshot
from assets.ingest import ingest_assets
from assets.quality import quality_assets
from assets.validate import validate_annotations
from resources import build_resources
from resources.settings import Settings

ingest_job = define_asset_job(
    "ingest_job",
    selection=AssetSelection.groups("ingest"),
    description="Read one day's landing files into the canonical tables.",
)

nightly_job = define_asset_job(
    "nightly_job",
    selection=AssetSelection.all(),
    description="The nightly refresh of one day: every asset of the pipeline for that partition.",
)

defs = Definitions(
    assets=[*ingest_assets, validate_annotations, *quality_assets, *coverage_assets, dataset_snapshot],
    jobs=[ingest_job, nightly_job],
    resources=build_resources(Settings.from_env()),
)
