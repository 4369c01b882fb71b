"""Self-contained HTML reports: one file, images inlined, no scripts, every piece of text escaped.

The quality report of a day and the report of a snapshot are what an ML lead reads without
opening Dagster. Label names, annotator ids and reasons come from vendors' files, so they pass
through `html.escape`; a Content-Security-Policy forbids scripts and remote loads, so even a
mistake in escaping could not run anything when the file is opened.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from labelops import plots
from labelops.columns import first_rows, isin
from labelops.state import loop_by_batch

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #1d2733; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #d8dee6; padding-bottom: 0.2em; margin-top: 2em; }
.facts { display: flex; flex-wrap: wrap; gap: 0.6em; } .fact { background: #f3f6f9; border-radius: 6px; padding: 0.5em 0.8em; }
.fact b { display: block; font-size: 1.3em; } table { border-collapse: collapse; margin: 0.6em 0; font-size: 13px; }
th, td { border: 1px solid #d8dee6; padding: 3px 7px; text-align: left; vertical-align: top; } th { background: #f3f6f9; }
.bad { color: #c62828; font-weight: 600; } .good { color: #2e7d32; font-weight: 600; } .note { color: #5b6673; }
img { max-width: 100%; }
"""


class Report:
    """An HTML document built from escaped parts."""

    def __init__(self, title: str, subtitle: str) -> None:
        self.title = title
        self.parts = [f"<h1>{_e(title)}</h1>", f"<p class='note'>{_e(subtitle)}</p>"]

    def section(self, title: str) -> None:
        self.parts.append(f"<h2>{_e(title)}</h2>")

    def text(self, text: str, css: str = "") -> None:
        self.parts.append(f"<p class='{_e(css)}'>{_e(text)}</p>")

    def facts(self, values: Mapping[str, object]) -> None:
        cells = "".join(f"<div class='fact'>{_e(k)}<b>{_e(_fmt(v))}</b></div>" for k, v in values.items())
        self.parts.append(f"<div class='facts'>{cells}</div>")

    def table(self, frame: pd.DataFrame, *, max_rows: int = 30) -> None:
        if frame.empty:
            self.text("(no rows)", "note")
            return
        shown = frame.head(max_rows)
        head = "".join(f"<th>{_e(c)}</th>" for c in shown.columns)
        rows = "".join(
            "<tr>" + "".join(f"<td>{_e(_fmt(v))}</td>" for v in row) + "</tr>" for row in shown.itertuples(index=False)
        )
        self.parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        if len(frame) > max_rows:
            self.text(f"{len(frame) - max_rows} more rows not shown", "note")

    def image(self, png: bytes, alt: str) -> None:
        data = base64.b64encode(png).decode("ascii")
        self.parts.append(f"<img alt='{_e(alt)}' src='data:image/png;base64,{data}'>")

    def link(self, text: str, href: str) -> None:
        self.parts.append(f"<p><a href='{_e(href)}'>{_e(text)}</a></p>")

    def html(self) -> str:
        return (
            "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            f"<meta http-equiv='Content-Security-Policy' content=\"{CSP}\">"
            f"<title>{_e(self.title)}</title><style>{STYLE}</style></head><body>"
            + "".join(self.parts)
            + "</body></html>"
        )


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: object) -> str:
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def quality_report(
    day: str,
    *,
    guideline: str,
    validated: pd.DataFrame,
    quarantined: pd.DataFrame,
    agreement: pd.DataFrame,
    scores: pd.DataFrame,
    consensus: pd.DataFrame,
    coverage: pd.DataFrame,
    coverage_heatmap: bytes | None,
    drift: pd.DataFrame,
    relabel: pd.DataFrame | None,
    min_confidence: float,
    state: pd.DataFrame | None = None,
    snapshot_items: pd.Series | None = None,
    sent: pd.DataFrame | None = None,
    data_docs: str | None = None,
    label_issues: pd.DataFrame | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> str:
    """The day's quality report: validation, agreement, annotators, consensus, coverage, drift, relabel batch,
    and the labeling loop (what was sent back, what was answered, what of it is in the latest snapshot)."""
    report = Report(f"labelops quality report — {day}", f"guideline {guideline}")

    progress("validation summary")
    report.section("Validation")
    rules = (
        quarantined["rule"].astype(str).str.split("; ").explode().value_counts()
        if len(quarantined)
        else pd.Series(dtype=int)
    )
    report.facts(
        {
            "input rows": len(validated) + len(quarantined),
            "validated": len(validated),
            "quarantined": len(quarantined),
            "rows with warnings": int(validated["validation_warnings"].notna().sum()) if len(validated) else 0,
            "remapped by guideline": int(validated["remapped_from"].notna().sum()) if len(validated) else 0,
        }
    )
    report.table(rules.rename_axis("rule").reset_index(name="rows"))
    if len(quarantined):
        report.table(quarantined[["item_id", "annotator_id", "label", "rule", "reason", "source_file"]], max_rows=15)
    if data_docs:
        report.link("Great Expectations Data Docs for the day", data_docs)

    progress("agreement")
    report.section("Agreement between annotators")
    overall = agreement[agreement["scope"] == "overall"]
    report.table(overall[["metric", "value", "ci_low", "ci_high", "n_items", "n_annotations"]])
    with_intervals = overall.dropna(subset=["ci_low"])
    if len(with_intervals):
        report.image(
            plots.intervals(with_intervals.rename(columns={"metric": "name"}), title="overall agreement"),
            "overall agreement",
        )
    scoped = agreement[
        (agreement["scope"] != "overall") & agreement["metric"].isin(["krippendorff_alpha", "box_alpha"])
    ]
    if len(scoped):
        scoped = scoped.assign(name=scoped["scope"] + " · " + scoped["metric"])
        report.image(
            plots.intervals(scoped, title="alpha per label and slice value"), "alpha per label and slice value"
        )

    progress("annotators")
    report.section("Annotators")
    report.facts({"annotators": len(scores), "flagged": int(scores["flagged"].sum()) if len(scores) else 0})
    if len(scores):
        report.image(plots.annotator_scores(scores), "annotator scores")
        report.table(scores.sort_values(["flagged", "estimated_accuracy"], ascending=[False, True]), max_rows=50)

    progress("consensus")
    report.section("Consensus confidence")
    report.facts(
        {
            "consensus labels": len(consensus),
            "items": int(consensus["item_id"].nunique()) if len(consensus) else 0,
            f"below {min_confidence}": int((consensus["confidence"] < min_confidence).sum()) if len(consensus) else 0,
        }
    )
    if len(consensus):
        report.image(
            plots.confidence_histogram(consensus["confidence"], threshold=min_confidence), "consensus confidence"
        )

    progress("coverage")
    report.section("Coverage")
    if len(coverage):
        if coverage_heatmap is not None:  # drawn by coverage_report beside its table
            report.image(coverage_heatmap, "coverage heatmap")
        gaps = coverage[(coverage["label"] != "*") & ((coverage["gap"] > 0) | coverage["unseen_in_training"])]
        report.table(gaps, max_rows=25)
    else:
        report.text("no coverage report for the day", "note")

    progress("drift")
    report.section("Production drift")
    if len(drift):
        dataset = drift[drift["feature"] == "__dataset__"]
        drifted = bool(dataset["drifted"].iloc[0]) if len(dataset) else False
        report.text("dataset drift" if drifted else "no dataset drift", "bad" if drifted else "good")
        report.image(plots.drift_by_feature(drift), "drift per feature")
        report.table(drift[["feature", "method", "statistic", "p_value", "threshold", "drifted", "psi", "psi_band"]])
    else:
        report.text("no drift report for the day", "note")

    progress("label issues")
    report.section("Label issues (cleanlab)")
    if label_issues is None:
        report.text("no label_issues for the day", "note")
    else:
        report.facts(
            {
                "issues": len(label_issues),
                "items": int(label_issues["item_id"].nunique()) if len(label_issues) else 0,
                **{f"{k}": int(v) for k, v in label_issues["issue"].value_counts().sort_index().items()},
            }
        )
        report.text(
            "The worst first: the label, what the model suggests, cleanlab's label quality score (low = likely "
            "wrong) and, for boxes, where. Scores assume the model never trained on these items.",
            "note",
        )
        report.table(
            label_issues[["item_id", "method", "issue", "label", "suggested_label", "score", "x", "y", "w", "h"]],
            max_rows=25,
        )

    report.section("Relabel batch")
    if relabel is None:
        report.text("no relabel batch for the day (the drift sensor requests one when production drifts)", "note")
    else:
        report.facts(
            {"items": len(relabel), **{f"kind: {k}": int(v) for k, v in relabel["kind"].value_counts().items()}}
        )
        report.table(relabel[["rank", "item_id", "kind", "priority", "reason"]], max_rows=40)

    progress("labeling loop")
    report.section("Labeling loop")
    if state is None or state.empty:
        report.text("no label state for the day", "note")
    else:
        items = first_rows(state, "item_id")
        answered = items[items["status"] == "answered"]
        in_snapshot = pd.Series(
            isin(answered["item_id"], snapshot_items)
            if snapshot_items is not None
            else np.zeros(len(answered), dtype=bool),
            index=answered.index,
        )
        report.facts(
            {
                "items in the label state": len(items),
                **{f"status: {k}": int(v) for k, v in items["status"].value_counts().sort_index().items()},
                "answered items in the latest snapshot": int(in_snapshot.sum()),
            }
        )
        if sent is not None and len(sent):
            report.text(
                "Relabel batches: items sent, answered, still waiting, and answered items in the latest "
                "snapshot (honeypots score labelers and are no requests).",
                "note",
            )
            report.table(loop_by_batch(sent, state, snapshot_items), max_rows=40)
        if len(answered):
            report.table(
                answered.assign(in_snapshot=in_snapshot.to_numpy())[
                    ["item_id", "answered_batch", "days", "current_judgments", "in_snapshot"]
                ],
                max_rows=40,
            )
    return report.html()


def snapshot_report(manifest: Mapping[str, Any], labels: pd.DataFrame) -> str:
    """A snapshot at a glance: sizes, splits, classes, what was left out, QA, and the diff to its parent."""
    report = Report(
        f"labelops dataset snapshot {manifest['version']}",
        f"parent {manifest.get('parent_version') or 'none'} · guideline {manifest.get('guideline_version')} · "
        f"content hash {manifest['content_hash']}",
    )
    report.section("Contents")
    rows = manifest["rows"]
    report.facts(
        {
            "items": rows["items"],
            "labels": rows["labels"],
            **{f"{k} items": v for k, v in manifest["split_sizes"].items()},
        }
    )
    # the manifest counted labels per split and class already: no join of the whole dataset again
    counts = pd.DataFrame(manifest["class_counts"]).fillna(0).astype("int64").sort_index().sort_index(axis=1)
    report.image(plots.split_classes(counts), "labels per class and split")
    report.table(counts.rename_axis("label").reset_index() if len(counts) else pd.DataFrame(), max_rows=60)
    report.section("Left out")
    report.table(pd.DataFrame({"reason": list(manifest["excluded"]), "items": list(manifest["excluded"].values())}))
    report.section("Quality")
    qa = manifest.get("qa", {})
    report.facts({k: v for k, v in qa.items() if not isinstance(v, dict)})
    means = qa.get("agreement_mean_by_metric", {})
    report.table(pd.DataFrame({"metric": list(means), "mean over days": list(means.values())}))
    if len(labels) and "confidence" in labels:
        report.image(
            plots.confidence_histogram(
                labels["confidence"], threshold=float(manifest.get("curation", {}).get("min_confidence", 0.7))
            ),
            "label confidence",
        )
    report.section("Changes since the parent")
    report.table(
        pd.DataFrame({"change": list(manifest["diff_summary"]), "count": list(manifest["diff_summary"].values())})
    )
    report.text(f"source partitions: {', '.join(manifest.get('source_partitions', []))}", "note")
    return report.html()
