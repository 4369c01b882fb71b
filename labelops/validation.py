"""Row-level validation of canonical annotations: guideline remapping and the facts the suites assert.

Great Expectations checks columns; some rules need geometry or the guideline in force
(is the polygon simple, is the label in *this annotation's* taxonomy). Those facts are
computed here as boolean columns — True passes, False fails, null means the rule does
not apply to the row — and the suites in ``expectations/`` assert them. Quarantine is
then a join of the suites' unexpected rows back onto the table.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import shapely

from labelops.guidelines import GuidelineError, GuidelineSet
from labelops.schema import ANNOTATION_SCHEMA

# Boxes may overhang the image border by this much (pixels) before they count as outside:
# tools round coordinates, and a half-pixel overhang is not a labeling error.
BORDER_TOLERANCE = 1.0
CLOCK_SKEW = timedelta(minutes=5)
RULE_COLUMNS = (
    "annotation_id_first",
    "not_duplicate",
    "source_ref_first",
    "guideline_known",
    "not_needs_relabel",
    "label_in_taxonomy",
    "geometry_allowed",
    "box_positive",
    "box_inside_image",
    "box_min_size",
    "polygon_min_points",
    "polygon_closed",
    "polygon_simple",
    "polygon_matches_box",
    "area_non_negative",
    "not_in_future",
    "attributes_valid",
)


def fill_image_sizes(frame: pd.DataFrame, items: pd.DataFrame) -> pd.DataFrame:
    """Image sizes the export did not carry (long tables, some COCO files), from the item catalog."""
    if items.empty or not (frame["image_width"].isna() | frame["image_height"].isna()).any():
        return frame
    sizes = items.drop_duplicates("item_id", keep="last").set_index("item_id")[["width", "height"]]
    out = frame.copy()
    out["image_width"] = out["image_width"].fillna(out["item_id"].map(sizes["width"]))
    out["image_height"] = out["image_height"].fillna(out["item_id"].map(sizes["height"]))
    return out


def apply_guidelines(frame: pd.DataFrame, guidelines: GuidelineSet, day: str) -> pd.DataFrame:
    """Stamp each annotation with the version it was made under and read it under the version in force.

    The version an annotation was made under is the one its export declares; else the newest version in
    force when it was annotated (``annotated_at``, else its export day) whose taxonomy holds its label: an
    export delivered after a change was usually labeled before it. Labels of an ancestor version are then
    carried to the version in force on ``day`` by the typed changes: renamed and merged where the change was a
    rename or merge (``remapped_from`` keeps the original), marked ``needs_relabel`` where a split,
    redefinition or removal made them ambiguous. Only a label no version knows fails the taxonomy check, so
    publishing a guideline never quarantines labels that were valid when they were made. Versions newer than
    the day's are left as they are.
    """
    out = frame.copy()
    in_force = _in_force_when_made(out, guidelines)
    # the version per distinct (version in force, label) pair: a handful of lookups, whatever the rows
    version_codes, versions = pd.factorize(in_force)  # -1: no version in force (stays null)
    label_codes, labels = pd.factorize(out["label"].astype(object).fillna(""))
    pairs, inverse = np.unique(version_codes.astype(np.int64) * (len(labels) + 1) + label_codes, return_inverse=True)
    made = np.array(
        [
            guidelines.made_under(versions[p // (len(labels) + 1)], labels[p % (len(labels) + 1)]) if p >= 0 else None
            for p in pairs
        ],
        dtype=object,
    )
    declared = out["guideline_version"].astype(object)
    out["guideline_version"] = declared.where(declared.notna(), pd.Series(made[inverse], index=out.index)).astype(
        object
    )
    current = guidelines.in_force(day)
    out["remapped_from"] = None
    out["needs_relabel"] = None
    ancestors = {g.version for g in guidelines.lineage(current.version)}
    for version in out["guideline_version"].dropna().unique():
        if version == current.version or version not in ancestors:
            continue  # the version in force, an unknown one, or a newer (or parallel) one: judged by its own taxonomy
        remap = guidelines.remap(version, current.version)
        rows = out["guideline_version"] == version
        relabel = rows & out["label"].isin(list(remap.relabel))
        mapped = rows & out["label"].isin(list(remap.mapping)) & ~relabel
        out.loc[relabel, "needs_relabel"] = out.loc[relabel, "label"].map(remap.relabel)
        out.loc[mapped, "remapped_from"] = version + ":" + out.loc[mapped, "label"]
        out.loc[mapped, "label"] = out.loc[mapped, "label"].map(remap.mapping)
        out.loc[rows & ~relabel, "guideline_version"] = current.version
    return out


def _in_force_when_made(frame: pd.DataFrame, guidelines: GuidelineSet) -> pd.Series:
    """Per row, the version in force on the day it was annotated (``annotated_at``), else on its export day;
    null before the first version. Looked up once per distinct day."""
    stamps = pd.to_datetime(frame["annotated_at"], utc=True, errors="coerce").dt.tz_localize(None)
    days = stamps.to_numpy(dtype="datetime64[ns]").astype("datetime64[D]")
    exported = pd.to_datetime(frame["export_date"].astype(object), errors="coerce").to_numpy(dtype="datetime64[D]")
    days = np.where(np.isnat(days), exported, days)
    unique, inverse = np.unique(days, return_inverse=True)
    versions = np.array([None if np.isnat(d) else _in_force_or_none(guidelines, str(d)) for d in unique], dtype=object)
    return pd.Series(versions[inverse], index=frame.index, dtype=object)


def _in_force_or_none(guidelines: GuidelineSet, day: str) -> str | None:
    """The version in force on ``day``, None before the first version (the export day decides then)."""
    try:
        return guidelines.in_force(day).version
    except (GuidelineError, ValueError):
        return None


def rule_columns(frame: pd.DataFrame, guidelines: GuidelineSet, now: datetime) -> pd.DataFrame:
    """The facts the suites assert, one nullable boolean column per rule."""
    out = frame.copy()
    n = len(out)
    kind = out["kind"].to_numpy(dtype=object)
    version = out["guideline_version"].astype(object).fillna("").to_numpy(dtype=object)
    label = out["label"].astype(object).fillna("").to_numpy(dtype=object)
    key = pd.Series(version + "\x1f" + label)

    known = pd.Series(version).isin(list(guidelines.by_version)).to_numpy()
    taxonomy = {f"{g.version}\x1f{c}" for g in guidelines.by_version.values() for c in g.classes}
    allowed = {
        f"{g.version}\x1f{c.name}\x1f{geo}"
        for g in guidelines.by_version.values()
        for c in g.classes.values()
        for geo in c.geometry
    }
    in_taxonomy = key.isin(taxonomy).to_numpy()
    geometry_ok = (key + "\x1f" + pd.Series(kind)).isin(allowed).to_numpy()

    is_region = (kind == "bbox") | (kind == "polygon")
    is_polygon = kind == "polygon"
    x, y, w, h = (out[c].to_numpy(dtype=float) for c in ("x", "y", "w", "h"))
    width, height = out["image_width"].to_numpy(dtype=float), out["image_height"].to_numpy(dtype=float)
    finite = np.isfinite(x) & np.isfinite(y) & np.isfinite(w) & np.isfinite(h)
    positive = finite & (w > 0) & (h > 0)
    with np.errstate(invalid="ignore"):
        inside = (
            (x >= -BORDER_TOLERANCE)
            & (y >= -BORDER_TOLERANCE)
            & (x + w <= width + BORDER_TOLERANCE)
            & (y + h <= height + BORDER_TOLERANCE)
        )
    size_known = np.isfinite(width) & np.isfinite(height)
    min_sizes = {f"{g.version}\x1f{c}": g.min_size(c) for g in guidelines.by_version.values() for c in g.classes}
    min_w = key.map({k: v[0] for k, v in min_sizes.items()}).to_numpy(dtype=float)
    min_h = key.map({k: v[1] for k, v in min_sizes.items()}).to_numpy(dtype=float)
    with np.errstate(invalid="ignore"):
        big_enough = (w >= min_w) & (h >= min_h)

    n_points, simple, bounds = _polygon_facts(out["points"], is_polygon)
    attributes = out["attributes"].astype(object).fillna("")
    single_part = ~attributes.str.contains('"polygon_parts"', regex=False).to_numpy()
    with np.errstate(invalid="ignore"):  # every point inside the box; a one-part polygon also fills it
        within = (
            (bounds[:, 0] >= x - BORDER_TOLERANCE)
            & (bounds[:, 1] >= y - BORDER_TOLERANCE)
            & (bounds[:, 2] <= x + w + BORDER_TOLERANCE)
            & (bounds[:, 3] <= y + h + BORDER_TOLERANCE)
        )
        fills = (
            (bounds[:, 0] <= x + BORDER_TOLERANCE)
            & (bounds[:, 1] <= y + BORDER_TOLERANCE)
            & (bounds[:, 2] >= x + w - BORDER_TOLERANCE)
            & (bounds[:, 3] >= y + h - BORDER_TOLERANCE)
        )
    area = pd.to_numeric(attributes.str.extract(r'"area":(-?[0-9.eE+-]+)', expand=False), errors="coerce")
    closed = ~attributes.str.contains('"closed":false', regex=False).to_numpy()

    stamps = pd.to_datetime(out["annotated_at"], utc=True)
    future = (stamps > pd.Timestamp(now) + CLOCK_SKEW).to_numpy()

    rules = {
        "annotation_id_first": _where(
            out["annotation_id"].notna().to_numpy(), ~out["annotation_id"].duplicated().to_numpy()
        ),
        "not_duplicate": _where(np.ones(n, bool), out["duplicate_of"].isna().to_numpy()),
        "source_ref_first": _where(
            out["duplicate_of"].isna().to_numpy(), ~out[["source_file", "source_ref"]].duplicated().to_numpy()
        ),
        "guideline_known": _where(np.ones(n, bool), known),
        "not_needs_relabel": _where(known, out["needs_relabel"].isna().to_numpy()),
        "label_in_taxonomy": _where(known & out["needs_relabel"].isna().to_numpy(), in_taxonomy),
        "geometry_allowed": _where(in_taxonomy, geometry_ok),
        "box_positive": _where(is_region, positive),
        "box_inside_image": _where(is_region & positive & size_known, inside),
        "box_min_size": _where(is_region & positive & in_taxonomy, big_enough),
        "polygon_min_points": _where(is_polygon, n_points >= 3),
        "polygon_closed": _where(is_polygon, closed),
        "polygon_simple": _where(is_polygon & (n_points >= 3), simple),
        "polygon_matches_box": _where(is_polygon & (n_points >= 3) & finite, within & (fills | ~single_part)),
        "area_non_negative": _where(area.notna().to_numpy(), (area >= 0).to_numpy()),
        "not_in_future": _where(stamps.notna().to_numpy(), ~future),
        "attributes_valid": _attribute_rule(out, guidelines, in_taxonomy),
    }
    for name, values in rules.items():
        out[name] = values
    return out


def _where(applies: np.ndarray, passes: np.ndarray) -> pd.Series:
    """A nullable boolean column: the rule's verdict where it applies, null elsewhere."""
    return pd.Series(pd.array(np.where(applies, passes, False), dtype="boolean")).mask(~pd.Series(applies))


def _polygon_facts(points: pd.Series, is_polygon: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vertex counts, simplicity (no self-intersection) and bounds (x0, y0, x1, y1) of every polygon.

    Computed over all polygons at once: the vertices are one flat array and each
    polygon a run of it, so there is no loop over rows.
    """
    n = len(points)
    n_points = np.zeros(n, dtype=np.int64)
    simple = np.ones(n, dtype=bool)
    bounds = np.full((n, 4), np.nan)
    if not is_polygon.any():
        return n_points, simple, bounds
    index = np.flatnonzero(is_polygon)
    lists = pa.array(points.iloc[index].tolist(), type=pa.list_(pa.float64()))
    lengths = lists.value_lengths().fill_null(0).to_numpy(zero_copy_only=False)
    n_points[index] = lengths // 2
    ok = (lengths >= 6) & (lengths % 2 == 0)
    if ok.any():
        chosen = lists.filter(pa.array(ok))
        coords = chosen.flatten().to_numpy(zero_copy_only=False).reshape(-1, 2)
        ring_of_vertex = np.repeat(np.arange(len(chosen)), chosen.value_lengths().to_numpy() // 2)
        rings = shapely.linearrings(coords, indices=ring_of_vertex)
        simple[index[ok]] = shapely.is_simple(rings)
        starts = np.concatenate([[0], np.cumsum(chosen.value_lengths().to_numpy() // 2)[:-1]])
        bounds[index[ok]] = np.column_stack(
            [
                np.minimum.reduceat(coords[:, 0], starts),
                np.minimum.reduceat(coords[:, 1], starts),
                np.maximum.reduceat(coords[:, 0], starts),
                np.maximum.reduceat(coords[:, 1], starts),
            ]
        )
    n_points[index[(lengths % 2) == 1]] = 0  # an odd coordinate count is not a polygon
    return n_points, simple, bounds


def _attribute_rule(frame: pd.DataFrame, guidelines: GuidelineSet, in_taxonomy: np.ndarray) -> pd.Series:
    """Declared attributes hold one of their declared values (undeclared attributes are free)."""
    declared = {
        (g.version, c.name, name): set(values)
        for g in guidelines.by_version.values()
        for c in g.classes.values()
        for name, values in c.attributes.items()
    }
    n = len(frame)
    applies = np.zeros(n, dtype=bool)
    passes = np.ones(n, dtype=bool)
    attributes = frame["attributes"].astype(object).fillna("{}")
    for (version, label, name), values in declared.items():
        rows = ((frame["guideline_version"] == version) & (frame["label"] == label)).to_numpy() & in_taxonomy
        if not rows.any():
            continue
        pattern = '"' + name + r'":(?:"((?:[^"\\]|\\.)*)"|([^,}\]]+))'
        found = attributes[rows].str.extract(pattern)
        value = found[0].fillna(found[1])
        present = value.notna().to_numpy()
        applies[np.flatnonzero(rows)[present]] = True
        passes[np.flatnonzero(rows)[present]] &= value[present].isin(list(values)).to_numpy()
    return _where(applies, passes)


def validation_frame(
    annotations: pd.DataFrame, items: pd.DataFrame, guidelines: GuidelineSet, day: str, now: datetime
) -> pd.DataFrame:
    """Everything the suites need: the canonical row, the remap columns and the rule facts."""
    frame = fill_image_sizes(annotations, items)
    frame = apply_guidelines(frame, guidelines, day)
    return rule_columns(frame, guidelines, now)


def split_validated(frame: pd.DataFrame, failures: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Validated rows and quarantined rows; every input row lands in exactly one of them.

    ``failures`` has one row per (annotation_id, rule) that a suite found unexpected,
    with its ``severity`` and ``reason``. A critical failure quarantines the row with
    every reason it collected; warnings travel with the validated row. Failures are
    keyed by row position (``row``), so a repeated annotation id cannot pull its
    first, valid occurrence into quarantine.
    """
    columns = [*list(ANNOTATION_SCHEMA.names), "remapped_from", "needs_relabel"]
    critical = failures[failures["severity"] == "critical"]
    warning = failures[failures["severity"] != "critical"]
    is_bad = np.zeros(len(frame), dtype=bool)
    is_bad[critical["row"].to_numpy(dtype=np.int64)] = True

    positions = pd.Series(np.arange(len(frame)))
    validated = frame.loc[~is_bad, columns].copy()
    validated["validation_warnings"] = positions[~is_bad].map(_joined(warning, "reason")).to_numpy(dtype=object)
    quarantined = frame.loc[is_bad, columns].copy()
    quarantined["rule"] = positions[is_bad].map(_joined(critical, "rule")).to_numpy(dtype=object)
    quarantined["reason"] = positions[is_bad].map(_joined(critical, "reason")).to_numpy(dtype=object)
    return validated.reset_index(drop=True), quarantined.reset_index(drop=True)


def _joined(failures: pd.DataFrame, column: str) -> pd.Series:
    if failures.empty:
        return pd.Series(dtype=object)
    return failures.drop_duplicates(["row", column]).groupby("row", sort=True)[column].agg("; ".join)


def summary(validated: pd.DataFrame, quarantined: pd.DataFrame) -> dict[str, Any]:
    """The reconciliation an engineer checks first: input = validated + quarantined."""
    by_rule = quarantined["rule"].str.split("; ").explode().value_counts().to_dict() if len(quarantined) else {}
    return {
        "input_rows": len(validated) + len(quarantined),
        "validated_rows": len(validated),
        "quarantined_rows": len(quarantined),
        "quarantined_by_rule": json.loads(json.dumps(by_rule)),
        "remapped_rows": int(validated["remapped_from"].notna().sum()),
    }
