"""A production day of many rows through ingest, drift and coverage in bounded memory.

`python -m bench.production --rows 50000000`: writes a landing zone whose day holds ``--rows`` production rows
(bench.pipeline's columns: prediction, confidence, three numeric features, four slices) as CSV files of
``--part-rows`` rows each, generated part by part (never the day in one frame), a reference day of
``--reference-rows`` rows, and a small labeled day (``--annotations``) for the coverage and risk reports' labeled
side. A fresh process then runs real Dagster materializations on a local warehouse: the labeled side first (not
measured), the reference day's production, and then, measured, ``production_predictions`` → ``production_drift``,
``coverage_report`` and ``risk_report`` for the day, with the process's RSS sampled every 20 ms. It prints and
writes to bench/results/production-<rows>.json the wall time and peak RSS per asset and in all.

``--code DIR`` runs the measured process on another checkout's code (e.g. the main branch, for a before/after).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
MEASURED = ["production_predictions", "production_drift", "coverage_report", "risk_report"]


def generate(
    root: Path, later: Path, rows: int, reference_rows: int, part_rows: int, annotations: int
) -> dict[str, float]:
    """The landing zone; production part by part, so generating holds one part at a time. The day's big
    production goes to ``later``: the labeled side is built before it lands."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    from bench.pipeline import DAY, REFERENCE_DAY, _production, _writer, day_frames

    start = time.perf_counter()
    rng = np.random.default_rng(3)
    day = day_frames(rng, DAY, annotations)
    write = _writer(root)
    write(f"items/{DAY}/items.csv", day.items)
    write(f"exports/{DAY}/vendor_a.csv", day.annotations)
    write(f"gold/{DAY}/gold.csv", day.gold)
    write(f"production/{DAY}/detections_labeled_items.csv", day.detections)
    for production_day, total, shift in ((REFERENCE_DAY, reference_rows, 0.0), (DAY, rows, 0.3)):
        folder = (root if production_day == REFERENCE_DAY else later) / "production" / production_day
        folder.mkdir(parents=True, exist_ok=True)
        left = total - (len(day.detections) if production_day == DAY else 0)
        part = 0
        while left > 0:
            n = min(part_rows, left)
            frame = _production(rng, production_day, n, shift)
            frame["item_id"] = np.char.add(f"prod-{production_day}-{part:05d}-", np.arange(n).astype(str))
            pacsv.write_csv(pa.Table.from_pandas(frame, preserve_index=False), folder / f"predictions-{part:05d}.csv")
            left -= n
            part += 1
    size = sum(p.stat().st_size for p in (later / "production" / DAY).iterdir())
    return {"generate_s": time.perf_counter() - start, "day_csv_bytes": size}


def run(landing: Path, later: Path, warehouse: Path) -> dict:
    """In this (fresh) process: the labeled side and the reference day, then the measured production path."""
    from bench.pipeline import DAY, QUIET, REFERENCE_DAY, START_DATE, configure, sampled_run

    configure(landing, warehouse, START_DATE)
    from dagster import AssetSelection, DagsterEventType, DagsterInstance, materialize

    from pipelines.definitions import defs

    instance = DagsterInstance.ephemeral()
    assets = list(defs.assets)
    resources = dict(defs.resources)
    graph = defs.resolve_asset_graph()
    upstream = AssetSelection.assets("coverage_report", "risk_report").upstream().resolve(graph)
    # the labeled side (label_issues reads the day's production: it sees only the labeled items' detections)
    labeled = sorted(
        k.to_user_string() for k in upstream if k.to_user_string() not in {*MEASURED[1:], "dataset_snapshot"}
    )
    timings: dict[str, float] = {}
    for name, selection, day in (
        ("labeled_side_s", AssetSelection.assets(*labeled), DAY),
        ("reference_ingest_s", AssetSelection.assets("production_predictions"), REFERENCE_DAY),
    ):
        start = time.time()
        assert materialize(
            assets, selection=selection, partition_key=day, resources=resources, instance=instance, run_config=QUIET
        ).success, name
        timings[name] = time.time() - start
    for part in sorted((later / "production" / DAY).iterdir()):  # now the day's traffic lands
        part.rename(landing / "production" / DAY / part.name)
    result, total, sampler = sampled_run(assets, AssetSelection.assets(*MEASURED), DAY, resources, instance)
    steps: dict[str, dict[str, float]] = {}
    for record in instance.all_logs(result.run_id):
        event = record.dagster_event
        if event is None or not event.step_key:
            continue
        if event.event_type == DagsterEventType.STEP_START:
            steps.setdefault(event.step_key, {})["start"] = record.timestamp
        elif event.event_type in (DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE):
            steps.setdefault(event.step_key, {})["end"] = record.timestamp
    rows = {}
    for materialization in result.get_asset_materialization_events():
        count = materialization.event_specific_data.materialization.metadata.get("dagster/row_count")
        rows[materialization.step_key] = int(count.value) if count else 0
    drift = defs.load_asset_value("production_drift", partition_key=DAY, instance=instance)
    return {
        **timings,
        "total_s": total,
        "peak_rss_mb": max(rss for _, rss in sampler.samples) / 2**20,
        "steps": [
            {
                "asset": key,
                "wall_s": s["end"] - s["start"],
                "peak_rss_mb": sampler.peak(s["start"], s["end"]) / 2**20,
                "rows": rows.get(key, 0),
            }
            for key, s in sorted(steps.items(), key=lambda kv: kv[1]["start"])
        ],
        "drift": drift[["feature", "method", "statistic", "drifted", "psi", "current_rows"]].to_dict("records"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--reference-rows", type=int, default=2_000_000)
    parser.add_argument("--part-rows", type=int, default=1_000_000, help="rows per landing CSV file")
    parser.add_argument("--annotations", type=int, default=20_000)
    parser.add_argument("--code", type=Path, default=ROOT, help="the checkout whose pipeline is measured")
    parser.add_argument("--tmp", type=Path, default=None, help="where to write the landing zone and warehouse")
    parser.add_argument("--child", nargs=3, metavar=("LANDING", "LATER", "WAREHOUSE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run(*(Path(a) for a in args.child))))
        return
    with tempfile.TemporaryDirectory(prefix="bench-production-", dir=args.tmp) as tmp:
        landing, later, warehouse = Path(tmp) / "landing", Path(tmp) / "later", Path(tmp) / "warehouse"
        generated = generate(landing, later, args.rows, args.reference_rows, args.part_rows, args.annotations)
        print(
            f"generated {args.rows:,} rows ({generated['day_csv_bytes'] / 2**30:.1f} GiB of CSV) in "
            f"{generated['generate_s']:.0f} s",
            flush=True,
        )
        env = {**os.environ, "PYTHONPATH": str(args.code.resolve()), "DAGSTER_HOME": str(Path(tmp) / "dagster")}
        Path(env["DAGSTER_HOME"]).mkdir()
        child = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--child", str(landing), str(later), str(warehouse)],
            env=env,
            cwd=args.code,
            capture_output=True,
            text=True,
            check=False,
        )
        if child.returncode:
            sys.exit(f"the measured process failed:\n{child.stderr[-4000:]}")
        measured = json.loads(child.stdout.strip().splitlines()[-1])
    result = {
        "rows": args.rows,
        "reference_rows": args.reference_rows,
        "part_rows": args.part_rows,
        "annotations": args.annotations,
        "code": str(args.code.resolve()),
        **generated,
        **measured,
    }
    print(f"\n{args.rows:,} production rows: {result['total_s']:.0f} s wall, peak RSS {result['peak_rss_mb']:,.0f} MB")
    print(f"{'asset':<28}{'wall s':>9}{'peak MB':>10}{'rows':>14}")
    for s in result["steps"]:
        print(f"{s['asset']:<28}{s['wall_s']:>9.1f}{s['peak_rss_mb']:>10,.0f}{s['rows']:>14,}")
    for row in result["drift"]:
        print(f"  {row['feature']:<18}{row['method']:<26}{row['statistic']:>10.4f} drifted={row['drifted']}")
    RESULTS.mkdir(exist_ok=True)
    suffix = "" if args.code.resolve() == ROOT else "-" + args.code.resolve().name
    out = RESULTS / f"production-{args.rows}{suffix}.json"
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"written to {out}")


if __name__ == "__main__":
    main()
