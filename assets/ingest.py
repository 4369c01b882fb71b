"""Ingest: a day's landing files, normalized into the canonical tables.

Each asset reads its area of the landing zone for one day, lets labelops parse
it, writes the table, and reports what it saw. A file that cannot be read is
listed, by name and reason, in the asset's metadata, in a ledger in the
warehouse, and as a failed (non-blocking) check; the other files still load.
"""


import json

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetIn,
    MetadataValue,
    Output,
    asset,
)

from assets.metadata import table_metadata
from labelops import ingest
from labelops.reporting import counts_table, markdown_table
from pipelines.partitions import daily_partitions
from resources.storage import StorageResource

GROUP = "ingest"
KINDS = {"python", "pandas", "parquet"}


def _readable_check(asset_name: str) -> AssetCheckSpec:
    return AssetCheckSpec(
        name="files_readable",
        asset=asset_name,
        description="Every landing file of the day was read. A failure names each unreadable file and why; "
        "the readable files were still loaded, so downstream runs on them.",
    )


def _report(
    context: AssetExecutionContext,
    storage: StorageResource,
    name: str,
    result: ingest.Ingested,
    metadata: dict[str, object],
):
    """Write the file ledger, log bad files, and yield the output with its check."""
    day = context.partition_key
    ledger_key = f"ledgers/{name}/{day}.csv"
    storage.warehouse_store.write_bytes(ledger_key, result.ledger.to_csv(index=False).encode())
    errors = result.errors
    for message in errors["error"]:
        context.log.error(message)
    yield Output(
        result.table,
        metadata={
            **table_metadata(result.table, preview_columns=metadata.pop("preview_columns", None)),
            "files": len(result.ledger),
            "files_rejected": len(errors),
            "file_ledger": MetadataValue.md(markdown_table(result.ledger.drop(columns="error"), max_rows=30)),
            "ledger_path": MetadataValue.path(f"{storage.warehouse}/{ledger_key}"),
            **metadata,
        },
    )
    yield AssetCheckResult(
        check_name="files_readable",
        passed=errors.empty,
        severity=AssetCheckSeverity.ERROR,
        metadata={
            "files": len(result.ledger),
            "rejected": len(errors),
            "rejected_files": MetadataValue.md(markdown_table(errors[["source_file", "error"]], max_rows=50)),
        },
    )


@asset(
    partitions_def=daily_partitions,
    group_name=GROUP,
    kinds=KINDS,
    code_version="1",
    check_specs=[_readable_check("item_catalog")],
    description="Item metadata delivered on the day (items/YYYY-MM-DD/): item_id, uri, image size, capture "
    "time, and slice attributes (lighting, weather, device, region, …) as extra text columns. One row per item.",
)
def item_catalog(context: AssetExecutionContext, storage: StorageResource):
    result = ingest.read_items(storage.landing_store, context.partition_key)
    slices = [c for c in result.table.columns if c not in ingest.ITEM_CORE_SCHEMA.names]
    yield from _report(context, storage, "item_catalog", result, {"slice_columns": ", ".join(slices) or "none"})


@asset(
    partitions_def=daily_partitions,
    group_name=GROUP,
    kinds=KINDS,
    code_version="1",
    ins={"item_catalog": AssetIn()},
    check_specs=[_readable_check("label_exports")],
    description="Every annotation export of the day (exports/YYYY-MM-DD/) — Label Studio JSON, COCO, CVAT 1.1 "
    "XML, YOLO folders or zips, CSV/TSV/Parquet long tables — normalized to the canonical annotation table "
    "with stable annotation ids. YOLO boxes take image sizes from the day's item catalog.",
)
def label_exports(context: AssetExecutionContext, storage: StorageResource, item_catalog: pd.DataFrame):
    sizes = dict(zip(item_catalog["item_id"], zip(item_catalog["width"], item_catalog["height"])))
    result = ingest.read_exports(storage.landing_store, context.partition_key, sizes)
    table = result.table
    skipped: dict[str, int] = {}
    for entry in result.ledger["skipped"]:
        for reason, count in json.loads(entry).items():
            skipped[reason] = skipped.get(reason, 0) + count
    metadata = {
        "preview_columns": ["item_id", "annotator_id", "kind", "label", "x", "y", "w", "h", "source_format"],
        "by_format": MetadataValue.md(counts_table(table["source_format"], "format")),
        "by_annotator": MetadataValue.md(counts_table(table["annotator_id"], "annotator_id", max_rows=50)),
        "by_kind": MetadataValue.json(table["kind"].value_counts().to_dict()),
        "items": int(table["item_id"].nunique()),
        "annotators": int(table["annotator_id"].nunique()),
        "skipped_records": MetadataValue.json(skipped),
    }
    yield from _report(context, storage, "label_exports", result, metadata)


@asset(
    partitions_def=daily_partitions,
    group_name=GROUP,
    kinds=KINDS,
    code_version="1",
    check_specs=[_readable_check("gold_labels")],
    description="Gold / honeypot reference labels in force on the day: undated files under gold/ hold for "
    "every day, gold/YYYY-MM-DD/ from that day on. Any export format; classification and boxes.",
)
def gold_labels(context: AssetExecutionContext, storage: StorageResource):
    result = ingest.read_gold(storage.landing_store, context.partition_key)
    metadata = {
        "gold_items": int(result.table["item_id"].nunique()),
        "by_kind": MetadataValue.json(result.table["kind"].value_counts().to_dict()),
    }
    yield from _report(context, storage, "gold_labels", result, metadata)


@asset(
    partitions_def=daily_partitions,
    group_name=GROUP,
    kinds=KINDS,
    code_version="1",
    check_specs=[_readable_check("production_predictions")],
    description="Model inference logs of the day (production/YYYY-MM-DD/): item_id, ts, model_version, "
    "predicted_label, confidence, and the model's input features as extra columns (numbers stay numeric).",
)
def production_predictions(context: AssetExecutionContext, storage: StorageResource):
    result = ingest.read_predictions(storage.landing_store, context.partition_key)
    table = result.table
    metadata = {
        "preview_columns": [c for c in table.columns if c not in ("source_file", "export_date")],
        "by_predicted_label": MetadataValue.md(counts_table(table["predicted_label"], "predicted_label")),
        "mean_confidence": float(table["confidence"].mean()) if len(table) else 0.0,
        "model_versions": ", ".join(sorted(table["model_version"].dropna().astype(str).unique())) or "none",
    }
    yield from _report(context, storage, "production_predictions", result, metadata)


ingest_assets = [item_catalog, label_exports, gold_labels, production_predictions]
