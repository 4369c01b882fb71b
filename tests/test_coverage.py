"""Coverage and risk: exact cells on a constructed dataset, the critical-class traps, the demo's drift days."""

from __future__ import annotations

import base64
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.proportion import proportion_confint

from labelops import coverage
from labelops import warehouse as paths
from labelops.guidelines import load_guidelines
from labelops.storage import LocalStore

REPO = Path(__file__).resolve().parents[1]
GUIDELINE = load_guidelines(LocalStore(REPO / "config")).in_force("2024-06-01")


def spec(text: str | None = None) -> coverage.CoverageSpec:
    store = LocalStore(REPO / "config") if text is None else _store(text)
    return coverage.load_coverage_spec(store, GUIDELINE)


def _store(text: str) -> LocalStore:
    import tempfile

    root = Path(tempfile.mkdtemp())
    (root / "coverage.yaml").write_text(text)
    return LocalStore(root)


def test_cells_shares_and_gaps_are_exact() -> None:
    s = spec()
    items = pd.DataFrame(
        {
            "item_id": ["a", "b", "c", "d"],
            "lighting": ["day", "day", "night", "night"],
            "weather": ["clear"] * 4,
            "device": ["cam_a"] * 4,
            "region": ["eu"] * 4,
        }
    )
    labeled = pd.DataFrame(
        {
            "item_id": ["a", "a", "b", "c"],
            "label": ["car", "pedestrian", "car", "car"],
            "x": 0.0,
            "y": 0.0,
            "w": [10.0, 40.0, 100.0, 50.0],
            "h": [10.0, 40.0, 100.0, 50.0],
        }
    )
    production = pd.DataFrame(
        {
            "item_id": [f"p{i}" for i in range(10)],
            "label": ["car"] * 6 + ["pedestrian"] * 4,
            "lighting": ["day"] * 2 + ["night"] * 8,
            "weather": ["clear"] * 10,
            "device": ["cam_a"] * 9 + ["cam_z"],
            "region": ["eu"] * 10,
        }
    )
    report = coverage.coverage_report(
        coverage.slice_values(labeled, items, s), coverage.slice_values(production, pd.DataFrame({"item_id": []}), s), s
    )
    cell = report.set_index(["label", "dimension", "value"])
    assert cell.loc[("car", "lighting", "day"), "labeled_count"] == 2
    assert cell.loc[("car", "lighting", "day"), "training_share"] == pytest.approx(2 / 4)
    assert cell.loc[("car", "lighting", "night"), "production_count"] == 4  # p2..p5 are night cars
    assert cell.loc[("car", "lighting", "night"), "production_share"] == pytest.approx(4 / 10)
    assert cell.loc[("car", "lighting", "night"), "underrepresentation"] == pytest.approx((4 / 10) / (1 / 4))
    assert cell.loc[("pedestrian", "lighting", "night"), "min_required"] == 40  # the spec's override
    assert cell.loc[("pedestrian", "lighting", "night"), "gap"] == 40
    assert bool(cell.loc[("pedestrian", "lighting", "night"), "unseen_in_training"])
    assert cell.loc[("car", "lighting", "day"), "gap"] == 18  # default minimum 20
    assert cell.loc[("*", "device", "cam_z"), "unseen_in_training"]  # a new device
    sizes = cell.xs("box_size", level="dimension")["labeled_count"]
    assert (sizes.loc[("car", "small")], sizes.loc[("pedestrian", "medium")], sizes.loc[("car", "large")]) == (1, 1, 1)
    assert report["underrepresentation"].iloc[0] == np.inf  # unseen cells rank first
    missing = coverage.missing_critical_cells(report, s)
    assert set(missing["label"]) == {"pedestrian", "cyclist"}
    assert missing.set_index(["label", "dimension", "value"]).loc[("cyclist", "lighting", "night"), "gap"] == 30


def scored(true: list[str], predicted: list[str]) -> pd.DataFrame:
    pairs = pd.DataFrame({"item_id": [f"i{n}" for n in range(len(true))], "true": true, "predicted": predicted})
    items = pd.DataFrame({"item_id": pairs["item_id"], "lighting": "day"})
    return coverage.risk_report(pairs, items, spec())


def test_accurate_model_that_misses_a_critical_class_fails() -> None:
    report = scored(["car"] * 990 + ["pedestrian"] * 10, ["car"] * 990 + ["background"] * 10)
    overall = report[report["scope"] == "overall"].set_index("label")
    assert overall.loc["*", "recall"] == pytest.approx(0.99)
    assert set(coverage.failing_critical_recall(report, spec())["label"]) == {
        "pedestrian",
        "cyclist",
    }  # cyclist: never seen
    assert overall.loc["pedestrian", "cost_per_object"] == 25  # the spec's cost of missing a pedestrian


def test_a_day_without_labeled_objects_fails_no_class() -> None:
    """A day of scene labels only: nothing was scored, so no critical class failed (nor passed: metadata
    `objects_scored` is 0); a day that scored objects still fails a critical class it never saw."""
    assert coverage.failing_critical_recall(scored([], []), spec()).empty
    assert list(coverage.failing_critical_recall(scored(["car"], ["car"]), spec())["label"]) == [
        "cyclist",
        "pedestrian",
    ]


def test_less_accurate_model_with_errors_on_minor_classes_passes() -> None:
    true = ["car"] * 600 + ["truck"] * 200 + ["pedestrian"] * 120 + ["cyclist"] * 80
    predicted = ["car"] * 450 + ["truck"] * 150 + ["car"] * 120 + ["bus"] * 80 + ["pedestrian"] * 120 + ["cyclist"] * 80
    report = scored(true, predicted)
    overall = report[report["scope"] == "overall"].set_index("label")
    assert overall.loc["*", "recall"] < 0.8
    assert coverage.failing_critical_recall(report, spec()).empty


def test_three_for_three_is_not_safe() -> None:
    report = scored(["pedestrian"] * 3 + ["cyclist"] * 200, ["pedestrian"] * 3 + ["cyclist"] * 200)
    failing = coverage.failing_critical_recall(report, spec()).set_index("label")
    assert "pedestrian" in failing.index and failing.loc["pedestrian", "recall_ci_low"] < 0.5


def test_wilson_interval_matches_statsmodels() -> None:
    successes, trials = np.array([0, 3, 17, 95, 400]), np.array([3, 3, 20, 100, 401])
    low, high = coverage.wilson_interval(successes, trials)
    ref_low, ref_high = proportion_confint(successes, trials, alpha=0.05, method="wilson")
    np.testing.assert_allclose(low, ref_low, atol=1e-12)
    np.testing.assert_allclose(high, ref_high, atol=1e-12)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("dimensions: {lighting: {}}\ncritical_classes: [unicorn]\n", "critical_classes names class 'unicorn'"),
        ("dimensions: {lighting: {}}\nrequired_slices: [altitude]\n", "names dimension 'altitude'"),
        (
            "dimensions: {lighting: {}}\nminimum: {overrides: [{class: car, dimension: moon, value: x, min: 3}]}\n",
            "dimension 'moon'",
        ),
        ("dimensions: {shape: {source: derived}}\n", "unknown derived dimension 'shape'"),
        ("dimensions: !!python/object/apply:os.system [echo]\n", "not valid YAML for the safe loader"),
    ],
)
def test_bad_specs_are_clear_errors(text: str, message: str) -> None:
    with pytest.raises(coverage.CoverageSpecError, match=message):
        spec(text)


def test_demo_night_and_rain_become_under_covered_on_the_drift_days(demo_nights) -> None:
    warehouse = demo_nights.warehouse  # the session's nightly runs of 2024-06-10, -11 and -13
    ratios = {}
    for day in ("2024-06-10", "2024-06-13"):  # before the drift, and its second day
        report = pd.read_parquet(warehouse / "tables" / "coverage_report" / f"{day}.parquet").set_index(
            ["label", "dimension", "value"]
        )
        ratios[day] = {
            v: report.loc[("*", d, v), "underrepresentation"] for d, v in (("lighting", "night"), ("weather", "rain"))
        }
        risk = pd.read_parquet(warehouse / "tables" / "risk_report" / f"{day}.parquet")
        assert {"cyclist", "pedestrian"} <= set(risk.loc[risk["critical"], "label"])
    assert ratios["2024-06-10"]["night"] < 1.5 and ratios["2024-06-10"]["rain"] < 1.5
    assert ratios["2024-06-13"]["night"] > 2 and ratios["2024-06-13"]["rain"] > 1.8
    unseen = report[report["unseen_in_training"]].reset_index()
    assert "e_scooter" in set(unseen["label"])  # the new object type production started to predict
    heatmap = (warehouse / "reports" / "coverage" / "2024-06-13" / "heatmap.png").read_bytes()
    assert heatmap[:4] == b"\x89PNG"
    # the quality report shows the heatmap coverage_report drew, not one of its own
    assert base64.b64encode(heatmap).decode() in (warehouse / paths.quality_report("2024-06-13")).read_text()


def _cell_counts(frame: pd.DataFrame, keys: list[str], rows: str | None = None) -> list[tuple]:
    """Rows per combination of ``keys`` as texts ("\\x00" where missing), sorted: how the report reads a cell."""
    texts = frame[keys].astype(object).where(frame[keys].notna(), None).map(lambda v: None if v is None else str(v))
    counts = frame[rows] if rows else pd.Series(1, index=frame.index)
    grouped = counts.groupby([texts[k].fillna("\x00") for k in keys]).sum()
    return sorted((*key, int(n)) if isinstance(key, tuple) else (key, int(n)) for key, n in grouped.items())


def _values(column: pd.Series) -> list[object]:
    return column.astype(object).where(column.notna(), None).tolist()


@pytest.mark.parametrize("seed", range(40))
def test_labeled_cells_count_what_slice_values_gives(seed: int) -> None:
    """The report counts a state's objects per cell without slicing a copy of them: the same cells and counts as
    pandas' groupby over slice_values of the same rows, with objects of items the table lacks or holds twice (its
    last row wins), missing values, an integer column (floats once an item is missing, as a take reads it), a
    dimension no table has, boxes without a size, and a subset of the rows."""
    rng = np.random.default_rng(seed)
    s = spec()
    n_items, n = int(rng.integers(1, 30)), int(rng.integers(0, 60))
    items = pd.DataFrame(
        {
            "item_id": [f"i{k}" for k in rng.integers(0, n_items + 3, n_items)],  # some ids twice
            "lighting": pd.Series(rng.choice(["day", "night", None], n_items), dtype=object),
            "weather": pd.Series(rng.choice(["rain", "clear", None], n_items), dtype="str"),
            "device": rng.integers(0, 3, n_items),
        }
    )
    objects = pd.DataFrame(
        {
            "item_id": [f"i{k}" for k in rng.integers(0, n_items + 6, n)],  # some not in the table
            "label": pd.Series(rng.choice(["car", "bus", None], n), dtype="str" if seed % 2 else object),
            "x": 0.0,
            "y": 0.0,
            "w": np.where(rng.random(n) < 0.1, np.nan, rng.uniform(1, 200, n)),
            "h": rng.uniform(1, 200, n),
        }
    )
    rows = np.flatnonzero(rng.random(n) < 0.8)
    keys = ["label", *s.dimensions]
    cells = coverage.labeled_cells(objects, items, s, rows)
    sliced = coverage.slice_values(objects.iloc[rows], items, s)
    merged = objects.iloc[rows].merge(items.drop_duplicates("item_id", keep="last"), on="item_id", how="left")
    for name in ("lighting", "weather", "device"):  # the item columns as pandas' join gives them
        assert _values(sliced[name]) == _values(merged[name])
    assert _cell_counts(cells, keys, coverage.ROWS) == _cell_counts(sliced, keys)
    report = coverage.coverage_report(cells, coverage.labeled_cells(objects.iloc[:0], items, s), s, counted=True)
    for dimension in s.dimensions:
        present = sliced.dropna(subset=["label", dimension])
        expected = _cell_counts(present, ["label", dimension])
        got = report[(report["dimension"] == dimension) & (report["label"] != coverage.ALL)]
        assert _cell_counts(got.loc[got.index.repeat(got["labeled_count"])], ["label", "value"]) == expected
    assert (report["training_share"] * max(len(rows), 1)).round(6).isin(report["labeled_count"]).all()


def test_labeled_cells_with_more_combinations_than_64_bits() -> None:
    """Seven slice columns of 700 values each make more combinations than an integer numbers: the cells are
    grouped by pandas then, with the same counts."""
    s = spec("dimensions:\n" + "".join(f"  d{k}: {{source: item}}\n" for k in range(7)))
    rng = np.random.default_rng(0)
    items = pd.DataFrame(
        {"item_id": [f"i{k}" for k in range(700)], **{f"d{k}": rng.permutation(700) for k in range(7)}}
    )
    objects = pd.DataFrame({"item_id": rng.choice(items["item_id"], 2000), "label": rng.choice(["car", "bus"], 2000)})
    keys = ["label", *s.dimensions]
    cells = coverage.labeled_cells(objects, items, s)
    assert _cell_counts(cells, keys, coverage.ROWS) == _cell_counts(coverage.slice_values(objects, items, s), keys)
