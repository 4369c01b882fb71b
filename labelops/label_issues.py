"""Label errors found with the model: cleanlab's confident learning, CROWDLAB and ObjectLab on a day's labels.

Agreement, gold and consensus catch disagreement between people; they miss errors annotators make together,
and they cannot rank the rest of the data by how likely its label is wrong. cleanlab does that with a model's
out-of-sample predictions: confident learning (Northcutt et al., 2021) for scene labels, CROWDLAB (Goh et al.,
2022) for items several annotators judged, ObjectLab (Tkachenko et al., 2023) for boxes (overlooked objects,
swapped classes, bad locations). This module shapes the warehouse's tables into cleanlab's arrays and its
answers back into rows; every score and every decision is cleanlab's own (its import is lazy: only the nights
that have model output pay for it).

Scores are label quality in [0, 1]: low means the label is likely wrong. They mean something only when the
model never trained on these items (see docs/label-issues.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from labelops.columns import common_texts, distinct_texts, isin
from labelops.schema import PROBABILITY_PREFIX

COLUMNS = [
    "item_id",
    "kind",
    "method",
    "issue",
    "label",
    "suggested_label",
    "score",
    "x",
    "y",
    "w",
    "h",
]
CROWD_COLUMNS = ["item_id", "crowdlab_label", "crowdlab_quality", "annotator_agreement", "num_annotations"]


@dataclass(frozen=True)
class LabelIssueConfig:
    """cleanlab's settings, with its defaults."""

    filter_by: str = "prune_by_noise_rate"  # confident learning's rule (cleanlab.filter.find_label_issues)
    rank_by: str = "self_confidence"  # the scene label quality score (cleanlab.rank.get_label_quality_scores)
    # fewer labeled items than this with model output: confident learning has too few examples per class
    min_items: int = 50
    # ObjectLab's per-box scores below which a box is an issue, by type (its scores in [0, 1], low = likely
    # wrong; cleanlab's own image-level cut, ``rank.issues_from_scores``, defaults to 0.1)
    swap_below: float = 0.3
    badloc_below: float = 0.4
    overlooked_below: float = 0.3
    # ObjectLab scores image by image in Python (about 12 ms an image with COCO's 80 classes): at most this
    # many images a day, a seeded hash choosing them; the rest are counted as not checked
    max_box_items: int = 2_000


@dataclass(frozen=True)
class Found:
    """A day's label issues, and what could not be checked."""

    issues: pd.DataFrame  # COLUMNS, worst (lowest score) first
    crowd: pd.DataFrame  # CROWD_COLUMNS: CROWDLAB's consensus per item, beside the project's
    annotators: pd.DataFrame  # annotator_id, crowdlab_quality
    counts: dict[str, int] = field(default_factory=dict)  # items checked, without model output, skipped


def probability_columns(frame: pd.DataFrame) -> list[str]:
    return [c for c in frame.columns if str(c).startswith(PROBABILITY_PREFIX)]


def scene_probabilities(
    predictions: pd.DataFrame, classes: Sequence[str], names: Mapping[str, str] | None = None
) -> pd.DataFrame:
    """Items × ``classes``: the model's scene class probabilities, from production rows that carry
    ``prob_<class>`` columns (the latest row of an item wins). ``names`` reads a column's class under the
    guideline in force (a merge adds its classes' probabilities; a class no longer in ``classes`` is dropped
    and the rest renormalised). Rows without any probability are not model output for scenes."""
    columns = probability_columns(predictions)
    if not columns or predictions.empty:
        return pd.DataFrame(columns=list(classes), dtype=float)
    rows = predictions[predictions[columns].notna().any(axis=1)]
    if "x" in rows:  # a detection's class probabilities are about its box, not the scene
        rows = rows[rows["x"].isna()]
    probs = rows.groupby("item_id", sort=True)[columns].last().fillna(0.0).astype(float)
    renamed = [(names or {}).get(c[len(PROBABILITY_PREFIX) :], c[len(PROBABILITY_PREFIX) :]) for c in columns]
    probs = probs.T.groupby(np.asarray(renamed, dtype=object)).sum().T.reindex(columns=list(classes), fill_value=0.0)
    total = probs.sum(axis=1)
    probs = probs[total > 0]
    return probs.div(total[total > 0], axis=0)


def scene_issues(
    consensus: pd.DataFrame, probs: pd.DataFrame, config: LabelIssueConfig = LabelIssueConfig()
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Confident learning on the consensus scene labels of the items with model probabilities."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    scenes = consensus[consensus["kind"] == "classification"].drop_duplicates("item_id", keep="last")
    classes = list(probs.columns)
    known = scenes["label"].isin(classes).to_numpy()
    with_output = isin(scenes["item_id"], probs.index.to_series()) & known
    checked = scenes[with_output]
    counts = {
        "scene_items": len(scenes),
        "scene_items_checked": len(checked),
        "scene_items_without_model_output": int((~with_output & known).sum()),
        "scene_items_with_a_class_the_model_lacks": int((~known).sum()),
    }
    if len(checked) < config.min_items:
        counts["scene_items_checked"] = 0
        return _empty(), counts
    labels = pd.Categorical(checked["label"], categories=classes).codes.astype(int)
    pred_probs = probs.loc[checked["item_id"]].to_numpy(dtype=float)
    # one process: cleanlab's default forks a pool per call, which can deadlock in a Dagster step that runs
    # threads (the forked child inherits a lock another thread held); the results are the same either way
    is_issue = find_label_issues(labels, pred_probs, filter_by=config.filter_by, n_jobs=1)
    quality = get_label_quality_scores(labels, pred_probs, method=config.rank_by)
    found = checked[is_issue]
    issues = pd.DataFrame(
        {
            "item_id": found["item_id"].to_numpy(dtype=object),
            "kind": "classification",
            "method": "confident_learning",
            "issue": "scene_label",
            "label": found["label"].to_numpy(dtype=object),
            "suggested_label": np.asarray(classes, dtype=object)[pred_probs[is_issue].argmax(axis=1)],
            "score": quality[is_issue],
        }
    )
    return issues.reindex(columns=COLUMNS), counts


def crowd_issues(
    votes: pd.DataFrame,
    consensus: pd.DataFrame,
    probs: pd.DataFrame,
    config: LabelIssueConfig = LabelIssueConfig(),
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """CROWDLAB on the scene judgments of items with model probabilities: its consensus and quality per item,
    each annotator's quality, and an issue where its consensus differs from the project's (an annotator who is
    alone on an item and often wrong is outweighed by the model there)."""
    from cleanlab.multiannotator import get_label_quality_multiannotator

    classes = list(probs.columns)
    scene = votes[(votes["kind"] == "classification") & votes["label"].isin(classes)]
    scene = scene[isin(scene["item_id"], probs.index.to_series())]
    scene = scene.drop_duplicates(["item_id", "annotator_id"], keep="last")
    if scene["item_id"].nunique() < config.min_items or scene["annotator_id"].nunique() < 2:
        return _empty(), pd.DataFrame(columns=CROWD_COLUMNS), pd.DataFrame(columns=["annotator_id", "crowdlab_quality"])
    codes = pd.Categorical(scene["label"], categories=classes).codes.astype(float)
    wide = (
        pd.DataFrame({"item_id": scene["item_id"].to_numpy(), "a": scene["annotator_id"].to_numpy(), "c": codes})
        .pivot(index="item_id", columns="a", values="c")
        .sort_index()
    )
    result = get_label_quality_multiannotator(wide, probs.loc[wide.index].to_numpy(dtype=float), verbose=False)
    quality = result["label_quality"]
    crowd = pd.DataFrame(
        {
            "item_id": wide.index.to_numpy(dtype=object),
            "crowdlab_label": np.asarray(classes, dtype=object)[quality["consensus_label"].to_numpy(dtype=int)],
            "crowdlab_quality": quality["consensus_quality_score"].to_numpy(dtype=float),
            "annotator_agreement": quality["annotator_agreement"].to_numpy(dtype=float),
            "num_annotations": quality["num_annotations"].to_numpy(dtype=int),
        }
    )
    stats = result["annotator_stats"]
    annotators = pd.DataFrame(
        {"annotator_id": stats.index.to_numpy(dtype=object), "crowdlab_quality": stats["annotator_quality"].to_numpy()}
    )
    ours = (
        consensus[consensus["kind"] == "classification"]
        .drop_duplicates("item_id", keep="last")
        .set_index("item_id")["label"]
    )
    mine = ours.reindex(crowd["item_id"]).to_numpy(dtype=object)
    differs = pd.notna(mine) & (mine != crowd["crowdlab_label"].to_numpy(dtype=object))
    issues = pd.DataFrame(
        {
            "item_id": crowd["item_id"].to_numpy(dtype=object)[differs],
            "kind": "classification",
            "method": "crowdlab",
            "issue": "crowd_disagreement",
            "label": mine[differs],
            "suggested_label": crowd["crowdlab_label"].to_numpy(dtype=object)[differs],
            "score": crowd["crowdlab_quality"].to_numpy(dtype=float)[differs],
        }
    )
    return issues.reindex(columns=COLUMNS), crowd, annotators


@dataclass(frozen=True)
class Detection:
    """ObjectLab's inputs: per item, its labeled boxes and the model's boxes, as cleanlab takes them."""

    items: np.ndarray
    classes: list[str]
    labels: list[dict[str, np.ndarray]]
    predictions: list[np.ndarray]
    label_rows: list[np.ndarray]  # per item, the rows of its labeled boxes (positions in the input)
    prediction_rows: list[np.ndarray]  # per item, the rows of its detections in ObjectLab's order (by class)


def detection_inputs(
    boxes: pd.DataFrame, detections: pd.DataFrame, classes: Sequence[str], boxed: np.ndarray | None = None
) -> Detection:
    """Labeled boxes (x, y, w, h, label) and detections (x, y, w, h, predicted_label, confidence) of the items
    that have both, as ObjectLab's lists: ``labels[i] = {"bboxes": (L, 4) x1y1x2y2, "labels": (L,)}`` and
    ``predictions[i]`` a list of one (M_k, 5) array per class. Both frames hold only ``classes`` (box_issues
    filters them; the row numbers returned index these frames). ``boxed``: items annotators drew boxes on whose
    labels may hold none (every box lost in consensus), checked too when they have detections."""
    classes = list(classes)
    labeled = distinct_texts(boxes["item_id"], *([boxed] if boxed is not None else []))
    items = common_texts(labeled, detections["item_id"])
    lab_xyxy = _xyxy(boxes)
    det_xyxy = _xyxy(detections)
    lab_class = pd.Categorical(boxes["label"], categories=classes).codes
    det_class = pd.Categorical(detections["predicted_label"], categories=classes).codes
    if (lab_class < 0).any() or (det_class < 0).any():
        raise ValueError("detection_inputs takes boxes and detections of the given classes only")
    lab_groups = boxes.groupby(boxes["item_id"].astype(str)).indices
    det_groups = detections.groupby(detections["item_id"].astype(str)).indices
    confidence = detections["confidence"].to_numpy(dtype=float)
    labels, predictions, label_rows, prediction_rows = [], [], [], []
    for item in items:  # one step per image: cleanlab's inputs are per-image lists
        rows = lab_groups.get(item, np.array([], dtype=np.int64))
        labels.append({"bboxes": lab_xyxy[rows], "labels": lab_class[rows].astype(int)})
        label_rows.append(rows)
        drows = det_groups[item]
        per_class = [drows[det_class[drows] == k] for k in range(len(classes))]
        predictions.append(_objects([np.column_stack([det_xyxy[r], confidence[r]]).reshape(-1, 5) for r in per_class]))
        prediction_rows.append(np.concatenate(per_class).astype(int))
    return Detection(items, classes, labels, predictions, label_rows, prediction_rows)


def _objects(arrays: list[np.ndarray]) -> np.ndarray:
    """A 1-d array of arrays (numpy would stack arrays of one shape into one block)."""
    out = np.empty(len(arrays), dtype=object)
    for k, array in enumerate(arrays):
        out[k] = array
    return out


def box_issues(
    boxes: pd.DataFrame,
    detections: pd.DataFrame,
    classes: Sequence[str],
    config: LabelIssueConfig = LabelIssueConfig(),
    boxed: np.ndarray | None = None,
) -> tuple[pd.DataFrame, dict]:
    """ObjectLab: each labeled box scored for a swapped class and a bad location, each detection no label
    covers scored as an overlooked object (``cleanlab.object_detection.rank.compute_*_box_scores``); a box is
    an issue of a type when its score is below that type's threshold. ``boxed``: items annotators drew boxes
    on, checked even when consensus kept none of their boxes (each confident detection there is overlooked)."""
    boxed = np.asarray([] if boxed is None else boxed, dtype=str)
    if (boxes.empty and not len(boxed)) or detections.empty:  # a log without detections, a day without boxes
        return _empty(), {"box_items_checked": 0, "box_items_over_daily_limit": 0}
    boxes = boxes[boxes["label"].isin(list(classes))].reset_index(drop=True)
    detections = detections[detections["predicted_label"].isin(list(classes))].reset_index(drop=True)
    both = common_texts(distinct_texts(boxes["item_id"], boxed), detections["item_id"])
    chosen = _sample(both, config.max_box_items)
    boxes = boxes[isin(boxes["item_id"].astype(str), chosen)].reset_index(drop=True)
    detections = detections[isin(detections["item_id"].astype(str), chosen)].reset_index(drop=True)
    inputs = detection_inputs(boxes, detections, classes, common_texts(boxed, chosen))
    counts = {"box_items_checked": len(inputs.items), "box_items_over_daily_limit": len(both) - len(chosen)}
    if len(inputs.items) == 0:
        return _empty(), counts
    below = {"swap": config.swap_below, "badloc": config.badloc_below, "overlooked": config.overlooked_below}
    found = []
    for issue, scores in box_scores(inputs).items():
        source = detections if issue == "overlooked" else boxes
        rows_of = inputs.prediction_rows if issue == "overlooked" else inputs.label_rows
        score = np.concatenate([s for s in scores if len(s)] or [np.array([])])
        rows = np.concatenate([rows_of[i] for i, s in enumerate(scores) if len(s)] or [np.array([], dtype=int)])
        hit = score < below[issue]  # NaN (a detection a label covers) is never an issue
        if not hit.any():
            continue
        part = source.iloc[rows[hit]]
        found.append(
            pd.DataFrame(
                {
                    "item_id": part["item_id"].to_numpy(dtype=object),
                    "issue": issue,
                    "label": None if issue == "overlooked" else part["label"].to_numpy(dtype=object),
                    "suggested_label": part["predicted_label"].to_numpy(dtype=object)
                    if issue == "overlooked"
                    else None,
                    "score": score[hit],
                    **{c: part[c].to_numpy(dtype=float) for c in ("x", "y", "w", "h")},
                }
            )
        )
    if not found:
        counts["box_items_flagged"] = 0
        return _empty(), counts
    issues = pd.concat(found, ignore_index=True).assign(kind="bbox", method="objectlab")
    counts["box_items_flagged"] = int(issues["item_id"].nunique())
    return issues[COLUMNS], counts


def box_scores(inputs: Detection) -> dict[str, list[np.ndarray]]:
    """ObjectLab's three per-box scores with its default settings, per item. The per-image matching they share is
    computed once and handed to each (their documented ``auxiliary_inputs``, built as cleanlab's own
    ``filter.find_label_issues`` builds it): a third of the time on COCO's 100 images."""
    from cleanlab.internal.constants import ALPHA
    from cleanlab.object_detection import rank

    shared = rank._get_valid_inputs_for_compute_scores(ALPHA, inputs.labels, inputs.predictions)  # pyright: ignore[reportPrivateUsage]
    given = {"labels": inputs.labels, "predictions": inputs.predictions, "auxiliary_inputs": shared}
    return {
        "swap": rank.compute_swap_box_scores(**given),
        "badloc": rank.compute_badloc_box_scores(**given),
        "overlooked": rank.compute_overlooked_box_scores(**given),
    }


def checked_items(consensus: pd.DataFrame, votes: pd.DataFrame) -> pd.Series:
    """The items whose model output ``find`` reads: those of the consensus and of the judgments behind it. A
    production row of any other item changes nothing ``find`` returns, so a day's production table need only be
    read for these (a tenth of the 1M bench's rows)."""
    return pd.concat([consensus["item_id"], votes["item_id"]], ignore_index=True)


def find(
    consensus: pd.DataFrame,
    votes: pd.DataFrame,
    predictions: pd.DataFrame,
    scene_classes: Sequence[str],
    box_classes: Sequence[str],
    config: LabelIssueConfig = LabelIssueConfig(),
    names: Mapping[str, str] | None = None,
) -> Found:
    """All three methods on a day: ``consensus`` rows (scene labels and fused boxes), the judgments behind them,
    and the production model's output on the labeled items (scene probabilities and detections)."""
    labeled = pd.Series(consensus["item_id"].unique(), dtype=object)
    with_output = isin(labeled, predictions["item_id"]) if len(predictions) else np.zeros(len(labeled), bool)
    probs = scene_probabilities(predictions, scene_classes, names)
    scene, counts = scene_issues(consensus, probs, config)
    crowd, crowd_table, annotators = crowd_issues(votes, consensus, probs, config)
    has_box = (
        predictions[["x", "y", "w", "h"]].notna().all(axis=1) if {"x", "y", "w", "h"} <= set(predictions) else None
    )
    detections = predictions[has_box] if has_box is not None else predictions.iloc[:0]
    box_rows = consensus[consensus["kind"] == "bbox"]
    # items annotators drew boxes on: an item whose boxes consensus all lost is still checked (a scene-only item
    # is not: a detection there is no overlooked label)
    boxed = votes.loc[votes["kind"] == "bbox", "item_id"].astype(str).unique() if "kind" in votes else None
    boxes, box_counts = box_issues(box_rows, detections, box_classes, config, boxed)
    counts = {
        "items_labeled": len(labeled),
        "items_without_model_output": int((~with_output).sum()),
        **counts,
        **box_counts,
        "crowdlab_items": len(crowd_table),
    }
    parts = [p for p in (scene, crowd, boxes) if len(p)]
    issues = pd.concat(parts, ignore_index=True) if parts else _empty()
    issues = issues.sort_values(["score", "item_id"], kind="stable").reset_index(drop=True)
    return Found(issues, crowd_table, annotators, counts)


def _sample(items: np.ndarray, limit: int) -> np.ndarray:
    """At most ``limit`` of ``items``, the same ones on every run (the smallest hashes of their ids)."""
    if len(items) <= limit:
        return items
    order = np.argsort(pd.util.hash_array(items.astype(object)), kind="stable")
    return np.sort(items[order[:limit]])


def _xyxy(frame: pd.DataFrame) -> np.ndarray:
    x, y = frame["x"].to_numpy(dtype=float), frame["y"].to_numpy(dtype=float)
    return np.column_stack([x, y, x + frame["w"].to_numpy(dtype=float), y + frame["h"].to_numpy(dtype=float)])


def _empty() -> pd.DataFrame:
    return pd.DataFrame(columns=COLUMNS)


def worst_items(issues: pd.DataFrame, limit: int) -> pd.DataFrame:
    """One row per item (its worst issue), taken round-robin over issue types, worst first within each.

    Scores compare only within a type (ObjectLab's overlooked scores sit near 0 where a swap's rarely do), so a
    single ranking would hand the budget of review and relabeling to one type; each type's k-th worst comes
    before any type's (k+1)-th, and within a round the lower score first.
    """
    columns = ["item_id", "issue", "label", "suggested_label", "score"]
    if issues.empty:
        return pd.DataFrame(columns=columns)
    worst = issues.sort_values(["score", "item_id"], kind="stable").drop_duplicates("item_id")
    worst = worst.assign(_round=worst.groupby("issue", sort=False).cumcount())
    worst = worst.sort_values(["_round", "score", "item_id"], kind="stable")
    return worst.head(limit)[columns].reset_index(drop=True)


def summary(found: Found) -> dict[str, Any]:
    by_issue = found.issues["issue"].value_counts().to_dict() if len(found.issues) else {}
    return {**found.counts, **{f"issues_{k}": int(v) for k, v in by_issue.items()}}
