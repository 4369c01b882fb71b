"""Ingest throughput per export format: parse + canonicalize, rows per second.

Run with `make bench` (or `python -m bench.ingest --rows 1000000`). Each format is
written once from the same synthetic boxes, then read back through labelops'
parser the way `label_exports` reads it; the pyarrow CSV read of the long table
is printed beside it as the I/O floor. Label Studio is read twice: as `label_exports`
reads it (the Arrow path), and by the typed reader alone, which reads the exports the
Arrow path leaves to it.
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import time
from collections.abc import Callable
from datetime import date

import numpy as np
import pandas as pd
import pyarrow.csv as pacsv

from labelops.formats import label_studio_typed, parse_file
from labelops.formats.common import Parsed
from labelops.ingest import canonical_annotations


def synthetic(rows: int, seed: int = 7) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    items = rows // 5
    return pd.DataFrame(
        {
            "item_id": np.char.add("img-", (np.arange(rows) // 5).astype(str)),
            "annotator_id": np.char.add("ann", rng.integers(0, 100, rows).astype(str)),
            "label": rng.choice(["car", "truck", "bus", "pedestrian", "cyclist"], rows),
            "x": rng.uniform(0, 1500, rows).round(2),
            "y": rng.uniform(0, 800, rows).round(2),
            "w": rng.uniform(5, 300, rows).round(2),
            "h": rng.uniform(5, 200, rows).round(2),
        }
    ).assign(items=items)


def as_csv(frame: pd.DataFrame) -> bytes:
    return frame.drop(columns="items").to_csv(index=False).encode()


def as_coco(frame: pd.DataFrame) -> bytes:
    items = sorted(frame["item_id"].unique())
    image_ids = {item: n for n, item in enumerate(items, start=1)}
    labels = sorted(frame["label"].unique())
    document = {
        "images": [
            {"id": i, "file_name": f"{item}.jpg", "width": 1920, "height": 1080} for item, i in image_ids.items()
        ],
        "categories": [{"id": n, "name": name} for n, name in enumerate(labels, start=1)],
        "annotations": [
            {
                "id": n,
                "image_id": image_ids[item],
                "category_id": labels.index(label) + 1,
                "bbox": [x, y, w, h],
                "iscrowd": 0,
            }
            for n, (item, label, x, y, w, h) in enumerate(
                zip(frame["item_id"], frame["label"], frame["x"], frame["y"], frame["w"], frame["h"], strict=True),
                start=1,
            )
        ],
    }
    return json.dumps(document).encode()


def as_label_studio(frame: pd.DataFrame) -> bytes:
    """One task per item, one annotation per annotator of it, in order of first appearance (as ``groupby(sort=False)``
    would give them; a plain pass over the rows, since a million boxes in groups took minutes)."""
    columns = [frame[c].tolist() for c in ("item_id", "annotator_id", "label", "x", "y", "w", "h")]
    grouped: dict[str, dict[str, list[int]]] = {}
    for n, (item, annotator) in enumerate(zip(columns[0], columns[1], strict=True)):
        grouped.setdefault(item, {}).setdefault(annotator, []).append(n)
    _, _, labels, xs, ys, ws, hs = columns
    tasks = []
    for t, (item, by_annotator) in enumerate(grouped.items(), start=1):
        annotations = [
            {
                "id": t * 100 + a,
                "completed_by": annotator,
                "result": [
                    {
                        "id": f"r{n}",
                        "type": "rectanglelabels",
                        "original_width": 1920,
                        "original_height": 1080,
                        "value": {
                            "x": xs[row] / 19.2,
                            "y": ys[row] / 10.8,
                            "width": ws[row] / 19.2,
                            "height": hs[row] / 10.8,
                            "rotation": 0,
                            "rectanglelabels": [labels[row]],
                        },
                    }
                    for n, row in enumerate(rows)
                ],
            }
            for a, (annotator, rows) in enumerate(by_annotator.items(), start=1)
        ]
        tasks.append({"id": t, "data": {"image": f"/data/upload/{item}.jpg"}, "annotations": annotations})
    return json.dumps(tasks).encode()


def generated(write: Callable[[pd.DataFrame], bytes], frame: pd.DataFrame) -> bytes:
    """The export written with the cycle collector paused: it walks the millions of new dicts again and
    again otherwise (a million Label Studio boxes took 7.5 minutes to write, 19 s without it)."""
    gc.disable()
    try:
        return write(frame)
    finally:
        gc.enable()


def typed_reader(name: str, data: bytes) -> Parsed:
    """The typed Label Studio reader alone: what an export the Arrow path leaves to it (regions with attribute
    results, say) costs."""
    gc.disable()  # as parse_file reads JSON
    try:
        parsed = label_studio_typed.parse(name, data, {})
    finally:
        gc.enable()
    assert parsed is not None, "the typed reader should read the bench file"
    return parsed


def measure(
    name: str, data: bytes, rows: int, reader: Callable[[str, bytes], Parsed] = parse_file
) -> dict[str, object]:
    start = time.perf_counter()
    parsed = reader(name, data)
    table = canonical_annotations(parsed, f"exports/2024-06-01/{name}", date(2024, 6, 1))
    seconds = time.perf_counter() - start
    assert len(table) == rows, (name, len(table), rows)
    return {
        "format": parsed.format if reader is parse_file else f"{parsed.format} ({reader.__name__})",
        "rows": rows,
        "MB": round(len(data) / 1e6, 1),
        "seconds": round(seconds, 2),
        "rows_per_s": int(rows / seconds),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument(
        "--formats",
        default="csv,coco,label_studio,label_studio_typed",
        help="comma-separated, of csv, coco, label_studio, label_studio_typed (default: all)",
    )
    args = parser.parse_args()
    formats = args.formats.split(",")
    frame = synthetic(args.rows)
    results = []
    csv = as_csv(frame)
    start = time.perf_counter()
    pacsv.read_csv(io.BytesIO(csv))
    floor = time.perf_counter() - start
    if "csv" in formats:
        results.append(measure("crowd.csv", csv, args.rows))
    if "coco" in formats:
        results.append(measure("coco.json", generated(as_coco, frame), args.rows))
    if {"label_studio", "label_studio_typed"} & set(formats):
        label_studio = generated(as_label_studio, frame)
        if "label_studio" in formats:
            results.append(measure("label_studio.json", label_studio, args.rows))
        if "label_studio_typed" in formats:
            results.append(measure("label_studio.json", label_studio, args.rows, typed_reader))
    report = pd.DataFrame(results)
    print(report.to_string(index=False))
    print(f"I/O floor: pyarrow reads the CSV in {floor:.2f} s ({int(args.rows / floor)} rows/s)")


if __name__ == "__main__":
    main()
