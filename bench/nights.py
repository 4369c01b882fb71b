"""Night 60 against night 1: what a warehouse's history adds to the nightly job, per asset.

`python -m bench.nights` (defaults: 100,000 annotations a day, night 60; `--annotations-per-day 10000 --nights 5
--production-per-day 100000` for a quick try). One landing zone holds every day of the run: per day the
bench.pipeline generator's annotations of that day's new items (N/5 items x 5 of the same 100 annotators every day), plus
``--revisit-share`` (10 %) more judgments of items from earlier days, one each, by annotators who had not
judged them yet; the day's item catalog (capture sessions named per day), 2 % gold and 1,000,000 production
rows. Night 60 is the last day, on a warehouse holding the 59 days before it; night 1 is the same day's
landing files (hard links, byte for byte) on a fresh warehouse, with only the previous day's production
ingested before the clock as its drift reference. The two nights differ only in history.

The history is built in its own process, before any clock: the daily assets each night writes and a later
night reads (ingest, validation, agreement, consensus, review queue, coverage, labeling tasks and their
ledger, the judgment ledger) are materialized through Dagster day by day; the label state of the day before
night 60 is folded from all 59 days of validated annotations at once with labelops.state (the pooling the
state tests prove equal to one delivery per day; docs/benchmarks.md compares it with a night-by-night fold)
and written where the IO manager keeps it; then
dataset_snapshot publishes the parent version night 60 diffs against. Each night is then measured in a
fresh process by bench.pipeline's instrumented run, night 60 on a hard-linked copy of the history (so
``--workdir DIR --reuse`` measures both nights again on a kept history after a code change, in minutes), and
once more end to end, as a schedule runs it: `dagster job execute -j nightly_job` in a process of its own on a
fresh instance (process start, code location load, Great Expectations' import, the run's event log), on another
fresh warehouse or copy of the history. Results go to bench/results/nights.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from bench import pipeline

if TYPE_CHECKING:
    from resources.io_manager import ParquetIOManager

SEED = 11
TARGET = 1.5  # the requirement: night 60 costs at most 1.5x night 1 end to end
ANNOTATORS = 100
# What a night of the history writes that a later night reads: ingest, validation and quality; the state
# (item_index, label_votes, label_state) is folded for the last history day at once (fold_state). Left out:
# risk_report, production_drift, quality_report, and coverage_report with labeling_tasks, which read the day's
# state; a later night reads of them only the task ledgers (100 rows a day), which the history lacks.
HISTORY_ASSETS = (
    "item_catalog",
    "label_exports",
    "gold_labels",
    "production_predictions",
    "production_sample",
    "validated_annotations",
    "quarantined_annotations",
    "annotator_agreement",
    "consensus_labels",
    "annotator_scores",
    "label_issues",
    "review_queue",
)


def calendar(nights: int) -> list[str]:
    """The days of the run, the measured night last (bench.pipeline's DAY)."""
    return [d.date().isoformat() for d in pd.date_range(end=pipeline.DAY, periods=nights, freq="D")]


def revisits(
    rng: np.random.Generator, day: str, earlier: pd.DataFrame, visits: np.ndarray, n: int, skill: np.ndarray
) -> pd.DataFrame:
    """``n`` judgments of earlier days' items, one per item: the rounds that pool across days.

    Each is made by the item's next spare annotator (``visits`` counts the rounds an item has had, and is
    updated), who had not judged it, with that annotator's skill, so a judgment is never a copy of one
    already delivered (a copy would be quarantined as a duplicate, which is not what a new round is).
    """
    n = min(n, len(earlier))
    chosen = rng.choice(len(earlier), n, replace=False)
    truth = earlier.iloc[chosen]
    spares = truth[[f"spare{k}" for k in range(pipeline.SPARE_ANNOTATORS)]].to_numpy()
    who = spares[np.arange(n), visits[chosen] % pipeline.SPARE_ANNOTATORS]
    visits[chosen] += 1
    correct = rng.random(n) < skill[who]
    scene = np.where(correct, truth["scene"], rng.integers(0, len(pipeline.SCENES), n))
    obj = np.where(correct, truth["object"], rng.integers(0, len(pipeline.OBJECTS), n))
    jitter = rng.normal(0, 3, (4, n))
    boxed = truth["boxed"].to_numpy()
    return pd.DataFrame(
        {
            "item_id": truth["item_id"].to_numpy(),
            "annotator_id": np.char.add("ann", np.char.zfill(who.astype(str), 3)),
            "label": np.where(boxed, np.asarray(pipeline.OBJECTS)[obj], np.asarray(pipeline.SCENES)[scene]),
            "x": np.where(boxed, np.clip(truth["x"] + jitter[0], 0, None).round(2), np.nan),
            "y": np.where(boxed, np.clip(truth["y"] + jitter[1], 0, None).round(2), np.nan),
            "w": np.where(boxed, (truth["w"] + jitter[2]).round(2), np.nan),
            "h": np.where(boxed, (truth["h"] + jitter[3]).round(2), np.nan),
            "annotated_at": f"{day}T10:00:00+00:00",
        }
    )


def generate(root: Path, days: list[str], annotations: int, revisit_share: float, production_rows: int) -> dict:
    """Every day's landing files under ``root``; the last day's production is shifted (drift to report)."""
    skill = np.random.default_rng(SEED).uniform(0.75, 0.98, ANNOTATORS)
    write = pipeline._writer(root)
    truths: list[pd.DataFrame] = []
    visits = np.zeros(0, dtype=np.int64)
    judgments = []
    for index, day in enumerate(days):
        rng = np.random.default_rng([SEED, index])
        frames = pipeline.day_frames(rng, day, annotations, skill)
        n_again = int(annotations * revisit_share) if truths else 0  # the first day has no earlier items
        again = (
            revisits(rng, day, pd.concat(truths, ignore_index=True), visits, n_again, skill)
            if n_again
            else (frames.annotations.iloc[:0])
        )
        exports = pd.concat([frames.annotations, again], ignore_index=True)
        # sessions are per day: a capture session is one drive, and curation splits by session
        write(f"items/{day}/items.csv", frames.items.assign(session_id=f"{day}-" + frames.items["session_id"]))
        half = len(exports) // 2
        write(f"exports/{day}/vendor_a_{day}.csv", exports.iloc[:half])  # per-day file names, as vendors deliver
        write(f"exports/{day}/vendor_b_{day}.csv", exports.iloc[half:])
        write(f"gold/{day}/gold.csv", frames.gold)
        write(f"production/{day}/detections_labeled_items.csv", frames.detections)
        shift = 0.3 if day == days[-1] else 0.0
        write(
            f"production/{day}/predictions.csv",
            pipeline._production(rng, day, production_rows - len(frames.detections), shift),
        )
        truths.append(frames.truth)
        visits = np.concatenate([visits, np.zeros(len(frames.truth), dtype=np.int64)])
        judgments.append(
            {"day": day, "new_items": len(frames.items), "judgments": len(exports), "revisits": len(again)}
        )
        print(f"generated {day}: {len(exports):,} judgments ({len(again):,} of earlier items)", file=sys.stderr)
    return {"days": judgments}


def first_night_landing(landing: Path, target: Path, day: str, reference_day: str) -> None:
    """Night 1's landing zone: the measured day's files and the reference day's production, hard-linked."""
    for path in [*landing.glob(f"*/{day}/*"), *landing.glob(f"production/{reference_day}/*")]:
        link = target / path.relative_to(landing)
        link.parent.mkdir(parents=True, exist_ok=True)
        os.link(path, link)


def build_history(landing: Path, warehouse: Path, days: list[str]) -> dict:
    """The warehouse as it stands before the last day's night: every earlier day's daily tables, the label
    state of the day before, and the snapshot published from it."""
    pipeline.configure(landing, warehouse, days[0])
    from dagster import AssetSelection, DagsterInstance, materialize

    from pipelines.definitions import defs
    from resources.io_manager import ParquetIOManager

    resources = dict(defs.resources)
    instance = DagsterInstance.ephemeral()
    history, timings = days[:-1], {}
    for day in history:
        start = time.time()
        assert materialize(
            list(defs.assets),
            selection=AssetSelection.assets(*HISTORY_ASSETS),
            partition_key=day,
            resources=resources,
            instance=instance,
            run_config=pipeline.QUIET,
        ).success
        timings[day] = time.time() - start
        print(f"history {day}: {timings[day]:.1f} s", file=sys.stderr)
    io_manager = ParquetIOManager(storage=resources["storage"])
    start = time.time()
    votes, table, items, model = fold_state(io_manager, history)
    store = resources["storage"].warehouse_store
    for name, frame in (
        ("label_votes", votes),
        ("label_state", table),
        ("item_index", items),
        ("annotator_model", model),
    ):
        store.write_bytes(io_manager.key([name], history[-1]), _parquet(frame))
    fold_s = time.time() - start
    start = time.time()
    assert materialize(
        list(defs.assets),
        selection=AssetSelection.assets("dataset_snapshot"),
        resources=resources,
        instance=instance,
        run_config=pipeline.QUIET,
    ).success
    return {
        "daily_assets_s": sum(timings.values()),
        "state_fold_s": fold_s,
        "snapshot_s": time.time() - start,
        "label_votes_rows": len(votes),
        "label_state_rows": len(table),
        "label_state_items": int(table["item_id"].nunique()),
    }


def fold_state(
    io_manager: ParquetIOManager, days: list[str]
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """label_votes, label_state, item_index and annotator_model as the last of ``days`` leaves them, from all the
    days' tables at once.

    What assets/state.py does night by night, pooled: the votes are every day's validated annotations
    (each keeps its export_date); every item was touched on some day, so every item's boxes are fused
    (with annotator weights from the full vote set rather than the one of the night they were fused on:
    the same boxes and rows, coordinates a weighted average apart); scene labels are Dawid-Skene over all
    current votes with the last day's gold, as a night that fits does (the model is fit on the last day, so the
    measured night keeps it, as six nights of seven do); items put in review on any day keep waiting,
    since no answer ever comes back here. No relabel batch is sent in the nightly
    job, so no request is open. Not pooled: the review the state adds for box disagreements across days
    (``state.box_disagreements``), which a night finds among that night's items; the measured night does.
    """
    from labelops import consensus, labeling, state

    def read(name: str, day: str, keep: tuple[str, ...] | None = None) -> pd.DataFrame:
        return io_manager._read(io_manager.key([name], day), keep=keep)

    derived = ("answer_to", "superseded_by", "annotation_key", "replaced_on")  # votes_of computes them
    needed = (*(c for c in state.VOTE_COLUMNS if c not in derived), "attributes", "source_ref", "source_format")
    validated = pd.concat([read("validated_annotations", d, needed) for d in days], ignore_index=True)
    votes = state.fold_votes(state.empty_votes(), validated)
    del validated
    settings = state.StateConfig()
    labels, model = state.consensus(
        votes, state.empty_state(), votes["item_id"], read("gold_labels", days[-1]), settings, day=days[-1]
    )
    in_review = pd.concat([read("review_queue", d, ("item_id",))["item_id"] for d in days])
    requests = pd.DataFrame(columns=labeling.LEDGER_COLUMNS)
    catalogs = pd.concat([read("item_catalog", d) for d in days], ignore_index=True)
    items = state.fold_items(catalogs.iloc[:0], catalogs.iloc[:0], catalogs)
    fitted = model.frame() if model is not None else pd.DataFrame(columns=consensus.MODEL_COLUMNS)
    return votes, state.item_state(votes, labels, requests, in_review), items, fitted


def _parquet(frame: pd.DataFrame) -> bytes:
    """A table as the IO manager writes it (resources/io_manager.py): a night reads files like its own."""
    import pyarrow as pa

    from resources.io_manager import parquet_bytes

    return parquet_bytes(pa.Table.from_pandas(frame, preserve_index=False))


def warehouse_sizes(warehouse: Path, day: str) -> dict:
    """What a night found of its history: rows of the daily tables before ``day`` (Parquet footers only), the
    parent snapshot, and the production rows the night's drift reference held."""
    import pyarrow.parquet as pq

    from labelops import layers

    tables = warehouse / "tables"

    def rows(name: str, days: list[str]) -> int:
        files = [pq.ParquetFile(f) for f in sorted((tables / name).glob("*.parquet")) if f.stem in days]
        return sum(layers.rows(f.schema_arrow) or f.metadata.num_rows for f in files)  # a layer: its table's rows

    manifests = [json.loads(m.read_text()) for m in sorted((warehouse / "snapshots").glob("v*/manifest.json"))]
    parent = manifests[-2] if len(manifests) > 1 else None
    earlier = sorted(f.stem for f in (tables / "item_catalog").glob("*.parquet") if f.stem < day)
    # production_drift's reference (assets/monitor.py): the production days of the snapshot the night published
    production = sorted(f.stem for f in (tables / "production_predictions").glob("*.parquet") if f.stem < day)
    reference_days = [d for d in manifests[-1]["source_partitions"] if d < day] or production[:7]
    return {
        "history_days": len(earlier),
        "label_votes_rows_before": rows("label_votes", earlier),
        "label_state_rows_before": rows("label_state", earlier),
        "item_catalog_rows_before": rows("item_catalog", earlier),
        "label_exports_rows_before": rows("label_exports", earlier),
        "consensus_labels_rows_before": rows("consensus_labels", earlier),
        "parent_snapshot_items": parent["rows"]["items"] if parent else 0,
        "parent_snapshot_labels": parent["rows"]["labels"] if parent else 0,
        "drift_reference_days": len(reference_days),
        "drift_reference_rows": rows("production_predictions", reference_days),
    }


def measure(args: argparse.Namespace, root: Path) -> dict:
    """Landing zone, history, then night 1 and the last night, each in a fresh process (nothing one step
    imported or cached in memory helps the next); only the two nights are timed.

    The history is kept apart (``history/``): the last night runs on a hard-linked copy of it (``warehouse/``;
    the warehouse replaces files rather than writing into them, so the history stays as built), and ``--reuse``
    measures the two nights again on a kept work directory without building anything.
    """
    days = calendar(args.nights)
    day, reference_day = days[-1], days[-2]
    landing = root / "landing"
    run = [
        sys.executable,
        "-m",
        "bench.nights",
        "--annotations-per-day",
        str(args.annotations_per_day),
        "--nights",
        str(args.nights),
    ]
    if args.reuse:
        generated, history = (
            json.loads((root / "generated.json").read_text()),
            json.loads((root / "history.json").read_text()),
        )
    else:
        start = time.time()
        subprocess.run(
            [
                *run,
                "--generate",
                str(root),
                "--revisit-share",
                str(args.revisit_share),
                "--production-per-day",
                str(args.production_per_day),
            ],
            check=True,
        )
        generated = json.loads((root / "generated.json").read_text())
        history = _worker([*run, "--history", str(root)])
        history["generate_s"] = time.time() - start
        (root / "history.json").write_text(json.dumps(history))
        first_night_landing(landing, root / "landing-1", day, reference_day)
    last = f"night_{args.nights}"
    measured: dict[str, list[dict]] = {"night_1": [], last: [], f"{last}_fit": []}
    end_to_end: dict[str, list[dict]] = {"night_1": [], last: []}
    for repeat in range(args.repeat):
        # night 1 and the last night take turns, each on a fresh warehouse; the last night once more as a night that
        # fits Dawid-Skene over every vote (one in refit_days: no kept fit), in the first round only
        nights = [("night_1", root / "landing-1", "warehouse-1"), (last, landing, "warehouse")]
        nights += [(f"{last}_fit", landing, "warehouse-fit")] if repeat == 0 else []
        for name, night_landing, scratch in nights:
            warehouse = root / scratch
            shutil.rmtree(warehouse, ignore_errors=True)
            if scratch != "warehouse-1":
                subprocess.run(["cp", "-al", str(root / "history"), str(warehouse)], check=True)
            if scratch == "warehouse-fit":  # none in old histories
                shutil.rmtree(warehouse / "tables" / "annotator_model", ignore_errors=True)
            result = _worker([*run, "--night", str(night_landing), str(warehouse)])
            result["read"] = warehouse_sizes(warehouse, day)
            measured[name].append(result)
            print(f"{name}: {result['total_s']:.1f} s", file=sys.stderr)
        # end to end: each night once more as a schedule runs it, a `dagster job execute` process of its own
        for name, night_landing, scratch in nights[:2]:
            warehouse, home = root / f"{scratch}-cli", root / "dagster-home-cli"
            for path in (warehouse, home):
                shutil.rmtree(path, ignore_errors=True)
            if scratch != "warehouse-1":
                subprocess.run(["cp", "-al", str(root / "history"), str(warehouse)], check=True)
            seconds, peak_mb = pipeline.run_cli(night_landing, warehouse, home, day, reference_day, days[0])
            end_to_end[name].append({"total_s": seconds, "peak_rss_mb": peak_mb})
            print(f"{name} through the CLI: {seconds:.1f} s", file=sys.stderr)
    nights = {name: _median_run(results) for name, results in measured.items()}
    ratio = nights[last]["total_s"] / nights["night_1"]["total_s"]
    fit_ratio = nights[f"night_{args.nights}_fit"]["total_s"] / nights["night_1"]["total_s"]
    cli = {name: _median_run(results) for name, results in end_to_end.items()}
    return {
        "annotations_per_day": args.annotations_per_day,
        "nights": args.nights,
        "revisit_share": args.revisit_share,
        "production_per_day": args.production_per_day,
        "day": day,
        "ratio": ratio,
        "fit_ratio": fit_ratio,
        "target": TARGET,
        "generated": generated,
        "history": history,
        # every round's totals: the machine's own variation between runs is as large as a change's effect
        "runs": [
            {"night_1_s": a["total_s"], f"{last}_s": b["total_s"], "ratio": b["total_s"] / a["total_s"]}
            for a, b in zip(measured["night_1"], measured[last], strict=True)
        ],
        **nights,
        "cli": {
            "ratio": cli[last]["total_s"] / cli["night_1"]["total_s"],
            **cli,
            "runs": [
                {"night_1_s": a["total_s"], f"{last}_s": b["total_s"], "ratio": b["total_s"] / a["total_s"]}
                for a, b in zip(end_to_end["night_1"], end_to_end[last], strict=True)
            ],
        },
    }


def _median_run(results: list[dict]) -> dict:
    """Of a night's runs, the one with the median total (the lower middle one of an even count): its steps are
    shown, as measured together."""
    return sorted(results, key=lambda r: r["total_s"])[(len(results) - 1) // 2]


def _worker(command: list[str]) -> dict:
    """A fresh process; its last line of output is its result."""
    done = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def show(m: dict) -> None:
    first, last = m["night_1"], m[f"night_{m['nights']}"]
    n = m["nights"]
    read = last["read"]
    print(
        f"\nnight {n} against night 1, {m['annotations_per_day']:,} annotations a day (+{m['revisit_share']:.0%} "
        f"judgments of earlier items), {m['production_per_day']:,} production rows a day, day {m['day']}"
    )
    print(
        f"history: {read['history_days']} days; label_votes {read['label_votes_rows_before']:,} rows, label_state "
        f"{read['label_state_rows_before']:,} rows ({m['history']['label_state_items']:,} items); parent snapshot "
        f"{read['parent_snapshot_items']:,} items / {read['parent_snapshot_labels']:,} labels; drift reference "
        f"{read['drift_reference_days']} days, {read['drift_reference_rows']:,} rows"
    )
    steps1 = {s["asset"]: s for s in first["steps"]}
    stepsn = {s["asset"]: s for s in last["steps"]}
    extra = last["total_s"] - first["total_s"]
    print(
        f"{'asset':<30}{'night 1 s':>10}{f'night {n} s':>11}{'+ s':>8}{'x':>7}{'of extra':>9}"
        f"{'compute':>9}{'IO mgr':>8}{'sys s':>7}{'faults':>9}{'rows 1':>11}{f'rows {n}':>11}{'peak MB':>9}"
    )
    for asset in sorted(
        stepsn, key=lambda a: stepsn[a]["wall_s"] - steps1.get(a, {"wall_s": 0})["wall_s"], reverse=True
    ):
        a, b = steps1.get(asset, {"wall_s": 0.0, "rows": 0}), stepsn[asset]
        grow = b["wall_s"] - a["wall_s"]
        ratio = b["wall_s"] / a["wall_s"] if a["wall_s"] else float("nan")
        share = grow / extra if extra else 0.0
        print(
            f"{asset:<30}{a['wall_s']:>10.2f}{b['wall_s']:>11.2f}{grow:>+8.2f}{ratio:>7.2f}{share:>9.0%}"
            f"{b['compute_s']:>9.2f}{b['io_manager_s']:>8.2f}{b.get('system_s', 0.0):>7.2f}{b.get('page_faults', 0):>9,}"
            f"{a['rows']:>11,}{b['rows']:>11,}{b['peak_rss_mb']:>9,.0f}"
        )
    print(f"{'total':<30}{first['total_s']:>10.1f}{last['total_s']:>11.1f}{extra:>+8.1f}{m['ratio']:>7.2f}")
    print(f"peak RSS: night 1 {first['peak_rss_mb']:,.0f} MB, night {n} {last['peak_rss_mb']:,.0f} MB")
    if "system_s" in first and "system_s" in last:  # the columns above: night n's steps
        print(
            f"system time (mostly first touches of memory): night 1 {first['system_s']:.1f} s "
            f"({first['page_faults']:,} minor page faults), night {n} {last['system_s']:.1f} s "
            f"({last['page_faults']:,})"
        )
    history = m["history"]
    if "note" in history:  # a history recorded by hand rather than by this script
        print(f"history: {history['note']}")
    built = history["generate_s"] + history["daily_assets_s"] + history["state_fold_s"] + history["snapshot_s"]
    print(
        f"history built untimed in {built:.0f} s "
        f"(landing {history['generate_s']:.0f} s, daily assets {history['daily_assets_s']:.0f} s, state fold "
        f"{history['state_fold_s']:.0f} s, parent snapshot {history['snapshot_s']:.0f} s)"
    )
    verdict = "met" if m["ratio"] <= m["target"] else "MISSED"
    runs = m.get("runs", [])
    if len(runs) > 1:
        print(
            f"{len(runs)} rounds, night 1 and night {n} taking turns; the median runs are shown: "
            + ", ".join(f"{r[f'night_{n}_s']:.1f} s / {r['night_1_s']:.1f} s = {r['ratio']:.2f}x" for r in runs)
        )
    print(f"night {n} / night 1 = {m['ratio']:.2f} (target <= {m['target']}): {verdict}")
    cli = m.get("cli")
    if cli:  # older results have none
        print(
            f"end to end through Dagster's CLI (process start, code location, Great Expectations' import): night 1 "
            f"{cli['night_1']['total_s']:.1f} s, night {n} {cli[f'night_{n}']['total_s']:.1f} s = {cli['ratio']:.2f}x"
            f" (target <= {m['target']}: {'met' if cli['ratio'] <= m['target'] else 'MISSED'}); rounds: "
            + ", ".join(f"{r['ratio']:.2f}x" for r in cli["runs"])
        )
    fit = m[f"night_{n}_fit"]
    print(
        f"night {n} as a night that fits Dawid-Skene over every vote (one in refit_days, 7): {fit['total_s']:.1f} s, "
        f"{m['fit_ratio']:.2f}x night 1 (label_state "
        f"{next(s['wall_s'] for s in fit['steps'] if s['asset'] == 'label_state'):.2f} s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--annotations-per-day", type=int, default=100_000)
    parser.add_argument("--nights", type=int, default=60, help="the measured night; the history is the nights before")
    parser.add_argument(
        "--revisit-share",
        type=float,
        default=0.1,
        help="judgments of earlier days' items a day, as a share of --annotations-per-day",
    )
    parser.add_argument("--production-per-day", type=int, default=1_000_000)
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="rounds of night 1 and the last night, taking turns; the ratio is of their median runs",
    )
    parser.add_argument("--workdir", help="keep the landing zone and warehouses here (default: a temporary directory)")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="measure the two nights again on the history an earlier run kept in --workdir",
    )
    parser.add_argument("--generate", help=argparse.SUPPRESS)
    parser.add_argument("--history", help=argparse.SUPPRESS)
    parser.add_argument("--night", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    days = calendar(args.nights)
    if args.generate:
        root = Path(args.generate)
        summary = generate(
            root / "landing", days, args.annotations_per_day, args.revisit_share, args.production_per_day
        )
        (root / "generated.json").write_text(json.dumps(summary))
        return
    if args.history:
        root = Path(args.history)
        print(json.dumps(build_history(root / "landing", root / "history", days)))
        return
    if args.night:
        landing, warehouse = map(Path, args.night)
        measured = pipeline.run_pipeline(landing, warehouse, day=days[-1], reference_day=days[-2], start_date=days[0])
        measured.pop("outputs")
        print(json.dumps(measured))
        return
    if args.nights < 2:
        parser.error("--nights must be at least 2: night 1 is measured against the last night")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.reuse and not args.workdir:
        parser.error("--reuse needs the --workdir of an earlier run")
    if args.workdir:
        Path(args.workdir).mkdir(parents=True, exist_ok=args.reuse)
        measured = measure(args, Path(args.workdir))
    else:
        with tempfile.TemporaryDirectory(prefix="labelops-nights-") as scratch:
            measured = measure(args, Path(scratch))
    pipeline.RESULTS.mkdir(exist_ok=True)
    (pipeline.RESULTS / "nights.json").write_text(json.dumps(measured, indent=1))
    show(measured)


if __name__ == "__main__":
    main()
