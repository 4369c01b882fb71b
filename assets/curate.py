"""Curate: the versioned dataset snapshot that training reads.

Unpartitioned: of its daily inputs it reads one day, the latest of the label state (the item index and the
agreement of that day with it), so a night costs the same whatever the history; `--select '*' --partition DAY`
works on a fresh warehouse. Writes `snapshots/<version>/` through labelops.snapshots.
"""

import pandas as pd
from dagster import AssetExecutionContext, AssetIn, Config, MaterializeResult, MetadataValue, asset

from assets.metadata import OWNERS, link
from assets.partitioned import Frames
from labelops import snapshots, state, warehouse
from labelops.report import snapshot_report
from labelops.reporting import markdown_table
from resources.storage import StorageResource
from resources.validation import GuidelinesResource

CODE_VERSION = "2"


CURATION = snapshots.CurationConfig()


class SnapshotConfig(Config):
    min_confidence: float = CURATION.min_confidence
    group_key: str = CURATION.group_key
    # The scene label; slice columns (the demo adds lighting) are skipped, and reported, where the catalog lacks them.
    stratify_by: list[str] = list(CURATION.stratify_by)
    split_ratios: list[float] = list(CURATION.split_ratios)
    seed: int = CURATION.seed


@asset(
    group_name="curate",
    owners=OWNERS["curate"],
    kinds={"python", "parquet", "json"},
    code_version=CODE_VERSION,
    ins={name: AssetIn() for name in ("label_state", "item_index", "annotator_agreement")},
    description="An immutable, content-addressed dataset version in snapshots/<version>/, built from the current "
    "label state (the latest label_state and item_index day): items with their split and consensus labels (Parquet), a diff "
    "against the parent, and manifest.json (hash, parent, guideline and code version, "
    "counts per split and class, QA summary, source partitions), written last. Items below the confidence "
    "threshold, in review, waiting for a relabel (requested or needed), without consensus, missing from the "
    "catalog, and duplicates are left out and counted. Identical content publishes no new version. COCO and "
    "YOLO files: snapshot_exports.",
)
def dataset_snapshot(
    context: AssetExecutionContext,
    config: SnapshotConfig,
    storage: StorageResource,
    guidelines: GuidelinesResource,
    label_state: Frames,
    item_index: Frames,
    annotator_agreement: Frames,
) -> MaterializeResult:
    # One day of each input is read, whatever the history: the state and the item index are complete as of it.
    state_day = sorted(label_state)[-1] if len(label_state) else None
    current = label_state.select(keep=snapshots.STATE_COLUMNS)[state_day] if state_day else state.empty_state()
    item_catalog = item_index[state_day] if state_day and state_day in item_index else pd.DataFrame(columns=["item_id"])
    agreement = annotator_agreement[state_day] if state_day and state_day in annotator_agreement else pd.DataFrame()
    store = storage.warehouse_store
    parent = snapshots.latest(store)
    # the parent's splits, which its groups keep; read once, for the diff too
    parent_items = snapshots.read_table(store, parent, "items.parquet", ["item_id", "split"]) if parent else None
    parent_splits = parent_items.set_index("item_id")["split"] if parent_items is not None else pd.Series(dtype=object)
    if len(config.split_ratios) != 3:
        raise ValueError(f"split_ratios: one ratio each for train, validation and test, got {config.split_ratios}")
    train, validation, test = config.split_ratios
    curation = snapshots.CurationConfig(
        config.min_confidence, config.group_key, tuple(config.stratify_by), (train, validation, test), config.seed
    )
    inputs = snapshots.state_inputs(current)
    guideline_set = guidelines.load()
    guideline = guideline_set.in_force(state_day) if state_day else None
    curated = snapshots.curate(
        inputs.consensus, item_catalog, inputs.review, inputs.relabel, parent_splits, curation, annotated=inputs.items
    )
    days = (
        sorted(str(d) for d in curated.items["export_date"].dropna().unique()) if "export_date" in curated.items else []
    )
    overall = agreement[agreement["scope"] == "overall"] if len(agreement) else agreement
    metadata = {
        "guideline_version": guideline.version if guideline else None,
        "code_version": CODE_VERSION,
        "source_partitions": days,
        "label_state_day": state_day,
        "qa": {
            "review_queue_items": len(inputs.review),
            "waiting_for_relabel_items": len(inputs.relabel),
            "agreement_mean_by_metric": {m: float(v) for m, v in overall.groupby("metric")["value"].mean().items()}
            if len(overall)
            else {},
        },
        "curation": {**config.model_dump()},
    }
    if curated.stratification["skipped"]:
        context.log.warning(f"stratify_by columns the item catalog lacks, skipped: {curated.stratification['skipped']}")
    version, manifest, created = snapshots.publish(
        store,
        curated,
        metadata,
        guideline_changes=(lambda parent: guideline_set.remap_between(parent, guideline.version))
        if guideline
        else None,
        parent_items=(parent, parent_items) if parent is not None and parent_items is not None else None,
    )
    context.log.info(f"snapshot {version} {'published' if created else 'unchanged (same content as the latest)'}")
    report = warehouse.snapshot_report(version)
    if created or not store.exists(report):
        # equal content hashes mean equal tables, so the curated ones describe the version either way
        store.write_bytes(report, snapshot_report(manifest, curated.labels).encode())
    changes = manifest["diff_summary"]
    return MaterializeResult(
        metadata={
            "version": version,
            "created": created,
            "content_hash": manifest["content_hash"],
            "parent_version": str(manifest["parent_version"]),
            "guideline_version": str(manifest.get("guideline_version")),
            "dagster/row_count": manifest["rows"]["items"],
            "labels": manifest["rows"]["labels"],
            "split_sizes": MetadataValue.json(manifest["split_sizes"]),
            "excluded": MetadataValue.json(manifest["excluded"]),
            "stratification": MetadataValue.json(curated.stratification),
            "diff": MetadataValue.md(markdown_table(pd.DataFrame([changes]), max_rows=1)),
            "manifest": link(storage, f"{snapshots.ROOT}/{version}/manifest.json"),
            "report": link(storage, report),
        }
    )


class SnapshotExportsConfig(Config):
    version: str = ""  # a published version, e.g. v0014; empty: the latest


@asset(
    group_name="curate",
    owners=OWNERS["curate"],
    kinds={"python", "json"},
    code_version=CODE_VERSION,
    deps=[dataset_snapshot],
    description="COCO instances JSON and a YOLO zip of one snapshot version (the latest unless configured), in "
    "snapshots/<version>/export/. On request, not nightly: a full-dataset file costs as much as the dataset is "
    "large, so it is written when training asks for it. The same version always gives the same bytes.",
)
def snapshot_exports(
    context: AssetExecutionContext, config: SnapshotExportsConfig, storage: StorageResource
) -> MaterializeResult:
    store = storage.warehouse_store
    version = config.version or snapshots.latest(store)
    if version is None:
        raise ValueError("no snapshot is published yet: materialize dataset_snapshot first")
    keys = snapshots.write_exports(store, version)
    context.log.info(f"exports of snapshot {version}: {', '.join(keys)}")
    return MaterializeResult(
        metadata={
            "version": version,
            **{name: link(storage, key) for name, key in keys.items()},
        }
    )
