"""Small, safe renderings of tables for the Dagster UI and reports.

Label text comes from vendors' files; it is escaped everywhere it is shown, so a
label such as ``<script>`` stays text.
"""

from __future__ import annotations

import html

import pandas as pd


def escape_markdown(value: object) -> str:
    """Cell text that renders as itself: HTML is neutralized, markdown syntax is escaped."""
    text = "" if value is None or (isinstance(value, float) and pd.isna(value)) else str(value)
    text = html.escape(text, quote=False).replace("\n", " ")
    for char in "\\`*[]|":
        text = text.replace(char, "\\" + char)
    return text


def markdown_table(frame: pd.DataFrame, *, max_rows: int = 10, float_format: str = "{:.4g}") -> str:
    """A GitHub-flavoured markdown table of the first ``max_rows`` rows."""
    if frame.empty:
        return "_(no rows)_"
    shown = frame.head(max_rows)
    header = "| " + " | ".join(escape_markdown(c) for c in shown.columns) + " |"
    rule = "|" + "---|" * len(shown.columns)
    body = [
        "| " + " | ".join(escape_markdown(float_format.format(v) if isinstance(v, float) else v) for v in row) + " |"
        for row in shown.itertuples(index=False)
    ]
    more = [f"\n_{len(frame) - max_rows} more rows_"] if len(frame) > max_rows else []
    return "\n".join([header, rule, *body, *more])


def counts_table(series: pd.Series, name: str, *, max_rows: int = 20) -> str:
    """Value counts as a markdown table, most frequent first."""
    counts = series.value_counts(dropna=False).rename_axis(name).reset_index(name="rows")
    return markdown_table(counts, max_rows=max_rows)


def coverage_heatmap(report: pd.DataFrame, dimensions: list[str]) -> bytes:
    """PNG heatmap of labeled counts, class × slice value; cells below the spec's minimum are outlined."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    cells = report[(report["label"] != "*") & report["dimension"].isin(dimensions)]
    columns = [(d, v) for d in dimensions for v in sorted(cells.loc[cells["dimension"] == d, "value"].unique())]
    classes = sorted(cells["label"].unique())
    grid = np.zeros((len(classes), len(columns)))
    short = np.zeros_like(grid, dtype=bool)
    index = {(d, v): j for j, (d, v) in enumerate(columns)}
    row = {c: i for i, c in enumerate(classes)}
    for label, d, v, count, gap in cells[["label", "dimension", "value", "labeled_count", "gap"]].itertuples(index=False):
        grid[row[label], index[(d, v)]] = count
        short[row[label], index[(d, v)]] = gap > 0
    figure, axes = plt.subplots(figsize=(1.0 + 0.9 * max(len(columns), 1), 1.0 + 0.45 * max(len(classes), 1)), dpi=110)
    axes.imshow(np.log1p(grid), cmap="viridis", aspect="auto")
    axes.set_xticks(range(len(columns)), [f"{d}={v}" for d, v in columns], rotation=45, ha="right")
    axes.set_yticks(range(len(classes)), classes)
    for i in range(len(classes)):
        for j in range(len(columns)):
            axes.text(j, i, f"{int(grid[i, j])}", ha="center", va="center", color="white" if grid[i, j] < grid.max() / 2 else "black", fontsize=8)
            if short[i, j]:
                axes.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2))
    axes.set_title("labeled objects per class and slice\n(red: below the spec's minimum)", fontsize=10)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()
