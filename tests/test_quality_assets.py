"""The quality assets on a demo day, materialized for real and read back through the definitions."""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import REPO

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
    guideline. The demo's log has detections on labeled items (ObjectLab runs) but no class probabilities, so
    every scene item is counted as without model output."""
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
    pd.testing.assert_frame_equal(got, found.issues.reset_index(drop=True), check_dtype=False)
    assert len(got) and set(got["method"]) == {"objectlab"}
    assert found.counts["scene_items_checked"] == 0 and found.counts["box_items_checked"] > 50
    print(f"{DAY}: {found.counts}; issues by type {got['issue'].value_counts().to_dict()}")


def test_the_days_worst_label_issues_are_in_its_review_queue(outputs, demo_nights) -> None:
    issues = pd.read_parquet(demo_nights.warehouse / "tables" / "label_issues" / f"{DAY}.parquet")
    queue = outputs["review_queue"]
    flagged = queue[queue["reason"].str.contains("label_issue: ", regex=False)]
    assert len(flagged) == min(issues["item_id"].nunique(), 20) > 0
    assert set(flagged["item_id"]) <= set(issues["item_id"])
