"""The validation assets in real Dagster runs: critical failures block downstream, warnings do not."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from dagster import AssetKey, DagsterInstance, asset, materialize

from assets.ingest import item_catalog, label_exports
from assets.partitioned import SINGLE_RUN, Frames
from assets.partitions import daily_partitions
from assets.validate import validate_annotations
from labelops.storage import LocalStore
from resources import build_resources
from resources.settings import Settings

REPO = Path(__file__).resolve().parents[1]
DAY = "2024-06-03"  # guideline v1 in force


@asset(partitions_def=daily_partitions, backfill_policy=SINGLE_RUN, group_name="quality")
def downstream_quality(validated_annotations: Frames) -> dict[str, pd.DataFrame]:
    """Stands in for the quality assets that a blocking check must stop."""
    return {day: frame.head(1) for day, frame in validated_annotations.items()}


def landing(tmp_path: Path, rows: list[str]) -> LocalStore:
    store = LocalStore(tmp_path / "landing")
    store.write_bytes(
        f"items/{DAY}/items.csv",
        b"item_id,uri,width,height\n" + b"".join(f"img-{n},s3://b/{n}.jpg,1920,1080\n".encode() for n in range(40)),
    )
    store.write_bytes(f"exports/{DAY}/vendor.csv", ("item_id,annotator_id,label,x,y,w,h\n" + "".join(rows)).encode())
    return store


def run(tmp_path: Path, store: LocalStore):
    settings = Settings(
        landing=str(store.root),
        warehouse=str(tmp_path / "wh"),
        s3_endpoint_url=None,
        config_dir=str(REPO / "config"),
        start_date="2024-01-01",
    )
    return materialize(
        [item_catalog, label_exports, validate_annotations, downstream_quality],
        partition_key=DAY,
        resources=build_resources(settings),
        instance=DagsterInstance.ephemeral(),
        raise_on_error=False,
    )


def good(n: int) -> str:
    return f"img-{n % 40},ann{n % 3},car,{10 + n},20,60,40\n"


def test_critical_failure_blocks_downstream(tmp_path: Path) -> None:
    rows = [good(n) for n in range(90)] + [
        f"img-{n},ann1,spaceship,10,20,60,40\n" for n in range(30)
    ]  # 25 % off-taxonomy
    result = run(tmp_path, landing(tmp_path, rows))
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert not checks["critical_expectations"].passed
    assert "label_in_taxonomy" in checks["critical_expectations"].metadata["failed_rules"].value
    keys = {e.event_specific_data.materialization.asset_key for e in result.get_asset_materialization_events()}
    assert AssetKey("validated_annotations") in keys and AssetKey("quarantined_annotations") in keys
    assert AssetKey("downstream_quality") not in keys


def test_warning_does_not_block(tmp_path: Path) -> None:
    rows = [good(n) for n in range(90)] + [f"img-{n},ann2,car,10,20,2,2\n" for n in range(10)]  # 10 % tiny boxes
    result = run(tmp_path, landing(tmp_path, rows))
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert checks["critical_expectations"].passed and checks["rows_reconcile"].passed
    assert not checks["warning_expectations"].passed
    assert "box_min_size" in checks["warning_expectations"].metadata["failed_rules"].value
    keys = {e.event_specific_data.materialization.asset_key for e in result.get_asset_materialization_events()}
    assert AssetKey("downstream_quality") in keys
    validated = pd.read_parquet(tmp_path / "wh" / "tables" / "validated_annotations" / f"{DAY}.parquet")
    assert len(validated) == 100 and validated["validation_warnings"].notna().sum() == 10
    assert (tmp_path / "wh" / "reports" / "data_docs" / DAY / "index.html").is_file()


def test_isolated_bad_rows_are_quarantined_without_blocking(tmp_path: Path) -> None:
    rows = [good(n) for n in range(98)] + [f"img-{n},ann1,car,1900,20,100,40\n" for n in range(2)]
    result = run(tmp_path, landing(tmp_path, rows))
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert checks["critical_expectations"].passed
    quarantined = pd.read_parquet(tmp_path / "wh" / "tables" / "quarantined_annotations" / f"{DAY}.parquet")
    assert len(quarantined) == 2
    assert set(quarantined["reason"]) == {"box extends outside the image"}
