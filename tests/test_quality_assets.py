"""The quality assets on a demo day, materialized for real and read back through the definitions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import DEMO_NIGHTS, REPO

from labelops.demo import LATE_PER_DAY
from labelops.storage import LocalStore

DAY = "2024-06-13"


@pytest.fixture(scope="module")
def outputs(demo_nights) -> dict[str, pd.DataFrame]:
    """The quality tables of a demo day the session's nightly runs wrote (a day's quality reads only that day)."""
    names = ["annotator_agreement", "consensus_labels", "annotator_scores", "review_queue", "validated_annotations"]
    return {name: pd.read_parquet(demo_nights.warehouse / "tables" / name / f"{DAY}.parquet") for name in names}


def test_agreement_contract(outputs) -> None:
    table = outputs["annotator_agreement"]
    assert list(table.columns) == ["scope", "metric", "value", "ci_low", "ci_high", "n_items", "n_annotations"]
    metrics = set(table.loc[table["scope"] == "overall", "metric"])
    assert {
        "krippendorff_alpha",
        "fleiss_kappa",
        "mean_pairwise_cohen_kappa",
        "percent_agreement",
        "box_alpha",
        "mean_matched_iou",
        "box_f1@0.5",
        "label_conflict_rate",
    } <= metrics
    assert {"lighting=night", "weather=rain", "label=urban", "label=car", "kind=polygon", "label=crosswalk"} <= set(
        table["scope"]
    )
    polygons = table[table["scope"] == "kind=polygon"].set_index("metric")["value"]
    assert 0.5 < polygons["mean_matched_iou"] <= 1 and 0 < polygons["box_alpha"] <= 1
    alpha = table.query("scope == 'overall' and metric == 'krippendorff_alpha'").iloc[0]
    assert alpha["ci_low"] < alpha["value"] < alpha["ci_high"]


def test_consensus_contract_and_accuracy_against_gold(outputs, demo_landing: LocalStore) -> None:
    consensus = outputs["consensus_labels"]
    scenes = consensus[consensus["kind"] == "classification"]
    assert set(scenes["method"]) == {"dawid_skene"} and scenes["item_id"].is_unique
    assert ((scenes["confidence"] > 0) & (scenes["confidence"] <= 1)).all()
    fused = consensus[consensus["kind"] == "bbox"]
    assert (fused["support"] >= 2).all() and fused[["x", "y", "w", "h"]].notna().all().all()
    gold = pd.read_csv(demo_landing.root / "gold" / "gold_labels.csv")
    gold_scenes = gold[gold["x"].isna()].set_index("item_id")["label"]
    merged = scenes.set_index("item_id")["label"].reindex(gold_scenes.index).dropna()
    assert len(merged) >= 5 and (merged == gold_scenes[merged.index]).mean() >= 0.9


def test_scores_flag_the_careless_annotator_and_the_spammer(outputs) -> None:
    scores = outputs["annotator_scores"].set_index("annotator_id")
    assert scores.loc["w06", "flagged"] and "estimated accuracy" in scores.loc["w06", "flag_reason"]
    assert scores.loc["ann04@labelops.example", "flagged"]
    assert not scores.loc["ann01@labelops.example", "flagged"]
    assert (
        scores.loc["ann01@labelops.example", "estimated_accuracy"]
        > scores.loc["ann04@labelops.example", "estimated_accuracy"]
    )


def test_review_queue_puts_critical_classes_first(outputs) -> None:
    queue = outputs["review_queue"]
    assert len(queue) > 0 and queue["item_id"].is_unique
    critical = queue["critical"].to_numpy()
    assert not (~critical[:-1] & critical[1:]).any()  # no critical item after a non-critical one
    assert queue["reason"].str.len().gt(0).all()


def test_label_issues_on_the_demo_equal_the_domain_call(demo_nights) -> None:
    """The asset is a thin wrapper: its table is labelops.label_issues.find on the day's tables, under the day's
    guideline. The demo's log has detections and scene class probabilities on its labeled items: all three
    methods run."""
    from labelops import label_issues, quality
    from labelops.guidelines import load_guidelines, predictions_under

    tables = demo_nights.warehouse / "tables"
    got = pd.read_parquet(tables / "label_issues" / f"{DAY}.parquet")
    guidelines = load_guidelines(LocalStore(REPO / "config"))
    current = guidelines.in_force(DAY)
    read = {n: pd.read_parquet(tables / n / f"{DAY}.parquet") for n in ("consensus_labels", "validated_annotations")}
    predictions = predictions_under(
        pd.read_parquet(tables / "production_predictions" / f"{DAY}.parquet"), guidelines, current.version
    )
    found = label_issues.find(
        read["consensus_labels"],
        quality.countable(read["validated_annotations"]),
        predictions,
        [n for n, c in current.classes.items() if "classification" in c.geometry],
        [n for n, c in current.classes.items() if "bbox" in c.geometry],
    )
    # an overlooked object has no label: None in the asset's table, a missing string once read back
    pd.testing.assert_frame_equal(
        got.astype(object).where(got.notna(), None),
        found.issues.reset_index(drop=True).astype(object).where(found.issues.notna().to_numpy(), None),
        check_dtype=False,
    )
    assert len(got) and set(got["method"]) == {"confident_learning", "crowdlab", "objectlab"}
    # the crowd's stragglers judge the day before's items, which the day's production log does not hold: counted
    assert found.counts["scene_items_checked"] == found.counts["scene_items"] - LATE_PER_DAY > 100
    assert found.counts["scene_items_without_model_output"] == LATE_PER_DAY and found.counts["box_items_checked"] > 100
    print(f"{DAY}: {found.counts}; issues by type {got['issue'].value_counts().to_dict()}")


def test_the_days_worst_label_issues_are_in_its_review_queue(outputs, demo_nights) -> None:
    issues = pd.read_parquet(demo_nights.warehouse / "tables" / "label_issues" / f"{DAY}.parquet")
    queue = outputs["review_queue"]
    flagged = queue[queue["reason"].str.contains("label_issue: ", regex=False)]
    assert len(flagged) == min(issues["item_id"].nunique(), 20) > 0
    assert set(flagged["item_id"]) <= set(issues["item_id"])


# What each planted error should raise, and the issues that say so (docs/label-issues.md, "Measured").
PLANTED_AS = {
    "scene_label": ("scene_label", "crowd_disagreement"),
    "swap": ("swap",),
    "shift": ("badloc",),
    "drop": ("overlooked",),
}
BOX = ("x", "y", "w", "h")


def scored_label_issues(
    issues: pd.DataFrame, consensus: pd.DataFrame, planted: pd.DataFrame, truth: pd.DataFrame
) -> pd.DataFrame:
    """A day's label issues per planted error type against the demo's truth (all in one guideline's names).

    Precision: the share of the issues of the type that point at a real label error by the truth, planted or
    not: a scene issue at an item whose consensus scene is not its true one; a ``swap`` or ``badloc`` at a
    labeled box that is wrong (no true box overlaps it with IoU >= 0.5, or the one that does has another
    class); an ``overlooked`` detection on a true box (IoU >= 0.5) no consensus box covers (IoU >= 0.5).
    ``same_type``: the issues whose box is wrong the way the type says (a swap's box has another class than
    its true box, a badloc's box overlaps no true box with IoU >= 0.5). ``planted_hits``: the issues that point
    at a planted error of the type (same item; for boxes IoU >= 0.5 with the planted box: the swapped or
    shifted box the annotators drew, the dropped true box).
    Recall: the share of the planted errors the consensus kept (a scene whose consensus is the planted label, a
    consensus box at the planted box, with the swapped class for a swap; none at a dropped box) that an issue
    of the type points at."""
    rows = []
    boxes = consensus[consensus["kind"] == "bbox"].reset_index(drop=True)
    true_boxes = truth[truth["kind"] == "bbox"]
    scenes = consensus[consensus["kind"] == "classification"].set_index("item_id")["label"]
    true_scenes = truth[truth["kind"] == "classification"].set_index("item_id")["label"]
    for error, types in PLANTED_AS.items():
        flagged = issues[issues["issue"].isin(types)].reset_index(drop=True)
        errors = planted[planted["error"] == error].reset_index(drop=True)
        if error == "scene_label":
            flagged = flagged.drop_duplicates("item_id")
            real = same = flagged["label"].to_numpy() != true_scenes.reindex(flagged["item_id"]).to_numpy()
            hit = flagged["item_id"].isin(errors["item_id"]).to_numpy()
            kept = scenes.reindex(errors["item_id"]).to_numpy() == errors["planted_label"].to_numpy()
            found = errors["item_id"].isin(flagged["item_id"]).to_numpy()
        else:
            at = errors.assign(
                x=errors["x"] if error == "drop" else errors["planted_x"],
                y=errors["y"] if error == "drop" else errors["planted_y"],
                label=errors["true_label"] if error == "drop" else errors["planted_label"],
            )
            best, best_label = _best_overlap(flagged, true_boxes)
            other_class = (best >= 0.5) & (best_label != flagged["label"].to_numpy())
            if error in ("swap", "shift"):
                real = (best < 0.5) | other_class
                same = other_class if error == "swap" else best < 0.5
            else:
                seen, _ = _best_overlap(true_boxes.reset_index(drop=True), boxes)
                lost = true_boxes.reset_index(drop=True)[seen < 0.5]
                real = same = _best_overlap(flagged, lost)[0] >= 0.5
            hit = _best_overlap(flagged, at)[0] >= 0.5
            found = _best_overlap(at, flagged)[0] >= 0.5
            drawn = boxes[boxes["label"].isin(at["planted_label"])] if error == "swap" else boxes
            covered = _best_overlap(at, drawn)[0] >= 0.5
            kept = ~covered if error == "drop" else covered
        rows.append(
            {
                "error": error,
                "issues": "/".join(types),
                "flagged": len(flagged),
                "real_errors": int(real.sum()),
                "same_type": int(same.sum()),
                "planted_hits": int(hit.sum()),
                "planted": len(errors),
                "kept_by_consensus": int(kept.sum()),
                "found": int((found & kept).sum()),
            }
        )
    return pd.DataFrame(rows)


def _best_overlap(frame: pd.DataFrame, others: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """For each box of ``frame``, its highest IoU with a box of ``others`` on the same item and that box's label."""
    pairs = frame.reset_index(drop=True)[["item_id", *BOX]].assign(row=lambda f: np.arange(len(f)))
    pairs = pairs.merge(others[["item_id", "label", *BOX]], on="item_id", suffixes=("", "_o"))
    ax, ay, aw, ah = (pairs[c].to_numpy(dtype=float) for c in BOX)
    bx, by, bw, bh = (pairs[f"{c}_o"].to_numpy(dtype=float) for c in BOX)
    inter = np.clip(np.minimum(ax + aw, bx + bw) - np.maximum(ax, bx), 0, None) * np.clip(
        np.minimum(ay + ah, by + bh) - np.maximum(ay, by), 0, None
    )
    pairs["iou"] = inter / (aw * ah + bw * bh - inter)
    best = pairs.sort_values("iou", ascending=False, kind="stable").drop_duplicates("row").set_index("row")
    return (
        best["iou"].reindex(np.arange(len(frame)), fill_value=0.0).to_numpy(dtype=float),
        best["label"].reindex(np.arange(len(frame))).to_numpy(dtype=object),
    )


def test_label_issues_find_the_planted_errors(demo_nights, demo_seeded) -> None:
    """The demo plants label errors every annotator of an item shares (labelops.demo.plant_errors): consensus
    keeps them, cleanlab with the demo model's output finds them. Precision and recall per type over the
    session's three nights, each at least 0.7 at the default settings."""
    from labelops.demo import V2_DAY, V2_RENAMES

    seeded = demo_seeded[1]
    tables = demo_nights.warehouse / "tables"
    scored = []
    for day in DEMO_NIGHTS:
        issues = pd.read_parquet(tables / "label_issues" / f"{day}.parquet")
        consensus = pd.read_parquet(tables / "consensus_labels" / f"{day}.parquet")
        names = V2_RENAMES if day >= V2_DAY else {}  # the truth and the planted errors are in v1 names
        truth = seeded.truth[seeded.truth["day"] == day].replace({"label": names})
        planted = seeded.planted[seeded.planted["day"] == day].replace({"true_label": names, "planted_label": names})
        scored.append(scored_label_issues(issues, consensus, planted, truth))
        print(f"{day}: issues {issues.groupby('method')['issue'].value_counts().to_dict()}")
    total = pd.concat(scored).groupby(["error", "issues"], sort=False).sum().reset_index()
    total["precision"] = (total["real_errors"] / total["flagged"]).round(3)
    total["precision_same_type"] = (total["same_type"] / total["flagged"]).round(3)
    total["precision_planted_only"] = (total["planted_hits"] / total["flagged"]).round(3)
    total["recall"] = (total["found"] / total["kept_by_consensus"]).round(3)
    with pd.option_context("display.width", 250):
        print(total.to_string(index=False))
    assert (total["kept_by_consensus"] >= 0.8 * total["planted"]).all()  # shared errors: consensus keeps them
    assert (total["precision"] >= 0.7).all() and (total["recall"] >= 0.7).all()
