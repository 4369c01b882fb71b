"""Running the Great Expectations suites in ``expectations/`` on a pandas frame.

Suites are GX 1.x ``ExpectationSuite`` JSON, one file per suite, loaded at run time
into an ephemeral context. Each expectation carries its ``severity`` (critical or
warning) and, in ``meta.rule``, the short rule name that quarantine reports. Great
Expectations is imported inside :func:`run_suites` only: it takes seconds to import,
and most code paths never validate.
"""

from __future__ import annotations

import gc
import json
import math
import sys
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from labelops.reporting import json_safe
from labelops.storage import Store

RESULT_FORMAT = {"result_format": "COMPLETE", "partial_unexpected_count": 5}
EXAMPLES = 5


class SuiteError(ValueError):
    """A suite file that is not a valid GX suite; the message names the file."""


@dataclass
class SuiteOutcome:
    """What the suites said, per expectation and per failing row."""

    expectations: pd.DataFrame  # suite, rule, type, column, severity, description, success, unexpected_count, …
    failures: pd.DataFrame  # row, annotation_id, rule, severity, reason
    docs: dict[str, bytes]  # Data Docs site files, relative path -> content

    def failed(self, severity: str) -> pd.DataFrame:
        e = self.expectations
        return e[(e["severity"] == severity) & ~e["success"]]


def load_suites(store: Store) -> list[dict[str, Any]]:
    """Suite documents from every ``<name>.json`` file, checked for the fields the runner relies on."""
    keys = sorted(k for k in store.list() if k.endswith(".json"))
    suites = []
    for key in keys:
        where = f"{store.url}/{key}"
        try:
            document = json.loads(store.read_bytes(key))
        except json.JSONDecodeError as error:
            raise SuiteError(f"{where}: invalid JSON ({error})") from None
        if not isinstance(document, dict) or not isinstance(document.get("expectations"), list):
            raise SuiteError(f"{where}: a suite needs a name and a list of expectations")
        for expectation in document["expectations"]:
            if expectation.get("severity") not in ("critical", "warning", "info"):
                raise SuiteError(f"{where}: {expectation.get('type')} needs a severity (critical, warning or info)")
            if not (expectation.get("meta") or {}).get("rule") or not expectation.get("description"):
                raise SuiteError(f"{where}: {expectation.get('type')} needs meta.rule and a description")
        suites.append(document)
    if not suites:
        raise SuiteError(f"{store.url}: no expectation suites found")
    return suites


def _import_great_expectations() -> None:
    """Great Expectations, imported at its first use. Its import makes 190,000 objects that live as long as the
    process, and the garbage collector's full passes walked them all again, during the import and after it (at a
    million annotations, about 0.4 s a night): the collector is paused while they are made, and they are frozen
    out of its later passes (``gc.freeze``; reference counting still frees them)."""
    if "great_expectations" in sys.modules:
        return
    enabled = gc.isenabled()
    gc.disable()
    try:
        import great_expectations  # noqa: F401
        from great_expectations.execution_engine import pandas_execution_engine  # noqa: F401
    finally:
        if enabled:
            gc.enable()
    gc.collect()  # what was garbage before is collected, not frozen
    gc.freeze()


def run_suites(
    frame: pd.DataFrame, suites: list[dict[str, Any]], *, asset_name: str, id_column: str = "annotation_id"
) -> SuiteOutcome:
    """Validate ``frame`` against every suite through GX checkpoints that also render Data Docs.

    One checkpoint per suite, all under one run id, so each suite's batch can be the columns it reads
    (see :func:`suite_batch`): GX fingerprints and filters the whole batch for every row-level
    expectation, and at a million rows that, not the checks, is most of the time.
    """
    _import_great_expectations()
    import great_expectations as gx
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.base import ProgressBarsConfig
    from great_expectations.data_context.types.resource_identifiers import ExpectationSuiteIdentifier
    from great_expectations.execution_engine import pandas_execution_engine

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    run_id = RunIdentifier(run_time=datetime.now(UTC))
    with tempfile.TemporaryDirectory(prefix="labelops-docs-") as docs_dir:
        context.add_data_docs_site(
            site_name="labelops",
            site_config={
                "class_name": "SiteBuilder",
                "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": docs_dir},
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            },
        )
        batch_definition = (
            context.data_sources.add_pandas("labelops")
            .add_dataframe_asset(asset_name)
            .add_batch_definition_whole_dataframe("partition")
        )
        runs, pages = [], []
        # GX fingerprints a pandas batch under HASH_THRESHOLD (1 GB) by hashing every value, and a larger one not
        # at all: the fingerprint is a batch marker in the results, which nothing here reads, and the hash cost 2.1 s
        # of validation's 5.9 s at a million rows. Every batch is validated as GX validates a large one.
        threshold, pandas_execution_engine.HASH_THRESHOLD = pandas_execution_engine.HASH_THRESHOLD, 0
        try:
            for document in suites:
                suite = context.suites.add(gx.ExpectationSuite(**document))
                definition = context.validation_definitions.add(
                    gx.ValidationDefinition(name=suite.name, data=batch_definition, suite=suite)
                )
                checkpoint = context.checkpoints.add(
                    gx.Checkpoint(
                        name=f"{asset_name}_{suite.name}_checkpoint",
                        validation_definitions=[definition],
                        result_format=RESULT_FORMAT,
                    )
                )
                result = checkpoint.run(batch_parameters={"dataframe": suite_batch(frame, document)}, run_id=run_id)
                runs.extend(result.run_results.values())
                for identifier, run in result.run_results.items():
                    pages += [identifier, ExpectationSuiteIdentifier(name=run.suite_name)]
        finally:
            pandas_execution_engine.HASH_THRESHOLD = threshold
        # the pages UpdateDataDocsAction renders after each checkpoint, rendered once for all of them: each build
        # compiles GX's page templates again (0.4 s of a million-row validation's 2.2 s)
        context.build_data_docs(site_names=["labelops"], resource_identifiers=pages, build_index=True)
        docs = {p.relative_to(docs_dir).as_posix(): p.read_bytes() for p in Path(docs_dir).rglob("*") if p.is_file()}

    rows, failures = [], []
    for run in runs:
        for item in run.results:
            config = item.expectation_config
            if config is None:
                raise RuntimeError(f"{run.suite_name}: Great Expectations returned a result without its expectation")
            rule = config.meta["rule"]
            severity = config.severity.value if hasattr(config.severity, "value") else str(config.severity)
            detail = item.result or {}
            raised = item.exception_info.get("raised_exception") if isinstance(item.exception_info, dict) else False
            rows.append(
                {
                    "suite": run.suite_name,
                    "rule": rule,
                    "type": config.type,
                    "column": config.kwargs.get("column"),
                    "severity": severity,
                    "description": config.description,
                    "success": bool(item.success),
                    "unexpected_count": int(detail.get("unexpected_count") or 0),
                    "unexpected_percent": _finite(detail.get("unexpected_percent")),
                    "observed": json_safe(detail.get("observed_value")),
                    "examples": json_safe((detail.get("partial_unexpected_list") or [])[:EXAMPLES]),
                    "error": item.exception_info.get("exception_message") if raised else None,
                }
            )
            failures.extend(
                (int(position), rule, severity, config.description)
                for position in detail.get("unexpected_index_list") or []
            )
    failure_frame = pd.DataFrame(failures, columns=["row", "rule", "severity", "reason"])
    if id_column in frame:  # the failing rows' ids only: a million ids as Python strings cost more than the rest
        positions = failure_frame["row"].to_numpy(dtype=int)
        ids = frame[id_column].iloc[positions].to_numpy(dtype=object) if len(positions) else []
        failure_frame.insert(1, "annotation_id", ids)
    return SuiteOutcome(expectations=pd.DataFrame(rows), failures=failure_frame, docs=docs)


def suite_batch(frame: pd.DataFrame, suite: dict[str, Any]) -> pd.DataFrame:
    """The part of ``frame`` a suite reads: the columns its expectations name, same rows and index.

    A suite with any expectation that is not about one column alone (the table's columns, a row
    condition, several columns) gets the whole frame. A named column the frame lacks is left for GX
    to report, as it would on the whole frame.
    """
    columns: list[str] = []
    for expectation in suite["expectations"]:
        kwargs = expectation.get("kwargs") or {}
        column = kwargs.get("column")
        if not isinstance(column, str) or kwargs.get("row_condition") is not None:
            return frame
        if column in frame.columns and column not in columns:
            columns.append(column)
    return frame[columns]


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    number = float(value)
    return number if math.isfinite(number) else None
