"""Snapshots: deterministic, immutable, atomic, leak-free, diffable, and exportable round trip."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from labelops import snapshots
from labelops.export import to_coco, to_yolo
from labelops.formats import parse_file
from labelops.guidelines import Remap
from labelops.storage import LocalStore, open_store

CONFIG = snapshots.CurationConfig()
EMPTY = pd.DataFrame(columns=["item_id", "rule", "reason"])


def inputs(n_items: int, start: int = 0, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    ids = [f"img-{i:04d}" for i in range(start, start + n_items)]
    items = pd.DataFrame(
        {
            "item_id": ids,
            "uri": [f"s3://b/{i}.jpg" for i in ids],
            "width": 1280.0,
            "height": 720.0,
            "lighting": rng.choice(["day", "night"], n_items),
            "session_id": [f"s{(start + i) // 5}" for i in range(n_items)],
            "export_date": "2024-06-01",
        }
    )
    scenes = pd.DataFrame(
        {
            "item_id": ids,
            "kind": "classification",
            "label": rng.choice(["urban", "highway"], n_items),
            "confidence": 0.95,
            "n_votes": 3,
            "agreement": 1.0,
            "method": "dawid_skene",
        }
    )
    boxes = pd.DataFrame(
        {
            "item_id": np.repeat(ids, 2),
            "kind": "bbox",
            "label": rng.choice(["car", "pedestrian"], 2 * n_items),
            "x": rng.uniform(0, 800, 2 * n_items).round(2),
            "y": rng.uniform(0, 400, 2 * n_items).round(2),
            "w": rng.uniform(10, 300, 2 * n_items).round(2),
            "h": rng.uniform(10, 300, 2 * n_items).round(2),
            "support": 3.0,
            "confidence": 1.0,
            "n_votes": 3,
            "agreement": 1.0,
            "method": "box_fusion",
        }
    )
    return pd.concat([scenes, boxes], ignore_index=True), items


def curate(consensus, items, parent=None, review=EMPTY, quarantined=EMPTY):
    parent = pd.Series(dtype=object) if parent is None else parent
    return snapshots.curate(consensus, items, review, quarantined, parent, CONFIG)


def test_same_inputs_give_identical_bytes_and_hash_on_disk_and_s3(
    tmp_path: Path, s3_endpoint: str, s3_bucket: str
) -> None:
    consensus, items = inputs(120)
    stores = [
        LocalStore(tmp_path / "a"),
        LocalStore(tmp_path / "b"),
        open_store(f"s3://{s3_bucket}/wh", endpoint_url=s3_endpoint),
    ]
    published = [snapshots.publish(store, curate(consensus, items), {"guideline_version": "v1"}) for store in stores]
    hashes = {document["content_hash"] for _, document, _ in published}
    assert len(hashes) == 1 and all(created for _, _, created in published)
    for name in snapshots.DATA_FILES:
        contents = {store.read_bytes(f"snapshots/v0001/{name}") for store in stores}
        assert len(contents) == 1
    again = snapshots.publish(stores[0], curate(consensus, items), {"guideline_version": "v1"})
    assert again[0] == "v0001" and again[2] is False  # same content: no new version
    assert snapshots.versions(stores[0]) == ["v0001"]


def test_a_crash_before_the_manifest_leaves_nothing_visible_and_a_rerun_completes(tmp_path: Path) -> None:
    consensus, items = inputs(60)
    store = LocalStore(tmp_path)

    class Crash(RuntimeError):
        pass

    original = store.create

    def crash_at_manifest(key: str, data: bytes) -> bool:
        if key.endswith("manifest.json"):
            raise Crash("killed between data and manifest")
        return original(key, data)

    store.create = crash_at_manifest  # type: ignore[method-assign]
    with pytest.raises(Crash):
        snapshots.publish(store, curate(consensus, items), {})
    assert store.exists("snapshots/v0001/items.parquet")  # data was written …
    assert snapshots.versions(store) == [] and snapshots.latest(store) is None  # … but no snapshot is visible
    store.create = original  # type: ignore[method-assign]
    version, document, created = snapshots.publish(store, curate(consensus, items), {})
    assert (version, created) == ("v0001", True) and snapshots.latest(store) == "v0001"
    with pytest.raises(snapshots.SnapshotExistsError, match="v0001 is already published"):
        snapshots.publish(store, curate(*inputs(61)), {}, version="v0001")
    assert snapshots.manifest(store, "v0001")["content_hash"] == document["content_hash"]


def test_no_leakage_and_stable_splits(tmp_path: Path) -> None:
    consensus, items = inputs(200)
    first = curate(consensus, items)
    splits = first.items.set_index("item_id")["split"]
    assert first.items.groupby("session_id")["split"].nunique().max() == 1
    assert set(first.items["split"]) == {"train", "val", "test"}
    more_consensus, more_items = inputs(100, start=198, seed=1)  # overlaps: img-0198/0199 share session s39
    second = curate(pd.concat([consensus, more_consensus]), pd.concat([items, more_items]), parent=splits)
    after = second.items.set_index("item_id")["split"]
    assert (after.loc[splits.index] == splits).all()  # existing items keep their split
    assert second.items.groupby("session_id")["split"].nunique().max() == 1  # a session never straddles


def test_duplicates_review_and_relabel_items_are_left_out_and_counted() -> None:
    consensus, items = inputs(30)
    items.loc[items["item_id"] == "img-0003", "uri"] = items.loc[items["item_id"] == "img-0002", "uri"].iloc[0]
    consensus.loc[(consensus["item_id"] == "img-0004") & (consensus["kind"] == "classification"), "confidence"] = 0.5
    review = pd.DataFrame({"item_id": ["img-0005"], "reason": ["split"]})
    quarantined = pd.DataFrame({"item_id": ["img-0006"], "rule": ["needs_relabel"], "reason": ["needs_relabel: …"]})
    curated = curate(consensus, items, review=review, quarantined=quarantined)
    assert curated.excluded == {"low_confidence": 1, "waiting_for_review": 1, "waiting_for_relabel": 1, "duplicate": 1}
    assert len(curated.items) == 26 and not {"img-0003", "img-0004", "img-0005", "img-0006"} & set(
        curated.items["item_id"]
    )


def test_an_item_the_state_holds_is_counted_as_held_whatever_its_consensus() -> None:
    """The state's status is why an item is out and what ends its exclusion: an item waiting for a relabel is
    `waiting_for_relabel` with a low-confidence scene label or with no consensus at all (its only scene label
    was of a class since removed), and one in review is `waiting_for_review`; low confidence and no consensus
    count only the items nothing holds."""
    consensus, items = inputs(30)
    scene = consensus["kind"] == "classification"
    consensus.loc[scene & consensus["item_id"].isin(["img-0004", "img-0005", "img-0007"]), "confidence"] = 0.5
    consensus = consensus[~consensus["item_id"].isin(["img-0006", "img-0008"])]  # no consensus
    review = pd.DataFrame({"item_id": ["img-0005", "img-0008"], "reason": ["split", "split"]})
    quarantined = pd.DataFrame(
        {"item_id": ["img-0004", "img-0006"], "rule": "needs_relabel", "reason": "needs_relabel: …"}
    )
    curated = snapshots.curate(consensus, items, review, quarantined, pd.Series(dtype=object), CONFIG, items["item_id"])
    assert curated.excluded == {
        "not_in_catalog": 0,
        "no_consensus": 0,
        "low_confidence": 1,  # img-0007
        "waiting_for_review": 2,  # img-0005 (low confidence), img-0008 (no consensus)
        "waiting_for_relabel": 2,  # img-0004 (low confidence), img-0006 (no consensus)
        "duplicate": 0,
    }
    assert list(curated.excluded) == [  # the manifest's order
        "not_in_catalog",
        "no_consensus",
        "low_confidence",
        "waiting_for_review",
        "waiting_for_relabel",
        "duplicate",
    ]
    assert len(curated.items) == 25


def test_diff_lists_exactly_the_changed_labels(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    consensus, items = inputs(80)
    snapshots.publish(store, curate(consensus, items), {})
    changed = consensus.copy()
    targets = ["img-0007", "img-0030", "img-0051"]
    scene = (changed["kind"] == "classification") & changed["item_id"].isin(targets)
    old = changed.loc[scene].set_index("item_id")["label"]
    changed.loc[scene, "label"] = changed.loc[scene, "label"].map({"urban": "highway", "highway": "urban"})
    parent = snapshots.read_table(store, "v0001", "items.parquet").set_index("item_id")["split"]
    version, document, _ = snapshots.publish(store, curate(changed, items, parent=parent), {})
    diff = json.loads(store.read_bytes(f"snapshots/{version}/diff.json"))
    assert [c["item_id"] for c in diff["label_changes"]] == targets
    assert all(c["old"] == old[c["item_id"]] and c["new"] != c["old"] for c in diff["label_changes"])
    assert diff["added"] == [] and diff["removed"] == [] and diff["split_moves"] == []
    assert document["parent_version"] == "v0001" and snapshots.read_table(store, "v0001", "labels.parquet") is not None


def test_the_parent_items_curation_read_are_the_diffs_only_while_that_version_is_the_parent(tmp_path: Path) -> None:
    """The snapshot asset reads its parent's ids and splits once, for curation and the diff; items of a version that
    is no longer the latest are not used: the diff is against the latest, as if nothing had been passed."""
    consensus, items = inputs(60)
    later, more = inputs(70, seed=1)
    diffs = []
    for given in (None, "v0001", "v0002"):
        store = LocalStore(tmp_path / str(given))
        snapshots.publish(store, curate(consensus, items), {})
        snapshots.publish(store, curate(later, more), {})  # v0002: ten items more, other labels
        known = {v: snapshots.read_table(store, v, "items.parquet", ["item_id", "split"]) for v in ("v0001", "v0002")}
        parent = known["v0002"].set_index("item_id")["split"]
        curated = curate(consensus, items, parent=parent)
        passed = (given, known[given]) if given else None
        version, document, created = snapshots.publish(store, curated, {}, parent_items=passed)
        assert (version, document["parent_version"], created) == ("v0003", "v0002", True)
        diffs.append(store.read_bytes(f"snapshots/{version}/diff.json"))
    assert diffs[0] == diffs[1] == diffs[2]
    assert len(json.loads(diffs[0])["removed"]) == 10


def test_coco_and_yolo_exports_round_trip_through_the_parsers() -> None:
    consensus, items = inputs(40)
    curated = curate(consensus, items)
    boxes = curated.labels[curated.labels["kind"] == "bbox"][["item_id", "label", "x", "y", "w", "h"]]
    expected = boxes.sort_values(["item_id", "label", "x"]).reset_index(drop=True)

    coco = parse_file("coco.json", to_coco(curated.items, curated.labels, description="test")).objects
    got = coco[["item_id", "label", "x", "y", "w", "h"]].sort_values(["item_id", "label", "x"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, expected, check_dtype=False)

    sizes = dict(
        zip(curated.items["item_id"], zip(curated.items["width"], curated.items["height"], strict=True), strict=True)
    )
    yolo = parse_file("yolo.zip", to_yolo(curated.items, curated.labels), sizes).objects
    got = yolo[["item_id", "label", "x", "y", "w", "h"]].sort_values(["item_id", "label", "x"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, expected, check_dtype=False, atol=1e-5)


def test_demo_snapshots_through_dagster(demo_landing: LocalStore, tmp_path: Path) -> None:
    """Two nightly runs publish v0001 and v0002; the second adds exactly the new day's curated items."""
    from dagster import DagsterInstance, materialize

    from pipelines.definitions import defs
    from pipelines.demo import NIGHTLY
    from resources import build_resources
    from resources.settings import Settings

    repo = Path(__file__).resolve().parents[1]
    settings = Settings(
        landing=str(demo_landing.root),
        warehouse=str(tmp_path / "wh"),
        s3_endpoint_url=None,
        config_dir=str(repo / "config"),
        start_date="2024-01-01",
    )
    resources, instance = build_resources(settings), DagsterInstance.ephemeral()
    for day in ("2024-06-04", "2024-06-05"):
        assert materialize(
            list(defs.assets), partition_key=day, resources=resources, instance=instance, run_config=NIGHTLY
        ).success
    store = LocalStore(tmp_path / "wh")
    assert snapshots.versions(store) == ["v0001", "v0002"] and snapshots.latest(store) == "v0002"
    manifest = snapshots.manifest(store, "v0002")
    assert manifest["parent_version"] == "v0001" and manifest["source_partitions"] == ["2024-06-04", "2024-06-05"]
    assert manifest["stratification"] == {"by": ["label", "lighting"], "skipped": []}  # the demo's run config
    assert {
        "content_hash",
        "guideline_version",
        "code_version",
        "rows",
        "split_sizes",
        "class_counts",
        "qa",
        "excluded",
    } <= set(manifest)
    first = snapshots.read_table(store, "v0001", "items.parquet").set_index("item_id")["split"]
    second = snapshots.read_table(store, "v0002", "items.parquet")
    diff = json.loads(store.read_bytes("snapshots/v0002/diff.json"))
    assert set(diff["added"]) == set(second["item_id"]) - set(first.index)
    assert all(item.startswith("img-20240605") for item in diff["added"])
    # the first night's relabel batch (materialized after its snapshot) sent some of its items back to labelers:
    # they leave the snapshot until their answers come, and every other item keeps its split
    state = pd.read_parquet(tmp_path / "wh" / "tables" / "label_state" / "2024-06-05.parquet")
    status = state.drop_duplicates("item_id").set_index("item_id")["status"]
    sent = pd.read_csv(tmp_path / "wh" / "outbox" / "relabel" / "ledger" / "2024-06-04.csv")["item_id"]
    assert diff["removed"] and set(diff["removed"]) <= set(sent)
    assert (status.loc[diff["removed"]] == "relabel_requested").all()
    assert manifest["excluded"]["waiting_for_relabel"] == int((status == "relabel_requested").sum())
    kept = first.drop(diff["removed"])
    assert (second.set_index("item_id")["split"].loc[kept.index] == kept).all()
    assert store.exists("snapshots/v0002/export/coco.json") and store.exists("snapshots/v0002/export/yolo.zip")


def test_the_diff_lists_remapped_labels_apart_from_changes(tmp_path: Path) -> None:
    """A guideline merge between two versions: every renamed scene label and box is listed as remapped, every box
    of a class the change removed as retired, and only the real change (one scene label) as a change."""
    store = LocalStore(tmp_path)
    consensus, items = inputs(40)
    snapshots.publish(store, curate(consensus, items), {"guideline_version": "v2"})
    merges = {"urban": "built_up", "car": "vehicle"}
    after = consensus.assign(label=consensus["label"].replace(merges))
    changed = after.index[(after["kind"] == "classification") & (after["label"] == "highway")][0]
    after.loc[changed, "label"] = "built_up"  # a real change, not a remap
    given = []
    changes = Remap("v2", "v3", merges, {"pedestrian": "v3: remove of 'pedestrian'"})
    after = after[after["label"] != "pedestrian"]  # v3 removed the class: its boxes are gone
    version, manifest, _ = snapshots.publish(
        store, curate(after, items), {"guideline_version": "v3"}, guideline_changes=lambda p: given.append(p) or changes
    )
    diff = json.loads(store.read_bytes(f"snapshots/{version}/diff.json"))
    assert given == ["v2"]
    scenes, boxes = consensus[consensus["kind"] == "classification"], consensus[consensus["kind"] == "bbox"]
    assert len(diff["remapped_labels"]) == (scenes["label"] == "urban").sum()
    assert len(diff["remapped_objects"]) == (boxes["label"] == "car").sum()
    assert len(diff["retired_objects"]) == (boxes["label"] == "pedestrian").sum() > 0
    assert {c["label"] for c in diff["retired_objects"]} == {"pedestrian"}
    assert [(c["old"], c["new"]) for c in diff["label_changes"]] == [("highway", "built_up")]
    assert diff["object_changes"] == [] and manifest["diff_summary"]["remapped_objects"] == len(
        diff["remapped_objects"]
    )


def test_box_only_items_are_split_and_keep_their_boxes(tmp_path: Path) -> None:
    """A detection dataset, as COCO delivers it: boxes, and no scene label on any item."""
    consensus, items = inputs(60)  # 12 sessions of 5, all in the one "(no label)" stratum
    curated = curate(consensus[consensus["kind"] == "bbox"], items)
    assert len(curated.items) == 60 and curated.items["split"].isin(snapshots.SPLITS).all()
    assert curated.stratification == {"by": ["label"], "skipped": []}
    store = LocalStore(tmp_path)
    _, document, _ = snapshots.publish(store, curated, {})
    assert snapshots.write_exports(store, "v0001")["yolo.zip"] == "snapshots/v0001/export/yolo.zip"
    assert document["rows"] == {"items": 60, "labels": 120}
    assert document["split_sizes"] == {"train": 50, "val": 5, "test": 5}  # 10, 1 and 1 sessions
    labels = snapshots.read_table(store, "v0001", "labels.parquet")
    assert (labels["kind"] == "bbox").sum() == 120 and labels["item_id"].nunique() == 60
    sizes = dict(
        zip(curated.items["item_id"], zip(curated.items["width"], curated.items["height"], strict=True), strict=True)
    )
    assert len(parse_file("yolo.zip", store.read_bytes("snapshots/v0001/export/yolo.zip"), sizes).objects) == 120


def test_items_with_and_without_a_scene_label_are_all_split() -> None:
    consensus, items = inputs(60)
    unlabeled = consensus["item_id"].isin(items["item_id"][:30]) & (consensus["kind"] == "classification")
    curated = curate(consensus[~unlabeled], items)
    assert len(curated.items) == 60 and curated.items["split"].isin(snapshots.SPLITS).all()
    assert (curated.labels["kind"] == "bbox").sum() == 120 and (curated.labels["kind"] == "classification").sum() == 30


def test_a_catalog_without_a_configured_slice_column_snapshots_and_reports_it(tmp_path: Path) -> None:
    consensus, items = inputs(80)
    items = items.drop(columns="lighting")
    configured = snapshots.CurationConfig(stratify_by=("label", "lighting"))
    curated = snapshots.curate(consensus, items, EMPTY, EMPTY, pd.Series(dtype=object), configured)
    assert len(curated.items) == 80 and curated.items["split"].isin(snapshots.SPLITS).all()
    assert curated.stratification == {"by": ["label"], "skipped": ["lighting"]}
    by_label = curate(consensus, items)  # skipping the column splits as not configuring it does
    assert curated.items["split"].tolist() == by_label.items["split"].tolist()
    _, document, _ = snapshots.publish(LocalStore(tmp_path), curated, {})
    assert document["stratification"]["skipped"] == ["lighting"] and sum(document["split_sizes"].values()) == 80


@pytest.mark.e2e  # three days through Dagster
def test_a_coco_detection_set_without_lighting_snapshots_and_gets_tasks_through_dagster(tmp_path: Path) -> None:
    """Three vendors' COCO files with two boxes on each of 20 images and no scene label; a catalog of 24 items
    (4 still raw) without any of the demo's slice columns."""
    from dagster import AssetSelection, DagsterInstance, materialize

    from pipelines.definitions import defs
    from resources import build_resources
    from resources.settings import Settings

    day, landing = "2024-06-03", LocalStore(tmp_path / "landing")
    landing.write_bytes(
        f"items/{day}/items.csv",
        b"item_id,uri,width,height,session_id\n"
        + b"".join(f"img-{n:02d},s3://b/img-{n:02d}.jpg,1920,1080,s{n // 4}\n".encode() for n in range(24)),
    )
    images = [{"id": n + 1, "file_name": f"img-{n:02d}.jpg", "width": 1920, "height": 1080} for n in range(20)]
    for vendor in range(3):
        boxes = [
            {
                "id": 2 * n + k + 1,
                "image_id": n + 1,
                "category_id": k + 1,
                "bbox": [100 + 400 * k + vendor, 200 + vendor, 120, 80],
            }
            for n in range(20)
            for k in range(2)
        ]
        landing.write_bytes(
            f"exports/{day}/vendor-{vendor}.json",
            json.dumps(
                {
                    "info": {"contributor": f"ann{vendor}"},
                    "images": images,
                    "annotations": boxes,
                    "categories": [{"id": 1, "name": "car"}, {"id": 2, "name": "pedestrian"}],
                }
            ).encode(),
        )
    repo = Path(__file__).resolve().parents[1]
    settings = Settings(
        landing=str(landing.root),
        warehouse=str(tmp_path / "wh"),
        s3_endpoint_url=None,
        config_dir=str(repo / "config"),
        start_date="2024-01-01",
    )
    upstream = AssetSelection.assets("snapshot_exports", "labeling_tasks").upstream().required_multi_asset_neighbors()
    result = materialize(
        list(defs.assets),
        selection=upstream,
        partition_key=day,
        resources=build_resources(settings),
        instance=DagsterInstance.ephemeral(),
        run_config={"ops": {"dataset_snapshot": {"config": {"stratify_by": ["label", "lighting"]}}}},
    )
    assert result.success
    metadata = result.asset_materializations_for_node("dataset_snapshot")[0].metadata
    assert metadata["stratification"].value == {"by": ["label"], "skipped": ["lighting"]}
    store = LocalStore(tmp_path / "wh")
    manifest = snapshots.manifest(store, "v0001")
    assert manifest["rows"] == {"items": 20, "labels": 40} and manifest["stratification"]["skipped"] == ["lighting"]
    assert manifest["split_sizes"] == {"train": 16, "val": 4, "test": 0}  # 5 sessions of 4: 4 to train, 1 to val
    assert manifest["class_counts"] == {"train": {"car": 16, "pedestrian": 16}, "val": {"car": 4, "pedestrian": 4}}
    items = snapshots.read_table(store, "v0001", "items.parquet")
    assert len(items) == 20 and items["split"].isin(snapshots.SPLITS).all()
    sizes = {item: (1920.0, 1080.0) for item in items["item_id"]}  # safe ids: their own file stems
    assert len(parse_file("yolo.zip", store.read_bytes("snapshots/v0001/export/yolo.zip"), sizes).objects) == 40
    assert len(parse_file("coco.json", store.read_bytes("snapshots/v0001/export/coco.json")).objects) == 40
    assert result.asset_materializations_for_node("snapshot_exports")[0].metadata["version"].value == "v0001"
    tasks = result.asset_materializations_for_node("labeling_tasks")[0].metadata
    assert tasks["dagster/row_count"].value == 4  # the raw items, ranked without slices: the spec's are all missing
    assert tasks["dimensions"].value == {"used": [], "skipped": ["lighting", "weather", "device", "region"]}


def test_diff_lists_box_changes() -> None:
    items = pd.DataFrame({"item_id": ["a", "b"], "split": "train"})

    def labels(rows: list[tuple]) -> pd.DataFrame:
        return pd.DataFrame(rows, columns=["item_id", "kind", "label", "x", "y", "w", "h"])

    before = labels(
        [
            ("a", "bbox", "car", 0, 0, 100, 100),
            ("a", "bbox", "car", 300, 0, 100, 100),
            ("a", "bbox", "bus", 600, 0, 100, 100),
            ("a", "bbox", "truck", 900, 0, 50, 50),
            ("b", "classification", "urban", None, None, None, None),
        ]
    )
    after = labels(
        [
            ("a", "bbox", "car", 0, 0, 100, 100),  # unchanged
            ("a", "bbox", "car", 360, 0, 100, 100),  # moved: IoU 40/160 = 0.25
            ("a", "bbox", "truck", 600, 0, 100, 100),  # relabelled in place
            ("a", "bbox", "pedestrian", 1200, 0, 20, 50),  # added; the old truck box is gone
            ("b", "classification", "urban", None, None, None, None),
        ]
    )
    changes = snapshots.diff(items, before, items, after)["object_changes"]
    assert [(c["item_id"], c["change"], c["label"], c["old_label"]) for c in changes] == [
        ("a", "added", "pedestrian", None),
        ("a", "moved", "car", "car"),
        ("a", "relabelled", "truck", "bus"),
        ("a", "removed", "truck", None),
    ]
    assert [c["iou"] for c in changes] == [None, 0.25, 1.0, None]


def test_a_metric_that_could_not_be_computed_is_null_in_a_strict_json_manifest(tmp_path: Path) -> None:
    """A day of relabel answers alone has no overall agreement (NaN): the manifest must stay JSON that strict
    parsers (JavaScript's, a catalog's) read, with null where the metric is missing."""
    consensus, items = inputs(20)
    curated = curate(consensus, items)
    version, _, _ = snapshots.publish(LocalStore(tmp_path), curated, {"qa": {"box_alpha": float("nan"), "n": 3}})

    def refuse(constant: str) -> None:
        raise ValueError(f"bare {constant} in the manifest")

    text = LocalStore(tmp_path).read_bytes(f"snapshots/{version}/manifest.json").decode()
    assert json.loads(text, parse_constant=refuse)["qa"] == {"box_alpha": None, "n": 3}
