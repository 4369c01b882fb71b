"""State: one current label state per item, folded day by day (labelops.state).

The three assets depend on their own earlier days (a time-window partition mapping ending at offset -1): the
state at the end of a day is the most recent earlier state (normally the previous day's) folded with the
day's validated annotations. That is the Dagster-native form of an incremental table: each partition is a
complete, immutable state as of its day, so a day can be rerun or read on its own; after an earlier day is
re-materialized, the state sensor (pipelines/automation.py) folds the later days again in order. Only the
latest earlier day is read; the others cost a listing.
"""

from collections.abc import Iterator

import numpy as np
import pandas as pd
from dagster import (
    AssetExecutionContext,
    AssetIn,
    AssetOut,
    Config,
    MetadataValue,
    Output,
    TimeWindowPartitionMapping,
    multi_asset,
)

from assets.metadata import OWNERS, column_schema, guideline_entry, table_metadata
from assets.partitioned import DayFrames, Frames, arrow_for_day, for_day
from assets.partitions import daily_asset, daily_partitions
from labelops import consensus, ingest, labeling, state
from labelops.columns import group_starts, isin, plain
from labelops.consensus import AnnotatorModel
from labelops.guidelines import labels_under
from labelops.layers import ROW, Layered
from labelops.reporting import markdown_table
from resources.storage import StorageResource
from resources.validation import GuidelinesResource

GROUP = "state"
KINDS = {"python", "pandas", "parquet"}
# The days before this one (a year): the state folds into the most recent of them that exists.
EARLIER_DAYS = TimeWindowPartitionMapping(start_offset=-365, end_offset=-1, allow_nonexistent_upstream_partitions=True)
DEFAULTS = state.StateConfig()


class LabelStateConfig(Config):
    method: str = DEFAULTS.method
    refit_days: int = DEFAULTS.refit_days
    box_quorum: int = DEFAULTS.box_quorum
    cluster_iou: float = DEFAULTS.cluster_iou
    answer_quorum: int = DEFAULTS.answer_quorum
    request_expire_days: int = DEFAULTS.request_expire_days
    # review_queue's min_confidence and min_agreement (set them alike): an item the day's queue lists for its scene
    # consensus alone stays in review only if its consensus pooled over days is below them too
    review_min_confidence: float = DEFAULTS.review_min_confidence
    review_min_agreement: float = DEFAULTS.review_min_agreement


def _previous_day(context: AssetExecutionContext, day: str, frames: Frames) -> str | None:
    """The most recent earlier day of the state (None before the first day); a gap of days never run is logged."""
    if not len(frames):
        return None
    latest = sorted(frames)[-1]
    expected = (pd.Timestamp(day) - pd.Timedelta(days=1)).date().isoformat()
    if latest != expected:
        context.log.warning(
            f"the state folds {day} into {latest}'s: the days between were never materialized "
            "(materialize them: the state sensor then folds the later days again)"
        )
    return latest


@daily_asset(
    GROUP,
    kinds=KINDS,
    ins={"item_index": AssetIn(partition_mapping=EARLIER_DAYS), "item_catalog": AssetIn()},
    description="Every item known so far, one row each (the latest delivery wins): the item catalogs of all "
    "days, plus the item rows our relabel batches wrote for the production items they sent, so answers to "
    "those items can enter a snapshot. dataset_snapshot takes item metadata (uri, size, slices) from it. A day "
    "that only adds items is stored as a layer over the day before (its new items; whole after 7 layers): read it "
    "through the IO manager, e.g. `defs.load_asset_value`, not with a bare Parquet reader.",
)
def item_index(
    context: AssetExecutionContext, storage: StorageResource, item_index: Frames, item_catalog: Frames
) -> Output[dict[str, object]]:  # a whole table (pd.DataFrame) or a Layered
    day = context.partition_key
    since = _previous_day(context, day, item_index)
    sent = ingest.read_sent_items(storage.warehouse_store, since, day)  # batches sent after the previous state
    today = for_day(item_catalog, day, "item_catalog")
    known = item_index.arrow(since) if since else None
    added = state.added_items(known, sent, today) if known is not None else None
    if since and known is not None and added is not None:  # new items only: a layer of them over the previous day
        output: pd.DataFrame | Layered = Layered(since, pd.DataFrame({ROW: []}), added, known.num_rows)
        rows, shown = known.num_rows + len(added), added
    else:
        previous = plain(known).to_pandas() if known is not None else pd.DataFrame()  # read once, either way
        whole = state.fold_items(previous, sent, today)
        output, rows, shown = whole, len(whole), whole
    return Output(
        {day: output},
        metadata={
            # the schema and preview of the rows the day added (of every row, when the index was folded whole)
            **table_metadata(
                shown, preview_columns=["item_id", "uri", "width", "height", "export_date", "source_file"]
            ),
            "dagster/row_count": rows,
            "catalogued_today": len(today),
            "sent_items_read": len(sent),
        },
    )


@daily_asset(
    GROUP,
    kinds=KINDS,
    ins={
        "label_votes": AssetIn(partition_mapping=EARLIER_DAYS),
        "validated_annotations": AssetIn(),
        "quarantined_annotations": AssetIn(),
    },
    description="Every judgment that counts for an item, across days: the previous day's vote sets, read under the "
    "day's guideline (renamed and merged classes take their new name, `remapped_from` keeps the original; split "
    "redefined and removed ones are marked `needs_relabel` and no longer count; only a removed class's objects hold no "
    "item for a relabel), plus the day's validated annotations "
    "(a judgment already in the state is not added again). Ordinary rounds pool; "
    "an answer to a relabel request (`answer_to`, from the task's batch) supersedes the item's earlier boxes "
    "(an answer without boxes says it has none) and, when it gives one, its scene label (`superseded_by`); they "
    "stay as lineage. A Label Studio annotation, or a CVAT task's image, "
    "delivered again after an edit (a cumulative export) replaces its earlier version (`replaced_on`), "
    "and one delivered cancelled or emptied (label_exports' emptied annotations) withdraws it. "
    "A day is stored as a layer over the day before (the judgments it added, the marks it changed; whole after 7 "
    "layers): read it through the IO manager, e.g. `defs.load_asset_value`, not with a bare Parquet reader.",
)
def label_votes(
    context: AssetExecutionContext,
    storage: StorageResource,
    guidelines: GuidelinesResource,
    label_votes: Frames,
    validated_annotations: Frames,
    quarantined_annotations: Frames,
) -> Output[dict[str, object]]:  # a whole table (pd.DataFrame) or a Layered
    day = context.partition_key
    since = _previous_day(context, day, label_votes)
    today = for_day(validated_annotations, day, "validated_annotations")
    copies = for_day(
        quarantined_annotations.select(
            keep=["item_id", "annotator_id", "source_ref", "source_format", "content_id", "duplicate_of", "export_date"]
        ),
        day,
        "quarantined_annotations",
    )
    emptied = ingest.read_emptied(storage.warehouse_store, day)  # written by label_exports beside its table
    guideline_set = guidelines.load()
    version = guideline_set.in_force(day).version
    previous_version = guideline_set.in_force(since).version if since else None
    if since and previous_version == version:
        # a night adds 2 % to the table: it is written as a layer over the previous day, and the fold reads of
        # the earlier votes only the columns that decide what the day changes
        previous = label_votes.select(keep=state.FOLD_INPUTS).arrow(since)
        marks, added = state.fold_day(previous, today, copies, emptied)
        output: pd.DataFrame | Layered = Layered(since, marks, added, previous.num_rows)
        counts = state.vote_summary(previous, day, marks, added)
        rows = previous.num_rows + len(added)
    else:  # the first day, or every vote read again under a new guideline version: the table is written whole
        previous = label_votes[since] if since else state.empty_votes()
        votes = state.fold_votes(
            previous,
            today,
            copies,
            emptied,
            guidelines=guideline_set,
            version=version,
            previous_version=previous_version,
        )
        output, added = votes, votes.iloc[len(previous) :]
        counts = state.vote_summary(votes, day)
        rows = len(votes)
    return Output(
        {day: output},
        metadata={
            # the schema and preview of the judgments the day added
            **table_metadata(
                added, preview_columns=["item_id", "kind", "label", "export_date", "answer_to", "superseded_by"]
            ),
            "dagster/row_count": rows,
            **guideline_entry({day: version}),
            **counts,
            "emptied_annotations_read": len(emptied),
        },
    )


@multi_asset(
    partitions_def=daily_partitions,
    group_name=GROUP,
    ins={
        "earlier_states": AssetIn("label_state", partition_mapping=EARLIER_DAYS),
        "earlier_models": AssetIn("annotator_model", partition_mapping=EARLIER_DAYS),
        "label_votes": AssetIn(),
        "gold_labels": AssetIn(),
        "review_queue": AssetIn(),
    },
    outs={
        "label_state": AssetOut(
            kinds=KINDS,
            owners=OWNERS[GROUP],
            code_version="1",
            description="One current label state per item: its consensus (one row per scene label and fused box; "
            "Dawid-Skene, boxes fused again for the items the day touched, answered items with one authoritative "
            "reviewer), its status (labeled, in_review, needs_relabel, relabel_requested with the batch, answered, "
            "no_consensus) and lineage (rounds, days, files, judgments). Scene labels: a Dawid-Skene fit over "
            "every current vote when annotator_model is due (weekly by default, and on a new guideline version); "
            "between fits the kept model labels the touched items and the others keep their labels. An item is "
            "in_review from the day's review queue, or when its boxes pooled over days disagree in a way no day's "
            "queue saw (a label conflict, a critical box another day's annotator missed: metadata "
            "box_disagreements_across_days). dataset_snapshot reads it.",
        ),
        "annotator_model": AssetOut(
            kinds=KINDS,
            owners=OWNERS[GROUP],
            code_version="1",
            description="The Dawid-Skene fit the label state labels scene judgments with: class priors (rows "
            "without an annotator) and each annotator's confusion matrix (probability of answering `observed` when "
            "the class is `true`), and the day it was fit (`fitted_on`). Fit again over every current vote every "
            "`refit_days` (label_state's config), on a new guideline version, or when a class it never saw is used.",
        ),
    },
)
def label_state(
    context: AssetExecutionContext,
    config: LabelStateConfig,
    storage: StorageResource,
    guidelines: GuidelinesResource,
    earlier_states: Frames,
    earlier_models: Frames,
    label_votes: Frames,
    gold_labels: Frames,
    review_queue: Frames,
) -> Iterator[Output[DayFrames]]:
    day = context.partition_key
    since = _previous_day(context, day, earlier_states)
    previous = earlier_states[since] if since else state.empty_state()
    guideline_set = guidelines.load()
    version = guideline_set.in_force(day).version
    same_guideline = since is not None and guideline_set.in_force(since).version == version
    # the state reads the judgments themselves, not the ids that deduplicate them (label_votes' business), as
    # Arrow: of millions of votes it converts the rows it uses (scene labels, the touched items' boxes and lineage)
    votes = arrow_for_day(label_votes.select(keep=state.STATE_INPUTS), day, "label_votes")
    settings = state.StateConfig(
        config.method,
        config.box_quorum,
        config.cluster_iou,
        config.answer_quorum,
        config.request_expire_days,
        config.refit_days,
        config.review_min_confidence,
        config.review_min_agreement,
    )
    # under a new guideline every item is read again (label_votes carried its votes); otherwise the day's items
    touched = state.touched_items(votes, day if since is None or same_guideline else None)
    # a fit under an earlier guideline knows its classes, not the new ones: the first day of a version fits again
    kept = earlier_models[since] if since is not None and same_guideline and since in earlier_models else None
    model = AnnotatorModel.from_frame(kept) if kept is not None else None
    # items in review wait for a decision, carried from day to day until an answer arrives; an item the day's queue
    # listed for the day's scene consensus alone waits only if the pooled consensus is unsure too
    queue = for_day(review_queue, day, "review_queue")
    reviewed_today = queue["item_id"]
    scene_only = queue["scene_only"].to_numpy(dtype=bool) if "scene_only" in queue else np.zeros(len(queue), bool)
    in_review = pd.concat(
        [
            previous.loc[previous["status"] == "in_review", "item_id"] if len(previous) else pd.Series(dtype=object),
            reviewed_today[~scene_only],
        ]
    )
    # A day's batch goes out after its nightly run: requests count from the next day, so a rerun gives the same state.
    sent = labeling.read_ledger(storage.warehouse_store, "relabel", before=day)
    requests = state.open_requests(sent, day, settings.request_expire_days)
    table, fitted = state.fold_state(
        votes,
        previous,
        touched,
        labels_under(for_day(gold_labels, day, "gold_labels"), guideline_set, version),
        settings,
        day=day,
        model=model,
        requests=requests,
        in_review=in_review,
        reviewed_today=reviewed_today,
        unsure_today=reviewed_today[scene_only],
        critical=frozenset(name for name, c in guideline_set.by_version[version].classes.items() if c.critical),
    )
    per_item = group_starts(table["item_id"])  # the state holds an item's status and lineage on each of its rows
    statuses = table.loc[per_item, "status"].value_counts().to_dict()
    reviewing = table.loc[per_item & (table["status"] == "in_review").to_numpy(), "item_id"]
    # in review for a reason other than a box disagreement the state found: held before, listed by the day's queue,
    # or listed for the day's scene alone with a pooled scene label unsure too
    explained = pd.concat([in_review, state.unsure_scenes(table, reviewed_today[scene_only], settings)]).astype(object)
    refit = fitted is not None and fitted.fitted_on == day
    yield Output(
        {day: table},
        output_name="label_state",
        metadata={
            **table_metadata(
                table, preview_columns=["item_id", "kind", "label", "confidence", "status", "rounds", "days"]
            ),
            "items": int(per_item.sum()),
            **guideline_entry({day: version}),
            "touched_today": int(touched.nunique()),
            # the day's queue items listed for the day's scene consensus alone, and those in review after the day
            # (the pooled consensus unsure too, or held already for another reason)
            "review_scene_only": MetadataValue.json(
                {
                    "listed": int(scene_only.sum()),
                    "in_review": int(
                        isin(reviewed_today[scene_only], table.loc[table["status"] == "in_review", "item_id"]).sum()
                    ),
                }
            ),
            # put in review tonight by the state itself, for a box disagreement across days
            "box_disagreements_across_days": int((~isin(reviewing, explained)).sum()),
            "by_status": MetadataValue.json({s: int(statuses.get(s, 0)) for s in state.STATUSES}),
            "answered": MetadataValue.md(
                markdown_table(
                    table.loc[table["status"] == "answered"].drop_duplicates("item_id")[
                        ["item_id", "answered_batch", "days"]
                    ],
                    max_rows=20,
                )
            ),
            "scene_labels": (
                "Dawid-Skene, fit over every current vote"
                if refit
                else "the items the day changed, with the kept Dawid-Skene fit"
                if fitted is not None
                else "majority vote"
            ),
        },
    )
    model_table = fitted.frame() if fitted is not None else pd.DataFrame(columns=consensus.MODEL_COLUMNS)
    yield Output(
        {day: model_table},
        output_name="annotator_model",
        metadata={  # no preview: the table names annotators
            "dagster/row_count": len(model_table),
            "dagster/column_schema": MetadataValue.table_schema(column_schema(model_table)),
            "fitted_on": fitted.fitted_on if fitted is not None else "none (no scene judgments, or majority vote)",
            "refit_today": refit,
            "annotators": len(fitted.annotators) if fitted is not None else 0,
            "classes": MetadataValue.json(fitted.labels.astype(str).tolist() if fitted is not None else []),
            "mean_estimated_accuracy": float(fitted.accuracy().mean()) if fitted is not None else 0.0,
        },
    )


state_assets = [item_index, label_votes, label_state]
