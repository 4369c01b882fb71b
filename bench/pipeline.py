"""The nightly pipeline end to end, at scale: landing files to a published snapshot and a drift report.

`python -m bench.pipeline` (default 1,000,000 annotations; `--annotations 100000 1000000 5000000` for the
growth). For each size a fresh process generates a landing zone — N annotations (N/5 items × 5 of 100
annotators, half the items scene-classified, half with one box each; the guideline's 10 classes), the item
catalog, 2 % gold, and 1,000,000 production rows for the day and for the day before (the drift reference,
ingested before the clock starts) — and a second fresh process runs the nightly job for the day through a
real Dagster materialization on a local warehouse. Per asset it reports wall time, rows per second and peak
memory (RSS sampled every 20 ms), and splits the asset's time into compute, IO manager and Dagster; beside
the total it prints the floor, pyarrow alone reading the landing files and writing every output table, and the
same night run again through Dagster's CLI (`dagster job execute -j nightly_job`) on a fresh warehouse.
Results are also written to bench/results/pipeline-<N>.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

DAY, REFERENCE_DAY, START_DATE = "2024-06-03", "2024-06-02", "2024-06-01"
SCENES = ["urban", "highway", "residential"]
OBJECTS = ["car", "truck", "bus", "pedestrian", "cyclist", "traffic_light"]
SLICES = {
    "lighting": ["day", "dusk", "night"],
    "weather": ["clear", "rain", "fog"],
    "device": ["cam_a", "cam_b", "cam_c"],
    "region": ["eu", "us", "apac"],
}
RESULTS = Path(__file__).resolve().parent / "results"
QUIET = {
    "loggers": {"console": {"config": {"log_level": "WARNING"}}}
}  # a materialization's run config: no step chatter
SPARE_ANNOTATORS = 5  # per item, annotators kept aside to judge it again on a later day (bench.nights)


@dataclass
class Day:
    """One day's landing frames, and the truth they were drawn from (so bench.nights can judge the items again)."""

    items: pd.DataFrame
    annotations: pd.DataFrame
    gold: pd.DataFrame
    detections: pd.DataFrame
    truth: pd.DataFrame  # per item: boxed, scene, object, box x/y/w/h, spare0.. (annotators who did not judge it)
    skill: np.ndarray  # per annotator: the probability of a correct label


def day_frames(rng: np.random.Generator, day: str, annotations: int, skill: np.ndarray | None = None) -> Day:
    """The annotations, item catalog, gold and detections of one day: N/5 items x 5 of 100 annotators.

    ``skill`` fixes the annotators' accuracies across days (drawn here when None), so a multi-day history
    has the same annotators every day, as Dawid-Skene over all days assumes.
    """
    per_item, n_annotators = 5, 100
    n_items = annotations // per_item
    item_ids = np.char.add(f"img-{day}-", np.char.zfill(np.arange(n_items).astype(str), 7))
    width, height = 1920.0, 1080.0
    items = pd.DataFrame(
        {
            "item_id": item_ids,
            "uri": np.char.add("s3://acme-raw/", np.char.add(item_ids, ".jpg")),
            "width": width,
            "height": height,
            "captured_at": f"{day}T12:00:00+00:00",
            "session_id": np.char.add("s", (np.arange(n_items) // 20).astype(str)),
            **{k: rng.choice(v, n_items) for k, v in SLICES.items()},
        }
    )
    boxed = np.arange(n_items) % 2 == 1
    skill = rng.uniform(0.75, 0.98, n_annotators) if skill is None else skill
    order = np.argsort(rng.random((n_items, n_annotators)), axis=1)
    who = order[:, :per_item].ravel()
    item = np.repeat(np.arange(n_items), per_item)
    correct = rng.random(len(item)) < skill[who]
    scene_truth, object_truth = rng.integers(0, len(SCENES), n_items), rng.integers(0, len(OBJECTS), n_items)
    scene = np.where(correct, scene_truth[item], rng.integers(0, len(SCENES), len(item)))
    obj = np.where(correct, object_truth[item], rng.integers(0, len(OBJECTS), len(item)))
    x0, y0 = rng.uniform(0, 1500, n_items), rng.uniform(0, 700, n_items)
    w0, h0 = rng.uniform(30, 400, n_items), rng.uniform(30, 350, n_items)
    jitter = rng.normal(0, 3, (4, len(item)))
    is_box = boxed[item]
    frame = pd.DataFrame(
        {
            "item_id": item_ids[item],
            "annotator_id": np.char.add("ann", np.char.zfill(who.astype(str), 3)),
            "label": np.where(is_box, np.asarray(OBJECTS)[obj], np.asarray(SCENES)[scene]),
            "x": np.where(is_box, np.clip(x0[item] + jitter[0], 0, None).round(2), np.nan),
            "y": np.where(is_box, np.clip(y0[item] + jitter[1], 0, None).round(2), np.nan),
            "w": np.where(is_box, (w0[item] + jitter[2]).round(2), np.nan),
            "h": np.where(is_box, (h0[item] + jitter[3]).round(2), np.nan),
            "annotated_at": f"{day}T10:00:00+00:00",
        }
    )
    gold_items = np.flatnonzero(rng.random(n_items) < 0.02)
    gold = pd.DataFrame(
        {
            "item_id": item_ids[gold_items],
            "label": np.where(
                boxed[gold_items],
                np.asarray(OBJECTS)[object_truth[gold_items]],
                np.asarray(SCENES)[scene_truth[gold_items]],
            ),
            **{
                c: np.where(boxed[gold_items], v[gold_items].round(2), np.nan)
                for c, v in (("x", x0), ("y", y0), ("w", w0), ("h", h0))
            },
        }
    )
    # The detector on the labeled box items (one detection each); the rest of the day's traffic is _production's.
    detections = pd.DataFrame(
        {
            "item_id": item_ids[boxed],
            "ts": f"{day}T12:00:00+00:00",
            "model_version": "detector-2.0",
            "predicted_label": np.asarray(OBJECTS)[object_truth[boxed]],
            "confidence": rng.uniform(0.3, 1.0, int(boxed.sum())).round(4),
            "x": x0[boxed].round(2),
            "y": y0[boxed].round(2),
            "w": w0[boxed].round(2),
            "h": h0[boxed].round(2),
            **{k: items.loc[boxed, k].to_numpy() for k in SLICES},
        }
    )
    truth = pd.DataFrame(
        {
            "item_id": item_ids,
            "boxed": boxed,
            "scene": scene_truth,
            "object": object_truth,
            "x": x0,
            "y": y0,
            "w": w0,
            "h": h0,
            **{f"spare{k}": order[:, per_item + k] for k in range(SPARE_ANNOTATORS)},
        }
    )
    return Day(items, frame, gold, detections, truth, skill)


def generate(root: Path, annotations: int, production_rows: int = 1_000_000, seed: int = 3) -> dict[str, int]:
    """Write the landing zone for DAY (and REFERENCE_DAY's production) under ``root``."""
    rng = np.random.default_rng(seed)
    day = day_frames(rng, DAY, annotations)
    write = _writer(root)
    write(f"items/{DAY}/items.csv", day.items)
    half = len(day.annotations) // 2
    write(f"exports/{DAY}/vendor_a.csv", day.annotations.iloc[:half])
    write(f"exports/{DAY}/vendor_b.csv", day.annotations.iloc[half:])
    write(f"gold/{DAY}/gold.csv", day.gold)
    write(f"production/{DAY}/detections_labeled_items.csv", day.detections)
    for production_day, shift in ((REFERENCE_DAY, 0.0), (DAY, 0.3)):
        n = production_rows - (len(day.detections) if production_day == DAY else 0)
        write(f"production/{production_day}/predictions.csv", _production(rng, production_day, n, shift))
    return {
        "items": len(day.items),
        "annotations": len(day.annotations),
        "gold": len(day.gold),
        "production": production_rows,
    }


def _production(rng: np.random.Generator, day: str, n: int, shift: float) -> pd.DataFrame:
    night = [0.6 - shift, 0.2, 0.2 + shift]
    return pd.DataFrame(
        {
            "item_id": np.char.add(f"prod-{day}-", np.arange(n).astype(str)),
            "ts": f"{day}T12:00:00+00:00",
            "model_version": "detector-2.0",
            "predicted_label": rng.choice(OBJECTS, n),
            "confidence": rng.uniform(0.2, 1.0, n).round(4),
            "brightness": rng.normal(120 - 40 * shift, 25, n).round(2),
            "blur": rng.gamma(2.0, 2.0, n).round(3),
            "speed_kmh": rng.uniform(0, 120, n).round(1),
            "lighting": rng.choice(SLICES["lighting"], n, p=night),
            "weather": rng.choice(SLICES["weather"], n),
            "device": rng.choice(SLICES["device"], n),
            "region": rng.choice(SLICES["region"], n),
        }
    )


def _writer(root: Path):
    import pyarrow as pa
    import pyarrow.csv as pacsv

    def write(key: str, frame: pd.DataFrame) -> None:
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        pacsv.write_csv(pa.Table.from_pandas(frame, preserve_index=False), path)

    return write


class Sampler(threading.Thread):
    """RSS of this process every 20 ms, so each asset's peak memory can be read off its time window; with it the
    process's system time and minor page faults so far, so each asset's share of them can be read too (on a
    virtual machine a first touch of memory is dear: it is most of the system time)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.samples: list[tuple[float, int]] = []
        self.usage: list[tuple[float, float, int]] = []  # time, system seconds, minor faults
        self.running = True

    def run(self) -> None:
        page = os.sysconf("SC_PAGE_SIZE")
        with open("/proc/self/statm") as statm:  # Linux: resident pages are the second field
            while self.running:
                statm.seek(0)
                now = time.time()
                self.samples.append((now, int(statm.read().split()[1]) * page))
                usage = resource.getrusage(resource.RUSAGE_SELF)
                self.usage.append((now, usage.ru_stime, usage.ru_minflt))
                time.sleep(0.02)

    def peak(self, start: float, end: float) -> int:
        return max((rss for t, rss in self.samples if start <= t <= end + 0.02), default=0)

    def spent(self, start: float, end: float) -> tuple[float, int]:
        """System seconds and minor faults between the samples nearest ``start`` and ``end``."""
        inside = [(system, faults) for t, system, faults in self.usage if start - 0.02 <= t <= end + 0.02]
        if len(inside) < 2:
            return 0.0, 0
        return inside[-1][0] - inside[0][0], inside[-1][1] - inside[0][1]


def settings(landing: Path, warehouse: Path, start_date: str = START_DATE) -> dict[str, str]:
    """The environment that points the code location at a bench landing zone and warehouse."""
    return {
        "LABELOPS_LANDING": str(landing),
        "LABELOPS_WAREHOUSE": str(warehouse),
        "LABELOPS_START_DATE": start_date,
        "LABELOPS_SETTLE_SECONDS": "0",
    }


def configure(landing: Path, warehouse: Path, start_date: str = START_DATE) -> None:
    """Point this process's code location at a bench landing zone and warehouse; before pipelines.definitions is
    imported, since the settings and the daily partitions are read once, when it loads."""
    os.environ.update(settings(landing, warehouse, start_date))


def run_cli(
    landing: Path,
    warehouse: Path,
    home: Path,
    day: str = DAY,
    reference_day: str = REFERENCE_DAY,
    start_date: str = START_DATE,
) -> tuple[float, float]:
    """Seconds and peak RSS (MB) of the nightly job through Dagster's CLI (`dagster job execute`), on a fresh
    instance (``home``, created here) and the given warehouse: the way an engineer or a schedule runs it, process
    start, code location load and Great Expectations' import included. The drift reference is ingested first, off
    the clock.

    The peak is the run's own: `materialize` (the in-process run) keeps every step's output in memory for its
    result, so its process holds each asset's frames to the end; a run launched by the CLI, a schedule or the
    UI does not."""
    home.mkdir()
    env = {**os.environ, **settings(landing, warehouse, start_date), "DAGSTER_HOME": str(home)}
    dagster = [str(Path(sys.executable).with_name("dagster"))]
    location = ["-m", "pipelines.definitions"]
    reference = ["asset", "materialize", *location, "--select", "production_predictions", "--partition", reference_day]
    subprocess.run(dagster + reference, env=env, check=True, capture_output=True)
    nightly = ["job", "execute", *location, "-j", "nightly_job", "--tags", json.dumps({"dagster/partition": day})]
    # a parent of its own, so the peak of its children is the CLI's (not this process's earlier workers')
    measure = (
        "import json, resource, subprocess, sys, time; start = time.perf_counter(); "
        "subprocess.run(sys.argv[1:], check=True, capture_output=True); seconds = time.perf_counter() - start; "
        "print(json.dumps([seconds, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", measure, *dagster, *nightly], env=env, check=True, capture_output=True, text=True
    )
    seconds, peak_mb = json.loads(done.stdout)
    return seconds, peak_mb


def _cli_paths(root: Path) -> tuple[Path, Path, Path]:
    """A generated ROOT's landing zone, and where its CLI run keeps its warehouse and instance."""
    return root / "landing", root / "warehouse-cli", root / "dagster-home-cli"


def run_pipeline(
    landing: Path, warehouse: Path, day: str = DAY, reference_day: str = REFERENCE_DAY, start_date: str = START_DATE
) -> dict:
    """The nightly job for ``day`` in this process; returns per-asset timings from the run's events."""
    configure(landing, warehouse, start_date)
    from dagster import AssetSelection, DagsterEventType, DagsterInstance, materialize

    from pipelines.definitions import NIGHTLY_ASSETS, defs
    from resources.io_manager import ParquetIOManager

    intervals: list[tuple[str, str, float, float]] = []

    class TimedIOManager(ParquetIOManager):
        def handle_output(self, context, obj):
            start = time.time()
            super().handle_output(context, obj)
            intervals.append((context.asset_key.to_user_string(), "write", start, time.time()))

        def load_input(self, context):  # lists the days; each day's table is read lazily by _read
            start = time.time()
            value = super().load_input(context)
            intervals.append((context.asset_key.to_user_string(), "list", start, time.time()))
            return value

        def _read(self, key, **columns):
            start = time.time()
            value = super()._read(key, **columns)
            intervals.append((key, "read", start, time.time()))
            return value

    resources = dict(defs.resources)
    resources["io_manager"] = TimedIOManager(storage=resources["storage"])
    instance = DagsterInstance.ephemeral()
    # the drift reference: yesterday's production, ingested before the clock starts
    assert materialize(
        list(defs.assets),
        selection=AssetSelection.assets("production_predictions"),
        partition_key=reference_day,
        resources=resources,
        instance=instance,
        run_config=QUIET,
    ).success
    import great_expectations  # noqa: F401  imported once per process; not counted as pipeline time (bench.validate shows it)

    intervals.clear()
    result, total, sampler = sampled_run(list(defs.assets), NIGHTLY_ASSETS, day, resources, instance)
    events = instance.all_logs(result.run_id)
    steps: dict[str, dict] = {}
    for record in events:
        event = record.dagster_event
        if event is None or not event.step_key:
            continue
        step = steps.setdefault(event.step_key, {"outputs": []})
        if event.event_type == DagsterEventType.STEP_START:
            step["start"] = record.timestamp
        elif event.event_type in (DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE):
            step["end"] = record.timestamp
        elif event.event_type == DagsterEventType.STEP_INPUT:
            step["inputs_done"] = record.timestamp
        elif event.event_type == DagsterEventType.STEP_OUTPUT:
            step["outputs"].append(record.timestamp)
    rows = {}
    for materialization in result.get_asset_materialization_events():
        m = materialization.event_specific_data.materialization
        count = m.metadata.get("dagster/row_count")
        rows[materialization.step_key] = rows.get(materialization.step_key, 0) + (int(count.value) if count else 0)
    report = []
    for key, step in sorted(steps.items(), key=lambda kv: kv[1]["start"]):
        wall = step["end"] - step["start"]
        inside = [(s, e) for _, _, s, e in intervals if step["start"] <= s <= step["end"]]
        io = sum(e - s for s, e in inside)
        compute_start = step.get("inputs_done", step["start"])
        compute_end = max(step["outputs"]) if step["outputs"] else step["end"]
        system, faults = sampler.spent(step["start"], step["end"])
        compute = max(
            0.0,
            (compute_end - compute_start) - sum(e - s for s, e in inside if s >= compute_start and e <= compute_end),
        )
        report.append(
            {
                "asset": key,
                "wall_s": wall,
                "compute_s": compute,
                "io_manager_s": io,
                "dagster_s": max(0.0, wall - compute - io),
                "rows": rows.get(key, 0),
                "peak_rss_mb": sampler.peak(step["start"], step["end"]) / 2**20,
                "system_s": system,
                "page_faults": faults,
            }
        )
    system, faults = sampler.spent(sampler.usage[0][0], sampler.usage[-1][0]) if sampler.usage else (0.0, 0)
    return {
        "total_s": total,
        "steps": report,
        "peak_rss_mb": max(rss for _, rss in sampler.samples) / 2**20,
        "system_s": system,
        "page_faults": faults,
        "outputs": [str(p) for p in (warehouse / "tables").rglob(f"{day}.parquet")]
        + [str(p) for p in (warehouse / "tables").rglob("all.parquet")],
    }


def sampled_run(assets: list, selection: Any, day: str, resources: dict, instance: Any) -> tuple[Any, float, Sampler]:
    """One materialization of ``selection`` for ``day`` (it must succeed): the result, its wall time, and the
    process's RSS sampled while it ran."""
    from dagster import materialize

    sampler = Sampler()
    sampler.start()
    start = time.time()
    result = materialize(
        assets, selection=selection, partition_key=day, resources=resources, instance=instance, run_config=QUIET
    )
    total = time.time() - start
    sampler.running = False
    assert result.success
    return result, total, sampler


def floor(landing: Path, outputs: list[str]) -> float:
    """pyarrow alone: read every landing file of the day, write every output table once."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    tables = [pq.read_table(p) for p in outputs]
    start = time.perf_counter()
    for path in sorted(landing.rglob("*.csv")):
        if REFERENCE_DAY not in str(path):
            pacsv.read_csv(path)
    with tempfile.TemporaryDirectory() as scratch:
        for n, table in enumerate(tables):
            pq.write_table(table, f"{scratch}/{n}.parquet", compression="zstd")
    return time.perf_counter() - start


def measure(annotations: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="labelops-bench-") as scratch:
        root = Path(scratch)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "bench.pipeline",
                "--generate",
                str(root / "landing"),
                "--annotations",
                str(annotations),
            ],
            check=True,
        )
        worker = subprocess.run(
            [sys.executable, "-m", "bench.pipeline", "--run", str(root)], check=True, capture_output=True, text=True
        )
        measured = json.loads(worker.stdout.strip().splitlines()[-1])
        measured["floor_s"] = floor(root / "landing", measured.pop("outputs"))
        measured["cli_s"], measured["cli_peak_rss_mb"] = run_cli(*_cli_paths(root))
    measured["annotations"] = annotations
    return measured


def show(m: dict) -> None:
    print(
        f"\n{m['annotations']:,} annotations: {m['total_s']:.1f} s wall, peak RSS {m['peak_rss_mb']:,.0f} MB; "
        f"pyarrow floor {m['floor_s']:.1f} s (pipeline / pure I/O = {m['total_s'] / m['floor_s']:.1f}); "
        f"through Dagster's CLI {m['cli_s']:.1f} s ({m['cli_s'] / m['floor_s']:.1f} x the floor), "
        f"peak RSS {m['cli_peak_rss_mb']:,.0f} MB ({m['cli_peak_rss_mb'] / m['annotations'] * 1e3:,.2f} GB per million)"
    )
    print(
        f"{'asset':<34}{'wall s':>8}{'compute':>9}{'IO mgr':>8}{'dagster':>9}{'overhead':>9}{'rows':>11}{'rows/s':>12}{'peak MB':>9}"
    )
    for s in m["steps"]:
        overhead = (s["io_manager_s"] + s["dagster_s"]) / s["wall_s"] if s["wall_s"] else 0
        rate = s["rows"] / s["wall_s"] if s["wall_s"] and s["rows"] else 0
        print(
            f"{s['asset']:<34}{s['wall_s']:>8.2f}{s['compute_s']:>9.2f}{s['io_manager_s']:>8.2f}{s['dagster_s']:>9.2f}"
            f"{overhead:>9.0%}{s['rows']:>11,}{rate:>12,.0f}{s['peak_rss_mb']:>9,.0f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--annotations", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--generate", help=argparse.SUPPRESS)
    parser.add_argument("--run", help=argparse.SUPPRESS)
    parser.add_argument("--cli", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.cli:  # the CLI run alone, on a landing zone --generate wrote (ROOT/landing)
        print(json.dumps(dict(zip(("cli_s", "cli_peak_rss_mb"), run_cli(*_cli_paths(Path(args.cli))), strict=True))))
        return
    if args.generate:
        print(generate(Path(args.generate), args.annotations[0]), file=sys.stderr)
        return
    if args.run:
        root = Path(args.run)
        print(json.dumps(run_pipeline(root / "landing", root / "warehouse")))
        return
    RESULTS.mkdir(exist_ok=True)
    runs = []
    for n in args.annotations:
        runs.append(measure(n))
        show(runs[-1])
        (RESULTS / f"pipeline-{n}.json").write_text(json.dumps(runs[-1], indent=1))
    if len(runs) > 1:
        for a, b in itertools.pairwise(runs):
            print(
                f"{a['annotations']:,} -> {b['annotations']:,}: time x{b['total_s'] / a['total_s']:.2f} for data x{b['annotations'] / a['annotations']:.0f}"
            )


if __name__ == "__main__":
    main()
