"""The Arrow and per-class kernels of labelops.validation against the pandas formulas they replaced."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from labelops import validation
from labelops.guidelines import load_guidelines
from labelops.storage import LocalStore
from tests.test_validation import REPO

ATTRIBUTES = [
    None,
    "",
    "{}",
    '{"occluded":"0"}',
    '{"occluded":"1"}',
    '{"occluded":"maybe"}',
    '{"occluded":""}',
    '{"occluded":0}',
    '{"occluded":1,"truncated":"2"}',
    '{"occluded":"0\\"1"}',
    '{"occluded":"abc}',
    '{"x":{"occluded":"9"},"occluded":"0"}',
    '{"area":-3.5}',
    '{"area":12,"occluded":1}',
    '{"area":1e3,"polygon_parts":2}',
    '{"area":"x"}',
    '{"area":1.2.3}',
    '{"area":-}',
    '{"area":1e400}',
    '{"closed":false}',
    '{"closed":true}',
    '{"truncated":"x"}',
    'ünïcødé {"occluded":"ü"}',
]


def texts(dtype: str) -> pd.Series:
    values = pd.Series(ATTRIBUTES * 7, dtype=object)
    return values if dtype == "object" else pa.Table.from_pandas(values.to_frame("a")).to_pandas()["a"]


@pytest.mark.parametrize("dtype", ["object", "arrow"])
def test_contains_and_area_read_like_pandas_str(dtype: str) -> None:
    attributes = texts(dtype)
    reference = attributes.astype(object).fillna("")
    arrow = validation._text(attributes)
    for literal in ('"polygon_parts"', '"closed":false'):
        assert validation._contains(arrow, literal).tolist() == reference.str.contains(literal, regex=False).tolist()
    expected = pd.to_numeric(reference.str.extract(r'"area":(-?[0-9.eE+-]+)', expand=False), errors="coerce")
    np.testing.assert_array_equal(validation._declared_area(arrow), expected.to_numpy(dtype=float))
    assert validation._declared_area(validation._text(attributes.iloc[:0])).shape == (0,)


def _attribute_rule_reference(frame: pd.DataFrame, in_taxonomy: np.ndarray) -> pd.Series:
    """The row-by-row regex reading the Arrow kernel replaced."""
    guidelines = load_guidelines(LocalStore(REPO / "config"))
    applies, passes = np.zeros(len(frame), bool), np.ones(len(frame), bool)
    attributes = frame["attributes"].astype(object).fillna("{}")
    for g in guidelines.by_version.values():
        for c in g.classes.values():
            for name, values in c.attributes.items():
                rows = ((frame["guideline_version"] == g.version) & (frame["label"] == c.name)).to_numpy() & in_taxonomy
                found = attributes[rows].str.extract('"' + name + r'":(?:"((?:[^"\\]|\\.)*)"|([^,}\]]+))')
                value = found[0].fillna(found[1])
                present = value.notna().to_numpy()
                applies[np.flatnonzero(rows)[present]] = True
                passes[np.flatnonzero(rows)[present]] &= value[present].isin(list(values)).to_numpy()
    return validation._where(applies, passes)


@pytest.mark.parametrize("dtype", ["object", "arrow"])
def test_rule_facts_per_class_match_the_row_formulas(dtype: str) -> None:
    guidelines = load_guidelines(LocalStore(REPO / "config"))
    rng = np.random.default_rng(3)
    n = len(ATTRIBUTES) * 7
    frame = pd.DataFrame(
        {
            "guideline_version": pd.Series(rng.choice(np.array(["v1", "v2", "v9", None], dtype=object), n)),
            "label": pd.Series(
                rng.choice(np.array(["car", "cyclist", "crosswalk", "urban", "", None], dtype=object), n)
            ),
            "kind": pd.Series(rng.choice(np.array(["bbox", "polygon", "classification", "cuboid"], dtype=object), n)),
            "attributes": texts(dtype).to_numpy(dtype=object),
        }
    )
    if dtype == "arrow":
        frame = pa.Table.from_pandas(frame).to_pandas()
    classes, of_row = validation._classes(frame)
    row_classes = classes.iloc[of_row].reset_index(drop=True)
    assert row_classes["version"].tolist() == frame["guideline_version"].astype(object).fillna("").tolist()
    assert row_classes["label"].tolist() == frame["label"].astype(object).fillna("").tolist()
    assert row_classes["kind"].tolist() == frame["kind"].tolist()
    key = classes["version"] + "\x1f" + classes["label"]
    taxonomy = {f"{g.version}\x1f{c}" for g in guidelines.by_version.values() for c in g.classes}
    in_taxonomy = key.isin(taxonomy).to_numpy()
    got = validation._attribute_rule(validation._text(frame["attributes"]), classes, of_row, in_taxonomy, guidelines)
    pd.testing.assert_series_equal(got, _attribute_rule_reference(frame, in_taxonomy[of_row]))
    assert got.notna().any() and (got == False).any()  # noqa: E712 - the fixture exercises both verdicts
    empty = frame.iloc[:0]
    classes, of_row = validation._classes(empty)
    assert classes.empty and len(of_row) == 0


def test_fill_image_sizes_matches_the_catalog_map() -> None:
    frame = pa.Table.from_pandas(
        pd.DataFrame(
            {
                "item_id": ["a", "b", "c", "a", "z", "b"],
                "image_width": [10.0, np.nan, np.nan, np.nan, np.nan, 5.0],
                "image_height": [np.nan, 7.0, np.nan, np.nan, np.nan, np.nan],
            }
        )
    ).to_pandas()
    items = pd.DataFrame(
        {"item_id": ["a", "b", "c", "b"], "width": [1.0, 2.0, np.nan, 4.0], "height": [11.0, 12, 13, 14]}
    )
    sizes = items.drop_duplicates("item_id", keep="last").set_index("item_id")[["width", "height"]]
    expected = frame.assign(
        image_width=frame["image_width"].fillna(frame["item_id"].map(sizes["width"])),
        image_height=frame["image_height"].fillna(frame["item_id"].map(sizes["height"])),
    )
    pd.testing.assert_frame_equal(validation.fill_image_sizes(frame, items), expected)
    assert validation.fill_image_sizes(frame, items.iloc[:0]) is frame


def test_validation_frame_leaves_its_input_alone() -> None:
    """The steps share the input's columns instead of copying them; a remapped label must not leak back."""
    from datetime import UTC, datetime

    from labelops.schema import ANNOTATION_SCHEMA, conform
    from tests.test_validation import DAY, row

    rows = [row(1, guideline_version="v1", label="traffic_light"), row(2, image_width=np.nan), row(3)]
    annotations = pa.Table.from_pandas(conform(pd.DataFrame(rows), ANNOTATION_SCHEMA)).to_pandas()
    before = annotations.copy()
    items = pd.DataFrame({"item_id": ["img-0"], "width": [640.0], "height": [480.0]})
    guidelines = load_guidelines(LocalStore(REPO / "config"))
    frame = validation.validation_frame(annotations, items, guidelines, DAY, datetime(2024, 6, 14, tzinfo=UTC))
    assert frame["remapped_from"].notna().sum() == 1 and frame["image_width"].notna().all()
    pd.testing.assert_frame_equal(annotations, before)
