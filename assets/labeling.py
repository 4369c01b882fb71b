"""Labeling: the items that go back to labelers (relabel_batch) and the raw items that go out (labeling_tasks).

Both write a Label Studio import file (with the model's predictions as pre-annotations) and a CSV
manifest into the warehouse's outbox, and record the batch in the outbox's ledger (one file per day,
outbox/<area>/ledger/<day>.csv, so runs of different days never overwrite each other's entries) so an
item is not sent twice while open.
"""

import io

import pandas as pd
from dagster import AllPartitionMapping, AssetExecutionContext, AssetIn, Config, MetadataValue, Output, asset

from assets.coverage import LOOKBACK
from assets.metadata import OWNERS, table_metadata
from assets.partitioned import DayFrames, Frames, concat_days, for_day
from labelops import labeling, state
from labelops.reporting import markdown_table
from pipelines.partitions import daily_partitions
from resources.storage import StorageResource
from resources.validation import GuidelinesResource

GROUP = "labeling"
KINDS = {"python", "pandas", "labelstudio"}
# Both outbox assets are daily and read the labels of the lookback window, to know what came back.
OUTBOX_ASSET = {
    "partitions_def": daily_partitions,
    "group_name": GROUP,
    "owners": OWNERS[GROUP],
    "kinds": KINDS,
    "code_version": "1",
    "ins": {"label_exports": AssetIn(partition_mapping=LOOKBACK)},
}


# what the task ranking and the Label Studio pre-annotations read of the production log
PREDICTION_COLUMNS = ["item_id", "model_version", "predicted_label", "confidence", "x", "y", "w", "h"]


class RelabelConfig(Config):
    budget: int = 200
    drift_ratio: float = 1.5
    expire_days: int = state.StateConfig().request_expire_days  # an unanswered request lapses after this


class TasksConfig(Config):
    budget: int = 100
    expire_days: int = 14
    # Item attributes whose under-coverage ranks the tasks. Unset, they are the coverage spec's item dimensions, so
    # the ranking follows config/coverage.yaml; either way those the catalog lacks are skipped and reported.
    dimensions: list[str] | None = None


def _ledger(storage: StorageResource, area: str) -> pd.DataFrame:
    store = storage.warehouse_store
    frames = [pd.read_csv(io.BytesIO(store.read_bytes(key)), dtype=str) for key in store.list(f"outbox/{area}/ledger")]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=labeling.LEDGER_COLUMNS)


def _answered(label_state: Frames) -> set[str]:
    """Items whose relabel answer is in the latest label state: sent once, answered, never sent again (also
    when an earlier day's batch is rerun after the answers came back)."""
    if not len(label_state):
        return set()
    latest = label_state.select(keep=["item_id", "status"])[sorted(label_state)[-1]]
    return set(latest.loc[latest["status"] == "answered", "item_id"])


def _send(storage: StorageResource, area: str, day: str, batch_id: str, chosen: pd.DataFrame, tasks: bytes) -> dict:
    """Files first, ledger last: a rerun of the day replaces the same batch instead of adding a second one."""
    store = storage.warehouse_store
    prefix = f"outbox/{area}/{day}"
    store.write_bytes(f"{prefix}/{batch_id}.label_studio.json", tasks)
    store.write_bytes(f"{prefix}/{batch_id}.csv", chosen.to_csv(index=False).encode())
    ledger = pd.DataFrame({"item_id": chosen["item_id"], "batch_id": batch_id, "sent_on": day})
    store.write_bytes(f"outbox/{area}/ledger/{day}.csv", ledger.to_csv(index=False).encode())
    return {"outbox": MetadataValue.path(f"{storage.warehouse}/{prefix}/{batch_id}.label_studio.json")}


@asset(
    **OUTBOX_ASSET,
    description="Items to send back to labelers, under a budget, each with its reason: production items from "
    "drifted slices (stratified across them, least confident first), with classes training never saw, or "
    "predicted as a critical class in a slice below its coverage minimum, review-queue items, and items whose class a guideline change split or redefined. Written to "
    "outbox/relabel/<day>/ as a Label Studio import (model predictions as pre-annotations) and a CSV.",
)
def relabel_batch(
    context: AssetExecutionContext,
    config: RelabelConfig,
    storage: StorageResource,
    production_drift: Frames,
    production_predictions: Frames,
    coverage_report: Frames,
    review_queue: Frames,
    quarantined_annotations: Frames,
    item_catalog: Frames,
    label_exports: Frames,
    label_state: Frames,
) -> Output[DayFrames]:
    day = context.partition_key
    batch_id = f"relabel-{day}"
    production_drift = for_day(production_drift, day, "production_drift")
    production_predictions = for_day(production_predictions, day, "production_predictions")
    coverage_report, review_queue = for_day(coverage_report, day, "coverage_report"), for_day(review_queue, day, "review_queue")
    quarantined_annotations = for_day(quarantined_annotations, day, "quarantined_annotations")
    item_catalog = for_day(item_catalog, day, "item_catalog")
    label_exports = concat_days(label_exports.select(keep=["item_id", "export_date"]))
    ledger = _ledger(storage, "relabel")
    open_items = labeling.still_open(ledger[ledger["batch_id"] != batch_id], label_exports, day,
                                     expire_days=config.expire_days)
    answered = _answered(label_state)
    candidates = labeling.relabel_candidates(production_predictions, production_drift, coverage_report, review_queue,
                                             quarantined_annotations, drift_ratio=config.drift_ratio)
    chosen = labeling.select(candidates, config.budget, open_items | answered).assign(batch_id=batch_id)
    chosen = chosen[["item_id", "reason", "kind", "priority", "batch_id", "rank"]]
    tasks = labeling.label_studio_tasks(chosen, item_catalog, production_predictions, batch_id=batch_id)
    links = _send(storage, "relabel", day, batch_id, chosen, tasks)
    return Output({day: chosen}, metadata={
        **table_metadata(chosen), **links,
        "candidates": len(candidates), "skipped_open": len(open_items), "skipped_answered": len(answered),
        "by_kind": MetadataValue.json(chosen["kind"].value_counts().to_dict()),
        "top": MetadataValue.md(markdown_table(chosen[["item_id", "reason", "priority"]], max_rows=15)),
    })


@asset(
    **OUTBOX_ASSET,
    description="New raw items of the day's item catalog that nobody has labeled, exported as labeling tasks "
    "under a budget, most valuable first: items in slices production reaches more than training covers, then "
    "the model's least confident. An item is not exported again until its labels come back or the export "
    "expires (items the model sees a critical class in rank higher). Written to outbox/tasks/<day>/ as a "
    "Label Studio import and a CSV manifest.",
)
def labeling_tasks(
    context: AssetExecutionContext,
    config: TasksConfig,
    storage: StorageResource,
    item_catalog: Frames,
    label_exports: Frames,
    guidelines: GuidelinesResource,
    coverage_report: Frames,
    production_predictions: Frames,
    label_state: Frames,
) -> Output[DayFrames]:
    day = context.partition_key
    batch_id = f"tasks-{day}"
    item_catalog, coverage_report = for_day(item_catalog, day, "item_catalog"), for_day(coverage_report, day, "coverage_report")
    production_predictions = for_day(production_predictions.select(keep=PREDICTION_COLUMNS), day, "production_predictions")
    label_exports = concat_days(label_exports.select(keep=["item_id", "export_date"]))
    spec = guidelines.coverage_spec(guidelines.load().in_force(day))
    critical = set(spec.critical)
    spec_dimensions = [name for name, dimension in spec.dimensions.items() if dimension.source == "item"]
    wanted = spec_dimensions if config.dimensions is None else config.dimensions
    dimensions = [d for d in wanted if d in item_catalog.columns]
    ledger = _ledger(storage, "tasks")
    open_items = labeling.still_open(ledger[ledger["batch_id"] != batch_id], label_exports, day, expire_days=config.expire_days)
    labeled = set(label_exports["item_id"]) if len(label_exports) else set()
    if len(label_state):  # every item with a label state, however long ago it was labeled
        labeled |= set(label_state.select(keep=["item_id"])[sorted(label_state)[-1]]["item_id"])
    candidates = labeling.task_candidates(item_catalog, labeled, coverage_report, production_predictions, dimensions,
                                          critical)
    chosen = candidates[~candidates["item_id"].isin(open_items)].head(config.budget).reset_index(drop=True)
    chosen = chosen.assign(batch_id=batch_id, rank=range(1, len(chosen) + 1))
    manifest = chosen[["item_id", "uri", "reason", "priority", "batch_id", "rank", *dimensions]]
    tasks = labeling.label_studio_tasks(manifest, item_catalog, production_predictions, batch_id=batch_id)
    links = _send(storage, "tasks", day, batch_id, manifest, tasks)
    return Output({day: manifest}, metadata={
        **table_metadata(manifest), **links, "raw_items": len(candidates), "skipped_open": len(open_items),
        "dimensions": MetadataValue.json({"used": dimensions, "skipped": [d for d in wanted if d not in dimensions]}),
    })
