"""Labeling: the items that go back to labelers (relabel_batch) and the raw items that go out (labeling_tasks).

Both write into the warehouse's outbox, outbox/<area>/<day>/: a Label Studio import file (with the model's
predictions as pre-annotations, honeypot gold items spread through it), the labeling config of the guideline
in force, a CSV manifest and, for sent items no catalog holds, their item rows, which the next day's
item_index catalogues (docs/labeling.md). The batch is recorded in the outbox's ledger (one file per day,
outbox/<area>/ledger/<day>.csv, so runs of different days never overwrite each other's entries) so an
item is not sent twice while open.
"""

import pandas as pd
import pyarrow as pa
from dagster import AllPartitionMapping, AssetExecutionContext, AssetIn, Config, MetadataValue, Output

from assets.metadata import table_metadata
from assets.partitioned import DayFrames, Frames, for_day
from assets.partitions import daily_asset
from labelops import labeling, outbox, snapshots, state, warehouse
from labelops.columns import arrow_isin, first_rows, isin, plain
from labelops.guidelines import Guideline, predictions_under
from labelops.label_studio_config import labeling_config
from labelops.reporting import markdown_table
from resources.storage import StorageResource
from resources.validation import GuidelinesResource

GROUP = "labeling"
KINDS = {"python", "pandas", "labelstudio"}
# Both outbox assets are daily and read one day of the state, the latest, whatever day they run for: the label
# state says what came back (and a rerun of an old day never re-sends an answered item), the item index gives the
# media of items (review items, honeypots) delivered on earlier days.
OUTBOX_INS = {
    "item_index": AssetIn(partition_mapping=AllPartitionMapping()),
    "label_state": AssetIn(partition_mapping=AllPartitionMapping()),
}


# what the task ranking and the Label Studio pre-annotations read of the production log
PREDICTION_COLUMNS = ["item_id", "model_version", "predicted_label", "confidence", "x", "y", "w", "h"]


class RelabelConfig(Config):
    budget: int = 200
    drift_ratio: float = 1.5
    expire_days: int = state.StateConfig().request_expire_days  # an unanswered request lapses after this
    # A scene label pooled over days below this (the snapshot's own threshold, under which it leaves the item out)
    # goes back for review even when no day's review queue listed it.
    min_confidence: float = snapshots.CurationConfig().min_confidence
    # Share of each batch given to gold items (honeypots) to score the answers against; taken from the budget.
    honeypot_share: float = 0.05
    # Media URI of a production item that neither a catalog nor its production log row (`uri`) gives one,
    # e.g. "s3://frames/{day}/{item_id}.jpg". Unset, such items are left out of the batch (metadata `no_media`).
    production_uri_template: str | None = None


class TasksConfig(Config):
    budget: int = 100
    expire_days: int = 14
    # Item attributes whose under-coverage ranks the tasks. Unset, they are the coverage spec's item dimensions, so
    # the ranking follows config/coverage.yaml; either way those the catalog lacks are skipped and reported.
    dimensions: list[str] | None = None
    honeypot_share: float = 0.05


def _latest(frames: Frames, columns: list[str]) -> pd.DataFrame:
    """The latest day of a state asset (some columns), or an empty table before the first day."""
    return (
        frames.select(keep=columns)[sorted(frames)[-1]].reindex(columns=columns)
        if len(frames)
        else (pd.DataFrame(columns=columns))
    )


def _latest_items(frames: Frames, columns: list[str], items: pd.Series) -> pd.DataFrame:
    """Of the latest day of a state asset (some columns), the rows of these items alone: an item index holds a
    million rows, and a batch's honeypots need the gold items' few thousand."""
    if not len(frames):
        return pd.DataFrame(columns=columns)
    table = frames.select(keep=columns).arrow(sorted(frames)[-1])
    return plain(table.filter(pa.array(arrow_isin(table, "item_id", items)))).to_pandas().reindex(columns=columns)


def _held_before(label_state: Frames, day: str) -> pd.Series | None:
    """The items in review in the state before ``day`` (none before its first day), when the latest state is the
    day's own: an item in review in it and not in this one was put there that night. None for a batch of an
    earlier day (its queue is not the latest state's night's)."""
    days = sorted(label_state)
    if not days or days[-1] != day:
        return None
    if len(days) < 2:
        return pd.Series(dtype=object)
    earlier = label_state.select(keep=["item_id", "status"])[days[-2]]
    return earlier.loc[earlier["status"].astype(object).eq("in_review").to_numpy(), "item_id"]


def _answered(label_state: Frames) -> set[str]:
    """Items whose relabel answer is in the latest label state: sent once, answered, never sent again (also
    when an earlier day's batch is rerun after the answers came back)."""
    latest = _latest(label_state, ["item_id", "status"])
    return set(latest.loc[latest["status"] == "answered", "item_id"])


def _pre_annotation_metadata(pre: outbox.PreAnnotations) -> dict:
    return {
        "pre_annotations": len(pre.results),
        "predictions_remapped": pre.remapped,
        "predictions_dropped": MetadataValue.json(pre.dropped),
    }


def _send(
    storage: StorageResource,
    area: str,
    day: str,
    batch_id: str,
    manifest: pd.DataFrame,
    tasks: bytes,
    guideline: Guideline,
    items: pd.DataFrame | None = None,
) -> dict:
    """Files first, ledger last: a rerun of the day replaces the same batch instead of adding a second one."""
    store = storage.warehouse_store
    prefix = warehouse.outbox(area, day)
    config_key = f"{prefix}/labeling_config.{guideline.version}.xml"
    store.write_bytes(config_key, labeling_config(guideline))
    links = {"labeling_config": MetadataValue.path(f"{storage.warehouse}/{config_key}")}
    if items is not None:
        store.write_bytes(f"{prefix}/{batch_id}.items.csv", items.to_csv(index=False).encode())
        links["items_for_landing"] = MetadataValue.path(f"{storage.warehouse}/{prefix}/{batch_id}.items.csv")
    store.write_bytes(f"{prefix}/{batch_id}.label_studio.json", tasks)
    store.write_bytes(f"{prefix}/{batch_id}.csv", manifest.to_csv(index=False).encode())
    ledger = pd.DataFrame(
        {"item_id": manifest["item_id"], "batch_id": batch_id, "sent_on": day, "reason": manifest["reason"]}
    )[labeling.LEDGER_COLUMNS]
    store.write_bytes(warehouse.outbox_ledger(area, day), ledger.to_csv(index=False).encode())
    return {"outbox": MetadataValue.path(f"{storage.warehouse}/{prefix}/{batch_id}.label_studio.json"), **links}


@daily_asset(
    GROUP,
    kinds=KINDS,
    code_version="4",
    ins=OUTBOX_INS,
    description="Items to send back to labelers, under a budget, each with its reason: production items from "
    "drifted slices (stratified across them, least confident first), with classes training never saw, or "
    "predicted as a critical class in a slice below its coverage minimum, review-queue items (those cleanlab "
    "put there as `label_issue`, with their score), the label state's review backlog (items an earlier day's "
    "queue put in review, unanswered since, items the state put in review that night for a box disagreement "
    "across days, and items whose scene label pooled over days is below "
    "`min_confidence`, which the snapshot leaves out), and items whose "
    "class a guideline change split or redefined, plus honeypot gold items (`honeypot_share` of the batch, "
    "from the budget). Items without a media URI are left out. Written to outbox/relabel/<day>/: a Label "
    "Studio import (model predictions as pre-annotations in the classes of the guideline in force), its "
    "labeling config, a CSV manifest and the item rows of the sent production items. A day's batch, once its "
    "ledger entry is written, is what labelers have: a rerun reports it again and rewrites nothing.",
)
def relabel_batch(
    context: AssetExecutionContext,
    config: RelabelConfig,
    storage: StorageResource,
    guidelines: GuidelinesResource,
    production_drift: Frames,
    production_predictions: Frames,
    coverage_report: Frames,
    review_queue: Frames,
    item_index: Frames,
    gold_labels: Frames,
    label_state: Frames,
) -> Output[DayFrames]:
    day = context.partition_key
    batch_id = f"relabel-{day}"
    already = labeling.sent_batch(storage.warehouse_store, "relabel", day, batch_id)
    if already is not None:
        sent, version = already
        ledger = warehouse.outbox_ledger("relabel", day)
        context.log.info(f"{batch_id} was sent already ({ledger}): reported again, nothing rewritten")
        return Output(
            {day: sent},
            metadata={
                **table_metadata(sent),
                "already_sent": MetadataValue.path(f"{storage.warehouse}/{ledger}"),
                "guideline_version": version,
                "by_kind": MetadataValue.json(sent["kind"].value_counts().to_dict()),
            },
        )
    production_drift = for_day(production_drift, day, "production_drift")
    guideline_set = guidelines.load()
    guideline = guideline_set.in_force(day)
    production_predictions = predictions_under(
        for_day(production_predictions, day, "production_predictions"), guideline_set, guideline.version
    )
    coverage_report, review_queue = (
        for_day(coverage_report, day, "coverage_report"),
        for_day(review_queue, day, "review_queue"),
    )
    gold = for_day(gold_labels.select(keep=["item_id"]), day, "gold_labels")
    catalog = _latest(item_index, outbox.MEDIA_COLUMNS)
    rows = _latest(label_state, ["item_id", "kind", "confidence", "n_votes", "days", "status", "needs_relabel"])
    latest = first_rows(rows, "item_id")
    review_queue = labeling.held_for_review(review_queue, latest)
    needs_relabel = latest.loc[latest["status"] == "needs_relabel", ["item_id", "needs_relabel"]]
    backlog = labeling.review_backlog(
        rows, review_queue["item_id"], min_confidence=config.min_confidence, held_before=_held_before(label_state, day)
    )
    spec = guidelines.coverage_spec(guideline)
    slices = [name for name, dimension in spec.dimensions.items() if dimension.source == "item"]
    ledger = labeling.read_ledger(storage.warehouse_store, "relabel")
    open_items = labeling.open_requests(
        ledger[ledger["batch_id"] != batch_id], latest, day, expire_days=config.expire_days
    )
    answered = _answered(label_state)
    held_out = open_items | answered  # answered items are never sent again
    candidates = labeling.relabel_candidates(
        production_predictions,
        production_drift,
        coverage_report,
        review_queue,
        needs_relabel,
        backlog,
        drift_ratio=config.drift_ratio,
    )
    media = outbox.media(
        candidates["item_id"], catalog, production_predictions, day=day, uri_template=config.production_uri_template
    )
    has_media = isin(candidates["item_id"], media["item_id"])
    no_media = candidates[~has_media].drop_duplicates("item_id")
    budget = outbox.item_budget(config.budget, config.honeypot_share)
    chosen = labeling.select(candidates[has_media], budget, held_out).assign(batch_id=batch_id)
    chosen = chosen[["item_id", "reason", "kind", "priority", "batch_id", "rank"]]
    batch, media, honeypots = outbox.with_honeypots(
        chosen, media, gold, catalog, share=config.honeypot_share, exclude=held_out, batch_id=batch_id, day=day
    )
    tasks, pre = outbox.task_file(batch, media, production_predictions, guideline_set, guideline, batch_id=batch_id)
    items = outbox.catalog_rows(media[isin(media["item_id"], batch["item_id"])], production_predictions, slices)
    links = _send(storage, "relabel", day, batch_id, batch, tasks, guideline, items)
    return Output(
        {day: batch},
        metadata={
            **table_metadata(batch),
            **links,
            **_pre_annotation_metadata(pre),
            "candidates": len(candidates),
            "review_backlog": len(backlog),
            "skipped_open": len(open_items),  # still out in an earlier batch
            "skipped_answered": len(answered),  # answered: never sent again
            "guideline_version": guideline.version,
            "item_budget": budget,
            "honeypots": honeypots["sent"],
            "honeypot_detail": MetadataValue.json(honeypots),
            "no_media": len(no_media),
            "no_media_by_kind": MetadataValue.json(no_media["kind"].value_counts().to_dict()),
            "production_items_catalogued": len(items),
            "by_kind": MetadataValue.json(batch["kind"].value_counts().to_dict()),
            "top": MetadataValue.md(markdown_table(chosen[["item_id", "reason", "priority"]], max_rows=15)),
        },
    )


@daily_asset(
    GROUP,
    kinds=KINDS,
    code_version="3",
    ins=OUTBOX_INS,
    description="New raw items of the day's item catalog that nobody has labeled, exported as labeling tasks "
    "under a budget, most valuable first: items in slices production reaches more than training covers, then "
    "the model's least confident. An item is not exported again until its labels come back or the export "
    "expires (items the model sees a critical class in rank higher); items without a media URI are left out. "
    "Honeypot gold items make `honeypot_share` of the batch, from the budget. Written to outbox/tasks/<day>/ "
    "as a Label Studio import, its labeling config and a CSV manifest.",
)
def labeling_tasks(
    context: AssetExecutionContext,
    config: TasksConfig,
    storage: StorageResource,
    item_catalog: Frames,
    item_index: Frames,
    guidelines: GuidelinesResource,
    coverage_report: Frames,
    production_predictions: Frames,
    gold_labels: Frames,
    label_state: Frames,
) -> Output[DayFrames]:
    day = context.partition_key
    batch_id = f"tasks-{day}"
    day_catalog, coverage_report = (
        for_day(item_catalog, day, "item_catalog"),
        for_day(coverage_report, day, "coverage_report"),
    )
    gold = for_day(gold_labels.select(keep=["item_id"]), day, "gold_labels")
    gold_catalog = _latest_items(item_index, outbox.MEDIA_COLUMNS, gold["item_id"])  # the honeypots' media
    labeled_items = _latest(label_state, ["item_id", "days"])  # every item with a label state, however old
    guideline_set = guidelines.load()
    guideline = guideline_set.in_force(day)
    day_predictions = production_predictions.select(keep=PREDICTION_COLUMNS).only_items(
        labeling.task_items(day_catalog, gold)
    )
    production_predictions = predictions_under(
        for_day(day_predictions, day, "production_predictions"), guideline_set, guideline.version
    )
    spec = guidelines.coverage_spec(guideline)
    critical = set(spec.critical)
    spec_dimensions = [name for name, dimension in spec.dimensions.items() if dimension.source == "item"]
    wanted = spec_dimensions if config.dimensions is None else config.dimensions
    dimensions = [d for d in wanted if d in day_catalog.columns]
    ledger = labeling.read_ledger(storage.warehouse_store, "tasks")
    earlier = ledger[ledger["batch_id"] != batch_id]
    open_items = labeling.still_open(
        earlier, state.last_labeled(labeled_items, among=earlier["item_id"]), day, expire_days=config.expire_days
    )
    candidates = labeling.task_candidates(
        day_catalog, labeled_items["item_id"], coverage_report, production_predictions, dimensions, critical
    )
    media = outbox.media(candidates["item_id"], day_catalog, pd.DataFrame(), day=day)
    has_media = isin(candidates["item_id"], media["item_id"])
    budget = outbox.item_budget(config.budget, config.honeypot_share)
    chosen = labeling.select_tasks(candidates, has_media, open_items, budget, batch_id=batch_id, dimensions=dimensions)
    batch, media, honeypots = outbox.with_honeypots(
        chosen, media, gold, gold_catalog, share=config.honeypot_share, exclude=open_items, batch_id=batch_id, day=day
    )
    batch["uri"] = batch["item_id"].map(media.set_index("item_id")["uri"])
    tasks, pre = outbox.task_file(batch, media, production_predictions, guideline_set, guideline, batch_id=batch_id)
    links = _send(storage, "tasks", day, batch_id, batch, tasks, guideline)
    return Output(
        {day: batch},
        metadata={
            **table_metadata(batch),
            **links,
            **_pre_annotation_metadata(pre),
            "raw_items": len(candidates),
            "skipped_open": len(open_items),
            "guideline_version": guideline.version,
            "item_budget": budget,
            "honeypots": honeypots["sent"],
            "honeypot_detail": MetadataValue.json(honeypots),
            "no_media": int((~has_media).sum()),
            "dimensions": MetadataValue.json(
                {"used": dimensions, "skipped": [d for d in wanted if d not in dimensions]}
            ),
        },
    )
