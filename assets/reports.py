"""Reports: the day's self-contained HTML quality report, written to the warehouse and linked from the UI.

The snapshot's report is written by dataset_snapshot itself, next to the version it describes.
"""

from dagster import AssetExecutionContext, AssetIn, Config, MaterializeResult, asset

from assets.metadata import OWNERS, link
from assets.partitioned import SINGLE_RUN, Frames, days, for_day
from assets.partitions import daily_partitions
from labelops import labeling, snapshots, warehouse
from labelops.report import quality_report as render_quality_report
from resources.storage import StorageResource
from resources.validation import GuidelinesResource

INPUTS = (
    "validated_annotations",
    "quarantined_annotations",
    "annotator_agreement",
    "annotator_scores",
    "consensus_labels",
    "coverage_report",
    "production_drift",
    "relabel_batch",
    "label_state",
    "label_issues",
)


# What the labeling-loop section reads of the state: one column per fact, not the consensus rows' geometry.
LOOP_COLUMNS = ["item_id", "status", "answered_batch", "days", "current_judgments"]


class QualityReportConfig(Config):
    min_confidence: float = (
        snapshots.CurationConfig().min_confidence
    )  # the snapshot's threshold, drawn on the histogram


@asset(
    partitions_def=daily_partitions,
    backfill_policy=SINGLE_RUN,
    group_name="reports",
    owners=OWNERS["reports"],
    kinds={"python", "html", "matplotlib"},
    code_version="1",
    ins={name: AssetIn() for name in INPUTS},
    deps=["dataset_snapshot"],  # the loop section says which answered items the latest snapshot holds
    description="The day's quality report for people who do not open Dagster: one self-contained HTML file "
    "(reports/quality/<day>.html, plots inlined, no scripts, every label escaped) with the validation summary, "
    "agreement with bootstrap intervals, annotator scores, the consensus confidence distribution, the coverage "
    "heatmap, drift per feature, the worst label issues cleanlab found, the relabel batch (when the drift sensor requested one) and the labeling loop "
    "(items by status in the label state; per relabel batch the items sent, answered, still waiting and in the "
    "latest snapshot).",
)
def quality_report(
    context: AssetExecutionContext,
    config: QualityReportConfig,
    storage: StorageResource,
    guidelines: GuidelinesResource,
    validated_annotations: Frames,
    quarantined_annotations: Frames,
    annotator_agreement: Frames,
    annotator_scores: Frames,
    consensus_labels: Frames,
    coverage_report: Frames,
    production_drift: Frames,
    relabel_batch: Frames,
    label_state: Frames,
    label_issues: Frames,
) -> MaterializeResult:
    guideline_set = guidelines.load()
    store = storage.warehouse_store
    latest = snapshots.latest(store)
    snapshot_items = (
        snapshots.read_table(store, latest, "items.parquet", columns=["item_id"])["item_id"] if latest else None
    )
    ledger = labeling.read_ledger(store, "relabel")
    links = {}
    for day in days(context):
        guideline = guideline_set.in_force(day)
        heatmap = warehouse.coverage_heatmap(day)
        html = render_quality_report(
            day,
            guideline=guideline.version,
            validated=for_day(
                validated_annotations.select(keep=["validation_warnings", "remapped_from"]),
                day,
                "validated_annotations",
            ),
            quarantined=for_day(quarantined_annotations, day, "quarantined_annotations"),
            agreement=for_day(annotator_agreement, day, "annotator_agreement"),
            scores=for_day(annotator_scores, day, "annotator_scores"),
            consensus=for_day(consensus_labels, day, "consensus_labels"),
            coverage=for_day(coverage_report, day, "coverage_report"),
            coverage_heatmap=store.read_bytes(heatmap) if store.exists(heatmap) else None,
            drift=for_day(production_drift, day, "production_drift"),
            relabel=relabel_batch.get(day),
            min_confidence=config.min_confidence,
            state=label_state.select(keep=LOOP_COLUMNS).get(day),
            snapshot_items=snapshot_items,
            sent=ledger[ledger["sent_on"] < day],  # the batches the day's state knows of
            data_docs=f"../data_docs/{day}/index.html",
            label_issues=label_issues.get(day),
            progress=lambda section, day=day: context.log.info(f"{day}: report section {section}"),
        )
        store.write_bytes(warehouse.quality_report(day), html.encode())
        links[day] = link(storage, warehouse.quality_report(day))
    return MaterializeResult(metadata={f"report/{d}" if len(links) > 1 else "report": v for d, v in links.items()})
