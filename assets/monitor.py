"""Monitor: drift of a production day against the reference the current snapshot was trained on."""

from dagster import AssetExecutionContext, AssetIn, Config, MetadataValue, Output, asset

from assets.coverage import LOOKBACK
from assets.metadata import OWNERS, guideline_entry, table_metadata
from assets.partitioned import DayFrames, Frames
from assets.partitions import daily_partitions
from labelops import drift, snapshots
from labelops.guidelines import predictions_under
from labelops.reporting import markdown_table
from resources.storage import StorageResource
from resources.validation import GuidelinesResource

REFERENCE = drift.Reference()


DRIFT = drift.DriftConfig()


class DriftRunConfig(Config):
    p_value: float = DRIFT.p_value
    distance: float = DRIFT.distance
    dataset_share: float = DRIFT.dataset_share
    methods: dict[str, str] = {}  # column -> ks | chisquare | z | wasserstein | jensenshannon
    reference_days: int = REFERENCE.days
    reference_rows: int = REFERENCE.rows


@asset(
    partitions_def=daily_partitions,
    group_name="monitor",
    owners=OWNERS["monitor"],
    kinds={"python", "pandas", "parquet"},
    code_version="1",
    ins={"production_predictions": AssetIn()},
    description="The day's share of a drift reference, drawn once when the day arrives: "
    f"{REFERENCE.rows // REFERENCE.days:,} of its production rows (all of them on a smaller day; every column "
    "production_drift compares), with a seed of the day, so the day gives the same rows to every reference it "
    "is in. production_drift reads these instead of the days themselves, which it would otherwise read whole "
    f"each night ({REFERENCE.days} days of traffic for one reference).",
)
def production_sample(
    context: AssetExecutionContext, storage: StorageResource, production_predictions: Frames
) -> Output[DayFrames]:
    day = context.partition_key
    frames = production_predictions.select(drop=drift.PRODUCTION_META)
    if day not in frames:
        raise LookupError(
            f"production_predictions has not been materialized for {day}; materialize it for that day first"
        )
    sample = drift.day_sample(frames, day, REFERENCE.rows // REFERENCE.days, storage.batch_rows)
    return Output(
        {day: sample},
        metadata={**table_metadata(sample), "day_rows": frames.rows(day), "seed": drift.day_seed(day)},
    )


@asset(
    partitions_def=daily_partitions,
    group_name="monitor",
    owners=OWNERS["monitor"],
    kinds={"python", "pandas", "parquet", "scipy"},
    code_version="1",
    ins={
        "production_predictions": AssetIn(partition_mapping=LOOKBACK),
        "production_sample": AssetIn(partition_mapping=LOOKBACK),
    },
    deps=["dataset_snapshot"],
    description="Drift of the day's production inputs and predictions (every production column but ids, time, "
    "boxes and per-class probabilities) against the reference: production of the days the current snapshot was built from (before this day; "
    f"at most {REFERENCE.days} of them, evenly spread, and {REFERENCE.rows:,} rows), or the first "
    f"{REFERENCE.first_days} production days while no snapshot exists. Evidently's default tests and thresholds "
    "(KS / chi-square / z-test up to 1,000 reference rows, Wasserstein / Jensen-Shannon above), PSI beside them, "
    "and a `__dataset__` row that drifts when half of the columns do.",
)
def production_drift(
    context: AssetExecutionContext,
    config: DriftRunConfig,
    storage: StorageResource,
    guidelines: GuidelinesResource,
    production_predictions: Frames,
    production_sample: Frames,
) -> Output[DayFrames]:
    day = context.partition_key
    # ids, time, boxes: not monitored
    production_predictions = production_predictions.select(drop=drift.PRODUCTION_META)
    guideline_set = guidelines.load()
    guideline = guideline_set.in_force(day).version
    # the day is read in parts of storage.batch_rows rows: production grows with traffic, not with labels
    current_rows = production_predictions.rows(day) if day in production_predictions else 0
    parts = (
        predictions_under(part, guideline_set, guideline, keep_removed=True)
        for part in (production_predictions.batches(day, storage.batch_rows) if current_rows else ())
    )
    store = storage.warehouse_store
    version = snapshots.latest(store)
    source_days = snapshots.manifest(store, version)["source_partitions"] if version else []
    bounds = drift.Reference(config.reference_days, config.reference_rows, REFERENCE.first_days)
    reference_days = drift.reference_days(source_days, list(production_predictions), day, bounds)
    # a reference day's share drawn when the day arrived is read instead of the day (the same rows)
    reference = drift.reference_sample_parts(
        production_predictions, reference_days, bounds.rows, storage.batch_rows, drawn=production_sample
    )
    per_day = bounds.rows // max(len(reference_days), 1)
    kept = sum(drift.kept_share(production_sample, production_predictions, d, per_day) for d in reference_days)
    reference = predictions_under(reference, guideline_set, guideline, keep_removed=True)  # a renamed class is no drift
    settings = drift.DriftConfig(config.p_value, config.distance, config.dataset_share, dict(config.methods))
    measured = drift.day_drift(reference, parts, current_rows, settings)
    table = measured.table
    drifted = table[table["drifted"] & (table["feature"] != "__dataset__")]["feature"].tolist()
    dataset = bool(table.loc[table["feature"] == "__dataset__", "drifted"].iloc[0])
    if dataset:
        context.log.warning(f"{day}: dataset drift in {drifted}")
    return Output(
        {day: table},
        metadata={
            **table_metadata(table),
            "dataset_drift": dataset,
            "drifted_features": ", ".join(drifted) or "none",
            "reference": f"snapshot {version}" if version else f"first {len(reference_days)} production days",
            "reference_rows": len(reference),
            "reference_days": ", ".join(reference_days),
            "reference_days_drawn_before": f"{kept} of {len(reference_days)} (production_sample; the others read whole)",
            "mean_confidence": measured.mean_confidence,
            "reference_mean_confidence": float(reference["confidence"].mean()) if len(reference) else 0.0,
            "current_rows": current_rows,
            "current_sample": f"KS, Wasserstein: {min(current_rows, drift.CURRENT_SAMPLE):,} of {current_rows:,} rows",
            **guideline_entry({day: guideline}),
            "by_feature": MetadataValue.md(
                markdown_table(table[["feature", "method", "statistic", "p_value", "drifted", "psi_band"]], max_rows=40)
            ),
        },
    )
