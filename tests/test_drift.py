"""Drift statistics against scipy/statsmodels on fixed data, and on the demo's production logs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.spatial import distance
from statsmodels.stats.proportion import proportions_ztest

from labelops import drift, ingest
from labelops.demo import days
from labelops.storage import LocalStore

RNG = np.random.default_rng(42)
SMALL_REF = pd.Series(RNG.normal(0, 1, 800), name="x")
SMALL_CUR = pd.Series(RNG.normal(0.3, 1, 600), name="x")
BIG_REF = pd.Series(RNG.normal(10, 2, 5000), name="x")
BIG_CUR = pd.Series(RNG.normal(10.5, 2, 4000), name="x")
CAT_REF = pd.Series(RNG.choice(["a", "b", "c"], 900, p=[0.5, 0.3, 0.2]), name="c")
CAT_CUR = pd.Series(RNG.choice(["a", "b", "c"], 700, p=[0.3, 0.3, 0.4]), name="c")


def test_methods_follow_evidentlys_rules() -> None:
    assert drift.choose_method(SMALL_REF, "numeric") == "ks"
    assert drift.choose_method(BIG_REF, "numeric") == "wasserstein"
    assert drift.choose_method(CAT_REF, "categorical") == "chisquare"
    assert drift.choose_method(pd.Series(["y", "n"] * 100), "categorical") == "z"
    assert drift.choose_method(pd.Series(RNG.choice(list("abcd"), 2000)), "categorical") == "jensenshannon"
    assert drift.choose_method(pd.Series(RNG.integers(0, 4, 500).astype(float)), "numeric") == "chisquare"  # 3-5 values


def test_statistics_equal_scipy() -> None:
    row = drift.column_drift(SMALL_REF, SMALL_CUR, drift.DriftConfig())
    reference = stats.ks_2samp(SMALL_REF, SMALL_CUR)
    assert (row["statistic"], row["p_value"]) == (
        pytest.approx(reference.statistic, abs=1e-12),
        pytest.approx(reference.pvalue, rel=1e-9),
    )
    assert row["drifted"] == (reference.pvalue < 0.05)

    row = drift.column_drift(BIG_REF, BIG_CUR, drift.DriftConfig())
    assert row["statistic"] == pytest.approx(
        stats.wasserstein_distance(BIG_REF, BIG_CUR) / BIG_REF.std(ddof=0), rel=1e-12
    )

    row = drift.column_drift(CAT_REF, CAT_CUR, drift.DriftConfig())
    ref_counts, cur_counts = CAT_REF.value_counts().sort_index(), CAT_CUR.value_counts().sort_index()
    expected = stats.chisquare(cur_counts, ref_counts * len(CAT_CUR) / len(CAT_REF))
    assert (row["statistic"], row["p_value"]) == (
        pytest.approx(expected.statistic),
        pytest.approx(expected.pvalue, rel=1e-9),
    )

    many = pd.Series(RNG.choice(list("abcd"), 3000), name="d")
    shifted = pd.Series(RNG.choice(list("abcd"), 2000, p=[0.1, 0.2, 0.3, 0.4]), name="d")
    row = drift.column_drift(many, shifted, drift.DriftConfig())
    p = many.value_counts(normalize=True).sort_index().to_numpy()
    q = shifted.value_counts(normalize=True).sort_index().to_numpy()
    assert row["method"] == "jensenshannon" and row["statistic"] == pytest.approx(
        distance.jensenshannon(p, q), rel=1e-12
    )

    binary_ref, binary_cur = (
        pd.Series(["y"] * 300 + ["n"] * 500, name="b"),
        pd.Series(["y"] * 330 + ["n"] * 370, name="b"),
    )
    row = drift.column_drift(binary_ref, binary_cur, drift.DriftConfig())
    z, p_value = proportions_ztest([300, 330], [800, 700])
    assert (
        row["method"] == "z"
        and abs(row["statistic"]) == pytest.approx(abs(z))
        and row["p_value"] == pytest.approx(p_value)
    )


def test_psi_by_hand() -> None:
    reference = pd.Series(np.arange(1000, dtype=float), name="x")
    assert drift.psi(reference, reference, "numeric") == pytest.approx(0.0)
    current = pd.Series(np.r_[np.arange(0, 500, dtype=float), np.full(500, 950.0)], name="x")
    shares = np.r_[np.full(5, 0.1), np.zeros(4), 0.5]  # first five deciles as before, the rest piled into the last
    expected = sum((c - 0.1) * np.log(c / 0.1) for c in np.maximum(shares, 1e-4))
    assert drift.psi(reference, current, "numeric") == pytest.approx(expected)
    assert drift.column_drift(reference, current, drift.DriftConfig())["psi_band"] == "major"


def test_psi_counts_are_numpys_histogram() -> None:
    """PSI's bin counts (each value's bin by a binary search; the sorted reference's edges placed) are
    np.histogram's, ties on an edge, values beyond the deciles and a pile-up in one bin included."""
    reference = pd.Series(np.r_[RNG.normal(0, 1, 3000), np.repeat(0.25, 400), [np.nan]], name="x")
    current = pd.Series(np.r_[RNG.normal(0.4, 1.2, 2000), np.repeat(0.25, 100), [np.inf, -np.inf, np.nan]], name="x")
    edges = drift.psi_edges(reference)
    ref, cur = reference.dropna().to_numpy(), current.dropna().to_numpy()
    assert np.array_equal(drift.bin_counts(cur, edges), np.histogram(cur, edges)[0])
    assert np.array_equal(drift.bin_counts(ref, edges), np.histogram(ref, edges)[0])
    expected = drift.psi_of_shares(np.histogram(ref, edges)[0] / len(ref), np.histogram(cur, edges)[0] / len(cur))
    assert drift.psi(reference, current, "numeric") == expected
    assert drift.column_drift(reference, current, drift.DriftConfig())["psi"] == expected
    one_edge = drift.psi_edges(pd.Series(np.full(50, 2.0)))  # a constant reference: its deciles are one edge
    assert np.array_equal(drift.bin_counts(cur, one_edge), np.histogram(cur, one_edge)[0])


def test_demo_drift_is_found_in_the_changed_columns_only(demo_landing: LocalStore) -> None:
    all_days = days()
    reference = pd.concat([ingest.read_predictions(demo_landing, d).table for d in all_days[:7]], ignore_index=True)
    quiet = ingest.read_predictions(demo_landing, all_days[8]).table
    table = drift.dataset_drift(reference, quiet, drift.monitored_columns(quiet)).set_index("feature")
    assert not table["drifted"].any()  # a day without drift: nothing fires
    for day in all_days[-3:]:
        current = ingest.read_predictions(demo_landing, day).table
        table = drift.dataset_drift(reference, current, drift.monitored_columns(current)).set_index("feature")
        assert table.loc["__dataset__", "drifted"]
        assert table.loc[["lighting", "weather", "brightness", "predicted_label"], "drifted"].all()
        assert not table.loc[["device", "region", "blur", "speed_kmh"], "drifted"].any()
        assert table.loc["predicted_label", "unseen_rate"] > 0.02  # the new e_scooter class


def test_a_night_reads_its_reference_days_as_drawn_when_they_arrived(demo_nights) -> None:
    """The demo's 2024-06-13 compares with 2024-06-10 and -11: production_sample drew their shares on their own
    nights (seeded by the day), and the drift night read those instead of the days."""
    from dagster import AssetKey

    records = demo_nights.instance.fetch_materializations(AssetKey("production_drift"), limit=10).records
    metadata = {r.asset_materialization.partition: r.asset_materialization.metadata for r in records}
    assert metadata["2024-06-13"]["reference_days"].value == "2024-06-10, 2024-06-11"
    assert metadata["2024-06-13"]["reference_days_drawn_before"].value.startswith("2 of 2")
    per_day = drift.Reference().rows // drift.Reference().days
    for day in ("2024-06-10", "2024-06-11"):
        production = pd.read_parquet(demo_nights.warehouse / "tables" / "production_predictions" / f"{day}.parquet")
        drawn = pd.read_parquet(demo_nights.warehouse / "tables" / "production_sample" / f"{day}.parquet")
        monitored = production.drop(columns=[c for c in production.columns if c in drift.PRODUCTION_META])
        expected = drift.sample_rows(monitored, per_day, seed=drift.day_seed(day)).reset_index(drop=True)
        pd.testing.assert_frame_equal(drawn, expected)
