"""What a batch sends to labelers besides the choice of items: media, pre-annotations, honeypots, the task file.

A task Label Studio can show needs a media URI, so an item without one is left out of a batch before the
budget is spent, never sent with its bare id as the image. Pre-annotations use only the controls and
classes of the labeling config of the guideline in force (`labelops.label_studio_config`), because Label
Studio rejects a whole import when one prediction names a control or label its project lacks. Honeypots
are gold items mixed into each batch so the answers coming back can be scored against gold; which tasks
are honeypots is kept out of the task data (which labelers can see in Label Studio's task list) and
recorded in the manifest and the task's ``meta``.
"""

from __future__ import annotations

import json
import math
import string
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from labelops.columns import isin
from labelops.guidelines import Guideline, GuidelineSet
from labelops.label_studio_config import IMAGE, MEDIA_FIELD, controls

MEDIA_COLUMNS = ["item_id", "uri", "width", "height"]
TEMPLATE_FIELDS = {"item_id", "day"}
HONEYPOT = "honeypot"  # the kind and reason of a honeypot row in the manifest
BOX, SCENE = "bbox", "classification"


def check_share(share: float) -> None:
    """A share of 1 would leave no room for the items the batch is for."""
    if not 0 <= share < 1:
        raise ValueError(f"honeypot share must be at least 0 and below 1, got {share}")


def check_uri_template(template: str) -> None:
    """Only ``{item_id}`` and ``{day}``, no escaped braces: the URIs are then built by plain concatenation."""
    fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    if "{item_id}" not in template or fields - TEMPLATE_FIELDS or "{{" in template or "}}" in template:
        raise ValueError(f"a media URI template needs {{item_id}} and may use {{day}}, nothing else: {template!r}")


def _fill_template(template: str, item_ids: pd.Series, day: str) -> pd.Series:
    parts = template.replace("{day}", day).split("{item_id}")
    uri = pd.Series(parts[0], index=item_ids.index, dtype=object)
    for part in parts[1:]:
        uri = uri + item_ids.astype(str) + part
    return uri


def _has_text(values: pd.Series) -> np.ndarray:
    return (values.astype("string").str.strip().fillna("") != "").to_numpy()


def media(
    item_ids: pd.Series, catalog: pd.DataFrame, production: pd.DataFrame, *, day: str, uri_template: str | None = None
) -> pd.DataFrame:
    """The media of each item that has one: its catalog row (latest delivery with a URI) first, then the production
    log's ``uri``/``width``/``height`` for items no catalog holds, then ``uri_template``. ``media_source``
    says which; items with none are absent."""
    if uri_template is not None:
        check_uri_template(uri_template)
    ids = pd.Series(pd.unique(item_ids.astype(str)), dtype=object)
    frames = []
    if len(catalog) and "uri" in catalog:
        cat = catalog[isin(catalog["item_id"], ids) & _has_text(catalog["uri"])].drop_duplicates("item_id", keep="last")
        frames.append(cat.reindex(columns=MEDIA_COLUMNS).assign(media_source="catalog"))
    found = pd.concat(frames, ignore_index=True)["item_id"] if frames else pd.Series(dtype=object)
    rest = ids[~isin(ids, found)]
    if len(production) and "uri" in production and len(rest):
        logged = production[isin(production["item_id"], rest) & _has_text(production["uri"])]
        logged = logged.drop_duplicates("item_id").reindex(columns=MEDIA_COLUMNS)
        frames.append(logged.assign(media_source="production"))
        rest = rest[~isin(rest, logged["item_id"])]
    if uri_template is not None and len(rest):
        templated = pd.DataFrame(
            {"item_id": rest, "uri": _fill_template(uri_template, rest, day), "media_source": "template"}
        )
        sizes = production.drop_duplicates("item_id").set_index("item_id") if len(production) else pd.DataFrame()
        for column in ("width", "height"):  # the frame size, when the log records it
            templated[column] = sizes[column].reindex(rest).to_numpy() if column in sizes else np.nan
        frames.append(templated[[*MEDIA_COLUMNS, "media_source"]])
    if not frames:
        return pd.DataFrame(columns=[*MEDIA_COLUMNS, "media_source"])
    out = pd.concat(frames, ignore_index=True)
    out[["width", "height"]] = out[["width", "height"]].apply(pd.to_numeric, errors="coerce")
    return out


def catalog_rows(media_table: pd.DataFrame, production: pd.DataFrame, slice_columns: list[str]) -> pd.DataFrame:
    """Landing-zone item rows (``items/<day>/``) for the sent items no catalog holds: without them their
    answers could not enter a snapshot. Capture time and slices come from the item's production log row."""
    sent = media_table.loc[media_table["media_source"] != "catalog", MEDIA_COLUMNS]
    logged = production.drop_duplicates("item_id") if len(production) else pd.DataFrame(columns=["item_id"])
    slices = [c for c in slice_columns if c in logged and c not in MEDIA_COLUMNS]
    extra = logged.reindex(columns=["item_id", "ts", *slices]).rename(columns={"ts": "captured_at"})
    rows = sent.merge(extra, on="item_id", how="left")
    rows["captured_at"] = pd.to_datetime(rows["captured_at"], utc=True).dt.strftime("%Y-%m-%dT%H:%M:%S%z")
    return rows.reset_index(drop=True)


def item_budget(budget: int, share: float) -> int:
    """What the budget leaves for the batch's own items once the honeypots' share is reserved."""
    check_share(share)
    return budget - math.ceil(round(share * budget, 9))


def honeypot_count(items: int, share: float) -> int:
    """Honeypots that make ``share`` of a batch of ``items`` tasks plus themselves; with ``items`` within
    `item_budget` the batch stays within the budget."""
    check_share(share)
    return round(share * items / (1 - share))


@dataclass(frozen=True)
class Honeypots:
    item_ids: pd.Series
    gold_items: int  # gold items in force on the day
    without_media: int  # gold items no catalog gives a URI for: they cannot go out
    unavailable: int  # gold items already in the batch or still out in an earlier one


def pick_honeypots(gold: pd.DataFrame, media_table: pd.DataFrame, n: int, exclude: set[str], seed: str) -> Honeypots:
    """``n`` gold items with media, drawn anew for every batch (seeded by its id) so that labelers do not
    meet the same few again and again, yet a rerun of the batch draws the same ones."""
    gold_ids = pd.Series(pd.unique(gold["item_id"].astype(str)) if len(gold) else [], dtype=object)
    with_media = gold_ids[isin(gold_ids, media_table["item_id"])]
    free = with_media[~isin(with_media, list(exclude))]
    order = pd.util.hash_pandas_object(seed + ":" + free, index=False).to_numpy()
    chosen = free.iloc[np.argsort(order, kind="stable")].head(n).reset_index(drop=True)
    return Honeypots(chosen, len(gold_ids), len(gold_ids) - len(with_media), len(with_media) - len(free))


def interleave(items: pd.DataFrame, honeypots: pd.DataFrame) -> pd.DataFrame:
    """Honeypots spread evenly through the batch: at its end they would be the tasks nobody reaches."""
    total, n = len(items) + len(honeypots), len(honeypots)
    slots = np.floor((np.arange(n) + 0.5) * total / n).astype(np.int64) if n else np.array([], dtype=np.int64)
    rest = np.setdiff1d(np.arange(total), slots)
    order = np.concatenate([rest, slots])
    merged = pd.concat([items, honeypots], ignore_index=True)
    return merged.iloc[np.argsort(order, kind="stable")].reset_index(drop=True)


def with_honeypots(
    chosen: pd.DataFrame,
    media_table: pd.DataFrame,
    gold: pd.DataFrame,
    catalog: pd.DataFrame,
    *,
    share: float,
    exclude: set[str],
    batch_id: str,
    day: str,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, float]]:
    """The batch with its honeypots spread through it (manifest rows of kind ``honeypot``), the media table
    with theirs, and the counts an operator needs to see what they cost: gold items without a catalog URI or
    still out cannot be drawn, so fewer may go than wanted."""
    gold_media = media(gold["item_id"], catalog, pd.DataFrame(), day=day)  # gold is catalogued, never production
    wanted = honeypot_count(len(chosen), share)
    picked = pick_honeypots(gold, gold_media, wanted, exclude | set(chosen["item_id"]), batch_id)
    sent = len(picked.item_ids)
    rows = pd.DataFrame(
        {
            "item_id": picked.item_ids,
            "reason": HONEYPOT,
            "kind": HONEYPOT,
            "batch_id": batch_id,
            "rank": np.arange(len(chosen) + 1, len(chosen) + sent + 1),
            "honeypot": True,
        }
    )
    batch = interleave(chosen.assign(honeypot=False), rows[[c for c in rows if c in chosen or c == "honeypot"]])
    counts = {
        "wanted": wanted,
        "sent": sent,
        "share": round(sent / len(batch), 4) if len(batch) else 0.0,
        "gold_items": picked.gold_items,
        "gold_without_media": picked.without_media,
        "gold_in_batch_or_open": picked.unavailable,
    }
    return batch, pd.concat([media_table, gold_media], ignore_index=True).drop_duplicates("item_id"), counts


@dataclass
class PreAnnotations:
    """The model's predictions as results Label Studio's prediction validation accepts, one row each."""

    results: pd.DataFrame
    predictions: int = 0
    remapped: int = 0  # predicted under an older class name, renamed into the version in force (kept or not)
    dropped: dict[str, int] = field(default_factory=dict)


def pre_annotations(
    predictions: pd.DataFrame,
    media_table: pd.DataFrame,
    guideline: Guideline,
    renames: dict[str, str],
    in_doubt: np.ndarray | None = None,
) -> PreAnnotations:
    """Predictions under the config's own controls and the current class names only: labels renamed or
    merged since are mapped into ``guideline``; a class it lacks, a class split or redefined since the model's
    version (``in_doubt``, per prediction: :meth:`GuidelineSet.predicted_in_doubt`; a labeler anchors on a
    pre-annotation, so a wrong one costs more than a missing one), a box class predicted without a box (or on
    an image of unknown size) and a box for a class drawn otherwise are dropped and counted by reason."""
    columns = [
        "item_id",
        "id",
        "type",
        "from_name",
        "label",
        "x",
        "y",
        "w",
        "h",
        "original_width",
        "original_height",
        "score",
        "model_version",
    ]
    if predictions.empty:
        return PreAnnotations(pd.DataFrame(columns=columns))
    by_geometry = {c.geometry: c for c in controls(guideline)}
    box_labels = list(by_geometry[BOX].labels) if BOX in by_geometry else []
    scene_labels = list(by_geometry[SCENE].labels) if SCENE in by_geometry else []
    p = predictions.reindex(columns=["item_id", "model_version", "predicted_label", "confidence", "x", "y", "w", "h"])
    p["in_doubt"] = np.zeros(len(p), dtype=bool) if in_doubt is None else in_doubt
    p = p.merge(media_table[["item_id", "width", "height"]], on="item_id", how="left")
    label = p["predicted_label"].astype(str)
    current = label.replace(renames)
    doubt = p["in_doubt"].to_numpy(dtype=bool)
    known = current.isin(list(guideline.classes)).to_numpy() & ~doubt
    geometry = p[["x", "y", "w", "h"]].apply(pd.to_numeric, errors="coerce")
    has_box = (geometry.notna().all(axis=1) & (geometry["w"] > 0) & (geometry["h"] > 0)).to_numpy()
    sized = ((p["width"] > 0) & (p["height"] > 0)).to_numpy()
    box_class, scene_class = current.isin(box_labels).to_numpy(), current.isin(scene_labels).to_numpy()
    # boxes clipped to the image: a region reaching outside it is not one Label Studio can draw
    width, height = p["width"].to_numpy(dtype=float), p["height"].to_numpy(dtype=float)
    x0, x1 = np.clip(geometry["x"], 0, width), np.clip(geometry["x"] + geometry["w"], 0, width)
    y0, y1 = np.clip(geometry["y"], 0, height), np.clip(geometry["y"] + geometry["h"], 0, height)
    inside = ((x1 > x0) & (y1 > y0)).to_numpy()
    as_box = known & has_box & sized & box_class & inside
    as_scene = known & ~has_box & scene_class
    confidence = pd.to_numeric(p["confidence"], errors="coerce")
    ranked = pd.Series(np.where(as_scene, -confidence.fillna(0), np.inf)).groupby(p["item_id"]).rank(method="first")
    second_scene = as_scene & (ranked > 1).to_numpy()  # a single-choice control takes one scene per image
    as_scene &= ~second_scene
    reason = np.select(
        [doubt, ~known, second_scene, has_box & ~box_class, ~has_box & ~scene_class, ~sized, ~inside],
        [
            "class split or redefined since the model's version",
            f"class not in {guideline.version}",
            "second scene choice",
            "box for a class without boxes",
            "no box for a region class",
            "box on an image of unknown size",
            "box outside the image",
        ],
        default="",
    )
    kept = as_box | as_scene
    dropped = pd.Series(reason[~kept]).value_counts().to_dict()
    box, scene = by_geometry.get(BOX), by_geometry.get(SCENE)  # a kept row's control exists: its labels matched
    results = pd.DataFrame(
        {
            "item_id": p["item_id"],
            "type": np.where(as_box, box.result_type if box else "", scene.result_type if scene else ""),
            "from_name": np.where(as_box, box.name if box else "", scene.name if scene else ""),
            "label": current,
            "x": 100 * x0 / width,
            "y": 100 * y0 / height,
            "w": 100 * (x1 - x0) / width,
            "h": 100 * (y1 - y0) / height,
            "original_width": width,
            "original_height": height,
            "score": confidence,
            "model_version": p["model_version"].astype("string").fillna("unknown").astype(object),
        }
    )[kept]
    results.insert(1, "id", "p" + results.groupby("item_id").cumcount().astype(str))
    return PreAnnotations(
        results[columns].reset_index(drop=True),
        len(p),
        int((current != label).sum()),
        {str(k): int(v) for k, v in dropped.items()},
    )


def _result(row: dict) -> dict:
    common = {
        "id": row["id"],
        "type": row["type"],
        "from_name": row["from_name"],
        "to_name": IMAGE,
        "score": None if pd.isna(row["score"]) else float(row["score"]),
    }
    if row["type"] == "choices":
        return {**common, "value": {"choices": [row["label"]]}}
    return {
        **common,
        "original_width": row["original_width"],
        "original_height": row["original_height"],
        "image_rotation": 0,
        "value": {
            "x": row["x"],
            "y": row["y"],
            "width": row["w"],
            "height": row["h"],
            "rotation": 0,
            row["type"]: [row["label"]],
        },
    }


def label_studio_tasks(
    batch: pd.DataFrame, media_table: pd.DataFrame, pre: PreAnnotations, *, batch_id: str, guideline_version: str
) -> bytes:
    """A Label Studio import file, one task per batch row in batch order.

    ``data`` holds what labelers and the answers need: the media, ``item_id`` (answers link back by it) and
    ``guideline_version`` (answers are read under the version the config was built from). Why an item
    was sent, and whether it is a honeypot, goes in ``meta``, out of the labelers' task list.
    """
    uri = media_table.drop_duplicates("item_id").set_index("item_id")["uri"]
    missing = batch.loc[~isin(batch["item_id"], uri.index), "item_id"]
    if len(missing):
        raise ValueError(f"{len(missing)} items have no media URI, e.g. {missing.iloc[0]!r}; leave them out first")
    results = pre.results.assign(result=[_result(r) for r in pre.results.to_dict("records")])  # budget-sized
    grouped = results.groupby("item_id", sort=False)
    by_item = grouped["result"].agg(list)
    # one prediction per task (Label Studio pre-fills the form from one): named by every model in it, so a box of
    # one detector is never shown as another's
    score, version = grouped["score"].mean(), grouped["model_version"].agg(lambda v: "+".join(sorted(set(v))))
    honeypot = batch["honeypot"].eq(True) if "honeypot" in batch else pd.Series(False, index=batch.index)
    tasks = []
    for item_id, reason, is_honeypot in zip(
        batch["item_id"], batch["reason"], honeypot, strict=True
    ):  # one task per item
        task: dict[str, Any] = {
            "data": {
                MEDIA_FIELD: uri[item_id],
                "item_id": item_id,
                "batch_id": batch_id,
                "guideline_version": guideline_version,
            },
            "meta": {"reason": reason, "honeypot": bool(is_honeypot)},
        }
        if item_id in by_item.index:
            task["predictions"] = [
                {
                    "model_version": version[item_id],
                    "result": by_item[item_id],
                    "score": None if pd.isna(score[item_id]) else float(score[item_id]),
                }
            ]
        tasks.append(task)
    return json.dumps(tasks, indent=1, sort_keys=True, default=str).encode()


def task_file(
    batch: pd.DataFrame,
    media_table: pd.DataFrame,
    predictions: pd.DataFrame,
    guidelines: GuidelineSet,
    guideline: Guideline,
    *,
    batch_id: str,
) -> tuple[bytes, PreAnnotations]:
    """The batch's Label Studio import file under ``guideline``, and what became of the model's predictions."""
    sent = predictions[isin(predictions["item_id"], batch["item_id"])] if len(predictions) else predictions
    renames = guidelines.renames_into(guideline.version)
    in_doubt = guidelines.predicted_in_doubt(sent, guideline.version)
    pre = pre_annotations(sent, media_table, guideline, renames, in_doubt)
    return label_studio_tasks(batch, media_table, pre, batch_id=batch_id, guideline_version=guideline.version), pre
