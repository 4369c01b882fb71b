"""A seeded, realistic landing zone for two weeks of a driving-scene labeling program.

What it contains, and why:
- items with slice attributes (lighting, weather, device, region), so coverage has slices to measure;
- six annotators of different skill, one careless and one who confuses car with truck, so
  agreement, gold scoring and consensus have something real to find;
- boxes with jitter, crosswalk polygons and a scene classification, exported the way
  real teams deliver them: Label Studio JSON, CVAT XML, COCO JSON, a crowd CSV and a YOLO zip;
- crowd stragglers: each day's crowd file also judges some of the day before's items, so votes of one item
  arrive on two days and the label state has rounds to pool;
- 8 % gold items, a few malformed files, two re-delivered exports (counted once), and production
  logs whose inputs drift in the
  last three days (more night and rain traffic, darker images, a new object type);
- guideline v2 from 2024-06-12, with one vendor still delivering v1 labels, so that
  validation has renamed labels to remap and split ones to send back;
- the production model's output on the labeled items: detections whose confidence follows their accuracy and
  calibrated scene class probabilities (`prob_<class>`), both drawn from the truth, never from the labels;
- label errors the annotators share, planted on some items every day and kept in `Seeded.planted` (a careless
  annotator alone on a scene with a systematic confusion, swapped box classes, shifted boxes, dropped boxes),
  so that what `label_issues` finds can be scored.
"""

from __future__ import annotations

import io
import json
import zipfile
import zlib
from dataclasses import dataclass, field
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
SCENE_SHARES = (0.5, 0.3, 0.2)
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

# Label errors the annotators share, planted every day on items outside gold (gold would catch them), each drawn
# from its own stream after the day's other draws. Per day and type: scenes the careless annotator judged alone
# with a systematic confusion (the true class, what it wrote), boxes whose class every annotator swapped (a
# plausible confusion), boxes every annotator drew shifted (by this share of their width and height, towards the
# image's centre), true boxes every annotator left out (among boxes no other true box touches: ObjectLab scores a
# detection only where no label box overlaps it).
PLANTED_STREAM, SCENE_STREAM, LATE_STREAM = 101, 102, 103
# Crowd stragglers: each day's crowd file also holds judgments of the day before's items, submitted after
# midnight by a worker who had not judged them yet (one each, on this many items outside gold and the planted
# errors), so the label state pools an item's votes across two deliveries.
LATE_PER_DAY = 20
PLANTED_PER_DAY = 12
CARELESS = "ann04"
SCENE_CONFUSION = ("highway", "urban")
SWAPS = {"car": "truck", "truck": "car", "bus": "truck", "pedestrian": "cyclist", "cyclist": "pedestrian"}
SHIFT = (0.4, 0.5)
PLANTED_COLUMNS = [
    "day",
    "item_id",
    "object",
    "error",  # scene_label, swap, shift, drop
    "true_label",
    "planted_label",  # what the annotators wrote (None for a drop)
    "x",  # the true box
    "y",
    "w",
    "h",
    "planted_x",  # the box the annotators drew (a shift moves it; None for a scene or a drop)
    "planted_y",
]
# The production scene classifier: its probability vector is drawn from the posterior of a Dirichlet mixture
# given the true scene, so P(true class = k | probabilities) = p_k (calibrated by construction, about 94 % right).
# Most items are clear (a sharp component); some are ambiguous between urban and highway.
SCENE_MODEL = "scene-classifier-2.3.0"
SCENE_SHARP, SCENE_AMBIGUOUS = 0.05, 2.0  # Dirichlet concentrations
SCENE_AMBIGUOUS_SHARE, SCENE_AMBIGUOUS_MEAN = 0.15, (0.55, 0.4, 0.05)
# The detector's confidence (a logistic of a clarity score): objects it finds are mostly above 0.95 by day and
# clearly less at night, in rain or fog and when small; a class it confuses and boxes on background get low ones.
DETECTOR_LOGIT = 5.5
DETECTOR_NOISE = 0.8
DETECTOR_PENALTY = {"night": 1.8, "weather": 0.6, "small": 1.2}
CONFUSED_LOGIT, BACKGROUND_LOGIT = -0.5, -1.0
BACKGROUND_PER_ITEM = 0.25


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
    # the label errors planted in the annotators' work (PLANTED_COLUMNS): what label_issues should find
    planted: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=PLANTED_COLUMNS))


def seed_landing(store: Store, *, seed: int = SEED) -> Seeded:
    """Write the whole demo landing zone; the same seed writes the same bytes."""
    rng = np.random.default_rng(seed)
    counts = {"items": 0, "objects": 0, "production": 0, "gold": 0, "files": 0}
    gold_rows: list[dict] = []
    truths, planted = [], []
    previous: tuple[pd.DataFrame, pd.DataFrame] | None = None  # the day before's crowd judgments, and its items' truth
    for index, day in enumerate(days()):
        drift = index >= N_DAYS - DRIFT_DAYS
        items = _items(rng, day, drift)
        truth = _truth(rng, items[items["labeled"]])
        sized = truth.merge(items[["item_id", "width", "height"]], on="item_id")
        truths.append(sized.assign(day=day))
        counts["items"] += len(items)
        counts["objects"] += len(truth)
        _write(store, f"items/{day}/items.csv", items.drop(columns="labeled").to_csv(index=False).encode(), counts)
        work, crowd = _judgments(rng, day, items, truth)
        gold_items = items.loc[items["labeled"], "item_id"].sample(
            frac=GOLD_SHARE, random_state=int(rng.integers(1 << 31))
        )
        # planted after every earlier draw, from their own stream: the rest of the demo draws what it drew before
        work, crowd, errors = plant_errors(
            np.random.default_rng([seed, index, PLANTED_STREAM]), sized, work, crowd, gold_items
        )
        planted.append(errors.assign(day=day))
        late = _late_crowd(np.random.default_rng([seed, index, LATE_STREAM]), day, previous) if previous else None
        previous = crowd, truth[~truth["item_id"].isin(gold_items) & ~truth["item_id"].isin(errors["item_id"])]
        _write_exports(store, day, items, work, pd.concat([crowd, late], ignore_index=True), counts)
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
        scenes = scene_probabilities(np.random.default_rng([seed, index, SCENE_STREAM]), day, truth, items)
        counts["production"] += len(scenes)
        _write(store, f"production/{day}/scenes_labeled_items.csv", scenes.to_csv(index=False).encode(), counts)
    gold = pd.DataFrame(gold_rows)
    counts["gold"] = len(gold)
    _write(store, "gold/gold_labels.csv", gold.to_csv(index=False).encode(), counts)
    _write_malformed(store, counts)
    _write_redeliveries(store, counts)
    return Seeded(counts, pd.concat(truths, ignore_index=True), pd.concat(planted, ignore_index=True))


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
            {"item_id": item.item_id, "kind": "classification", "label": str(rng.choice(SCENES, p=SCENE_SHARES))}
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


def _judgments(
    rng: np.random.Generator, day: str, items: pd.DataFrame, truth: pd.DataFrame
) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    """Every annotator's work on the day's labeled items (three annotators an item) and the crowd's scene
    judgments (three workers an item), in the guideline's v1 names."""
    labeled = items[items["labeled"]].set_index("item_id")
    assignment = {item: rng.choice(len(ANNOTATORS), 3, replace=False) for item in labeled.index}
    work = {
        a.name: _annotate(rng, a, truth[truth["item_id"].isin([i for i, chosen in assignment.items() if k in chosen])])
        for k, a in enumerate(ANNOTATORS)
    }
    return work, _crowd(rng, truth, day)


def _write_exports(
    store: Store, day: str, items: pd.DataFrame, work: dict[str, pd.DataFrame], crowd: pd.DataFrame, counts: dict
) -> None:
    labeled = items[items["labeled"]].set_index("item_id")
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
    _write(store, f"exports/{day}/crowd_scene_judgments.csv", crowd.to_csv(index=False).encode(), counts)


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


def _crowd(rng: np.random.Generator, truth: pd.DataFrame, day: str) -> pd.DataFrame:
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
    return pd.DataFrame(rows).rename(columns={"WorkerId": "worker_id", "SubmitTime": "submitted_at"})


def _late_crowd(rng: np.random.Generator, day: str, previous: tuple[pd.DataFrame, pd.DataFrame]) -> pd.DataFrame:
    """One more crowd judgment each of :data:`LATE_PER_DAY` of the day before's scenes (``previous``: that day's
    crowd judgments and the truth of its items outside gold and the planted errors), by a worker who had not
    judged the item, submitted after midnight: they arrive in ``day``'s file."""
    crowd, truth = previous
    scenes = truth[truth["kind"] == "classification"]
    scenes = scenes.iloc[np.sort(rng.choice(len(scenes), min(LATE_PER_DAY, len(scenes)), replace=False))]
    rows = []
    for item_id, label in zip(scenes["item_id"], scenes["label"], strict=True):
        judged = set(crowd.loc[crowd["INPUT:item_id"] == item_id, "worker_id"])
        worker = int(rng.choice([k for k, name in enumerate(CROWD) if name not in judged]))
        answer = label if rng.random() < CROWD_ACCURACY[worker] else str(rng.choice(SCENES))
        rows.append(
            {
                "worker_id": CROWD[worker],
                "INPUT:item_id": item_id,
                "OUTPUT:label": answer,
                "submitted_at": f"{day}T00:40:00Z",
            }
        )
    return pd.DataFrame(rows, columns=crowd.columns)


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
    detector is good overall and weak exactly where it hurts: it misses most cyclists at night. Its
    confidence follows its accuracy (see DETECTOR_LOGIT): high on the objects it finds, low on a truck it
    calls a car and on its few boxes on background. It sees the world, not the labels: a box the annotators
    dropped, swapped or shifted is detected where and as it truly is.
    """
    boxes = truth[truth["kind"] == "bbox"].merge(
        items[["item_id", "width", "lighting", "weather", "device", "region"]], on="item_id"
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
    # confidence follows accuracy: a clarity score for every found object, low for a confused class
    logit = (
        DETECTOR_LOGIT
        + rng.normal(0, DETECTOR_NOISE, len(kept))
        - DETECTOR_PENALTY["night"] * (kept["lighting"] == "night").to_numpy()
        - DETECTOR_PENALTY["weather"] * (kept["weather"] != "clear").to_numpy()
        - DETECTOR_PENALTY["small"] * (kept["w"] < 0.08 * kept["width"]).to_numpy()
    )
    logit[confuse] = CONFUSED_LOGIT + rng.normal(0, DETECTOR_NOISE, int(confuse.sum()))
    background = _background_boxes(rng, day, items)
    kept = pd.concat([kept.assign(logit=logit), background], ignore_index=True)
    start = datetime.fromisoformat(day).replace(tzinfo=UTC)
    return pd.DataFrame(
        {
            "item_id": kept["item_id"].to_numpy(),
            "ts": (start + timedelta(hours=12)).isoformat(),
            "model_version": "detector-1.4.0",
            "predicted_label": kept["label"].to_numpy(),
            "confidence": np.clip(1 / (1 + np.exp(-kept["logit"].to_numpy(dtype=float))), 0.01, 0.999).round(4),
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


def _background_boxes(rng: np.random.Generator, day: str, items: pd.DataFrame) -> pd.DataFrame:
    """The detector's false positives on background: a few boxes an image, of any class, with low confidence."""
    n = rng.poisson(BACKGROUND_PER_ITEM, len(items))
    boxes = items.loc[items.index.repeat(n), ["item_id", "width", "height", "lighting", "weather", "device", "region"]]
    width, height = boxes["width"].to_numpy(dtype=float), boxes["height"].to_numpy(dtype=float)
    w = rng.uniform(0.03, 0.15, len(boxes)) * width
    h = np.minimum(w * rng.uniform(0.6, 2.0, len(boxes)), 0.9 * height)
    label = rng.choice(BOX_CLASSES, len(boxes), p=BOX_WEIGHTS)
    return boxes.assign(
        label=pd.Series(label, index=boxes.index).replace(V2_RENAMES) if day >= V2_DAY else label,
        x=rng.uniform(0, 1, len(boxes)) * (width - w),
        y=rng.uniform(0, 1, len(boxes)) * (height - h),
        w=w,
        h=h,
        logit=BACKGROUND_LOGIT + rng.normal(0, DETECTOR_NOISE, len(boxes)),
    ).reset_index(drop=True)


def scene_probabilities(rng: np.random.Generator, day: str, truth: pd.DataFrame, items: pd.DataFrame) -> pd.DataFrame:
    """The production scene classifier's log on the labeled items: its top class, its confidence and one
    ``prob_<class>`` column per scene class, with the frame's features as the detector logs them. Drawn from the true scene alone (never from a label): a mixture of
    Dirichlet priors over probability vectors (most items clear, some ambiguous between urban and highway)
    whose mean is the scenes' shares, and the vector drawn from its posterior given the true class, so the
    model is calibrated: among items it gives class k probability p, a share p is truly k."""
    scenes = truth[truth["kind"] == "classification"]
    true = pd.Categorical(scenes["label"], categories=SCENES).codes
    shares, ambiguous = np.asarray(SCENE_SHARES), np.asarray(SCENE_AMBIGUOUS_MEAN)
    clear = (shares - SCENE_AMBIGUOUS_SHARE * ambiguous) / (1 - SCENE_AMBIGUOUS_SHARE)  # the mixture's mean: shares
    # the posterior's component weights given the true class, then Dirichlet(alpha + one-hot of the true class)
    weight = SCENE_AMBIGUOUS_SHARE * ambiguous[true]
    is_ambiguous = rng.random(len(true)) < weight / (weight + (1 - SCENE_AMBIGUOUS_SHARE) * clear[true])
    alpha = (
        np.where(is_ambiguous[:, None], SCENE_AMBIGUOUS * ambiguous, SCENE_SHARP * clear) + np.eye(len(SCENES))[true]
    )
    draws = rng.gamma(alpha)
    probs = np.maximum(draws / draws.sum(axis=1, keepdims=True), 1e-4)  # a softmax is never exactly 0
    probs = probs / probs.sum(axis=1, keepdims=True)
    start = datetime.fromisoformat(day).replace(tzinfo=UTC)
    return pd.DataFrame(
        {
            "item_id": scenes["item_id"].to_numpy(),
            "ts": (start + timedelta(hours=12)).isoformat(),
            "model_version": SCENE_MODEL,
            "predicted_label": np.asarray(SCENES, dtype=object)[probs.argmax(axis=1)],
            "confidence": probs.max(axis=1).round(4),
            **{f"prob_{name}": probs[:, k].round(4) for k, name in enumerate(SCENES)},
        }
    ).merge(items[["item_id", "lighting", "weather", "device", "region"]], on="item_id", how="left")


def plant_errors(
    rng: np.random.Generator,
    truth: pd.DataFrame,
    work: dict[str, pd.DataFrame],
    crowd: pd.DataFrame,
    gold_items: pd.Series,
) -> tuple[dict[str, pd.DataFrame], pd.DataFrame, pd.DataFrame]:
    """Label errors every annotator of an item shares, so consensus keeps them: ``PLANTED_PER_DAY`` of each type
    on items outside gold (see SWAPS, SHIFT, CARELESS). Returns the annotators' work and the crowd's judgments
    with the errors in, and the errors (PLANTED_COLUMNS but the day)."""
    eligible = truth[~truth["item_id"].isin(gold_items)]
    # (a) scenes of the confused class the careless annotator judged: it alone judges them, and confuses them
    careless = work[CARELESS]
    judged = careless.loc[careless["kind"] == "classification", "item_id"]
    scenes = eligible[
        (eligible["kind"] == "classification")
        & (eligible["label"] == SCENE_CONFUSION[0])
        & eligible["item_id"].isin(judged)
    ]
    scenes = scenes.iloc[np.sort(rng.choice(len(scenes), min(PLANTED_PER_DAY, len(scenes)), replace=False))]
    # (b)-(d) boxes, each object at most one error; a drop only where no other true box touches it, on an item
    # that keeps another box (an item without any box is not checked for overlooked objects)
    boxes = eligible[eligible["kind"] == "bbox"]
    alone = ~boxes["object"].isin(_touching(boxes)) & (boxes.groupby("item_id")["object"].transform("size") > 1)
    drops = _pick(rng, boxes[alone.to_numpy()], PLANTED_PER_DAY)
    rest = boxes[~boxes["object"].isin(drops["object"])]
    swaps = _pick(rng, rest[rest["label"].isin(list(SWAPS))], PLANTED_PER_DAY)
    rest = rest[~rest["object"].isin(swaps["object"])]
    # a shift towards the image's centre by SHIFT of the box's size, among boxes it leaves inside the image
    share = rng.uniform(*SHIFT, (len(rest), 2))
    width, height = rest["width"].to_numpy(dtype=float), rest["height"].to_numpy(dtype=float)
    towards_x = np.where(rest["x"] + rest["w"] / 2 < width / 2, 1.0, -1.0)
    towards_y = np.where(rest["y"] + rest["h"] / 2 < height / 2, 1.0, -1.0)
    moved = rest.assign(dx=towards_x * share[:, 0] * rest["w"], dy=towards_y * share[:, 1] * rest["h"])
    inside = (
        (moved["x"] + moved["dx"] >= 0)
        & (moved["x"] + moved["dx"] + moved["w"] <= width)
        & (moved["y"] + moved["dy"] >= 0)
        & (moved["y"] + moved["dy"] + moved["h"] <= height)
    )
    shifts = _pick(rng, moved[inside.to_numpy()], PLANTED_PER_DAY)
    dx = pd.Series(shifts["dx"].to_numpy(), index=shifts["object"].to_numpy())
    dy = pd.Series(shifts["dy"].to_numpy(), index=shifts["object"].to_numpy())
    swapped = pd.Series(swaps["label"].map(SWAPS).to_numpy(), index=swaps["object"].to_numpy())
    out = {}
    for name, frame in work.items():  # six annotators
        frame = frame[~frame["object"].isin(drops["object"])].copy()
        if name != CARELESS:
            frame = frame[~((frame["kind"] == "classification") & frame["item_id"].isin(scenes["item_id"]))]
        else:
            frame.loc[frame["item_id"].isin(scenes["item_id"]) & (frame["kind"] == "classification"), "label"] = (
                SCENE_CONFUSION[1]
            )
        is_swap = frame["object"].isin(swapped.index)
        frame.loc[is_swap, "label"] = frame.loc[is_swap, "object"].map(swapped)
        is_shift = frame["object"].isin(dx.index)
        frame.loc[is_shift, "x"] = np.maximum(frame.loc[is_shift, "x"] + frame.loc[is_shift, "object"].map(dx), 0)
        frame.loc[is_shift, "y"] = np.maximum(frame.loc[is_shift, "y"] + frame.loc[is_shift, "object"].map(dy), 0)
        out[name] = frame
    crowd = crowd[~crowd["INPUT:item_id"].isin(scenes["item_id"])].reset_index(drop=True)
    planted = pd.concat(
        [
            scenes.assign(error="scene_label", planted_label=SCENE_CONFUSION[1]),
            swaps.assign(
                error="swap", planted_label=swaps["label"].map(SWAPS), planted_x=swaps["x"], planted_y=swaps["y"]
            ),
            shifts.drop(columns=["dx", "dy"]).assign(
                error="shift",
                planted_label=shifts["label"],
                planted_x=shifts["x"] + shifts["dx"],
                planted_y=shifts["y"] + shifts["dy"],
            ),
            drops.assign(error="drop", planted_label=None),
        ],
        ignore_index=True,
    ).rename(columns={"label": "true_label"})
    return out, crowd, planted.reindex(columns=PLANTED_COLUMNS[1:])


def _pick(rng: np.random.Generator, boxes: pd.DataFrame, n: int) -> pd.DataFrame:
    return boxes.iloc[np.sort(rng.choice(len(boxes), min(n, len(boxes)), replace=False))]


def _touching(boxes: pd.DataFrame) -> np.ndarray:
    """The objects among ``boxes`` that overlap another box of their item."""
    pairs = boxes[["item_id", "object", "x", "y", "w", "h"]]
    pairs = pairs.merge(pairs, on="item_id", suffixes=("", "_other"))
    pairs = pairs[pairs["object"] != pairs["object_other"]]
    overlap_x = np.minimum(pairs["x"] + pairs["w"], pairs["x_other"] + pairs["w_other"]) > np.maximum(
        pairs["x"], pairs["x_other"]
    )
    overlap_y = np.minimum(pairs["y"] + pairs["h"], pairs["y_other"] + pairs["h_other"]) > np.maximum(
        pairs["y"], pairs["y_other"]
    )
    return pairs.loc[(overlap_x & overlap_y).to_numpy(), "object"].unique()


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
    # the reviewer's tool keeps a box inside the image (its jitter could push an edge box past it)
    boxes = (answered["kind"] == "bbox").to_numpy()
    size = sizes.reindex(answered.loc[boxes, "item_id"]).to_numpy(dtype=float)
    answered.loc[boxes, "w"] = np.minimum(
        answered.loc[boxes, "w"].to_numpy(dtype=float), size[:, 0] - answered.loc[boxes, "x"]
    )
    answered.loc[boxes, "h"] = np.minimum(
        answered.loc[boxes, "h"].to_numpy(dtype=float), size[:, 1] - answered.loc[boxes, "y"]
    )
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
