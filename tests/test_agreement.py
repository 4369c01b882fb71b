"""Agreement metrics against krippendorff, statsmodels and scikit-learn on real crowd data."""

from __future__ import annotations

import warnings

import krippendorff
import numpy as np
import pandas as pd
import pytest
from crowd_data import bluebirds, snow
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn import config_context
from sklearn.metrics import cohen_kappa_score
from statsmodels.stats.inter_rater import fleiss_kappa

from labelops.agreement import (
    MAX_CELLS,
    CellGroup,
    ItemStats,
    PairTable,
    Scopes,
    SliceDimension,
    Votes,
    alpha_from_counts,
    classification_agreement,
    cohen_kappas,
    fleiss_from_counts,
    slice_dimensions,
)

DATASETS = {"rte": lambda: snow("rte")[0], "bluebirds": lambda: bluebirds()[0], "temp": lambda: snow("temp")[0]}


def reliability(votes: Votes) -> np.ndarray:
    data = np.full((len(votes.annotators), len(votes.items)), np.nan)
    data[votes.annotator, votes.item] = votes.label
    return data


@pytest.mark.parametrize("name", ["rte", "bluebirds"])
def test_alpha_fleiss_cohen_match_references(name: str) -> None:
    votes = Votes.from_frame(DATASETS[name]())
    counts = votes.counts()
    data = reliability(votes)
    assert alpha_from_counts(counts) == pytest.approx(
        krippendorff.alpha(reliability_data=data, level_of_measurement="nominal"), abs=1e-9
    )
    assert fleiss_from_counts(counts)[0] == pytest.approx(fleiss_kappa(counts, method="fleiss"), abs=1e-9)

    pairs = PairTable.from_votes(votes)
    ours = cohen_kappas(pairs.confusion(len(votes.labels)))
    reference = []
    # scikit-learn warns where chance agreement is 1; its argument checks are most of a call's time, over 1,000 pairs
    with warnings.catch_warnings(), config_context(skip_parameter_validation=True, assume_finite=True):
        warnings.simplefilter("ignore")
        for a in range(len(votes.annotators)):
            for b in range(a + 1, len(votes.annotators)):
                common = ~np.isnan(data[a]) & ~np.isnan(data[b])
                if common.any():
                    reference.append(cohen_kappa_score(data[a, common], data[b, common]))
    reference = np.array(reference)
    assert len(reference) == pairs.n_pairs
    np.testing.assert_allclose(ours, reference, atol=1e-9, equal_nan=True)
    table = classification_agreement(DATASETS[name](), n_boot=0)
    overall = table[table["scope"] == "overall"].set_index("metric")["value"]
    assert overall["mean_pairwise_cohen_kappa"] == pytest.approx(np.nanmean(reference), abs=1e-9)


@pytest.mark.parametrize("name", ["rte", "temp"])
def test_percent_agreement_is_the_share_of_agreeing_pairs(name: str) -> None:
    frame = DATASETS[name]()
    per_item = []
    for _, labels in frame.groupby("item_id")["label"]:
        values = labels.to_numpy()
        if len(values) >= 2:
            same = (values[:, None] == values[None, :]).sum() - len(values)
            per_item.append(same / (len(values) * (len(values) - 1)))
    table = classification_agreement(frame, n_boot=0)
    value = table.query("scope == 'overall' and metric == 'percent_agreement'")["value"].iloc[0]
    assert value == pytest.approx(np.mean(per_item), abs=1e-12)


def test_per_label_scope_is_the_binarized_data() -> None:
    frame = DATASETS["rte"]()
    table = classification_agreement(frame, n_boot=0).set_index(["scope", "metric"])["value"]
    binary = frame.assign(label=(frame["label"] == "1").map({True: "1", False: "other"}))
    votes = Votes.from_frame(binary)
    expected = krippendorff.alpha(reliability_data=reliability(votes), level_of_measurement="nominal")
    assert table[("label=1", "krippendorff_alpha")] == pytest.approx(expected, abs=1e-9)


def test_bootstrap_is_seeded_and_brackets_the_estimate() -> None:
    frame = DATASETS["bluebirds"]()
    first = classification_agreement(frame, n_boot=100, seed=7)
    again = classification_agreement(frame, n_boot=100, seed=7)
    other = classification_agreement(frame, n_boot=100, seed=8)
    pd.testing.assert_frame_equal(first, again)
    assert not first["ci_low"].equals(other["ci_low"])
    rows = first[first["metric"] != "single_annotator_items"].dropna(subset=["ci_low"])
    assert ((rows["ci_low"] <= rows["value"] + 1e-12) & (rows["value"] <= rows["ci_high"] + 1e-12)).all()


def test_single_annotator_items_are_counted_not_dropped() -> None:
    frame = pd.DataFrame(
        {
            "item_id": ["a", "a", "b", "b", "c"],
            "annotator_id": ["u", "v", "u", "v", "u"],
            "label": ["x", "x", "y", "x", "y"],
        }
    )
    table = classification_agreement(frame, n_boot=0).set_index(["scope", "metric"])
    assert table.loc[("overall", "single_annotator_items"), "value"] == 1
    assert table.loc[("overall", "krippendorff_alpha"), "n_items"] == 3
    assert table.loc[("overall", "percent_agreement"), "value"] == pytest.approx(0.5)


def test_slice_scopes(tmp_path) -> None:
    frame = DATASETS["rte"]()
    items = pd.DataFrame({"item_id": frame["item_id"].unique()})
    items["half"] = np.where(items.index % 2 == 0, "even", "odd")
    table = classification_agreement(frame, slices=items, n_boot=0)
    even = frame[frame["item_id"].isin(items.loc[items["half"] == "even", "item_id"])]
    expected = krippendorff.alpha(reliability_data=reliability(Votes.from_frame(even)), level_of_measurement="nominal")
    got = table.query("scope == 'half=even' and metric == 'krippendorff_alpha'")["value"].iloc[0]
    assert got == pytest.approx(expected, abs=1e-9)


judgments = st.lists(
    st.tuples(st.integers(0, 15), st.integers(0, 5), st.sampled_from(["a", "b", "c"])), min_size=4, max_size=80
)


@settings(max_examples=60, deadline=None)
@given(judgments)
def test_perfect_agreement_gives_alpha_one(rows: list[tuple[int, int, str]]) -> None:
    frame = pd.DataFrame(rows, columns=["item", "annotator", "label"]).drop_duplicates(["item", "annotator"])
    truth = {item: label for item, _, label in rows}
    frame = pd.DataFrame(
        {
            "item_id": frame["item"].astype(str),
            "annotator_id": frame["annotator"].astype(str),
            "label": frame["item"].map(truth),
        }
    )
    if (frame.groupby("item_id").size() >= 2).any():
        assert alpha_from_counts(Votes.from_frame(frame).counts()) == 1.0


@settings(max_examples=60, deadline=None)
@given(judgments, st.randoms(use_true_random=False))
def test_permuting_annotator_ids_changes_nothing(rows: list[tuple[int, int, str]], random) -> None:
    frame = pd.DataFrame(rows, columns=["item_id", "annotator_id", "label"]).astype(str)
    names = sorted(frame["annotator_id"].unique())
    shuffled = names[:]
    random.shuffle(shuffled)
    renamed = frame.assign(
        annotator_id=frame["annotator_id"].map(dict(zip(names, ["z" + s for s in shuffled], strict=True)))
    )
    a = classification_agreement(frame, n_boot=0)
    b = classification_agreement(renamed, n_boot=0)
    np.testing.assert_allclose(a["value"].to_numpy(float), b["value"].to_numpy(float), atol=1e-12, equal_nan=True)


@pytest.mark.parametrize("scale", [1.0, 2.0**22])  # 2**22: the sums outgrow float32, the product runs in float64
def test_every_scope_at_once_equals_each_scope_on_its_own(scale: float) -> None:
    frame = DATASETS["bluebirds"]()
    votes = Votes.from_frame(frame)
    items = pd.DataFrame({"item_id": votes.items})
    rng = np.random.default_rng(3)
    items["a"] = rng.choice(["x", "y", None], len(items))
    items["b"] = rng.choice(["p", "q", "r"], len(items))
    counts = votes.counts()
    pairs = PairTable.from_votes(votes)
    dimensions = slice_dimensions(votes, items)
    scopes = Scopes.build(votes, counts, pairs, dimensions)
    weights = np.stack([np.bincount(rng.integers(0, len(items), len(items)), minlength=len(items)) for _ in range(6)])
    weights = weights.astype(float) * scale
    got = scopes.metrics(weights)
    n_labels = len(votes.labels)

    def expect(scope: str, stats: ItemStats, scoped: np.ndarray, kappas: np.ndarray, n: np.ndarray) -> None:
        alpha, fleiss, agreement = stats.batch(scoped)
        np.testing.assert_array_equal(got[scope]["krippendorff_alpha"], alpha)
        np.testing.assert_array_equal(got[scope]["fleiss_kappa"], fleiss)
        np.testing.assert_array_equal(got[scope]["percent_agreement"], agreement)
        valid = np.isfinite(kappas) & (n > 0)
        mean = np.where(valid, kappas, 0).sum(axis=1) / valid.sum(axis=1)
        np.testing.assert_allclose(got[scope]["mean_pairwise_cohen_kappa"], mean, rtol=1e-12)

    confusion = np.stack([pairs.confusion(n_labels, w) for w in weights])
    expect("overall", ItemStats.from_counts(counts), weights, cohen_kappas(confusion), confusion.sum(axis=(2, 3)))
    for k, name in enumerate(votes.labels):
        both = confusion[..., k, k]
        a, b = confusion[..., k, :].sum(axis=-1) - both, confusion[..., :, k].sum(axis=-1) - both
        neither = confusion.sum(axis=(2, 3)) - both - a - b
        binary = np.stack([np.stack([both, a], axis=-1), np.stack([b, neither], axis=-1)], axis=-2)
        stats = ItemStats.from_counts(np.stack([counts[:, k], counts.sum(axis=1) - counts[:, k]], axis=1))
        expect(f"label={name}", stats, weights, cohen_kappas(binary), binary.sum(axis=(2, 3)))
    for dimension in dimensions:
        for scope, mask in dimension.masks():
            scoped = weights * mask
            sliced = np.stack([pairs.confusion(n_labels, w) for w in scoped])
            expect(scope, ItemStats.from_counts(counts), scoped, cohen_kappas(sliced), sliced.sum(axis=(2, 3)))
    assert set(got) == {"overall", *(f"label={n}" for n in votes.labels), "a=x", "a=y", "b=p", "b=q", "b=r"}


def test_cell_groups_add_up_to_the_slices() -> None:
    rng = np.random.default_rng(5)
    codes = [rng.integers(-1, k, 500) for k in (3, 2, 5, 7)]
    dimensions = [SliceDimension(f"d{i}", [str(v) for v in range(c.max() + 1)], c) for i, c in enumerate(codes)]
    groups = CellGroup.split(dimensions, 500)
    assert len(groups) > 1
    for group in groups:  # several dimensions share a group only within MAX_CELLS cells
        assert len({scope.split("=")[0] for scope, _ in group.scopes}) == 1 or group.n_cells <= MAX_CELLS
    found = {scope: np.isin(g.cell, cells) for g in groups for scope, cells in g.scopes}
    for dimension in dimensions:
        for scope, mask in dimension.masks():
            np.testing.assert_array_equal(found[scope], mask)
    assert CellGroup.split([], 4)[0].n_cells == 1
