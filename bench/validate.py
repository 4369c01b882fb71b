"""Validation of one partition: guideline remap, rule facts, both GX suites with Data Docs, quarantine split.

`python -m bench.validate --rows 100000`: a demo-like partition (boxes, polygons and
scene classes under guideline v2, 1 % bad rows, 5 % labels from v1) validated the way
`validated_annotations` does it, timed per stage.
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from labelops import validation
from labelops.expectations import load_suites, run_suites
from labelops.guidelines import load_guidelines
from labelops.schema import ANNOTATION_SCHEMA, conform
from labelops.storage import LocalStore

REPO = Path(__file__).resolve().parents[1]
BOXES = ["car", "truck", "bus", "pedestrian", "cyclist", "traffic_signal"]


def partition(rows: int, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    kind = rng.choice(["bbox", "polygon", "classification"], rows, p=[0.7, 0.1, 0.2])
    label = np.where(
        kind == "bbox",
        rng.choice(BOXES, rows),
        np.where(kind == "polygon", "crosswalk", rng.choice(["urban", "highway"], rows)),
    )
    x, y = rng.uniform(0, 1500, rows), rng.uniform(0, 800, rows)
    w, h = rng.uniform(5, 300, rows), rng.uniform(6, 200, rows)
    w[rng.random(rows) < 0.01] = -1.0  # 1 % broken boxes
    square = np.stack([x, y, x + w, y, x + w, y + h, x, y + h], axis=1)
    points = pd.Series([None] * rows, dtype=object)
    points[kind == "polygon"] = pd.Series(list(square[kind == "polygon"]), index=np.flatnonzero(kind == "polygon"))
    geometry = kind != "classification"
    v1 = rng.random(rows) < 0.05
    frame = pd.DataFrame(
        {
            "annotation_id": np.char.mod("%016x", np.arange(rows)),
            "item_id": np.char.mod("img-%d", np.arange(rows) // 5),
            "annotator_id": np.char.mod("ann%d", rng.integers(0, 100, rows)),
            "kind": kind,
            "label": np.where(v1 & (label == "traffic_signal"), "traffic_light", label),
            "x": np.where(geometry, x, np.nan),
            "y": np.where(geometry, y, np.nan),
            "w": np.where(geometry, w, np.nan),
            "h": np.where(geometry, h, np.nan),
            "points": points,
            "image_width": 1920.0,
            "image_height": 1080.0,
            "attributes": '{"occluded":"0"}',
            "annotated_at": pd.Timestamp("2024-06-13T10:00:00Z"),
            "guideline_version": np.where(v1, "v1", None),
            "source_format": "table",
            "source_file": "exports/2024-06-13/bench.csv",
            "source_ref": np.char.mod("line=%d", np.arange(rows)),
            "export_date": date(2024, 6, 13),
        }
    )
    return conform(frame, ANNOTATION_SCHEMA)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    frame = partition(args.rows)
    guidelines = load_guidelines(LocalStore(REPO / "config"))
    suites = load_suites(LocalStore(REPO / "expectations"))
    start = time.perf_counter()
    import great_expectations  # noqa: F401  (imported once per process; timed apart)

    imported = time.perf_counter()
    checked = validation.validation_frame(frame, pd.DataFrame(), guidelines, "2024-06-13", datetime.now(UTC))
    facts = time.perf_counter()
    outcome = run_suites(checked, suites, asset_name="bench")
    suites_done = time.perf_counter()
    validated, quarantined = validation.split_validated(checked, outcome.failures)
    end = time.perf_counter()
    print(f"rows: {args.rows:,}  validated: {len(validated):,}  quarantined: {len(quarantined):,}")
    print(f"great_expectations import: {imported - start:.2f} s (once per process)")
    print(f"remap + rule facts:        {facts - imported:.2f} s")
    print(f"GX suites + Data Docs:     {suites_done - facts:.2f} s ({len(outcome.expectations)} expectations)")
    print(f"quarantine split:          {end - suites_done:.2f} s")
    print(f"total without the import:  {end - imported:.2f} s")


if __name__ == "__main__":
    main()
