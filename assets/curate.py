"""Curate: the versioned dataset snapshot that training reads.

Unpartitioned: it reads every day that exists of its inputs, so `--select '*' --partition DAY`
works on a fresh warehouse, and writes `snapshots/<version>/` through labelops.snapshots.
"""

import pandas as pd
from dagster import AssetExecutionContext, AssetIn, Config, MaterializeResult, MetadataValue, asset

from assets.metadata import OWNERS, link
from assets.partitioned import Frames, concat_days
from labelops import snapshots
from labelops.export import to_coco, to_yolo
from labelops.report import snapshot_report
from labelops.reporting import markdown_table
from resources.storage import StorageResource
from resources.validation import GuidelinesResource

CODE_VERSION = "2"


class SnapshotConfig(Config):
    min_confidence: float = 0.7
    group_key: str = "session_id"
    # The scene label; slice columns (the demo adds lighting) are skipped, and reported, where the catalog lacks them.
    stratify_by: list[str] = ["label"]
    split_ratios: list[float] = [0.8, 0.1, 0.1]
    seed: int = 0


@asset(
    group_name="curate",
    owners=OWNERS["curate"],
    kinds={"python", "parquet", "json"},
    code_version=CODE_VERSION,
    ins={name: AssetIn() for name in ("consensus_labels", "item_catalog", "review_queue", "quarantined_annotations",
                                      "annotator_agreement", "validated_annotations")},
    description="An immutable, content-addressed dataset version in snapshots/<version>/: items with their "
    "split and consensus labels (Parquet), a diff against the parent, COCO and YOLO exports, and manifest.json "
    "(hash, parent, guideline and code version, counts per split and class, QA summary, source partitions), "
    "written last. Items below the confidence threshold, waiting for review or relabel, duplicates, validated "
    "items without consensus (polygons only, a single annotator's boxes) and items missing from the catalog are "
    "left out and counted. Identical content publishes no new version.",
)
def dataset_snapshot(
    context: AssetExecutionContext,
    config: SnapshotConfig,
    storage: StorageResource,
    guidelines: GuidelinesResource,
    consensus_labels: Frames,
    item_catalog: Frames,
    review_queue: Frames,
    quarantined_annotations: Frames,
    annotator_agreement: Frames,
    validated_annotations: Frames,
) -> MaterializeResult:
    consensus_labels, item_catalog, review_queue = concat_days(consensus_labels), concat_days(item_catalog), concat_days(review_queue)
    quarantined_annotations, annotator_agreement = concat_days(quarantined_annotations), concat_days(annotator_agreement)
    store = storage.warehouse_store
    parent = snapshots.latest(store)
    parent_splits = snapshots.read_table(store, parent, "items.parquet").set_index("item_id")["split"] if parent else pd.Series(dtype=object)
    curation = snapshots.CurationConfig(config.min_confidence, config.group_key, tuple(config.stratify_by), tuple(config.split_ratios), config.seed)
    empty = pd.DataFrame(columns=["item_id", "rule", "reason"])
    guideline_set = guidelines.load()
    delivered = sorted(str(d) for d in item_catalog["export_date"].dropna().unique()) if "export_date" in item_catalog else []
    guideline = guideline_set.in_force(delivered[-1]) if delivered else None
    curated = snapshots.curate(consensus_labels, item_catalog, review_queue if len(review_queue) else empty,
                               quarantined_annotations if len(quarantined_annotations) else empty, parent_splits, curation,
                               renames=guideline_set.renames_into(guideline.version) if guideline else None,
                               annotated=concat_days(validated_annotations.select(["item_id"])).get("item_id"))
    days = sorted(str(d) for d in curated.items["export_date"].dropna().unique()) if "export_date" in curated.items else []
    overall = annotator_agreement[annotator_agreement["scope"] == "overall"] if len(annotator_agreement) else annotator_agreement
    metadata = {
        "guideline_version": guideline.version if guideline else None,
        "code_version": CODE_VERSION,
        "source_partitions": days,
        "qa": {
            "quarantined_rows": len(quarantined_annotations),
            "review_queue_items": len(review_queue),
            "agreement_mean_by_metric": {m: float(v) for m, v in overall.groupby("metric")["value"].mean().items()} if len(overall) else {},
        },
        "curation": {**config.model_dump()},
    }
    exports = {"coco.json": to_coco(curated.items, curated.labels, description="labelops snapshot")}
    exports["yolo.zip"] = to_yolo(curated.items, curated.labels)
    if curated.stratification["skipped"]:
        context.log.warning(f"stratify_by columns the item catalog lacks, skipped: {curated.stratification['skipped']}")
    version, manifest, created = snapshots.publish(store, curated, metadata, exports=exports)
    context.log.info(f"snapshot {version} {'published' if created else 'unchanged (same content as the latest)'}")
    report = f"reports/snapshots/{version}.html"
    if created or not store.exists(report):
        # equal content hashes mean equal tables, so the curated ones describe the version either way
        store.write_bytes(report, snapshot_report(manifest, curated.items, curated.labels).encode())
    changes = manifest["diff_summary"]
    return MaterializeResult(metadata={
        "version": version,
        "created": created,
        "content_hash": manifest["content_hash"],
        "parent_version": str(manifest["parent_version"]),
        "dagster/row_count": manifest["rows"]["items"],
        "labels": manifest["rows"]["labels"],
        "split_sizes": MetadataValue.json(manifest["split_sizes"]),
        "excluded": MetadataValue.json(manifest["excluded"]),
        "stratification": MetadataValue.json(curated.stratification),
        "diff": MetadataValue.md(markdown_table(pd.DataFrame([changes]), max_rows=1)),
        "manifest": link(storage, f"{snapshots.ROOT}/{version}/manifest.json"),
        "report": link(storage, report),
    })
