"""A seeded, realistic landing zone for two weeks of a driving-scene labeling program.

What it contains, and why:
- items with slice attributes (lighting, weather, device, region), so coverage has slices to measure;
- six annotators of different skill, one careless and one who confuses car with truck, so
  agreement, gold scoring and consensus have something real to find;
- boxes with jitter, crosswalk polygons and a scene classification, exported the way
  real teams deliver them: Label Studio JSON, CVAT XML, COCO JSON, a crowd CSV and a YOLO zip;
- 8 % gold items, a few malformed files, two re-delivered exports (counted once), and production
  logs whose inputs drift in the
  last three days (more night and rain traffic, darker images, a new object type);
- guideline v2 from 2024-06-12, with one vendor still delivering v1 labels, so that
  validation has renamed labels to remap and split ones to send back.
"""

from __future__ import annotations

import io
import json
import zipfile
import zlib
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from xml.sax.saxutils import quoteattr

import numpy as np
import pandas as pd

from labelops.storage import Store

START = date(2024, 6, 1)
N_DAYS = 14
DRIFT_DAYS = 3
ITEMS_PER_DAY = 120
UNLABELED_PER_DAY = 30
PRODUCTION_PER_DAY = 1500
GOLD_SHARE = 0.08
SEED = 20240601
# Guideline v2 (config/guidelines/v2.yaml) takes effect on this day and renames traffic_light.
V2_DAY = "2024-06-12"
V2_RENAMES = {"traffic_light": "traffic_signal"}
LAGGING_VENDOR = "ann06"  # keeps delivering v1 labels after v2, and says so in its COCO files

BOX_CLASSES = ("car", "truck", "bus", "pedestrian", "cyclist", "traffic_light")
BOX_WEIGHTS = (0.42, 0.14, 0.06, 0.2, 0.08, 0.1)
POLYGON_CLASS = "crosswalk"
SCENES = ("urban", "highway", "residential")
NEW_OBJECT = "e_scooter"
DEVICES = {"cam_a": (1920, 1080), "cam_b": (1280, 720), "cam_c": (1920, 1200)}
LIGHTING = ("day", "dusk", "night")
WEATHER = ("clear", "rain", "fog")
REGIONS = ("eu", "us", "apac")


@dataclass(frozen=True)
class Annotator:
    name: str
    tool: str
    label_accuracy: float
    jitter_px: float
    miss_rate: float
    truck_as_car: float = 0.0


ANNOTATORS = (
    Annotator("ann01", "label_studio", 0.97, 2.0, 0.02),
    Annotator("ann02", "label_studio", 0.94, 3.0, 0.04),
    Annotator("ann03", "label_studio", 0.91, 4.0, 0.05),
    Annotator("ann04", "cvat", 0.62, 14.0, 0.2),  # careless
    Annotator("ann05", "cvat", 0.95, 3.0, 0.04, truck_as_car=0.55),  # biased: trucks become cars
    Annotator("ann06", "coco", 0.95, 2.5, 0.03),
)
CROWD = tuple(f"w{n:02d}" for n in range(1, 9))
CROWD_ACCURACY = (0.9, 0.85, 0.88, 0.8, 0.92, 0.4, 0.86, 0.83)  # w06 is a spammer


def email(name: str) -> str:
    """The demo team signs in with e-mail addresses in every tool."""
    return f"{name}@labelops.example"


def days() -> list[str]:
    return [(START + timedelta(days=i)).isoformat() for i in range(N_DAYS)]


@dataclass(frozen=True)
class Seeded:
    """What `seed_landing` wrote, and the truth behind it (never written to the landing zone)."""

    counts: dict[str, int]
    truth: pd.DataFrame  # the true objects of every labeled item, with the item's width, height and day


def seed_landing(store: Store, *, seed: int = SEED) -> Seeded:
    """Write the whole demo landing zone; the same seed writes the same bytes."""
    rng = np.random.default_rng(seed)
    counts = {"items": 0, "objects": 0, "production": 0, "gold": 0, "files": 0}
    gold_rows: list[dict] = []
    truths = []
    for index, day in enumerate(days()):
        drift = index >= N_DAYS - DRIFT_DAYS
        items = _items(rng, day, drift)
        truth = _truth(rng, items[items["labeled"]])
        truths.append(truth.merge(items[["item_id", "width", "height"]], on="item_id").assign(day=day))
        counts["items"] += len(items)
        counts["objects"] += len(truth)
        _write(store, f"items/{day}/items.csv", items.drop(columns="labeled").to_csv(index=False).encode(), counts)
        _write_exports(store, rng, day, items, truth, counts)
        gold_items = items.loc[items["labeled"], "item_id"].sample(
            frac=GOLD_SHARE, random_state=int(rng.integers(1 << 31))
        )
        gold_truth = truth[truth["item_id"].isin(gold_items)]
        if day >= V2_DAY:
            gold_truth = gold_truth.assign(label=gold_truth["label"].replace(V2_RENAMES))
        gold_rows.extend(_gold_rows(gold_truth))
        production = _production(rng, day, drift)
        counts["production"] += len(production)
        _write(store, f"production/{day}/predictions.csv", production.to_csv(index=False).encode(), counts)
        detections = _detections(np.random.default_rng([seed, index]), day, items[items["labeled"]], truth)
        counts["production"] += len(detections)
        _write(store, f"production/{day}/detections_labeled_items.csv", detections.to_csv(index=False).encode(), counts)
    gold = pd.DataFrame(gold_rows)
    counts["gold"] = len(gold)
    _write(store, "gold/gold_labels.csv", gold.to_csv(index=False).encode(), counts)
    _write_malformed(store, counts)
    _write_redeliveries(store, counts)
    return Seeded(counts, pd.concat(truths, ignore_index=True))


def _write(store: Store, key: str, data: bytes, counts: dict[str, int]) -> None:
    store.write_bytes(key, data)
    counts["files"] += 1


def _items(rng: np.random.Generator, day: str, drift: bool) -> pd.DataFrame:
    n = ITEMS_PER_DAY + UNLABELED_PER_DAY
    devices = rng.choice(list(DEVICES), n, p=[0.5, 0.35, 0.15])
    lighting = rng.choice(LIGHTING, n, p=[0.62, 0.23, 0.15])
    weather = rng.choice(WEATHER, n, p=[0.72, 0.2, 0.08])
    start = datetime.fromisoformat(day).replace(tzinfo=UTC) - timedelta(days=1)
    captured = [start + timedelta(seconds=int(s)) for s in rng.integers(0, 86_400, n)]
    ids = [f"img-{day.replace('-', '')}-{i:04d}" for i in range(n)]
    sizes = np.array([DEVICES[d] for d in devices])
    return pd.DataFrame(
        {
            "item_id": ids,
            "uri": [f"s3://fleet-camera/raw/{day}/{i}.jpg" for i in ids],
            "width": sizes[:, 0],
            "height": sizes[:, 1],
            "captured_at": [c.isoformat() for c in captured],
            "lighting": lighting,
            "weather": weather,
            "device": devices,
            "region": rng.choice(REGIONS, n, p=[0.45, 0.35, 0.2]),
            "session_id": [f"sess-{day.replace('-', '')}-{i // 10:03d}" for i in range(n)],
            "labeled": np.arange(n) < ITEMS_PER_DAY,
        }
    )


def _truth(rng: np.random.Generator, items: pd.DataFrame) -> pd.DataFrame:
    """True objects per item: boxes, sometimes a crosswalk polygon, and one scene class."""
    rows = []
    for item in items.itertuples(index=False):
        width, height = float(item.width), float(item.height)
        rows.append(
            {"item_id": item.item_id, "kind": "classification", "label": str(rng.choice(SCENES, p=[0.5, 0.3, 0.2]))}
        )
        for _ in range(1 + rng.poisson(2.2)):
            label = str(rng.choice(BOX_CLASSES, p=BOX_WEIGHTS))
            w = float(rng.uniform(0.04, 0.3) * width)
            h = float(
                w * rng.uniform(0.5, 1.6) if label not in ("pedestrian", "traffic_light") else w * rng.uniform(1.8, 3.0)
            )
            h = min(h, height * 0.9)
            x, y = float(rng.uniform(0, width - w)), float(rng.uniform(0, height - h))
            rows.append({"item_id": item.item_id, "kind": "bbox", "label": label, "x": x, "y": y, "w": w, "h": h})
        if rng.random() < 0.3:
            cx, cy = width * rng.uniform(0.3, 0.7), height * rng.uniform(0.7, 0.9)
            half_w, half_h = width * rng.uniform(0.1, 0.25), height * rng.uniform(0.03, 0.08)
            points = [
                cx - half_w,
                cy - half_h,
                cx + half_w,
                cy - half_h,
                cx + half_w * 1.2,
                cy + half_h,
                cx - half_w * 1.2,
                cy + half_h,
            ]
            rows.append({"item_id": item.item_id, "kind": "polygon", "label": POLYGON_CLASS, "points": points})
    truth = pd.DataFrame(rows)
    truth["object"] = np.arange(len(truth))
    return truth


def _annotate(rng: np.random.Generator, annotator: Annotator, truth: pd.DataFrame) -> pd.DataFrame:
    """One annotator's version of the truth: missed objects, wrong labels, jittered geometry."""
    kept = truth[rng.random(len(truth)) >= np.where(truth["kind"] == "classification", 0.0, annotator.miss_rate)].copy()
    wrong = rng.random(len(kept)) > annotator.label_accuracy
    pool = {"bbox": BOX_CLASSES, "classification": SCENES, "polygon": (POLYGON_CLASS,)}
    kept["label"] = [
        str(rng.choice(pool[kind])) if is_wrong else label
        for kind, label, is_wrong in zip(kept["kind"], kept["label"], wrong, strict=True)
    ]
    if annotator.truck_as_car:
        confused = (kept["label"] == "truck") & (rng.random(len(kept)) < annotator.truck_as_car)
        kept.loc[confused, "label"] = "car"
    boxes = kept["kind"] == "bbox"
    jitter = rng.normal(0, annotator.jitter_px, (int(boxes.sum()), 4))
    kept.loc[boxes, ["x", "y"]] = np.maximum(kept.loc[boxes, ["x", "y"]].to_numpy() + jitter[:, :2], 0)
    kept.loc[boxes, ["w", "h"]] = np.maximum(kept.loc[boxes, ["w", "h"]].to_numpy() + jitter[:, 2:], 2)
    polygons = kept["kind"] == "polygon"
    kept.loc[polygons, "points"] = pd.Series(
        [list(np.asarray(p) + rng.normal(0, annotator.jitter_px, len(p))) for p in kept.loc[polygons, "points"]],
        index=kept.index[polygons],
        dtype=object,
    )
    return kept


def _write_exports(
    store: Store, rng: np.random.Generator, day: str, items: pd.DataFrame, truth: pd.DataFrame, counts: dict
) -> None:
    labeled = items[items["labeled"]].set_index("item_id")
    assignment = {item: rng.choice(len(ANNOTATORS), 3, replace=False) for item in labeled.index}
    work = {
        a.name: _annotate(rng, a, truth[truth["item_id"].isin([i for i, chosen in assignment.items() if k in chosen])])
        for k, a in enumerate(ANNOTATORS)
    }
    if day >= V2_DAY:
        for name, frame in work.items():
            if name != LAGGING_VENDOR:
                frame["label"] = frame["label"].replace(V2_RENAMES)
    stamp = f"{day}T18:00:00Z"
    ls = {a.name: work[a.name] for a in ANNOTATORS if a.tool == "label_studio"}
    _write(store, f"exports/{day}/label_studio_project-12.json", _label_studio(ls, labeled, stamp), counts)
    for a in ANNOTATORS:
        if a.tool == "cvat":
            _write(store, f"exports/{day}/cvat_task_{a.name}.xml", _cvat(a.name, work[a.name], labeled, day), counts)
    coco_name = "ann06"
    if day == days()[4]:
        _write(store, f"exports/{day}/partner_prelabels_yolo.zip", _yolo_zip(work[coco_name], labeled), counts)
    else:
        _write(store, f"exports/{day}/coco_{coco_name}.json", _coco(coco_name, work[coco_name], labeled, "v1"), counts)
    _write(store, f"exports/{day}/crowd_scene_judgments.csv", _crowd(rng, truth, day), counts)


def _label_studio(work: dict[str, pd.DataFrame], items: pd.DataFrame, stamp: str) -> bytes:
    tasks = []
    user_ids = {name: n + 1 for n, name in enumerate(sorted(work))}
    all_items = sorted(set().union(*(set(w["item_id"]) for w in work.values())))
    for t_id, item_id in enumerate(all_items, start=1):
        width, height = float(items.at[item_id, "width"]), float(items.at[item_id, "height"])
        annotations = []
        for name, frame in sorted(work.items()):
            objects = frame[frame["item_id"] == item_id]
            if objects.empty:
                continue
            results = _label_studio_results(objects, width, height)
            annotations.append(
                {
                    "id": t_id * 10 + user_ids[name],
                    "completed_by": {"id": user_ids[name], "email": email(name)},
                    "result": results,
                    "was_cancelled": False,
                    "ground_truth": False,
                    "created_at": stamp,
                    "updated_at": stamp,
                    "lead_time": 31.5,
                }
            )
        if t_id % 25 == 0:  # a skipped task: not a label
            annotations.append(
                {
                    "id": t_id * 10 + 9,
                    "completed_by": 3,
                    "result": [],
                    "was_cancelled": True,
                    "created_at": stamp,
                    "updated_at": stamp,
                }
            )
        tasks.append(
            {
                "id": t_id,
                "data": {"image": f"/data/upload/12/{item_id}.jpg"},
                "annotations": annotations,
                "predictions": [],
                "project": 12,
            }
        )
    return json.dumps(tasks, indent=1).encode()


def _label_studio_results(objects: pd.DataFrame, width: float, height: float) -> list[dict]:
    """One annotation's regions, in percent of the image, under the project's control names."""
    results = []
    for o in objects.itertuples(index=False):
        rid = f"r{o.object}"
        if o.kind == "classification":
            results.append(
                {
                    "id": rid,
                    "type": "choices",
                    "from_name": "scene",
                    "to_name": "image",
                    "origin": "manual",
                    "value": {"choices": [o.label]},
                }
            )
        elif o.kind == "bbox":
            results.append(
                {
                    "id": rid,
                    "type": "rectanglelabels",
                    "from_name": "label",
                    "to_name": "image",
                    "original_width": width,
                    "original_height": height,
                    "image_rotation": 0,
                    "origin": "manual",
                    "value": {
                        "x": 100 * o.x / width,
                        "y": 100 * o.y / height,
                        "width": 100 * o.w / width,
                        "height": 100 * o.h / height,
                        "rotation": 0,
                        "rectanglelabels": [o.label],
                    },
                }
            )
        else:
            pts = np.asarray(o.points).reshape(-1, 2) / [width / 100, height / 100]
            results.append(
                {
                    "id": rid,
                    "type": "polygonlabels",
                    "from_name": "polygon",
                    "to_name": "image",
                    "original_width": width,
                    "original_height": height,
                    "image_rotation": 0,
                    "origin": "manual",
                    "value": {"points": pts.tolist(), "closed": True, "polygonlabels": [o.label]},
                }
            )
    return results


def _cvat(name: str, frame: pd.DataFrame, items: pd.DataFrame, day: str) -> bytes:
    lines = [
        '<?xml version="1.0" encoding="utf-8"?>',
        "<annotations>",
        "  <version>1.1</version>",
        "  <meta>",
        "    <task>",
        f"      <id>{int(name[-2:]) + 400}</id>",
        f"      <name>driving-{day}</name>",
        f"      <updated>{day} 17:30:00+00:00</updated>",
        "      <owner><username>lead</username></owner>",
        f"      <assignee><username>{email(name)}</username></assignee>",
        "    </task>",
        "  </meta>",
    ]
    for n, (item_id, objects) in enumerate(frame.groupby("item_id", sort=True)):
        width, height = int(items.at[item_id, "width"]), int(items.at[item_id, "height"])
        lines.append(f'  <image id="{n}" name="{item_id}.jpg" width="{width}" height="{height}">')
        for o in objects.itertuples(index=False):
            if o.kind == "classification":
                lines.append(f'    <tag label={quoteattr(o.label)} source="manual"></tag>')
            elif o.kind == "bbox":
                occluded = int(o.object % 7 == 0)
                lines.append(
                    f'    <box label={quoteattr(o.label)} source="manual" occluded="{occluded}" xtl="{o.x:.2f}" ytl="{o.y:.2f}" '
                    f'xbr="{o.x + o.w:.2f}" ybr="{o.y + o.h:.2f}" z_order="0"></box>'
                )
            else:
                pts = ";".join(f"{x:.2f},{y:.2f}" for x, y in np.asarray(o.points).reshape(-1, 2))
                lines.append(
                    f'    <polygon label={quoteattr(o.label)} source="manual" occluded="0" points="{pts}" z_order="0"></polygon>'
                )
        lines.append("  </image>")
    lines.append("</annotations>")
    return "\n".join(lines).encode()


def _coco(name: str, frame: pd.DataFrame, items: pd.DataFrame, guideline_version: str) -> bytes:
    categories = [
        {"id": i + 1, "name": c, "supercategory": "road"} for i, c in enumerate((*BOX_CLASSES, POLYGON_CLASS))
    ]
    category_ids = {c["name"]: c["id"] for c in categories}
    geometry = frame[frame["kind"] != "classification"]
    image_ids = {item: n + 1 for n, item in enumerate(sorted(frame["item_id"].unique()))}
    images = [
        {
            "id": i,
            "file_name": f"{item}.jpg",
            "width": int(items.at[item, "width"]),
            "height": int(items.at[item, "height"]),
        }
        for item, i in image_ids.items()
    ]
    annotations = []
    for n, o in enumerate(geometry.itertuples(index=False), start=1):
        if o.kind == "bbox":
            bbox, segmentation = [o.x, o.y, o.w, o.h], []
        else:
            pts = np.asarray(o.points).reshape(-1, 2)
            (x0, y0), (x1, y1) = pts.min(axis=0), pts.max(axis=0)
            bbox, segmentation = [float(x0), float(y0), float(x1 - x0), float(y1 - y0)], [list(map(float, o.points))]
        annotations.append(
            {
                "id": n,
                "image_id": image_ids[o.item_id],
                "category_id": category_ids[o.label],
                "bbox": [round(v, 2) for v in bbox],
                "area": round(bbox[2] * bbox[3], 2),
                "iscrowd": 0,
                "segmentation": segmentation,
            }
        )
    document = {
        "info": {"contributor": email(name), "description": "driving scenes", "guideline_version": guideline_version},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }
    return json.dumps(document).encode()


def _yolo_zip(frame: pd.DataFrame, items: pd.DataFrame) -> bytes:
    boxes = frame[frame["kind"] == "bbox"]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("obj.names", "\n".join(BOX_CLASSES) + "\n")
        for item_id, objects in boxes.groupby("item_id", sort=True):
            width, height = float(items.at[item_id, "width"]), float(items.at[item_id, "height"])
            rows = [
                f"{BOX_CLASSES.index(o.label)} {(o.x + o.w / 2) / width:.6f} {(o.y + o.h / 2) / height:.6f} {o.w / width:.6f} {o.h / height:.6f}"
                for o in objects.itertuples(index=False)
            ]
            info = zipfile.ZipInfo(f"obj_train_data/{item_id}.txt", date_time=(2024, 6, 5, 0, 0, 0))
            archive.writestr(info, "\n".join(rows) + "\n")
    return buffer.getvalue()


def _crowd(rng: np.random.Generator, truth: pd.DataFrame, day: str) -> bytes:
    scenes = truth[truth["kind"] == "classification"]
    rows = []
    for item_id, label in zip(scenes["item_id"], scenes["label"], strict=True):
        for worker in rng.choice(len(CROWD), 3, replace=False):
            answer = label if rng.random() < CROWD_ACCURACY[worker] else str(rng.choice(SCENES))
            rows.append(
                {
                    "WorkerId": CROWD[worker],
                    "INPUT:item_id": item_id,
                    "OUTPUT:label": answer,
                    "SubmitTime": f"{day}T12:00:00Z",
                }
            )
    frame = pd.DataFrame(rows).rename(columns={"WorkerId": "worker_id", "SubmitTime": "submitted_at"})
    return frame.to_csv(index=False).encode()


def _gold_rows(truth: pd.DataFrame) -> list[dict]:
    rows = []
    for o in truth[truth["kind"] != "polygon"].itertuples(index=False):
        row = {"item_id": o.item_id, "label": o.label}
        if o.kind == "bbox":
            row.update(x=round(o.x, 2), y=round(o.y, 2), w=round(o.w, 2), h=round(o.h, 2))
        rows.append(row)
    return rows


def _production(rng: np.random.Generator, day: str, drift: bool) -> pd.DataFrame:
    n = PRODUCTION_PER_DAY
    lighting_p = [0.35, 0.2, 0.45] if drift else [0.62, 0.23, 0.15]
    weather_p = [0.45, 0.45, 0.1] if drift else [0.72, 0.2, 0.08]
    lighting = rng.choice(LIGHTING, n, p=lighting_p)
    weather = rng.choice(WEATHER, n, p=weather_p)
    base = np.select([lighting == "day", lighting == "dusk"], [150.0, 100.0], 55.0)
    brightness = np.clip(base - np.where(weather == "rain", 15, 0) + rng.normal(0, 18, n), 0, 255)
    classes = list(BOX_CLASSES) + ([NEW_OBJECT] if drift else [])
    weights = np.array(list(BOX_WEIGHTS) + ([0.06] if drift else []))
    predicted = rng.choice(classes, n, p=weights / weights.sum())
    confidence = np.clip(
        rng.beta(8, 2, n) - np.where(lighting == "night", 0.12, 0) - np.where(predicted == NEW_OBJECT, 0.3, 0),
        0.01,
        0.999,
    )
    start = datetime.fromisoformat(day).replace(tzinfo=UTC)
    seconds = np.sort(rng.integers(0, 86_400, n))
    # drawn in the order of the columns, as before frame sizes were logged: the same seed gives the same log
    blur, speed = rng.gamma(2.0, 1.5, n).round(3), rng.normal(42, 15, n).clip(0).round(1)
    devices = rng.choice(list(DEVICES), n, p=[0.5, 0.35, 0.15])
    sizes = np.array([DEVICES[d] for d in devices])
    return pd.DataFrame(
        {
            "item_id": [f"prod-{day.replace('-', '')}-{i:05d}" for i in range(n)],
            "ts": [(start + timedelta(seconds=int(s))).isoformat() for s in seconds],
            "model_version": "detector-1.4.0",
            "predicted_label": predicted,
            "confidence": confidence.round(4),
            "brightness": brightness.round(2),
            "blur": blur,
            "speed_kmh": speed,
            "lighting": lighting,
            "weather": weather,
            "device": devices,
            "region": rng.choice(REGIONS, n, p=[0.45, 0.35, 0.2]),
            "width": sizes[:, 0],
            "height": sizes[:, 1],
        }
    )


def _detections(rng: np.random.Generator, day: str, items: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    """The production detector's output on the images that were sent to labeling, one row per box.

    Labeled images are sampled from production traffic, so the model's detections on them are
    logged like any other; against the consensus they give the model's real per-class risk. The
    detector is good overall and weak exactly where it hurts: it misses most cyclists at night.
    """
    boxes = truth[truth["kind"] == "bbox"].merge(
        items[["item_id", "lighting", "weather", "device", "region"]], on="item_id"
    )
    if day >= V2_DAY:
        boxes = boxes.assign(label=boxes["label"].replace(V2_RENAMES))
    night = (boxes["lighting"] == "night").to_numpy()
    miss = np.full(len(boxes), 0.04)
    miss[(boxes["label"] == "cyclist").to_numpy() & night] = 0.6
    miss[(boxes["label"] == "pedestrian").to_numpy() & night] = 0.15
    kept = boxes[rng.random(len(boxes)) >= miss].copy()
    confuse = (kept["label"] == "truck").to_numpy() & (rng.random(len(kept)) < 0.15)
    kept.loc[confuse, "label"] = "car"
    jitter = rng.normal(0, 4, (len(kept), 4))
    kept[["x", "y"]] = kept[["x", "y"]].to_numpy() + jitter[:, :2]
    kept[["w", "h"]] = np.maximum(kept[["w", "h"]].to_numpy() + jitter[:, 2:], 2)
    start = datetime.fromisoformat(day).replace(tzinfo=UTC)
    return pd.DataFrame(
        {
            "item_id": kept["item_id"].to_numpy(),
            "ts": (start + timedelta(hours=12)).isoformat(),
            "model_version": "detector-1.4.0",
            "predicted_label": kept["label"].to_numpy(),
            "confidence": np.clip(rng.beta(8, 2, len(kept)), 0.01, 0.999).round(4),
            "x": kept["x"].round(2).to_numpy(),
            "y": kept["y"].round(2).to_numpy(),
            "w": kept["w"].round(2).to_numpy(),
            "h": kept["h"].round(2).to_numpy(),
            "lighting": kept["lighting"].to_numpy(),
            "weather": kept["weather"].to_numpy(),
            "device": kept["device"].to_numpy(),
            "region": kept["region"].to_numpy(),
        }
    )


def _write_redeliveries(store: Store, counts: dict[str, int]) -> None:
    """Exports delivered twice, as vendors do: each judgment must still count once (quarantined as duplicate)."""
    d = days()
    _write(
        store,
        f"exports/{d[4]}/label_studio_project-12 (resend of {d[3]}).json",
        store.read_bytes(f"exports/{d[3]}/label_studio_project-12.json"),
        counts,
    )
    _write(
        store,
        f"exports/{d[7]}/crowd_scene_judgments (1).csv",
        store.read_bytes(f"exports/{d[7]}/crowd_scene_judgments.csv"),
        counts,
    )


def _write_malformed(store: Store, counts: dict[str, int]) -> None:
    """Files that a real landing zone receives sooner or later; each must fail alone, by name."""
    d = days()
    good = store.read_bytes(f"exports/{d[2]}/label_studio_project-12.json")
    _write(store, f"exports/{d[2]}/label_studio_resend_truncated.json", good[: len(good) // 2], counts)
    _write(
        store,
        f"exports/{d[6]}/vendor_boxes_badtypes.csv",
        b"item_id,annotator_id,label,x,y,w,h\nimg-x-1,vendor1,car,10,20,30,40\nimg-x-2,vendor1,car,ten,20,30,40\n",
        counts,
    )
    _write(store, f"exports/{d[9]}/annotations.dat", b"\x00\x01binary blob from an unknown tool", counts)
    escape = [
        {
            "id": 1,
            "data": {"image": "/data/local-files/?d=../../etc/passwd"},
            "annotations": [{"id": 1, "completed_by": 1, "result": []}],
        }
    ]
    _write(store, f"exports/{d[11]}/label_studio_path_escape.json", json.dumps(escape).encode(), counts)


# The reviewer who answers relabel tasks in the demo: careful, and known to Label Studio by a numeric user id
# (real exports give `completed_by` as a number).
REVIEWER = Annotator("rev01", "label_studio", 0.98, 1.5, 0.01)
REVIEWER_USER_ID = 31
ANSWER_PROJECT = 14


def production_truth(production: pd.DataFrame, *, seed: int = SEED) -> pd.DataFrame:
    """The true objects of production frames (the world behind the demo's logs): a scene, boxes, sometimes a
    crosswalk, and the e-scooter the model saw where it predicted one. Each frame's truth depends on its id
    alone, so a frame sent in any batch has the same truth."""
    frames = []
    for row in production.drop_duplicates("item_id").sort_values("item_id").itertuples(index=False):  # a batch
        rng = np.random.default_rng([seed, zlib.crc32(row.item_id.encode())])
        truth = _truth(rng, pd.DataFrame({"item_id": [row.item_id], "width": [row.width], "height": [row.height]}))
        if row.predicted_label == NEW_OBJECT:
            w = float(rng.uniform(0.03, 0.08) * row.width)
            truth = pd.concat(
                [
                    truth,
                    pd.DataFrame(
                        [
                            {
                                "item_id": row.item_id,
                                "kind": "bbox",
                                "label": NEW_OBJECT,
                                "x": float(rng.uniform(0, row.width - w)),
                                "y": float(rng.uniform(0, row.height * 0.5)),
                                "w": w,
                                "h": w * 1.6,
                                "object": len(truth),
                            }
                        ]
                    ),
                ],
                ignore_index=True,
            )
        frames.append(truth.assign(width=float(row.width), height=float(row.height)))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["item_id", "kind", "label"])


def answer_tasks(
    tasks: bytes, truth: pd.DataFrame, production: pd.DataFrame, answered_on: str, *, seed: int = SEED
) -> tuple[bytes, int]:
    """A Label Studio export of the demo reviewer's answers to an outbox task file, delivered on ``answered_on``:
    each task's data as sent (its ``item_id`` and ``batch_id`` link the answer back), one annotation drawn from
    the truth in the guideline's names of that day. Returns the export and the number of tasks answered (a task
    without a known truth stays unanswered)."""
    sent = json.loads(tasks)
    ids = pd.Series([task["data"]["item_id"] for task in sent], dtype=object)
    known = truth[truth["item_id"].isin(ids)].drop(columns="day")
    logged = production[production["item_id"].isin(ids) & ~production["item_id"].isin(known["item_id"])]
    objects = pd.concat([known, production_truth(logged, seed=seed)], ignore_index=True)
    answered = _annotate(np.random.default_rng([seed, int(answered_on.replace("-", ""))]), REVIEWER, objects)
    if answered_on >= V2_DAY:
        answered["label"] = answered["label"].replace(V2_RENAMES)
    sizes = objects.drop_duplicates("item_id").set_index("item_id")[["width", "height"]]
    stamp = f"{answered_on}T10:00:00Z"
    out = []
    for n, task in enumerate(sent, start=1):
        item_id = task["data"]["item_id"]
        if item_id not in sizes.index:
            continue
        width, height = (float(v) for v in sizes.loc[item_id])
        results = _label_studio_results(answered[answered["item_id"] == item_id], width, height)
        out.append(
            {
                "id": 9000 + n,
                "data": task["data"],
                "meta": task.get("meta", {}),
                "project": ANSWER_PROJECT,
                "annotations": [
                    {
                        "id": 90000 + n,
                        "completed_by": REVIEWER_USER_ID,
                        "result": results,
                        "was_cancelled": False,
                        "ground_truth": False,
                        "created_at": stamp,
                        "updated_at": stamp,
                        "lead_time": 48.0,
                        "task": 9000 + n,
                        "project": ANSWER_PROJECT,
                    }
                ],
                "predictions": [],
            }
        )
    return json.dumps(out, indent=1).encode(), len(out)
