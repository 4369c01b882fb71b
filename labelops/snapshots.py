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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from labelops import boxes
from labelops.columns import isin, lookup, positions
from labelops.export import to_coco, to_yolo
from labelops.quality import CONSENSUS_COLUMNS
from labelops.storage import Store

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


@dataclass
class Curated:
    items: pd.DataFrame
    labels: pd.DataFrame
    excluded: dict[str, int] = field(default_factory=dict)
    stratification: dict[str, list[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class StateInputs:
    """What curation reads of the label state: consensus rows, and the items still waiting for a decision."""

    consensus: pd.DataFrame
    review: pd.DataFrame  # item_id
    relabel: pd.DataFrame  # item_id, rule
    items: pd.Series


STATE_COLUMNS = [*CONSENSUS_COLUMNS, "status"]  # what curation reads of the label state


def state_inputs(state: pd.DataFrame) -> StateInputs:
    """The current label state as curation's inputs: answered items are no longer waiting for anything."""
    items = state.drop_duplicates("item_id")
    waiting = items[items["status"].isin(["relabel_requested", "needs_relabel"])]
    return StateInputs(
        consensus=state.loc[state["kind"].notna(), CONSENSUS_COLUMNS].reset_index(drop=True),
        review=items.loc[items["status"] == "in_review", ["item_id"]].reset_index(drop=True),
        relabel=pd.DataFrame({"item_id": waiting["item_id"].to_numpy(), "rule": "needs_relabel"}),
        items=items["item_id"].reset_index(drop=True),
    )


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
    """
    consensus = consensus.drop_duplicates(["item_id", "kind", "label", "x", "y", "w", "h"], keep="last")
    catalog = items.drop_duplicates("item_id", keep="last")
    labeled = catalog[isin(catalog["item_id"], consensus["item_id"])]
    excluded: dict[str, int] = {}
    if annotated is not None:
        unique = pd.Series(annotated.dropna().unique(), dtype=object)
        in_catalog = pd.Series(isin(unique, catalog["item_id"]), index=unique.index)
        excluded["not_in_catalog"] = int((~in_catalog).sum())
        excluded["no_consensus"] = int((in_catalog & ~isin(unique, consensus["item_id"])).sum())

    def drop(mask: pd.Series, reason: str) -> None:
        nonlocal labeled
        excluded[reason] = int(mask.sum())
        labeled = labeled[~mask]

    classification = (
        consensus[consensus["kind"] == "classification"].drop_duplicates("item_id", keep="last").set_index("item_id")
    )
    confidence = pd.Series(lookup(labeled["item_id"], classification["confidence"]), index=labeled.index, dtype=float)
    drop(confidence.lt(config.min_confidence), "low_confidence")
    drop(pd.Series(isin(labeled["item_id"], review["item_id"]), index=labeled.index), "waiting_for_review")
    relabel = (
        quarantined.loc[quarantined["rule"].astype(str).str.contains("needs_relabel"), "item_id"]
        if len(quarantined)
        else pd.Series(dtype=object)
    )
    drop(labeled["item_id"].isin(relabel), "waiting_for_relabel")
    identity = labeled["content_hash"] if "content_hash" in labeled else labeled["uri"]
    drop(identity.notna() & identity.duplicated(keep="first"), "duplicate")

    labeled = labeled.sort_values("item_id").reset_index(drop=True)
    labels = consensus[isin(consensus["item_id"], labeled["item_id"])]
    labels = labels.sort_values(["item_id", "kind", "label", "x", "y", "w", "h"], kind="stable").reset_index(drop=True)
    labeled["split"] = assign_splits(labeled, labels, parent_splits, config)
    used, skipped = strata_columns(config.stratify_by, labeled)
    return Curated(labeled, labels, excluded, {"by": used, "skipped": skipped})


def strata_columns(stratify_by: Sequence[str], items: pd.DataFrame) -> tuple[list[str], list[str]]:
    """The configured strata this catalog can serve, and the slice columns it lacks.

    Slice columns differ between catalogs (only some have ``lighting``), so a missing one is skipped and
    reported rather than failing the snapshot; ``label`` is the scene label, which every dataset has a
    stratum for, if only :data:`NO_LABEL`.
    """
    used = [column for column in stratify_by if column == "label" or column in items.columns]
    return used, [column for column in stratify_by if column not in used]


def assign_splits(items: pd.DataFrame, labels: pd.DataFrame, parent: pd.Series, config: CurationConfig) -> np.ndarray:
    """One split per group; groups from the parent keep theirs, new groups are stratified.

    Within each stratum (the group's scene label and slice values, the first present in the group,
    :data:`NO_LABEL` where it has none), new groups are taken in a seeded hash order and each goes
    to the split furthest below its target share of the stratum, counting the groups the stratum
    already has. Small daily increments therefore still fill val and test over time, and the same
    inputs always give the same assignment. Slice columns the catalog lacks are skipped.
    """
    if items.empty:
        return np.array([], dtype=object)
    group = items[config.group_key].fillna(items["item_id"]) if config.group_key in items else items["item_id"]
    group = group.astype(str)
    group_split = pd.Series(lookup(items["item_id"], parent), index=items.index).groupby(group).first().dropna()
    # (a group that reappears keeps its split)
    primary = labels[labels["kind"] == "classification"].drop_duplicates("item_id").set_index("item_id")["label"]
    columns, _ = strata_columns(config.stratify_by, items)
    strata = pd.DataFrame({"group": group})
    for column in columns:
        strata[column] = (
            lookup(items["item_id"], primary) if column == "label" else items[column].to_numpy(dtype=object)
        )
    per_group = strata.groupby("group", sort=True).first().fillna(NO_LABEL)  # first() skips missing values
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
    return lookup(group, chosen)


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
    return pq.read_table(pa.BufferReader(store.read_bytes(f"{ROOT}/{version}/{name}")), columns=columns).to_pandas()


def diff(
    parent_items: pd.DataFrame | None,
    parent_labels: pd.DataFrame | None,
    items: pd.DataFrame,
    labels: pd.DataFrame,
    renames: Mapping[str, str] | None = None,
) -> dict:
    """Items added and removed, scene labels changed (old and new), box changes, and split moves.

    ``renames`` are the guideline renames and merges from the parent's version to this one: a scene label or
    box whose only change is one of them is listed under ``remapped_labels`` / ``remapped_objects`` rather
    than as a change of the data. Items are matched by Arrow's hash of their ids: a version holds every item
    of the dataset, a night changes few of them.
    """
    if parent_items is None:
        return {
            "added": sorted(items["item_id"]),
            "removed": [],
            "label_changes": [],
            "object_changes": [],
            "remapped_labels": [],
            "remapped_objects": [],
            "split_moves": [],
        }
    old, new = parent_items["item_id"], items["item_id"]

    def scene(frame: pd.DataFrame) -> pd.DataFrame:
        return frame.loc[frame["kind"] == "classification", ["item_id", "label"]].drop_duplicates("item_id")

    renames = dict(renames or {})
    scenes = _changes(scene(parent_labels), scene(labels), "label")
    objects = object_changes(parent_labels, labels, changed_items(parent_labels, labels))
    scene_remapped = [renames.get(c["old"]) == c["new"] for c in scenes]
    object_remapped = [c["change"] == "relabelled" and renames.get(c["old_label"]) == c["label"] for c in objects]
    return {
        "added": sorted(new[positions(new, old) < 0]),
        "removed": sorted(old[positions(old, new) < 0]),
        "label_changes": [c for c, remapped in zip(scenes, scene_remapped, strict=True) if not remapped],
        "object_changes": [c for c, remapped in zip(objects, object_remapped, strict=True) if not remapped],
        "remapped_labels": [c for c, remapped in zip(scenes, scene_remapped, strict=True) if remapped],
        "remapped_objects": [c for c, remapped in zip(objects, object_remapped, strict=True) if remapped],
        "split_moves": _changes(parent_items[["item_id", "split"]], items[["item_id", "split"]], "split"),
    }


def _changes(before: pd.DataFrame, after: pd.DataFrame, column: str) -> list[dict]:
    """Items in both tables (one row per item) whose ``column`` differs: item_id, old, new, by item."""
    found = positions(after["item_id"], before["item_id"])
    both = found >= 0
    old = before[column].to_numpy(dtype=object)[found[both]]
    new = after[column].to_numpy(dtype=object)[both]
    differ = old != new
    changed = pd.DataFrame(
        {"item_id": after["item_id"].to_numpy(dtype=object)[both][differ], "old": old[differ], "new": new[differ]}
    )
    return changed.sort_values("item_id", kind="stable").to_dict("records")


def changed_items(before: pd.DataFrame, after: pd.DataFrame) -> list[str]:
    """Items in both versions whose label rows differ: only they can have box changes.

    An item's signature is the sum of its rows' hashes, so the comparison costs a pass over the rows and the
    box matching runs on the items a night changed rather than the whole dataset.
    """
    columns = ["item_id", "kind", "label", "x", "y", "w", "h"]

    def signatures(frame: pd.DataFrame) -> pd.DataFrame:
        codes, ids = pd.factorize(frame["item_id"])
        total = np.zeros(len(ids), dtype=np.uint64)
        np.add.at(total, codes, pd.util.hash_pandas_object(frame[columns], index=False).to_numpy())
        return pd.DataFrame({"item_id": np.asarray(ids, dtype=object), "signature": total})

    return [row["item_id"] for row in _changes(signatures(before), signatures(after), "signature")]


def object_changes(
    before: pd.DataFrame, after: pd.DataFrame, items: list[str], *, moved_iou: float = 0.5
) -> list[dict]:
    """Boxes of items in both versions that changed: added, removed, relabelled, or moved below ``moved_iou``.

    The parent's and the new version's boxes of each item are matched like two annotators' (Hungarian on IoU,
    same label first, then a different label at IoU >= 0.5, which is a relabelled box).
    """
    parts = [
        frame[(frame["kind"] == "bbox") & isin(frame["item_id"], items)].assign(annotator_id=side)
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
    renames: Callable[[str | None], Mapping[str, str]] | None = None,
) -> tuple[str, dict, bool]:
    """Write a snapshot (data first, manifest last, then ``latest``); returns (version, manifest, created).

    Content equal to the latest snapshot's publishes nothing. An explicit ``version`` that is
    already published raises :class:`SnapshotExistsError`. ``renames`` gives, for the parent's guideline
    version, the renames and merges that lead to this one (the diff lists what they remapped).
    """
    files = {"items.parquet": parquet_bytes(curated.items), "labels.parquet": parquet_bytes(curated.labels)}
    digest = content_hash(files)
    parent = latest(store)
    if parent is not None and manifest(store, parent)["content_hash"] == digest and version is None:
        return parent, manifest(store, parent), False
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
    parent_items = read_table(store, parent, "items.parquet") if parent else None
    parent_labels = read_table(store, parent, "labels.parquet") if parent else None
    parent_guideline = manifest(store, parent).get("guideline_version") if parent else None
    changes = diff(
        parent_items,
        parent_labels,
        curated.items,
        curated.labels,
        renames(parent_guideline) if renames is not None else None,
    )
    for name, data in files.items():
        store.write_bytes(f"{ROOT}/{version}/{name}", data)
    store.write_bytes(f"{ROOT}/{version}/diff.json", json.dumps(changes, indent=1).encode())
    split_counts = curated.items["split"].value_counts().reindex(list(SPLITS), fill_value=0)
    by_split = curated.labels.merge(curated.items[["item_id", "split"]], on="item_id")
    document = {
        "version": version,
        "content_hash": digest,
        "parent_version": parent,
        **metadata,
        "rows": {"items": len(curated.items), "labels": len(curated.labels)},
        "split_sizes": {k: int(v) for k, v in split_counts.items()},
        "class_counts": {
            s: {k: int(v) for k, v in g["label"].value_counts().sort_index().items()}
            for s, g in by_split.groupby("split")
        },
        "excluded": curated.excluded,
        "stratification": curated.stratification,
        "diff_summary": {k: len(v) for k, v in changes.items()},
        "files": {name: hashlib.sha256(data).hexdigest() for name, data in files.items()},
    }
    if not store.create(
        f"{ROOT}/{version}/manifest.json", json.dumps(document, indent=1, sort_keys=True, default=str).encode()
    ):
        return version, manifest(store, version), False  # a twin with the same content published it first
    store.write_bytes(LATEST, version.encode())
    return version, document, True


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
