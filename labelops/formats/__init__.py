"""Export formats: detection and dispatch to the parser that reads each one.

A landing file is detected by content first and extension second, because
vendors name files freely. Whatever goes wrong inside a parser surfaces as an
:class:`~labelops.errors.ExportError` that names the file.
"""

from __future__ import annotations

import gc
import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import msgspec

from labelops.errors import ExportError
from labelops.formats import coco, cvat, label_studio, label_studio_arrow, label_studio_typed, table, yolo
from labelops.formats.common import Parsed, objects_frame

TABLE_EXTENSIONS = table.TABLE_FILES
IGNORED_NAMES = (".ds_store", "thumbs.db", "readme.md", "readme.txt", "license", "license.txt")


def parse_file(
    source_file: str,
    data: bytes,
    image_sizes: Mapping[str, tuple[float, float]] | None = None,
    *,
    require_annotator: bool = True,
) -> Parsed:
    """Parse one export file (a zip is a YOLO export).

    Gold files may omit the annotator column (``require_annotator=False``).
    """
    sizes = image_sizes if image_sizes is not None else {}  # a lazy mapping stays lazy: most files never look
    if not data.strip():
        raise ExportError(source_file, "the file is empty")
    lower = source_file.lower()
    try:
        if lower.endswith(".json"):
            return _parse_json(source_file, data, sizes)
        if lower.endswith(".xml"):
            root = cvat.root_of(source_file, data)
            if cvat.looks_like(root):
                return cvat.parse(source_file, root)
            raise ExportError(source_file, f"XML with root <{root.tag}> is not a CVAT for images 1.1 export")
        if lower.endswith(".zip"):
            return parse_folder(source_file, yolo.unzip(source_file, data), sizes)
        if lower.endswith(TABLE_EXTENSIONS):
            return table.parse(source_file, data, require_annotator=require_annotator)
    except ExportError:
        raise
    except (KeyError, IndexError, TypeError, ValueError, OverflowError, AttributeError, RecursionError) as error:
        raise ExportError(source_file, f"malformed export ({type(error).__name__}: {error})") from None
    raise ExportError(
        source_file,
        "unknown export format (expected Label Studio/COCO JSON, CVAT XML, YOLO zip or folder, CSV/TSV/Parquet)",
    )


def parse_folder(
    source_file: str, files: Mapping[str, bytes], image_sizes: Mapping[str, tuple[float, float]] | None = None
) -> Parsed:
    """Parse a folder export: today that is YOLO, the one format spread over many files."""
    if not yolo.looks_like(files):
        raise ExportError(
            source_file, "a folder export must be YOLO with a class list (obj.names, classes.txt or data.yaml)"
        )
    try:
        return yolo.parse(source_file, files, image_sizes if image_sizes is not None else {})
    except ExportError:
        raise
    except (KeyError, IndexError, TypeError, ValueError, OverflowError) as error:
        raise ExportError(source_file, f"malformed YOLO export ({type(error).__name__}: {error})") from None


def _parse_json(source_file: str, data: bytes, sizes: Mapping[str, tuple[float, float]]) -> Parsed:
    with _cycle_collection_paused():
        typed = label_studio_arrow.parse(source_file, data, sizes) or label_studio_typed.parse(source_file, data, sizes)
        if typed is not None:  # else: read by the generic path below
            return typed
        document = _decode_json(source_file, data)
        if label_studio.looks_like(document):
            return label_studio.parse(source_file, document, sizes)
        if coco.looks_like(document):
            return coco.parse(source_file, document)
    if coco.looks_like_results(document):
        raise ExportError(source_file, "COCO detection results (model output) are not an annotation export")
    if isinstance(document, list) and not document:
        return Parsed(format="label_studio", objects=objects_frame([]))
    raise ExportError(source_file, "JSON is neither a Label Studio export nor a COCO instances file")


def _decode_json(source_file: str, data: bytes) -> Any:
    """The document, decoded by msgspec (about three times the stdlib's speed); what it refuses, by the stdlib.

    The stdlib reads more than strict JSON (NaN, a byte order mark, UTF-16, lone surrogates, numbers beyond
    a float) and words the errors, with line and column, that name a broken file: a file decodes to the same
    document, or fails with the same message, as it did before msgspec.
    """
    try:
        return msgspec.json.decode(data)
    except (msgspec.DecodeError, RecursionError):
        pass
    try:
        return json.loads(data)
    except UnicodeDecodeError:
        raise ExportError(source_file, "not UTF-8 text") from None
    except json.JSONDecodeError as error:
        raise ExportError(
            source_file, f"invalid JSON at line {error.lineno} column {error.colno}: {error.msg}"
        ) from None


@contextmanager
def _cycle_collection_paused() -> Iterator[None]:
    """No cyclic garbage collection while a JSON export is decoded and read.

    A million boxes decode into some ten million dicts and lists, and the collector, run every few hundred
    new containers, walks the ever older and larger document again and again: with it, more than half of
    the parse time went there (bench/ingest.py). Decoded JSON holds no reference cycles, so pausing it
    leaves nothing uncollected; the previous state is restored however the parse ends.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def is_ignored(name: str) -> bool:
    """Files that travel with exports but hold no labels."""
    base = name.rsplit("/", 1)[-1].lower()
    return base.startswith(".") or base in IGNORED_NAMES
