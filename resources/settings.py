"""The environment variables of the design, with the embedded defaults.

Read once when the code location loads. Relative local paths are taken from the
project root, not from whatever directory a Dagster subprocess happens to run in.
The annotator pseudonymization key is only checked here, never held: the resource
reads it from the environment itself, so it cannot leak through these settings.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from labelops.privacy import AS_DELIVERED, MODES, PSEUDONYMIZE

PROJECT_ROOT = Path(__file__).resolve().parents[1]
ANNOTATOR_IDS = "LABELOPS_ANNOTATOR_IDS"
ANNOTATOR_KEY = "LABELOPS_ANNOTATOR_KEY"


def not_partitions(days: list[str]) -> str:
    """Why a run tagged with ``days`` (today, say) cannot run them."""
    return (
        f"{', '.join(days)} is not a day of the daily partitions, which run from LABELOPS_START_DATE to the day "
        "before LABELOPS_END_DATE (unset: to yesterday): a day's partition exists once the day is over (UTC)"
    )


@dataclass(frozen=True)
class Settings:
    landing: str
    warehouse: str
    s3_endpoint_url: str | None
    config_dir: str
    start_date: str
    end_date: str | None = None  # LABELOPS_END_DATE: the day after the last partition; unset, yesterday is the last
    settle_seconds: float = 0.0  # LABELOPS_SETTLE_SECONDS, 60 s when unset; 0 reads files at once
    suites_dir: str = str(PROJECT_ROOT / "expectations")
    annotator_ids: str = AS_DELIVERED

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            landing=_local_or_s3(os.environ.get("LABELOPS_LANDING", ".labelops/landing")),
            warehouse=_local_or_s3(os.environ.get("LABELOPS_WAREHOUSE", ".labelops/warehouse")),
            s3_endpoint_url=os.environ.get("LABELOPS_S3_ENDPOINT_URL") or None,
            config_dir=_local_or_s3(os.environ.get("LABELOPS_CONFIG", "config")),
            start_date=os.environ.get("LABELOPS_START_DATE", "2024-01-01"),
            end_date=os.environ.get("LABELOPS_END_DATE") or None,
            settle_seconds=float(os.environ.get("LABELOPS_SETTLE_SECONDS", "60")),
            annotator_ids=annotator_ids_mode(os.environ),
        )


def annotator_ids_mode(environ: Mapping[str, str]) -> str:
    """Checked when the code location loads, so a deployment that asks for pseudonyms without a key shows
    the error in the UI at once instead of failing every run."""
    mode = environ.get(ANNOTATOR_IDS) or AS_DELIVERED
    if mode not in MODES:
        raise ValueError(f"{ANNOTATOR_IDS}={mode!r} is not a mode: use {' or '.join(MODES)}")
    if mode == PSEUDONYMIZE and not environ.get(ANNOTATOR_KEY):
        raise ValueError(
            f"{ANNOTATOR_IDS}={PSEUDONYMIZE} needs the secret key in {ANNOTATOR_KEY}, which is unset or empty: "
            f"set it from a secret (e.g. a Kubernetes Secret), or set {ANNOTATOR_IDS}={AS_DELIVERED}"
        )
    return mode


def _local_or_s3(value: str) -> str:
    if value.startswith("s3://"):
        return value
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else PROJECT_ROOT / path)
