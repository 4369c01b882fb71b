"""The suites on every real export: they pass, except for four rows that are real errors in the sources."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pandas as pd
import yaml

from labelops import validation
from labelops.expectations import load_suites, run_suites
from labelops.formats import parse_file
from labelops.guidelines import GuidelineSet, parse_guideline
from labelops.ingest import canonical_annotations
from labelops.storage import LocalStore

REPO = Path(__file__).resolve().parents[1]
COCO = "faster_coco_eval/tests/dataset/cocoapi/instances_val2014_100.json"
LS_CSV = "label-studio-converter/tests/data/test_export_csv/csv_test.json"
CVAT_TASK = "datumaro/tests/assets/cvat_dataset/for_images/export_task/train.xml"
FILES = [
    COCO,
    "datumaro/tests/assets/coco_dataset/coco_instances/annotations/instances_val.json",
    "label-studio-converter/tests/data/test_export_yolo/data.json",
    "label-studio-converter/tests/data/test_export_yolo/data_obb.json",
    "label-studio-converter/tests/data/test_export_yolo/data_polygons.json",
    LS_CSV,
    CVAT_TASK,
    "datumaro/tests/assets/cvat_dataset/for_images/export_project/annotations.xml",
    "bayesian_combination_tutorial2/all_collected_data/rte.standardized.tsv",
    "Get-Another-Label/data/AdultContent2/labels.txt",
]
# The real errors the suites find, as (source file, label, rule):
EXPECTED = {
    (COCO, "elephant", "polygon_simple"),  # COCO annotation 1 of 830 polygons whose outline crosses itself
    (COCO, "hot dog", "polygon_simple"),
    (
        LS_CSV,
        "Car",
        "box_inside_image",
    ),  # an accepted model pre-annotation at x=92.93 %, width 7.5 %: 3.3 px past the edge
    (CVAT_TASK, None, "label_in_taxonomy; label_present"),  # a polygon saved with an empty label
}


def test_real_exports_pass_the_suites_except_real_errors(real: Path) -> None:
    frame = pd.concat(
        [canonical_annotations(parse_file(f, (real / f).read_bytes()), f, date(2024, 6, 1)) for f in FILES],
        ignore_index=True,
    )
    # Each tool's own class list is the taxonomy; every geometry allowed, no minimum size.
    labels = sorted(label for label in frame["label"].dropna().unique())
    guideline = {
        "version": "real",
        "effective_from": "2000-01-01",
        "min_box_size": {"w": 0, "h": 0},
        "classes": [{"name": label, "geometry": ["classification", "bbox", "polygon"]} for label in labels],
    }
    guidelines = GuidelineSet([parse_guideline("real.yaml", yaml.safe_dump(guideline))])

    checked = validation.validation_frame(
        frame, pd.DataFrame(), guidelines, "2024-06-01", datetime(2024, 6, 2, tzinfo=UTC)
    )
    outcome = run_suites(checked, load_suites(LocalStore(REPO / "expectations")), asset_name="real_exports")
    validated, quarantined = validation.split_validated(checked, outcome.failures)

    found = {
        (f, None if pd.isna(label) else label, rule)
        for f, label, rule in quarantined[["source_file", "label", "rule"]].itertuples(index=False)
    }
    assert found == EXPECTED
    assert len(validated) == len(frame) - len(EXPECTED) == 101_601
    assert outcome.failed("critical").empty and outcome.failed("warning").empty
