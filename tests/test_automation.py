"""The nightly schedule, the drift, guideline and landing sensors, and the labeling outbox, for real."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from dagster import (
    AssetKey,
    AssetMaterialization,
    DagsterInstance,
    build_schedule_context,
    build_sensor_context,
    materialize,
)
from label_studio_checks import invalid_results

from labelops.storage import LocalStore
from pipelines.automation import drift_sensor, guideline_sensor, landing_sensor, needs_relabel_sensor, nightly_schedule
from pipelines.demo import PRODUCTION_FRAMES
from resources import build_resources
from resources.settings import Settings
from resources.storage import StorageResource
from resources.validation import GuidelinesResource

REPO = Path(__file__).resolve().parents[1]


def test_nightly_schedule_requests_the_previous_day() -> None:
    context = build_schedule_context(scheduled_execution_time=datetime(2024, 6, 15, 2, 0, tzinfo=UTC))
    request = nightly_schedule(context)
    assert request.partition_key == "2024-06-14" and request.run_key == "nightly-2024-06-14"


@pytest.fixture(scope="module")
def demo_runs(demo_nights):
    """The session's demo nights (conftest): quiet 2024-06-10 and -11, drift on -13, in one instance."""
    return demo_nights.defs, demo_nights.resources, demo_nights.instance, demo_nights.warehouse


@pytest.fixture(scope="module")
def drift_batch(demo_runs):
    """The drift sensor's first tick on the demo nights, and the run it requests (as the daemon would launch it)."""
    defs, resources, instance, _ = demo_runs
    result = drift_sensor.evaluate_tick(build_sensor_context(instance=instance, definitions=defs))
    frames = {"ops": {"relabel_batch": {"config": {"production_uri_template": PRODUCTION_FRAMES}}}}  # as `make demo`
    runs = [
        materialize(
            list(defs.assets),
            selection=request.asset_selection,
            partition_key=request.partition_key,
            resources=resources,
            instance=instance,
            run_config=frames,
        )
        for request in result.run_requests
    ]
    return result, runs


def test_drift_sensor_requests_one_relabel_batch_and_only_once(demo_runs, drift_batch) -> None:
    defs, _, instance, warehouse = demo_runs
    result, runs = drift_batch
    assert [r.partition_key for r in result.run_requests] == ["2024-06-13"]
    request = result.run_requests[0]
    assert request.run_key == "relabel_batch-2024-06-13" and request.asset_selection == [
        AssetKey("relabel_batch"),
        AssetKey("quality_report"),
    ]
    again = drift_sensor.evaluate_tick(build_sensor_context(instance=instance, definitions=defs, cursor=result.cursor))
    assert not again.run_requests and "no new production_drift" in again.skip_message
    run = runs[0]
    assert run.success
    batch = pd.read_csv(warehouse / "outbox" / "relabel" / "2024-06-13" / "relabel-2024-06-13.csv")
    drifted = batch[batch["kind"] == "drifted_slice"]
    assert len(drifted) > 0 and drifted["reason"].str.contains("lighting=night|weather=rain").all()
    production = pd.read_parquet(warehouse / "tables" / "production_predictions" / "2024-06-13.parquet").set_index(
        "item_id"
    )
    sliced = production.loc[drifted["item_id"]]
    assert ((sliced["lighting"] == "night") | (sliced["weather"] == "rain")).all()  # items come from the drifted slices
    outbox = warehouse / "outbox" / "relabel" / "2024-06-13"
    tasks = json.loads((outbox / "relabel-2024-06-13.label_studio.json").read_text())
    assert len(tasks) == len(batch) and any("predictions" in t for t in tasks)
    assert batch["item_id"].is_unique
    # what the real Label Studio checks on import, against the config of the guideline in force (v2 from 06-12)
    assert invalid_results(tasks, (outbox / "labeling_config.v2.xml").read_bytes()) == []
    assert all(t["data"]["image"].startswith("s3://") for t in tasks)  # a media URI, never a bare item id
    honeypots = batch[batch["honeypot"]]  # 5 % of the budget of 200
    assert len(batch) == 200 and len(honeypots) == 10 and (honeypots["kind"] == "honeypot").all()
    assert [t["data"]["item_id"] for t in tasks if t["meta"]["honeypot"]] == honeypots["item_id"].tolist()
    items = pd.read_csv(outbox / "relabel-2024-06-13.items.csv")  # catalog rows of the sent production items
    assert sorted(items["item_id"]) == sorted(batch.loc[batch["item_id"].str.startswith("prod-"), "item_id"])
    assert run.asset_materializations_for_node("relabel_batch")[0].metadata["honeypots"].value == 10


def test_quiet_day_gives_a_skip_reason(demo_runs) -> None:
    """Ticks that see only quiet days' drift tables request nothing and say why: the demo's two quiet days'
    materializations (their real metadata), replayed into an instance of their own."""
    defs, _, instance, _ = demo_runs
    records = instance.fetch_materializations(AssetKey("production_drift"), limit=100, ascending=True).records
    quiet = [r.asset_materialization for r in records if r.partition_key in ("2024-06-10", "2024-06-11")]
    assert len(quiet) == 2 and not any(m.metadata["dataset_drift"].value for m in quiet if m is not None)
    replay = DagsterInstance.ephemeral()
    for materialization in quiet:
        replay.report_runless_asset_event(materialization)
    result = drift_sensor.evaluate_tick(build_sensor_context(instance=replay, definitions=defs))
    assert not result.run_requests
    assert result.skip_message == "no drift in 2 new production_drift materialization(s)"


def test_needs_relabel_sensor_sends_a_batch_for_items_a_guideline_change_left_waiting(demo_runs) -> None:
    """Guideline v2 splits `cyclist` from 2024-06-12, and a vendor still delivers v1 cyclists: the state of 06-13
    holds items waiting for a relabel. The sensor requests that day's batch once (drift_sensor's run key), leaves a
    day alone once its batch is materialized, skips a day with nothing waiting and an older day materialized again. The demo nights' real
    label_state materializations are replayed into an instance of their own, so no other test's batch is seen."""
    defs, _, instance, _ = demo_runs
    records = instance.fetch_materializations(AssetKey("label_state"), limit=100, ascending=True).records
    by_day = {r.partition_key: r.asset_materialization for r in records}
    waiting = {day: m.metadata["by_status"].value["needs_relabel"] for day, m in by_day.items() if m is not None}
    assert waiting["2024-06-10"] == 0 and waiting["2024-06-13"] > 0

    quiet = DagsterInstance.ephemeral()
    quiet.report_runless_asset_event(by_day["2024-06-10"])
    result = needs_relabel_sensor.evaluate_tick(build_sensor_context(instance=quiet, definitions=defs))
    assert not result.run_requests and result.skip_message == "no item of label_state 2024-06-10 waits for a relabel"

    replay = DagsterInstance.ephemeral()
    for day in sorted(by_day):
        replay.report_runless_asset_event(by_day[day])
    result = needs_relabel_sensor.evaluate_tick(build_sensor_context(instance=replay, definitions=defs))
    assert [(r.partition_key, r.run_key) for r in result.run_requests] == [("2024-06-13", "relabel_batch-2024-06-13")]
    assert result.run_requests[0].asset_selection == [AssetKey("relabel_batch"), AssetKey("quality_report")]
    again = needs_relabel_sensor.evaluate_tick(
        build_sensor_context(instance=replay, definitions=defs, cursor=result.cursor)
    )
    assert not again.run_requests and again.skip_message == "no new label_state materializations"
    replay.report_runless_asset_event(by_day["2024-06-11"])  # an older day again (a late file): no batch for it
    older = needs_relabel_sensor.evaluate_tick(
        build_sensor_context(instance=replay, definitions=defs, cursor=result.cursor)
    )
    assert not older.run_requests
    assert older.skip_message == "the newest label_state day, 2024-06-13, was not materialized again"
    replay.report_runless_asset_event(AssetMaterialization("relabel_batch", partition="2024-06-13"))
    sent = needs_relabel_sensor.evaluate_tick(build_sensor_context(instance=replay, definitions=defs))
    assert not sent.run_requests and sent.skip_message == "relabel_batch-2024-06-13 is already sent or requested"


def test_a_drifted_day_whose_batch_went_out_is_not_requested_again(demo_runs) -> None:
    """Dagster skips a repeated run key only for the sensor that used it: drift_sensor leaves a day alone whose
    batch is materialized (sent by hand, by `make demo`, by needs_relabel_sensor) or requested by the other sensor,
    so the two never launch the same day's batch twice. The demo's drifted day, replayed with and without it."""
    defs, _, instance, _ = demo_runs
    records = instance.fetch_materializations(AssetKey("production_drift"), limit=100, ascending=True).records
    drifted = next(r.asset_materialization for r in records if r.partition_key == "2024-06-13")
    assert drifted is not None and drifted.metadata["dataset_drift"].value
    replay = DagsterInstance.ephemeral()
    replay.report_runless_asset_event(drifted)
    first = drift_sensor.evaluate_tick(build_sensor_context(instance=replay, definitions=defs))
    assert [r.run_key for r in first.run_requests] == ["relabel_batch-2024-06-13"]
    replay.report_runless_asset_event(AssetMaterialization("relabel_batch", partition="2024-06-13"))
    again = drift_sensor.evaluate_tick(build_sensor_context(instance=replay, definitions=defs))  # no cursor
    assert not again.run_requests
    assert again.skip_message == "drift on 2024-06-13, whose relabel batch is already sent or requested"


def test_labeling_tasks_put_under_covered_slices_first(demo_runs) -> None:
    _, _, _, warehouse = demo_runs
    batch = pd.read_csv(warehouse / "outbox" / "tasks" / "2024-06-13" / "tasks-2024-06-13.csv")
    tasks = batch[~batch["honeypot"]]
    assert len(tasks) == 30 and tasks["item_id"].str.startswith("img-20240613-01").all()  # the day's unlabeled items
    assert batch["honeypot"].sum() == 2  # 5 % of 32, spread through the batch
    top = tasks.head(5)
    assert ((top["lighting"] == "night") | (top["weather"] == "rain")).all()
    assert tasks["priority"].is_monotonic_decreasing


def test_a_rename_is_backfilled_for_exactly_its_days_and_quarantines_nothing(tmp_path: Path, demo_runs) -> None:
    """v3 renames bus to coach from 2024-06-13: the sensor asks for that day alone (10 and 11 are before it), with
    no cursor; the day recomputed reads every bus as a coach and quarantines no more rows than before."""
    defs, _, instance, source = demo_runs
    warehouse = tmp_path / "warehouse"
    shutil.copytree(source, warehouse)  # the module's warehouse stays as the other tests expect it
    config = tmp_path / "config"
    shutil.copytree(REPO / "config", config)
    v2 = (config / "guidelines" / "v2.yaml").read_text()
    (config / "guidelines" / "v3.yaml").write_text(
        "version: v3\nparent: v2\neffective_from: 2024-06-13\nchanges:\n  - {op: rename, from: bus, to: coach}\n"
        + v2[v2.index("classes:") :].replace("name: bus\n", "name: coach\n")
    )
    storage = StorageResource(landing=str(tmp_path / "landing"), warehouse=str(warehouse))
    sensor_resources = {"guidelines": GuidelinesResource(config_dir=str(config)), "storage": storage}
    result = guideline_sensor.evaluate_tick(
        build_sensor_context(instance=instance, resources=sensor_resources, definitions=defs)
    )
    assert [r.partition_key for r in result.run_requests] == ["2024-06-13"]
    request = result.run_requests[0]
    assert request.run_key == "guideline-v3-2024-06-13-from-v2"
    quarantined_before = pd.read_parquet(warehouse / "tables/quarantined_annotations/2024-06-13.parquet")
    settings = Settings(
        landing=str(REPO / "missing"),
        warehouse=str(warehouse),
        s3_endpoint_url=None,
        config_dir=str(config),
        start_date="2024-01-01",
    )
    assert materialize(
        list(defs.assets),
        selection=request.asset_selection,
        partition_key="2024-06-13",
        resources=build_resources(settings),
        instance=DagsterInstance.ephemeral(),
    ).success
    validated = pd.read_parquet(warehouse / "tables/validated_annotations/2024-06-13.parquet")
    quarantined = pd.read_parquet(warehouse / "tables/quarantined_annotations/2024-06-13.parquet")
    assert len(quarantined) == len(quarantined_before) and "bus" not in set(validated["label"])
    coaches = validated[validated["label"] == "coach"]
    assert len(coaches) > 0 and coaches["remapped_from"].str.endswith(":bus").all()
    again = guideline_sensor.evaluate_tick(
        build_sensor_context(instance=instance, resources=sensor_resources, definitions=defs)
    )
    assert not again.run_requests


def test_landing_sensor_runs_new_and_changed_days_once_settled(tmp_path: Path) -> None:
    from pipelines.definitions import defs

    landing = LocalStore(tmp_path / "landing")
    landing.write_bytes("exports/2024-06-01/a.csv", b"item_id,annotator_id,label\nx,u,car\n")

    def tick(cursor: str | None, settle: float = 0.0):
        resource = StorageResource(landing=str(landing.root), warehouse=str(tmp_path / "wh"), settle_seconds=settle)
        return landing_sensor.evaluate_tick(
            build_sensor_context(cursor=cursor, resources={"storage": resource}, definitions=defs)
        )

    first = tick(None)
    assert [r.partition_key for r in first.run_requests] == ["2024-06-01"]
    assert landing_sensor.job_name == "nightly_job"  # ingest and everything downstream of it
    assert not tick(first.cursor).run_requests
    landing.write_bytes("exports/2024-06-02/b.csv", b"item_id,annotator_id,label\ny,u,car\n")
    landing.write_bytes("items/2024-06-01/items.csv", b"item_id,width,height\nz,10,10\n")
    waiting = tick(first.cursor, settle=3600)  # just written: still arriving, no run yet
    assert not waiting.run_requests and "still arriving: 2024-06-01, 2024-06-02" in waiting.skip_message
    later = tick(waiting.cursor)
    assert [r.partition_key for r in later.run_requests] == ["2024-06-01", "2024-06-02"]
    assert not tick(later.cursor).run_requests
    # delivered today: the day's partition exists once the day is over, so it waits (not in the cursor) for then
    today = datetime.now(UTC).date().isoformat()
    landing.write_bytes(f"exports/{today}/c.csv", b"item_id,annotator_id,label\nw,u,car\n")
    early = tick(later.cursor)
    assert not early.run_requests and "not a partition yet (a day runs once it is over, UTC)" in early.skip_message
    assert today in early.skip_message and today not in json.loads(early.cursor)


def test_items_still_out_are_not_sent_again() -> None:
    from labelops import labeling

    ledger = pd.DataFrame(
        {
            "item_id": ["a", "b", "c"],
            "batch_id": "relabel-2024-06-10",
            "sent_on": ["2024-06-10", "2024-06-10", "2024-05-01"],
        }
    )
    came_back = pd.DataFrame({"item_id": ["b"], "export_date": ["2024-06-12"]})
    assert labeling.still_open(ledger, came_back, "2024-06-13", expire_days=None) == {"a", "c"}
    assert labeling.still_open(ledger, came_back, "2024-06-13", expire_days=14) == {"a"}  # c expired
    candidates = pd.DataFrame(
        {
            "item_id": ["a", "b", "d"],
            "reason": "r",
            "kind": "review_queue",
            "stratum": "review",
            "uncertainty": 0.5,
            "priority": 4.5,
        }
    )
    assert list(labeling.select(candidates, 10, {"a", "c"})["item_id"]) == ["b", "d"]


def test_relabel_candidates_cover_every_reason() -> None:
    from labelops import labeling

    production = pd.DataFrame(
        {
            "item_id": ["p1", "p2", "p3", "p4"],
            "predicted_label": ["pedestrian", "car", "e_scooter", "car"],
            "confidence": [0.4, 0.9, 0.5, 0.2],
            "lighting": ["night", "night", "day", "day"],
        }
    )
    drift = pd.DataFrame({"feature": ["lighting", "__dataset__"], "drifted": [True, True]})
    coverage = pd.DataFrame(
        {
            "label": ["*", "pedestrian", "e_scooter", "car"],
            "dimension": ["lighting"] * 4,
            "value": ["night", "night", "day", "day"],
            "labeled_count": [10, 2, 0, 50],
            "production_count": [2, 1, 1, 1],
            "underrepresentation": [3.0, 5.0, np.inf, 0.5],
            "unseen_in_training": [False, False, True, False],
            "critical": [False, True, False, False],
            "gap": [0, 38, 20, 0],
        }
    )
    review = pd.DataFrame({"item_id": ["img-1"], "reason": ["box label conflict: car vs truck"], "priority": [0.8]})
    needs_relabel = pd.DataFrame({"item_id": ["img-2"], "needs_relabel": ["v2: split of 'cyclist'"]})
    candidates = labeling.relabel_candidates(production, drift, coverage, review, needs_relabel)
    kinds = candidates.groupby("kind")["item_id"].apply(set).to_dict()
    assert kinds == {
        "drifted_slice": {"p1", "p2"},
        "unseen_in_training": {"p3"},
        "coverage_gap": {"p1"},
        "review_queue": {"img-1"},
        "guideline_change": {"img-2"},
    }
    chosen = labeling.select(candidates, 3, set())
    assert list(chosen["kind"]) == [
        "guideline_change",
        "review_queue",
        "unseen_in_training",
    ]  # one of each kind per turn
    assert "coverage_gap" in labeling.select(candidates, 10, set()).set_index("item_id").loc["p1", "reason"]


def test_quality_report_of_a_drift_day_shows_every_section_and_the_batch(demo_runs, drift_batch) -> None:
    _defs, _resources, instance, warehouse = demo_runs
    assert all(run.success for run in drift_batch[1])
    quiet = (warehouse / "reports" / "quality" / "2024-06-10.html").read_text()
    assert "no relabel batch for the day" in quiet and "<p class='good'>no dataset drift</p>" in quiet
    assert (warehouse / "reports" / "snapshots" / "v0001.html").is_file()
    # after the drift sensor's run the drift day's report lists the batch
    drift_day = (warehouse / "reports" / "quality" / "2024-06-13.html").read_text()
    for section in (
        "Validation",
        "Agreement between annotators",
        "Annotators",
        "Consensus confidence",
        "Coverage",
        "Production drift",
        "Label issues (cleanlab)",
        "Relabel batch",
        "Labeling loop",
    ):
        assert f"<h2>{section}</h2>" in drift_day
    assert "<td>objectlab</td><td>overlooked</td>" in drift_day  # the worst issues, with their evidence
    assert "<p class='bad'>dataset drift</p>" in drift_day and "kind: drifted_slice" in drift_day
    record = instance.fetch_materializations(AssetKey("quality_report"), limit=1).records[0]
    assert record.asset_materialization.metadata["report"].value.endswith("reports/quality/2024-06-13.html")
