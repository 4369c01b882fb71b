"""Consensus against crowd-kit on real crowd data: accuracy at least crowd-kit's, posteriors equal."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from crowd_data import bluebirds, snow
from crowdkit.aggregation import DawidSkene, MajorityVote
from hypothesis import given, settings
from hypothesis import strategies as st

from labelops.agreement import Votes
from labelops.annotators import Thresholds
from labelops.consensus import dawid_skene, estimated_accuracy, majority_vote
from labelops.quality import consensus_and_scores

DATA = {"rte": lambda: snow("rte"), "temp": lambda: snow("temp"), "bluebirds": bluebirds}
# Published with the data (SOURCES.md), computed with crowd-kit 1.4.2: majority vote, Dawid-Skene.
PUBLISHED = {"rte": (0.875, 0.9275), "temp": (0.939, 0.942), "bluebirds": (0.759, 0.889)}


def accuracy(table: pd.DataFrame, gold: pd.Series) -> float:
    return float((table.set_index("item_id")["label"].reindex(gold.index) == gold).mean())


def crowdkit_frame(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.rename(columns={"item_id": "task", "annotator_id": "worker"})


@pytest.mark.parametrize("name", sorted(DATA))
def test_accuracy_at_least_crowdkit(name: str) -> None:
    frame, gold = DATA[name]()
    votes = Votes.from_frame(frame)
    ours_mv = accuracy(majority_vote(votes).table(votes), gold)
    ours_ds = accuracy(dawid_skene(votes).table(votes), gold)
    theirs_mv = float((MajorityVote().fit_predict(crowdkit_frame(frame)).reindex(gold.index) == gold).mean())
    theirs_ds = float((DawidSkene(n_iter=100).fit_predict(crowdkit_frame(frame)).reindex(gold.index) == gold).mean())
    assert ours_mv >= theirs_mv - 1e-12 and ours_ds >= theirs_ds - 1e-12
    published_mv, published_ds = PUBLISHED[name]
    assert ours_mv >= published_mv - 5e-4 and ours_ds >= published_ds - 5e-4


@pytest.mark.parametrize("name", sorted(DATA))
def test_dawid_skene_posteriors_equal_crowdkit(name: str) -> None:
    frame, _ = DATA[name]()
    votes = Votes.from_frame(frame)
    ours = dawid_skene(votes)
    reference = DawidSkene(n_iter=100, tol=1e-5).fit(crowdkit_frame(frame))
    probas = reference.probas_.reindex(index=votes.items, columns=votes.labels).to_numpy()
    np.testing.assert_allclose(ours.posteriors, probas, atol=1e-6)
    assert ours.iterations == len(reference.loss_history_)
    errors = reference.errors_  # worker, observed label -> true label columns
    for w, worker in enumerate(votes.annotators[:10]):
        theirs = errors.loc[worker].reindex(index=votes.labels, columns=votes.labels)
        used = theirs.notna().all(axis=1).to_numpy()
        np.testing.assert_allclose(ours.confusions[w][used], theirs.to_numpy()[used], atol=1e-6)


def test_gold_items_are_clamped_like_crowdkit() -> None:
    frame, gold = snow("rte")
    known = gold.iloc[:100]
    votes = Votes.from_frame(frame)
    ours = dawid_skene(votes, gold=known)
    reference = DawidSkene(n_iter=100).fit(crowdkit_frame(frame), true_labels=known)
    probas = reference.probas_.reindex(index=votes.items, columns=votes.labels).to_numpy()
    np.testing.assert_allclose(ours.posteriors, probas, atol=1e-6)
    table = ours.table(votes).set_index("item_id")
    assert (table.loc[known.index, "label"] == known).all()


def test_estimated_accuracy_finds_the_spammers() -> None:
    frame, gold = snow("rte")
    votes = Votes.from_frame(frame)
    estimated = estimated_accuracy(dawid_skene(votes))
    merged = frame.merge(gold.rename("gold"), left_on="item_id", right_index=True)
    empirical = (merged["label"] == merged["gold"]).groupby(merged["annotator_id"]).mean()
    busy = frame["annotator_id"].value_counts()
    busy = busy[busy >= 20].index
    # 0.877 on RTE: DS recovers who is good without seeing any gold label
    assert np.corrcoef(estimated[busy], empirical[busy])[0, 1] > 0.85


@settings(max_examples=40, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 12), st.integers(0, 6), st.sampled_from(["a", "b", "c"])), min_size=6, max_size=80
    ),
    st.randoms(use_true_random=False),
)
def test_permuting_annotator_ids_does_not_change_consensus(rows, random) -> None:
    frame = pd.DataFrame(rows, columns=["item_id", "annotator_id", "label"]).astype(str)
    names = sorted(frame["annotator_id"].unique())
    shuffled = names[:]
    random.shuffle(shuffled)
    renamed = frame.assign(
        annotator_id=frame["annotator_id"].map(dict(zip(names, ["q" + s for s in shuffled], strict=True)))
    )
    a, b = Votes.from_frame(frame), Votes.from_frame(renamed)
    np.testing.assert_allclose(dawid_skene(a).posteriors, dawid_skene(b).posteriors, atol=1e-9)


def test_a_handful_of_answers_is_too_little_to_flag_by_estimated_accuracy() -> None:
    """On a day of 40 RTE items, a newcomer's three answers, each matching a unanimous item, get an estimated
    accuracy of 0.45 from the day's fit (it sums P(c|c) over classes the newcomer never answered): below the
    0.7 flag, so it needs ``min_answers_for_estimate`` scene answers. Busy annotators are still judged by it."""
    frame, _ = snow("rte")
    day = frame[frame["item_id"].isin(frame["item_id"].drop_duplicates().iloc[:40])]
    per_item = day.groupby("item_id")["label"]
    unanimous = per_item.first()[per_item.nunique() == 1].iloc[:3]
    newcomer = pd.DataFrame({"item_id": unanimous.index, "annotator_id": "newcomer", "label": unanimous.to_numpy()})
    judged = pd.concat([day, newcomer], ignore_index=True)
    annotations = judged.assign(kind="classification", x=np.nan, y=np.nan, w=np.nan, h=np.nan, points=None)
    _, scores = consensus_and_scores(annotations, pd.DataFrame(columns=["item_id", "kind", "label"]))
    newcomer_scores = scores.set_index("annotator_id").loc["newcomer"]
    assert newcomer_scores["agreement_with_consensus"] == 1.0 and newcomer_scores["estimated_accuracy"] < 0.7
    assert not newcomer_scores["flagged"] and newcomer_scores["scene_answers"] == 3
    busy = scores[scores["scene_answers"] >= Thresholds().min_answers_for_estimate]
    low = busy["estimated_accuracy"] < Thresholds().min_estimated_accuracy
    assert low.sum() == 5 and busy.loc[low, "flag_reason"].str.contains("estimated accuracy").all()
