"""Resources chosen per environment: the embedded default or S3, from the same settings."""

from __future__ import annotations

from dagster import EnvVar

from labelops.privacy import PSEUDONYMIZE
from resources.io_manager import ParquetIOManager
from resources.privacy import AnnotatorIdsResource
from resources.settings import ANNOTATOR_KEY, Settings
from resources.storage import StorageResource
from resources.validation import GreatExpectationsResource, GuidelinesResource


def build_resources(settings: Settings) -> dict[str, object]:
    storage = StorageResource(
        landing=settings.landing,
        warehouse=settings.warehouse,
        s3_endpoint_url=settings.s3_endpoint_url,
        settle_seconds=settings.settle_seconds,
    )
    return {
        "storage": storage,
        "io_manager": ParquetIOManager(storage=storage),
        "guidelines": GuidelinesResource(config_dir=settings.config_dir, s3_endpoint_url=settings.s3_endpoint_url),
        "great_expectations": GreatExpectationsResource(suites_dir=settings.suites_dir),
        "annotator_ids": AnnotatorIdsResource(
            mode=settings.annotator_ids,
            key=EnvVar(ANNOTATOR_KEY) if settings.annotator_ids == PSEUDONYMIZE else "",
        ),
    }
