"""Metadata every table asset shows first in the UI: rows, schema, a preview."""

from __future__ import annotations

import pandas as pd
from dagster import MetadataValue, TableColumn, TableSchema

from labelops.reporting import markdown_table
from resources.io_manager import GUIDELINE_VERSION
from resources.storage import StorageResource

# Who to ask about an asset, by group: shown on every asset page and searchable in the catalog.
OWNERS = {
    "ingest": ["team:data-platform"],
    "validate": ["team:data-platform"],
    "quality": ["team:labeling-ops"],
    "state": ["team:labeling-ops"],
    "labeling": ["team:labeling-ops"],
    "coverage": ["team:ml-quality"],
    "monitor": ["team:ml-quality"],
    "curate": ["team:ml-quality"],
    "reports": ["team:ml-quality"],
}


def guideline_entry(versions: dict[str, str]) -> dict[str, str | MetadataValue]:
    """The guideline each day of an output was computed under: shown in the UI, and written by the IO manager
    into each day's Parquet footer, where the guideline sensor compares it with the version now in force."""
    distinct = set(versions.values())
    return {
        GUIDELINE_VERSION: distinct.pop() if len(distinct) == 1 else MetadataValue.json(dict(sorted(versions.items())))
    }


def link(storage: StorageResource, key: str) -> MetadataValue:
    """A warehouse file as a clickable link: a URL on S3, a path on local disk."""
    location = f"{storage.warehouse}/{key}"
    return MetadataValue.url(location) if location.startswith("s3://") else MetadataValue.path(location)


def column_schema(frame: pd.DataFrame) -> TableSchema:
    return TableSchema(columns=[TableColumn(name=str(c), type=str(t)) for c, t in frame.dtypes.items()])


def table_metadata(frame: pd.DataFrame, *, preview_columns: list[str] | None = None) -> dict[str, int | MetadataValue]:
    shown = frame[[c for c in (preview_columns or list(frame.columns)) if c in frame.columns]]
    return {
        "dagster/row_count": len(frame),
        "dagster/column_schema": MetadataValue.table_schema(column_schema(frame)),
        "preview": MetadataValue.md(markdown_table(shown, max_rows=10)),
    }
