"""Box matching and agreement: KSCGR's published numbers, pycocotools IoU, krippendorff for box alpha."""

from __future__ import annotations

import itertools

import krippendorff
import numpy as np
import pandas as pd
import pytest
from crowd_data import kscgr
from pycocotools import mask as mask_utils
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from labelops import boxes


@pytest.fixture(scope="module")
def kscgr_matching() -> boxes.Matching:
    return boxes.match_boxes(kscgr())


def test_kscgr_reproduces_the_published_agreement(kscgr_matching: boxes.Matching) -> None:
    same = kscgr_matching.same_label
    data = kscgr_matching.boxes
    assert len(same) == 61_427
    assert (data["annotator_id"] == "annotator_1").sum() - len(same) == 197
    assert (data["annotator_id"] == "annotator_2").sum() - len(same) == 29
    assert same["iou"].mean() == pytest.approx(0.914, abs=1e-3)
    assert (same["iou"] >= 0.7).mean() == pytest.approx(0.993, abs=5e-4)
    inclusive = boxes.match_boxes(kscgr(inclusive=True)).same_label
    assert inclusive["iou"].mean() == pytest.approx(0.916, abs=1e-3)  # the published 0.92 counts pixels inclusively
    metrics = boxes.box_metrics(kscgr_matching)
    assert metrics["label_conflict_rate"] == 0.0
    assert metrics["box_f1@0.5"] > 0.99 and 0.85 < metrics["box_alpha"] < 1


def test_iou_equals_pycocotools() -> None:
    rng = np.random.default_rng(1)
    a = np.column_stack([rng.uniform(0, 100, (200, 2)), rng.uniform(1, 60, (200, 2))])
    b = np.column_stack([rng.uniform(0, 100, (150, 2)), rng.uniform(1, 60, (150, 2))])
    ours = boxes.iou(a[:, None], b[None, :])
    reference = mask_utils.iou(a.tolist(), b.tolist(), [0] * len(b))
    np.testing.assert_allclose(ours, reference, atol=1e-12)


def test_box_alpha_equals_krippendorff_with_iou_distance(kscgr_matching: boxes.Matching) -> None:
    first = kscgr_matching.boxes[
        kscgr_matching.boxes["item_id"].astype(int) < 8
    ]  # krippendorff needs units x values² memory
    matching = boxes.match_boxes(first)
    same = matching.same_label
    coords = matching.boxes[["x", "y", "w", "h"]].to_numpy(float)
    values = np.concatenate([same["index_a"], same["index_b"]]).astype(int)
    domain = np.arange(len(coords))
    data = np.vstack([same["index_a"].to_numpy(float), same["index_b"].to_numpy(float)])

    def distance(v1, v2, i1, i2, n_v, dtype):
        return 1 - boxes.iou(coords[np.asarray(v1, int)], coords[np.asarray(v2, int)])

    expected = krippendorff.alpha(
        reliability_data=data, value_domain=domain[np.isin(domain, values)], level_of_measurement=distance
    )
    assert len(values) <= boxes.EXACT_EXPECTED_LIMIT
    assert boxes.box_alpha(matching) == pytest.approx(expected, abs=1e-9)


def test_sampled_box_alpha_does_not_depend_on_the_parts_its_pairs_are_computed_in(
    kscgr_matching: boxes.Matching, monkeypatch: pytest.MonkeyPatch
) -> None:
    # KSCGR has 122,854 matched values: above the exact limit, so the expected disagreement is sampled
    assert 2 * len(kscgr_matching.same_label) > boxes.EXACT_EXPECTED_LIMIT
    monkeypatch.setattr(boxes, "SAMPLE_CHUNK", boxes.EXPECTED_SAMPLE)
    whole = boxes.box_alpha(kscgr_matching, seed=3)
    for chunk in (4_099, 1 << 16):
        monkeypatch.setattr(boxes, "SAMPLE_CHUNK", chunk)
        assert boxes.box_alpha(kscgr_matching, seed=3) == whole


def _fused_by_pandas(matching: boxes.Matching, weights: pd.Series | None, quorum: int) -> pd.DataFrame:
    """Box fusion written plainly with pandas on the id and label texts: the reference for ``fuse_boxes``."""
    data = matching.boxes
    edges = matching.same_label[matching.same_label["iou"] >= 0.5]
    graph = coo_matrix((np.ones(len(edges)), (edges["index_a"], edges["index_b"])), shape=(len(data), len(data)))
    _, cluster = connected_components(graph, directed=False)
    w = np.ones(len(data)) if weights is None else data["annotator_id"].map(weights).fillna(1.0).clip(lower=1e-6)
    w = np.asarray(w, dtype=float)
    x, y = data["x"].to_numpy(float), data["y"].to_numpy(float)
    frame = pd.DataFrame(
        {
            "cluster": cluster,
            "item_id": data["item_id"].to_numpy(),
            "label": data["label"].to_numpy(),
            "annotator_id": data["annotator_id"].to_numpy(),
            "w_": w,
            "x1": x * w,
            "y1": y * w,
            "x2": (x + data["w"].to_numpy(float)) * w,
            "y2": (y + data["h"].to_numpy(float)) * w,
        }
    )
    fused = frame.groupby("cluster", sort=True).agg(
        item_id=("item_id", "first"),
        label=("label", "first"),
        weight=("w_", "sum"),
        x1=("x1", "sum"),
        y1=("y1", "sum"),
        x2=("x2", "sum"),
        y2=("y2", "sum"),
        support=("annotator_id", "nunique"),
        n_votes=("annotator_id", "size"),
    )
    for c in ("x1", "y1", "x2", "y2"):
        fused[c] = fused[c] / fused["weight"]
    fused["n_annotators"] = fused["item_id"].map(data.groupby("item_id")["annotator_id"].nunique())
    fused = fused[fused["support"] >= quorum]
    out = pd.DataFrame(
        {
            "item_id": fused["item_id"],
            "label": fused["label"],
            "x": fused["x1"],
            "y": fused["y1"],
            "w": fused["x2"] - fused["x1"],
            "h": fused["y2"] - fused["y1"],
            "support": fused["support"].astype(np.int64),
            "confidence": fused["support"] / fused["n_annotators"],
            "n_votes": fused["n_votes"].astype(np.int64),
            "agreement": fused["support"] / fused["n_annotators"],
            "method": "box_fusion",
        }
    )
    return out.sort_values(["item_id", "label", "x", "y"]).reset_index(drop=True)


@pytest.mark.parametrize("seed", range(6))
def test_box_fusion_by_codes_equals_plain_pandas_on_the_texts(seed: int) -> None:
    rng = np.random.default_rng(seed)
    rows = []
    for item in range(150):
        objects = np.column_stack([rng.uniform(0, 400, (3, 2)), rng.uniform(10, 80, (3, 2))]).round(1)
        for annotator in rng.choice(list("abcdefg"), rng.integers(1, 6), replace=False):
            for box in objects[: rng.integers(1, 4)]:
                label = str(rng.choice(["car", "truck", "Bus", "émile"])) if rng.random() > 0.05 else None
                rows.append((f"i{item:04d}", annotator, label, *(box + rng.normal(0, 3, 4).round(1))))
    matching = boxes.match_boxes(pd.DataFrame(rows, columns=["item_id", "annotator_id", "label", "x", "y", "w", "h"]))
    for weights in (None, pd.Series({"a": 2.0, "b": 0.5, "c": 0.0, "unknown": 3.0})):
        for quorum in (1, 2, 3):
            expected = _fused_by_pandas(matching, weights, quorum)
            pd.testing.assert_frame_equal(boxes.fuse_boxes(matching, weights=weights, quorum=quorum), expected)


def test_hungarian_matches_brute_force_and_conflicts_are_labelled() -> None:
    rng = np.random.default_rng(5)
    rows = []
    for item in range(30):
        base = np.column_stack([rng.uniform(0, 400, (4, 2)), rng.uniform(20, 80, (4, 2))])
        for annotator in ("a", "b"):
            jitter = base + rng.normal(0, 6, base.shape)
            rows += [(str(item), annotator, "car", *box) for box in jitter]
    frame = pd.DataFrame(rows, columns=["item_id", "annotator_id", "label", "x", "y", "w", "h"])
    matching = boxes.match_boxes(frame)
    for item, group in frame.groupby("item_id"):
        a = group[group["annotator_id"] == "a"][["x", "y", "w", "h"]].to_numpy()
        b = group[group["annotator_id"] == "b"][["x", "y", "w", "h"]].to_numpy()
        scores = boxes.iou(a[:, None], b[None, :])
        best = max(sum(scores[i, p[i]] for i in range(4)) for p in itertools.permutations(range(4)))
        ra, rb = linear_sum_assignment(scores, maximize=True)
        got = matching.same_label[matching.same_label["item_id"] == item]["iou"].sum()
        assert got == pytest.approx(best) == pytest.approx(scores[ra, rb].sum())

    conflict = pd.DataFrame(
        [("1", "a", "truck", 10, 10, 50, 50), ("1", "b", "car", 12, 11, 50, 49), ("1", "b", "bus", 300, 300, 20, 20)],
        columns=["item_id", "annotator_id", "label", "x", "y", "w", "h"],
    )
    found = boxes.match_boxes(conflict)
    assert found.same_label.empty
    assert found.conflicts[["label_a", "label_b"]].values.tolist() == [["truck", "car"]]
    assert boxes.box_metrics(found)["label_conflict_rate"] == 1.0


def test_pairs_are_matched_independently() -> None:
    """A box matched with one annotator is still free to match another annotator's box."""
    frame = pd.DataFrame(
        [
            ("1", "a", "car", 10, 10, 50, 50),
            ("1", "a", "car", 200, 10, 50, 50),
            ("1", "b", "car", 11, 10, 50, 50),
            ("1", "c", "car", 12, 10, 50, 50),
            ("1", "c", "car", 201, 10, 50, 50),
        ],
        columns=["item_id", "annotator_id", "label", "x", "y", "w", "h"],
    )
    matching = boxes.match_boxes(frame)
    pairs = sorted(zip(matching.same_label["annotator_a"], matching.same_label["annotator_b"], strict=True))
    assert pairs == [("a", "b"), ("a", "c"), ("a", "c"), ("b", "c")]


def test_fusion_averages_clusters_and_applies_the_quorum() -> None:
    frame = pd.DataFrame(
        [
            ("1", "a", "car", 10, 10, 50, 50),
            ("1", "b", "car", 14, 10, 50, 50),
            ("1", "c", "car", 12, 10, 50, 50),
            ("1", "a", "bus", 300, 300, 40, 40),  # only one annotator: below the quorum
        ],
        columns=["item_id", "annotator_id", "label", "x", "y", "w", "h"],
    )
    fused = boxes.fuse_boxes(boxes.match_boxes(frame), quorum=2)
    assert len(fused) == 1
    row = fused.iloc[0]
    assert (row["label"], row["support"], row["x"], row["w"]) == ("car", 3, pytest.approx(12.0), pytest.approx(50.0))
    weighted = boxes.fuse_boxes(boxes.match_boxes(frame), weights=pd.Series({"a": 1.0, "b": 0.0, "c": 0.0}), quorum=2)
    assert weighted.iloc[0]["x"] == pytest.approx(10.0, abs=1e-4)
    assert len(boxes.fuse_boxes(boxes.match_boxes(frame), quorum=1)) == 2


def test_polygons_are_matched_on_polygon_iou() -> None:
    square = [0, 0, 10, 0, 10, 10, 0, 10]
    shifted = [5, 0, 15, 0, 15, 10, 5, 10]  # half overlapping: IoU 50 / 150
    far = [100, 100, 110, 100, 110, 110, 100, 110]
    frame = pd.DataFrame(
        {
            "item_id": ["1", "1", "1", "2", "2"],
            "annotator_id": ["a", "b", "c", "a", "b"],
            "label": "crosswalk",
            "points": [square, shifted, square, square, far],
        }
    )
    frame[["x", "y", "w", "h"]] = [
        [min(p[0::2]), min(p[1::2]), max(p[0::2]) - min(p[0::2]), max(p[1::2]) - min(p[1::2])] for p in frame["points"]
    ]
    matching = boxes.match_boxes(frame, polygons=True)
    by_pair = {(m.item_id, m.annotator_a, m.annotator_b): m.iou for m in matching.same_label.itertuples()}
    assert by_pair[("1", "a", "b")] == pytest.approx(1 / 3)
    assert by_pair[("1", "a", "c")] == pytest.approx(1.0)
    assert ("2", "a", "b") not in by_pair  # disjoint polygons do not match
    # a triangle inside the square: IoU is the triangle's share, not the enclosing boxes' (which would be 1)
    triangle = pd.DataFrame(
        {
            "item_id": ["3", "3"],
            "annotator_id": ["a", "b"],
            "label": "crosswalk",
            "points": [square, [0, 0, 10, 0, 0, 10]],
            "x": 0.0,
            "y": 0.0,
            "w": 10.0,
            "h": 10.0,
        }
    )
    assert boxes.match_boxes(triangle, polygons=True).same_label["iou"].iloc[0] == pytest.approx(0.5)


def _pair_boxes_by_merge(frame: pd.DataFrame) -> pd.DataFrame:
    """The per-pair box counts as the replaced code built them: the per-annotator counts merged on item."""
    per = frame.groupby(["item_id", "annotator_id"], sort=True).size().rename("n").reset_index()
    pairs = per.merge(per, on="item_id", suffixes=("_a", "_b"))
    pairs = pairs[pairs["annotator_id_a"] < pairs["annotator_id_b"]]
    return pairs.rename(columns={"annotator_id_a": "annotator_a", "annotator_id_b": "annotator_b"})


@pytest.mark.parametrize("seed", range(5))
def test_pair_box_counts_equal_the_merge(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = [0, 1, 40, 500, 3000][seed]
    frame = pd.DataFrame(
        {
            "item_id": rng.choice(["img b", "img-a", "ü", "c", "a10", "a9"], n),
            "annotator_id": rng.choice(["w2", "w10", "gold", "ä", "w1"], n),
        }
    ).astype("str" if seed % 2 else object)
    codes = boxes._Codes.of(frame.assign(label="car"))
    # every box, and a subset (a label's scope) counted on the codes of all of them
    for rows in (np.arange(n), np.sort(rng.choice(n, n // 3, replace=False))):
        got, expected = boxes._pair_boxes(codes, rows), _pair_boxes_by_merge(frame.iloc[rows])
        assert list(got.columns) == list(expected.columns)
        assert got.astype(object).values.tolist() == expected.astype(object).values.tolist()


def test_paired_equals_isin_of_the_matched_indexes(kscgr_matching: boxes.Matching) -> None:
    """``paired`` (a mask over the box indexes) equals ``np.isin`` of the indexes against both sides of the
    matches, on the whole matching, on each label's scope and on a matching without boxes."""
    scopes = [kscgr_matching, boxes.match_boxes(kscgr().iloc[:0])]
    scopes += [kscgr_matching.only_label(label) for label in kscgr_matching.boxes["label"].unique()]
    for matching in scopes:
        m = matching.matches
        held = np.concatenate([m["index_a"].to_numpy(), m["index_b"].to_numpy()])
        expected = np.isin(matching.boxes["index"].to_numpy(), held)
        assert matching.paired.dtype == bool
        np.testing.assert_array_equal(matching.paired, expected)


def _assert_label_scopes_filter_the_strings(matching: boxes.Matching) -> None:
    """Each label's scope (one at a time, and all at once) equals filtering the strings; its counts equal
    summing pair_boxes and counting distinct item ids."""
    labels = [*matching.boxes["label"].unique(), "no such label"]
    for label, scoped, alone in zip(
        labels, matching.only_labels(labels), map(matching.only_label, labels), strict=True
    ):
        pd.testing.assert_frame_equal(scoped.boxes, matching.boxes[matching.boxes["label"] == label])
        m = matching.matches
        same = m[(m["label_a"] == label) & (m["label_b"] == label)].reset_index(drop=True)
        pd.testing.assert_frame_equal(scoped.matches, same)
        pd.testing.assert_frame_equal(alone.matches, same)
        pairs = scoped.pair_boxes
        assert scoped.paired_boxes() == int((pairs["n_a"] + pairs["n_b"]).sum())
        assert scoped.n_items() == scoped.boxes["item_id"].nunique()


def test_label_scopes_and_pair_box_counts_on_codes(kscgr_matching: boxes.Matching) -> None:
    """only_label(s) and paired_boxes work on integer codes; they equal filtering the strings and summing
    pair_boxes (KSCGR, one item with a single annotator, and no boxes at all)."""
    lone = pd.DataFrame([("z", "a", "car", 1.0, 1.0, 5.0, 5.0)], columns=["item_id", "annotator_id", "label", *"xywh"])
    for matching in (kscgr_matching, boxes.match_boxes(pd.concat([kscgr(), lone])), boxes.match_boxes(lone.iloc[:0])):
        pairs = matching.pair_boxes
        assert matching.paired_boxes() == int((pairs["n_a"] + pairs["n_b"]).sum())
        assert matching.n_items() == matching.boxes["item_id"].nunique()
        _assert_label_scopes_filter_the_strings(matching)


XYWH = ["x", "y", "w", "h"]


def _matches_pair_by_pair(frame: pd.DataFrame, *, min_iou: float = 0.0, conflict_iou: float = 0.5) -> list[tuple]:
    """Box matching as its definition reads, one item and annotator pair at a time: the assignment of each
    label's boxes, then of what the pair left across labels (label conflicts)."""
    found = []
    for _, item in frame.groupby("item_id", sort=False):
        for a, b in itertools.combinations(sorted(item["annotator_id"].unique()), 2):
            left, right = item[item["annotator_id"] == a], item[item["annotator_id"] == b]
            used: set[int] = set()
            for label in sorted(set(left["label"]) & set(right["label"])):
                la, lb = left[left["label"] == label], right[right["label"] == label]
                scores = boxes.iou(la[XYWH].to_numpy(float)[:, None], lb[XYWH].to_numpy(float)[None, :])
                for i, j in zip(*linear_sum_assignment(scores, maximize=True), strict=True):
                    if scores[i, j] > min_iou:
                        found.append((la.index[i], lb.index[j], scores[i, j]))
                        used |= {la.index[i], lb.index[j]}
            la, lb = left[~left.index.isin(used)], right[~right.index.isin(used)]
            scores = boxes.iou(la[XYWH].to_numpy(float)[:, None], lb[XYWH].to_numpy(float)[None, :])
            scores[la["label"].to_numpy()[:, None] == lb["label"].to_numpy()[None, :]] = 0.0
            for i, j in zip(*linear_sum_assignment(scores, maximize=True), strict=True):
                if scores[i, j] > conflict_iou - 1e-12:
                    found.append((la.index[i], lb.index[j], scores[i, j]))
    return sorted(found)


@pytest.mark.parametrize("seed", range(4))
def test_matching_equals_the_assignment_pair_by_pair(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Items with several annotators drawing several boxes of several labels, matched in parts of a few
    candidate pairs (and in one), equal the assignment done one item and annotator pair at a time."""
    rng = np.random.default_rng(seed)
    rows = []
    for item in range(60):
        objects = np.column_stack([rng.uniform(0, 300, (5, 2)), rng.uniform(20, 90, (5, 2))])
        for annotator in rng.choice(["w3", "w1", "gold", "w20", "ä"], int(rng.integers(1, 6)), replace=False):
            drawn = rng.choice(5, int(rng.integers(0, 5)), replace=False)
            labels = rng.choice(["car", "bus", "truck"], len(drawn))
            for box, label in zip(objects[drawn] + rng.normal(0, 8, (len(drawn), 4)), labels, strict=True):
                rows.append((f"img-{item}", annotator, label, *box))
    frame = pd.DataFrame(rows, columns=["item_id", "annotator_id", "label", *XYWH]).sample(frac=1, random_state=seed)
    frame = frame.reset_index(drop=True)
    expected = _matches_pair_by_pair(frame)
    for chunk in (boxes.PAIR_CHUNK, 7):
        monkeypatch.setattr(boxes, "PAIR_CHUNK", chunk)
        matching = boxes.match_boxes(frame)
        matches = matching.matches
        assert sorted(zip(matches["index_a"], matches["index_b"], matches["iou"], strict=True)) == expected
        assert list(matches["index_a"]) == sorted(matches["index_a"])
    _assert_label_scopes_filter_the_strings(matching)  # with label conflicts among the matches


def test_a_critical_box_no_other_annotator_drew_goes_to_review_whoever_else_judged_the_item() -> None:
    """The box quorum drops a pedestrian one annotator drew; the review queue must show it, also when the
    item's other annotator judged only its scene in a task that asked for boxes (their missing box is the
    disagreement). An annotator of a scene-only export was never asked to draw and missed nothing."""
    from labelops.review import unmatched_boxes

    rows = [
        ("scene-only", "a", "bbox", "pedestrian", 10, 10, 20, 40),
        ("scene-only", "a", "classification", "urban", None, None, None, None),
        ("scene-only", "b", "classification", "urban", None, None, None, None),
        ("two-boxers", "a", "bbox", "pedestrian", 10, 10, 20, 40),
        ("two-boxers", "b", "bbox", "car", 300, 300, 50, 30),
        ("alone", "a", "bbox", "pedestrian", 10, 10, 20, 40),  # one annotator: nothing to compare with
        ("agreed", "a", "bbox", "pedestrian", 10, 10, 20, 40),
        ("agreed", "b", "bbox", "pedestrian", 11, 10, 20, 40),
        ("minor", "a", "bbox", "car", 10, 10, 20, 40),  # not critical: the quorum settles it
        ("minor", "b", "classification", "urban", None, None, None, None),
        ("crowd", "a", "bbox", "pedestrian", 10, 10, 20, 40),
        ("crowd", "c", "classification", "urban", None, None, None, None),  # from scenes.csv: no boxes asked
    ]
    judged = pd.DataFrame(rows, columns=["item_id", "annotator_id", "kind", "label", "x", "y", "w", "h"])
    judged["source_file"] = np.where(judged["annotator_id"] == "c", "exports/d/scenes.csv", "exports/d/project.json")
    matching = boxes.match_boxes(judged[judged["kind"] == "bbox"].drop(columns=["kind", "source_file"]))
    columns = ["item_id", "annotator_id", "kind", "source_file"]
    lonely = unmatched_boxes(matching, {"pedestrian"}, judged[columns])
    assert sorted(lonely["item_id"]) == ["scene-only", "two-boxers"]
    nothing = boxes.match_boxes(judged.iloc[:0].drop(columns=["kind", "source_file"]))
    assert unmatched_boxes(nothing, {"pedestrian"}, judged[columns]).empty
