"""The ingest assets, materialized for real on local disk and on an S3 server on 127.0.0.1."""

from __future__ import annotations

import os
import subprocess
import sys
from io import BytesIO
from pathlib import Path

import pandas as pd
from conftest import REPO, SUBPROCESS_TIMEOUT, copy_store
from dagster import AssetKey, DagsterInstance, materialize

from assets.ingest import ingest_assets
from assets.partitioned import Frames, concat_days
from labelops.storage import LocalStore
from resources import build_resources
from resources.settings import Settings

DAYS = ["2024-06-05", "2024-06-07"]  # a YOLO zip day and a day with a malformed CSV
TABLES = ["item_catalog", "label_exports", "gold_labels", "production_predictions"]


def settings(landing: str, warehouse: str, endpoint: str | None = None) -> Settings:
    return Settings(
        landing=landing, warehouse=warehouse, s3_endpoint_url=endpoint, config_dir="config", start_date="2024-01-01"
    )


def run_days(config: Settings, days: list[str]) -> dict[str, dict[str, pd.DataFrame]]:
    resources = build_resources(config)
    instance = DagsterInstance.ephemeral()
    for day in days:
        result = materialize(ingest_assets, partition_key=day, resources=resources, instance=instance)
        assert result.success
    io_manager = resources["io_manager"]
    store = resources["storage"].warehouse_store
    return {
        day: {name: pd.read_parquet(BytesIO(store.read_bytes(io_manager.key([name], day)))) for name in TABLES}
        for day in days
    }


def test_definitions_load() -> None:
    from pipelines.definitions import defs

    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert set(TABLES) <= keys
    assert defs.resolve_job_def("nightly_job") is not None
    checks = {(k.asset_key.to_user_string(), k.name) for k in graph.asset_check_keys}
    assert ("label_exports", "files_readable") in checks


def test_ingest_two_demo_days(demo_landing: LocalStore, tmp_path: Path) -> None:
    resources = build_resources(settings(str(demo_landing.root), str(tmp_path / "wh")))
    instance = DagsterInstance.ephemeral()
    for day in DAYS:
        result = materialize(ingest_assets, partition_key=day, resources=resources, instance=instance)
        assert result.success
        checks = {c.asset_key.to_user_string(): c for c in result.get_asset_check_evaluations()}
        exports = result.asset_materializations_for_node("label_exports")[0].metadata
        assert exports["dagster/row_count"].value > 1500
        assert exports["annotators"].value >= 10
        assert "dagster/column_schema" in exports and "preview" in exports
        if day == "2024-06-07":
            assert not checks["label_exports"].passed  # the malformed CSV, named in the check
            assert "vendor_boxes_badtypes.csv" in checks["label_exports"].metadata["rejected_files"].value
        else:
            assert checks["label_exports"].passed
            assert "yolo" in exports["by_format"].value
    exports = instance.get_latest_materialization_event(AssetKey("label_exports"))
    assert exports is not None
    ledger = pd.read_csv(tmp_path / "wh" / "ledgers" / "label_exports" / "2024-06-07.csv")
    assert (ledger["status"] == "error").sum() == 1


def test_local_and_s3_give_identical_tables(
    demo_landing: LocalStore, tmp_path: Path, s3_endpoint: str, s3_bucket: str
) -> None:
    copy_store(demo_landing, f"s3://{s3_bucket}/landing", s3_endpoint)
    local = run_days(settings(str(demo_landing.root), str(tmp_path / "wh")), DAYS)
    remote = run_days(settings(f"s3://{s3_bucket}/landing", f"s3://{s3_bucket}/warehouse", s3_endpoint), DAYS)
    for day in DAYS:
        for name in TABLES:
            assert len(local[day][name]) > 0
            pd.testing.assert_frame_equal(local[day][name], remote[day][name], check_exact=True)


def test_unpartitioned_reader_gets_the_days_that_exist(demo_landing: LocalStore, tmp_path: Path) -> None:
    from dagster import asset

    @asset
    def all_exports(label_exports: Frames) -> pd.DataFrame:
        assert list(label_exports) == [DAYS[0]]
        return concat_days(label_exports)

    resources = build_resources(settings(str(demo_landing.root), str(tmp_path / "wh")))
    instance = DagsterInstance.ephemeral()
    materialize(ingest_assets, partition_key=DAYS[0], resources=resources, instance=instance)
    result = materialize([*ingest_assets, all_exports], selection=[all_exports], resources=resources, instance=instance)
    combined = result.output_for_node("all_exports")
    assert set(combined["export_date"].astype(str)) == {DAYS[0]}


def _cli_env(tmp_path: Path, landing: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        LABELOPS_LANDING=str(landing),
        LABELOPS_WAREHOUSE=str(tmp_path / "wh"),
        DAGSTER_HOME=str(tmp_path / "home"),
    )
    (tmp_path / "home").mkdir(exist_ok=True)
    return env


def test_cli_validate_and_materialize_everything_for_a_day(demo_landing: LocalStore, tmp_path: Path) -> None:
    env = _cli_env(tmp_path, demo_landing.root)
    bin_dir = Path(sys.executable).parent
    validate = subprocess.run(
        [str(bin_dir / "dagster"), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
    )
    assert validate.returncode == 0, validate.stderr[-3000:]
    run = subprocess.run(
        [
            str(bin_dir / "dagster"),
            "asset",
            "materialize",
            "-m",
            "pipelines.definitions",
            "--select",
            "*",
            "--partition",
            "2024-06-10",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert (tmp_path / "wh" / "tables" / "label_exports" / "2024-06-10.parquet").is_file()
    assert "annotations.dat: unknown export format" in run.stderr
