"""The review queue: items a human must decide, with the reason and a priority.

Priority puts safety-critical classes first: it is the guideline's severity weight of the
most severe class involved (critical classes at least 10), times how uncertain the item is.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from labelops.columns import concatenated, isin, joined

CRITICAL_FLOOR = 10.0


# An item goes to review below these (classification consensus confidence, share of agreeing votes).
MIN_CONFIDENCE = 0.7
MIN_AGREEMENT = 0.6
# A day's worst label issues (cleanlab) that enter review: a ranking for people, within a reviewer's day.
MAX_LABEL_ISSUES = 20


def review_queue(
    consensus: pd.DataFrame,
    conflicts: pd.DataFrame,
    unmatched: pd.DataFrame,
    severity: dict[str, float],
    critical: set[str],
    *,
    min_confidence: float = MIN_CONFIDENCE,
    min_agreement: float = MIN_AGREEMENT,
    label_issues: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """``consensus``: classification consensus rows; ``conflicts``: box label conflicts
    (item_id, label_a, label_b); ``unmatched``: critical boxes only some annotators drew (item_id, label);
    ``label_issues``: the worst issues cleanlab found (item_id, issue, label, score), already within the budget."""
    weight = {label: max(w, CRITICAL_FLOOR) if label in critical else w for label, w in severity.items()}
    rows = []
    votes = consensus[consensus["n_votes"] >= 2]
    low = votes[votes["confidence"] < min_confidence]
    rows.append(
        pd.DataFrame(
            {
                "item_id": low["item_id"],
                "reason": "low consensus confidence (" + low["confidence"].round(3).astype(str) + ")",
                "labels": low["label"],
                "uncertainty": 1 - low["confidence"],
            }
        )
    )
    split = votes[(votes["agreement"] < min_agreement) & (votes["confidence"] >= min_confidence)]
    rows.append(
        pd.DataFrame(
            {
                "item_id": split["item_id"],
                "reason": "annotators split (agreement " + split["agreement"].round(3).astype(str) + ")",
                "labels": split["label"],
                "uncertainty": 1 - split["agreement"],
            }
        )
    )
    if len(conflicts):
        summary = joined(conflicts["item_id"], conflicts["label_a"] + " vs " + conflicts["label_b"], ", ")
        rows.append(
            pd.DataFrame(
                {
                    "item_id": summary.index,
                    "reason": "box label conflict: " + summary.to_numpy(),
                    "labels": summary.to_numpy(),
                    "uncertainty": 1.0,
                }
            )
        )
    if len(unmatched):
        summary = joined(unmatched["item_id"], unmatched["label"], ", ")
        rows.append(
            pd.DataFrame(
                {
                    "item_id": summary.index,
                    "reason": "critical boxes drawn by only some annotators: " + summary.to_numpy(),
                    "labels": summary.to_numpy(),
                    "uncertainty": 0.5,
                }
            )
        )
    if label_issues is not None and len(label_issues):
        rows.append(
            pd.DataFrame(
                {
                    "item_id": label_issues["item_id"].to_numpy(dtype=object),
                    "reason": (
                        "label_issue: "
                        + label_issues["issue"].astype(str)
                        + " (score "
                        + label_issues["score"].astype(float).round(3).astype(str)
                        + ")"
                    ).to_numpy(dtype=object),
                    "labels": label_issues["label"].fillna(label_issues["suggested_label"]).astype(str).to_numpy(),
                    "uncertainty": 1 - label_issues["score"].astype(float).to_numpy(),
                }
            )
        )
    n_scene = len(rows[0]) + len(rows[1])  # the rows of the scene rules, first: what the day's fit made of its votes
    queue = (
        pd.concat([r for r in rows if len(r)], ignore_index=True)
        if any(len(r) for r in rows)
        else pd.DataFrame(columns=["item_id", "reason", "labels", "uncertainty"])
    )
    queue["scene"] = np.arange(len(queue)) < n_scene
    exploded = _label_names(queue["labels"])
    item_weight = exploded.map(weight).fillna(1.0).groupby(level=0).max()
    queue["critical"] = exploded.isin(critical).groupby(level=0).any() if len(queue) else pd.Series(dtype=bool)
    queue["priority"] = (item_weight.reindex(queue.index).fillna(1.0) * queue["uncertainty"].astype(float)).round(6)
    per_item = queue.groupby("item_id", sort=False).agg(
        priority=("priority", "sum"), critical=("critical", "any"), scene_only=("scene", "all")
    )
    queue = pd.DataFrame(
        {
            "item_id": per_item.index,
            "reason": concatenated(queue["item_id"], queue["reason"], "; ").reindex(per_item.index).to_numpy(),
            "priority": per_item["priority"].to_numpy(),
            "critical": per_item["critical"].to_numpy(),
            "labels": concatenated(queue["item_id"], queue["labels"], ", ").reindex(per_item.index).to_numpy(),
            # listed only for the day's scene consensus: label_state holds it in review only if the pooled
            # consensus is unsure too (a small day's fit can rate a unanimous item low)
            "scene_only": per_item["scene_only"].to_numpy(dtype=bool),
        }
    )
    return queue.sort_values(
        ["critical", "priority", "item_id"], ascending=[False, False, True], kind="stable"
    ).reset_index(drop=True)


def _label_names(labels: pd.Series) -> pd.Series:
    """Each entry's label names ("car vs truck", "car, bus"), one per row under the entry's index: what
    ``astype(str).str.replace(" vs ", ", ").str.split(", ").explode()`` gives, split by Arrow rather than a
    Python call per entry."""
    text = pa.array(labels.astype(str).to_numpy(dtype=object), type=pa.large_string(), from_pandas=True)
    names = pc.split_pattern(pc.replace_substring(text, " vs ", ", "), ", ")
    names = pc.fill_null(names, pa.scalar([None], type=names.type))  # a missing entry stays one missing name
    parents = pc.list_parent_indices(names).to_numpy()
    values = pc.list_flatten(names).to_numpy(zero_copy_only=False)
    return pd.Series(np.where(pd.isna(values), np.nan, values), index=labels.index[parents], dtype=object)


def unmatched_boxes(matching, critical: set[str], judged: pd.DataFrame) -> pd.DataFrame:
    """Boxes of critical classes that no other annotator on the item matched.

    A lone box of a minor class is settled by the consensus quorum; a pedestrian that only one of three
    annotators saw is worth a human look. The others count whether they drew boxes or only judged the scene in
    a task that asked for boxes: one who drew nothing missed the pedestrian just the same, and the quorum would
    drop it unseen. A task asks for boxes when its file holds any: an annotator of a scene-only export (a crowd
    CSV, a classification project) was never asked, and missed nothing. ``judged`` holds item_id, annotator_id,
    kind and source_file of the day's judgments of every kind."""
    boxes = matching.boxes
    lonely = boxes[~matching.paired & boxes["label"].isin(critical)]
    if lonely.empty:
        return lonely[["item_id", "annotator_id", "label"]].reset_index(drop=True)
    object_files = pd.unique(judged.loc[judged["kind"].astype(str) != "classification", "source_file"])
    judged = judged[isin(judged["source_file"], pd.Series(object_files, dtype=object))]
    on_items = judged[isin(judged["item_id"], lonely["item_id"])]
    annotators = on_items.groupby("item_id")["annotator_id"].nunique()
    seen_by_others = lonely["item_id"].map(annotators).fillna(0).to_numpy() >= 2
    return lonely.loc[seen_by_others, ["item_id", "annotator_id", "label"]].reset_index(drop=True)
