"""Coverage and risk: the slices and rare, critical errors that overall accuracy hides.

`coverage_report` compares the labeled data — the current label state's consensus objects and
scene labels of the items delivered within the last LOOKBACK_DAYS days, with their slices from the
item index — with the spec's minimums and with the day's production traffic. `risk_report` scores the production model's detections on the day's
labeled items against gold boxes where they exist and consensus boxes elsewhere.
"""

import numpy as np
import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetIn,
    MetadataValue,
    Output,
    TimeWindowPartitionMapping,
)

from assets.metadata import guideline_entry, link, table_metadata
from assets.partitioned import Frames, for_day
from assets.partitions import daily_asset
from labelops import coverage, state, warehouse
from labelops.guidelines import labels_under, predictions_under
from labelops.plots import coverage_heatmap
from labelops.reporting import markdown_table
from resources.storage import StorageResource
from resources.validation import GuidelinesResource

GROUP = "coverage"
KINDS = {"python", "pandas", "parquet"}
LOOKBACK_DAYS = 365
# What coverage reads of the label state: the labels, and the days that date them.
LABEL_COLUMNS = ["item_id", "label", "x", "y", "w", "h", "days"]
LOOKBACK = TimeWindowPartitionMapping(
    start_offset=-(LOOKBACK_DAYS - 1), end_offset=0, allow_nonexistent_upstream_partitions=True
)


def _production_day(production_predictions: Frames, day: str) -> Frames:
    if day not in production_predictions:
        raise LookupError(
            f"production_predictions has not been materialized for {day}; materialize it for that day first"
        )
    return production_predictions


def _severity(blocking: bool) -> AssetCheckSeverity:
    return AssetCheckSeverity.ERROR if blocking else AssetCheckSeverity.WARN


@daily_asset(
    GROUP,
    kinds=KINDS,
    ins={
        "label_state": AssetIn(),
        "item_index": AssetIn(),
        "production_predictions": AssetIn(),
    },
    check_specs=[
        AssetCheckSpec(
            "critical_classes_covered",
            asset="coverage_report",
            description="Every critical class reaches its minimum labeled count in every value of the "
            "spec's required slices (config/coverage.yaml). Warning unless the spec says blocking.",
        )
    ],
    description=f"Labeled objects per class x slice value (and per slice value alone, class '*') in the current "
    f"label state (items delivered within the last {LOOKBACK_DAYS} days, each counted once), against the spec's minimum and the day's production traffic: counts, shares, gap and "
    "under-representation (production share / training share). Cells production reaches but training barely "
    "covers come first; values and classes production shows but training never saw are flagged.",
)
def coverage_report(
    context: AssetExecutionContext,
    storage: StorageResource,
    guidelines: GuidelinesResource,
    label_state: Frames,
    item_index: Frames,
    production_predictions: Frames,
):
    day = context.partition_key
    since = (pd.Timestamp(day) - pd.Timedelta(days=LOOKBACK_DAYS - 1)).date().isoformat()
    labels = for_day(label_state.select(keep=LABEL_COLUMNS), day, "label_state")
    guideline_set = guidelines.load()
    current = guideline_set.in_force(day)
    spec = guidelines.coverage_spec(current)
    # of the item index, the ids and the slice columns the spec takes from items
    item_catalog = for_day(item_index.select(keep=coverage.item_columns(spec)), day, "item_index")
    current_rows = np.flatnonzero(state.current_rows(labels, since=since))
    labeled = coverage.labeled_cells(labels, item_catalog, spec, current_rows)
    # production grows with traffic: the day is counted per class and slice part by part, never held whole
    production_day = _production_day(production_predictions, day)
    predictions = production_day.select(keep=["item_id", "predicted_label", "x", "y", "w", "h", *spec.dimensions])
    production = coverage.production_cells(
        (
            # the state is read under the day's guideline already; the model still names classes as it was trained
            predictions_under(part, guideline_set, current.version).rename(columns={"predicted_label": "label"})
            for part in predictions.batches(day, storage.batch_rows)
        ),
        spec,
    )
    report = coverage.coverage_report(labeled, production, spec, counted=True)
    missing = coverage.missing_critical_cells(report, spec)
    unseen = report[report["unseen_in_training"]]
    heatmap_key = warehouse.coverage_heatmap(day)
    storage.warehouse_store.write_bytes(
        heatmap_key, coverage_heatmap(report, list(spec.required) or list(spec.dimensions))
    )
    yield Output(
        {day: report},
        metadata={
            **table_metadata(report),
            "worst_gaps": MetadataValue.md(
                markdown_table(report[report["label"] != coverage.ALL].head(15), max_rows=15)
            ),
            "unseen_in_training": MetadataValue.md(
                markdown_table(unseen[["label", "dimension", "value", "production_count"]], max_rows=20)
            ),
            "heatmap": link(storage, heatmap_key),
            "labeled_objects": len(current_rows),
            "production_predictions": int(production[coverage.ROWS].sum()),
            **guideline_entry({day: current.version}),
        },
    )
    yield AssetCheckResult(
        check_name="critical_classes_covered",
        passed=missing.empty,
        severity=_severity(spec.blocking),
        metadata={"cells_below_minimum": len(missing), "cells": MetadataValue.md(markdown_table(missing, max_rows=40))},
    )


@daily_asset(
    GROUP,
    kinds=KINDS,
    check_specs=[
        AssetCheckSpec(
            "critical_recall",
            asset="risk_report",
            description="The Wilson 95 % lower bound of every critical class's recall reaches its "
            "threshold, so a rare class with few examples is not taken as safe. Warning unless the "
            "spec says blocking.",
        )
    ],
    description="The production model on the day's labeled items: per class and slice, precision, recall with a "
    "Wilson interval and cost-weighted error (cost matrix from the spec and the guideline's severities), "
    "against gold boxes where they exist and consensus boxes elsewhere. Misses are predicted 'background'.",
)
def risk_report(
    context: AssetExecutionContext,
    storage: StorageResource,
    guidelines: GuidelinesResource,
    consensus_labels: Frames,
    gold_labels: Frames,
    item_catalog: Frames,
    production_predictions: Frames,
):
    day = context.partition_key
    consensus_labels, gold_labels = (
        for_day(consensus_labels, day, "consensus_labels"),
        for_day(gold_labels, day, "gold_labels"),
    )
    item_catalog = for_day(item_catalog, day, "item_catalog")
    guideline_set = guidelines.load()
    current = guideline_set.in_force(day)
    spec = guidelines.coverage_spec(current)
    gold_labels = labels_under(gold_labels, guideline_set, current.version)
    reference = coverage.reference_boxes(consensus_labels, gold_labels)
    # the model's boxes on the labeled items, picked from the day's production part by part
    predictions = _production_day(production_predictions, day).select(
        keep=["item_id", "predicted_label", "x", "y", "w", "h"]
    )
    detections = pd.concat(
        [
            coverage.detections(predictions_under(part, guideline_set, current.version), reference)
            for part in predictions.batches(day, storage.batch_rows)
        ],
        ignore_index=True,
    )
    pairs = coverage.confusion_pairs(reference, detections)
    report = coverage.risk_report(pairs, item_catalog, spec)
    confusion = pd.crosstab(pairs["true"], pairs["predicted"]) if len(pairs) else pd.DataFrame()
    storage.warehouse_store.write_bytes(warehouse.risk_confusion(day), confusion.to_csv().encode())
    failing = coverage.failing_critical_recall(report, spec)
    overall = report[report["scope"] == "overall"]
    yield Output(
        {day: report},
        metadata={
            **table_metadata(report),
            "overall": MetadataValue.md(markdown_table(overall, max_rows=30)),
            "confusion_matrix": MetadataValue.md(markdown_table(confusion.reset_index(), max_rows=30)),
            "objects_scored": len(pairs),
            **guideline_entry({day: current.version}),
        },
    )
    yield AssetCheckResult(
        check_name="critical_recall",
        passed=failing.empty,
        severity=_severity(spec.blocking),
        metadata={
            "failing_classes": MetadataValue.md(markdown_table(failing, max_rows=20)),
            "objects_scored": len(pairs),
        },
    )


coverage_assets = [coverage_report, risk_report]
