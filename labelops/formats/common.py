"""What every export parser shares: its result type and the rules for item references."""

from __future__ import annotations

import json
import posixpath
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import SplitResult, parse_qs, urlsplit

import numpy as np
import pandas as pd

from labelops.errors import ExportError
from labelops.reporting import json_safe
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
# A tool annotation delivered with nothing the readers take as a judgment (labelops.state withdraws its earlier
# version with it): its item, annotator, reference (ending in why it is empty: /empty, /cancelled) and time.
EMPTIED_COLUMNS = ("item_id", "annotator_id", "source_ref", "annotated_at")


@dataclass
class Parsed:
    """Objects read from one export, and what was deliberately not read, by reason.

    ``skipped`` makes every input record accountable: a cancelled Label Studio
    annotation or a CVAT polyline is counted, never silently lost. ``emptied`` names the tool annotations
    (a Label Studio annotation cancelled or submitted empty, a CVAT task's image without a shape read) that the
    file delivers with no judgment: a cumulative export says so when an annotator withdrew their earlier work.
    """

    format: str
    objects: pd.DataFrame
    skipped: dict[str, int] = field(default_factory=dict)
    emptied: pd.DataFrame = field(default_factory=lambda: emptied_frame([], [], [], []))

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


def emptied_frame(item_ids: Any, annotators: Any, refs: Any, annotated_at: Any) -> pd.DataFrame:
    """``Parsed.emptied`` from its columns, as text (a timestamp as the export wrote it)."""
    columns = (item_ids, annotators, refs, annotated_at)
    return pd.DataFrame(
        {name: pd.Series(list(values), dtype=object) for name, values in zip(EMPTIED_COLUMNS, columns, strict=True)}
    )


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
        parts = urlsplit(ref.replace("\\", "/"))  # a Windows path, C:\data\0001.jpg, as the other formats read it
        path = _url_path(parts)
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


def _url_path(parts: SplitResult) -> str:
    """The path a media URL names. Label Studio serves local files as ``/data/local-files/?d=<path>``; any other
    URL's query (a presigned signature, a cache buster, a ``d`` of its own) is not part of the file."""
    if parts.path.rstrip("/").endswith("/local-files"):
        local = parse_qs(parts.query).get("d")
        if local:
            return local[0]
    return parts.path


def _media_file(reference: str) -> str:
    """The file a media reference names, as comparable text: a URL's host and path (a Label Studio local file's
    ``?d=`` path, whichever host serves it), without the query a presigned URL adds; a relative path with ``/``
    separators, repeated ones as one."""
    parts = urlsplit(reference.strip().replace("\\", "/"))
    path = _url_path(parts)
    named = path if path != parts.path else f"{parts.netloc}{path}"
    return re.sub("/{2,}", "/", named).removeprefix("./")


def check_one_file_per_item(source_file: str, references: Any, item_ids: Any) -> None:
    """Fail the export when two different media files of it give one item id.

    Item ids come from file names, so ``train/0001.jpg`` and ``val/0001.jpg`` (YOLO splits, frames of two
    video sequences, two cameras' folders) would become one item and pool two images' labels, silently. Within
    one export different references to one file are the same image; across exports the same name is the same
    item by design (two vendors labeling one image). ``references`` are the media references the ids were
    derived from (None where the export gave the id itself)."""
    pairs = pd.DataFrame({"item_id": item_ids, "reference": references}, dtype=object).dropna()
    # an id is a function of its reference: as many distinct ids as references, and no two references share one
    if pd.unique(pairs["item_id"]).size == pd.unique(pairs["reference"]).size:
        return
    pairs = pairs.drop_duplicates()
    shared = pairs[pairs["item_id"].duplicated(keep=False)]  # ids of two or more references: few, checked one by one
    files = shared.assign(file=[_media_file(str(r)) for r in shared["reference"]]).drop_duplicates(["item_id", "file"])
    clash = files[files["item_id"].duplicated(keep=False)]
    if clash.empty:
        return
    first = clash[clash["item_id"] == clash["item_id"].iloc[0]]["reference"].tolist()
    raise ExportError(
        source_file,
        f"{clash['item_id'].nunique()} item id(s) name two or more media files, e.g. {clash['item_id'].iloc[0]!r} "
        f"from {first[0]!r} and {first[1]!r}: item ids come from file names, so their labels would merge two images "
        "into one item; give the files distinct names or, in Label Studio, each task a data.item_id",
    )


def to_json(value: dict[str, Any]) -> str:
    """Attributes as canonical JSON (sorted keys), so equal attributes compare equal; a number no JSON reader
    takes (NaN, an infinity, written so in an export) is null."""
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str, allow_nan=False)
    except ValueError:
        return json.dumps(json_safe(value), sort_keys=True, separators=(",", ":"), allow_nan=False)


def polygon_bounds(points: np.ndarray) -> tuple[float, float, float, float]:
    """The enclosing box (x, y, w, h) of a flat x0, y0, x1, y1, … array."""
    xs, ys = points[0::2], points[1::2]
    x0, y0 = float(xs.min()), float(ys.min())
    return x0, y0, float(xs.max()) - x0, float(ys.max()) - y0
