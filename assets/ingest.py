"""Ingest: a day's landing files, normalized into the canonical tables.

Each asset reads its area of the landing zone for one day, lets labelops parse
it, writes the table, and reports what it saw. A file that cannot be read is
listed, by name and reason, in the asset's metadata, in a ledger in the
warehouse, and as a failed (non-blocking) check; the other files still load.
"""

import json
from collections.abc import Mapping
from typing import Any

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetIn,
    MetadataValue,
    Output,
)

from assets.metadata import column_schema, table_metadata
from assets.partitioned import Frames, concat_days, days, for_day
from assets.partitions import daily_asset
from labelops import ingest, warehouse
from labelops.reporting import counts_table, markdown_table
from labelops.storage import staged_file
from resources.privacy import AnnotatorIdsResource
from resources.storage import StorageResource

GROUP = "ingest"
KINDS = {"python", "pandas", "parquet"}


def _readable_check(asset_name: str) -> AssetCheckSpec:
    return AssetCheckSpec(
        name="files_readable",
        asset=asset_name,
        description="Every landing file of the day was read. A failure names each unreadable file and why; "
        "the readable files were still loaded, so downstream runs on them. Files still being written "
        "(modified within the settle time) are deferred to a later run: a warning, not an error.",
    )


def _report(
    context: AssetExecutionContext,
    storage: StorageResource,
    name: str,
    results: dict[str, ingest.Ingested],
    metadata: Mapping[str, Any],
    preview_columns: list[str] | None = None,
):
    """Write each day's file ledger, log bad files, and yield the output with its check."""
    table = concat_days({day: r.table for day, r in results.items()})
    yield from _report_ledgers(
        context,
        storage,
        name,
        {day: r.ledger for day, r in results.items()},
        {day: r.table for day, r in results.items()},
        {**table_metadata(table, preview_columns=preview_columns), **metadata},
    )


def _report_ledgers(
    context: AssetExecutionContext,
    storage: StorageResource,
    name: str,
    ledgers: dict[str, pd.DataFrame],
    value: Mapping[str, pd.DataFrame] | None,
    metadata: Mapping[str, Any],
):
    """Write each day's file ledger, log bad files, and yield the output (``value``; None when the asset wrote
    its tables itself) with its check."""
    for day, day_ledger in ledgers.items():
        storage.warehouse_store.write_bytes(warehouse.file_ledger(name, day), day_ledger.to_csv(index=False).encode())
    ledger = pd.concat(list(ledgers.values()), ignore_index=True)
    errors = ledger[ledger["status"] == "error"]
    arriving = ledger[ledger["status"] == ingest.STILL_ARRIVING]
    for message in errors["error"]:
        context.log.error(message)
    for file in arriving["source_file"]:
        context.log.warning(
            f"{file}: still arriving (modified less than {storage.settle_seconds:g} s ago); deferred to the next run"
        )
    yield Output(
        dict(value) if value is not None else None,
        metadata={
            "files": len(ledger),
            "files_rejected": len(errors),
            "files_still_arriving": len(arriving),
            "file_ledger": MetadataValue.md(markdown_table(ledger.drop(columns="error"), max_rows=30)),
            "ledger_path": MetadataValue.path(
                f"{storage.warehouse}/ledgers/{name}/" + (f"{next(iter(ledgers))}.csv" if len(ledgers) == 1 else "")
            ),
            **metadata,
        },
    )
    yield AssetCheckResult(
        check_name="files_readable",
        passed=errors.empty and arriving.empty,
        severity=AssetCheckSeverity.ERROR if len(errors) else AssetCheckSeverity.WARN,
        metadata={
            "files": len(ledger),
            "rejected": len(errors),
            "still_arriving": len(arriving),
            "rejected_files": MetadataValue.md(markdown_table(errors[["source_file", "error"]], max_rows=50)),
            "files_still_arriving": MetadataValue.md(markdown_table(arriving[["source_file"]], max_rows=50)),
        },
    )


@daily_asset(
    GROUP,
    kinds=KINDS,
    single_run=True,
    check_specs=[_readable_check("item_catalog")],
    description="Item metadata delivered on the day (items/YYYY-MM-DD/): item_id, uri, image size, capture "
    "time, and slice attributes (lighting, weather, device, region, …) as extra text columns. One row per item.",
)
def item_catalog(context: AssetExecutionContext, storage: StorageResource):
    results = {
        day: ingest.read_items(storage.landing_store, day, policy=storage.read_policy()) for day in days(context)
    }
    slices = sorted({c for r in results.values() for c in r.table.columns if c not in ingest.ITEM_CORE_SCHEMA.names})
    yield from _report(context, storage, "item_catalog", results, {"slice_columns": ", ".join(slices) or "none"})


@daily_asset(
    GROUP,
    kinds=KINDS,
    single_run=True,
    ins={"item_catalog": AssetIn()},
    check_specs=[_readable_check("label_exports")],
    description="Every annotation export of the day (exports/YYYY-MM-DD/) — Label Studio JSON, COCO, CVAT 1.1 "
    "XML, YOLO folders or zips, CSV/TSV/Parquet long tables — normalized to the canonical annotation table "
    "with stable annotation ids. YOLO boxes take image sizes from the day's item catalog. A judgment "
    "(annotator, item, kind, label, geometry) delivered before — in the same file, another file of the day or "
    "an earlier day — keeps its row with `duplicate_of` set; validation quarantines it as `duplicate`. A tool "
    "annotation delivered with no judgment (cancelled or emptied in Label Studio, a CVAT image left without "
    "shapes) is no row: it is kept beside the table (ledgers/emptied/) and withdraws its earlier version in "
    "label_votes.",
)
def label_exports(
    context: AssetExecutionContext, storage: StorageResource, annotator_ids: AnnotatorIdsResource, item_catalog: Frames
):
    results = {}
    store = storage.warehouse_store
    for day in days(context):  # in day order: a range's later days compare against its earlier ones
        sizes = ingest.ImageSizes(for_day(item_catalog, day, "item_catalog"))
        # pseudonyms before anything is written, logged or reported: every later table derives from this one
        results[day] = ingest.read_exports(
            storage.landing_store,
            day,
            sizes,
            policy=storage.read_policy(),
            known=ingest.known_judgments(store, day),
            protect=annotator_ids.protect,
        )
        ingest.record_judgments(store, day, results[day].table)
        ingest.record_emptied(store, day, results[day].emptied)
    table = concat_days({day: r.table for day, r in results.items()})
    skipped: dict[str, int] = {}
    for entry in pd.concat([r.ledger["skipped"] for r in results.values()]):
        for reason, count in json.loads(entry).items():
            skipped[reason] = skipped.get(reason, 0) + count
    metadata = {
        "by_format": MetadataValue.md(counts_table(table["source_format"], "format")),
        "by_annotator": MetadataValue.md(counts_table(table["annotator_id"], "annotator_id", max_rows=50)),
        "by_kind": MetadataValue.json(table["kind"].value_counts().to_dict()),
        "items": int(table["item_id"].nunique()),
        "annotators": int(table["annotator_id"].nunique()),
        "duplicate_rows": int(table["duplicate_of"].notna().sum()),
        "annotator_ids": annotator_ids.mode,
        "skipped_records": MetadataValue.json(skipped),
        # Label Studio annotations cancelled or submitted empty, CVAT task images without a shape: each withdraws
        # its earlier version in label_votes
        "emptied_annotations": sum(len(r.emptied) for r in results.values()),
    }
    preview = ["item_id", "annotator_id", "kind", "label", "x", "y", "w", "h", "source_format"]
    yield from _report(context, storage, "label_exports", results, metadata, preview_columns=preview)


@daily_asset(
    GROUP,
    kinds=KINDS,
    single_run=True,
    check_specs=[_readable_check("gold_labels")],
    description="Gold / honeypot reference labels in force on the day: undated files under gold/ hold for "
    "every day, gold/YYYY-MM-DD/ from that day on. Any export format; classification and boxes.",
)
def gold_labels(context: AssetExecutionContext, storage: StorageResource):
    results = {
        day: ingest.read_gold(storage.landing_store, day, policy=storage.read_policy(), cache=storage.warehouse_store)
        for day in days(context)
    }
    table = concat_days({day: r.table for day, r in results.items()})
    metadata = {
        "gold_items": int(table["item_id"].nunique()),
        "by_kind": MetadataValue.json(table["kind"].value_counts().to_dict()),
    }
    yield from _report(context, storage, "gold_labels", results, metadata)


@daily_asset(
    GROUP,
    kinds=KINDS,
    single_run=True,
    check_specs=[_readable_check("production_predictions")],
    description="Model inference logs of the day (production/YYYY-MM-DD/): item_id, ts, model_version, "
    "predicted_label, confidence, and the model's input features as extra columns (numbers stay numeric).",
)
def production_predictions(context: AssetExecutionContext, storage: StorageResource):
    # Production grows with traffic: each day is streamed from the landing files into its Parquet table in
    # parts of storage.batch_rows rows (labelops.ingest.write_predictions), never held whole.
    streamed: dict[str, ingest.StreamedDay] = {}
    for day in days(context):
        with staged_file(storage.warehouse_store, warehouse.table_key(["production_predictions"], day)) as path:
            streamed[day] = ingest.write_predictions(
                storage.landing_store, day, path, policy=storage.read_policy(), batch_rows=storage.batch_rows
            )
        if streamed[day].passes > 1:
            context.log.info(f"production {day}: written in {streamed[day].passes} passes (a type or file changed)")
    rows = sum(s.rows for s in streamed.values())
    labels = pd.concat([s.predicted_labels for s in streamed.values()]).groupby(level=0, dropna=False).sum()
    labels = labels.sort_values(ascending=False, kind="stable").rename_axis("predicted_label")
    confidence_rows = sum(s.confidence_rows for s in streamed.values())
    preview = concat_days({day: s.preview for day, s in streamed.items()}).head(10)
    metadata = {
        "dagster/row_count": rows,
        "dagster/column_schema": MetadataValue.table_schema(column_schema(preview)),
        "preview": MetadataValue.md(
            markdown_table(
                preview[[c for c in preview.columns if c not in ("source_file", "export_date")]], max_rows=10
            )
        ),
        "by_predicted_label": MetadataValue.md(markdown_table(labels.reset_index(name="rows"), max_rows=20)),
        "mean_confidence": sum(s.confidence_sum for s in streamed.values()) / confidence_rows
        if confidence_rows
        else 0.0,
        "model_versions": ", ".join(sorted(set().union(*(s.model_versions for s in streamed.values())))) or "none",
        "passes": max(s.passes for s in streamed.values()),
    }
    yield from _report_ledgers(
        context, storage, "production_predictions", {day: s.ledger for day, s in streamed.items()}, None, metadata
    )


ingest_assets = [item_catalog, label_exports, gold_labels, production_predictions]
