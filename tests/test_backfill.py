"""Single-run backfills: a range of days in one run gives exactly the tables of one run per day."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import REPO, SUBPROCESS_TIMEOUT
from dagster import AssetKey, BackfillPolicy, DagsterInstance, materialize

from labelops.storage import LocalStore
from pipelines.definitions import defs
from resources import build_resources
from resources.settings import Settings

DAYS = ["2024-06-10", "2024-06-11", "2024-06-12"]  # 06-12: guideline v2 comes into force
RANGE_GROUPS = "group:ingest or group:validate or group:quality"


def test_backfill_policies() -> None:
    """Identity-mapped daily assets run a range in one run; assets reading a look-back window run per day."""
    graph = defs.resolve_asset_graph()
    single = {
        k.to_user_string()
        for k in graph.get_all_asset_keys()
        if graph.get(k).backfill_policy == BackfillPolicy.single_run()
    }
    assert single == {
        "item_catalog",
        "label_exports",
        "gold_labels",
        "production_predictions",
        "validated_annotations",
        "quarantined_annotations",
        "annotator_agreement",
        "consensus_labels",
        "annotator_scores",
        "review_queue",
        "label_issues",
        "quality_report",
    }
    for key in graph.get_all_asset_keys():
        assert graph.get(key).owners, f"{key.to_user_string()} has no owner"


def test_range_in_one_run_equals_one_run_per_day(demo_landing: LocalStore, tmp_path: Path) -> None:
    env = {
        "LABELOPS_LANDING": str(demo_landing.root),
        "LABELOPS_WAREHOUSE": str(tmp_path / "range"),
        "DAGSTER_HOME": str(tmp_path / "home"),
    }
    (tmp_path / "home").mkdir()
    run = subprocess.run(
        [
            str(Path(sys.executable).parent / "dagster"),
            "asset",
            "materialize",
            "-m",
            "pipelines.definitions",
            "--select",
            RANGE_GROUPS,
            "--partition-range",
            f"{DAYS[0]}...{DAYS[-1]}",
        ],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    instance = DagsterInstance.from_config(str(tmp_path / "home"))
    assert len(instance.get_run_records()) == 1
    materialized = instance.fetch_materializations(AssetKey("consensus_labels"), limit=10).records
    assert sorted(r.partition_key for r in materialized) == DAYS

    settings = Settings(
        landing=str(demo_landing.root),
        warehouse=str(tmp_path / "per_day"),
        s3_endpoint_url=None,
        config_dir=str(REPO / "config"),
        start_date="2024-06-01",
    )
    selected = [
        a
        for a in defs.assets
        if a.group_names_by_key and set(a.group_names_by_key.values()) <= {"ingest", "validate", "quality"}
    ]
    for day in DAYS:
        assert materialize(
            selected, partition_key=day, resources=build_resources(settings), instance=DagsterInstance.ephemeral()
        ).success

    per_day = sorted(p.relative_to(tmp_path / "per_day") for p in (tmp_path / "per_day" / "tables").rglob("*.parquet"))
    in_range = sorted(p.relative_to(tmp_path / "range") for p in (tmp_path / "range" / "tables").rglob("*.parquet"))
    assert per_day == in_range and len(per_day) == 11 * len(DAYS)
    for relative in per_day:
        assert (tmp_path / "range" / relative).read_bytes() == (tmp_path / "per_day" / relative).read_bytes(), relative
