"""Per-annotator quality: gold accuracy, gold box precision/recall/IoU, agreement with
consensus, Dawid-Skene's estimated accuracy, and a flag with the reason an operator acts on."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from labelops.boxes import match_boxes
from labelops.columns import isin

GOLD_ANNOTATOR = "\x00gold"  # sorts before every real annotator id, so gold is always side "a"


@dataclass(frozen=True)
class Thresholds:
    """When an annotator is flagged; a rule only judges annotators with enough evidence."""

    min_gold_accuracy: float = 0.8
    min_gold_items: int = 5
    min_estimated_accuracy: float = 0.7
    min_answers_for_estimate: int = 10  # a day's fit learns little of someone with a handful of scene answers
    min_gold_box_recall: float = 0.7
    min_gold_box_precision: float = 0.7
    max_top_label_share: float = 0.95  # near-constant answers
    min_answers_for_share: int = 20


def gold_classification(answers: pd.DataFrame, gold: pd.DataFrame) -> pd.DataFrame:
    """gold_n and gold_accuracy per annotator, on items that have a classification gold label."""
    gold = gold[gold["kind"] == "classification"].drop_duplicates("item_id", keep="last")[["item_id", "label"]]
    joined = answers.merge(gold, on="item_id", suffixes=("", "_gold"))
    joined["correct"] = joined["label"] == joined["label_gold"]
    out = joined.groupby("annotator_id").agg(gold_n=("correct", "size"), gold_accuracy=("correct", "mean"))
    return out


def gold_boxes(boxes: pd.DataFrame, gold: pd.DataFrame) -> pd.DataFrame:
    """Precision, recall and mean IoU of each annotator's boxes against gold boxes (IoU ≥ 0.5, same label)."""
    gold = gold[gold["kind"] == "bbox"]
    boxes = boxes[isin(boxes["item_id"], gold["item_id"])]
    if boxes.empty:
        return pd.DataFrame(columns=["gold_box_n", "gold_box_precision", "gold_box_recall", "gold_box_mean_iou"])
    reference = gold[["item_id", "label", "x", "y", "w", "h"]].assign(annotator_id=GOLD_ANNOTATOR)
    matching = match_boxes(
        pd.concat([reference, boxes[["item_id", "annotator_id", "label", "x", "y", "w", "h"]]], ignore_index=True)
    )
    against = matching.same_label[
        (matching.same_label["annotator_a"] == GOLD_ANNOTATOR) & (matching.same_label["iou"] >= 0.5)
    ]
    pairs = matching.pair_boxes[matching.pair_boxes["annotator_a"] == GOLD_ANNOTATOR]
    totals = pairs.groupby("annotator_b").agg(gold_boxes=("n_a", "sum"), own_boxes=("n_b", "sum"))
    hits = against.groupby("annotator_b").agg(tp=("iou", "size"), gold_box_mean_iou=("iou", "mean"))
    out = totals.join(hits).fillna({"tp": 0})
    return pd.DataFrame(
        {
            "gold_box_n": out["gold_boxes"].astype(np.int64),
            "gold_box_precision": out["tp"] / out["own_boxes"],
            "gold_box_recall": out["tp"] / out["gold_boxes"],
            "gold_box_mean_iou": out["gold_box_mean_iou"],
        }
    ).rename_axis("annotator_id")


def annotator_scores(
    annotations: pd.DataFrame,
    gold: pd.DataFrame,
    consensus: pd.DataFrame,
    estimated: pd.Series,
    thresholds: Thresholds = Thresholds(),
) -> pd.DataFrame:
    """The ``annotator_scores`` table: one row per annotator of the day."""
    answers = annotations[annotations["kind"] == "classification"]
    boxes = annotations[annotations["kind"] == "bbox"]
    scores = annotations.groupby("annotator_id").size().rename("n_annotations").to_frame()
    scores = scores.join(gold_classification(answers, gold)).join(gold_boxes(boxes, gold))
    with_consensus = answers.merge(
        consensus[["item_id", "label", "n_votes"]], on="item_id", suffixes=("", "_consensus")
    )
    with_consensus = with_consensus[with_consensus["n_votes"] >= 2]
    agreement = (
        (with_consensus["label"] == with_consensus["label_consensus"]).groupby(with_consensus["annotator_id"]).mean()
    )
    scores["agreement_with_consensus"] = agreement
    scores["estimated_accuracy"] = estimated
    scores["scene_answers"] = answers.groupby("annotator_id").size().reindex(scores.index).fillna(0).astype(np.int64)
    top_share = answers.groupby("annotator_id")["label"].agg(lambda s: s.value_counts(normalize=True).iloc[0])
    scores["gold_n"] = scores["gold_n"].fillna(0).astype(np.int64)
    scores["gold_box_n"] = scores["gold_box_n"].fillna(0).astype(np.int64)

    t = thresholds
    reasons = pd.DataFrame(index=scores.index)
    reasons["gold"] = np.where(
        (scores["gold_n"] >= t.min_gold_items) & (scores["gold_accuracy"] < t.min_gold_accuracy),
        "gold accuracy " + scores["gold_accuracy"].round(3).astype(str) + f" < {t.min_gold_accuracy}",
        "",
    )
    answered = scores["scene_answers"]
    reasons["estimated"] = np.where(
        (answered >= t.min_answers_for_estimate) & (scores["estimated_accuracy"] < t.min_estimated_accuracy),
        "estimated accuracy " + scores["estimated_accuracy"].round(3).astype(str) + f" < {t.min_estimated_accuracy}",
        "",
    )
    reasons["recall"] = np.where(
        (scores["gold_box_n"] >= t.min_gold_items) & (scores["gold_box_recall"] < t.min_gold_box_recall),
        "gold box recall " + scores["gold_box_recall"].round(3).astype(str) + f" < {t.min_gold_box_recall}",
        "",
    )
    reasons["precision"] = np.where(
        (scores["gold_box_n"] >= t.min_gold_items) & (scores["gold_box_precision"] < t.min_gold_box_precision),
        "gold box precision " + scores["gold_box_precision"].round(3).astype(str) + f" < {t.min_gold_box_precision}",
        "",
    )
    share = top_share.reindex(scores.index)
    constant = (answered >= t.min_answers_for_share) & (share > t.max_top_label_share)
    reasons["constant"] = np.where(constant, "near-constant answers (top label " + share.round(3).astype(str) + ")", "")
    flag_reason = (
        reasons.apply(lambda r: "; ".join(v for v in r if v), axis=1) if len(reasons) else pd.Series(dtype=object)
    )
    scores["flagged"] = flag_reason != ""
    scores["flag_reason"] = flag_reason.where(scores["flagged"], None)
    columns = [
        "n_annotations",
        "gold_n",
        "gold_accuracy",
        "agreement_with_consensus",
        "estimated_accuracy",
        "scene_answers",
        "gold_box_n",
        "gold_box_precision",
        "gold_box_recall",
        "gold_box_mean_iou",
        "flagged",
        "flag_reason",
    ]
    return scores.reset_index()[["annotator_id", *columns]]
