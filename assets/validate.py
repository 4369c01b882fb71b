"""Validate: the Great Expectations suites gate the day's annotations; failing rows go to quarantine.

The asset reads the day's annotations and item catalog, lets labelops read every label
under the guideline in force and compute the geometry facts, runs the suites, and
splits the rows. Critical expectations are a blocking check: when one fails, quality
and curation assets downstream do not run for the day. Warnings are shown and never block.
"""

from datetime import UTC, datetime

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetOut,
    MetadataValue,
    Output,
    multi_asset,
)

from assets.metadata import OWNERS, guideline_entry, link, table_metadata
from assets.partitioned import SINGLE_RUN, Frames, concat_days, days, for_day
from assets.partitions import daily_partitions
from labelops import validation, warehouse
from labelops.expectations import SuiteOutcome
from labelops.reporting import counts_table, markdown_table
from resources.storage import StorageResource
from resources.validation import GreatExpectationsResource, GuidelinesResource

GROUP = "validate"
KINDS = {"python", "pandas", "parquet", "great_expectations"}
PREVIEW = ["annotation_id", "item_id", "annotator_id", "kind", "label", "guideline_version", "source_file"]
EXPECTATION_KEY = ["suite", "rule", "column"]
EXPECTATION_COLUMNS = [
    "suite",
    "rule",
    "column",
    "severity",
    "success",
    "unexpected_count",
    "unexpected_percent",
    "examples",
    "error",
]


@multi_asset(
    partitions_def=daily_partitions,
    backfill_policy=SINGLE_RUN,
    group_name=GROUP,
    outs={
        "validated_annotations": AssetOut(
            kinds=KINDS,
            owners=OWNERS[GROUP],
            code_version="1",
            description="The day's annotations that passed every critical expectation, read under the guideline "
            "in force (renamed and merged labels remapped, with `remapped_from`). Warnings travel with the row in "
            "`validation_warnings`.",
        ),
        "quarantined_annotations": AssetOut(
            kinds=KINDS,
            owners=OWNERS[GROUP],
            code_version="1",
            description="Annotations that failed a critical row-level rule, unchanged, with `rule` and `reason` "
            "(the expectation that failed, in words). `needs_relabel` rows were made under an older guideline "
            "whose class was split or redefined.",
        ),
    },
    check_specs=[
        AssetCheckSpec(
            "critical_expectations",
            asset="validated_annotations",
            blocking=True,
            description="Every critical expectation of the suites in expectations/ succeeded (row rules within "
            "their `mostly` tolerance). Blocks quality and curation for the day when it fails.",
        ),
        AssetCheckSpec(
            "warning_expectations",
            asset="validated_annotations",
            description="Warning-level expectations (tiny boxes, undeclared attribute values). Never blocks.",
        ),
        AssetCheckSpec(
            "rows_reconcile",
            asset="validated_annotations",
            blocking=True,
            description="Nothing is lost: label_exports rows = validated rows + quarantined rows.",
        ),
    ],
)
def validate_annotations(
    context: AssetExecutionContext,
    storage: StorageResource,
    guidelines: GuidelinesResource,
    great_expectations: GreatExpectationsResource,
    label_exports: Frames,
    item_catalog: Frames,
):
    guideline_set = guidelines.load()
    validated, quarantined, expectations, summaries, docs = {}, {}, [], [], {}
    for day in days(context):
        exports = for_day(label_exports, day, "label_exports")
        frame = validation.validation_frame(
            exports, for_day(item_catalog, day, "item_catalog"), guideline_set, day, datetime.now(UTC)
        )
        outcome = great_expectations.validate_frame(frame, asset_name="annotations")
        validated[day], quarantined[day] = validation.split_validated(frame, outcome.failures)
        docs[day] = _publish_docs(storage, day, outcome)
        summary = validation.summary(validated[day], quarantined[day])
        context.log.info(
            f"{day}: {summary['input_rows']} rows -> {summary['validated_rows']} validated, "
            f"{summary['quarantined_rows']} quarantined"
        )
        summaries.append({"day": day, "label_exports_rows": len(exports), **summary})
        expectations.append(outcome.expectations.assign(day=day))
    by_day = pd.DataFrame(summaries)
    results = pd.concat(expectations, ignore_index=True)
    all_validated, all_quarantined = concat_days(validated), concat_days(quarantined)
    summary = validation.summary(all_validated, all_quarantined)
    versions = {d: guideline_set.in_force(d).version for d in validated}
    links = {f"data_docs/{d}" if len(docs) > 1 else "data_docs": link for d, link in docs.items()}

    yield Output(
        validated,
        output_name="validated_annotations",
        metadata={
            **table_metadata(all_validated, preview_columns=PREVIEW),
            **{k: v for k, v in summary.items() if k != "quarantined_by_rule"},
            **guideline_entry(versions),
            "needs_relabel_rows": int(all_validated["needs_relabel"].notna().sum()),
            "by_label": MetadataValue.md(counts_table(all_validated["label"], "label")),
            "rows_with_warnings": int(all_validated["validation_warnings"].notna().sum()),
            **(
                {"by_day": MetadataValue.md(markdown_table(by_day.drop(columns="quarantined_by_rule"), max_rows=400))}
                if len(by_day) > 1
                else {}
            ),
            **links,
        },
    )
    yield Output(
        quarantined,
        output_name="quarantined_annotations",
        metadata={
            **table_metadata(
                all_quarantined, preview_columns=["annotation_id", "item_id", "label", "rule", "reason", "source_file"]
            ),
            "by_rule": MetadataValue.json(summary["quarantined_by_rule"]),
            **guideline_entry(versions),
            "by_annotator": MetadataValue.md(counts_table(all_quarantined["annotator_id"], "annotator_id")),
        },
    )
    shown = EXPECTATION_COLUMNS if len(by_day) == 1 else ["day", *EXPECTATION_COLUMNS]
    for severity, name, level in (
        ("critical", "critical_expectations", AssetCheckSeverity.ERROR),
        ("warning", "warning_expectations", AssetCheckSeverity.WARN),
    ):
        rows = results[results["severity"] == severity]
        failed = rows[~rows["success"]]
        yield AssetCheckResult(
            asset_key="validated_annotations",
            check_name=name,
            passed=failed.empty,
            severity=level,
            metadata={
                "expectations": len(rows.drop_duplicates(EXPECTATION_KEY)),
                "failed": len(failed.drop_duplicates(EXPECTATION_KEY)),
                "failed_rules": ", ".join(failed["rule"].unique()) or "none",
                "days_failed": ", ".join(sorted(failed["day"].unique())) or "none",
                "rows_flagged": int(rows["unexpected_count"].sum()),
                "results": MetadataValue.md(markdown_table(_sorted(rows)[shown], max_rows=60)),
                **links,
            },
        )
    lost = by_day[by_day["input_rows"] != by_day["label_exports_rows"]]
    yield AssetCheckResult(
        asset_key="validated_annotations",
        check_name="rows_reconcile",
        passed=lost.empty,
        severity=AssetCheckSeverity.ERROR,
        metadata={
            "label_exports_rows": int(by_day["label_exports_rows"].sum()),
            **{k: v for k, v in summary.items() if k.endswith("_rows")},
            "days_not_reconciled": ", ".join(lost["day"]) or "none",
        },
    )


def _sorted(rows: pd.DataFrame) -> pd.DataFrame:
    """Failures first, then the most unexpected rows."""
    return rows.sort_values(["success", "unexpected_count"], ascending=[True, False], kind="stable")


def _publish_docs(storage: StorageResource, day: str, outcome: SuiteOutcome) -> MetadataValue:
    """Great Expectations Data Docs for the day, replacing the previous run's, in the warehouse."""
    prefix = warehouse.data_docs(day)
    store = storage.warehouse_store
    for key in store.list(prefix):
        store.delete(key)
    for relative, data in outcome.docs.items():
        store.write_bytes(f"{prefix}/{relative}", data)
    return link(storage, f"{prefix}/index.html")
