"""A generated corpus of labeling exports shaped like real teams produce them, with the truth recorded.

One :class:`CaseSpec` says which formats deliver on a day, which kinds of label they carry (scene labels,
boxes, polygons), how many annotators, and which non-label records travel with them (model predictions,
cancelled annotations, Label Studio annotations updated later, CVAT polylines, Label Studio text areas).
:func:`generate` turns a spec and a seed into the landing files of one day — exports and the item catalog —
and records what every export holds:

- ``rows``: the labels the export must yield (one canonical annotation row each);
- ``predictions``, ``cancelled``, ``superseded``, ``other``, ``empty``: records that are not labels and must be counted
  as skipped in the file ledger. The unit is the one docs/formats-and-validation.md documents: one per model
  prediction, one per cancelled annotation, one per superseded copy of an annotation (an annotation id present twice: the copy
  with the earlier ``updated_at`` is superseded), one per result type or shape that is not a label, one per
  Label Studio annotation submitted with no result. Cancelled
  annotations and superseded copies carry at most one result, so a count per annotation and a count per
  result agree.
- ``judgments``: one row per expected label, with its item, annotator, kind and label.

Class names come from the guideline in force on the day (config/guidelines/*.yaml), each with a geometry
the guideline allows, and geometry stays valid (inside the image, above the minimum size, simple polygons),
so every row of a clean corpus passes validation. :func:`case_specs` draws specs for hypothesis.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from xml.sax.saxutils import quoteattr

import numpy as np
import pandas as pd
from hypothesis import strategies as st

from labelops.guidelines import Guideline, load_guidelines
from labelops.storage import LocalStore, Store

REPO = Path(__file__).resolve().parents[1]
KINDS = ("classification", "bbox", "polygon")
FORMAT_KINDS: dict[str, tuple[str, ...]] = {
    "label_studio": ("classification", "bbox", "polygon"),
    "coco": ("bbox", "polygon"),
    "cvat": ("classification", "bbox", "polygon"),
    "yolo": ("bbox", "polygon"),
    "table": ("classification", "bbox"),
}
FORMATS = tuple(FORMAT_KINDS)
SIZES = ((1920, 1080), (1280, 720), (1024, 768))
UPDATE_ORDERS = ("none", "later_first", "later_last", "both")


@dataclass(frozen=True)
class CaseSpec:
    """What one day of deliveries looks like."""

    name: str
    formats: tuple[str, ...]
    kinds: tuple[str, ...]
    day: str = "2024-06-03"
    n_items: int = 12
    n_annotators: int = 3  # 1: every export is one person's work
    predictions: bool = True  # Label Studio tasks carry model pre-annotations
    cancelled: bool = True  # Label Studio annotations skipped by their annotator
    updated: str = "none"  # Label Studio: an annotation present twice; where the later copy stands (UPDATE_ORDERS)
    other_records: bool = True  # CVAT polylines and points, Label Studio free-text areas: not labels
    ls_users: str = "email"  # Label Studio completed_by: "id" (a number) or "email" (the embedded user)
    yolo_packaging: str = "zip"  # or "folder"
    yolo_class_list: str = "obj.names"  # or "classes.txt"
    seed: int = 0


@dataclass
class FileTruth:
    """What one export (a file, or a YOLO folder) holds."""

    key: str  # the landing key the file ledger names (a YOLO folder's key is the folder)
    format: str
    rows: int = 0
    predictions: int = 0
    cancelled: int = 0
    superseded: int = 0
    other: int = 0
    empty: int = 0  # Label Studio annotations submitted with no result (an annotator with nothing of these kinds)

    @property
    def skipped(self) -> int:
        return self.predictions + self.cancelled + self.superseded + self.other + self.empty

    @property
    def records(self) -> int:
        return self.rows + self.skipped


@dataclass
class Corpus:
    """The landing files of one day and the truth about them."""

    spec: CaseSpec
    files: dict[str, bytes]  # landing key -> bytes: the exports (YOLO folders member by member) and the catalog
    exports: list[FileTruth]
    judgments: pd.DataFrame  # source_file, item_id, annotator_id, kind, label: one row per expected label
    items: pd.DataFrame  # the item catalog as written

    @property
    def day(self) -> str:
        return self.spec.day

    def write(self, store: Store) -> None:
        for key, data in self.files.items():
            store.write_bytes(key, data)

    def truth(self, key: str) -> FileTruth:
        return next(t for t in self.exports if t.key == key)

    @property
    def records(self) -> int:
        return sum(t.records for t in self.exports)

    @property
    def skipped(self) -> int:
        return sum(t.skipped for t in self.exports)


@dataclass
class _Object:
    """One labeled thing: a scene label, a box or a polygon, in pixels."""

    kind: str
    label: str
    box: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    points: list[float] = field(default_factory=list)


@dataclass
class _Item:
    item_id: str
    width: int
    height: int
    truth: list[_Object]


def guideline_for(day: str) -> Guideline:
    return load_guidelines(LocalStore(REPO / "config")).in_force(day)


def classes_by_kind(guideline: Guideline) -> dict[str, list[str]]:
    """The classes of the guideline that allow each geometry, in the guideline's order."""
    return {kind: [c.name for c in guideline.classes.values() if kind in c.geometry] for kind in KINDS}


def generate(spec: CaseSpec) -> Corpus:
    """The landing files of ``spec.day`` and their truth; the same spec gives the same bytes."""
    rng = np.random.default_rng(spec.seed)
    guideline = guideline_for(spec.day)
    classes = classes_by_kind(guideline)
    for kind in spec.kinds:
        if not classes[kind]:
            raise ValueError(f"guideline {guideline.version} has no class with geometry {kind}")
    items = [_truth_item(rng, spec, n, classes, guideline) for n in range(spec.n_items)]
    files: dict[str, bytes] = {}
    exports: list[FileTruth] = []
    judgments: list[dict[str, str]] = []
    for fmt in spec.formats:
        kinds = tuple(k for k in spec.kinds if k in FORMAT_KINDS[fmt])
        if not kinds:
            continue
        writer = WRITERS[fmt]
        work = _work(rng, spec, fmt, items, kinds, classes)
        new_files, truth, labels = writer(rng, spec, work, kinds, classes)
        files.update(new_files)
        exports.append(truth)
        judgments.extend({"source_file": truth.key, **label} for label in labels)
    catalog = _catalog(rng, spec, items)
    files[f"items/{spec.day}/items.csv"] = catalog.to_csv(index=False).encode()
    frame = pd.DataFrame(judgments, columns=["source_file", "item_id", "annotator_id", "kind", "label"])
    return Corpus(spec=spec, files=files, exports=exports, judgments=frame, items=catalog)


def redeliver(corpus: Corpus, key: str, new_key: str) -> dict[str, bytes]:
    """The files of export ``key`` under ``new_key`` (a resend under another name, or on another day)."""
    if key in corpus.files:
        return {new_key: corpus.files[key]}
    prefix = key + "/"
    return {new_key + k[len(key) :]: data for k, data in corpus.files.items() if k.startswith(prefix)}


# --- truth -----------------------------------------------------------------------------------------------------


def _truth_item(
    rng: np.random.Generator, spec: CaseSpec, n: int, classes: dict[str, list[str]], guideline: Guideline
) -> _Item:
    width, height = SIZES[int(rng.integers(len(SIZES)))]
    objects = []
    if classes["classification"]:
        objects.append(_Object("classification", str(rng.choice(classes["classification"]))))
    for _ in range(int(rng.integers(1, 4))):
        label = str(rng.choice(classes["bbox"]))
        min_w, min_h = guideline.min_size(label)
        w = float(rng.uniform(max(24.0, 4 * min_w), width * 0.25))
        h = float(rng.uniform(max(24.0, 4 * min_h), height * 0.3))
        x, y = float(rng.uniform(8, width - w - 8)), float(rng.uniform(8, height - h - 8))
        objects.append(_Object("bbox", label, (x, y, w, h)))
    if classes["polygon"] and (n == 0 or rng.random() < 0.6 or spec.kinds == ("polygon",)):
        cx, cy = width * rng.uniform(0.3, 0.7), height * rng.uniform(0.6, 0.8)
        hw, hh = width * rng.uniform(0.08, 0.2), height * rng.uniform(0.04, 0.1)
        points = [cx - hw, cy - hh, cx + hw, cy - hh, cx + hw * 1.15, cy + hh, cx - hw * 1.15, cy + hh]
        objects.append(_Object("polygon", str(rng.choice(classes["polygon"])), points=[float(p) for p in points]))
    return _Item(f"frame-{spec.seed % 1000:03d}-{n:03d}", width, height, objects)


@dataclass
class _Work:
    """One export's labels: for every item, each annotator's objects (only the export's kinds)."""

    items: list[_Item]
    annotators: list[str]  # the export's own names for its annotators
    labels: dict[tuple[str, str], list[_Object]]  # (item_id, annotator) -> objects

    def by_item(self) -> list[tuple[_Item, list[tuple[str, list[_Object]]]]]:
        out = []
        for item in self.items:
            done = [(a, self.labels[(item.item_id, a)]) for a in self.annotators if (item.item_id, a) in self.labels]
            if done:
                out.append((item, done))
        return out


def _work(
    rng: np.random.Generator,
    spec: CaseSpec,
    fmt: str,
    items: list[_Item],
    kinds: tuple[str, ...],
    classes: dict[str, list[str]],
) -> _Work:
    n_people = 1 if fmt == "yolo" else spec.n_annotators  # YOLO carries no annotator
    annotators = [f"{fmt}-{k}" for k in range(n_people)]
    eligible = [i for i in items if any(o.kind in kinds for o in i.truth)]
    take = max(1, round(len(eligible) * rng.uniform(0.6, 1.0)))
    chosen = sorted(rng.choice(len(eligible), size=min(take, len(eligible)), replace=False).tolist())
    labels: dict[tuple[str, str], list[_Object]] = {}
    for index in chosen:
        item = eligible[index]
        count = 1 if n_people == 1 else int(rng.integers(2, n_people + 1))
        for person in sorted(rng.choice(n_people, size=count, replace=False).tolist()):
            labels[(item.item_id, annotators[person])] = _annotate(rng, item, kinds, classes)
    return _Work([eligible[i] for i in chosen], annotators, labels)


def _annotate(
    rng: np.random.Generator, item: _Item, kinds: tuple[str, ...], classes: dict[str, list[str]]
) -> list[_Object]:
    """One annotator's version of the truth: a few misses and wrong labels, geometry jittered by a pixel or two."""
    out = []
    for truth in item.truth:
        if truth.kind not in kinds:
            continue
        if truth.kind != "classification" and rng.random() < 0.1:
            continue  # missed
        pool = classes[truth.kind]
        wrong = len(pool) > 1 and rng.random() < (0.15 if truth.kind == "classification" else 0.05)
        label = str(rng.choice([c for c in pool if c != truth.label])) if wrong else truth.label
        if truth.kind == "bbox":
            x, y, w, h = (v + float(rng.normal(0, 1.0)) for v in truth.box)
            x, y = min(max(x, 1.0), item.width - w - 1), min(max(y, 1.0), item.height - h - 1)
            out.append(_Object("bbox", label, (x, y, w, h)))
        elif truth.kind == "polygon":
            out.append(_Object("polygon", label, points=[p + float(rng.normal(0, 0.5)) for p in truth.points]))
        else:
            out.append(_Object("classification", label))
    return out


def _judgment(item_id: str, annotator: str, obj: _Object) -> dict[str, str]:
    return {"item_id": item_id, "annotator_id": annotator, "kind": obj.kind, "label": obj.label}


def _stamp(day: str, rng: np.random.Generator, *, before_hours: float = 6.0) -> datetime:
    base = datetime.fromisoformat(day).replace(tzinfo=UTC) - timedelta(hours=before_hours)
    return base + timedelta(seconds=int(rng.integers(0, 5 * 3600)), microseconds=int(rng.integers(0, 1_000_000)))


def _iso_z(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# --- Label Studio ----------------------------------------------------------------------------------------------


def _ls_result(rng: np.random.Generator, item: _Item, obj: _Object) -> list[dict]:
    """One object as Label Studio results (percent coordinates); a box may bring a per-region choice."""
    rid = "".join(rng.choice(list("abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ0123456789_-"), 10))
    if obj.kind == "classification":
        return [
            {
                "id": rid,
                "type": "choices",
                "from_name": "scene",
                "to_name": "image",
                "origin": "manual",
                "value": {"choices": [obj.label]},
            }
        ]
    geometry = {
        "id": rid,
        "from_name": "objects" if obj.kind == "bbox" else "areas",
        "to_name": "image",
        "original_width": item.width,
        "original_height": item.height,
        "image_rotation": 0,
        "origin": "manual",
    }
    if obj.kind == "bbox":
        x, y, w, h = obj.box
        sx, sy = 100.0 / item.width, 100.0 / item.height
        region = {
            **geometry,
            "type": "rectanglelabels",
            "value": {
                "x": x * sx,
                "y": y * sy,
                "width": w * sx,
                "height": h * sy,
                "rotation": 0,
                "rectanglelabels": [obj.label],
            },
        }
        if rng.random() < 0.3:  # a per-region attribute: folded into the box's attributes, not a label of its own
            detail = {
                **geometry,
                "type": "textarea",
                "from_name": "plate",
                "value": {
                    "x": x * sx,
                    "y": y * sy,
                    "width": w * sx,
                    "height": h * sy,
                    "rotation": 0,
                    "text": ["partly hidden"],
                },
            }
            return [region, detail]
        return [region]
    pairs = np.asarray(obj.points).reshape(-1, 2) * [100.0 / item.width, 100.0 / item.height]
    return [
        {
            **geometry,
            "type": "polygonlabels",
            "value": {"points": pairs.tolist(), "closed": True, "polygonlabels": [obj.label]},
        }
    ]


def _ls_user(spec: CaseSpec, number: int) -> tuple[object, str]:
    """``completed_by`` as the export writes it, and the annotator id labelops must read from it."""
    email = f"labeler{number}@vendor-a.example"
    if spec.ls_users == "id":
        return number, str(number)
    return {"id": number, "email": email, "first_name": f"Labeler{number}", "last_name": ""}, email


def label_studio(
    rng: np.random.Generator, spec: CaseSpec, work: _Work, kinds: tuple[str, ...], classes: dict[str, list[str]]
) -> tuple[dict[str, bytes], FileTruth, list[dict[str, str]]]:
    key = f"exports/{spec.day}/project-7-at-{spec.day}-18-02-{spec.seed % 100:02d}.json"
    truth = FileTruth(key, "label_studio")
    labels: list[dict[str, str]] = []
    users = {a: 11 + n for n, a in enumerate(work.annotators)}
    tasks: list[dict] = []
    updates = {
        "none": [],
        "later_first": ["later_first"],
        "later_last": ["later_last"],
        "both": ["later_first", "later_last"],
    }[spec.updated]
    annotation_id = 1000
    for t_id, (item, done) in enumerate(work.by_item(), start=1):
        annotations: list[dict] = []
        for annotator, objects in done:
            annotation_id += 1
            who, expected = _ls_user(spec, users[annotator])
            results = [r for o in objects for r in _ls_result(rng, item, o)]
            if spec.other_records and rng.random() < 0.15:  # a free-text note on the task: not a label
                results.append(
                    {
                        "id": f"note{annotation_id}",
                        "type": "textarea",
                        "from_name": "notes",
                        "to_name": "image",
                        "origin": "manual",
                        "value": {"text": ["glare on the lens"]},
                    }
                )
                truth.other += 1
            truth.empty += int(not results)
            created = _stamp(spec.day, rng)
            annotations.append(
                {
                    "id": annotation_id,
                    "completed_by": who,
                    "result": results,
                    "was_cancelled": False,
                    "ground_truth": False,
                    "created_at": _iso_z(created),
                    "updated_at": _iso_z(created + timedelta(minutes=int(rng.integers(0, 90)))),
                    "draft_created_at": None,
                    "lead_time": round(float(rng.uniform(5, 120)), 3),
                    "prediction": {},
                    "result_count": len(results),
                    "task": t_id,
                    "project": 7,
                    "parent_prediction": None,
                    "parent_annotation": None,
                    "last_action": None,
                }
            )
            truth.rows += len(objects)
            labels.extend(_judgment(item.item_id, expected, o) for o in objects)
        for order in list(updates):  # the first annotations with labels get a stale copy of themselves
            winner = next((a for a in annotations if objects_of(a) and not a.get("_versioned")), None)
            if winner is None:
                break
            updates.remove(order)
            stale = _stale_copy(rng, winner, classes)
            truth.superseded += 1
            at = annotations.index(winner)
            annotations.insert(at + 1 if order == "later_first" else at, stale)
            winner["_versioned"] = stale["_versioned"] = True
        if spec.cancelled and rng.random() < 0.3:
            annotation_id += 1
            who, _ = _ls_user(spec, 90 + int(rng.integers(0, 3)))
            result = [] if rng.random() < 0.5 else _ls_result(rng, item, next(o for o in item.truth))[:1]
            created = _stamp(spec.day, rng)
            annotations.append(
                {
                    "id": annotation_id,
                    "completed_by": who,
                    "result": result,
                    "was_cancelled": True,
                    "ground_truth": False,
                    "created_at": _iso_z(created),
                    "updated_at": _iso_z(created),
                    "lead_time": 2.5,
                    "task": t_id,
                    "project": 7,
                }
            )
            truth.cancelled += 1
        predictions = []
        if spec.predictions and rng.random() < 0.7:
            for p in range(int(rng.integers(1, 3))):
                model = [o for o in item.truth if o.kind in kinds][: int(rng.integers(1, 4))]
                predictions.append(
                    {
                        "id": t_id * 10 + p,
                        "model_version": f"detector-2024.{p + 5}",
                        "created_ago": "2 hours",
                        "result": [r for o in model for r in _ls_result(rng, item, o)[:1]],
                        "score": round(float(rng.uniform(0.3, 0.99)), 4),
                        "cluster": None,
                        "neighbors": None,
                        "mislabeling": 0,
                        "task": t_id,
                        "project": 7,
                    }
                )
            truth.predictions += len(predictions)
        for a in annotations:
            a.pop("_versioned", None)
        tasks.append(
            {
                "id": t_id,
                "data": _ls_data(rng, item),
                "annotations": annotations,
                "predictions": predictions,
                "drafts": [],
                "meta": {},
                "created_at": _iso_z(_stamp(spec.day, rng, before_hours=30)),
                "updated_at": _iso_z(_stamp(spec.day, rng)),
                "inner_id": t_id,
                "total_annotations": len(annotations),
                "cancelled_annotations": sum(a["was_cancelled"] for a in annotations),
                "total_predictions": len(predictions),
                "comment_count": 0,
                "unresolved_comment_count": 0,
                "last_comment_updated_at": None,
                "project": 7,
                "updated_by": None,
                "file_upload": None,
                "comment_authors": [],
            }
        )
    return {key: json.dumps(tasks, indent=1).encode()}, truth, labels


def objects_of(annotation: dict) -> list[dict]:
    return [r for r in annotation["result"] if r["type"] in ("choices", "rectanglelabels", "polygonlabels")]


def _stale_copy(rng: np.random.Generator, winner: dict, classes: dict[str, list[str]]) -> dict:
    """An earlier version of ``winner`` (same id, earlier ``updated_at``): one of its regions, edited since to
    another label (the region keeps its id)."""
    first = json.loads(json.dumps(objects_of(winner)[0]))
    tag = {"choices": "choices", "rectanglelabels": "rectanglelabels", "polygonlabels": "polygonlabels"}[first["type"]]
    kind = {"choices": "classification", "rectanglelabels": "bbox", "polygonlabels": "polygon"}[first["type"]]
    current = first["value"][tag][0]
    others = [c for c in classes[kind] if c != current] or [current]
    first["value"][tag] = [str(rng.choice(others))]
    earlier = datetime.strptime(winner["updated_at"], "%Y-%m-%dT%H:%M:%S.%fZ") - timedelta(hours=2)
    stale = {k: v for k, v in winner.items() if k != "_versioned"}
    stale.update(result=[first], result_count=1, updated_at=earlier.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
    return stale


def _ls_data(rng: np.random.Generator, item: _Item) -> dict:
    style = int(rng.integers(3))
    if style == 0:
        return {"image": f"s3://fleet-camera/raw/{item.item_id}.jpg"}
    if style == 1:
        return {"image": f"/data/local-files/?d=fleet/raw/{item.item_id}.jpg"}
    return {"image": f"/data/upload/7/{rng.integers(1 << 31):08x}-{item.item_id}.jpg", "item_id": item.item_id}


# --- COCO ------------------------------------------------------------------------------------------------------


def coco(
    rng: np.random.Generator, spec: CaseSpec, work: _Work, kinds: tuple[str, ...], classes: dict[str, list[str]]
) -> tuple[dict[str, bytes], FileTruth, list[dict[str, str]]]:
    key = f"exports/{spec.day}/instances_vendor_b.json"
    truth = FileTruth(key, "coco")
    labels: list[dict[str, str]] = []
    names = classes["bbox"] + classes["polygon"]
    categories = [{"id": n + 1, "name": c, "supercategory": "road"} for n, c in enumerate(names)]
    category_ids = {c["name"]: c["id"] for c in categories}
    per_annotation = len(work.annotators) > 1
    contributor = "coco-0@vendor-b.example"
    drop_segmentation = rng.random() < 0.5  # box-only COCO files often omit the key entirely
    images, annotations = [], []
    for image_id, (item, done) in enumerate(work.by_item(), start=1):
        images.append(
            {
                "id": image_id,
                "file_name": f"images/{item.item_id}.jpg",
                "width": item.width,
                "height": item.height,
                "license": 1,
                "date_captured": f"{spec.day} 08:00:00",
            }
        )
        for annotator, objects in done:
            who = f"{annotator}@vendor-b.example" if per_annotation else contributor
            for obj in objects:
                record: dict = {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": category_ids[obj.label],
                    "iscrowd": 0,
                }
                if obj.kind == "bbox":
                    x, y, w, h = obj.box
                    record.update(bbox=[round(v, 2) for v in (x, y, w, h)], area=round(w * h, 2))
                    if not drop_segmentation:
                        record["segmentation"] = []
                else:
                    pts = np.asarray(obj.points).reshape(-1, 2)
                    (x0, y0), (x1, y1) = pts.min(axis=0), pts.max(axis=0)
                    record.update(
                        bbox=[round(float(v), 2) for v in (x0, y0, x1 - x0, y1 - y0)],
                        segmentation=[[round(p, 2) for p in obj.points]],
                        area=round(float((x1 - x0) * (y1 - y0)) * 0.9, 2),
                    )
                if per_annotation:
                    record["annotator_id"] = who
                annotations.append(record)
                labels.append(_judgment(item.item_id, who, obj))
    truth.rows = len(annotations)
    document = {
        "info": {
            "description": "driving scenes, vendor B",
            "contributor": contributor,
            "version": "1.0",
            "year": int(spec.day[:4]),
            "date_created": spec.day,
        },
        "licenses": [{"id": 1, "name": "internal", "url": ""}],
        "images": images,
        "annotations": annotations,
        "categories": categories,
    }
    return {key: json.dumps(document).encode()}, truth, labels


# --- CVAT ------------------------------------------------------------------------------------------------------


def _cvat_labels(classes: dict[str, list[str]], kinds: tuple[str, ...]) -> list[str]:
    types = {"classification": "tag", "bbox": "rectangle", "polygon": "polygon"}
    lines = ["<labels>"]
    lines += [
        f"<label><name>{name}</name><color>#33ddff</color><type>{types[kind]}</type><attributes></attributes></label>"
        for kind in kinds
        for name in classes[kind]
    ]
    lines.append("</labels>")
    return lines


def cvat(
    rng: np.random.Generator, spec: CaseSpec, work: _Work, kinds: tuple[str, ...], classes: dict[str, list[str]]
) -> tuple[dict[str, bytes], FileTruth, list[dict[str, str]]]:
    key = f"exports/{spec.day}/annotations_cvat.xml"
    truth = FileTruth(key, "cvat")
    labels: list[dict[str, str]] = []
    project = len(work.annotators) > 1
    task_ids = {a: 300 + n for n, a in enumerate(work.annotators)}
    updated = _stamp(spec.day, rng).strftime("%Y-%m-%d %H:%M:%S.%f+00:00")
    owner_only = not project and rng.random() < 0.5  # a task nobody was assigned: its owner labeled it
    people = {a: f"{a.replace('-', '_')}" for a in work.annotators}

    def task(annotator: str) -> list[str]:
        assignee = "" if owner_only else f"<assignee><username>{people[annotator]}</username><email></email></assignee>"
        owner = "lead" if not owner_only else people[annotator]
        return [
            f"<task><id>{task_ids[annotator]}</id><name>drive {spec.day} {annotator}</name>",
            f"<size>{len(work.items)}</size><mode>annotation</mode><overlap>0</overlap><bugtracker></bugtracker>",
            f"<created>{spec.day} 06:00:00.000000+00:00</created><updated>{updated}</updated>",
            "<subset>default</subset><start_frame>0</start_frame>",
            f"<stop_frame>{len(work.items) - 1}</stop_frame><frame_filter></frame_filter>",
            f"<owner><username>{owner}</username><email></email></owner>{assignee}",
            *([] if project else _cvat_labels(classes, kinds)),
            "</task>",
        ]

    lines = ['<?xml version="1.0" encoding="utf-8"?>', "<annotations>", "  <version>1.1</version>", "  <meta>"]
    if project:
        lines += [
            "<project><id>12</id><name>driving</name>",
            f"<created>{spec.day} 05:00:00+00:00</created>",
            f"<updated>{updated}</updated>",
            "<owner><username>lead</username><email></email></owner>",
            "<assignee></assignee>",
            *_cvat_labels(classes, kinds),
            "<tasks>",
        ]
        for annotator in work.annotators:
            lines += task(annotator)
        lines += ["</tasks>", "</project>"]
    else:
        lines += task(work.annotators[0])
    lines += [f"<dumped>{spec.day} 18:02:11.000000+00:00</dumped>", "  </meta>"]
    image_id = 0
    for item, done in work.by_item():
        for annotator, objects in done:
            task_attr = f' task_id="{task_ids[annotator]}" subset="default"' if project else ""
            lines.append(
                f'  <image id="{image_id}" name="{item.item_id}.jpg" width="{item.width}" '
                f'height="{item.height}"{task_attr}>'
            )
            image_id += 1
            for obj in objects:
                lines.append("    " + _cvat_shape(rng, obj))
                labels.append(_judgment(item.item_id, people[annotator], obj))
            if spec.other_records and rng.random() < 0.2:
                x0, y0 = item.width * 0.1, item.height * 0.9
                lines.append(
                    f'    <polyline label={quoteattr(classes["bbox"][0])} source="manual" occluded="0" '
                    f'points="{x0:.2f},{y0:.2f};{x0 + 80:.2f},{y0 - 20:.2f}" z_order="0"></polyline>'
                )
                lines.append(
                    f'    <points label={quoteattr(classes["bbox"][0])} source="manual" occluded="0" '
                    f'points="{x0:.2f},{y0:.2f}" z_order="0"></points>'
                )
                truth.other += 2
            lines.append("  </image>")
            truth.rows += len(objects)
    lines.append("</annotations>")
    return {key: "\n".join(lines).encode()}, truth, labels


def _cvat_shape(rng: np.random.Generator, obj: _Object) -> str:
    if obj.kind == "classification":
        return f'<tag label={quoteattr(obj.label)} source="manual"></tag>'
    occluded = int(rng.random() < 0.2)
    if obj.kind == "bbox":
        x, y, w, h = obj.box
        return (
            f'<box label={quoteattr(obj.label)} source="manual" occluded="{occluded}" xtl="{x:.2f}" '
            f'ytl="{y:.2f}" xbr="{x + w:.2f}" ybr="{y + h:.2f}" z_order="0"></box>'
        )
    pts = ";".join(f"{x:.2f},{y:.2f}" for x, y in np.asarray(obj.points).reshape(-1, 2))
    return f'<polygon label={quoteattr(obj.label)} source="manual" occluded="0" points="{pts}" z_order="0"></polygon>'


# --- YOLO ------------------------------------------------------------------------------------------------------


def yolo(
    rng: np.random.Generator, spec: CaseSpec, work: _Work, kinds: tuple[str, ...], classes: dict[str, list[str]]
) -> tuple[dict[str, bytes], FileTruth, list[dict[str, str]]]:
    names = classes["bbox"] + classes["polygon"]
    darknet = spec.yolo_class_list == "obj.names"
    members: dict[str, bytes] = {spec.yolo_class_list: ("\n".join(names) + "\n").encode()}
    if darknet:
        members["obj.data"] = f"classes = {len(names)}\ntrain = data/train.txt\nnames = data/obj.names\n".encode()
    labels: list[dict[str, str]] = []
    rows = 0
    listed = []
    for item, done in work.by_item():
        lines = []
        for _annotator, objects in done:  # YOLO has one (unnamed) annotator
            for obj in objects:
                lines.append(_yolo_line(item, obj, names.index(obj.label)))
                labels.append(_judgment(item.item_id, "unknown", obj))
        folder = "obj_train_data" if darknet else "labels/train"
        members[f"{folder}/{item.item_id}.txt"] = ("\n".join(lines) + ("\n" if lines else "")).encode()
        listed.append(f"data/obj_train_data/{item.item_id}.jpg")
        rows += len(lines)
    if darknet:
        members["train.txt"] = ("\n".join(listed) + "\n").encode()
    if spec.yolo_packaging == "zip":
        key = f"exports/{spec.day}/partner_yolo_export.zip"
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for name, data in members.items():
                archive.writestr(zipfile.ZipInfo(name, date_time=(2024, 6, 1, 0, 0, 0)), data)
        files = {key: buffer.getvalue()}
    else:
        key = f"exports/{spec.day}/partner_yolo"
        files = {f"{key}/{name}": data for name, data in members.items()}
    return files, FileTruth(key, "yolo", rows=rows), labels


def _yolo_line(item: _Item, obj: _Object, class_id: int) -> str:
    if obj.kind == "bbox":
        x, y, w, h = obj.box
        return (
            f"{class_id} {(x + w / 2) / item.width:.6f} {(y + h / 2) / item.height:.6f} "
            f"{w / item.width:.6f} {h / item.height:.6f}"
        )
    pts = np.asarray(obj.points).reshape(-1, 2) / [item.width, item.height]
    return f"{class_id} " + " ".join(f"{v:.6f}" for v in pts.ravel())


# --- long table ------------------------------------------------------------------------------------------------


def table(
    rng: np.random.Generator, spec: CaseSpec, work: _Work, kinds: tuple[str, ...], classes: dict[str, list[str]]
) -> tuple[dict[str, bytes], FileTruth, list[dict[str, str]]]:
    key = f"exports/{spec.day}/crowd_judgments.csv"
    crowd_names = rng.random() < 0.5  # a crowd platform's column names instead of the canonical ones
    header = ["image_id", "worker_id", "answer"] if crowd_names else ["item_id", "annotator_id", "label"]
    rows: list[dict[str, object]] = []
    labels: list[dict[str, str]] = []
    for item, done in work.by_item():
        for annotator, objects in done:
            who = annotator.replace("table-", "w")
            for obj in objects:
                row: dict[str, object] = {
                    header[0]: item.item_id,
                    header[1]: who,
                    header[2]: obj.label,
                    "x": "",
                    "y": "",
                    "w": "",
                    "h": "",
                    "annotated_at": _iso_z(_stamp(spec.day, rng)),
                    "batch": "b7",
                }
                if obj.kind == "bbox":
                    row.update(zip("xywh", (round(v, 2) for v in obj.box), strict=True))
                rows.append(row)
                labels.append(_judgment(item.item_id, who, obj))
    frame = pd.DataFrame(rows, columns=[*header, "x", "y", "w", "h", "annotated_at", "batch"])
    return {key: frame.to_csv(index=False).encode()}, FileTruth(key, "table", rows=len(frame)), labels


WRITERS = {"label_studio": label_studio, "coco": coco, "cvat": cvat, "yolo": yolo, "table": table}


# --- item catalog ----------------------------------------------------------------------------------------------


def _catalog(rng: np.random.Generator, spec: CaseSpec, items: list[_Item]) -> pd.DataFrame:
    n = len(items)
    return pd.DataFrame(
        {
            "item_id": [i.item_id for i in items],
            "uri": [f"s3://fleet-camera/raw/{i.item_id}.jpg" for i in items],
            "width": [i.width for i in items],
            "height": [i.height for i in items],
            "captured_at": [_iso_z(_stamp(spec.day, rng, before_hours=20)) for _ in items],
            "lighting": rng.choice(["day", "dusk", "night"], n).tolist(),
            "weather": rng.choice(["clear", "rain"], n).tolist(),
            "device": rng.choice(["cam-a", "cam-b"], n).tolist(),
            "region": rng.choice(["north", "south"], n).tolist(),
            "session_id": [f"sess-{spec.seed % 1000:03d}-{k // 4:02d}" for k in range(n)],
        }
    )


# --- hypothesis ------------------------------------------------------------------------------------------------


@st.composite
def case_specs(draw: st.DrawFn, formats: tuple[str, ...] = FORMATS, day: str = "2024-06-03") -> CaseSpec:
    """A spec for one day: some formats, the kinds they may carry, annotators, extra records, a seed."""
    chosen = tuple(draw(st.lists(st.sampled_from(formats), min_size=1, max_size=len(formats), unique=True)))
    possible = sorted({k for f in chosen for k in FORMAT_KINDS[f]}, key=KINDS.index)
    kinds = tuple(sorted(draw(st.lists(st.sampled_from(possible), min_size=1, unique=True)), key=KINDS.index))
    return CaseSpec(
        name="drawn",
        formats=chosen,
        kinds=kinds,
        day=day,
        n_items=draw(st.integers(1, 15)),
        n_annotators=draw(st.integers(1, 4)),
        predictions=draw(st.booleans()),
        cancelled=draw(st.booleans()),
        updated=draw(st.sampled_from(UPDATE_ORDERS)),
        other_records=draw(st.booleans()),
        ls_users=draw(st.sampled_from(["id", "email"])),
        yolo_packaging=draw(st.sampled_from(["zip", "folder"])),
        yolo_class_list=draw(st.sampled_from(["obj.names", "classes.txt"])),
        seed=draw(st.integers(0, 10_000)),
    )
