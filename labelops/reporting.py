"""Small, safe renderings of tables for the Dagster UI and reports.

Label text comes from vendors' files; it is escaped everywhere it is shown, so a
label such as ``<script>`` stays text.
"""

from __future__ import annotations

import html
import json
from typing import Any

import pandas as pd


def json_safe(value: Any) -> Any:
    """``value`` as plain JSON any reader takes: a number that could not be computed (NaN, an infinity) is null,
    not the bare ``NaN`` Python's json writes and JavaScript and strict parsers refuse; numpy scalars and other
    objects as their text."""
    return json.loads(json.dumps(value, default=str), parse_constant=lambda _: None)


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
