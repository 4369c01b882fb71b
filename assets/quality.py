"""Quality: agreement between annotators, consensus labels, annotator scores and the review queue.

These assets read `validated_annotations`, so the blocking validation check stops them
on a day whose critical expectations failed. All statistics come from labelops.
"""

import pandas as pd
from dagster import AssetExecutionContext, AssetOut, Config, MetadataValue, Output, multi_asset

from assets.metadata import OWNERS, guideline_entry, table_metadata
from assets.partitioned import SINGLE_RUN, DayFrames, Frames, concat_days, days, for_day
from assets.partitions import daily_asset, daily_partitions
from labelops import label_issues as issue_finding
from labelops import quality, review
from labelops.annotators import Thresholds
from labelops.guidelines import labels_under, predictions_under
from labelops.reporting import markdown_table
from labelops.schema import PROBABILITY_PREFIX
from labelops.state import StateConfig
from resources.validation import GuidelinesResource

GROUP = "quality"
KINDS = {"python", "pandas", "parquet"}
SLICE_EXCLUDE = {"item_id", "uri", "width", "height", "captured_at", "source_file", "export_date", "session_id"}


class AgreementConfig(Config):
    bootstrap_resamples: int = 200
    seed: int = 0


CONSENSUS, THRESHOLDS = StateConfig(), Thresholds()  # the domain's defaults, named once


class ConsensusConfig(Config):
    method: str = CONSENSUS.method  # or "majority_vote"
    box_quorum: int = CONSENSUS.box_quorum
    box_cluster_iou: float = CONSENSUS.cluster_iou
    min_gold_accuracy: float = THRESHOLDS.min_gold_accuracy
    min_estimated_accuracy: float = THRESHOLDS.min_estimated_accuracy
    min_answers_for_estimate: int = THRESHOLDS.min_answers_for_estimate
    min_gold_box_recall: float = THRESHOLDS.min_gold_box_recall


ISSUES = issue_finding.LabelIssueConfig()


class LabelIssuesConfig(Config):
    filter_by: str = ISSUES.filter_by
    rank_by: str = ISSUES.rank_by
    min_items: int = ISSUES.min_items
    swap_below: float = ISSUES.swap_below
    badloc_below: float = ISSUES.badloc_below
    overlooked_below: float = ISSUES.overlooked_below
    max_box_items: int = ISSUES.max_box_items


class ReviewConfig(Config):
    min_confidence: float = review.MIN_CONFIDENCE
    min_agreement: float = review.MIN_AGREEMENT
    max_label_issues: int = review.MAX_LABEL_ISSUES  # a day's worst label_issues items that enter review


@daily_asset(
    GROUP,
    kinds=KINDS,
    single_run=True,
    description="Inter-annotator agreement for the day: Krippendorff's alpha, Fleiss' kappa, mean pairwise "
    "Cohen's kappa and percent agreement (overall, per label, per slice value) with bootstrap 95 % intervals "
    "over items; for boxes, Hungarian-matched mean IoU, F1 at IoU 0.5, label-conflict rate and box alpha "
    "(distance 1 - IoU).",
)
def annotator_agreement(
    context: AssetExecutionContext, config: AgreementConfig, validated_annotations: Frames, item_catalog: Frames
) -> Output[DayFrames]:
    tables = {}
    annotations = validated_annotations.select(keep=quality.QUALITY_INPUTS)
    catalog = item_catalog.select(drop=SLICE_EXCLUDE - {"item_id"})
    for day in days(context):
        items = for_day(catalog, day, "item_catalog")
        slices = [c for c in items.columns if c not in SLICE_EXCLUDE]
        tables[day] = quality.agreement_table(
            for_day(annotations, day, "validated_annotations"),
            items,
            slices,
            n_boot=config.bootstrap_resamples,
            seed=config.seed,
        )
        context.log.info(
            f"{day}: agreement over {len(slices)} slice dimensions, {config.bootstrap_resamples} bootstrap resamples"
        )
    table = concat_days(tables)
    overall = table[table["scope"] == "overall"][["metric", "value", "ci_low", "ci_high", "n_items"]]
    metadata = {**table_metadata(table), "overall": MetadataValue.md(markdown_table(overall, max_rows=20))}
    if len(tables) == 1:
        metadata.update(
            {f"overall/{k}": float(v) for k, v in zip(overall["metric"], overall["value"], strict=True) if pd.notna(v)}
        )
    return Output(tables, metadata=metadata)


@multi_asset(
    partitions_def=daily_partitions,
    backfill_policy=SINGLE_RUN,
    group_name=GROUP,
    outs={
        "consensus_labels": AssetOut(
            kinds=KINDS,
            owners=OWNERS[GROUP],
            code_version="1",
            description="One consensus label per item "
            "(Dawid-Skene by default, majority vote on request; confidence = posterior) and one fused box per "
            "object (clusters of matched boxes, weighted by annotator accuracy, `support` annotators, quorum).",
        ),
        "annotator_scores": AssetOut(
            kinds=KINDS,
            owners=OWNERS[GROUP],
            code_version="1",
            description="Per annotator: gold accuracy, "
            "gold box precision/recall/IoU, agreement with consensus, Dawid-Skene estimated accuracy, and a "
            "flag with its reason when below the thresholds.",
        ),
    },
)
def consensus_and_scores(
    context: AssetExecutionContext,
    config: ConsensusConfig,
    guidelines: GuidelinesResource,
    validated_annotations: Frames,
    gold_labels: Frames,
):
    thresholds = Thresholds(
        min_gold_accuracy=config.min_gold_accuracy,
        min_estimated_accuracy=config.min_estimated_accuracy,
        min_answers_for_estimate=config.min_answers_for_estimate,
        min_gold_box_recall=config.min_gold_box_recall,
    )
    guideline_set = guidelines.load()
    annotations = validated_annotations.select(keep=quality.QUALITY_INPUTS)
    labels, scored = {}, {}
    for day in days(context):
        # gold files keep the names of their day: read under the day's guideline, as the judgments are
        gold = labels_under(
            for_day(gold_labels, day, "gold_labels"), guideline_set, guideline_set.in_force(day).version
        )
        labels[day], scored[day] = quality.consensus_and_scores(
            for_day(annotations, day, "validated_annotations"),
            gold,
            method=config.method,
            quorum=config.box_quorum,
            cluster_iou=config.box_cluster_iou,
            thresholds=thresholds,
        )
        flagged = scored[day][scored[day]["flagged"]]
        for annotator, reason in zip(flagged["annotator_id"], flagged["flag_reason"], strict=True):
            context.log.warning(f"{day}: annotator {annotator} flagged: {reason}")
    table, scores = concat_days(labels), concat_days(scored)
    flagged = scores[scores["flagged"]]
    versions = guideline_entry({day: guideline_set.in_force(day).version for day in labels})
    yield Output(
        labels,
        output_name="consensus_labels",
        metadata={
            **table_metadata(table),
            "method": config.method,
            "items": int(table["item_id"].nunique()),
            "mean_confidence": float(table["confidence"].mean()) if len(table) else 0.0,
            "low_confidence_items": int((table["confidence"] < review.MIN_CONFIDENCE).sum()),
            **versions,
        },
    )
    yield Output(
        scored,
        output_name="annotator_scores",
        metadata={
            **table_metadata(scores),
            "flagged": len(flagged),
            "flagged_annotators": MetadataValue.md(
                markdown_table(flagged[["annotator_id", "flag_reason"]], max_rows=50)
            ),
            **versions,
        },
    )


@daily_asset(
    GROUP,
    kinds=KINDS,
    single_run=True,
    description="Items a human must decide: low consensus confidence, split annotators, box label conflicts, "
    "the day's worst label issues cleanlab found (label_issues, at most max_label_issues), "
    "critical-class boxes only some annotators drew. Safety-critical classes first, then by severity-weighted uncertainty.",
)
def review_queue(
    context: AssetExecutionContext,
    config: ReviewConfig,
    guidelines: GuidelinesResource,
    validated_annotations: Frames,
    consensus_labels: Frames,
    label_issues: Frames,
) -> Output[DayFrames]:
    guideline_set = guidelines.load()
    annotations = validated_annotations.select(keep=quality.REVIEW_INPUTS)
    queues = {
        day: quality.review(
            for_day(annotations, day, "validated_annotations"),
            for_day(consensus_labels, day, "consensus_labels"),
            guideline_set.in_force(day),
            min_confidence=config.min_confidence,
            min_agreement=config.min_agreement,
            label_issues=issue_finding.worst_items(for_day(label_issues, day, "label_issues"), config.max_label_issues),
        )
        for day in days(context)
    }
    queue = concat_days(queues)
    return Output(
        queues,
        metadata={
            **table_metadata(queue),
            "critical_items": int(queue["critical"].sum()) if len(queue) else 0,
            "label_issue_items": int(queue["reason"].str.contains("label_issue:", regex=False).sum())
            if len(queue)
            else 0,
            **guideline_entry({day: guideline_set.in_force(day).version for day in queues}),
        },
    )


@daily_asset(
    GROUP,
    kinds={"python", "pandas", "parquet", "cleanlab"},
    single_run=True,
    description="Labels the production model says are likely wrong, found with cleanlab on the day's consensus: "
    "confident learning on scene labels (the model's class probabilities, `prob_<class>` columns of the "
    "production log), CROWDLAB on the judgments of items with probabilities (its consensus where it differs "
    "from ours), ObjectLab on boxes against the model's detections (swapped class, bad location, overlooked "
    "object). One row per issue, lowest label quality score first; items without model output are counted, "
    "not guessed. The scores mean something only if the model never trained on these items.",
)
def label_issues(
    context: AssetExecutionContext,
    config: LabelIssuesConfig,
    guidelines: GuidelinesResource,
    consensus_labels: Frames,
    validated_annotations: Frames,
    production_predictions: Frames,
    annotator_scores: Frames,
) -> Output[DayFrames]:
    guideline_set = guidelines.load()
    settings = issue_finding.LabelIssueConfig(**config.model_dump())
    annotations = validated_annotations.select(keep=quality.QUALITY_INPUTS)
    tables, metadata, versions = {}, {}, {}
    for day in days(context):
        current = guideline_set.in_force(day)
        consensus = for_day(consensus_labels, day, "consensus_labels")
        votes = quality.countable(for_day(annotations, day, "validated_annotations"))
        checked = production_predictions.only_items(issue_finding.checked_items(consensus, votes))
        predictions = predictions_under(for_day(checked, day, "production_predictions"), guideline_set, current.version)
        columns = [c[len(PROBABILITY_PREFIX) :] for c in issue_finding.probability_columns(predictions)]
        names = dict(
            zip(columns, guideline_set.read_under(pd.Series(columns, dtype=object), current.version), strict=True)
        )
        found = issue_finding.find(
            consensus,
            votes,
            predictions,
            [n for n, c in current.classes.items() if "classification" in c.geometry],
            [n for n, c in current.classes.items() if "bbox" in c.geometry],
            settings,
            names,
        )
        tables[day], versions[day] = found.issues, current.version
        metadata = {  # the last day's figures (a backfill's days each have their table)
            **issue_finding.summary(found),
            **crowdlab_beside_dawid_skene(found.annotators, for_day(annotator_scores, day, "annotator_scores")),
        }
    issues = concat_days(tables)
    return Output(
        tables,
        metadata={
            **table_metadata(issues),
            **metadata,
            "worst": MetadataValue.md(
                markdown_table(issues[["item_id", "issue", "label", "suggested_label", "score"]], max_rows=15)
            ),
            **guideline_entry(versions),
        },
    )


def crowdlab_beside_dawid_skene(annotators: pd.DataFrame, scores: pd.DataFrame) -> dict[str, float | int]:
    """How CROWDLAB's annotator quality ranks the annotators against Dawid-Skene's estimated accuracy (no
    annotator is named: identities stay out of metadata)."""
    if annotators.empty or "estimated_accuracy" not in scores:
        return {}
    both = annotators.merge(scores[["annotator_id", "estimated_accuracy"]], on="annotator_id").dropna()
    if len(both) < 3:
        return {"crowdlab_annotators": len(annotators)}
    rho = both["crowdlab_quality"].rank().corr(both["estimated_accuracy"].rank())
    return {"crowdlab_annotators": len(annotators), "crowdlab_vs_dawid_skene_spearman": round(float(rho), 4)}


quality_assets = [annotator_agreement, consensus_and_scores, review_queue, label_issues]
