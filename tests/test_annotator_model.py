"""The kept Dawid-Skene fit (annotator_model): between fits, the label state labels the items a night touched with
it, one E-step each, as crowd-kit's own E-step does; the other items keep their labels, and a fit comes back on
schedule, on a class the fit never saw, and whenever there is none to keep."""

from __future__ import annotations

import numpy as np
import pandas as pd
from crowd_data import snow
from crowdkit.aggregation import DawidSkene
from test_state import DAYS, crowd_votes

from labelops import consensus as ds
from labelops import state
from labelops.agreement import Votes

NO_GOLD = pd.DataFrame(columns=["item_id", "kind", "label"])


def split(name: str) -> tuple[pd.DataFrame, np.ndarray]:
    """Real crowd judgments and a seeded day (0, 1, 2) for each: every item is judged on several days."""
    frame, _ = snow(name)
    return frame, pd.util.hash_pandas_object(frame[["item_id", "annotator_id"]], index=False).to_numpy() % 3


def test_model_survives_its_table() -> None:
    frame, _ = snow("temp")
    model = ds.dawid_skene(Votes.from_frame(frame)).model(DAYS[0])
    table = model.frame()
    assert list(table.columns) == ds.MODEL_COLUMNS
    assert len(table) == len(model.labels) * (1 + len(model.annotators) * len(model.labels))
    back = ds.AnnotatorModel.from_frame(table)
    assert back is not None and back.fitted_on == DAYS[0]
    for name in ("labels", "annotators", "priors", "confusions"):
        np.testing.assert_array_equal(getattr(back, name), getattr(model, name))
    assert ds.AnnotatorModel.from_frame(table.iloc[:0]) is None


def test_kept_fit_labels_new_judgments_as_crowdkit_e_step() -> None:
    """A fit on the first day's judgments labels the later days' (the same annotators) exactly as crowd-kit's
    E-step does with that fit's priors and confusion matrices."""
    frame, day_of = split("rte")
    first = Votes.from_frame(frame[day_of == 0])
    model = ds.dawid_skene(first).model(DAYS[0])
    later = frame[(day_of > 0) & frame["annotator_id"].isin(model.annotators)]
    aggregate, coded = model.aggregate(Votes.from_frame(later))
    errors = pd.DataFrame(
        model.confusions.reshape(-1, len(model.labels)),
        index=pd.MultiIndex.from_product([model.annotators, model.labels], names=["worker", "label"]),
        columns=pd.Index(model.labels, name="label"),
    )
    errors = errors[errors.sum(axis=1) > 0]  # crowd-kit keeps only the answers an annotator gave
    data = later.rename(columns={"item_id": "task", "annotator_id": "worker"})[["task", "worker", "label"]]
    priors = pd.Series(model.priors, index=pd.Index(model.labels, name="label"))
    theirs = DawidSkene._e_step(data, priors.copy(), errors).reindex(index=aggregate.items, columns=model.labels)
    np.testing.assert_allclose(aggregate.posteriors, np.maximum(theirs.to_numpy(), ds.EPS), atol=1e-12)
    table = aggregate.table(coded)
    assert (table["n_votes"].to_numpy() == later.groupby("item_id").size().reindex(aggregate.items).to_numpy()).all()


def test_an_annotator_the_fit_never_saw_answers_with_the_mean_confusion() -> None:
    frame, _ = snow("temp")
    model = ds.dawid_skene(Votes.from_frame(frame)).model(DAYS[0])
    item = frame[frame["item_id"] == frame["item_id"].iloc[0]]
    stranger = item.assign(annotator_id="someone-new")
    kept, _ = model.aggregate(Votes.from_frame(stranger))
    mean = ds.AnnotatorModel(
        model.labels, np.array(["someone-new"], dtype=object), model.priors, model.confusions.mean(0)[None], DAYS[0]
    )
    np.testing.assert_allclose(kept.posteriors, mean.aggregate(Votes.from_frame(stranger))[0].posteriors)


def _nights(frame: pd.DataFrame, day_of: np.ndarray, config: state.StateConfig) -> list[tuple]:
    """The state's consensus night by night, each night folding one day of the split, with the kept fit."""
    votes, previous, model, out = state.empty_votes(), state.empty_state(), None, []
    none = pd.Series(dtype=object)
    requests = pd.DataFrame(columns=["item_id", "batch_id", "sent_on"])
    for n, day in enumerate(DAYS):
        votes = state.fold_votes(votes, crowd_votes(frame[day_of == n], day))
        touched = state.touched_items(votes, day)
        labels, fitted = state.consensus(votes, previous, touched, NO_GOLD, config, day=day, model=model)
        out.append((votes, touched, labels, model, fitted))
        previous, model = state.item_state(votes, labels, requests, none, previous=previous, touched=touched), fitted
    return out


def test_between_fits_touched_items_take_the_kept_fit_and_others_keep_their_labels() -> None:
    frame, day_of = split("temp")
    late = frame["item_id"].isin(frame["item_id"].drop_duplicates().iloc[::4])  # a quarter of the items go on
    day_of = np.where(late.to_numpy() | (day_of == 0), day_of, 0)
    nights = _nights(frame, day_of, state.StateConfig())
    (_, _, first, _, fit), *rest = nights
    assert fit is not None and fit.fitted_on == DAYS[0]
    for votes, touched, labels, kept, fitted in rest:
        assert fitted is kept is fit  # no new fit: the night labels its items with the first night's
        scene = labels[labels["kind"] == "classification"].set_index("item_id")
        live = state.current(votes)
        moved = live[live["item_id"].isin(touched)]
        expected, coded = fit.aggregate(Votes.from_frame(moved))
        expected = expected.table(coded).set_index("item_id")
        pd.testing.assert_series_equal(scene.loc[expected.index, "confidence"], expected["confidence"])
        assert (scene.loc[expected.index, "label"] == expected["label"]).all()
        assert (scene.loc[expected.index, "n_votes"] == expected["n_votes"]).all()
        untouched = first.set_index("item_id").index.difference(pd.Index(touched))
        first_scene = first[first["kind"] == "classification"].set_index("item_id")
        pd.testing.assert_frame_equal(scene.loc[untouched], first_scene.loc[untouched])
        first = labels


def test_a_fit_is_due_every_refit_days_and_then_equals_one_fit_over_all_days() -> None:
    frame, day_of = split("rte")
    nights = _nights(frame, day_of, state.StateConfig(refit_days=1))
    for (_, _, _, kept, fitted), day in zip(nights, DAYS, strict=True):
        assert fitted is not None and fitted.fitted_on == day and fitted is not kept
    labels = nights[-1][2].set_index("item_id")
    votes = Votes.from_frame(frame)
    one_fit = ds.dawid_skene(votes).table(votes).set_index("item_id")
    assert (labels.loc[one_fit.index, "label"] == one_fit["label"]).all()
    np.testing.assert_allclose(labels.loc[one_fit.index, "confidence"], one_fit["confidence"], atol=1e-12)
    assert state.refit_due(nights[0][4], "2024-06-16", state.StateConfig()) is False  # six days on: kept
    assert state.refit_due(nights[0][4], "2024-06-17", state.StateConfig()) is True  # seven: fit again
    assert state.refit_due(None, DAYS[0], state.StateConfig()) is True
    majority = state.StateConfig(method="majority_vote")
    assert state.refit_due(None, DAYS[0], majority) is False  # local to an item: the touched items alone
    assert state.refit_due(nights[0][4], DAYS[1], majority) is True  # a switch from Dawid-Skene: every item


def test_a_class_the_fit_never_saw_brings_a_new_fit() -> None:
    frame, day_of = split("temp")
    frame = frame.assign(label=frame["label"].astype(str))
    odd = (day_of == 2) & (frame["item_id"] == frame.loc[day_of == 2, "item_id"].iloc[0]).to_numpy()
    frame.loc[odd, "label"] = "never-seen"
    nights = _nights(frame, day_of, state.StateConfig())
    assert nights[1][4] is nights[0][4]  # the second night keeps the first night's fit
    refit = nights[2][4]
    assert refit is not None and refit.fitted_on == DAYS[2] and "never-seen" in refit.labels.tolist()


def test_a_night_between_fits_splices_the_items_it_can_change_into_the_previous_state() -> None:
    """fold_state rebuilds only the items a night can change (touched, gold, requested, put in review) and keeps
    the other rows: the same state, row for row, as building it whole from every item."""
    frame, day_of = split("temp")
    items = frame["item_id"].drop_duplicates()
    gold = pd.DataFrame({"item_id": items.iloc[:5], "kind": "classification", "label": "1"})
    requested = pd.DataFrame({"item_id": items.iloc[5:9], "batch_id": f"relabel-{DAYS[0]}", "sent_on": DAYS[0]})
    votes, previous, model = state.empty_votes(), state.empty_state(), None
    config = state.StateConfig()
    for n, day in enumerate(DAYS):
        votes = state.fold_votes(votes, crowd_votes(frame[day_of == n], day))
        touched = state.touched_items(votes, day)
        requests = state.open_requests(requested, day, config.request_expire_days) if n else requested.iloc[:0]
        reviewed_today = items.iloc[10 + n : 12 + n]
        in_review = pd.concat(
            [previous.loc[previous.get("status", pd.Series()) == "in_review", "item_id"], reviewed_today]
        )
        spliced, fitted = state.fold_state(
            votes,
            previous,
            touched,
            gold,
            config,
            day=day,
            model=model,
            requests=requests,
            in_review=in_review,
            reviewed_today=reviewed_today,
        )
        labels, whole_fit = state.consensus(votes, previous, touched, gold, config, day=day, model=model)
        whole = state.item_state(votes, labels, requests, in_review, previous=previous, touched=touched)
        pd.testing.assert_frame_equal(spliced, whole)
        assert (fitted is model) == (n > 0) and (fitted is whole_fit or fitted.fitted_on == whole_fit.fitted_on)
        assert n == 0 or (spliced["status"] == "relabel_requested").sum() == 4
        previous, model = spliced, fitted


def test_a_switch_of_method_labels_every_item_again() -> None:
    frame, day_of = split("temp")
    votes, previous, model = state.empty_votes(), state.empty_state(), None
    none, requests = pd.Series(dtype=object), pd.DataFrame(columns=["item_id", "batch_id", "sent_on"])
    methods = ["dawid_skene", "majority_vote", "dawid_skene"]
    for n, (day, method) in enumerate(zip(DAYS, methods, strict=True)):
        votes = state.fold_votes(votes, crowd_votes(frame[day_of == n], day))
        touched = state.touched_items(votes, day)
        config = state.StateConfig(method=method)
        labels, fitted = state.consensus(votes, previous, touched, NO_GOLD, config, day=day, model=model)
        scene = labels[labels["kind"] == "classification"]
        assert (scene["method"] == method).all() and scene["item_id"].is_unique  # no item left with the other
        assert (fitted is None) == (method == "majority_vote") and (fitted is None or fitted.fitted_on == day)
        previous = state.item_state(votes, labels, requests, none, previous=previous, touched=touched)
        model = fitted
