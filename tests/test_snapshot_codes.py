"""Curation's integer-code helpers agree with the pandas operations they replace, on small varied frames:
repeated rows, items of one and of several rows, missing values, empty frames."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from labelops import snapshots
from labelops.columns import codes, run_positions

ITEMS = st.sampled_from(["img-1", "img-10", "img-2", "b", None])
ROWS = st.lists(
    st.tuples(
        ITEMS,
        st.sampled_from(["bbox", "classification", None]),
        st.sampled_from(["car", "bus", "urban", None]),
        st.sampled_from([0.0, 1.5, 2.0, np.nan]),
        st.sampled_from([0.0, 3.0, np.nan]),
    ),
    max_size=30,
)


def frame(rows: list) -> pd.DataFrame:
    table = pd.DataFrame(rows, columns=["item_id", "kind", "label", "x", "y"]).astype(
        {"item_id": "str", "kind": "str", "label": "str", "x": float, "y": float}
    )
    return table.assign(w=table["x"] * 2, h=1.0)


@settings(max_examples=100, deadline=None)
@given(rows=ROWS)
def test_duplicates_and_label_order_equal_pandas(rows: list) -> None:
    labels = frame(rows)
    (ids,) = codes(labels["item_id"])
    expected = labels.duplicated(snapshots.LABEL_KEY, keep="last").to_numpy()
    assert (snapshots._duplicated_labels(labels, ids) == expected).all()
    order = snapshots._label_order(labels, np.arange(len(labels)), ids)
    expected_order = labels.sort_values(snapshots.LABEL_KEY, kind="stable").index.to_numpy()
    assert list(order) == list(expected_order)


@settings(max_examples=100, deadline=None)
@given(rows=ROWS)
def test_first_rows_and_first_present_values_equal_pandas(rows: list) -> None:
    labels = frame(rows)
    (ids,) = codes(labels["item_id"])
    assert list(snapshots._first(ids)) == list(~labels["item_id"].duplicated(keep="first"))
    group = labels["item_id"].astype(str)
    group_codes, names = pd.factorize(group, sort=True)
    values = labels["label"].to_numpy(dtype=object)
    expected = pd.Series(values, index=labels.index).groupby(group).first()
    got = pd.Series(snapshots._first_present(values, group_codes, len(names)), index=names)
    assert list(expected.index) == list(names)
    assert [None if pd.isna(v) else v for v in got] == [None if pd.isna(v) else v for v in expected]


@settings(max_examples=100, deadline=None)
@given(rows=ROWS, splits=st.lists(st.tuples(ITEMS, st.sampled_from(["train", "val", None])), max_size=8))
def test_class_counts_equal_a_merge_of_labels_and_items(rows: list, splits: list) -> None:
    labels = frame(rows)
    items = pd.DataFrame(splits, columns=["item_id", "split"]).astype("str").drop_duplicates("item_id")
    by_split = labels.merge(items, on="item_id")
    expected = {
        s: {k: int(v) for k, v in g["label"].value_counts().sort_index().items()} for s, g in by_split.groupby("split")
    }
    assert snapshots.class_counts(items, labels) == expected


KNOWN = ROWS.map(lambda rows: [row for row in rows if row[0] is not None])


@settings(max_examples=100, deadline=None)
@given(before=KNOWN, after=KNOWN)
def test_changes_equal_a_comparison_per_item(before: list, after: list) -> None:
    old, new = frame(before).drop_duplicates("item_id"), frame(after).drop_duplicates("item_id")
    old_ids, new_ids = codes(old["item_id"], new["item_id"])
    size = max((int(c.max()) + 1 for c in (old_ids, new_ids) if len(c)), default=0)
    got = snapshots._changes(old_ids, old, new_ids, new, "label", size)
    previous = dict(zip(old["item_id"].tolist(), old["label"].to_numpy(dtype=object), strict=True))
    expected = sorted(
        (i, previous[i], v)
        for i, v in zip(new["item_id"].tolist(), new["label"].to_numpy(dtype=object), strict=True)
        if i in previous and previous[i] != v  # a missing label always differs, as in the diff before codes
    )
    assert [_plain(c["item_id"], c["old"], c["new"]) for c in got] == [_plain(*change) for change in expected]


def _plain(*values: object) -> tuple:
    return tuple(None if pd.isna(v) else v for v in values)


@settings(max_examples=100, deadline=None)
@given(keys=st.lists(ITEMS, max_size=8), runs=st.lists(ITEMS, max_size=20))
def test_run_positions_are_the_keys_positions_or_none(keys: list, runs: list) -> None:
    """run_positions answers only for keys strictly ascending and runs holding them in order, one run each; then
    its positions give each run value's key, as shared codes would pair them."""
    key_series, run_series = pd.Series(keys, dtype="str"), pd.Series(runs, dtype="str")
    at = run_positions(key_series, run_series)
    distinct = [v for i, v in enumerate(runs) if i == 0 or runs[i - 1] != v]
    aligned = (
        len(keys) > 0 and None not in keys and all(a < b for a, b in itertools.pairwise(keys)) and distinct == keys
    )
    assert (at is not None) == aligned
    if at is not None:
        assert [keys[i] for i in at] == runs


def test_snapshot_diff_and_class_counts_agree_with_or_without_aligned_labels() -> None:
    """The diff and the class counts of a version whose labels are grouped in its items' order (what curation
    writes) equal those of the same tables shuffled, where shared codes of every id column are used."""
    rng = np.random.default_rng(5)
    ids = [f"img-{i:03d}" for i in range(60)]
    items = pd.DataFrame({"item_id": ids, "split": rng.choice(["train", "val", "test"], 60)})
    rows = [(i, k, lab, float(x)) for i in ids for k, lab, x in [("classification", "urban", 0), ("bbox", "car", 1)]]
    labels = pd.DataFrame(rows, columns=["item_id", "kind", "label", "x"]).assign(y=2.0, w=3.0, h=4.0)
    new_items = items.iloc[5:].assign(split=items["split"].iloc[5:].to_numpy()[::-1])
    new_labels = labels[labels["item_id"].isin(new_items["item_id"])].copy()
    new_labels.loc[new_labels.index[::7], "label"] = "highway"
    new_labels.loc[new_labels["kind"] == "bbox", "x"] += rng.choice([0.0, 50.0], (new_labels["kind"] == "bbox").sum())
    new_labels = new_labels.reset_index(drop=True)
    aligned = snapshots.diff(items, labels, new_items, new_labels)
    shuffled = snapshots.diff(
        items.sample(frac=1, random_state=1),
        labels.sample(frac=1, random_state=2),
        new_items.sample(frac=1, random_state=3),
        new_labels.sample(frac=1, random_state=4),
    )
    assert aligned == shuffled and aligned["label_changes"] and aligned["object_changes"] and aligned["removed"]
    assert snapshots.class_counts(new_items, new_labels) == snapshots.class_counts(
        new_items.sample(frac=1, random_state=6), new_labels.sample(frac=1, random_state=7)
    )


def test_curation_of_a_state_grouped_by_item_equals_curation_of_the_same_rows_shuffled() -> None:
    """A label state's rows, grouped by item in its items' order, take their items' codes; shuffled rows are
    ranked with the other ids. Both curate the same snapshot, with an item without consensus (a row without a
    kind, as the state gives it) counted and left out."""
    from test_snapshots import CONFIG, EMPTY, inputs

    consensus, items = inputs(40, seed=3)
    consensus = consensus.sort_values(["item_id", "kind"], kind="stable").reset_index(drop=True)
    lone = pd.DataFrame({"item_id": ["img-0040"], "kind": [None]})  # votes, no consensus
    consensus = pd.concat([consensus, lone], ignore_index=True)
    items = pd.concat([items, items.iloc[[0]].assign(item_id="img-0040")], ignore_index=True)
    annotated = pd.Series(sorted(consensus["item_id"].unique()))
    assert run_positions(annotated, consensus["item_id"]) is not None
    parent = pd.Series(dtype=object)
    grouped = snapshots.curate(consensus, items, EMPTY, EMPTY, parent, CONFIG, annotated=annotated)
    shuffled = consensus.sample(frac=1, random_state=1).reset_index(drop=True)
    assert run_positions(annotated, shuffled["item_id"]) is None
    ranked = snapshots.curate(shuffled, items, EMPTY, EMPTY, parent, CONFIG, annotated=annotated)
    pd.testing.assert_frame_equal(grouped.items, ranked.items)
    pd.testing.assert_frame_equal(grouped.labels, ranked.labels)
    assert grouped.excluded == ranked.excluded and grouped.excluded["no_consensus"] == 1


def test_curation_takes_the_catalog_in_item_order_whatever_its_row_order() -> None:
    """An item index kept as layers lists the items a day added after the earlier ones, not in id order: curation
    gives the same snapshot from its rows in any order, and of duplicate items (one content hash) keeps the
    first by id."""
    from test_snapshots import CONFIG, EMPTY, inputs

    consensus, items = inputs(40, seed=4)
    items["content_hash"] = [f"h{i}" for i in range(40)]
    items.loc[[7, 23, 31], "content_hash"] = "same"  # three copies of one image
    annotated = pd.Series(sorted(consensus["item_id"].unique()))
    parent = pd.Series(dtype=object)
    in_order = snapshots.curate(consensus, items, EMPTY, EMPTY, parent, CONFIG, annotated=annotated)
    for seed in range(3):
        shuffled = items.sample(frac=1, random_state=seed).reset_index(drop=True)
        curated = snapshots.curate(consensus, shuffled, EMPTY, EMPTY, parent, CONFIG, annotated=annotated)
        pd.testing.assert_frame_equal(curated.items, in_order.items)
        pd.testing.assert_frame_equal(curated.labels, in_order.labels)
        assert curated.excluded == in_order.excluded
    assert in_order.excluded["duplicate"] == 2 and "img-0007" in set(in_order.items["item_id"])


@settings(max_examples=150, deadline=None)
@given(
    before=st.lists(
        st.tuples(
            st.integers(0, 9),
            st.sampled_from(["classification", "bbox"]),
            st.sampled_from(["car", "bus", None]),
            st.sampled_from([np.nan, 1.0, 2.5]),
        ),
        max_size=30,
    ),
    edits=st.lists(st.tuples(st.integers(0, 29), st.sampled_from(["drop", "label", "x", "nan", "add"])), max_size=6),
)
def test_items_changed_row_by_row_equal_those_changed_by_signature(before: list, edits: list) -> None:
    """Label rows in item order, each item's in label order (what curation writes), are compared row by row; the
    same rows in another order by their items' signatures. Both find the same items, missing values equal."""
    old = pd.DataFrame(before, columns=["item", "kind", "label", "x"]).assign(y=0.0, w=1.0, h=1.0)
    new = old.copy()
    for row, edit in edits:
        if row >= len(new):
            continue
        if edit == "drop":
            new = new.drop(index=new.index[row])
        elif edit == "add":
            new = pd.concat([new, new.iloc[[row]].assign(x=9.0)])
        else:
            new.iloc[row, new.columns.get_loc("x" if edit in ("x", "nan") else "label")] = (
                np.nan if edit == "nan" else (7.0 if edit == "x" else "truck")
            )
    key = ["item", "kind", "label", "x", "y"]
    old, new = (f.sort_values(key, kind="stable").reset_index(drop=True) for f in (old, new))
    old_ids, new_ids = old["item"].to_numpy(dtype=np.int64), new["item"].to_numpy(dtype=np.int64)
    in_place = snapshots.changed_in_place(old, old_ids, new, new_ids, 10)
    flip = np.arange(len(new))[::-1]
    hashed = snapshots.changed_by_signature(old, old_ids, new.iloc[flip].reset_index(drop=True), new_ids[flip], 10)
    assert list(in_place) == list(hashed)
    assert list(snapshots.changed_items(old, old_ids, new, new_ids, 10)) == list(in_place)


def test_diff_with_curations_codes_equals_the_diff_that_ranks_the_ids_again() -> None:
    """Curation hands its item codes to the diff, which uses them only when they code the parent it is given: the
    changes are the same as with the ids ranked again, against that parent and against another one."""
    from test_snapshots import CONFIG, EMPTY, inputs

    consensus, items = inputs(40, seed=8)
    annotated = pd.Series(sorted(consensus["item_id"].unique()))
    first = snapshots.curate(consensus, items, EMPTY, EMPTY, pd.Series(dtype=object), CONFIG, annotated=annotated)
    parent_items = first.items[["item_id", "split"]]
    parent_labels = first.labels[snapshots.LABEL_KEY]
    later, more = inputs(10, start=35, seed=9)  # five items relabelled, five new
    consensus = pd.concat([consensus[~consensus["item_id"].isin(later["item_id"])], later], ignore_index=True)
    consensus = consensus.sort_values("item_id", kind="stable").reset_index(drop=True)
    items = pd.concat([items, more.iloc[5:]], ignore_index=True)
    annotated = pd.Series(sorted(consensus["item_id"].unique()))
    parent_splits = parent_items.set_index("item_id")["split"]
    curated = snapshots.curate(consensus, items, EMPTY, EMPTY, parent_splits, CONFIG, annotated=annotated)
    assert curated.codes is not None
    ranked = snapshots.diff(parent_items, parent_labels, curated.items, curated.labels)
    coded = snapshots.diff(parent_items, parent_labels, curated.items, curated.labels, item_codes=curated.codes)
    assert coded == ranked and len(coded["added"]) == 5 and coded["label_changes"]
    other = parent_items.iloc[3:].reset_index(drop=True)  # not the parent curation coded: its codes are not used
    other_labels = parent_labels[parent_labels["item_id"].isin(other["item_id"])].reset_index(drop=True)
    assert snapshots.diff(other, other_labels, curated.items, curated.labels, item_codes=curated.codes) == (
        snapshots.diff(other, other_labels, curated.items, curated.labels)
    )


@settings(max_examples=200, deadline=None)
@given(
    values=st.lists(st.integers(-3, 40), max_size=60),
    shape=st.sampled_from(["as drawn", "ascending", "descending"]),
)
def test_first_of_each_code_equals_pandas_in_any_order(values: list[int], shape: str) -> None:
    """The first row of each code, whether the codes come in order (either way, a run of equal codes each) or not,
    and with a negative code (a missing group's)."""
    ids = np.asarray(sorted(values, reverse=shape == "descending") if shape != "as drawn" else values, dtype=np.int64)
    assert list(snapshots._first(ids)) == list(~pd.Series(ids, dtype="int64").duplicated(keep="first"))
