"""The demo closes the labeling loop: a drift night's relabel batch is answered the next day in a Label Studio
export, and the answers reach the label state, the queues and the next snapshot."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from conftest import DemoLoop, demo_resources
from dagster import DagsterInstance, materialize

from labelops import snapshots
from labelops.demo import V2_RENAMES, production_truth
from labelops.storage import LocalStore

BATCH_DAY, ANSWER_DAY, LAST = "2024-06-12", "2024-06-13", "2024-06-14"


def test_the_answers_reach_the_state_and_the_snapshot_without_the_old_boxes(demo_loop: DemoLoop) -> None:
    root, seeded, sent = demo_loop.root, demo_loop.seeded, demo_loop.sent
    warehouse = LocalStore(root / "warehouse")
    requests = sent[sent["reason"] != "honeypot"]
    assert len(sent) == 200 and len(requests) == 190
    export = json.loads(
        (root / "landing" / "exports" / ANSWER_DAY / f"label_studio_relabel-{BATCH_DAY}_answers.json").read_text()
    )
    assert len(export) == 200 and {t["data"]["batch_id"] for t in export} == {f"relabel-{BATCH_DAY}"}

    state = pd.read_parquet(root / "warehouse" / "tables" / "label_state" / f"{LAST}.parquet")
    status = state.drop_duplicates("item_id").set_index("item_id")["status"]
    assert (status.reindex(requests["item_id"]) == "answered").all()  # every request answered, production ones too

    version = snapshots.latest(warehouse)
    items = snapshots.read_table(warehouse, version, "items.parquet")
    labels = snapshots.read_table(warehouse, version, "labels.parquet")
    assert set(requests["item_id"]) <= set(items["item_id"])
    production = requests.loc[requests["item_id"].str.startswith("prod-"), "item_id"]
    assert len(production) > 100  # catalogued from the batch's item rows
    uris = items.set_index("item_id").loc[production, "uri"]
    assert (uris == "s3://fleet-camera/production/" + BATCH_DAY + "/" + production.to_numpy() + ".jpg").all()
    manifest = snapshots.manifest(warehouse, version)
    assert len(items) + sum(manifest["excluded"].values()) == status.size  # every item in the snapshot or counted

    # the reviewer's boxes replace the old ones: as many boxes per answered item as the answer drew
    answer_boxes = pd.Series(
        {
            t["data"]["item_id"]: sum(r["type"] == "rectanglelabels" for r in t["annotations"][0]["result"])
            for t in export
        }
    )
    boxes = labels[labels["kind"] == "bbox"].groupby("item_id").size().reindex(requests["item_id"]).fillna(0)
    assert (boxes == answer_boxes.reindex(requests["item_id"])).all()

    # and the labels are the truth's, up to the reviewer's own 2 % errors
    prod = pd.read_csv(root / "landing" / "production" / BATCH_DAY / "predictions.csv")
    truth = pd.concat(
        [
            seeded.truth[seeded.truth["item_id"].isin(requests["item_id"])],
            production_truth(prod[prod["item_id"].isin(production)]),
        ]
    )
    scenes = truth[truth["kind"] == "classification"].set_index("item_id")["label"]
    got = labels[labels["kind"] == "classification"].set_index("item_id")["label"].reindex(scenes.index)
    assert (got == scenes.replace(V2_RENAMES)).mean() >= 0.93


def test_a_rerun_of_the_answered_batch_sends_nothing_and_keeps_what_was_sent(
    demo_loop: DemoLoop, tmp_path: Path
) -> None:
    """Launched by hand, in an instance that never saw the first run: the ledger, not the launcher, decides. The
    batch was sent and answered, so the rerun reports it again and rewrites nothing; choosing anew would send other
    items under the same batch id and rewrite the day's ledger, forgetting the requests it records."""
    from pipelines.definitions import defs
    from pipelines.demo import RELABEL

    root = demo_loop.copy(tmp_path / "loop")
    outbox = root / "warehouse" / "outbox" / "relabel"
    before = {path: path.read_bytes() for path in outbox.rglob("*") if path.is_file()}
    result = materialize(
        list(defs.assets),
        selection=["relabel_batch"],
        partition_key=BATCH_DAY,
        resources=demo_resources(root),
        instance=DagsterInstance.ephemeral(),
        run_config=RELABEL,
    )
    assert result.success
    assert {path: path.read_bytes() for path in outbox.rglob("*") if path.is_file()} == before
    metadata = result.asset_materializations_for_node("relabel_batch")[0].metadata
    assert "already_sent" in metadata and metadata["dagster/row_count"].value == len(demo_loop.sent) == 200
    reported = pd.read_parquet(root / "warehouse" / "tables" / "relabel_batch" / f"{BATCH_DAY}.parquet")
    assert reported["item_id"].tolist() == demo_loop.sent["item_id"].tolist()


def test_the_quality_report_shows_the_loop(demo_loop: DemoLoop) -> None:
    root = demo_loop.root
    html = (root / "warehouse" / "reports" / "quality" / f"{LAST}.html").read_text()
    section = html[html.index("<h2>Labeling loop</h2>") :]
    assert (
        f"<td>relabel-{BATCH_DAY}</td><td>{BATCH_DAY}</td><td>190</td><td>10</td><td>190</td><td>0</td><td>190</td>"
        in section.replace("\n", "")
    )
