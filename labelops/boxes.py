"""Box agreement between annotators: IoU, matching, agreement metrics and box consensus.

Matching follows CVAT's quality checks: boxes of two annotators on the same item are
paired by the Hungarian algorithm on IoU, first among boxes of the same label, then,
for what is left, regardless of label — a pair found only in that second pass is a
label conflict. When each annotator drew exactly one box of a label on an item (the
common case) the pairing is direct and needs no assignment problem at all.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, cast

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

MATCH_COLUMNS = ["item_id", "annotator_a", "annotator_b", "index_a", "index_b", "label_a", "label_b", "iou"]
EXACT_EXPECTED_LIMIT = 4000  # values up to which box alpha's expected disagreement is computed over all pairs
EXPECTED_SAMPLE = 2_000_000
# Sampled pairs are measured in parts of this many: two million at once make a dozen 16 MB temporaries, fresh memory
# that a night's process faults in page by page (box agreement at a million annotations: 2.0-2.4 s, in parts 1.3 s).
SAMPLE_CHUNK = 1 << 16


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Elementwise IoU of boxes given as (..., 4) arrays of x, y, w, h."""
    return _iou(_corners(a), _corners(b))


def _corners(boxes: np.ndarray) -> tuple[np.ndarray, ...]:
    """x1, y1, x2, y2 and area of (..., 4) x, y, w, h boxes."""
    x, y, w, h = boxes[..., 0], boxes[..., 1], boxes[..., 2], boxes[..., 3]
    return x, y, x + w, y + h, w * h


def _iou(a: tuple[np.ndarray, ...], b: tuple[np.ndarray, ...]) -> np.ndarray:
    (ax, ay, ax2, ay2, a_area), (bx, by, bx2, by2, b_area) = a, b
    iw = np.clip(np.minimum(ax2, bx2) - np.maximum(ax, bx), 0, None)
    ih = np.clip(np.minimum(ay2, by2) - np.maximum(ay, by), 0, None)
    inter = iw * ih
    union = a_area + b_area - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, 0.0)


class BoxOverlap:
    """IoU between boxes of a frame, by row position (broadcasting like numpy).

    Corners and areas are computed once per box and gathered per pair: box alpha's expected disagreement
    samples two million pairs per scope, and gathering whole (pairs, 4) rows cost ten times as much."""

    exact_limit = EXACT_EXPECTED_LIMIT
    sample = EXPECTED_SAMPLE

    def __init__(self, frame: pd.DataFrame) -> None:
        self.corners = tuple(np.ascontiguousarray(c) for c in _corners(frame[["x", "y", "w", "h"]].to_numpy(float)))

    def __call__(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return _iou(tuple(c[a] for c in self.corners), tuple(c[b] for c in self.corners))


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
        # with indices, linearrings makes an array of rings; its stubs allow a single ring too, and so a geometry
        self.shapes = cast(np.ndarray, shapely.make_valid(shapely.polygons(shapely.linearrings(coords, indices=ring))))
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
    overlap: BoxOverlap | PolygonOverlap
    codes: _Codes  # of the boxes match_boxes was given, by `index`

    @cached_property
    def pair_boxes(self) -> pd.DataFrame:
        """Per (item, annotator_a, annotator_b): n_a, n_b."""
        return _pair_boxes(self.codes, self.boxes["index"].to_numpy())

    @cached_property
    def is_same_label(self) -> np.ndarray:
        """Per match: same label (else a label conflict); found once, the metrics ask several times."""
        return (self.matches["label_a"] == self.matches["label_b"]).to_numpy(bool)

    # each is read several times per matching (metrics, fusion, gold scores), and a row filter over the
    # Arrow-backed text columns costs 0.15 s per 500,000 matches

    @cached_property
    def same_label(self) -> pd.DataFrame:
        return self.matches[self.is_same_label]

    @cached_property
    def conflicts(self) -> pd.DataFrame:
        return self.matches[~self.is_same_label]

    def paired_boxes(self) -> int:
        """The boxes of both annotators summed over the annotator pairs of each item (n_a + n_b over
        pair_boxes, without building it): on an item where k annotators drew, each one's boxes are in k − 1 pairs."""
        index = self.boxes["index"].to_numpy()
        item, annotator = self.codes.item[index], self.codes.annotator[index]
        n_items = int(item.max(initial=-1)) + 1
        annotators, boxes = self.codes.annotators_per_item(item, annotator), np.bincount(item, minlength=n_items)
        return int(((annotators - 1).clip(min=0) * boxes).sum())

    @cached_property
    def paired(self) -> np.ndarray:
        """Per box (row of ``boxes``), whether a match holds it, as either side. Box indexes are positions in the
        codes, so a mask answers it (``np.isin`` against the matches took three times as long); found once per
        matching, like ``same_label``."""
        held = np.zeros(len(self.codes.item), dtype=bool)
        held[self.matches["index_a"].to_numpy(np.int64)] = True
        held[self.matches["index_b"].to_numpy(np.int64)] = True
        return held[self.boxes["index"].to_numpy()]

    def only_label(self, label: str) -> Matching:
        """The matching ``match_boxes`` gives for this label's boxes alone: its same-label matches
        (groups are per item and label, so they do not depend on other labels) and no conflicts."""
        return self.only_labels([label])[0]

    def only_labels(self, labels: Sequence[str]) -> list[Matching]:
        """:meth:`only_label` for each label. The boxes and the same-label matches are ordered by label once
        (stably) and each label's are a slice of them: a row filter over the Arrow-backed text columns per label
        cost 0.4 s for six labels of 500,000 boxes."""
        box_code = self.codes.label[self.boxes["index"].to_numpy()]
        a, b = self.matches["index_a"].to_numpy(np.int64), self.matches["index_b"].to_numpy(np.int64)
        match_code = np.where(self.codes.label[a] == self.codes.label[b], self.codes.label[a], -1)  # -1: conflicts
        box_order, match_order = np.argsort(box_code, kind="stable"), np.argsort(match_code, kind="stable")
        boxes, matches = self.boxes.take(box_order), self.matches.take(match_order)
        box_code, match_code = box_code[box_order], match_code[match_order]
        scopes = []
        for label in labels:
            code = self.codes.label_code(label)
            if code < 0:  # no box has the label
                scopes.append(
                    Matching(matches.iloc[:0].reset_index(drop=True), boxes.iloc[:0], self.overlap, self.codes)
                )
                continue
            kept = slice(*np.searchsorted(match_code, [code, code + 1]))
            held = slice(*np.searchsorted(box_code, [code, code + 1]))
            scopes.append(
                Matching(matches.iloc[kept].reset_index(drop=True), boxes.iloc[held], self.overlap, self.codes)
            )
        return scopes

    def n_items(self) -> int:
        """How many items the boxes are on (counted on the codes)."""
        item = self.codes.item[self.boxes["index"].to_numpy()]
        return int(np.count_nonzero(np.bincount(item[item >= 0]))) if len(item) else 0


def _pair_boxes(codes: _Codes, rows: np.ndarray) -> pd.DataFrame:
    """Per (item, annotator a < annotator b): how many boxes of ``rows`` (box indexes) each drew, in (item, a, b)
    order. Built on the matching's codes, sorted like the ids, so a subset of the boxes needs no factorizing of
    its own (a merge of the per-annotator counts on item ids cost 0.9 s for 500,000 boxes)."""
    n = codes.n_annotators
    keys, counts = np.unique(codes.item[rows] * n + codes.annotator[rows], return_counts=True)
    item, annotator = keys // n, keys % n
    # each item's annotators are consecutive and sorted: every (a, b) of a run, then a < b by position
    starts = np.flatnonzero(np.r_[True, item[1:] != item[:-1]])[: len(keys)]
    sizes = np.diff(np.r_[starts, len(keys)]).astype(np.int64)
    squares = sizes**2
    run = np.repeat(np.arange(len(starts)), squares)
    offset = np.arange(int(squares.sum())) - np.repeat(np.cumsum(squares) - squares, squares)
    a, b = starts[run] + offset // sizes[run], starts[run] + offset % sizes[run]
    a, b = a[a < b], b[a < b]
    return pd.DataFrame(
        {
            "item_id": _take(codes.items, item[a]),
            "annotator_a": _take(codes.annotators, annotator[a]),
            "n_a": counts[a].astype(np.int64),
            "annotator_b": _take(codes.annotators, annotator[b]),
            "n_b": counts[b].astype(np.int64),
        }
    )


def _take(column: pd.Series | pd.Index, positions: np.ndarray) -> Any:
    """The values at ``positions``. pandas' Arrow-backed text stays in Arrow: taken as a numpy object array, a
    frame would convert it back value by value (2.6 s for a matching of 500,000 boxes)."""
    if column.dtype == "str":
        return column.array.take(positions)
    return column.to_numpy()[positions]


def match_boxes(
    boxes: pd.DataFrame, *, min_iou: float = 0.0, conflict_iou: float = 0.5, polygons: bool = False
) -> Matching:
    """Match the boxes (or, with ``polygons``, the polygons) of every annotator pair on every item.

    ``boxes`` has item_id, annotator_id, label, x, y, w, h (and points for polygons). Same-label
    pairs need an IoU above ``min_iou``; a cross-label pair needs ``conflict_iou`` to count as a conflict.
    """
    boxes = boxes.reset_index(drop=True).assign(index=lambda f: np.arange(len(f)))
    overlap = PolygonOverlap(boxes) if polygons else BoxOverlap(boxes)
    codes = _Codes.of(boxes)
    item_code, annotator_code = codes.item, codes.annotator
    if not (codes.annotators_per_item(item_code, annotator_code) > 1).any():
        return Matching(pd.DataFrame(columns=MATCH_COLUMNS), boxes, overlap, codes)  # no item has two annotators
    matched = np.zeros(
        0, dtype=np.int64
    )  # sorted index * n_annotators + partner: a box is matched at most once per partner

    # Same-label groups (item, label): a box pairs with the boxes of the same label of each other annotator.
    found = []
    same = _assign(codes, overlap, np.arange(len(boxes)), by_label=True, min_iou=min_iou, matched=matched)
    found.append(same)
    matched = np.sort(codes.matched_keys(same))
    # Label-agnostic pass over what each pair left: label conflicts. Only items where boxes of
    # two or more annotators still lack a partner can hold one.
    partners = pd.Series(annotator_code).groupby(item_code).transform("nunique").to_numpy() - 1
    done = (
        np.bincount(matched // codes.n_annotators, minlength=len(boxes))
        if len(matched)
        else np.zeros(len(boxes), dtype=np.int64)
    )
    open_box = done < partners
    open_annotators = pd.Series(annotator_code[open_box]).groupby(item_code[open_box]).nunique()
    open_items = np.isin(item_code, open_annotators[open_annotators >= 2].index.to_numpy())
    found.append(
        _assign(
            codes,
            overlap,
            np.flatnonzero(open_items),
            by_label=False,
            min_iou=conflict_iou - 1e-12,
            matched=matched,
            cross_label_only=True,
        )
    )
    rows = pd.concat([f for f in found if len(f)] or found[:1], ignore_index=True).sort_values(
        ["index_a", "index_b"], kind="stable"
    )
    index_a, index_b = rows["index_a"].to_numpy(), rows["index_b"].to_numpy()
    matches = pd.DataFrame(
        {
            "item_id": _take(boxes["item_id"], index_a),
            "annotator_a": _take(boxes["annotator_id"], index_a),
            "annotator_b": _take(boxes["annotator_id"], index_b),
            "index_a": index_a,
            "index_b": index_b,
            "label_a": _take(boxes["label"], index_a),
            "label_b": _take(boxes["label"], index_b),
            "iou": rows["iou"].to_numpy(),
        }
    )
    return Matching(matches[MATCH_COLUMNS], boxes, overlap, codes)


@dataclass
class _Codes:
    item: np.ndarray
    annotator: np.ndarray
    label: np.ndarray
    n_annotators: int
    labels: pd.Index  # label of each label code
    items: pd.Index  # item id of each item code
    annotators: pd.Index  # annotator id of each annotator code

    @classmethod
    def of(cls, boxes: pd.DataFrame) -> _Codes:
        """Integer codes: items and annotators in sorted order, so "a < b" keeps its meaning (factorized
        with sorting: a categorical over Python-sorted uniques hashed the ids twice and sorted them in Python)."""
        annotator_code, annotators = pd.factorize(boxes["annotator_id"], sort=True)
        item_code, items = pd.factorize(boxes["item_id"], sort=True)
        label_code, labels = pd.factorize(boxes["label"])
        n_annotators = max(1, int(annotator_code.max(initial=-1)) + 1)
        return cls(
            item_code.astype(np.int64),
            annotator_code.astype(np.int64),
            label_code.astype(np.int64),
            n_annotators,
            pd.Index(labels),
            pd.Index(items),
            pd.Index(annotators),
        )

    def annotators_per_item(self, item: np.ndarray, annotator: np.ndarray) -> np.ndarray:
        """How many distinct annotators drew on each item code (up to the largest given), by sorting: numpy's
        hashed unique is several times slower on these keys."""
        keys = np.sort(item * self.n_annotators + annotator)
        first = np.r_[True, keys[1:] != keys[:-1]] if len(keys) else np.zeros(0, bool)
        return np.bincount(keys[first] // self.n_annotators, minlength=int(item.max(initial=-1)) + 1)

    def label_code(self, label: str) -> int:
        """-1 for a label no box has."""
        return int(self.labels.get_indexer([label])[0])

    def matched_keys(self, pairs: pd.DataFrame) -> np.ndarray:
        a, b = pairs["index_a"].to_numpy(), pairs["index_b"].to_numpy()
        return np.concatenate([a * self.n_annotators + self.annotator[b], b * self.n_annotators + self.annotator[a]])


PAIR_CHUNK = 4_000_000  # candidate box pairs held at once


def _assign(
    codes: _Codes,
    overlap: BoxOverlap | PolygonOverlap,
    rows: np.ndarray,
    *,
    by_label: bool,
    min_iou: float,
    matched: np.ndarray,
    cross_label_only: bool = False,
) -> pd.DataFrame:
    """Hungarian matching per group and annotator pair, over boxes (``rows``: indexes, ascending) the pair has
    not matched yet.

    Every (group, annotator a < annotator b) problem is independent of the others, so all of
    them are built at once as candidate pairs; a 1 x 1 problem (the common case) is decided by
    its IoU alone and only larger ones go to the assignment solver. A group's boxes are ordered by
    annotator, so its candidates are the pairs of positions i < j whose annotators differ: half of
    the group's square, with "a < b" already the order of the pair.
    """
    if len(rows) == 0:
        return pd.DataFrame({"index_a": np.zeros(0, np.int64), "index_b": np.zeros(0, np.int64), "iou": np.zeros(0)})
    group = codes.item[rows] * (int(codes.label.max()) + 1) + codes.label[rows] if by_label else codes.item[rows]
    order = np.argsort(group * codes.n_annotators + codes.annotator[rows], kind="stable")  # rows come ascending
    rows, group = rows[order], group[order]
    starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
    sizes = np.diff(np.r_[starts, len(rows)]).astype(np.int64)
    # whole groups, about PAIR_CHUNK candidate pairs at a time
    chunk = np.repeat(np.cumsum(sizes * (sizes - 1) // 2) // PAIR_CHUNK, sizes)
    bounds = np.flatnonzero(np.r_[True, chunk[1:] != chunk[:-1], True])
    parts = [
        _assign_groups(codes, overlap, rows[start:end], group[start:end], min_iou, matched, cross_label_only)
        for start, end in itertools.pairwise(bounds)
    ]
    return pd.concat(parts, ignore_index=True)


def _contains(sorted_keys: np.ndarray, queries: np.ndarray) -> np.ndarray:
    at = np.minimum(np.searchsorted(sorted_keys, queries), len(sorted_keys) - 1)
    return sorted_keys[at] == queries


def _assign_groups(codes: _Codes, overlap, rows, group, min_iou, matched, cross_label_only) -> pd.DataFrame:
    """``rows`` (box indexes) in whole groups, ordered by group, annotator and index; ``group`` each one's."""
    # position p pairs with every later position of its group: p + 1 up to the group's end
    new = np.r_[True, group[1:] != group[:-1]]
    end = np.flatnonzero(np.r_[new[1:], True])
    later = np.repeat(end, np.diff(np.r_[-1, end])) - np.arange(len(rows))
    first = np.repeat(np.arange(len(rows)), later)
    second = first + 1 + np.arange(len(first)) - np.repeat(np.cumsum(later) - later, later)
    a, b, group = rows[first], rows[second], (np.cumsum(new) - 1)[first]  # the group's place in the part
    keep = codes.annotator[a] < codes.annotator[b]
    if len(matched):
        keep &= ~_contains(matched, a * codes.n_annotators + codes.annotator[b])
        keep &= ~_contains(matched, b * codes.n_annotators + codes.annotator[a])
    a, b, group = a[keep], b[keep], group[keep]
    scores = overlap(a, b) if len(a) else np.zeros(0)
    if cross_label_only:
        scores = np.where(codes.label[a] != codes.label[b], scores, 0.0)
    n = codes.n_annotators
    problem = pd.factorize((group * n + codes.annotator[a]) * n + codes.annotator[b])[0]
    # a problem holds each (a, b) pair of its group once, so one with a single pair is one box against one box
    # (counted, where two groupby-nunique transforms took 0.6 s at a million annotations)
    single = np.bincount(problem, minlength=1)[problem] == 1
    ok = single & (scores > min_iou)
    index_a, index_b, iou_ = [a[ok]], [b[ok]], [scores[ok]]
    several = np.flatnonzero(~single)
    if len(several):
        order = several[np.lexsort((b[several], a[several], problem[several]))]
        bounds = np.flatnonzero(np.r_[True, problem[order][1:] != problem[order][:-1], True])
        for start, end in itertools.pairwise(bounds):
            block = order[start:end]
            ua, ia = np.unique(a[block], return_inverse=True)
            ub, ib = np.unique(b[block], return_inverse=True)
            matrix = np.zeros((len(ua), len(ub)))
            matrix[ia, ib] = scores[block]
            ra, rb = linear_sum_assignment(matrix, maximize=True)
            good = matrix[ra, rb] > min_iou
            index_a.append(ua[ra[good]])
            index_b.append(ub[rb[good]])
            iou_.append(matrix[ra[good], rb[good]])
    return pd.DataFrame(
        {"index_a": np.concatenate(index_a), "index_b": np.concatenate(index_b), "iou": np.concatenate(iou_)}
    )


def box_metrics(matching: Matching, *, seed: int = 0) -> dict[str, float]:
    """mean matched IoU, F1 at IoU 0.5, label-conflict rate and box alpha (δ = 1 − IoU)."""
    same = matching.is_same_label
    iou = matching.matches["iou"][same]  # the numbers only: filtering every column costs more than the metrics
    n_boxes = float(matching.paired_boxes())
    true_positives = float((iou >= 0.5).sum())
    total_matches = len(matching.matches)
    return {
        "mean_matched_iou": float(iou.mean()) if len(iou) else float("nan"),
        "box_f1@0.5": 2 * true_positives / n_boxes if n_boxes else float("nan"),
        "label_conflict_rate": int((~same).sum()) / total_matches if total_matches else float("nan"),
        "box_alpha": box_alpha(matching, seed=seed),
    }


def box_alpha(matching: Matching, *, seed: int = 0) -> float:
    """Krippendorff's alpha over matched units with distance 1 − IoU.

    Each same-label match is a unit of two values. D_o is the mean within-unit
    distance; D_e the mean distance over all ordered pairs of values, computed exactly
    up to EXACT_EXPECTED_LIMIT boxes and from a seeded sample of pairs above (and for
    polygons, whose pairwise intersections are costly).
    """
    same, matches = matching.is_same_label, matching.matches
    if same.sum() < 2:
        return float("nan")
    values = np.concatenate([matches["index_a"].to_numpy()[same], matches["index_b"].to_numpy()[same]]).astype(int)
    overlap = matching.overlap
    observed = float((1 - matches["iou"][same]).mean())
    n = len(values)
    if n <= overlap.exact_limit:
        total = 0.0
        for start in range(0, n, 512):
            total += (1 - overlap(values[start : start + 512, None], values[None, :])).sum()  # the diagonal is 0
        expected = total / (n * (n - 1))
    else:
        rng = np.random.default_rng(seed)
        i = rng.integers(0, n, overlap.sample)
        j = (i + rng.integers(1, n, overlap.sample)) % n  # j != i
        overlaps = np.empty(len(i))
        for start in range(0, len(i), SAMPLE_CHUNK):  # the same values, in parts (SAMPLE_CHUNK)
            part = slice(start, start + SAMPLE_CHUNK)
            overlaps[part] = overlap(values[i[part]], values[j[part]])
        expected = float((1 - overlaps).mean())
    return 1 - observed / expected if expected > 0 else float("nan")


def fuse_boxes(
    matching: Matching, *, weights: pd.Series | None = None, cluster_iou: float = 0.5, quorum: int = 2
) -> pd.DataFrame:
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
    graph = coo_matrix(
        (np.ones(len(edges)), (edges["index_a"].astype(int), edges["index_b"].astype(int))), shape=(n, n)
    )
    _, cluster = connected_components(graph, directed=False)
    # items, labels and annotators by the matching's integer codes: the texts are looked up for the fused boxes
    # alone, where grouping, counting and sorting them as Python strings cost 0.6 s of 1 s at half a million boxes
    codes, at = matching.codes, boxes["index"].to_numpy()
    item, label, annotator = codes.item[at], codes.label[at], codes.annotator[at]
    if weights is None:
        w = np.ones(n)
    else:
        per_annotator = pd.Series(codes.annotators.map(weights), dtype=float).fillna(1.0).clip(lower=1e-6).to_numpy()
        w = np.where(annotator >= 0, per_annotator[annotator.clip(0)] if len(per_annotator) else 1.0, 1.0)
    corners = boxes[["x", "y"]].to_numpy(dtype=float)
    frame = pd.DataFrame(
        {
            "cluster": cluster,
            "item": np.where(item >= 0, item, np.nan),  # a missing value as missing: ``first`` skips it
            "label": np.where(label >= 0, label, np.nan),
            "annotator": np.where(annotator >= 0, annotator, np.nan),
            "w_": w,
            "x1": corners[:, 0] * w,
            "y1": corners[:, 1] * w,
            "x2": (corners[:, 0] + boxes["w"].to_numpy(dtype=float)) * w,
            "y2": (corners[:, 1] + boxes["h"].to_numpy(dtype=float)) * w,
        }
    )
    fused = frame.groupby("cluster", sort=True).agg(
        item=("item", "first"),
        label=("label", "first"),
        weight=("w_", "sum"),
        x1=("x1", "sum"),
        y1=("y1", "sum"),
        x2=("x2", "sum"),
        y2=("y2", "sum"),
        support=("annotator", "nunique"),
        n_votes=("annotator", "size"),
    )
    for c in ("x1", "y1", "x2", "y2"):
        fused[c] = fused[c] / fused["weight"]
    fused = fused[fused["support"] >= min(quorum, 1_000_000)]
    item_of = fused["item"].to_numpy()
    label_of = fused["label"].to_numpy()
    known_item, known_label = ~np.isnan(item_of), ~np.isnan(label_of)
    item_of, label_of = (
        np.where(known_item, item_of, 0).astype(np.int64),
        np.where(known_label, label_of, 0).astype(np.int64),
    )
    ids, texts = np.asarray(codes.items, dtype=object), np.asarray(codes.labels, dtype=object)
    drew = annotator >= 0
    on_item = np.zeros(len(ids) + 1, dtype=np.int64)  # distinct annotators per item code (a missing item: last)
    counted = codes.annotators_per_item(np.where(item >= 0, item, len(ids))[drew], annotator[drew])
    on_item[: len(counted)] = counted
    n_annotators = np.where(known_item, on_item[np.where(known_item, item_of, len(ids))], np.nan)
    support = fused["support"].to_numpy()
    with np.errstate(divide="ignore", invalid="ignore"):  # no annotator on the item: as pandas divides, unwarned
        share = support / n_annotators
    out = pd.DataFrame(
        {
            "item_id": np.where(known_item, ids[item_of] if len(ids) else np.nan, np.nan),
            "label": np.where(known_label, texts[label_of] if len(texts) else np.nan, np.nan),
            "x": fused["x1"].to_numpy(),
            "y": fused["y1"].to_numpy(),
            "w": (fused["x2"] - fused["x1"]).to_numpy(),
            "h": (fused["y2"] - fused["y1"]).to_numpy(),
            "support": support.astype(np.int64),
            "confidence": share,
            "n_votes": fused["n_votes"].to_numpy().astype(np.int64),
            "agreement": share,
            "method": "box_fusion",
        }
    )
    # by item and label (their texts' order: item codes are sorted, label codes are not), then x and y
    label_rank = np.empty(len(texts), dtype=np.int64)
    label_rank[np.argsort(texts.astype(str), kind="stable")] = np.arange(len(texts))
    order = np.lexsort(
        (
            out["y"].to_numpy(),
            out["x"].to_numpy(),
            np.where(known_label, label_rank[label_of] if len(texts) else 0, len(texts)),
            np.where(known_item, item_of, len(ids)),
        )
    )
    return out.take(order).reset_index(drop=True)[columns]
