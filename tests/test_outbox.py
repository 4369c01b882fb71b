"""What goes out to labelers: the labeling config per guideline version, pre-annotations that config accepts,
media URIs instead of bare ids, honeypots, the item rows of sent production items, and the real Label Studio
export of answers to the project's own relabel tasks read back by the project's parser."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from defusedxml import ElementTree
from label_studio_checks import config_controls, invalid_results

from labelops import annotators, ingest, labeling, outbox
from labelops.formats import parse_file
from labelops.guidelines import GuidelineSet, load_guidelines, parse_guideline
from labelops.label_studio_config import labeling_config
from labelops.storage import LocalStore, open_store

REPO = Path(__file__).resolve().parents[1]
REAL_EXPORT = "label-studio-real/relabel_answers_export.json"
DAY = "2024-06-14"
V1_BOXES = ["car", "truck", "bus", "pedestrian", "cyclist", "traffic_light"]
V2_BOXES = ["car", "truck", "bus", "pedestrian", "cyclist", "scooter_rider", "e_scooter", "traffic_signal"]
SCENES = ["urban", "highway", "residential"]


@pytest.fixture(scope="module")
def guidelines() -> GuidelineSet:
    return load_guidelines(open_store(str(REPO / "config")))


# --- the labeling config ------------------------------------------------------------------------------


@pytest.mark.parametrize(("version", "boxes"), [("v1", V1_BOXES), ("v2", V2_BOXES)])
def test_labeling_config_lists_exactly_the_classes_of_each_version(
    guidelines: GuidelineSet, version: str, boxes: list[str]
) -> None:
    xml = labeling_config(guidelines.by_version[version])
    root = ElementTree.fromstring(xml)
    assert [(e.tag, e.get("name"), e.get("value")) for e in root.findall("Image")] == [("Image", "image", "$image")]
    assert config_controls(xml) == {
        "label": ("rectanglelabels", "image", boxes),
        "polygon": ("polygonlabels", "image", ["crosswalk"]),
        "scene": ("choices", "image", SCENES),
    }
    assert len(boxes) == {"v1": 6, "v2": 8}[version]
    # the scene is required: Label Studio refuses a submission without one, so no answer leaves an item waiting
    assert [(c.get("required"), bool(c.get("requiredMessage"))) for c in root.iter("Choices")] == [("true", True)]
    assert {c.get("required") for c in root.iter() if c.tag in ("RectangleLabels", "PolygonLabels")} == {None}


def test_class_names_are_escaped_not_spliced() -> None:
    names = ['car <b> & "van"', "]]><!-- x -->", "it's"]
    guideline = parse_guideline(
        "odd.yaml",
        "version: odd\neffective_from: 2024-01-01\nclasses:\n"
        + "".join(f"  - {{name: {json.dumps(n)}, geometry: [bbox]}}\n" for n in names)
        + "  - {name: '<Choice value=\"x\"/>', geometry: [classification]}\n",
    )
    xml = labeling_config(guideline)
    assert config_controls(xml) == {
        "label": ("rectanglelabels", "image", names),
        "scene": ("choices", "image", ['<Choice value="x"/>']),
    }
    assert b"<b>" not in xml and b"<!--" not in xml


# --- pre-annotations --------------------------------------------------------------------------------


def predictions() -> pd.DataFrame:
    """One item of each case Label Studio's prediction validation or the guideline change decides."""
    rows = [
        ("a", "car", 0.9, 10, 10, 100, 50),  # kept
        ("a", "traffic_light", 0.8, 200, 20, 30, 60),  # v1 name: renamed to traffic_signal, kept
        ("a", "urban", 0.7, None, None, None, None),  # a scene: kept under `scene`
        ("a", "highway", 0.6, None, None, None, None),  # a second scene for a single-choice control: dropped
        ("a", "car", 0.5, -20, 900, 60, 400),  # reaches outside the 1000x1000 image: clipped, kept
        ("b", "e_scooter", 0.4, 1, 1, 5, 5),  # not a v1 class (v2 added it): dropped under v1, kept under v2
        ("b", "pedestrian", 0.9, None, None, None, None),  # a box class without a box: dropped
        ("b", "urban", 0.9, 5, 5, 10, 10),  # a box for a scene class: dropped
        ("b", "car", 0.9, 1200, 5, 10, 10),  # wholly outside the image: dropped
        ("c", "bus", 0.9, 5, 5, 10, 10),  # an image of unknown size: dropped
    ]
    frame = pd.DataFrame(rows, columns=["item_id", "predicted_label", "confidence", "x", "y", "w", "h"])
    return frame.assign(model_version="detector-1.4.0")


def media_table() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "item_id": ["a", "b", "c"],
            "uri": ["s3://f/a.jpg", "s3://f/b.jpg", "s3://f/c.jpg"],
            "width": [1000.0, 1000.0, np.nan],
            "height": [1000.0, 1000.0, np.nan],
            "media_source": "catalog",
        }
    )


def test_pre_annotations_use_only_the_configs_controls_and_current_classes(guidelines: GuidelineSet) -> None:
    v2 = guidelines.by_version["v2"]
    pre = outbox.pre_annotations(predictions(), media_table(), v2, guidelines.renames_into("v2"))
    assert pre.predictions == 10 and pre.remapped == 1 and len(pre.results) == 5
    assert pre.dropped == {
        "second scene choice": 1,
        "no box for a region class": 1,
        "box for a class without boxes": 1,
        "box outside the image": 1,
        "box on an image of unknown size": 1,
    }
    kept = pre.results
    assert kept[["item_id", "id", "from_name", "label"]].values.tolist() == [
        ["a", "p0", "label", "car"],
        ["a", "p1", "label", "traffic_signal"],
        ["a", "p2", "scene", "urban"],
        ["a", "p3", "label", "car"],
        ["b", "p0", "label", "e_scooter"],
    ]
    clipped = kept.iloc[3]
    assert (clipped["x"], clipped["y"], clipped["w"], clipped["h"]) == (0.0, 90.0, 4.0, 10.0)
    batch = pd.DataFrame({"item_id": ["a", "b", "c"], "reason": "review_queue"})
    tasks = json.loads(
        outbox.label_studio_tasks(batch, media_table(), pre, batch_id="relabel-x", guideline_version="v2")
    )
    assert invalid_results(tasks, labeling_config(v2)) == []
    assert [len(t.get("predictions", [{"result": []}])[0]["result"]) for t in tasks] == [4, 1, 0]

    v1 = guidelines.by_version["v1"]
    old = outbox.pre_annotations(predictions(), media_table(), v1, guidelines.renames_into("v1"))
    assert old.remapped == 0 and old.dropped["class not in v1"] == 1 and len(old.results) == 4
    assert "traffic_light" in set(old.results["label"]) and "e_scooter" not in set(old.results["label"])


def test_pre_annotations_drop_a_class_split_since_the_models_version(guidelines: GuidelineSet) -> None:
    """v2 split `cyclist`: the v1 detector's `cyclist` may be a v2 `scooter_rider`, so it is no v2 pre-annotation.
    A model v2 lists keeps its cyclists; a model no version lists counts as predating the change."""
    v1, v2 = guidelines.by_version["v1"], guidelines.by_version["v2"]
    assert guidelines.model_versions["detector-1.4.0"] == "v1"  # config/guidelines/v1.yaml lists it
    with_new_model = GuidelineSet([v1, replace(v2, models=("detector-2.0.0",))])
    cyclists = pd.DataFrame(
        {
            "item_id": ["a", "a", "b", "b"],
            "model_version": ["detector-1.4.0", "detector-1.4.0", "detector-2.0.0", "unlisted"],
            "predicted_label": ["cyclist", "car", "cyclist", "cyclist"],
            "confidence": 0.9,
            "x": [10.0, 300.0, 10.0, 500.0],
            "y": 10.0,
            "w": 40.0,
            "h": 80.0,
        }
    )
    in_doubt = with_new_model.predicted_in_doubt(cyclists, "v2")
    assert in_doubt.tolist() == [True, False, False, True]
    pre = outbox.pre_annotations(cyclists, media_table(), v2, {}, in_doubt)
    assert pre.results[["item_id", "label"]].values.tolist() == [["a", "car"], ["b", "cyclist"]]
    assert pre.dropped == {"class split or redefined since the model's version": 2}
    batch = pd.DataFrame({"item_id": ["a", "b"], "reason": "review_queue"})
    tasks, sent = outbox.task_file(batch, media_table(), cyclists, with_new_model, v2, batch_id="relabel-x")
    pd.testing.assert_frame_equal(sent.results, pre.results)
    # a task's one prediction is named by the models it holds: b's cyclist is detector-2.0.0's, not another's
    scene = cyclists.iloc[:1].assign(predicted_label="urban", model_version="scene-classifier-2.3.0", x=np.nan)
    tasks, _ = outbox.task_file(batch, media_table(), pd.concat([cyclists, scene]), with_new_model, v2, batch_id="x")
    named = [t["predictions"][0]["model_version"] for t in json.loads(tasks)]
    assert named == ["detector-1.4.0+scene-classifier-2.3.0", "detector-2.0.0"]
    assert not with_new_model.predicted_in_doubt(cyclists, "v1").any()  # under v1 a cyclist is a v1 cyclist


def test_a_task_batch_needs_the_production_rows_of_its_task_items_only(guidelines: GuidelineSet) -> None:
    """The candidates (ranked by the model's confidence and critical classes) and the batch's pre-annotations are
    the same from a day's production log as from its rows of ``task_items``: catalog items a, b, d (c is labeled),
    honeypot g (gold), and traffic items with the same predictions."""
    catalog = pd.DataFrame({"item_id": ["a", "b", "c", "d"], "weather": ["rain", "sun", "rain", "sun"]})
    gold = pd.DataFrame({"item_id": ["g"]})
    log = pd.concat(
        [
            predictions().assign(item_id=lambda f: "prod-" + f["item_id"]),
            predictions(),
            predictions().iloc[:3].assign(item_id="g"),
        ],
        ignore_index=True,
    )
    own = log[log["item_id"].isin(set(labeling.task_items(catalog, gold)))].reset_index(drop=True)
    assert len(own) == len(log) - len(predictions())
    chosen = [
        labeling.task_candidates(catalog, pd.Series(["c"]), pd.DataFrame(), table, ["weather"], {"pedestrian"})
        for table in (log, own)
    ]
    pd.testing.assert_frame_equal(chosen[0], chosen[1])
    batch = pd.concat(
        [
            chosen[0].loc[chosen[0]["item_id"] != "d", ["item_id", "reason"]],
            pd.DataFrame({"item_id": ["g"], "reason": "honeypot"}),
        ]
    )
    media = pd.concat([media_table(), media_table().iloc[:1].assign(item_id="g")], ignore_index=True)
    v2 = guidelines.by_version["v2"]
    (whole, pre_whole), (part, pre_part) = (
        outbox.task_file(batch, media, table, guidelines, v2, batch_id="tasks-x") for table in (log, own)
    )
    assert whole == part and len(pre_whole.results) == 8  # a: 4, b: 1, g: 3
    pd.testing.assert_frame_equal(pre_whole.results, pre_part.results)
    assert (pre_whole.predictions, pre_whole.remapped, pre_whole.dropped) == (
        pre_part.predictions,
        pre_part.remapped,
        pre_part.dropped,
    )


# --- media ------------------------------------------------------------------------------------------


def test_tasks_carry_media_uris_never_bare_ids() -> None:
    catalog = pd.DataFrame(
        {
            "item_id": ["img-1", "img-2", "img-2"],
            "uri": ["s3://raw/1.jpg", "s3://old/2.jpg", "s3://raw/2.jpg"],
            "width": [1920.0, 1280.0, 1280.0],
            "height": [1080.0, 720.0, 720.0],
        }
    )
    production = pd.DataFrame(
        {
            "item_id": ["img-1", "prod-1", "prod-2", "prod-3"],
            "uri": ["s3://prod/img-1.jpg", "s3://prod/1.jpg", None, " "],
            "width": [1.0, 1920.0, np.nan, np.nan],
            "height": [1.0, 1200.0, np.nan, np.nan],
        }
    )
    ids = pd.Series(["img-1", "img-2", "prod-1", "prod-2", "prod-3", "img-9"])
    found = outbox.media(ids, catalog, production, day=DAY)
    assert found[["item_id", "uri", "width", "media_source"]].values.tolist() == [
        ["img-1", "s3://raw/1.jpg", 1920.0, "catalog"],  # the catalog wins over the production log
        ["img-2", "s3://raw/2.jpg", 1280.0, "catalog"],  # the latest delivery of the item
        ["prod-1", "s3://prod/1.jpg", 1920.0, "production"],
    ]
    templated = outbox.media(ids, catalog, production, day=DAY, uri_template="s3://frames/{day}/{item_id}.jpg")
    assert len(templated) == 6 and templated["uri"].iloc[3:].tolist() == [
        "s3://frames/2024-06-14/prod-2.jpg",
        "s3://frames/2024-06-14/prod-3.jpg",
        "s3://frames/2024-06-14/img-9.jpg",
    ]
    with pytest.raises(ValueError, match="item_id"):
        outbox.media(ids, catalog, production, day=DAY, uri_template="s3://frames/{id}.jpg")

    batch = pd.DataFrame({"item_id": found["item_id"], "reason": "drifted_slice"})
    pre = outbox.PreAnnotations(pd.DataFrame(columns=["item_id", "score", "model_version"]))
    tasks = json.loads(outbox.label_studio_tasks(batch, found, pre, batch_id="b", guideline_version="v2"))
    assert len(tasks) == 3
    assert all("://" in t["data"]["image"] and t["data"]["image"] != t["data"]["item_id"] for t in tasks)
    with pytest.raises(ValueError, match="1 items have no media URI"):
        outbox.label_studio_tasks(
            pd.DataFrame({"item_id": ["prod-2"], "reason": "x"}), found, pre, batch_id="b", guideline_version="v2"
        )


def test_sent_production_items_get_item_rows_the_landing_zone_reads(tmp_path: Path) -> None:
    production = pd.DataFrame(
        {
            "item_id": ["prod-1", "prod-1", "prod-2", "img-1"],
            "ts": pd.to_datetime(
                ["2024-06-14T08:00:00Z", "2024-06-14T08:00:00Z", "2024-06-14T09:30:15Z", "2024-06-14T10:00:00Z"]
            ),
            "uri": ["s3://prod/1.jpg", "s3://prod/1.jpg", "s3://prod/2.jpg", None],
            "width": [1920.0, 1920.0, 1280.0, np.nan],
            "height": [1080.0, 1080.0, 720.0, np.nan],
            "lighting": ["night", "night", "day", "day"],
            "weather": ["rain", "rain", "clear", "clear"],
            "brightness": [40.0, 40.0, 150.0, 150.0],
        }
    )
    catalog = pd.DataFrame({"item_id": ["img-1"], "uri": ["s3://raw/1.jpg"], "width": [1.0], "height": [1.0]})
    found = outbox.media(production["item_id"], catalog, production, day=DAY)
    rows = outbox.catalog_rows(found, production, ["lighting", "weather", "device"])
    assert rows.columns.tolist() == ["item_id", "uri", "width", "height", "captured_at", "lighting", "weather"]
    assert len(rows) == 2  # the catalogued item needs no row
    store = LocalStore(tmp_path)
    store.write_bytes(f"items/{DAY}/relabel-{DAY}.items.csv", rows.to_csv(index=False).encode())
    read = ingest.read_items(store, DAY)
    assert read.ledger["status"].tolist() == ["ok"] and len(read.table) == 2
    table = read.table.set_index("item_id")
    assert table.loc["prod-2", "uri"] == "s3://prod/2.jpg" and table.loc["prod-2", "width"] == 1280.0
    assert table.loc["prod-2", "captured_at"] == pd.Timestamp("2024-06-14T09:30:15Z")
    assert table.loc["prod-1", "lighting"] == "night"


# --- honeypots --------------------------------------------------------------------------------------


def test_honeypots_take_their_share_from_the_budget() -> None:
    assert (outbox.item_budget(200, 0.05), outbox.honeypot_count(190, 0.05)) == (190, 10)  # 10 of 200 = 5 %
    assert (outbox.item_budget(100, 0.05), outbox.honeypot_count(95, 0.05)) == (95, 5)
    assert outbox.honeypot_count(30, 0.05) == 2  # a short batch gets fewer: 2 of 32
    assert (outbox.item_budget(10, 0.25), outbox.honeypot_count(7, 0.25)) == (7, 2)  # never over the budget
    assert (outbox.item_budget(200, 0.0), outbox.honeypot_count(200, 0.0)) == (200, 0)
    with pytest.raises(ValueError, match="below 1"):
        outbox.item_budget(200, 1.0)


def test_honeypots_are_drawn_per_batch_spread_through_it_and_hidden_from_labelers() -> None:
    gold = pd.DataFrame({"item_id": np.repeat([f"gold-{i:02d}" for i in range(40)], 2)})  # two gold labels each
    media = pd.DataFrame(
        {"item_id": [f"gold-{i:02d}" for i in range(35)], "uri": "s3://raw/g.jpg", "width": 100.0, "height": 100.0}
    )  # 5 gold items without media
    exclude = {"gold-00", "gold-01", "gold-02"}  # still out in an earlier batch, or in this one
    picked = outbox.pick_honeypots(gold, media, 10, exclude, "relabel-2024-06-14")
    assert (len(picked.item_ids), picked.gold_items, picked.without_media, picked.unavailable) == (10, 40, 5, 3)
    assert not set(picked.item_ids) & exclude and set(picked.item_ids) <= set(media["item_id"])
    again = outbox.pick_honeypots(gold, media, 10, exclude, "relabel-2024-06-14")
    assert again.item_ids.tolist() == picked.item_ids.tolist()  # a rerun sends the same batch
    other = outbox.pick_honeypots(gold, media, 10, exclude, "relabel-2024-06-15")
    assert other.item_ids.tolist() != picked.item_ids.tolist()
    assert len(outbox.pick_honeypots(gold, media, 50, exclude, "x").item_ids) == 32  # no more than there are

    items = pd.DataFrame(
        {"item_id": [f"prod-{i:03d}" for i in range(190)], "reason": "drifted_slice", "honeypot": False}
    )
    honeypots = pd.DataFrame({"item_id": picked.item_ids, "reason": outbox.HONEYPOT, "honeypot": True})
    batch = outbox.interleave(items, honeypots)
    assert len(batch) == 200 and batch["honeypot"].sum() == 10
    assert np.flatnonzero(batch["honeypot"]).tolist() == [10, 30, 50, 70, 90, 110, 130, 150, 170, 190]
    assert batch.loc[~batch["honeypot"], "item_id"].tolist() == items["item_id"].tolist()  # order kept
    pre = outbox.PreAnnotations(pd.DataFrame(columns=["item_id", "score", "model_version"]))
    all_media = pd.concat([media, pd.DataFrame({"item_id": items["item_id"], "uri": "s3://prod/p.jpg"})])
    tasks = json.loads(outbox.label_studio_tasks(batch, all_media, pre, batch_id="b", guideline_version="v2"))
    assert sum(t["meta"]["honeypot"] for t in tasks) == 10
    assert {tuple(sorted(t["data"])) for t in tasks} == {("batch_id", "guideline_version", "image", "item_id")}


def test_honeypot_answers_are_scored_against_gold() -> None:
    """An answer to a honeypot task comes back under the gold item's id, so the gold scoring finds it."""
    gold = pd.DataFrame(
        {
            "item_id": ["gold-1", "gold-1"],
            "kind": ["bbox", "classification"],
            "label": ["car", "urban"],
            "x": [100.0, np.nan],
            "y": [50.0, np.nan],
            "w": [200.0, np.nan],
            "h": [100.0, np.nan],
        }
    )
    media = pd.DataFrame({"item_id": ["gold-1"], "uri": ["s3://raw/gold-1.jpg"], "width": [1000.0], "height": [500.0]})
    batch = pd.DataFrame({"item_id": ["gold-1"], "reason": [outbox.HONEYPOT], "honeypot": [True]})
    pre = outbox.PreAnnotations(pd.DataFrame(columns=["item_id", "score", "model_version"]))
    task = json.loads(outbox.label_studio_tasks(batch, media, pre, batch_id="b", guideline_version="v2"))[0]
    answer = [
        {
            "id": "r1",
            "type": "rectanglelabels",
            "from_name": "label",
            "to_name": "image",
            "original_width": 1000,
            "original_height": 500,
            "value": {"x": 10.0, "y": 10.0, "width": 20.0, "height": 20.0, "rotation": 0, "rectanglelabels": ["car"]},
        },
        {"id": "r2", "type": "choices", "from_name": "scene", "to_name": "image", "value": {"choices": ["highway"]}},
    ]
    annotation = {"id": 1, "completed_by": 3, "result": answer, "was_cancelled": False}
    export = [{**task, "id": 7, "annotations": [annotation]}]
    objects = parse_file("answers.json", json.dumps(export).encode()).objects
    assert objects["guideline_version"].tolist() == ["v2", "v2"]  # answers read under the config's version
    boxes = annotators.gold_boxes(objects[objects["kind"] == "bbox"], gold)
    assert boxes.loc["3", ["gold_box_n", "gold_box_recall", "gold_box_precision"]].tolist() == [1, 1.0, 1.0]
    scenes = annotators.gold_classification(objects[objects["kind"] == "classification"], gold)
    assert scenes.loc["3", ["gold_n", "gold_accuracy"]].tolist() == [1, 0.0]


# --- the real Label Studio export -------------------------------------------------------------------


def test_real_label_studio_export_of_relabel_answers(real: Path) -> None:
    data = (real / REAL_EXPORT).read_bytes()
    document = json.loads(data)
    parsed = parse_file(REAL_EXPORT, data)
    objects = parsed.objects
    assert parsed.format == "label_studio" and len(document) == 21
    assert len(objects) == 44 and objects["kind"].value_counts().to_dict() == {"bbox": 32, "classification": 12}
    assert parsed.skipped == {"prediction": 21, "cancelled annotation": 1}
    assert set(objects["annotator_id"]) == {"1"}  # the plain download's numeric completed_by
    assert objects["item_id"].nunique() == 20 and set(objects["item_id"]) < {t["data"]["item_id"] for t in document}
    cancelled = [t["data"]["item_id"] for t in document if any(a["was_cancelled"] for a in t["annotations"])]
    assert len(cancelled) == 1 and cancelled[0] not in set(objects["item_id"])
    boxes = objects[objects["kind"] == "bbox"]
    assert set(zip(boxes["image_width"], boxes["image_height"], strict=True)) <= {
        (1920.0, 1080.0),
        (1280.0, 720.0),
        (1920.0, 1200.0),
    }
    assert (boxes["x"] >= 0).all() and (boxes["x"] + boxes["w"] <= boxes["image_width"] + 1e-6).all()
