"""The generated export corpus (tests/corpus.py) through the parsers and through every asset of a day.

Library level (fast, hypothesis): each format's generated exports are read by ``ingest.read_exports`` and
the file ledger must account for every record the generator wrote, with exactly the expected labels.

Dagster level (real ``materialize`` of every asset in ``defs`` for the day, one fresh warehouse per case):
no asset fails; the file ledger has every export ``ok``; label_exports rows + skipped records = records in
the files; validated + quarantined = label_exports rows (nothing quarantined on a clean corpus); and every
item with a validated label is either in the dataset snapshot or counted in its manifest's ``excluded``.

The same export delivered again (under another name, on a later day) must count each judgment once.
These tests assert the intended behaviour, including where labelops does not reach it yet.
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd
import pytest
from corpus import FORMATS, KINDS, CaseSpec, Corpus, case_specs, generate, redeliver
from dagster import AssetKey, AssetSelection, DagsterInstance, ExecuteInProcessResult, materialize
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labelops import ingest, snapshots
from labelops.formats import parse_file
from labelops.storage import LocalStore
from resources import build_resources
from resources.settings import Settings

REPO = Path(__file__).resolve().parents[1]
LABEL = ["source_file", "item_id", "annotator_id", "kind", "label"]
PARSE_SETTINGS = settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def ledger_skipped(entry: str) -> int:
    return sum(json.loads(entry).values()) if isinstance(entry, str) and entry else 0


def label_counter(frame: pd.DataFrame) -> Counter:
    return Counter(map(tuple, frame[LABEL].astype(str).to_numpy().tolist()))


def read_day(corpus: Corpus, store: LocalStore) -> ingest.Ingested:
    items = ingest.read_items(store, corpus.day).table
    return ingest.read_exports(store, corpus.day, ingest.ImageSizes(items))


def assert_accounts(corpus: Corpus, read: ingest.Ingested) -> None:
    """Every export ok; rows and skipped records per file as generated; exactly the expected labels."""
    ledger = read.ledger.set_index("source_file")
    assert sorted(ledger.index) == sorted(t.key for t in corpus.exports)
    for truth in corpus.exports:
        entry = ledger.loc[truth.key]
        assert entry["status"] == "ok", f"{truth.key}: {entry['error']}"
        assert entry["rows"] == truth.rows, f"{truth.key}: {entry['rows']} rows, expected {truth}"
        assert ledger_skipped(entry["skipped"]) == truth.skipped, (
            f"{truth.key}: skipped {entry['skipped']}, expected {truth}"
        )
    assert len(read.table) + int(ledger["skipped"].map(ledger_skipped).sum()) == corpus.records
    missing = label_counter(corpus.judgments) - label_counter(read.table)
    extra = label_counter(read.table) - label_counter(corpus.judgments)
    assert not missing and not extra, f"labels missing {list(missing)[:5]}, unexpected {list(extra)[:5]}"


# --- library level ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_record_of_a_generated_export_is_accounted_for(fmt: str) -> None:
    @PARSE_SETTINGS
    @given(case_specs(formats=(fmt,)))
    def check(spec: CaseSpec) -> None:
        corpus = generate(spec)
        with tempfile.TemporaryDirectory() as folder:
            store = LocalStore(Path(folder))
            corpus.write(store)
            assert_accounts(corpus, read_day(corpus, store))

    check()


@pytest.mark.parametrize("order", ["later_first", "later_last"])
def test_a_later_updated_label_studio_annotation_wins_whatever_its_place(order: str, tmp_path: Path) -> None:
    spec = CaseSpec(
        "ls_updated",
        ("label_studio",),
        ("classification", "bbox", "polygon"),
        n_items=4,
        predictions=False,
        cancelled=False,
        other_records=False,
        updated=order,
        seed=7,
    )
    corpus = generate(spec)
    assert corpus.exports[0].superseded == 1
    store = LocalStore(tmp_path)
    corpus.write(store)
    assert_accounts(corpus, read_day(corpus, store))


@pytest.mark.parametrize(
    "kinds",
    [("classification", "bbox"), ("classification", "bbox", "polygon"), ("bbox",)],
    ids=["scenes+boxes", "scenes+boxes+polygons", "boxes"],
)
def test_label_studio_scene_labels_beside_regions_read(kinds: tuple[str, ...], tmp_path: Path) -> None:
    spec = CaseSpec("ls_kinds", ("label_studio",), kinds, n_items=5, seed=21)
    corpus = generate(spec)
    store = LocalStore(tmp_path)
    corpus.write(store)
    assert_accounts(corpus, read_day(corpus, store))


def test_label_studio_relations_are_counted_as_skipped_not_fatal() -> None:
    """A relation between two regions (``type: relation``, no ``value``) is a result type that is not a label."""
    box = {
        "type": "rectanglelabels",
        "from_name": "objects",
        "to_name": "image",
        "original_width": 640,
        "original_height": 480,
    }
    task = {
        "id": 1,
        "data": {"image": "s3://b/frame-1.jpg"},
        "predictions": [],
        "annotations": [
            {
                "id": 5,
                "completed_by": 3,
                "was_cancelled": False,
                "updated_at": "2024-06-02T10:00:00Z",
                "result": [
                    {
                        **box,
                        "id": "a1",
                        "value": {"x": 10, "y": 10, "width": 20, "height": 30, "rectanglelabels": ["car"]},
                    },
                    {
                        **box,
                        "id": "a2",
                        "value": {"x": 40, "y": 10, "width": 20, "height": 30, "rectanglelabels": ["car"]},
                    },
                    {"from_id": "a1", "to_id": "a2", "type": "relation", "direction": "right", "labels": []},
                ],
            }
        ],
    }
    parsed = parse_file("exports/2024-06-03/with_relations.json", json.dumps([task]).encode())
    assert len(parsed.objects) == 2
    assert sum(parsed.skipped.values()) == 1


def test_label_studio_per_region_text_is_kept_in_attributes() -> None:
    """A per-region text area (same id as its box) is an attribute of the box; Label Studio stores it in ``text``."""
    box = {"id": "r1", "from_name": "objects", "to_name": "image", "original_width": 640, "original_height": 480}
    task = {
        "id": 1,
        "data": {"image": "s3://b/frame-1.jpg"},
        "annotations": [
            {
                "id": 5,
                "completed_by": 3,
                "was_cancelled": False,
                "updated_at": "2024-06-02T10:00:00Z",
                "result": [
                    {
                        **box,
                        "type": "rectanglelabels",
                        "value": {"x": 10, "y": 10, "width": 20, "height": 30, "rectanglelabels": ["car"]},
                    },
                    {
                        **box,
                        "type": "textarea",
                        "from_name": "plate",
                        "value": {"x": 10, "y": 10, "width": 20, "height": 30, "text": ["partly hidden"]},
                    },
                ],
            }
        ],
    }
    parsed = parse_file("exports/2024-06-03/per_region_text.json", json.dumps([task]).encode())
    assert len(parsed.objects) == 1
    assert json.loads(parsed.objects["attributes"].iloc[0])["plate"] == ["partly hidden"]


# --- Dagster level ---------------------------------------------------------------------------------------------

CASES = [
    CaseSpec("scenes_only", ("label_studio", "cvat", "table"), ("classification",), ls_users="id", seed=11),
    CaseSpec("boxes_only", FORMATS, ("bbox",), seed=12),
    CaseSpec(
        "polygons_only",
        ("label_studio", "coco", "cvat", "yolo"),
        ("polygon",),
        predictions=False,
        yolo_packaging="folder",
        yolo_class_list="classes.txt",
        seed=13,
    ),
    CaseSpec("scenes_and_boxes", FORMATS, ("classification", "bbox"), seed=14),
    CaseSpec("mixed_updated_v2", FORMATS, KINDS, day="2024-06-14", updated="both", seed=15),
    CaseSpec(
        "mixed_one_annotator",
        FORMATS,
        KINDS,
        n_annotators=1,
        predictions=False,
        cancelled=False,
        other_records=False,
        ls_users="id",
        yolo_packaging="folder",
        seed=16,
    ),
]


def run_settings(landing: Path, warehouse: Path) -> Settings:
    return Settings(
        landing=str(landing),
        warehouse=str(warehouse),
        s3_endpoint_url=None,
        config_dir=str(REPO / "config"),
        start_date="2024-01-01",
    )


def materialize_day(landing: Path, warehouse: Path, day: str, instance: DagsterInstance) -> ExecuteInProcessResult:
    """Every asset of the project's definitions, for one day, the way the other tests run them."""
    from pipelines.definitions import defs

    return materialize(
        list(defs.assets),
        selection=AssetSelection.all(),
        partition_key=day,
        resources=build_resources(run_settings(landing, warehouse)),
        instance=instance,
        raise_on_error=False,
    )


def all_asset_keys() -> set[AssetKey]:
    from pipelines.definitions import defs

    return {key for assets_def in defs.assets for key in assets_def.keys}


def step_failures(result: ExecuteInProcessResult) -> dict[str, str]:
    """Failed steps and the last line of their error (the exception type and message)."""
    out = {}
    for event in result.all_events:
        if event.is_step_failure:
            error = event.step_failure_data.error
            cause = error.cause or error
            while cause.cause is not None:
                cause = cause.cause
            out[event.step_key] = f"{cause.cls_name}: {cause.message.strip().splitlines()[-1][:300]}"
    return out


@dataclass
class DayRun:
    corpus: Corpus
    warehouse: Path
    result: ExecuteInProcessResult

    def table(self, name: str, day: str | None = None) -> pd.DataFrame:
        path = self.warehouse / "tables" / name / f"{day or self.corpus.day}.parquet"
        if not path.is_file():
            pytest.fail(f"{name} was not written for {path.stem}: failed steps {step_failures(self.result)}")
        return pd.read_parquet(path)


@pytest.fixture(scope="module", params=CASES, ids=[c.name for c in CASES])
def day_run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> DayRun:
    corpus = generate(request.param)
    root = tmp_path_factory.mktemp(request.param.name)
    corpus.write(LocalStore(root / "landing"))
    result = materialize_day(root / "landing", root / "wh", corpus.day, DagsterInstance.ephemeral())
    return DayRun(corpus, root / "wh", result)


def test_no_asset_fails(day_run: DayRun) -> None:
    failures = step_failures(day_run.result)
    assert not failures, f"failed steps: {failures}"
    events = day_run.result.get_asset_materialization_events()
    materialized = {e.event_specific_data.materialization.asset_key for e in events}
    missing = sorted(k.to_user_string() for k in all_asset_keys() - materialized)
    assert not missing, f"not materialized: {missing}"


def test_file_ledger_has_every_export_ok_and_every_record(day_run: DayRun) -> None:
    corpus = day_run.corpus
    path = day_run.warehouse / "ledgers" / "label_exports" / f"{corpus.day}.csv"
    assert path.is_file(), f"no file ledger: failed steps {step_failures(day_run.result)}"
    ledger = pd.read_csv(path, keep_default_na=False)
    read = ingest.Ingested(table=day_run.table("label_exports"), ledger=ledger)
    assert_accounts(corpus, read)


def test_validated_and_quarantined_reconcile_with_label_exports(day_run: DayRun) -> None:
    exports = day_run.table("label_exports")
    validated, quarantined = day_run.table("validated_annotations"), day_run.table("quarantined_annotations")
    assert len(validated) + len(quarantined) == len(exports)
    assert quarantined.empty, (
        f"a clean corpus has nothing to quarantine: {quarantined[['rule', 'reason']].value_counts().to_dict()}"
    )


def test_every_validated_item_is_in_the_snapshot_or_counted_as_excluded(day_run: DayRun) -> None:
    validated = day_run.table("validated_annotations")
    store = LocalStore(day_run.warehouse)
    version = snapshots.latest(store)
    assert version is not None, f"no snapshot published: failed steps {step_failures(day_run.result)}"
    in_snapshot = set(snapshots.read_table(store, version, "items.parquet")["item_id"])
    excluded = snapshots.manifest(store, version)["excluded"]
    labeled = set(validated["item_id"])
    assert in_snapshot <= labeled
    left_out = labeled - in_snapshot
    consensus = day_run.table("consensus_labels")
    detail = (
        validated[validated["item_id"].isin(left_out)]
        .groupby("item_id")
        .agg(kinds=("kind", lambda k: ",".join(sorted(set(k)))), annotators=("annotator_id", "nunique"))
        .assign(has_consensus=lambda f: f.index.isin(consensus["item_id"]))
    )
    assert len(left_out) == sum(excluded.values()), (
        f"{len(left_out)} validated items are not in snapshot {version}, the manifest excludes {excluded}; "
        f"left out: {detail.reset_index().to_dict('records')[:8]}"
    )


# --- the same export delivered again ---------------------------------------------------------------------------

REDELIVERED = [
    CaseSpec("ls_scenes", ("label_studio",), ("classification",), n_items=10, seed=31),
    CaseSpec("table_scenes_boxes", ("table",), ("classification", "bbox"), n_items=10, seed=32),
]


@pytest.mark.parametrize("spec", REDELIVERED, ids=[s.name for s in REDELIVERED])
def test_an_export_delivered_again_counts_each_judgment_once(spec: CaseSpec, tmp_path: Path) -> None:
    """The same export twice on one day under two names, and again on a later day: each judgment counts once.

    The extra copies go to quarantined_annotations with rule ``duplicate``; annotator counts and consensus votes
    are those of one copy.
    """
    corpus = generate(spec)
    later = "2024-06-04"
    original = corpus.exports[0].key
    store = LocalStore(tmp_path / "landing")
    corpus.write(store)
    name = original.rsplit("/", 1)[1]
    stem, _dot, ext = name.rpartition(".")
    copies = {
        **redeliver(corpus, original, original.replace(name, f"{stem} (1).{ext}")),
        **redeliver(corpus, original, original.replace(corpus.day, later)),
    }
    for key, data in copies.items():
        store.write_bytes(key, data)
    instance = DagsterInstance.ephemeral()
    results = {
        day: materialize_day(tmp_path / "landing", tmp_path / "wh", day, instance) for day in (corpus.day, later)
    }
    run = {day: DayRun(replace(corpus, spec=replace(spec, day=day)), tmp_path / "wh", r) for day, r in results.items()}
    days = list(run)

    exports = pd.concat([run[d].table("label_exports") for d in days], ignore_index=True)
    assert len(exports) == 3 * len(corpus.judgments)  # every copy is read ...
    validated = pd.concat([run[d].table("validated_annotations") for d in days], ignore_index=True)
    quarantined = pd.concat([run[d].table("quarantined_annotations") for d in days], ignore_index=True)
    assert len(validated) + len(quarantined) == len(exports)
    without_source = [c for c in LABEL if c != "source_file"]
    once = Counter(map(tuple, corpus.judgments[without_source].astype(str).to_numpy().tolist()))
    assert Counter(map(tuple, validated[without_source].astype(str).to_numpy().tolist())) == once, (
        f"{len(validated)} validated rows for {len(corpus.judgments)} judgments"
    )  # ... and counts once
    duplicates = quarantined["rule"].astype(str).str.contains("duplicate")
    assert duplicates.sum() == 2 * len(corpus.judgments), (
        f"quarantined by rule: {quarantined['rule'].value_counts().to_dict()}"
    )

    scores = pd.concat([run[d].table("annotator_scores") for d in days], ignore_index=True)
    per_annotator = scores.groupby("annotator_id")["n_annotations"].sum().sort_index()
    expected = corpus.judgments.groupby("annotator_id").size().sort_index()
    pd.testing.assert_series_equal(per_annotator, expected, check_names=False, check_dtype=False)
    consensus = pd.concat([run[d].table("consensus_labels") for d in days], ignore_index=True)
    scenes = consensus[consensus["kind"] == "classification"]
    votes = scenes.groupby("item_id")["n_votes"].sum().sort_index()
    judged_scenes = corpus.judgments[corpus.judgments["kind"] == "classification"]
    expected_votes = judged_scenes.groupby("item_id").size().sort_index()
    pd.testing.assert_series_equal(votes, expected_votes, check_names=False, check_dtype=False)
    # coverage looks back over both days: the re-delivery adds no labeled object
    coverage = {
        d: run[d].table("coverage_report").set_index(["label", "dimension", "value"])["labeled_count"] for d in days
    }
    pd.testing.assert_series_equal(coverage[later], coverage[corpus.day])


def test_generated_corpus_is_reproducible() -> None:
    spec = CaseSpec("again", FORMATS, KINDS, updated="both", seed=5)
    first, second = generate(spec), generate(spec)
    assert first.files == second.files
    assert first.records == second.records > 0
    assert generate(replace(spec, seed=6)).files != first.files


@given(st.sampled_from(FORMATS))
@settings(max_examples=5, deadline=None, derandomize=True)
def test_class_names_come_from_the_guideline_in_force(fmt: str) -> None:
    from corpus import classes_by_kind, guideline_for

    for day in ("2024-06-03", "2024-06-14"):
        corpus = generate(CaseSpec("classes", (fmt,), KINDS, day=day, seed=3))
        allowed = classes_by_kind(guideline_for(day))
        for kind, labels in corpus.judgments.groupby("kind")["label"]:
            assert set(labels) <= set(allowed[kind]), (day, kind, set(labels) - set(allowed[kind]))
