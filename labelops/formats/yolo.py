"""YOLO / Darknet / Ultralytics label folders (a folder or a zip).

YOLO stores boxes normalized to the image size and no image sizes at all, so the
sizes come from the item catalog (or the caller). Class names come from the
export's class list: ``obj.names``, ``classes.txt`` or ``data.yaml``.
"""

from __future__ import annotations

import io
import posixpath
import zipfile
import zlib
from collections.abc import Mapping

import numpy as np
import pandas as pd
import yaml

from labelops.errors import ExportError
from labelops.formats.common import Parsed, check_one_file_per_item, item_id_from_reference, objects_frame, to_json
from labelops.storage import PathEscapeError, safe_key

CLASS_LISTS = ("obj.names", "classes.txt", "data.yaml", "data.yml", "dataset.yaml")
NOT_LABELS = ("train.txt", "val.txt", "valid.txt", "test.txt", "classes.txt", "readme.txt", "obj.data")
MAX_ZIP_MEMBERS = 100_000
MAX_ZIP_UNPACKED = 512 * 1024 * 1024
MAX_ZIP_RATIO = 200


def unzip(source_file: str, data: bytes) -> dict[str, bytes]:
    """Members of a YOLO zip, read in memory and never extracted to disk.

    Member names are checked like any path (no zip-slip), and the archive is
    refused before reading when it is a zip bomb: too many members, too large
    when unpacked, or compressed at an implausible ratio.
    """
    try:
        return _unzip(source_file, data)
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError, ValueError) as error:
        raise ExportError(source_file, f"not a valid zip archive ({type(error).__name__}: {error})") from None


def _unzip(source_file: str, data: bytes) -> dict[str, bytes]:
    archive = zipfile.ZipFile(io.BytesIO(data))
    members = [m for m in archive.infolist() if not m.is_dir()]
    if len(members) > MAX_ZIP_MEMBERS:
        raise ExportError(source_file, f"zip holds {len(members)} files (limit {MAX_ZIP_MEMBERS})")
    unpacked = sum(m.file_size for m in members)
    if unpacked > MAX_ZIP_UNPACKED or unpacked > MAX_ZIP_RATIO * max(len(data), 1) + 1_000_000:
        raise ExportError(source_file, f"zip unpacks to {unpacked} bytes from {len(data)}: refused as a zip bomb")
    files: dict[str, bytes] = {}
    for member in members:
        try:
            name = safe_key(member.filename)
        except PathEscapeError as error:
            raise ExportError(source_file, f"zip member {member.filename!r}: {error}") from None
        with archive.open(member) as handle:  # never more than the member declared, whatever the stream says
            files[name] = handle.read(member.file_size + 1)
        if len(files[name]) > member.file_size:
            raise ExportError(source_file, f"zip member {member.filename!r} unpacks beyond its declared size")
    return files


def looks_like(files: Mapping[str, bytes]) -> bool:
    return any(posixpath.basename(name).lower() in CLASS_LISTS for name in files)


def parse(source_file: str, files: Mapping[str, bytes], image_sizes: Mapping[str, tuple[float, float]]) -> Parsed:
    names = _class_names(source_file, files)
    label_files = sorted(
        name for name in files if name.lower().endswith(".txt") and posixpath.basename(name).lower() not in NOT_LABELS
    )
    rows = []
    for name in label_files:
        text = _text(source_file, name, files[name])
        lines = pd.Series(text.splitlines(), dtype=object)
        lines = lines[lines.str.strip() != ""]
        if lines.empty:
            continue
        rows.append(pd.DataFrame({"file": name, "line": lines.index.to_numpy() + 1, "text": lines.to_numpy()}))
    if not rows:
        return Parsed(format="yolo", objects=objects_frame([]))
    lines = pd.concat(rows, ignore_index=True)
    tokens = lines["text"].str.split()
    counts = tokens.str.len().to_numpy()
    bad = ~((counts == 5) | ((counts >= 7) & (counts % 2 == 1)))
    if bad.any():
        first = lines[bad].iloc[0]
        raise ExportError(
            source_file,
            f"{first['file']} line {first['line']}: expected 'class cx cy w h' or a polygon, got {first['text'][:60]!r}",
        )
    try:
        class_ids = tokens.str[0].astype(int).to_numpy()
    except ValueError:
        first = lines.iloc[int(np.flatnonzero(~tokens.str[0].str.fullmatch(r"\d+"))[0])]
        raise ExportError(source_file, f"{first['file']} line {first['line']}: class id is not an integer") from None
    named = np.asarray([n is not None for n in names] + [False], dtype=bool)  # the last: any id past the list
    out_of_range = (class_ids < 0) | ~named[np.clip(class_ids, 0, len(names))]
    if out_of_range.any():
        first = lines[out_of_range].iloc[0]
        raise ExportError(
            source_file,
            f"{first['file']} line {first['line']}: class {class_ids[out_of_range][0]} is not in the class list of {len(names)}",
        )

    per_file = {f: item_id_from_reference(source_file, f) for f in lines["file"].unique()}
    check_one_file_per_item(source_file, list(per_file), list(per_file.values()))
    unknown = sorted({i for i in per_file.values() if i not in image_sizes})
    if unknown:
        raise ExportError(
            source_file,
            f"image size unknown for {len(unknown)} item(s), e.g. {unknown[:3]}: add them to the item catalog",
        )
    item_ids = lines["file"].map(per_file).to_numpy()
    width = lines["file"].map({f: float(image_sizes[i][0]) for f, i in per_file.items()}).to_numpy()
    height = lines["file"].map({f: float(image_sizes[i][1]) for f, i in per_file.items()}).to_numpy()

    is_box = counts == 5
    x = np.full(len(lines), np.nan)
    y, w, h = x.copy(), x.copy(), x.copy()
    points: list[list[float] | None] = [None] * len(lines)
    try:
        if is_box.any():
            values = np.asarray(tokens[is_box].str[1:5].tolist(), dtype=float)
            bw, bh = values[:, 2] * width[is_box], values[:, 3] * height[is_box]
            x[is_box] = values[:, 0] * width[is_box] - bw / 2
            y[is_box] = values[:, 1] * height[is_box] - bh / 2
            w[is_box], h[is_box] = bw, bh
        for index in np.flatnonzero(~is_box):
            coords = np.asarray(tokens.iloc[index][1:], dtype=float).reshape(-1, 2) * [width[index], height[index]]
            points[index] = coords.ravel().tolist()
            x[index], y[index] = coords.min(axis=0)
            w[index], h[index] = coords.max(axis=0) - coords.min(axis=0)
    except ValueError:
        raise ExportError(source_file, "a coordinate is not a number") from None

    objects = pd.DataFrame(
        {
            "item_id": item_ids,
            "annotator_id": "unknown",
            "kind": np.where(is_box, "bbox", "polygon"),
            "label": np.asarray(names, dtype=object)[class_ids],
            "x": x,
            "y": y,
            "w": w,
            "h": h,
            "points": points,
            "image_width": width,
            "image_height": height,
            "attributes": to_json({}),
            "annotated_at": None,
            "guideline_version": None,
            "source_ref": lines["file"] + ":" + lines["line"].astype(str),
        }
    )
    return Parsed(format="yolo", objects=objects_frame(objects))


def _text(source_file: str, name: str, data: bytes) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ExportError(source_file, f"{name} is not UTF-8 text") from None


def _class_names(source_file: str, files: Mapping[str, bytes]) -> list[str | None]:
    """The class list, by class id (None where a ``names`` mapping skips an id). Of several lists of one name,
    the one nearest the export's root (a backup copy deeper down does not win)."""
    nearest_last = sorted(files, key=lambda name: (name.count("/"), len(name)), reverse=True)
    by_base = {posixpath.basename(name).lower(): name for name in nearest_last}
    for candidate in CLASS_LISTS:
        if candidate not in by_base:
            continue
        name = by_base[candidate]
        text = _text(source_file, name, files[name])
        if candidate.endswith((".yaml", ".yml")):
            try:  # every scalar as text: a class named yes, no or null stays that name
                config = yaml.load(text, Loader=yaml.BaseLoader)  # BaseLoader builds only str, list and dict
            except yaml.YAMLError as error:
                raise ExportError(source_file, f"{name} is not valid YAML ({error})") from None
            names = config.get("names") if isinstance(config, dict) else None
            if isinstance(names, dict):  # {id: name}, by id, whatever order the file lists them in
                ids = {str(k).strip(): v for k, v in names.items()}
                if not all(k.isdigit() for k in ids):
                    raise ExportError(source_file, f"{name}: 'names' maps {sorted(ids)[:3]}…, not class ids")
                by_id = {int(k): v for k, v in ids.items()}
                return [str(by_id[i]) if i in by_id else None for i in range(max(by_id, default=-1) + 1)]
            if not isinstance(names, list):
                raise ExportError(source_file, f"{name} has no 'names' list")
            return [str(n) for n in names]
        return [line.strip() for line in text.splitlines() if line.strip()]
    raise ExportError(source_file, f"no class list ({', '.join(CLASS_LISTS)}) in the YOLO export")
