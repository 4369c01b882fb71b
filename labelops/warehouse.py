"""Every key the pipeline writes in the warehouse, named once.

The warehouse is a key space on local disk or S3 (labelops.storage): tables the IO manager writes, ledgers of
what was read and sent, the outboxes labelers import, and reports. Snapshots keep their own layout
(labelops.snapshots: ``snapshots/<version>/…`` and ``snapshots/latest``).
"""

from __future__ import annotations

from collections.abc import Sequence

TABLES = "tables"
UNPARTITIONED = "all"  # the file of an unpartitioned table
JUDGMENTS = "ledgers/judgments"  # each day's first deliveries, by content (labelops.ingest.JudgmentLedger)
EMPTIED = "ledgers/emptied"  # each day's tool annotations delivered without a judgment (labelops.ingest)
PARSED = "cache/parsed"  # landing files already parsed, by content and parser (labelops.ingest.read_gold)


def table_prefix(asset_path: Sequence[str]) -> str:
    return "/".join([TABLES, *asset_path])


def table_key(asset_path: Sequence[str], partition: str | None) -> str:
    """``tables/<asset>/<day>.parquet``, or ``tables/<asset>/all.parquet`` for an unpartitioned asset."""
    return f"{table_prefix(asset_path)}/{partition or UNPARTITIONED}.parquet"


def file_ledger(name: str, day: str) -> str:
    """What a day's ingest read, file by file (``ledgers/<asset>/<day>.csv``)."""
    return f"ledgers/{name}/{day}.csv"


def outbox(area: str, day: str | None = None) -> str:
    """``outbox/<area>`` (relabel, tasks), or one day's batch folder in it."""
    return f"outbox/{area}/{day}" if day else f"outbox/{area}"


def outbox_ledger(area: str, day: str | None = None) -> str:
    """What an outbox sent: one CSV per day, so runs of different days never overwrite each other's entries."""
    return f"outbox/{area}/ledger/{day}.csv" if day else f"outbox/{area}/ledger"


def quality_report(day: str) -> str:
    return f"reports/quality/{day}.html"


def snapshot_report(version: str) -> str:
    return f"reports/snapshots/{version}.html"


def data_docs(day: str) -> str:
    """The day's Great Expectations Data Docs site (a folder)."""
    return f"reports/data_docs/{day}"


def coverage_heatmap(day: str) -> str:
    return f"reports/coverage/{day}/heatmap.png"


def risk_confusion(day: str) -> str:
    return f"reports/risk/{day}/confusion.csv"
