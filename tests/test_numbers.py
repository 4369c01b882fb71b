"""Numbers and timestamps in delimited exports: Arrow's parse of a column equals Python's and pandas', spelling by spelling."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labelops.errors import ExportError
from labelops.formats.table import numeric_column
from labelops.ingest import _timestamp_column

spellings = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.floats(min_value=-1e6, max_value=1e6).map(lambda v: f"{v:.3f}"),
    st.floats(min_value=-1e6, max_value=1e6).map(lambda v: f"{v:e}"),
    st.integers(-(10**12), 10**12).map(str),
    st.sampled_from([" 1.5", "2 ", "1_000", "+7", ".5", "5.", "-0", "1E3", "Infinity", "-inf", "NaN"]),
    st.none(),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(spellings, max_size=30), st.sampled_from(["str", "object"]))
def test_numeric_column_equals_pythons_float(values: list, dtype: str) -> None:
    frame = pd.DataFrame({"x": pd.Series(values, dtype=dtype)})
    expected = pd.Series([np.nan if v is None else float(v) for v in values], dtype="float64").to_numpy()
    got = numeric_column("f.csv", frame, "x")
    assert got.dtype == np.float64
    assert np.array_equal(np.isnan(got), np.isnan(expected))
    keep = ~np.isnan(expected)
    assert np.array_equal(got[keep].view(np.uint64), expected[keep].view(np.uint64))  # the same double, -0 too


def test_a_value_that_is_no_number_is_named_with_its_line() -> None:
    frame = pd.DataFrame({"x": pd.Series(["1", "abc"], dtype="str", index=[2, 3])})
    with pytest.raises(ExportError, match=r"f\.csv: line 3: column 'x' holds 'abc', not a number"):
        numeric_column("f.csv", frame, "x")


zoned = st.datetimes(
    min_value=pd.Timestamp("1971-01-01").to_pydatetime(), max_value=pd.Timestamp("2100-01-01").to_pydatetime()
)
stamps = st.one_of(
    zoned.map(lambda t: t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")),
    zoned.map(lambda t: t.strftime("%Y-%m-%d %H:%M:%S+02:00")),
    zoned.map(lambda t: t.strftime("%Y-%m-%dT%H:%MZ")),
    zoned.map(lambda t: t.strftime("%Y-%m-%dT%H:%M:%S")),  # no zone: Arrow refuses, pandas reads UTC
    zoned.map(lambda t: t.strftime("%Y-%m-%d")),
    st.sampled_from(["2024-06-12T10:00:00.123456789Z", "2024-06-12T10:00:00-05:30"]),
    st.none(),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(stamps, max_size=30), st.sampled_from(["str", "object"]))
def test_timestamp_column_equals_pandas_iso8601(values: list, dtype: str) -> None:
    frame = pd.DataFrame({"ts": pd.Series(values, dtype=dtype, index=range(2, len(values) + 2))})  # lines
    expected = pd.to_datetime(frame["ts"], utc=True, format="ISO8601")
    got = _timestamp_column("f.csv", frame, "ts")
    assert got.dtype == expected.dtype  # microseconds, nanoseconds where a value has them
    assert got.index.equals(frame.index)
    assert got.isna().equals(expected.isna())
    assert (got.dropna().astype("datetime64[ns, UTC]") == expected.dropna().astype("datetime64[ns, UTC]")).all()


def test_a_value_that_is_no_timestamp_is_named_with_its_line() -> None:
    frame = pd.DataFrame({"ts": pd.Series(["2024-06-12T10:00:00Z", "yesterday"], dtype="str", index=[2, 3])})
    with pytest.raises(ExportError, match=r"f\.csv: line 3: column 'ts' holds 'yesterday', not a timestamp"):
        _timestamp_column("f.csv", frame, "ts")
