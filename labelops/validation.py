"""Row-level validation of canonical annotations: guideline remapping and the facts the suites assert.

Great Expectations checks columns; some rules need geometry or the guideline in force
(is the polygon simple, is the label in *this annotation's* taxonomy). Those facts are
computed here as boolean columns — True passes, False fails, null means the rule does
not apply to the row — and the suites in ``expectations/`` assert them. Quarantine is
then a join of the suites' unexpected rows back onto the table.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import shapely

from labelops.guidelines import GuidelineError, GuidelineSet
from labelops.schema import ANNOTATION_SCHEMA

# Boxes may overhang the image border by this much (pixels) before they count as outside:
# tools round coordinates, and a half-pixel overhang is not a labeling error.
BORDER_TOLERANCE = 1.0
CLOCK_SKEW = timedelta(minutes=5)
AREA = '"area":'  # the key an export declares a region's area under, in ``attributes``
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
    """Image sizes the export did not carry (long tables, some COCO files), from the item catalog.

    Only the rows missing a size are looked up: a table export leaves half a day's rows without one.
    """
    missing = np.flatnonzero((frame["image_width"].isna() | frame["image_height"].isna()).to_numpy())
    if items.empty or not len(missing):
        return frame
    sizes = items.drop_duplicates("item_id", keep="last")
    ids = _text(frame["item_id"]).take(missing)
    found = pc.index_in(ids, value_set=_text(sizes["item_id"]).cast(ids.type)).fill_null(-1).to_numpy()
    out = frame.copy(deep=False)  # only whole columns are set below: the caller's frame is never written
    for column, source in (("image_width", "width"), ("image_height", "height")):
        values = out[column].to_numpy(dtype=float, copy=True)
        catalog = np.where(found >= 0, sizes[source].to_numpy(dtype=float)[found], np.nan)
        gap = np.isnan(values[missing])
        values[missing[gap]] = catalog[gap]
        out[column] = values
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
    out = frame.copy(deep=False)
    out["label"] = out["label"].copy()  # the one column rewritten in place below (pandas < 3 has no copy-on-write)
    in_force = _in_force_when_made(out, guidelines)
    # the version per distinct (version in force, label) pair: a handful of lookups, whatever the rows
    version_codes, versions = pd.factorize(in_force)  # -1: no version in force (stays null)
    label_codes, labels = pd.factorize(out["label"].fillna(""))
    pairs, inverse = np.unique(version_codes.astype(np.int64) * (len(labels) + 1) + label_codes, return_inverse=True)
    made = np.array(
        [
            guidelines.made_under(versions[p // (len(labels) + 1)], labels[p % (len(labels) + 1)]) if p >= 0 else None
            for p in pairs
        ],
        dtype=object,
    )
    version = out["guideline_version"].to_numpy(dtype=object)
    undeclared = out["guideline_version"].isna().to_numpy()
    version[undeclared] = made[inverse[undeclared]]
    out["guideline_version"] = pd.Series(version, index=out.index, dtype=object)
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
    """The facts the suites assert, one nullable boolean column per rule.

    Facts that depend on the guideline (taxonomy, geometry, minimum size, attributes) are decided once per
    distinct (version, label, kind) and spread to the rows: a day holds a million rows but a few dozen classes.
    Text facts about ``attributes`` are read with Arrow kernels on the Arrow strings the table arrives in.
    """
    out = frame.copy(deep=False)  # only whole columns are set below: the caller's frame is never written
    n = len(out)
    classes, of_row = _classes(out)
    key = classes["version"] + "\x1f" + classes["label"]
    taxonomy = {f"{g.version}\x1f{c}" for g in guidelines.by_version.values() for c in g.classes}
    allowed = {
        f"{g.version}\x1f{c.name}\x1f{geo}"
        for g in guidelines.by_version.values()
        for c in g.classes.values()
        for geo in c.geometry
    }
    min_sizes = {f"{g.version}\x1f{c}": g.min_size(c) for g in guidelines.by_version.values() for c in g.classes}
    kinds = classes["kind"].to_numpy(dtype=object)
    known = classes["version"].isin(list(guidelines.by_version)).to_numpy()[of_row]
    class_in_taxonomy = key.isin(taxonomy).to_numpy()
    in_taxonomy = class_in_taxonomy[of_row]
    geometry_ok = (key + "\x1f" + classes["kind"]).isin(allowed).to_numpy()[of_row]
    is_region = ((kinds == "bbox") | (kinds == "polygon"))[of_row]
    is_polygon = (kinds == "polygon")[of_row]
    min_w = key.map({k: v[0] for k, v in min_sizes.items()}).to_numpy(dtype=float)[of_row]
    min_h = key.map({k: v[1] for k, v in min_sizes.items()}).to_numpy(dtype=float)[of_row]

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
    with np.errstate(invalid="ignore"):
        big_enough = (w >= min_w) & (h >= min_h)

    n_points, simple, bounds = _polygon_facts(out["points"], is_polygon)
    attributes = _text(out["attributes"])
    single_part = ~_contains(attributes, '"polygon_parts"')
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
    area = _declared_area(attributes)
    closed = ~_contains(attributes, '"closed":false')

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
        "area_non_negative": _where(~np.isnan(area), area >= 0),
        "not_in_future": _where(stamps.notna().to_numpy(), ~future),
        "attributes_valid": _attribute_rule(attributes, classes, of_row, class_in_taxonomy, guidelines),
    }
    for name, values in rules.items():
        out[name] = values
    return out


def _classes(frame: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """The distinct (version, label, kind) of ``frame`` as text, and each row's position among them.

    A missing version or label reads as "" and a missing kind stays missing, as the rules read them.
    """
    version, versions = _codes(frame["guideline_version"], "")
    label, labels = _codes(frame["label"], "")
    kind, kinds = _codes(frame["kind"], np.nan)
    pair, pairs = pd.factorize(version * len(labels) + label)
    of_row, triples = pd.factorize(pair * len(kinds) + kind)
    triples = np.asarray(triples, dtype=np.int64)
    pair_of_class = pairs[triples // len(kinds)]
    classes = pd.DataFrame(
        {
            "version": versions[pair_of_class // len(labels)],
            "label": labels[pair_of_class % len(labels)],
            "kind": kinds[triples % len(kinds)],
        },
        dtype=object,
    )
    return classes, of_row


def _codes(values: pd.Series, missing: object) -> tuple[np.ndarray, np.ndarray]:
    """Each row's code into the distinct values (as Python objects, ``missing`` last for nulls)."""
    codes, uniques = pd.factorize(values)
    distinct = np.empty(len(uniques) + 1, dtype=object)
    distinct[:-1] = np.asarray(uniques, dtype=object)
    distinct[-1] = missing
    return np.where(codes < 0, len(uniques), codes).astype(np.int64), distinct


def _text(values: pd.Series) -> pa.Array:
    """A text column as one Arrow array (the table's own buffers when it is Arrow-backed), nulls kept."""
    text = pa.array(values, from_pandas=True)
    text = text.combine_chunks() if isinstance(text, pa.ChunkedArray) else text
    return text.cast(pa.string()) if pa.types.is_null(text.type) else text  # no value at all: still text


def _contains(text: pa.Array, literal: str) -> np.ndarray:
    """Rows whose text holds ``literal``; a missing text holds nothing."""
    return pc.fill_null(pc.match_substring(text, literal), False).to_numpy(zero_copy_only=False)


def _declared_area(attributes: pa.Array) -> np.ndarray:
    """The ``"area"`` an export declares (NaN where it declares none or no number), read like pandas reads it."""
    area = np.full(len(attributes), np.nan)
    rows = np.flatnonzero(_contains(attributes, AREA))
    found = pc.extract_regex(attributes.take(rows), AREA + r"(?P<area>-?[0-9.eE+-]+)")
    matched = found.is_valid().to_numpy(zero_copy_only=False)
    text = pc.struct_field(found.filter(pa.array(matched)), [0]).to_numpy(zero_copy_only=False)
    area[rows[matched]] = pd.to_numeric(pd.Series(text, dtype=object), errors="coerce").to_numpy(dtype=float)
    return area


def _where(applies: np.ndarray, passes: np.ndarray) -> pd.Series:
    """A nullable boolean column: the rule's verdict where it applies, null elsewhere."""
    return pd.Series(pd.arrays.BooleanArray(np.where(applies, passes, False), ~applies))


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


def _attribute_rule(
    attributes: pa.Array,
    classes: pd.DataFrame,
    of_row: np.ndarray,
    class_in_taxonomy: np.ndarray,
    guidelines: GuidelineSet,
) -> pd.Series:
    """Declared attributes hold one of their declared values (undeclared attributes are free).

    Each attribute name is read once, with one regex, over the rows of every class that declares it.
    """
    declared: dict[str, list[tuple[np.ndarray, list[Any]]]] = {}
    for g in guidelines.by_version.values():
        for c in g.classes.values():
            of_class = ((classes["version"] == g.version) & (classes["label"] == c.name)).to_numpy()
            for name, values in c.attributes.items():
                declared.setdefault(name, []).append((of_class & class_in_taxonomy, list(values)))
    n = len(of_row)
    applies = np.zeros(n, dtype=bool)
    passes = np.ones(n, dtype=bool)
    for name, entries in declared.items():
        rows = np.flatnonzero(np.logical_or.reduce([of_class for of_class, _ in entries])[of_row])
        if not len(rows):
            continue
        pattern = '"' + name + r'":(?:"(?P<quoted>(?:[^"\\]|\\.)*)"|(?P<bare>[^,}\]]+))'
        found = pc.extract_regex(attributes.take(rows), pattern)
        present = found.is_valid().to_numpy(zero_copy_only=False)
        rows, found = rows[present], found.filter(pa.array(present))
        quoted, bare = pc.struct_field(found, [0]), pc.struct_field(found, [1])
        # a bare value is never empty, so an empty one means the quoted alternative matched
        value = pc.dictionary_encode(pc.if_else(pc.not_equal(bare, ""), bare, quoted))
        texts = pd.Series(value.dictionary.to_pylist(), dtype=object)
        of_value = value.indices.to_numpy(zero_copy_only=False)
        for of_class, values in entries:
            mine = of_class[of_row[rows]]
            applies[rows[mine]] = True
            passes[rows[mine]] &= texts.isin(values).to_numpy()[of_value[mine]]
    return _where(applies, passes)


def validation_frame(
    annotations: pd.DataFrame, items: pd.DataFrame, guidelines: GuidelineSet, day: str, now: datetime
) -> pd.DataFrame:
    """Everything the suites need: the canonical row, the remap columns and the rule facts."""
    frame = fill_image_sizes(annotations, items)
    frame = apply_guidelines(frame, guidelines, day)
    return rule_columns(frame, guidelines, min(now, latest_stamp(day)))


def latest_stamp(day: str) -> datetime:
    """The latest time a judgment delivered in ``day``'s folder can have been made: the end of the next day (UTC),
    for a vendor whose own day runs up to 14 hours behind. A later stamp is a clock or a folder gone wrong, and
    would choose a guideline version not yet in force; against the run's clock alone, a backfill of an old day
    would let it pass."""
    return datetime.fromisoformat(day).replace(tzinfo=UTC) + timedelta(days=2)


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
    validated = frame.loc[~is_bad, columns]  # a new frame: the mask takes its rows (a .copy() copied them again)
    validated["validation_warnings"] = positions[~is_bad].map(_joined(warning, "reason")).to_numpy(dtype=object)
    quarantined = frame.loc[is_bad, columns]
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
