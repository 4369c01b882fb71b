"""What every export parser shares: its result type and the rules for item references."""

from __future__ import annotations

import json
import posixpath
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pandas as pd

from labelops.errors import ExportError
from labelops.storage import PathEscapeError, safe_key

# Columns a parser may fill; the ingest step adds ids and provenance.
OBJECT_COLUMNS = (
    "item_id",
    "annotator_id",
    "kind",
    "label",
    "x",
    "y",
    "w",
    "h",
    "points",
    "image_width",
    "image_height",
    "attributes",
    "annotated_at",
    "guideline_version",
    "source_ref",
)


@dataclass
class Parsed:
    """Objects read from one export, and what was deliberately not read, by reason.

    ``skipped`` makes every input record accountable: a cancelled Label Studio
    annotation or a CVAT polyline is counted, never silently lost.
    """

    format: str
    objects: pd.DataFrame
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, reason: str, count: int = 1) -> None:
        if count:
            self.skipped[reason] = self.skipped.get(reason, 0) + count


def objects_frame(records: list[dict[str, Any]] | pd.DataFrame) -> pd.DataFrame:
    """A frame with exactly the parser columns, in order."""
    frame: pd.DataFrame = pd.DataFrame(records) if not isinstance(records, pd.DataFrame) else records
    for column in OBJECT_COLUMNS:
        if column not in frame.columns:
            frame[column] = None
    return frame[list(OBJECT_COLUMNS)].reset_index(drop=True)


def item_id_from_reference(source_file: str, reference: str, *, url: bool = False) -> str:
    """The item id an export uses for a media file: its file name without extension.

    File-based exports (COCO, CVAT, YOLO) reference media by a path relative to the
    export, which must stay inside the landing root: ``../../etc/passwd`` or
    ``/etc/passwd`` fails the whole file. URL-based exports (Label Studio) use
    URLs and URL paths as identifiers, which may be absolute but never climb with
    ``..`` (also not inside a query such as ``?d=../secret``).
    """
    ref = str(reference).strip()
    if not ref:
        raise ExportError(source_file, "an item has an empty media reference")
    if url:
        segments = re.split(r"[/?&=\\]", ref)
        if ".." in segments:
            raise ExportError(source_file, f"media reference {ref!r} points outside its root")
        parts = urlsplit(ref)
        path = parse_qs(parts.query).get("d", [parts.path])[0]  # Label Studio local files: ?d=<path>
    else:
        try:
            path = safe_key(ref)
        except PathEscapeError as error:
            raise ExportError(source_file, f"media reference {ref!r}: {error}") from None
    stem = posixpath.splitext(posixpath.basename(path.rstrip("/")))[0]
    if not stem:
        raise ExportError(source_file, f"media reference {ref!r} names no file")
    return stem


BAD_PATH = r"(?:^|[/\\])\.\.(?:[/\\]|$)|^[/\\]|^[A-Za-z]:|\x00"


def item_ids_from_paths(source_file: str, paths: pd.Series) -> np.ndarray:
    """:func:`item_id_from_reference` for a whole column of relative paths at once."""
    text = paths.astype(str).str.strip()
    bad = text.str.contains(BAD_PATH, regex=True) | (text == "")
    if bad.any():
        item_id_from_reference(source_file, text[bad].iloc[0])  # raises, naming the reference
    stems = text.str.replace("\\", "/", regex=False).str.rsplit("/", n=1).str[-1]
    stems = stems.str.replace(r"(?<=.)\.[^.]*$", "", regex=True)
    if (stems == "").any():
        raise ExportError(source_file, f"media reference {text[stems == ''].iloc[0]!r} names no file")
    return stems.to_numpy(dtype=object)


def to_json(value: dict[str, Any]) -> str:
    """Attributes as canonical JSON (sorted keys), so equal attributes compare equal."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def polygon_bounds(points: np.ndarray) -> tuple[float, float, float, float]:
    """The enclosing box (x, y, w, h) of a flat x0, y0, x1, y1, … array."""
    xs, ys = points[0::2], points[1::2]
    x0, y0 = float(xs.min()), float(ys.min())
    return x0, y0, float(xs.max()) - x0, float(ys.max()) - y0
