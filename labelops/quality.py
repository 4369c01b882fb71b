"""The quality stage end to end: agreement rows, consensus, annotator scores and review queue
for one day's validated annotations. Each function takes and returns plain frames."""

from __future__ import annotations

import numpy as np
import pandas as pd

from labelops import agreement, boxes, consensus
from labelops.annotators import Thresholds, annotator_scores
from labelops.guidelines import Guideline
from labelops.review import review_queue, unmatched_boxes

AGREEMENT_COLUMNS = ["scope", "metric", "value", "ci_low", "ci_high", "n_items", "n_annotations"]
CONSENSUS_COLUMNS = [
    "item_id",
    "kind",
    "label",
    "confidence",
    "n_votes",
    "agreement",
    "method",
    "x",
    "y",
    "w",
    "h",
    "support",
]
METHODS = ("dawid_skene", "majority_vote")
# the columns of the annotations the quality stage reads (agreement, consensus and scores, review, label issues): the
# day's table has 24, and reading them all took four times as long and held 2.8 times the memory on the 1M bench
QUALITY_INPUTS = ("item_id", "annotator_id", "kind", "label", "x", "y", "w", "h", "points", "needs_relabel")
# the review queue also asks which file a judgment came from: who was asked to draw boxes (review.unmatched_boxes)
REVIEW_INPUTS = (*QUALITY_INPUTS, "source_file")


def countable(annotations: pd.DataFrame) -> pd.DataFrame:
    """The judgments that count for agreement, consensus and scores: a label a guideline change split or
    redefined (``needs_relabel``) waits for a relabel; it is kept as data, but it says nothing any more."""
    if "needs_relabel" not in annotations or not annotations["needs_relabel"].notna().any():
        return annotations
    return annotations[annotations["needs_relabel"].isna()]


SCENE_INPUTS = ["item_id", "annotator_id", "label"]
BOX_INPUTS = ["item_id", "annotator_id", "label", "x", "y", "w", "h"]


def _classification(annotations: pd.DataFrame) -> pd.DataFrame:
    return annotations.loc[annotations["kind"] == "classification", SCENE_INPUTS]


def _boxes(annotations: pd.DataFrame) -> pd.DataFrame:
    return annotations.loc[annotations["kind"] == "bbox", BOX_INPUTS]


def agreement_table(
    annotations: pd.DataFrame, items: pd.DataFrame, slice_columns: list[str], *, n_boot: int, seed: int
) -> pd.DataFrame:
    """Classification agreement (overall, per label, per slice value), box agreement (overall, per label)
    and polygon agreement (``kind=polygon``, per label)."""
    annotations = countable(annotations)
    slices = items[["item_id", *slice_columns]] if slice_columns else None
    frames = [agreement.classification_agreement(_classification(annotations), slices=slices, n_boot=n_boot, seed=seed)]
    box_frame = _boxes(annotations)
    polygon_frame = annotations.loc[
        annotations["kind"] == "polygon", ["item_id", "annotator_id", "label", "x", "y", "w", "h", "points"]
    ]
    rows = []
    for scope, frame, polygons in (("overall", box_frame, False), ("kind=polygon", polygon_frame, True)):
        if len(frame):  # polygons are matched on polygon IoU, in scopes of their own
            matching = boxes.match_boxes(frame, polygons=polygons)
            rows.append((scope, matching))
            labels = sorted(frame["label"].unique())
            rows.extend(zip([f"label={label}" for label in labels], matching.only_labels(labels), strict=True))
    if rows:
        for scope, scoped in rows:
            n_items, n_boxes = scoped.n_items(), len(scoped.boxes)
            for metric, value in boxes.box_metrics(scoped, seed=seed).items():
                frames.append(
                    pd.DataFrame([(scope, metric, value, np.nan, np.nan, n_items, n_boxes)], columns=AGREEMENT_COLUMNS)
                )
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=AGREEMENT_COLUMNS)


def consensus_table(
    answers: pd.DataFrame,
    box_frame: pd.DataFrame,
    gold: pd.DataFrame,
    *,
    method: str = "dawid_skene",
    quorum: int = 2,
    cluster_iou: float = 0.5,
    model: consensus.AnnotatorModel | None = None,
) -> tuple[pd.DataFrame, pd.Series, consensus.Aggregate | None]:
    """``consensus_labels`` rows (classification and fused boxes) of scene judgments (item_id, annotator_id,
    label) and box judgments (with x, y, w, h), each annotator's accuracy as Dawid-Skene estimates it (empty
    for majority vote), which weights the box fusion, and the Dawid-Skene fit (None for majority vote, or when
    the kept ``model`` labeled the judgments instead of a new fit). The judgments come selected by kind: the
    label state selects them from millions of votes, once."""
    if method not in METHODS:
        raise ValueError(f"unknown consensus method {method!r}; use one of {METHODS}")
    estimated = model.accuracy() if model is not None and method == "dawid_skene" else pd.Series(dtype=float)
    fit = None
    tables = []
    if len(answers):
        votes = agreement.Votes.from_frame(answers)
        gold_labels = (
            gold[gold["kind"] == "classification"].drop_duplicates("item_id", keep="last").set_index("item_id")["label"]
        )
        if method == "dawid_skene" and model is not None:
            aggregate, votes = model.aggregate(votes, gold=gold_labels)
        elif method == "dawid_skene":
            aggregate = fit = consensus.dawid_skene(votes, gold=gold_labels)
            estimated = consensus.estimated_accuracy(aggregate)
        else:
            aggregate = consensus.majority_vote(votes)
        tables.append(aggregate.table(votes).assign(kind="classification"))
    if len(box_frame):
        weights = estimated if len(estimated) else None
        fused = boxes.fuse_boxes(boxes.match_boxes(box_frame), weights=weights, cluster_iou=cluster_iou, quorum=quorum)
        tables.append(fused.assign(kind="bbox"))
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=CONSENSUS_COLUMNS)
    for column in CONSENSUS_COLUMNS:
        if column not in table:
            table[column] = np.nan
    table = table[CONSENSUS_COLUMNS].astype(
        {"support": "float64", "x": "float64", "y": "float64", "w": "float64", "h": "float64"}
    )
    return table, estimated, fit


def consensus_and_scores(
    annotations: pd.DataFrame,
    gold: pd.DataFrame,
    *,
    method: str = "dawid_skene",
    quorum: int = 2,
    cluster_iou: float = 0.5,
    thresholds: Thresholds | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``consensus_labels`` (classification and fused boxes) and ``annotator_scores``."""
    annotations = countable(annotations)
    thresholds = thresholds or Thresholds()
    table, estimated, _ = consensus_table(
        _classification(annotations), _boxes(annotations), gold, method=method, quorum=quorum, cluster_iou=cluster_iou
    )
    classification_consensus = table[table["kind"] == "classification"]
    scores = annotator_scores(annotations, gold, classification_consensus, estimated, thresholds)
    return table, scores


def review(
    annotations: pd.DataFrame,
    consensus_table: pd.DataFrame,
    guideline: Guideline,
    *,
    min_confidence: float,
    min_agreement: float,
    label_issues: pd.DataFrame | None = None,
) -> pd.DataFrame:
    annotations = countable(annotations)
    matching = boxes.match_boxes(_boxes(annotations))
    severity = {name: c.severity for name, c in guideline.classes.items()}
    critical = {name for name, c in guideline.classes.items() if c.critical}
    classification = consensus_table[consensus_table["kind"] == "classification"]
    return review_queue(
        classification,
        matching.conflicts,
        unmatched_boxes(matching, critical, annotations[["item_id", "annotator_id", "kind", "source_file"]]),
        severity,
        critical,
        min_confidence=min_confidence,
        min_agreement=min_agreement,
        label_issues=label_issues,
    )
