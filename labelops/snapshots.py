"""Curated dataset snapshots: immutable, content-addressed, versioned, diffable.

A snapshot is ``snapshots/<version>/`` in the warehouse: ``items.parquet`` and ``labels.parquet``,
``diff.json`` against its parent, and ``manifest.json`` — written last, so a snapshot exists
exactly when its manifest does. ``snapshots/latest`` names the newest version. A version is never
rewritten; publishing content whose hash equals the latest snapshot's publishes nothing. Its COCO and
YOLO files (``export/``) are written on request by :func:`write_exports`: they are conversions of the
version's tables, and a full-dataset file a night would rewrite for every item is paid only by who reads it.

Splits are assigned per group (a capture session, by default), so a group never straddles splits;
a group already in the parent keeps its split, and new groups are spread over the splits in
proportion within each stratum, in an order fixed by a seeded hash.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from labelops import boxes
from labelops.columns import codes, first_appearances, first_rows, isin, lookup, run_positions
from labelops.export import to_coco, to_yolo
from labelops.guidelines import Remap
from labelops.quality import CONSENSUS_COLUMNS
from labelops.reporting import json_safe
from labelops.storage import Store, mapped

ROOT = "snapshots"
LATEST = f"{ROOT}/latest"
DATA_FILES = ("items.parquet", "labels.parquet")
SPLITS = ("train", "val", "test")
# The stratum value of an item without a scene label (every detection-only dataset) or without a slice value.
NO_LABEL = "(no label)"


class SnapshotConflictError(RuntimeError):
    """Another run is publishing different content under the same version."""


class SnapshotExistsError(RuntimeError):
    """A published version cannot be written again."""


@dataclass(frozen=True)
class CurationConfig:
    min_confidence: float = 0.7
    group_key: str = "session_id"
    stratify_by: tuple[str, ...] = ("label",)
    split_ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 0


@dataclass(frozen=True, eq=False)
class ItemCodes:
    """The shared integer item codes curation joined on (:func:`labelops.columns.codes`), kept for the diff against
    the same parent: ranking a million ids again costs a fifth of a second a night."""

    items: np.ndarray  # of the curated items' rows
    labels: np.ndarray  # of the curated label rows
    parent: np.ndarray  # of the parent's item rows, in its order
    parent_ids: pd.Index  # the parent's item ids they code: the diff uses the codes only for these


@dataclass
class Curated:
    items: pd.DataFrame
    labels: pd.DataFrame
    excluded: dict[str, int] = field(default_factory=dict)
    stratification: dict[str, list[str]] = field(default_factory=dict)
    codes: ItemCodes | None = None


@dataclass(frozen=True)
class StateInputs:
    """What curation reads of the label state: its rows (the consensus labels, and one row without a kind for each
    item without one, which curation skips: selecting them cost half a second a night), and the items still
    waiting for a decision."""

    consensus: pd.DataFrame
    review: pd.DataFrame  # item_id
    relabel: pd.DataFrame  # item_id, rule
    items: pd.Series


STATE_COLUMNS = [*CONSENSUS_COLUMNS, "status"]  # what curation reads of the label state


def state_inputs(state: pd.DataFrame) -> StateInputs:
    """The current label state as curation's inputs: answered items are no longer waiting for anything."""
    items = first_rows(state[["item_id", "status"]], "item_id")
    waiting = items[items["status"].isin(["relabel_requested", "needs_relabel"])]
    return StateInputs(
        consensus=state,  # curation skips the rows without a consensus (an item with no label has one, no kind)
        review=items.loc[items["status"] == "in_review", ["item_id"]].reset_index(drop=True),
        relabel=pd.DataFrame({"item_id": waiting["item_id"].to_numpy(), "rule": "needs_relabel"}),
        items=items["item_id"].reset_index(drop=True),
    )


LABEL_KEY = ["item_id", "kind", "label", "x", "y", "w", "h"]  # one label row of an item; labels sort by it


def curate(
    consensus: pd.DataFrame,
    items: pd.DataFrame,
    review: pd.DataFrame,
    quarantined: pd.DataFrame,
    parent_splits: pd.Series,
    config: CurationConfig,
    annotated: pd.Series | None = None,
) -> Curated:
    """Items and labels that go into the snapshot, with their splits, and what was left out and why.

    The consensus is read under one guideline already (the label state carries older labels to the version
    in force), so one class never appears under two names in one dataset. ``annotated`` are the
    items with validated annotations: those that reach no consensus (polygons only, boxes from a
    single annotator) or are missing from the item catalog are counted in ``excluded`` too, so
    every validated item is in the snapshot or counted.

    Every input's item ids get shared integer codes once (:func:`labelops.columns.codes`): the joins and
    membership tests between a million-item catalog, the state and the parent are then array lookups.
    """
    relabel = (
        quarantined.loc[quarantined["rule"].astype(str).str.contains("needs_relabel"), "item_id"]
        if len(quarantined)
        else pd.Series(dtype=object)
    )
    known = annotated.dropna() if annotated is not None else pd.Series(dtype=object)
    # the label state's rows come grouped by item in the order of its items (``annotated``): they take their
    # items' codes, and the million rows are not ranked again
    at = run_positions(known, consensus["item_id"])
    if at is not None:
        catalog_ids, review_ids, relabel_ids, parent_ids, annotated_ids = codes(
            items["item_id"], review["item_id"], relabel, parent_splits.index, known
        )
        label_ids = annotated_ids[at]
    else:
        label_ids, catalog_ids, review_ids, relabel_ids, parent_ids, annotated_ids = codes(
            consensus["item_id"], items["item_id"], review["item_id"], relabel, parent_splits.index, known
        )
    ids = (label_ids, catalog_ids, review_ids, relabel_ids, parent_ids, annotated_ids)
    size = max((int(c.max()) + 1 for c in ids if len(c)), default=0)
    # Rows are tracked as positions into the inputs and each frame is taken once, at the end.
    # rows without a kind are items without a consensus (the label state gives them one row): no label
    label_rows = np.flatnonzero(consensus["kind"].notna().to_numpy() & ~_duplicated_labels(consensus, label_ids))
    label_ids = label_ids[label_rows]
    catalog_rows = np.flatnonzero(_first(catalog_ids[::-1])[::-1])  # the catalog's last row of an item
    catalog_ids = catalog_ids[catalog_rows]
    has_consensus = _member(label_ids, size)
    keep = has_consensus[catalog_ids]
    # in item order, whatever the catalog's (an item index kept as layers lists the items a day added last):
    # of duplicate items, the first by id stays
    order = np.argsort(catalog_ids[keep], kind="stable")
    rows, labeled_ids = catalog_rows[keep][order], catalog_ids[keep][order]
    # an item the state holds (in review, waiting for a relabel) is counted as held, whatever its consensus
    # (none, or one below min_confidence) says: the status is why it is out, and what ends its exclusion
    held = {"waiting_for_review": _member(review_ids, size), "waiting_for_relabel": _member(relabel_ids, size)}
    held["waiting_for_relabel"] &= ~held["waiting_for_review"]
    excluded: dict[str, int] = {}
    unlabeled_held = np.zeros(size, dtype=bool)
    if annotated is not None:
        distinct = np.flatnonzero(_member(annotated_ids, size))  # the codes of the annotated items
        in_catalog = _member(catalog_ids, size)[distinct]
        excluded["not_in_catalog"] = int((~in_catalog).sum())
        bare = distinct[in_catalog & ~has_consensus[distinct]]
        unlabeled_held[bare] = held["waiting_for_review"][bare] | held["waiting_for_relabel"][bare]
        excluded["no_consensus"] = int((~unlabeled_held[bare]).sum())
    excluded |= {"low_confidence": 0, **dict.fromkeys(held, 0)}  # the manifest's order of reasons

    def drop(mask: np.ndarray, reason: str) -> None:
        nonlocal rows, labeled_ids
        excluded[reason] = int(mask.sum())
        rows, labeled_ids = rows[~mask], labeled_ids[~mask]

    is_scene = _is_scene(consensus)[label_rows]
    scenes = np.flatnonzero(is_scene)
    last = scenes[_first(label_ids[scenes][::-1])[::-1]]  # an item's last scene label gives its confidence
    confidence = np.full(size, np.nan)
    values = consensus["confidence"].iloc[label_rows[last]].to_numpy(dtype=object)
    confidence[label_ids[last]] = pd.Series(values, dtype=float).to_numpy()
    for reason, members in held.items():
        drop(members[labeled_ids], reason)
        excluded[reason] += int((unlabeled_held & members).sum())
    drop(confidence[labeled_ids] < config.min_confidence, "low_confidence")
    identity = items["content_hash" if "content_hash" in items else "uri"].iloc[rows]
    drop(identity.notna().to_numpy() & ~_first(codes(identity)[0]), "duplicate")

    labeled = items.iloc[rows].reset_index(drop=True)
    chosen = _member(labeled_ids, size)[label_ids]
    label_rows, label_ids, is_scene = label_rows[chosen], label_ids[chosen], is_scene[chosen]
    order = _label_order(consensus, label_rows, label_ids)
    labels = consensus.drop(columns="status", errors="ignore").iloc[label_rows[order]].reset_index(drop=True)
    label_ids, is_scene = label_ids[order], is_scene[order]
    first = np.flatnonzero(_first(parent_ids))
    parent = np.full(size, None, dtype=object)
    parent[parent_ids[first]] = parent_splits.iloc[first].to_numpy(dtype=object)
    scenes = np.flatnonzero(is_scene)
    scenes = scenes[_first(label_ids[scenes])]  # an item's first scene label (in label order) is its stratum
    scene = np.full(size, None, dtype=object)
    scene[label_ids[scenes]] = labels["label"].iloc[scenes].to_numpy(dtype=object)
    labeled["split"] = assign_splits(labeled, parent[labeled_ids], scene[labeled_ids], config)
    used, skipped = strata_columns(config.stratify_by, labeled)
    return Curated(
        labeled,
        labels,
        excluded,
        {"by": used, "skipped": skipped},
        ItemCodes(labeled_ids, label_ids, parent_ids, parent_splits.index),
    )


def _first(ids: np.ndarray) -> np.ndarray:
    """Whether each row is the first of its code: ``~duplicated(keep="first")`` on integer codes, without a sort
    (night 60's curation spent 0.64 s in the stable sorts of its twelve calls). Codes in order (ascending, as a
    version's items, or descending, as a catalog read from its end) start a run of equal codes at their first row;
    otherwise pandas numbers the codes in order of appearance (a hash), and their first appearances are the first
    rows."""
    n = len(ids)
    if n < 2:
        return np.ones(n, dtype=bool)
    if (ids[1:] >= ids[:-1]).all() or (ids[1:] <= ids[:-1]).all():
        first = np.ones(n, dtype=bool)
        first[1:] = ids[1:] != ids[:-1]
        return first
    return first_appearances(pd.factorize(ids)[0])


def _member(ids: np.ndarray, size: int) -> np.ndarray:
    """Per code below ``size``, whether ``ids`` holds it: a membership test is then one index operation."""
    present = np.zeros(size, dtype=bool)
    present[ids] = True
    return present


def _is_scene(labels: pd.DataFrame) -> np.ndarray:
    return labels["kind"].eq("classification").to_numpy(dtype=bool, na_value=False)


def _multi_row(ids: np.ndarray) -> np.ndarray:
    """Positions of the rows whose item has more than one row: only they can repeat or need ordering among
    themselves, and an item has one label row in most datasets."""
    return np.flatnonzero(np.bincount(ids)[ids] > 1) if len(ids) else np.array([], dtype=np.int64)


def _duplicated_labels(labels: pd.DataFrame, ids: np.ndarray) -> np.ndarray:
    """``labels.duplicated(LABEL_KEY, keep="last")``, the item id compared by its code, among the rows of items
    with more than one row."""
    duplicated = np.zeros(len(labels), dtype=bool)
    rows = _multi_row(ids)
    if len(rows):
        sample = labels.iloc[rows][LABEL_KEY[1:]].assign(item_id=ids[rows])
        duplicated[rows] = sample.duplicated(keep="last").to_numpy()
    return duplicated


def _label_order(labels: pd.DataFrame, rows: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """The order of ``rows`` of ``labels`` (``ids`` their item codes) that sorts them by :data:`LABEL_KEY`,
    stably, as ``sort_values`` does: by item code, then within items of several rows by their rank under
    pandas' sort of those rows alone."""
    rank = np.zeros(len(rows), dtype=np.int64)
    multi = _multi_row(ids)
    if len(multi):
        sample = labels.iloc[rows[multi]][LABEL_KEY[1:]].assign(item_id=ids[multi]).reset_index(drop=True)
        ranked = sample.sort_values(LABEL_KEY, kind="stable").index.to_numpy()
        rank[multi[ranked]] = np.arange(len(multi))
    return np.lexsort((rank, ids))


def strata_columns(stratify_by: Sequence[str], items: pd.DataFrame) -> tuple[list[str], list[str]]:
    """The configured strata this catalog can serve, and the slice columns it lacks.

    Slice columns differ between catalogs (only some have ``lighting``), so a missing one is skipped and
    reported rather than failing the snapshot; ``label`` is the scene label, which every dataset has a
    stratum for, if only :data:`NO_LABEL`.
    """
    used = [column for column in stratify_by if column == "label" or column in items.columns]
    return used, [column for column in stratify_by if column not in used]


def assign_splits(items: pd.DataFrame, parent: np.ndarray, scene: np.ndarray, config: CurationConfig) -> np.ndarray:
    """One split per group; groups from the parent keep theirs, new groups are stratified.

    ``parent`` is each item's split in the parent (None where new), ``scene`` its scene label (None where
    it has none). Within each stratum (the group's scene label and slice values, the first present in the
    group, :data:`NO_LABEL` where it has none), new groups are taken in a seeded hash order and each goes
    to the split furthest below its target share of the stratum, counting the groups the stratum
    already has. Small daily increments therefore still fill val and test over time, and the same
    inputs always give the same assignment. Slice columns the catalog lacks are skipped.
    """
    if items.empty:
        return np.array([], dtype=object)
    group = items[config.group_key].fillna(items["item_id"]) if config.group_key in items else items["item_id"]
    # groups in sorted order; a group's values are the first present in its rows (as groupby's first())
    group_codes, names = pd.factorize(group.astype(str), sort=True)
    group_split = pd.Series(_first_present(parent, group_codes, len(names)), index=names, dtype=object).dropna()
    # (a group that reappears keeps its split)
    columns, _ = strata_columns(config.stratify_by, items)
    per_group = pd.DataFrame(
        {
            column: _first_present(
                scene if column == "label" else items[column].to_numpy(dtype=object), group_codes, len(names)
            )
            for column in columns
        },
        index=names,
    ).fillna(NO_LABEL)
    stratum = pd.Series("", index=per_group.index, dtype=object)
    for position, column in enumerate(columns):  # "label|lighting" values, one vectorized join per column
        stratum = stratum + ("|" if position else "") + per_group[column].astype(str).to_numpy(dtype=object)
    ratios = np.asarray(config.split_ratios, dtype=float) / sum(config.split_ratios)
    is_known = isin(stratum.index.to_series(), group_split.index.to_series())
    known = pd.DataFrame(
        {"stratum": stratum[is_known].to_numpy(dtype=object), "split": lookup(stratum.index[is_known], group_split)}
    )
    have_counts = known.groupby(["stratum", "split"]).size()
    counts = {s: np.array([have_counts.get((s, name), 0) for name in SPLITS], dtype=float) for s in stratum.unique()}
    new = stratum[~is_known].to_frame("stratum")
    new["order"] = _hash(new.index.to_series(), config.seed)
    new = new.sort_values(["stratum", "order"])
    picked = []
    for name in new["stratum"].to_numpy(dtype=object):  # one step per new group, not per row
        have = counts[name]
        pick = int(np.argmax(ratios * (have.sum() + 1) - have))
        have[pick] += 1
        picked.append(SPLITS[pick])
    chosen = pd.concat([group_split, pd.Series(picked, index=new.index, dtype=object)])
    split = np.concatenate([lookup(names, chosen), np.array([None], dtype=object)])
    return split[group_codes]  # a missing group (code -1) takes the None at the end


def _first_present(values: np.ndarray, groups: np.ndarray, size: int) -> np.ndarray:
    """Per group code below ``size``, the first value in row order that is not missing (None where none is): each
    group's least row by ``np.minimum.at``, which a group's rows in any order give without factorizing the codes
    (the parent's splits of night 60's 909,041 items: 0.03 s against 0.1 s)."""
    rows = np.flatnonzero(pd.notna(values) & (groups >= 0))
    first_row = np.full(size, len(values), dtype=np.int64)
    np.minimum.at(first_row, groups[rows], rows)
    found = first_row < len(values)
    first = np.full(size, None, dtype=object)
    first[found] = values[first_row[found]]
    return first


def _hash(values: pd.Series, seed: int) -> np.ndarray:
    return pd.util.hash_pandas_object(values.astype(str) + f"#{seed}", index=False).to_numpy()


def parquet_bytes(frame: pd.DataFrame) -> bytes:
    """Deterministic Parquet: same frame, same bytes."""
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), buffer, compression="zstd")
    return buffer.getvalue()


def content_hash(files: dict[str, bytes]) -> str:
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    return digest.hexdigest()


def versions(store: Store) -> list[str]:
    """Published versions (those with a manifest), oldest first."""
    return sorted(k.split("/")[1] for k in store.list(ROOT) if k.count("/") == 2 and k.endswith("/manifest.json"))


def latest(store: Store) -> str | None:
    """The newest published version. ``snapshots/latest`` names it for readers outside labelops;
    the manifests are the truth, so a crash between a manifest and that pointer changes nothing."""
    published = versions(store)
    return published[-1] if published else None


def manifest(store: Store, version: str) -> dict:
    return json.loads(store.read_bytes(f"{ROOT}/{version}/manifest.json"))


def read_table(store: Store, version: str, name: str, columns: list[str] | None = None) -> pd.DataFrame:
    return pq.read_table(pa.BufferReader(mapped(store, f"{ROOT}/{version}/{name}")), columns=columns).to_pandas()


def diff(
    parent_items: pd.DataFrame | None,
    parent_labels: pd.DataFrame | None,
    items: pd.DataFrame,
    labels: pd.DataFrame,
    changes: Remap | None = None,
    item_codes: ItemCodes | None = None,
) -> dict:
    """Items added and removed, scene labels changed (old and new), box changes, and split moves.

    ``changes`` are what the guideline changes from the parent's version to this one did: a scene label or box
    whose only change is a rename or merge is listed under ``remapped_labels`` / ``remapped_objects``, and a
    box gone because its class was removed under ``retired_objects``, rather than as changes of the data. Items are matched by shared integer codes of their ids, one sort of both
    versions' item ids (label rows, grouped in their items' order, take their items' codes; other tables get
    codes of all four id columns): a version holds every item of the dataset, a night changes few of them.
    ``item_codes`` are curation's codes of ``items`` and ``labels``: they are used where they code this parent's
    item ids, and the ids are then not ranked again.
    """
    if parent_items is None or parent_labels is None:  # the first version: no parent tables
        return {
            "added": sorted(items["item_id"]),
            "removed": [],
            "label_changes": [],
            "object_changes": [],
            "remapped_labels": [],
            "remapped_objects": [],
            "retired_objects": [],
            "split_moves": [],
        }
    reused = item_codes is not None and _same_ids(item_codes.parent_ids, parent_items["item_id"])
    if item_codes is not None and reused:
        old_ids, new_ids, new_label_ids = item_codes.parent, item_codes.items, item_codes.labels
    else:
        old_ids, new_ids = codes(parent_items["item_id"], items["item_id"])
        new_label_ids = None
    # a version's labels come grouped by item in its items' order: their codes are their items' codes
    old_at, new_at = run_positions(parent_items["item_id"], parent_labels["item_id"]), None
    if old_at is not None and new_label_ids is None:
        new_at = run_positions(items["item_id"], labels["item_id"])
        new_label_ids = new_ids[new_at] if new_at is not None else None
    if old_at is not None and new_label_ids is not None:
        old_label_ids = old_ids[old_at]
    else:
        old_ids, new_ids, old_label_ids, new_label_ids = codes(
            parent_items["item_id"], items["item_id"], parent_labels["item_id"], labels["item_id"]
        )
    ids = (old_ids, new_ids, old_label_ids, new_label_ids)
    size = max((int(c.max()) + 1 for c in ids if len(c)), default=0)

    def scene(frame: pd.DataFrame, frame_ids: np.ndarray) -> tuple[np.ndarray, pd.DataFrame]:
        rows = np.flatnonzero(_is_scene(frame))
        rows = rows[_first(frame_ids[rows])]
        return frame_ids[rows], frame[["item_id", "label"]].iloc[rows]

    renames, retired = (changes.mapping, changes.removed) if changes is not None else ({}, set())
    scenes = _changes(*scene(parent_labels, old_label_ids), *scene(labels, new_label_ids), "label", size)
    changed = changed_items(parent_labels, old_label_ids, labels, new_label_ids, size)
    objects = object_changes(parent_labels[changed[old_label_ids]], labels[changed[new_label_ids]])
    scene_remapped = [renames.get(c["old"]) == c["new"] for c in scenes]
    object_remapped = [c["change"] == "relabelled" and renames.get(c["old_label"]) == c["label"] for c in objects]
    object_retired = [c["change"] == "removed" and c["label"] in retired for c in objects]
    data_change = [not (r or g) for r, g in zip(object_remapped, object_retired, strict=True)]
    return {
        "added": _sorted_ids(items, new_ids, ~_member(old_ids, size)[new_ids]),
        "removed": _sorted_ids(parent_items, old_ids, ~_member(new_ids, size)[old_ids]),
        "label_changes": [c for c, remapped in zip(scenes, scene_remapped, strict=True) if not remapped],
        "object_changes": [c for c, changed in zip(objects, data_change, strict=True) if changed],
        "remapped_labels": [c for c, remapped in zip(scenes, scene_remapped, strict=True) if remapped],
        "remapped_objects": [c for c, remapped in zip(objects, object_remapped, strict=True) if remapped],
        "retired_objects": [c for c, gone in zip(objects, object_retired, strict=True) if gone],
        "split_moves": _changes(old_ids, parent_items, new_ids, items, "split", size),
    }


def _same_ids(known: pd.Index, ids: pd.Series) -> bool:
    """Whether two id columns hold the same ids in the same order (compared in Arrow)."""
    if len(known) != len(ids):
        return False
    a, b = pa.array(known, from_pandas=True), pa.array(ids, from_pandas=True)
    if a.null_count or b.null_count or a.type != b.type:
        return False
    return bool(pc.all(pc.equal(a, b)).as_py()) if len(a) else True


def _sorted_ids(frame: pd.DataFrame, ids: np.ndarray, rows: np.ndarray) -> list[str]:
    """The item ids of the chosen rows in sorted order (their codes sort as the ids do)."""
    chosen = np.flatnonzero(rows)
    return frame["item_id"].iloc[chosen[np.argsort(ids[chosen], kind="stable")]].tolist()


def _changes(
    before_ids: np.ndarray, before: pd.DataFrame, after_ids: np.ndarray, after: pd.DataFrame, column: str, size: int
) -> list[dict]:
    """Items in both tables (one row per item, ``*_ids`` their codes) whose ``column`` differs: item_id, old,
    new, by item.

    The values are compared as objects (``!=``, so a missing value always differs) only where a vectorized
    comparison does not find them equal: a night changes few of a million values.
    """
    at = np.full(size, -1, dtype=np.int64)
    first = np.flatnonzero(_first(before_ids))
    at[before_ids[first]] = first
    found = at[after_ids]
    both = np.flatnonzero(found >= 0)
    old = before[column].iloc[found[both]].reset_index(drop=True)
    new = after[column].iloc[both].reset_index(drop=True)
    maybe = np.flatnonzero(~(old == new).to_numpy(dtype=bool, na_value=False))
    old_values, new_values = old.iloc[maybe].to_numpy(dtype=object), new.iloc[maybe].to_numpy(dtype=object)
    differ = np.asarray(old_values != new_values, dtype=bool)
    changed = pd.DataFrame(
        {
            "item_id": after["item_id"].iloc[both[maybe[differ]]].to_numpy(dtype=object),
            "old": old_values[differ],
            "new": new_values[differ],
        }
    )
    return changed.sort_values("item_id", kind="stable").to_dict("records")


def changed_items(
    before: pd.DataFrame, before_ids: np.ndarray, after: pd.DataFrame, after_ids: np.ndarray, size: int
) -> np.ndarray:
    """Per item code, whether the item is in both versions and its label rows differ: only those can have box
    changes.

    Versions' label rows come grouped by item in id order, each item's in label order: an item with as many rows in
    both is then compared row by row, and one with more or fewer has changed. Other tables take an item's
    signature, the sum of its rows' hashes (the item by its code, kind and label by codes shared by both
    versions). Either way the comparison costs a pass over the rows, and the box matching, which says what
    changed, runs on the items a night changed rather than the whole dataset; an item flagged whose boxes are the
    same shows no change there.
    """
    grouped = (ids.size < 2 or bool((ids[1:] >= ids[:-1]).all()) for ids in (before_ids, after_ids))
    if all(grouped):
        try:
            return changed_in_place(before, before_ids, after, after_ids, size)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):  # a column typed otherwise
            pass
    return changed_by_signature(before, before_ids, after, after_ids, size)


def changed_by_signature(
    before: pd.DataFrame, before_ids: np.ndarray, after: pd.DataFrame, after_ids: np.ndarray, size: int
) -> np.ndarray:
    """:func:`changed_items` for label rows in any order: an item's rows hashed and summed on each side."""
    both = pd.concat([before[LABEL_KEY[1:]], after[LABEL_KEY[1:]]], ignore_index=True)
    rows = pd.DataFrame(
        {
            "item_id": np.concatenate([before_ids, after_ids]),
            "kind": pd.factorize(both["kind"])[0],
            "label": pd.factorize(both["label"])[0],
            **{axis: both[axis].to_numpy() for axis in "xywh"},
        }
    )
    hashes = pd.util.hash_pandas_object(rows, index=False).to_numpy()
    signatures = []
    for ids, part in ((before_ids, hashes[: len(before_ids)]), (after_ids, hashes[len(before_ids) :])):
        total = np.zeros(size, dtype=np.uint64)
        np.add.at(total, ids, part)
        signatures.append(total)
    return _member(before_ids, size) & _member(after_ids, size) & (signatures[0] != signatures[1])


def changed_in_place(
    before: pd.DataFrame, before_ids: np.ndarray, after: pd.DataFrame, after_ids: np.ndarray, size: int
) -> np.ndarray:
    """:func:`changed_items` for label rows sorted by item code: the rows of the items with as many rows on both
    sides pair up in order, and are compared column by column (a missing value equals a missing value)."""
    count_before, count_after = np.bincount(before_ids, minlength=size), np.bincount(after_ids, minlength=size)
    in_both = (count_before > 0) & (count_after > 0)
    paired = in_both & (count_before == count_after)
    old, new = np.flatnonzero(paired[before_ids]), np.flatnonzero(paired[after_ids])
    differs = np.zeros(len(old), dtype=bool)
    for name in LABEL_KEY[1:]:
        a, b = before[name].iloc[old], after[name].iloc[new]
        if pd.api.types.is_float_dtype(a.dtype) and pd.api.types.is_float_dtype(b.dtype):
            x, y = a.to_numpy(dtype=float), b.to_numpy(dtype=float)
            differs |= ~((x == y) | (np.isnan(x) & np.isnan(y)))
        else:
            x, y = _text(a), _text(b)
            same = pc.fill_null(pc.equal(x, y), False)
            differs |= ~pc.or_(same, pc.and_(pc.is_null(x), pc.is_null(y))).to_numpy(zero_copy_only=False)
    changed = in_both & ~paired
    changed[before_ids[old[differs]]] = True
    return changed


def _text(values: pd.Series) -> pa.Array:
    """A text column as Arrow (missing values null), without a Python object per value where pandas holds Arrow."""
    column = pa.array(values, from_pandas=True)
    return (
        column.cast(pa.large_string()) if pa.types.is_string(column.type) or pa.types.is_null(column.type) else column
    )


def object_changes(before: pd.DataFrame, after: pd.DataFrame, *, moved_iou: float = 0.5) -> list[dict]:
    """Boxes that changed between two versions' label rows of the same items: added, removed, relabelled, or
    moved below ``moved_iou``.

    The parent's and the new version's boxes of each item are matched like two annotators' (Hungarian on IoU,
    same label first, then a different label at IoU >= 0.5, which is a relabelled box).
    """
    parts = [
        frame[frame["kind"] == "bbox"].assign(annotator_id=side)
        for frame, side in ((before, "0-parent"), (after, "1-new"))
    ]
    frame = pd.concat(parts, ignore_index=True)[["item_id", "annotator_id", "label", "x", "y", "w", "h"]]
    if frame.empty:
        return []
    matches = boxes.match_boxes(frame).matches
    records = frame.assign(
        change=np.where(frame["annotator_id"] == "0-parent", "removed", "added"), old_label=None, iou=np.nan
    )
    records.loc[matches["index_a"].to_numpy(dtype=int), "change"] = None  # matched: judged on the new side
    matched = records.loc[matches["index_b"].to_numpy(dtype=int)].copy()
    matched["old_label"] = matches["label_a"].to_numpy()
    matched["iou"] = matches["iou"].to_numpy(dtype=float)
    change = pd.Series(None, index=matched.index, dtype=object)
    change[matched["iou"] < moved_iou] = "moved"
    change[matched["old_label"] != matched["label"]] = "relabelled"  # a relabelled box may also have moved
    matched["change"] = change
    records.loc[matched.index, ["change", "old_label", "iou"]] = matched[["change", "old_label", "iou"]]
    changed = records[records["change"].notna()].drop(columns="annotator_id")
    changed = changed.sort_values(["item_id", "change", "label", "x", "y"], kind="stable")
    changed["iou"] = changed["iou"].round(4)
    return json.loads(changed.to_json(orient="records"))


def publish(
    store: Store,
    curated: Curated,
    metadata: dict,
    *,
    version: str | None = None,
    guideline_changes: Callable[[str | None], Remap | None] | None = None,
    parent_items: tuple[str, pd.DataFrame] | None = None,
) -> tuple[str, dict, bool]:
    """Write a snapshot (data first, manifest last, then ``latest``); returns (version, manifest, created).

    Content equal to the latest snapshot's publishes nothing. An explicit ``version`` that is
    already published raises :class:`SnapshotExistsError`. ``guideline_changes`` gives, for the parent's
    guideline version, what the changes that lead to this one did (the diff lists what they remapped and retired).
    ``parent_items`` are a version and its items' ``item_id`` and ``split``, as curation read them for its splits:
    the diff reads them again only if another version is the parent by then.
    """
    parent = latest(store)
    parent_manifest = manifest(store, parent) if parent else None
    # The two files are encoded side by side while this thread reads the parent and computes the diff: Arrow
    # encodes, compresses and reads outside the GIL (night 60 of bench.nights: the encoding alone 0.75 s → 0.44 s
    # on two cores, and the diff's 0.5 s hidden behind it). Content equal to the parent's wastes a diff; a rare
    # night.
    with ThreadPoolExecutor(max_workers=2) as pool:
        encoding = [pool.submit(parquet_bytes, frame) for frame in (curated.items, curated.labels)]
        changes = _diff_parent(store, parent, parent_manifest, curated, guideline_changes, parent_items)
        files: dict[str, bytes] = {name: done.result() for name, done in zip(DATA_FILES, encoding, strict=True)}
    digest = content_hash(files)
    if latest(store) != parent:  # another run published meanwhile: that version is the parent, as it is for a claim
        parent = latest(store)
        parent_manifest = manifest(store, parent) if parent else None
        changes = _diff_parent(store, parent, parent_manifest, curated, guideline_changes, parent_items)
    if parent_manifest is not None and parent_manifest["content_hash"] == digest and version is None:
        return str(parent), parent_manifest, False
    published = versions(store)
    if version is None:
        version = f"v{len(published) + 1:04d}"
    if version in published or store.exists(f"{ROOT}/{version}/manifest.json"):
        raise SnapshotExistsError(f"snapshot {version} is already published and is never rewritten")
    # Claim the version before writing into it: a run racing for the same version with other content
    # stops here; a rerun after a crash (or a twin run) with the same content goes on, writing the same bytes.
    claim = f"{ROOT}/{version}/claim.json"
    if not store.create(claim, json.dumps({"content_hash": digest}).encode()):
        owner = json.loads(store.read_bytes(claim))["content_hash"]
        if owner != digest:
            raise SnapshotConflictError(
                f"snapshot {version} is being published by another run (content {owner[:12]}); "
                "this run's content will be the next version when it runs again"
            )
    for name, data in files.items():
        store.write_bytes(f"{ROOT}/{version}/{name}", data)
    store.write_bytes(f"{ROOT}/{version}/diff.json", json.dumps(json_safe(changes), indent=1, allow_nan=False).encode())
    split_counts = curated.items["split"].value_counts().reindex(list(SPLITS), fill_value=0)
    document = {
        "version": version,
        "content_hash": digest,
        "parent_version": parent,
        **metadata,
        "rows": {"items": len(curated.items), "labels": len(curated.labels)},
        "split_sizes": {k: int(v) for k, v in split_counts.items()},
        "class_counts": class_counts(curated.items, curated.labels),
        "excluded": curated.excluded,
        "stratification": curated.stratification,
        "diff_summary": {k: len(v) for k, v in changes.items()},
        "files": {name: hashlib.sha256(data).hexdigest() for name, data in files.items()},
    }
    if not store.create(
        f"{ROOT}/{version}/manifest.json",
        json.dumps(json_safe(document), indent=1, sort_keys=True, allow_nan=False).encode(),
    ):
        return version, manifest(store, version), False  # a twin with the same content published it first
    store.write_bytes(LATEST, version.encode())
    return version, document, True


def _diff_parent(
    store: Store,
    parent: str | None,
    parent_manifest: dict | None,
    curated: Curated,
    guideline_changes: Callable[[str | None], Remap | None] | None,
    known_items: tuple[str, pd.DataFrame] | None = None,
) -> dict:
    """:func:`diff` of the curated tables against the parent version, of which it reads the ids, splits and label
    keys only (the ids and splits not at all when ``known_items`` are the parent's)."""
    if parent is not None and known_items is not None and known_items[0] == parent:
        parent_items: pd.DataFrame | None = known_items[1]
    else:
        parent_items = read_table(store, parent, "items.parquet", ["item_id", "split"]) if parent else None
    parent_labels = read_table(store, parent, "labels.parquet", LABEL_KEY) if parent else None
    parent_guideline = parent_manifest.get("guideline_version") if parent_manifest else None
    return diff(
        parent_items,
        parent_labels,
        curated.items,
        curated.labels,
        guideline_changes(parent_guideline) if guideline_changes is not None else None,
        curated.codes,
    )


def class_counts(items: pd.DataFrame, labels: pd.DataFrame) -> dict[str, dict[str, int]]:
    """Labels per split and class; a label row takes its item's split (the item's first row in ``items``)."""
    at = run_positions(items["item_id"], labels["item_id"])  # a version's labels, grouped in its items' order
    item_ids, label_ids = (np.arange(len(items)), at) if at is not None else codes(items["item_id"], labels["item_id"])
    size = max((int(c.max()) + 1 for c in (item_ids, label_ids) if len(c)), default=0)
    first = np.flatnonzero(_first(item_ids))
    split_codes, names = pd.factorize(items["split"].iloc[first])  # a missing split: -1, as a missing item
    split = np.full(size, -1, dtype=np.int64)
    split[item_ids[first]] = split_codes
    counts = pd.DataFrame({"split": split[label_ids], "label": labels["label"].array}).groupby(
        ["split", "label"], dropna=False
    )
    by_split: dict[str, dict[str, int]] = {}
    for (code, label), count in counts.size().items():
        if code >= 0:  # a split whose labels are all missing is listed, empty, as a merge's groupby lists it
            labels_of_split = by_split.setdefault(names[code], {})
            if pd.notna(label):
                labels_of_split[label] = int(count)
    return {name: dict(sorted(by_split[name].items())) for name in sorted(by_split)}


def write_exports(store: Store, version: str) -> dict[str, str]:
    """COCO and YOLO files of a published version, in ``snapshots/<version>/export/``; returns name -> key.

    The same version always gives the same bytes, so writing them again (or twice at once) changes nothing.
    """
    if version not in versions(store):
        raise KeyError(f"no published snapshot {version!r}; published: {', '.join(versions(store)) or 'none'}")
    items, labels = read_table(store, version, "items.parquet"), read_table(store, version, "labels.parquet")
    files = {
        "coco.json": to_coco(items, labels, description=f"labelops snapshot {version}"),
        "yolo.zip": to_yolo(items, labels),
    }
    keys = {}
    for name, data in files.items():
        keys[name] = f"{ROOT}/{version}/export/{name}"
        store.write_bytes(keys[name], data)
    return keys
