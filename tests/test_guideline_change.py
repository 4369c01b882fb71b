"""A guideline change on the demo, end to end: old labels are remapped (never quarantined), the days the change
reaches are found from the warehouse's own records, and one command recomputes them through the snapshot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO, SUBPROCESS_TIMEOUT, DemoLoop, demo_resources
from dagster import DagsterInstance, Definitions, build_sensor_context

from labelops import labeling, state
from labelops.guidelines import GuidelineSet, load_guidelines, parse_guideline
from labelops.storage import LocalStore
from pipelines.automation import guideline_sensor
from pipelines.definitions import defs
from resources.io_manager import read_table
from resources.storage import StorageResource
from resources.validation import GuidelinesResource

NIGHTS = ["2024-06-11", "2024-06-12", "2024-06-13", "2024-06-14"]  # v2 from the 12th, v3 from the 13th
AFFECTED = NIGHTS[2:]
MERGES = {"truck": "heavy_vehicle", "bus": "heavy_vehicle", "urban": "built_up", "residential": "built_up"}


def v3_merge(v2: str) -> str:
    """v3 (parent v2, in force from 2024-06-13): truck + bus -> heavy_vehicle, urban + residential -> built_up."""
    classes = v2[v2.index("classes:") :]
    for old in ("truck", "bus", "residential"):
        start = classes.index(f"  - name: {old}\n")
        end = classes.find("  - name:", start + 1)
        classes = classes[:start] + (classes[end:] if end >= 0 else "")
    classes = classes.replace(
        "  - name: urban\n    description: Scene type - city streets.",
        "  - name: built_up\n    description: Scene type - city and residential streets.",
    )
    classes += (
        "  - name: heavy_vehicle\n    description: Trucks, buses and coaches.\n    geometry: [bbox]\n"
        '    severity: 1.5\n    attributes: {occluded: ["0", "1"]}\n'
    )
    return (
        "version: v3\nparent: v2\neffective_from: 2024-06-13\nchanges:\n"
        "  - {op: merge, from: [truck, bus], into: heavy_vehicle}\n"
        "  - {op: merge, from: [urban, residential], into: built_up}\n" + classes
    )


def tables(warehouse: Path, days: list[str]) -> dict[str, bytes]:
    return {
        str(p.relative_to(warehouse)): p.read_bytes()
        for p in sorted((warehouse / "tables").glob("*/*.parquet"))
        if p.stem in days
    }


def table(warehouse: Path, name: str, day: str) -> pd.DataFrame:
    """A day's table as the pipeline reads it (label_votes' days are layers over the day before)."""
    return read_table(LocalStore(warehouse), f"tables/{name}/{day}.parquet")


@pytest.fixture(scope="module")
def changed(demo_loop: DemoLoop, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The demo's four last nights under v1/v2 (a copy), then v3 published (before any sensor ran) and the
    documented command run."""
    root = demo_loop.copy(tmp_path_factory.mktemp("guideline") / "demo")
    config, warehouse, landing, home = root / "config", root / "warehouse", root / "landing", root / "home"
    home.mkdir()
    instance = DagsterInstance.ephemeral()
    before = {
        "tables": tables(warehouse, NIGHTS),
        "latest": (warehouse / "snapshots" / "latest").read_text(),
        "quarantined": {d: table(warehouse, "quarantined_annotations", d) for d in AFFECTED},
        "scores": {d: table(warehouse, "annotator_scores", d) for d in AFFECTED},
    }
    (config / "guidelines" / "v3.yaml").write_text(v3_merge((config / "guidelines" / "v2.yaml").read_text()))
    storage = StorageResource(landing=str(landing), warehouse=str(warehouse))
    guidelines = GuidelinesResource(config_dir=str(config))
    tick = guideline_sensor.evaluate_tick(
        build_sensor_context(  # its first tick ever, no cursor
            instance=instance, resources={"guidelines": guidelines, "storage": storage}, definitions=defs
        )
    )
    env = {
        **os.environ,
        "LABELOPS_LANDING": str(landing),
        "LABELOPS_WAREHOUSE": str(warehouse),
        "LABELOPS_CONFIG": str(config),
        "LABELOPS_START_DATE": "2024-06-01",
        "DAGSTER_HOME": str(home),
    }
    dry = subprocess.run(
        [sys.executable, "-m", "pipelines.guideline_backfill", "--dry-run"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
    )
    run = subprocess.run(
        [sys.executable, "-m", "pipelines.guideline_backfill"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    after_tick = guideline_sensor.evaluate_tick(
        build_sensor_context(
            instance=instance, resources={"guidelines": guidelines, "storage": storage}, definitions=defs
        )
    )
    return {
        "warehouse": warehouse,
        "before": before,
        "tick": tick,
        "dry": dry,
        "run": run,
        "after_tick": after_tick,
        "guidelines": load_guidelines(LocalStore(config)),
        "home": home,
        "root": root,
    }


def test_the_sensor_finds_the_days_without_a_cursor(changed: dict) -> None:
    """A version published before the sensor's first tick is found from the tables' records."""
    requests = changed["tick"].run_requests
    assert [r.partition_key for r in requests] == AFFECTED
    keys = [{k.to_user_string() for k in r.asset_selection} for r in requests]
    assert "dataset_snapshot" not in keys[0] and "dataset_snapshot" in keys[-1]
    assert {"validated_annotations", "label_votes", "label_state", "coverage_report", "production_drift"} <= keys[0]
    assert not keys[0] & {"label_exports", "labeling_tasks", "relabel_batch"}  # the ingest and outboxes stay
    assert "2024-06-13: in force v3; computed under" in changed["dry"].stdout
    assert not changed["after_tick"].run_requests  # recomputed: nothing is stale any more


def test_no_mapped_label_is_quarantined_and_counts_are_exact(changed: dict) -> None:
    warehouse, before = changed["warehouse"], changed["before"]
    for day in AFFECTED:
        exports = table(warehouse, "label_exports", day)
        validated = table(warehouse, "validated_annotations", day)
        quarantined = table(warehouse, "quarantined_annotations", day)
        assert len(validated) + len(quarantined) == len(exports)
        # the same rows are quarantined as under v2 (malformed rows, duplicates): v3 quarantined nothing
        assert sorted(quarantined["annotation_id"]) == sorted(before["quarantined"][day]["annotation_id"])
        assert (
            not quarantined["label"].isin(list(MERGES)).any()
            or (
                ~quarantined.loc[quarantined["label"].isin(list(MERGES)), "rule"].str.contains("label_in_taxonomy")
            ).all()
        )
        # every old name delivered that day is validated under its new name, with its original kept
        old = exports[
            exports["label"].isin(list(MERGES)) & ~exports["annotation_id"].isin(quarantined["annotation_id"])
        ]
        remapped = validated[validated["remapped_from"].astype(str).str.split(":").str[-1].isin(list(MERGES))]
        assert len(remapped) == len(old) > 0, day
        originals = remapped["remapped_from"].str.split(":").str[-1]
        assert (remapped["label"].to_numpy() == originals.map(MERGES).to_numpy()).all()
        assert not validated["label"].isin(list(MERGES)).any()
        print(
            f"{day}: {len(remapped)} labels remapped ({originals.value_counts().to_dict()}), "
            f"{len(quarantined)} quarantined as before"
        )


def test_gold_is_read_under_the_new_guideline_too(changed: dict) -> None:
    """Gold files keep their day's names; scored under v3 they compare with the remapped judgments. A merge can
    only make a right answer stay right, so no annotator's gold accuracy drops."""
    for day in AFFECTED:
        before = changed["before"]["scores"][day].set_index("annotator_id")["gold_accuracy"].dropna()
        after = table(changed["warehouse"], "annotator_scores", day).set_index("annotator_id")["gold_accuracy"]
        assert len(before) > 3 and (after.reindex(before.index) >= before - 1e-12).all(), day


def test_unaffected_days_are_byte_identical(changed: dict) -> None:
    untouched = tables(changed["warehouse"], NIGHTS[:2])
    assert untouched == {k: v for k, v in changed["before"]["tables"].items() if k in untouched}
    assert len(untouched) >= 15


def test_the_state_holds_no_old_name_and_carries_earlier_days(changed: dict) -> None:
    warehouse = changed["warehouse"]
    current = table(warehouse, "label_state", AFFECTED[-1])
    assert not current["label"].isin(list(MERGES)).any()
    assert {"heavy_vehicle", "built_up"} <= set(current["label"].dropna())
    votes = table(warehouse, "label_votes", AFFECTED[-1])
    carried = votes[votes["export_date"] < AFFECTED[0]]
    assert not carried.loc[state.counts(carried), "label"].isin(list(MERGES)).any()
    assert carried["remapped_from"].str.contains(":truck|:bus|:urban|:residential", regex=True, na=False).sum() > 0
    # the state of the day before the change is still read under v2
    assert table(warehouse, "label_state", NIGHTS[1])["label"].isin(list(MERGES)).any()


def test_a_new_snapshot_records_v3_and_lists_every_remapped_label(changed: dict) -> None:
    warehouse = changed["warehouse"]
    snapshots_dir = warehouse / "snapshots"
    latest = (snapshots_dir / "latest").read_text()
    assert latest != changed["before"]["latest"]
    manifest = json.loads((snapshots_dir / latest / "manifest.json").read_text())
    assert manifest["guideline_version"] == "v3" and manifest["parent_version"] == changed["before"]["latest"]
    parent_manifest = json.loads((snapshots_dir / changed["before"]["latest"] / "manifest.json").read_text())
    assert manifest["curation"] == parent_manifest["curation"]  # the backfill keeps the curation settings
    diff = json.loads((snapshots_dir / latest / "diff.json").read_text())
    parent = pd.read_parquet(snapshots_dir / changed["before"]["latest"] / "labels.parquet")
    labels = pd.read_parquet(snapshots_dir / latest / "labels.parquet")
    assert not labels["label"].isin(list(MERGES)).any()
    assert diff["remapped_labels"] and diff["remapped_objects"]
    assert all(MERGES[c["old"]] == c["new"] for c in diff["remapped_labels"])
    assert all(MERGES[c["old_label"]] == c["label"] for c in diff["remapped_objects"])
    # every parent scene label under an old name, of an item in both versions, is listed: remapped or changed
    both = parent[parent["item_id"].isin(labels["item_id"]) & (parent["kind"] == "classification")]
    old_scenes = set(both.loc[both["label"].isin(list(MERGES)), "item_id"])
    listed = {c["item_id"] for c in diff["remapped_labels"]} | {c["item_id"] for c in diff["label_changes"]}
    assert old_scenes <= listed and len(diff["remapped_labels"]) >= 0.9 * len(old_scenes)
    print(
        f"snapshot {latest}: {len(diff['remapped_labels'])} scene labels and {len(diff['remapped_objects'])} "
        f"objects remapped; {manifest['diff_summary']}"
    )
    assert "snapshot " + latest in changed["run"].stdout


SPLIT = """
version: v3
parent: v2
effective_from: 2024-06-13
changes:
  - {op: split, from: cyclist, into: [bicycle_rider, cargo_bike_rider]}
classes:
"""


def test_a_split_sends_exactly_the_touched_items_to_relabel() -> None:
    """Votes for a class v3 splits wait for a relabel (and stop counting); the others are untouched."""
    v2 = (REPO / "config" / "guidelines" / "v2.yaml").read_text()
    classes = (
        v2[v2.index("classes:") + len("classes:\n") :].replace("  - name: cyclist\n", "  - name: bicycle_rider\n", 1)
        + "  - name: cargo_bike_rider\n    geometry: [bbox]\n"
    )
    base = [
        parse_guideline(f"{v}.yaml", (REPO / "config" / "guidelines" / f"{v}.yaml").read_text()) for v in ("v1", "v2")
    ]
    guidelines = GuidelineSet([*base, parse_guideline("v3.yaml", SPLIT + classes)])
    votes = state.empty_votes().reindex(range(6))
    votes = votes.assign(
        item_id=["a", "a", "b", "b", "c", "c"],
        annotator_id=["x", "y"] * 3,
        kind="bbox",
        label=["cyclist", "cyclist", "car", "car", "cyclist", "pedestrian"],
        x=1.0,
        y=1.0,
        w=9.0,
        h=9.0,
        export_date="2024-06-12",
        guideline_version="v2",
        content_id=[str(i) for i in range(6)],
    )
    carried = state.carry_votes(votes, guidelines, "v3")
    waiting = state.waiting_for_relabel(carried)
    assert list(waiting["item_id"]) == ["a", "c"]
    assert set(waiting["needs_relabel"]) == {"v3: split of 'cyclist'"}
    assert list(carried.loc[state.counts(carried), "item_id"]) == ["b", "b", "c"]
    candidates = labeling.relabel_candidates(
        pd.DataFrame(columns=["item_id", "predicted_label", "confidence"]),
        pd.DataFrame(),
        pd.DataFrame(),
        pd.DataFrame(),
        waiting,
    )
    assert set(candidates.loc[candidates["kind"] == "guideline_change", "item_id"]) == {"a", "c"}


def test_one_partition_loads_as_a_dataframe(changed: dict) -> None:
    """What a notebook does: a day of a daily asset, loaded from outside a run, is its table."""
    local = Definitions(assets=list(defs.assets or []), resources=demo_resources(changed["root"]))
    loaded = local.load_asset_value("label_state", partition_key=AFFECTED[-1], instance=DagsterInstance.ephemeral())
    assert isinstance(loaded, pd.DataFrame)
    pd.testing.assert_frame_equal(loaded, table(changed["warehouse"], "label_state", AFFECTED[-1]))
