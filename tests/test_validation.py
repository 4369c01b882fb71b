"""Validation on a bad-input corpus: every rule quarantines its row with the right reason, nothing is lost."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from labelops import validation
from labelops.expectations import load_suites, run_suites, suite_batch
from labelops.guidelines import load_guidelines
from labelops.schema import ANNOTATION_SCHEMA, conform
from labelops.storage import LocalStore

REPO = Path(__file__).resolve().parents[1]
DAY = "2024-06-13"  # guideline v2 is in force
NOW = datetime(2024, 6, 14, tzinfo=UTC)


def row(n: int, **overrides) -> dict:
    base = {
        "annotation_id": f"id-{n:05d}",
        "item_id": f"img-{n // 3}",
        "annotator_id": f"ann{n % 4}",
        "kind": "bbox",
        "label": "car",
        "x": 100.0,
        "y": 100.0,
        "w": 50.0,
        "h": 40.0,
        "points": None,
        "image_width": 1920.0,
        "image_height": 1080.0,
        "attributes": '{"occluded":"0"}',
        "annotated_at": pd.Timestamp("2024-06-13T10:00:00Z"),
        "guideline_version": None,
        "source_format": "table",
        "source_file": "exports/2024-06-13/x.csv",
        "source_ref": f"line={n}",
        "export_date": date(2024, 6, 13),
    }
    return {**base, **overrides}


def polygon(points: list[float]) -> dict:
    xs, ys = points[0::2], points[1::2]
    return {
        "kind": "polygon",
        "label": "crosswalk",
        "points": points,
        "x": min(xs),
        "y": min(ys),
        "w": max(xs) - min(xs),
        "h": max(ys) - min(ys),
        "attributes": "{}",
    }


BAD = {  # annotation_id -> (overrides, the rule that must quarantine it)
    "bad-version": ({"guideline_version": "v9"}, "guideline_known"),
    "bad-taxonomy": ({"label": "spaceship"}, "label_in_taxonomy"),
    "bad-geometry": ({"label": "crosswalk", "attributes": "{}"}, "geometry_allowed"),
    "bad-size": ({"w": 0.0}, "box_positive"),
    "bad-nan": ({"x": float("nan")}, "box_positive"),
    "bad-inf": ({"w": float("inf")}, "box_positive"),
    "bad-negative": ({"x": -5.0}, "box_inside_image"),
    "bad-outside": ({"x": 1900.0, "w": 100.0}, "box_inside_image"),
    "bad-points": (polygon([10, 10, 50, 60]), "polygon_min_points"),
    "bad-open": ({**polygon([10, 10, 90, 10, 90, 50, 10, 50]), "attributes": '{"closed":false}'}, "polygon_closed"),
    "bad-bowtie": (polygon([0, 0, 10, 10, 10, 0, 0, 10]), "polygon_simple"),
    "bad-future": ({"annotated_at": pd.Timestamp("2030-01-01T00:00:00Z")}, "not_in_future"),
    "bad-nolabel": ({"label": None}, "label_present"),
    "bad-kind": ({"kind": "cuboid"}, "kind_known"),
}
WARN = {
    "warn-relabel": ({"guideline_version": "v1", "label": "cyclist"}, "needs_relabel: made under an older guideline"),
    "warn-tiny": ({"w": 2.0, "h": 2.0}, "box is smaller than the guideline's minimum size"),
    "warn-attribute": ({"attributes": '{"occluded":"maybe"}'}, "an attribute value is not one of the values"),
}


@pytest.fixture(scope="module")
def corpus() -> pd.DataFrame:
    good = [row(n) for n in range(150)]
    good += [row(n, **polygon([10, 10, 90, 10, 95, 50, 5, 50])) for n in range(150, 200)]
    good += [
        row(n, kind="classification", label="urban", x=np.nan, y=np.nan, w=np.nan, h=np.nan, attributes="{}")
        for n in range(200, 260)
    ]
    good.append(row(260, guideline_version="v1", label="traffic_light"))  # renamed by v2: remapped, not quarantined
    bad = [
        row(1000 + i, annotation_id=key, **overrides) for i, (key, (overrides, _)) in enumerate({**BAD, **WARN}.items())
    ]
    duplicate = row(2000, annotation_id="id-00007", label="truck")  # same id as an earlier valid row
    return conform(pd.DataFrame(good + bad + [duplicate]), ANNOTATION_SCHEMA)


@pytest.fixture(scope="module")
def validated(corpus: pd.DataFrame):
    guidelines = load_guidelines(LocalStore(REPO / "config"))
    frame = validation.validation_frame(corpus, pd.DataFrame(), guidelines, DAY, NOW)
    outcome = run_suites(frame, load_suites(LocalStore(REPO / "expectations")), asset_name="annotations")
    return (*validation.split_validated(frame, outcome.failures), outcome)


def test_every_rule_quarantines_its_row(validated) -> None:
    _, quarantined, _ = validated
    by_id = quarantined.set_index("annotation_id")
    for key, (_, rule) in BAD.items():
        assert key in by_id.index, f"{key} was not quarantined"
        assert rule in by_id.loc[key, "rule"].split("; "), (key, by_id.loc[key, "rule"])


def test_a_split_label_is_kept_and_marked_not_quarantined(validated) -> None:
    """Publishing a guideline never quarantines a label that was valid when it was made."""
    ok, _, _ = validated
    split = ok.set_index("annotation_id").loc["warn-relabel"]
    assert (split["label"], split["needs_relabel"], split["guideline_version"]) == (
        "cyclist",
        "v2: split of 'cyclist'",
        "v1",
    )


def test_nothing_is_lost_and_good_rows_are_untouched(corpus: pd.DataFrame, validated) -> None:
    ok, quarantined, _ = validated
    assert len(ok) + len(quarantined) == len(corpus)
    assert set(quarantined["annotation_id"]) == set(BAD) | {"id-00007"}  # the repeat of an earlier id
    assert (ok["annotation_id"] == "id-00007").sum() == 1 and quarantined["rule"].str.contains(
        "annotation_id_unique"
    ).sum() == 1
    good = (
        corpus[corpus["annotation_id"].str.startswith("id-")]
        .drop_duplicates("annotation_id")
        .set_index("annotation_id")
    )
    kept = ok.set_index("annotation_id").loc[good.index]
    for column in ("item_id", "annotator_id", "kind", "x", "y", "w", "h", "attributes", "source_ref"):
        pd.testing.assert_series_equal(kept[column], good[column], check_names=False)


def test_renamed_label_is_remapped(validated) -> None:
    ok, _, _ = validated
    remapped = ok.set_index("annotation_id").loc["id-00260"]
    assert (remapped["label"], remapped["remapped_from"], remapped["guideline_version"]) == (
        "traffic_signal",
        "v1:traffic_light",
        "v2",
    )


def test_warnings_travel_with_validated_rows(validated) -> None:
    ok, _, outcome = validated
    by_id = ok.set_index("annotation_id")
    for key, (_, reason) in WARN.items():
        assert reason in by_id.loc[key, "validation_warnings"]
    assert by_id["validation_warnings"].notna().sum() == len(WARN)
    # one bad row in ~280 is inside every critical rule's tolerance, but the warnings' 1 % is exceeded by nothing
    assert outcome.failed("critical").empty
    assert set(outcome.expectations.query("severity == 'warning'")["rule"]) == {
        "box_min_size",
        "attributes_valid",
        "needs_relabel",
    }
    assert outcome.docs["index.html"].startswith(b"<!DOCTYPE html>") or b"<html" in outcome.docs["index.html"][:500]
    # Data Docs hold each suite's page and its validation's, and the index links both validations
    for suite in set(outcome.expectations["suite"]):
        assert f"expectations/{suite}.html" in outcome.docs
        page = [k for k in outcome.docs if k.startswith(f"validations/{suite}/") and k.endswith(".html")]
        assert len(page) == 1 and page[0].encode() in outcome.docs["index.html"]


def test_polygon_facts_match_shapely_on_real_coco(real: Path) -> None:
    import shapely

    from labelops.formats import parse_file

    objects = parse_file(
        "coco.json", (real / "faster_coco_eval/tests/dataset/cocoapi/instances_val2014_100.json").read_bytes()
    ).objects
    polygons = objects[objects["kind"] == "polygon"].reset_index(drop=True)
    n_points, simple, bounds = validation._polygon_facts(polygons["points"], np.ones(len(polygons), bool))
    expected = [shapely.LinearRing(np.asarray(p).reshape(-1, 2)).is_simple for p in polygons["points"]]
    assert list(simple) == expected
    assert bounds.tolist() == [
        list(shapely.LinearRing(np.asarray(p).reshape(-1, 2)).bounds) for p in polygons["points"]
    ]
    assert list(n_points) == [len(p) // 2 for p in polygons["points"]]


def test_schema_suite_lists_every_rule_column() -> None:
    """A rule computed in labelops must be declared in the schema suite, or the schema check fails."""
    suite = next(s for s in load_suites(LocalStore(REPO / "expectations")) if s["name"] == "annotations_schema")
    columns = next(e for e in suite["expectations"] if e["type"] == "expect_table_columns_to_match_set")["kwargs"][
        "column_set"
    ]
    assert columns == [*ANNOTATION_SCHEMA.names, "remapped_from", "needs_relabel", *validation.RULE_COLUMNS]


def test_a_suite_on_the_columns_it_names_says_what_it_says_on_the_whole_frame(corpus: pd.DataFrame) -> None:
    """run_suites hands each suite only the columns it names (suite_batch); GX must find the same on the whole
    frame: counts, percentages, examples and failing rows."""
    guidelines = load_guidelines(LocalStore(REPO / "config"))
    frame = validation.validation_frame(corpus, pd.DataFrame(), guidelines, DAY, NOW)
    suites = load_suites(LocalStore(REPO / "expectations"))
    rules = next(s for s in suites if s["name"] == "annotations_rules")
    schema = next(s for s in suites if s["name"] == "annotations_schema")
    assert list(suite_batch(frame, rules).columns) == [e["kwargs"]["column"] for e in rules["expectations"]]
    assert suite_batch(frame, schema) is frame  # a table-level expectation: the whole table
    with_condition = {
        **rules,
        "expectations": [{**rules["expectations"][0], "kwargs": {"column": "x", "row_condition": "y>0"}}],
    }
    assert suite_batch(frame, with_condition) is frame
    missing = {**rules, "expectations": [{**rules["expectations"][0], "kwargs": {"column": "no_such_column"}}]}
    assert suite_batch(frame, missing).columns.empty  # left for GX to report
    narrowed = run_suites(frame, [rules], asset_name="annotations")
    whole = run_suites(
        frame,
        [{**rules, "expectations": [*rules["expectations"], schema["expectations"][0]]}],
        asset_name="annotations",
    )
    pd.testing.assert_frame_equal(narrowed.expectations, whole.expectations.iloc[:-1])
    pd.testing.assert_frame_equal(narrowed.failures, whole.failures)
    assert not narrowed.failures.empty


def test_a_stamp_after_its_delivery_day_fails_in_a_backfill_too() -> None:
    """A judgment in 2024-06-13's folder stamped 2024-06-15 10:00 was not made by the time it was delivered: a
    backfill run years later fails it as the night itself would have (the run's clock alone would let it pass, and
    the stamp would choose a guideline not yet in force). One stamped late on the next day (UTC) passes: a
    vendor whose own day is up to 14 hours behind delivers into the folder of its date."""
    rows = [
        row(1, annotation_id="behind", annotated_at=pd.Timestamp("2024-06-14T23:30:00Z")),
        row(2, annotation_id="after", annotated_at=pd.Timestamp("2024-06-15T10:00:00Z")),
    ]
    guidelines = load_guidelines(LocalStore(REPO / "config"))
    years_later = datetime(2026, 12, 1, tzinfo=UTC)
    frame = validation.validation_frame(
        conform(pd.DataFrame(rows), ANNOTATION_SCHEMA), pd.DataFrame(), guidelines, DAY, years_later
    )
    assert frame.set_index("annotation_id")["not_in_future"].astype(bool).to_dict() == {"behind": True, "after": False}
