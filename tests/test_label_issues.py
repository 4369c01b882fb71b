"""labelops.label_issues against cleanlab called directly on the same arrays, on real data: Snow et al.'s RTE
judgments (a seeded model beside them) for confident learning and CROWDLAB, and COCO val2014 (100 images, the
cocoapi detections) with swaps, shifts and drops planted by a seeded script for ObjectLab."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import REAL
from crowd_data import snow

from labelops import label_issues, review

COCO = REAL / "faster_coco_eval/tests/dataset/cocoapi"
CLASSES = ["0", "1"]


def model_probabilities(gold: pd.Series, accuracy: float, seed: int) -> pd.DataFrame:
    """A model right on ``accuracy`` of the items, confident and somewhat calibrated (Beta-distributed)."""
    rng = np.random.default_rng(seed)
    right = rng.random(len(gold)) < accuracy
    top = rng.beta(6, 2, len(gold)) * 0.5 + 0.5
    p_true = np.where(right, top, 1 - top)
    truth = gold.astype(str).to_numpy()
    p1 = np.where(truth == "1", p_true, 1 - p_true)
    return pd.DataFrame({"0": 1 - p1, "1": p1}, index=gold.index.astype(str))


@pytest.fixture(scope="module")
def rte() -> tuple[pd.DataFrame, pd.Series, pd.DataFrame]:
    judgments, gold = snow("rte")
    return judgments.assign(kind="classification"), gold, model_probabilities(gold, 0.85, seed=7)


def test_confident_learning_is_cleanlabs(rte) -> None:
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    _, gold, probs = rte
    # the consensus a lone careless annotator would give: the gold label, 15 % of it flipped (seeded)
    rng = np.random.default_rng(3)
    flipped = rng.random(len(gold)) < 0.15
    labels = np.where(flipped, np.where(gold.to_numpy() == "1", "0", "1"), gold.to_numpy())
    consensus = pd.DataFrame({"item_id": gold.index, "kind": "classification", "label": labels})
    issues, counts = label_issues.scene_issues(consensus, probs)

    codes = pd.Categorical(labels, categories=CLASSES).codes
    arrays = probs.loc[gold.index].to_numpy()
    # one process, as labelops calls it: cleanlab's default forks a pool, and a child forked from a test process
    # that runs threads (Arrow's, earlier tests' servers) can inherit a held lock and hang
    expected = find_label_issues(codes, arrays, n_jobs=1)
    scores = get_label_quality_scores(codes, arrays)
    assert counts["scene_items_checked"] == len(gold) == 800
    assert list(issues["item_id"]) == list(gold.index[expected])
    np.testing.assert_array_equal(issues["score"].to_numpy(dtype=float), scores[expected])
    recall = flipped[expected].sum() / flipped.sum()
    precision = flipped[expected].mean()
    print(f"RTE, 15 % flipped: {expected.sum()} issues, precision {precision:.3f}, recall {recall:.3f}")
    assert precision > 0.5 and recall > 0.5


def test_crowdlab_is_cleanlabs(rte) -> None:
    from cleanlab.multiannotator import get_label_quality_multiannotator

    judgments, gold, probs = rte
    consensus = pd.DataFrame({"item_id": gold.index, "kind": "classification", "label": gold.to_numpy()})
    issues, crowd, annotators = label_issues.crowd_issues(judgments, consensus, probs)

    wide = judgments.pivot_table(index="item_id", columns="annotator_id", values="label", aggfunc="last")
    wide = wide.apply(lambda c: pd.to_numeric(c)).sort_index()
    direct = get_label_quality_multiannotator(wide, probs.loc[wide.index].to_numpy(), verbose=False)
    quality = direct["label_quality"]
    np.testing.assert_array_equal(crowd["crowdlab_quality"].to_numpy(), quality["consensus_quality_score"].to_numpy())
    assert list(crowd["crowdlab_label"]) == [CLASSES[i] for i in quality["consensus_label"]]
    stats = direct["annotator_stats"]["annotator_quality"]
    got = annotators.set_index("annotator_id")["crowdlab_quality"]
    np.testing.assert_array_equal(got.reindex(stats.index).to_numpy(), stats.to_numpy())
    accuracy = (crowd.set_index("item_id")["crowdlab_label"] == gold.reindex(crowd["item_id"])).mean()
    print(f"RTE: CROWDLAB consensus accuracy {accuracy:.3f} against the expert gold; {len(issues)} disagreements")
    assert accuracy > 0.8  # a model right on 85 % of the items pulls the consensus towards it


def coco() -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    gt = json.loads((COCO / "instances_val2014_100.json").read_text())
    dt = json.loads((COCO / "instances_val2014_fakebbox100_results.json").read_text())
    names = {c["id"]: c["name"] for c in gt["categories"]}

    def frame(rows: list[dict], label: str) -> pd.DataFrame:
        out = pd.DataFrame(
            {
                "item_id": [str(r["image_id"]) for r in rows],
                label: [names[r["category_id"]] for r in rows],
                **{c: [float(r["bbox"][i]) for r in rows] for i, c in enumerate("xywh")},
            }
        )
        return out

    boxes = frame([a for a in gt["annotations"] if not a.get("iscrowd")], "label")
    detections = frame(dt, "predicted_label").assign(confidence=[float(r["score"]) for r in dt])
    return boxes, detections, sorted(set(names.values()))


def plant(boxes: pd.DataFrame, share: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Swap the class of a share of the boxes, shift another share by half their size, drop a third share."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(boxes))
    k = int(len(boxes) * share)
    planted = boxes.assign(truth="clean")
    present = sorted(boxes["label"].unique())
    for i in order[:k]:
        planted.loc[i, "label"] = rng.choice([c for c in present if c != boxes.at[i, "label"]])
        planted.loc[i, "truth"] = "swap"
    shift = order[k : 2 * k]
    planted.loc[shift, "x"] += planted.loc[shift, "w"] * 0.5
    planted.loc[shift, "y"] += planted.loc[shift, "h"] * 0.5
    planted.loc[shift, "truth"] = "badloc"
    dropped = boxes.iloc[order[2 * k : 3 * k]]
    return planted.drop(index=order[2 * k : 3 * k]).reset_index(drop=True), dropped


def iou(a: pd.DataFrame, b: pd.DataFrame) -> np.ndarray:
    ax, ay, aw, ah = (a[c].to_numpy()[:, None] for c in "xywh")
    bx, by, bw, bh = (b[c].to_numpy()[None, :] for c in "xywh")
    w = np.clip(np.minimum(ax + aw, bx + bw) - np.maximum(ax, bx), 0, None)
    h = np.clip(np.minimum(ay + ah, by + bh) - np.maximum(ay, by), 0, None)
    return w * h / (aw * ah + bw * bh - w * h)


def calibrated(detections: pd.DataFrame, boxes: pd.DataFrame, seed: int) -> pd.DataFrame:
    """The same detections with a confidence a trained detector would give: high where a box of its class lies
    under it (0.6 + 0.4 x IoU, with noise), low elsewhere. The cocoapi file's scores are uniform random."""
    confidence = np.zeros(len(detections))
    for item, rows in detections.groupby("item_id").indices.items():
        truth = boxes[boxes["item_id"] == item]
        if len(truth):
            same = detections["predicted_label"].to_numpy()[rows][:, None] == truth["label"].to_numpy()[None, :]
            confidence[rows] = (iou(detections.iloc[rows], truth) * same).max(axis=1)
    noise = np.random.default_rng(seed).normal(0, 0.05, len(detections))
    matched = np.where(confidence >= 0.5, 0.6 + 0.4 * confidence, 0.3 * confidence)
    return detections.assign(confidence=np.clip(matched + noise, 0.01, 0.999))


def recall_and_precision(issues: pd.DataFrame, planted: pd.DataFrame, dropped: pd.DataFrame) -> dict[str, tuple]:
    found = issues[issues["issue"] != "overlooked"].merge(planted, on=["item_id", "x", "y", "w", "h"])
    out = {}
    for kind in ("swap", "badloc"):
        flagged = found[found["issue"] == kind]
        hits = flagged.loc[flagged["truth"] == kind, ["item_id", "x", "y"]].drop_duplicates()
        out[kind] = (len(hits), int((planted["truth"] == kind).sum()), len(flagged))
    overlooked = issues[issues["issue"] == "overlooked"]
    recovered = sum(
        bool((iou(dropped.iloc[[i]], overlooked[overlooked["item_id"] == item]) >= 0.5).any())
        for i, item in enumerate(dropped["item_id"])
    )
    out["overlooked"] = (recovered, len(dropped), len(overlooked))
    return out


@pytest.mark.parametrize("scores", ["cocoapi", "calibrated"])
def test_objectlab_is_cleanlabs_on_coco_with_planted_errors(scores: str) -> None:
    from cleanlab.object_detection import rank

    boxes, detections, classes = coco()
    if scores == "calibrated":
        detections = calibrated(detections, boxes, seed=1)
    planted, dropped = plant(boxes, 0.05, seed=0)
    config = label_issues.LabelIssueConfig()
    issues, counts = label_issues.box_issues(planted, detections, classes, config)

    inputs = label_issues.detection_inputs(planted, detections, classes)
    assert counts["box_items_checked"] == len(inputs.items) == 99  # one image has no detection
    direct = {
        "swap": rank.compute_swap_box_scores(labels=inputs.labels, predictions=inputs.predictions),
        "badloc": rank.compute_badloc_box_scores(labels=inputs.labels, predictions=inputs.predictions),
        "overlooked": rank.compute_overlooked_box_scores(labels=inputs.labels, predictions=inputs.predictions),
    }
    below = {"swap": config.swap_below, "badloc": config.badloc_below, "overlooked": config.overlooked_below}
    for kind, per_item in direct.items():
        flat = np.concatenate([s for s in per_item if len(s)])
        got = np.sort(issues.loc[issues["issue"] == kind, "score"].to_numpy(dtype=float))
        np.testing.assert_array_equal(got, np.sort(flat[flat < below[kind]]))  # cleanlab's scores, our cut

    result = recall_and_precision(issues, planted, dropped)
    print(
        f"COCO val2014 100, {scores} detection scores, 5 % of {len(boxes)} boxes planted per type: "
        + ", ".join(f"{k} recall {h}/{n} ({h / n:.2f}), {f} flagged" for k, (h, n, f) in result.items())
    )


def test_objectlab_checks_at_most_the_daily_limit_the_same_images_every_run() -> None:
    boxes, detections, classes = coco()
    config = label_issues.LabelIssueConfig(max_box_items=10)
    first, counts = label_issues.box_issues(boxes, detections, classes, config)
    again, _ = label_issues.box_issues(boxes.sample(frac=1, random_state=3), detections, classes, config)
    assert counts["box_items_checked"] == 10 and counts["box_items_over_daily_limit"] == 89
    assert set(first["item_id"]) == set(again["item_id"])


def test_the_worst_items_go_round_robin_over_issue_types() -> None:
    # overlooked scores sit near 0: ranked together, they would take every place
    issues = pd.DataFrame(
        {
            "item_id": ["o1", "o2", "o3", "s1", "s2", "b1", "o1"],
            "issue": ["overlooked", "overlooked", "overlooked", "swap", "swap", "badloc", "swap"],
            "label": None,
            "suggested_label": None,
            "score": [0.001, 0.002, 0.003, 0.3, 0.1, 0.2, 0.0005],
        }
    )
    worst = label_issues.worst_items(issues, 5)
    # per item its worst (o1: the swap at 0.0005); round 1 = each type's worst, round 2 the second worst
    assert list(worst["item_id"]) == ["o1", "o2", "b1", "o3", "s2"]
    assert list(worst["issue"]) == ["swap", "overlooked", "badloc", "overlooked", "swap"]


def test_the_worst_issues_enter_review_and_go_out_as_label_issue() -> None:
    from labelops import labeling

    issues = pd.DataFrame(
        {
            "item_id": ["a", "b", "a", "c"],
            "issue": ["badloc", "scene_label", "swap", "overlooked"],
            "label": ["car", "urban", "bus", None],
            "suggested_label": [None, "highway", None, "pedestrian"],
            "score": [0.3, 0.05, 0.2, 0.25],
        }
    )
    worst = label_issues.worst_items(issues, 2)
    assert list(worst["item_id"]) == ["b", "a"] and list(worst["issue"]) == ["scene_label", "swap"]
    consensus = pd.DataFrame(columns=["item_id", "label", "confidence", "agreement", "n_votes"])
    empty = pd.DataFrame(columns=["item_id", "label_a", "label_b"])
    queue = review.review_queue(
        consensus,
        empty,
        pd.DataFrame(columns=["item_id", "label"]),
        {"urban": 1.0, "bus": 2.0},
        set(),
        label_issues=worst,
    )
    assert dict(zip(queue["item_id"], queue["reason"], strict=True)) == {
        "a": "label_issue: swap (score 0.2)",
        "b": "label_issue: scene_label (score 0.05)",
    }
    assert queue.set_index("item_id")["priority"].to_dict() == {"a": 1.6, "b": 0.95}  # severity x (1 - score)
    candidates = labeling.relabel_candidates(
        pd.DataFrame(columns=["item_id", "predicted_label", "confidence"]),
        pd.DataFrame(),
        pd.DataFrame(),
        queue,
        pd.DataFrame(columns=["item_id", "needs_relabel"]),
    )
    assert set(candidates["kind"]) == {"label_issue"} and candidates["reason"].str.startswith("label_issue: ").all()


def test_the_queue_reads_label_lists_as_pandas_splits_them() -> None:
    labels = pd.Series(["car vs truck", "car, bus", "x", None, np.nan, "a vs b, c", "", "bus vs"], dtype=object)
    for column in (labels, labels.astype("str"), labels.iloc[:0], labels.set_axis(range(10, 18))):
        expected = column.astype(str).str.replace(" vs ", ", ").str.split(", ").explode()
        pd.testing.assert_series_equal(review._label_names(column), expected.astype(object))


@pytest.mark.parametrize(
    "shape", ["no production rows", "a log without boxes", "a day without boxes", "scene labels only", "nothing"]
)
def test_days_of_every_shape_give_a_table_and_counts(shape: str) -> None:
    """Logs and days as teams have them: counted, never a crash."""
    boxes, detections, classes = coco()
    scenes = pd.DataFrame({"item_id": boxes["item_id"].unique(), "kind": "classification", "label": "indoor"})
    consensus = pd.concat([scenes, boxes.assign(kind="bbox")], ignore_index=True)
    core = detections[["item_id", "predicted_label", "confidence"]]
    cases = {
        "no production rows": (consensus, core.iloc[:0]),
        "a log without boxes": (consensus, core),
        "a day without boxes": (scenes, detections),
        "scene labels only": (scenes, core),
        "nothing": (consensus.iloc[:0], core.iloc[:0]),
    }
    day, log = cases[shape]
    votes = day.assign(annotator_id="a1")
    found = label_issues.find(day, votes, log, ["indoor", "outdoor"], classes)
    assert list(found.issues.columns) == label_issues.COLUMNS and found.issues.empty
    assert found.counts["items_labeled"] == day["item_id"].nunique()
    assert found.counts["scene_items_without_model_output"] == (scenes["item_id"].nunique() if len(day) else 0)


def test_scene_probabilities_are_read_under_the_guideline_in_force() -> None:
    """A merged class adds its classes' probabilities; the latest row of an item wins; a box row is no scene
    output; rows are renormalised (logs round)."""
    log = pd.DataFrame(
        {
            "item_id": ["a", "a", "b", "c"],
            "x": [None, None, None, 10.0],
            "prob_urban": [0.1, 0.5, 0.2, 0.9],
            "prob_residential": [0.1, 0.2, 0.2, 0.0],
            "prob_highway": [0.8, 0.29, 0.6, 0.1],
        }
    )
    names = {"urban": "built_up", "residential": "built_up", "highway": "highway"}
    probs = label_issues.scene_probabilities(log, ["built_up", "highway"], names)
    assert list(probs.index) == ["a", "b"]
    np.testing.assert_allclose(probs.loc["a"].to_numpy(), [0.7 / 0.99, 0.29 / 0.99])
    np.testing.assert_allclose(probs.loc["b"].to_numpy(), [0.4, 0.6])


def test_an_item_whose_boxes_consensus_lost_is_checked_for_overlooked_objects() -> None:
    """Annotators drew boxes on item b but consensus kept none: b's confident detection is an overlooked object.
    Item c, which nobody drew boxes on (a scene-only task), is not checked."""
    boxes = pd.DataFrame({"item_id": ["a"], "label": ["car"], "x": [10.0], "y": [10.0], "w": [50.0], "h": [40.0]})
    detections = pd.DataFrame(
        {
            "item_id": ["a", "b", "c"],
            "predicted_label": ["car", "car", "car"],
            "confidence": [0.99, 0.99, 0.99],
            "x": [11.0, 100.0, 100.0],
            "y": [9.0, 100.0, 100.0],
            "w": [50.0, 60.0, 60.0],
            "h": [41.0, 40.0, 40.0],
        }
    )
    issues, counts = label_issues.box_issues(boxes, detections, ["car", "truck"], boxed=np.array(["a", "b"]))
    assert counts["box_items_checked"] == 2
    assert list(issues["item_id"]) == ["b"] and list(issues["issue"]) == ["overlooked"]
    unchanged, _ = label_issues.box_issues(boxes, detections, ["car", "truck"])
    assert unchanged.empty  # without `boxed`, only items with labeled boxes are checked


def test_find_needs_the_production_rows_of_the_checked_items_only(rte) -> None:
    """``find`` on a day's whole production log and on its rows of ``checked_items`` alone gives the same issues,
    CROWDLAB tables and counts: RTE scenes with model probabilities, COCO boxes with planted errors and
    detections (one item's boxes lost in consensus, only the judgments have them), and traffic of unlabeled
    items that copies both. The limit on box items makes the sampled items part of the check."""
    judgments, gold, probs = rte
    boxes, detections, classes = coco()
    planted, _ = plant(boxes, 0.1, seed=5)
    lost = planted["item_id"].iloc[0]
    rng = np.random.default_rng(11)
    flipped = np.where(rng.random(len(gold)) < 0.15, np.where(gold.to_numpy() == "1", "0", "1"), gold.to_numpy())
    consensus = pd.concat(
        [
            pd.DataFrame({"item_id": gold.index, "kind": "classification", "label": flipped}),
            planted[planted["item_id"] != lost].assign(kind="bbox"),
        ],
        ignore_index=True,
    )
    votes = pd.concat([judgments, planted.assign(kind="bbox", annotator_id="a1")], ignore_index=True)
    scene_rows = probs.add_prefix("prob_").rename_axis("item_id").reset_index()
    labeled = pd.concat([scene_rows, calibrated(detections, boxes, seed=2)], ignore_index=True)
    traffic = labeled.sample(frac=0.7, random_state=3).assign(item_id=lambda f: "prod-" + f["item_id"])
    log = pd.concat([traffic.iloc[: len(traffic) // 2], labeled, traffic.iloc[len(traffic) // 2 :]], ignore_index=True)
    config = label_issues.LabelIssueConfig(max_box_items=60)
    checked = log[log["item_id"].isin(set(label_issues.checked_items(consensus, votes)))].reset_index(drop=True)
    assert len(checked) == len(labeled)
    whole = label_issues.find(consensus, votes, log, CLASSES, classes, config)
    part = label_issues.find(consensus, votes, checked, CLASSES, classes, config)
    assert set(whole.issues["issue"]) >= {"scene_label", "crowd_disagreement", "swap", "badloc", "overlooked"}
    assert whole.counts == part.counts and whole.counts["box_items_over_daily_limit"] > 0
    for got, expected in ((part.issues, whole.issues), (part.crowd, whole.crowd), (part.annotators, whole.annotators)):
        pd.testing.assert_frame_equal(got, expected)
