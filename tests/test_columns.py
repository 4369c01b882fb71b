"""The Arrow-backed column helpers agree with pandas on every shape: few values in a large set and the reverse,
missing values on either side."""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
from hypothesis import given, settings
from hypothesis import strategies as st

from labelops.columns import (
    codes,
    common_texts,
    concatenated,
    day_text,
    distinct_texts,
    extract,
    first_rows,
    group_starts,
    is_sorted,
    isin,
    joined,
    latest_rows,
    lookup,
    rows_where,
    sorted_rows,
    spliced,
)

ids = st.lists(st.one_of(st.none(), st.sampled_from([f"img-{i}" for i in range(40)])), max_size=60)


@settings(max_examples=200, deadline=None)
@given(values=ids, candidates=ids)
def test_isin_equals_pandas_whichever_side_is_larger(values: list, candidates: list) -> None:
    expected = pd.Series(values, dtype=object).isin(pd.Series(candidates, dtype=object)).to_numpy()
    assert (isin(pd.Series(values, dtype="str"), pd.Series(candidates, dtype="str")) == expected).all()
    assert (isin(pd.Series(values, dtype=object), set(candidates)) == expected).all()


def test_isin_probes_a_large_set_with_few_values() -> None:
    large = pd.Series([f"c-{i:07d}" for i in range(200_000)], dtype="str")
    few = pd.Series(["c-0000007", "absent", None, "c-0199999"], dtype="str")
    assert list(isin(few, large)) == [True, False, False, True]
    assert list(isin(few, pd.concat([large, pd.Series([None], dtype="str")]))) == [True, False, True, True]


def test_lookup_equals_map() -> None:
    mapping = pd.Series(["a", "b", None], index=["x", "y", "z"], dtype=object)
    keys = pd.Series(["y", "q", "x", "z", None], dtype="str")
    got = lookup(keys, mapping)
    expected = keys.astype(object).map(mapping).to_numpy(dtype=object)
    assert [None if (v is None or v is np.nan) else v for v in got] == [None if pd.isna(v) else v for v in expected]


labels = st.lists(
    st.tuples(st.sampled_from(["a", "b", "c"]), st.sampled_from(["car", "Bus", "é-scooter", "truck", "car"])),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(rows=labels)
def test_joined_equals_a_groupby_of_sorted_distinct_values(rows: list) -> None:
    frame = pd.DataFrame(rows, columns=["item_id", "label"]).astype("str")
    expected = frame.groupby("item_id")["label"].agg(lambda s: ", ".join(sorted(set(s))))
    got = joined(frame["item_id"], frame["label"], ", ")
    assert list(got.index) == list(expected.index) and list(got) == list(expected)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["b", "a", "c", "ü", ""]), st.text(max_size=4)), max_size=60))
def test_concatenated_equals_a_groupby_join_in_row_order(rows: list) -> None:
    for dtype in ("str", object):
        frame = pd.DataFrame(rows, columns=["item_id", "reason"]).astype(dtype)
        expected = frame.groupby("item_id", sort=False)["reason"].agg("; ".join)
        got = concatenated(frame["item_id"], frame["reason"], "; ")
        assert list(got.index) == list(expected.index) and list(got) == list(expected)


def test_concatenated_keeps_row_order_across_many_groups() -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {"item_id": rng.integers(0, 5000, 100_000).astype(str), "reason": np.arange(100_000).astype(str)}
    )
    expected = frame.groupby("item_id", sort=False)["reason"].agg(",".join)
    got = concatenated(frame["item_id"], frame["reason"], ",")
    assert got.index.tolist() == expected.index.tolist() and got.tolist() == expected.tolist()


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.none(),
            st.sampled_from(
                [
                    "task=1/annotation=2/result=a",
                    "task=1/annotation=None/result=a",
                    "line=7",
                    "xtask=3/annotation=4/",
                    "task=/annotation=1/",
                    "task=ü/annotation=ß/r",
                    "",
                ]
            ),
        ),
        max_size=30,
    )
)
def test_extract_equals_pandas_extract(values: list) -> None:
    pattern = r"^(task=[^/]+/annotation=(?!None/)[^/]+)/"  # the Label Studio annotation key (labelops.state)
    for dtype in ("str", object):
        column = pd.Series(values, dtype=dtype, index=np.arange(len(values)) * 2)
        expected = column.astype(str).str.extract(pattern, expand=False)
        got = extract(column, pattern, "task=")
        assert got.index.equals(column.index) and got.dtype == "str"
        assert got.isna().tolist() == (expected.isna() | column.isna()).tolist()
        assert got.dropna().tolist() == expected[got.notna()].tolist()


def test_day_text_equals_astype_str() -> None:
    days = pd.Series([date(2024, 6, 3), None, date(1999, 1, 2)], dtype=object, index=[5, 6, 7], name="export_date")
    for column in (days, days.astype(str), pd.Series([], dtype=object)):
        expected = column.astype(str)
        got = day_text(column)
        assert got.index.equals(expected.index) and got.dtype == expected.dtype
        assert got.isna().tolist() == expected.isna().tolist() and got.dropna().tolist() == expected.dropna().tolist()


@settings(max_examples=200, deadline=None)
@given(values=ids, dtype=st.sampled_from(["str", object]))
def test_group_starts_are_the_rows_drop_duplicates_keeps_in_a_grouped_column(values: list, dtype: str) -> None:
    column = pd.Series(values, dtype=dtype)
    grouped = column.iloc[np.argsort(column.fillna("~").to_numpy(dtype=str), kind="stable")].reset_index(drop=True)
    assert (group_starts(grouped) == (~grouped.duplicated()).to_numpy()).all()


boxes = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "é"]),
        st.one_of(st.none(), st.sampled_from(["bbox", "classification"])),
        st.one_of(st.none(), st.sampled_from(["car", "Bus"])),
        st.sampled_from([np.nan, -0.0, 0.0, 1.5, 2.0]),
        st.sampled_from([np.nan, 1.0, 3.0]),
    ),
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(rows=boxes, dtype=st.sampled_from(["str", object]))
def test_sorted_rows_equals_a_stable_sort_values(rows: list, dtype: str) -> None:
    keys = ["item_id", "kind", "label", "x", "y"]
    frame = pd.DataFrame(rows, columns=keys).astype({"item_id": "str", "kind": dtype, "label": dtype})
    frame["row"] = np.arange(len(frame))  # ties keep their order
    expected = frame.sort_values(keys, kind="stable").reset_index(drop=True)
    pd.testing.assert_frame_equal(sorted_rows(frame, keys), expected, check_exact=True)


@settings(max_examples=200, deadline=None)
@given(left=ids, right=ids)
def test_codes_equal_a_sorted_factorization_of_both_columns(left: list, right: list) -> None:
    both = pd.Series(left + right, dtype="str")
    expected, uniques = pd.factorize(both, sort=True, use_na_sentinel=True)
    expected = np.where(expected < 0, len(uniques), expected)
    got = codes(pd.Series(left, dtype="str"), pd.Series(right, dtype=object))
    assert [len(c) for c in got] == [len(left), len(right)]
    assert list(np.concatenate(got)) == list(expected)


@settings(max_examples=200, deadline=None)
@given(values=ids, dtype=st.sampled_from(["str", object]))
def test_latest_rows_equal_drop_duplicates_keep_last_then_a_stable_sort(values: list, dtype: str) -> None:
    frame = pd.DataFrame({"item_id": pd.Series(values, dtype=dtype), "row": np.arange(len(values))})
    expected = frame.drop_duplicates("item_id", keep="last").sort_values("item_id", kind="stable")
    pd.testing.assert_frame_equal(latest_rows(frame, "item_id"), expected.reset_index(drop=True), check_exact=True)


@settings(max_examples=200, deadline=None)
@given(values=ids)
def test_is_sorted_means_ascending_without_missing_values(values: list) -> None:
    column = pd.Series(values, dtype="str")
    expected = column.notna().all() and column.is_monotonic_increasing
    assert is_sorted(column) == expected and is_sorted(column.astype(object)) == expected


@settings(max_examples=200, deadline=None)
@given(rows=boxes, mask=st.lists(st.booleans(), min_size=40, max_size=40))
def test_rows_where_equals_loc_with_a_mask(rows: list, mask: list) -> None:
    frame = pd.DataFrame(rows, columns=["item_id", "kind", "label", "x", "y"]).astype(
        {"item_id": "str", "kind": object}
    )
    frame.index = np.arange(len(frame)) * 3  # the index is kept, as .loc keeps it
    chosen = np.array(mask[: len(frame)], dtype=bool)
    pd.testing.assert_frame_equal(rows_where(frame, chosen), frame.loc[chosen], check_exact=True)
    pd.testing.assert_frame_equal(rows_where(frame, chosen, ["y", "item_id"]), frame.loc[chosen, ["y", "item_id"]])


@settings(max_examples=200, deadline=None)
@given(values=ids, dtype=st.sampled_from(["str", object]), presort=st.booleans())
def test_first_rows_equal_drop_duplicates_sorted_or_not(values: list, dtype: str, presort: bool) -> None:
    frame = pd.DataFrame({"item_id": pd.Series(values, dtype=dtype), "row": np.arange(len(values))})
    if presort:
        frame = frame.sort_values("item_id", kind="stable")
    pd.testing.assert_frame_equal(first_rows(frame, "item_id"), frame.drop_duplicates("item_id"), check_exact=True)


@settings(max_examples=200, deadline=None)
@given(
    kept=st.lists(st.sampled_from([f"img-{i:02d}" for i in range(30)] + ["é-1", "Z-2"]), max_size=40),
    new=st.lists(st.sampled_from([f"img-{i:02d}" for i in range(30, 45)] + ["a-0", "ê-9"]), max_size=15),
    dropped=st.integers(0, 2**40),
)
def test_spliced_rows_equal_the_sorted_concatenation(kept: list, new: list, dropped: int) -> None:
    """A sorted frame with some rows dropped and rows of other keys put in: the same frame, types and all, as
    concatenating and sorting again; None where the two sides' types differ or the frame is not sorted."""
    frame = pd.DataFrame(
        {
            "item_id": pd.Series(sorted(kept), dtype="str"),
            "x": np.arange(len(kept), dtype=float),
            "n": np.arange(len(kept), dtype=np.int64),
            "batch": pd.Series([None] * len(kept), dtype=object),
            "label": pd.Series(["car" if i % 2 else None for i in range(len(kept))], dtype="str"),
        }
    )
    drop = np.array([bool(dropped >> i & 1) for i in range(len(kept))], dtype=bool)
    rows = pd.DataFrame(
        {
            "item_id": pd.Series(new[::-1], dtype="str"),  # in any order: sorted first, stably
            "x": -np.arange(len(new), dtype=float),
            "n": np.arange(len(new), dtype=np.int64),
            "batch": pd.Series(["relabel-1"] * len(new), dtype=object),
            "label": pd.Series(["bus"] * len(new), dtype="str"),
        }
    )
    expected = sorted_rows(pd.concat([frame[~drop], rows], ignore_index=True), ["item_id"])
    got = spliced(frame, drop, rows, "item_id")
    assert got is not None
    pd.testing.assert_frame_equal(got, expected, check_exact=True)
    assert spliced(frame, drop, rows.astype({"n": float}), "item_id") is None
    if len(set(kept)) > 1:
        assert spliced(frame.iloc[::-1].reset_index(drop=True), drop, rows, "item_id") is None


texts = st.lists(st.sampled_from(["img-1", "img-10", "img-2", "Z", "ä", "é", "😀", "ab", "a", ""]), max_size=30)


@settings(max_examples=200, deadline=None)
@given(texts, texts)
def test_distinct_and_common_texts_equal_numpys_set_routines(left: list, right: list) -> None:
    """The sorted set routines give np.union1d's and np.intersect1d's values and order (code points, as Python
    compares text), from object arrays, numpy text arrays and pandas text columns alike."""
    a, b = np.array(left, dtype=object), np.array(right, dtype=str)
    union = np.union1d(a, b)
    assert distinct_texts(a, b).tolist() == union.tolist()
    assert distinct_texts(pd.Series(left, dtype="str")).tolist() == np.unique(a).tolist()
    assert common_texts(union, pd.Series(right, dtype=object)).tolist() == np.intersect1d(union, b).tolist()
    assert common_texts(a, b).dtype == object
