"""Configuration the checks read: guideline versions, the coverage spec and Great Expectations suites."""

from functools import cached_property

import pandas as pd
from dagster import ConfigurableResource

from labelops.coverage import CoverageSpec, load_coverage_spec
from labelops.expectations import SuiteOutcome, load_suites, run_suites
from labelops.guidelines import Guideline, GuidelineSet, load_guidelines
from labelops.storage import Store, open_store


class GuidelinesResource(ConfigurableResource):
    """The labeling guidelines under ``<config_dir>/guidelines/`` (local path or S3)."""

    config_dir: str
    s3_endpoint_url: str | None = None

    @cached_property
    def store(self) -> Store:
        return open_store(self.config_dir, endpoint_url=self.s3_endpoint_url)

    def load(self) -> GuidelineSet:
        return load_guidelines(self.store)

    def coverage_spec(self, guideline: Guideline) -> CoverageSpec:
        """The coverage spec, checked against ``guideline`` (the one in force)."""
        return load_coverage_spec(self.store, guideline)


class GreatExpectationsResource(ConfigurableResource):
    """Runs the GX 1.x suites stored as JSON in ``suites_dir`` (Great Expectations is imported lazily)."""

    suites_dir: str

    def validate_frame(self, frame: pd.DataFrame, asset_name: str) -> SuiteOutcome:
        suites = load_suites(open_store(self.suites_dir))
        return run_suites(frame, suites, asset_name=asset_name)
