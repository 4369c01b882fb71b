"""Box agreement between annotators: IoU, matching, agreement metrics and box consensus.

Matching follows CVAT's quality checks: boxes of two annotators on the same item are
paired by the Hungarian algorithm on IoU, first among boxes of the same label, then,
for what is left, regardless of label — a pair found only in that second pass is a
label conflict. When each annotator drew exactly one box of a label on an item (the
common case) the pairing is direct and needs no assignment problem at all.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

MATCH_COLUMNS = ["item_id", "annotator_a", "annotator_b", "index_a", "index_b", "label_a", "label_b", "iou"]
EXACT_EXPECTED_LIMIT = 4000  # values up to which box alpha's expected disagreement is computed over all pairs
EXPECTED_SAMPLE = 2_000_000


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Elementwise IoU of boxes given as (..., 4) arrays of x, y, w, h."""
    ax2, ay2 = a[..., 0] + a[..., 2], a[..., 1] + a[..., 3]
    bx2, by2 = b[..., 0] + b[..., 2], b[..., 1] + b[..., 3]
    iw = np.clip(np.minimum(ax2, bx2) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    ih = np.clip(np.minimum(ay2, by2) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = iw * ih
    union = a[..., 2] * a[..., 3] + b[..., 2] * b[..., 3] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, 0.0)


class BoxOverlap:
    """IoU between boxes of a frame, by row position (broadcasting like numpy)."""

    exact_limit = EXACT_EXPECTED_LIMIT
    sample = EXPECTED_SAMPLE

    def __init__(self, frame: pd.DataFrame) -> None:
        self.coords = frame[["x", "y", "w", "h"]].to_numpy(dtype=float)

    def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return iou(self.coords[a], self.coords[b])


class PolygonOverlap:
    """IoU between polygons of a frame (shapely, vectorized; invalid outlines are repaired first)."""

    exact_limit = 0  # all-pairs polygon intersections are too slow: box alpha samples pairs instead
    sample = 200_000

    def __init__(self, frame: pd.DataFrame) -> None:
        import pyarrow as pa
        import shapely

        lists = pa.array(frame["points"].tolist(), type=pa.list_(pa.float64()))
        coords = lists.flatten().to_numpy(zero_copy_only=False).reshape(-1, 2)
        ring = np.repeat(np.arange(len(frame)), lists.value_lengths().to_numpy(zero_copy_only=False) // 2)
        self.shapes = shapely.make_valid(shapely.polygons(shapely.linearrings(coords, indices=ring)))
        self.areas = shapely.area(self.shapes)
        self._shapely = shapely

    def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        inter = self._shapely.area(self._shapely.intersection(self.shapes[a], self.shapes[b]))
        union = self.areas[a] + self.areas[b] - inter
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(union > 0, inter / union, 0.0)


@dataclass
class Matching:
    """Box pairs between annotator pairs, and the boxes each pair left unmatched."""

    matches: pd.DataFrame  # MATCH_COLUMNS; label_a != label_b marks a label conflict
    boxes: pd.DataFrame  # the input boxes, with `index` = row position used in matches
    pair_boxes: pd.DataFrame  # per (item, annotator_a, annotator_b): n_a, n_b
    overlap: BoxOverlap | PolygonOverlap | None = None

    @property
    def same_label(self) -> pd.DataFrame:
        return self.matches[self.matches["label_a"] == self.matches["label_b"]]

    @property
    def conflicts(self) -> pd.DataFrame:
        return self.matches[self.matches["label_a"] != self.matches["label_b"]]


def match_boxes(boxes: pd.DataFrame, *, min_iou: float = 0.0, conflict_iou: float = 0.5, polygons: bool = False) -> Matching:
    """Match the boxes (or, with ``polygons``, the polygons) of every annotator pair on every item.

    ``boxes`` has item_id, annotator_id, label, x, y, w, h (and points for polygons). Same-label
    pairs need an IoU above ``min_iou``; a cross-label pair needs ``conflict_iou`` to count as a conflict.
    """
    boxes = boxes.reset_index(drop=True).assign(index=lambda f: np.arange(len(f)))
    overlap = PolygonOverlap(boxes) if polygons else BoxOverlap(boxes)
    per = boxes.groupby(["item_id", "annotator_id"], sort=True).size().rename("n").reset_index()
    pairs = per.merge(per, on="item_id", suffixes=("_a", "_b"))
    pairs = pairs[pairs["annotator_id_a"] < pairs["annotator_id_b"]]
    pair_boxes = pairs.rename(columns={"annotator_id_a": "annotator_a", "annotator_id_b": "annotator_b"})
    if pairs.empty:
        return Matching(pd.DataFrame(columns=MATCH_COLUMNS), boxes, pair_boxes, overlap)

    counts = boxes.groupby(["item_id", "annotator_id", "label"], sort=False)["index"].transform("size")
    single = boxes[counts == 1]
    direct = single.merge(single, on=["item_id", "label"], suffixes=("_a", "_b"))
    direct = direct[direct["annotator_id_a"] < direct["annotator_id_b"]]
    direct_iou = overlap(direct["index_a"].to_numpy(), direct["index_b"].to_numpy())
    keep = direct_iou > min_iou
    found = [pd.DataFrame({
        "item_id": direct["item_id"].to_numpy()[keep], "annotator_a": direct["annotator_id_a"].to_numpy()[keep],
        "annotator_b": direct["annotator_id_b"].to_numpy()[keep], "index_a": direct["index_a"].to_numpy()[keep],
        "index_b": direct["index_b"].to_numpy()[keep], "label_a": direct["label"].to_numpy()[keep],
        "label_b": direct["label"].to_numpy()[keep], "iou": direct_iou[keep],
    })]
    # A box is matched at most once per partner annotator: pairs are judged independently.
    matched = set(zip(found[0]["index_a"], found[0]["annotator_b"])) | set(zip(found[0]["index_b"], found[0]["annotator_a"]))

    # Same-label groups where an annotator drew several boxes: an assignment problem per pair.
    multi = boxes[counts > 1]
    if not multi.empty:
        groups = boxes[boxes.set_index(["item_id", "label"]).index.isin(multi.set_index(["item_id", "label"]).index)]
        found.append(_assign(groups, overlap, ["item_id", "label"], min_iou, matched, skip_single_pairs=True))
    # Label-agnostic pass over what each pair left: label conflicts. Only items where boxes of
    # two or more annotators still lack a partner can hold one.
    partners = boxes.groupby("item_id")["annotator_id"].transform("nunique") - 1
    done = pd.Series([i for i, _ in matched], dtype=np.int64).value_counts()
    leftover = boxes[boxes["index"].map(done).fillna(0).to_numpy() < partners.to_numpy()]
    open_items = leftover.groupby("item_id")["annotator_id"].nunique()
    candidates = boxes[boxes["item_id"].isin(open_items[open_items >= 2].index)]
    found.append(_assign(candidates, overlap, ["item_id"], conflict_iou - 1e-12, matched, cross_label_only=True))
    found = [f for f in found if len(f)]
    matches = pd.concat(found, ignore_index=True) if found else pd.DataFrame(columns=MATCH_COLUMNS)
    return Matching(matches[MATCH_COLUMNS], boxes, pair_boxes, overlap)


def _assign(
    boxes: pd.DataFrame,
    overlap: BoxOverlap | PolygonOverlap,
    keys: list[str],
    min_iou: float,
    matched: set[tuple[int, str]],
    *,
    cross_label_only: bool = False,
    skip_single_pairs: bool = False,
) -> pd.DataFrame:
    """Hungarian matching per group and annotator pair, over boxes the pair has not matched yet."""
    rows = []
    for _, group in boxes.groupby(keys, sort=False):
        annotators = sorted(group["annotator_id"].unique())
        by_annotator = {a: group[group["annotator_id"] == a] for a in annotators}
        for i, a in enumerate(annotators):
            for b in annotators[i + 1:]:
                ga, gb = by_annotator[a], by_annotator[b]
                if skip_single_pairs and len(ga) == 1 and len(gb) == 1:
                    continue  # matched directly
                ga = ga[[(x, b) not in matched for x in ga["index"]]]
                gb = gb[[(x, a) not in matched for x in gb["index"]]]
                if ga.empty or gb.empty:
                    continue
                scores = overlap(ga["index"].to_numpy()[:, None], gb["index"].to_numpy()[None, :])
                if cross_label_only:
                    scores = np.where(ga["label"].to_numpy()[:, None] != gb["label"].to_numpy()[None, :], scores, 0.0)
                ra, rb = linear_sum_assignment(scores, maximize=True)
                ok = scores[ra, rb] > min_iou
                for x, y in zip(ra[ok], rb[ok]):
                    index_a, index_b = int(ga["index"].iat[x]), int(gb["index"].iat[y])
                    rows.append((group["item_id"].iat[0], a, b, index_a, index_b, ga["label"].iat[x], gb["label"].iat[y], float(scores[x, y])))
                    matched.update(((index_a, b), (index_b, a)))
    return pd.DataFrame(rows, columns=MATCH_COLUMNS)


def box_metrics(matching: Matching, *, seed: int = 0) -> dict[str, float]:
    """mean matched IoU, F1 at IoU 0.5, label-conflict rate and box alpha (δ = 1 − IoU)."""
    same = matching.same_label
    n_boxes = float((matching.pair_boxes["n_a"] + matching.pair_boxes["n_b"]).sum())
    true_positives = float((same["iou"] >= 0.5).sum())
    total_matches = len(matching.matches)
    return {
        "mean_matched_iou": float(same["iou"].mean()) if len(same) else float("nan"),
        "box_f1@0.5": 2 * true_positives / n_boxes if n_boxes else float("nan"),
        "label_conflict_rate": len(matching.conflicts) / total_matches if total_matches else float("nan"),
        "box_alpha": box_alpha(matching, seed=seed),
    }


def box_alpha(matching: Matching, *, seed: int = 0) -> float:
    """Krippendorff's alpha over matched units with distance 1 − IoU.

    Each same-label match is a unit of two values. D_o is the mean within-unit
    distance; D_e the mean distance over all ordered pairs of values, computed exactly
    up to EXACT_EXPECTED_LIMIT boxes and from a seeded sample of pairs above (and for
    polygons, whose pairwise intersections are costly).
    """
    same = matching.same_label
    if len(same) < 2:
        return float("nan")
    values = np.concatenate([same["index_a"].to_numpy(), same["index_b"].to_numpy()]).astype(int)
    overlap = matching.overlap
    observed = float((1 - same["iou"]).mean())
    n = len(values)
    if n <= overlap.exact_limit:
        total = 0.0
        for start in range(0, n, 512):
            total += (1 - overlap(values[start:start + 512, None], values[None, :])).sum()  # the diagonal is 0
        expected = total / (n * (n - 1))
    else:
        rng = np.random.default_rng(seed)
        i = rng.integers(0, n, overlap.sample)
        j = (i + rng.integers(1, n, overlap.sample)) % n  # j != i
        expected = float((1 - overlap(values[i], values[j])).mean())
    return 1 - observed / expected if expected > 0 else float("nan")


def fuse_boxes(matching: Matching, *, weights: pd.Series | None = None, cluster_iou: float = 0.5, quorum: int = 2) -> pd.DataFrame:
    """Box consensus: connected same-label matches (IoU ≥ ``cluster_iou``) become one object.

    Coordinates (corners) are averaged with annotator ``weights`` (default 1); ``support``
    is the number of distinct annotators in the cluster and clusters below ``quorum`` are
    dropped. ``confidence`` is support over the annotators who labeled the item.
    """
    columns = ["item_id", "label", "x", "y", "w", "h", "support", "confidence", "n_votes", "agreement", "method"]
    boxes = matching.boxes
    if boxes.empty:
        return pd.DataFrame(columns=columns)
    edges = matching.same_label[matching.same_label["iou"] >= cluster_iou]
    n = len(boxes)
    graph = coo_matrix((np.ones(len(edges)), (edges["index_a"].astype(int), edges["index_b"].astype(int))), shape=(n, n))
    _, cluster = connected_components(graph, directed=False)
    w = np.ones(n) if weights is None else boxes["annotator_id"].map(weights).fillna(1.0).clip(lower=1e-6).to_numpy()
    corners = boxes[["x", "y"]].to_numpy(dtype=float)
    frame = pd.DataFrame({
        "cluster": cluster, "item_id": boxes["item_id"].to_numpy(), "label": boxes["label"].to_numpy(),
        "annotator_id": boxes["annotator_id"].to_numpy(), "w_": w,
        "x1": corners[:, 0] * w, "y1": corners[:, 1] * w,
        "x2": (corners[:, 0] + boxes["w"].to_numpy(dtype=float)) * w, "y2": (corners[:, 1] + boxes["h"].to_numpy(dtype=float)) * w,
    })
    grouped = frame.groupby("cluster", sort=True)
    fused = grouped.agg(item_id=("item_id", "first"), label=("label", "first"), weight=("w_", "sum"),
                        x1=("x1", "sum"), y1=("y1", "sum"), x2=("x2", "sum"), y2=("y2", "sum"),
                        support=("annotator_id", "nunique"), n_votes=("annotator_id", "size"))
    for c in ("x1", "y1", "x2", "y2"):
        fused[c] = fused[c] / fused["weight"]
    on_item = boxes.groupby("item_id")["annotator_id"].nunique()
    fused["n_annotators"] = fused["item_id"].map(on_item)
    fused = fused[fused["support"] >= min(quorum, 1_000_000)]
    out = pd.DataFrame({
        "item_id": fused["item_id"], "label": fused["label"], "x": fused["x1"], "y": fused["y1"],
        "w": fused["x2"] - fused["x1"], "h": fused["y2"] - fused["y1"], "support": fused["support"].astype(np.int64),
        "confidence": fused["support"] / fused["n_annotators"], "n_votes": fused["n_votes"].astype(np.int64),
        "agreement": fused["support"] / fused["n_annotators"], "method": "box_fusion",
    })
    return out.sort_values(["item_id", "label", "x", "y"]).reset_index(drop=True)[columns]
