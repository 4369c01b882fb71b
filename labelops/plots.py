"""The report's figures as PNG bytes (matplotlib, Agg backend).

Label text comes from vendors' files: math-text parsing is off, so a label with ``$`` is
drawn as itself and cannot make matplotlib fail, and the PNG carries no markup at all.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:  # matplotlib is imported when a figure is drawn, not when the report module loads
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.typing import RcKeyType

STYLE: dict[RcKeyType, Any] = {
    "text.parse_math": False,
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
}


@contextmanager
def _figure(width: float, height: float) -> Iterator[tuple[Figure, Axes, io.BytesIO]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    with plt.rc_context(STYLE):
        figure, axes = plt.subplots(figsize=(width, height), dpi=110)
        try:
            yield figure, axes, buffer
            figure.savefig(buffer, format="png", bbox_inches="tight")
        finally:
            plt.close(figure)


def coverage_heatmap(report: pd.DataFrame, dimensions: list[str]) -> bytes:
    """Labeled counts, class × slice value; cells below the spec's minimum are outlined in red."""
    from matplotlib.patches import Rectangle

    cells = report[(report["label"] != "*") & report["dimension"].isin(dimensions)]
    columns = pd.MultiIndex.from_frame(
        cells[["dimension", "value"]].drop_duplicates().sort_values(["dimension", "value"])
    )
    order = {d: i for i, d in enumerate(dimensions)}
    columns = columns[np.argsort([order[d] for d in columns.get_level_values(0)], kind="stable")]
    grid = cells.pivot_table(
        index="label", columns=["dimension", "value"], values="labeled_count", aggfunc="sum", fill_value=0
    )
    grid = grid.reindex(columns=columns, fill_value=0)
    short = (
        cells.assign(short=cells["gap"] > 0)
        .pivot_table(index="label", columns=["dimension", "value"], values="short", aggfunc="any", fill_value=False)
        .reindex(index=grid.index, columns=columns, fill_value=False)
    )
    counts, below = grid.to_numpy(dtype=float), short.to_numpy(dtype=bool)
    n_rows, n_cols = counts.shape
    with _figure(1.0 + 0.9 * max(n_cols, 1), 1.0 + 0.45 * max(n_rows, 1)) as (_, axes, buffer):
        axes.imshow(np.log1p(counts) if counts.size else np.zeros((1, 1)), cmap="viridis", aspect="auto")
        axes.set_xticks(range(n_cols), [f"{d}={v}" for d, v in columns], rotation=45, ha="right")
        axes.set_yticks(range(n_rows), list(grid.index))
        threshold = counts.max() / 2 if counts.size else 0
        for i, j in np.ndindex(counts.shape):
            axes.text(
                j,
                i,
                f"{int(counts[i, j])}",
                ha="center",
                va="center",
                fontsize=8,
                color="white" if counts[i, j] < threshold else "black",
            )
        for i, j in zip(*np.nonzero(below), strict=True):
            axes.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2))
        axes.set_title("labeled objects per class and slice (red: below the spec's minimum)")
    return buffer.getvalue()


def intervals(table: pd.DataFrame, *, title: str) -> bytes:
    """Point estimates (`value`) with their 95 % intervals (`ci_low`, `ci_high`), one row per `name`."""
    shown = table.dropna(subset=["value"]).iloc[::-1]
    with _figure(7.0, 0.9 + 0.32 * max(len(shown), 1)) as (_, axes, buffer):
        y = np.arange(len(shown))
        value = shown["value"].to_numpy(dtype=float)
        low = np.nan_to_num(value - shown["ci_low"].to_numpy(dtype=float), nan=0.0)
        high = np.nan_to_num(shown["ci_high"].to_numpy(dtype=float) - value, nan=0.0)
        axes.errorbar(value, y, xerr=[np.maximum(low, 0), np.maximum(high, 0)], fmt="o", color="#1f5f99", capsize=3)
        axes.set_yticks(y, list(shown["name"]))
        axes.axvline(0.667, color="#b8860b", linestyle=":", linewidth=1)
        axes.axvline(0.8, color="#2e7d32", linestyle=":", linewidth=1)
        axes.set_xlabel("value with bootstrap 95 % interval (dotted: alpha 0.667 tentative, 0.8 reliable)")
        axes.set_title(title)
    return buffer.getvalue()


def annotator_scores(scores: pd.DataFrame) -> bytes:
    """Agreement with consensus against Dawid-Skene estimated accuracy; flagged annotators in red."""
    with _figure(7.0, 4.2) as (_, axes, buffer):
        flagged = scores["flagged"].to_numpy(dtype=bool)
        x = scores["estimated_accuracy"].to_numpy(dtype=float)
        y = scores["agreement_with_consensus"].to_numpy(dtype=float)
        axes.scatter(x[~flagged], y[~flagged], color="#1f5f99", label="ok")
        axes.scatter(x[flagged], y[flagged], color="#c62828", label="flagged")
        for name, xi, yi in zip(scores["annotator_id"].astype(str), x, y, strict=True):
            if np.isfinite(xi) and np.isfinite(yi):
                axes.annotate(name[:24], (xi, yi), fontsize=7, xytext=(3, 3), textcoords="offset points")
        axes.set_xlabel("Dawid-Skene estimated accuracy")
        axes.set_ylabel("agreement with consensus")
        axes.legend(loc="lower right")
        axes.set_title("annotators")
    return buffer.getvalue()


def confidence_histogram(confidence: pd.Series, *, threshold: float) -> bytes:
    """How sure the consensus is; the curation threshold is the dashed line."""
    with _figure(7.0, 3.2) as (_, axes, buffer):
        values = confidence.dropna().to_numpy(dtype=float)
        bins = np.linspace(0, 1, 21)
        # counted by numpy's equal-width bins (a snapshot's 900,000 labels: 0.01 s; as edges, sorted first: 0.03 s),
        # and drawn as one weighted value per bin: the same bars
        counts = np.histogram(values, bins=len(bins) - 1, range=(0.0, 1.0))[0]
        axes.hist(bins[:-1], bins=bins.tolist(), weights=counts, color="#1f5f99")
        axes.axvline(threshold, color="#c62828", linestyle="--", linewidth=1)
        axes.set_xlabel(f"consensus confidence ({int((values < threshold).sum())} of {len(values)} below {threshold})")
        axes.set_ylabel("labels")
        axes.set_title("consensus confidence")
    return buffer.getvalue()


def drift_by_feature(table: pd.DataFrame) -> bytes:
    """Each feature's drift statistic against its threshold (p-value tests shown as 1 - p against 1 - alpha)."""
    features = table[table["feature"] != "__dataset__"].iloc[::-1]
    p_based = features["p_value"].notna().to_numpy()
    score = np.where(
        p_based, 1 - features["p_value"].to_numpy(dtype=float), features["statistic"].to_numpy(dtype=float)
    )
    limit = np.where(
        p_based, 1 - features["threshold"].to_numpy(dtype=float), features["threshold"].to_numpy(dtype=float)
    )
    with _figure(7.0, 0.9 + 0.32 * max(len(features), 1)) as (_, axes, buffer):
        y = np.arange(len(features))
        colors = np.where(features["drifted"].to_numpy(dtype=bool), "#c62828", "#1f5f99")
        axes.barh(y, score, color=colors)
        axes.scatter(limit, y, marker="|", s=200, color="black", label="threshold")
        axes.set_yticks(y, [f"{f} ({m})" for f, m in zip(features["feature"], features["method"], strict=True)])
        axes.set_xlabel("statistic (red: drifted)")
        axes.set_title("drift per feature")
    return buffer.getvalue()


def split_classes(counts: pd.DataFrame) -> bytes:
    """Labels per class (rows) in each split (columns) of a snapshot."""
    with _figure(7.0, 0.9 + 0.3 * max(len(counts), 1)) as (_, axes, buffer):
        left = np.zeros(len(counts))
        for split, color in zip(
            counts.columns, ("#1f5f99", "#2e7d32", "#b8860b", "#6a1b9a"), strict=False
        ):  # spare colours
            axes.barh(np.arange(len(counts)), counts[split].to_numpy(), left=left, color=color, label=str(split))
            left += counts[split].to_numpy()
        axes.set_yticks(np.arange(len(counts)), list(counts.index))
        if len(counts.columns):
            axes.legend(loc="lower right")
        axes.set_xlabel("labels")
        axes.set_title("labels per class and split")
    return buffer.getvalue()
