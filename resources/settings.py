"""The environment variables of the design, with the embedded defaults.

Read once when the code location loads. Relative local paths are taken from the
project root, not from whatever directory a Dagster subprocess happens to run in.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Settings:
    landing: str
    warehouse: str
    s3_endpoint_url: str | None
    config_dir: str
    start_date: str
    settle_seconds: float = 0.0  # LABELOPS_SETTLE_SECONDS, 60 s when unset; 0 reads files at once
    suites_dir: str = str(PROJECT_ROOT / "expectations")

    @classmethod
    def from_env(cls) -> "Settings":
        return cls(
            landing=_local_or_s3(os.environ.get("LABELOPS_LANDING", ".labelops/landing")),
            warehouse=_local_or_s3(os.environ.get("LABELOPS_WAREHOUSE", ".labelops/warehouse")),
            s3_endpoint_url=os.environ.get("LABELOPS_S3_ENDPOINT_URL") or None,
            config_dir=_local_or_s3(os.environ.get("LABELOPS_CONFIG", "config")),
            start_date=os.environ.get("LABELOPS_START_DATE", "2024-01-01"),
            settle_seconds=float(os.environ.get("LABELOPS_SETTLE_SECONDS", "60")),
        )


def _local_or_s3(value: str) -> str:
    if value.startswith("s3://"):
        return value
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else PROJECT_ROOT / path)
