"""Curation's integer-code helpers agree with the pandas operations they replace, on small varied frames:
repeated rows, items of one and of several rows, missing values, empty frames."""

from __future__ import annotations

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from labelops import snapshots
from labelops.columns import codes

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
