"""Faults injected for real: SIGKILL mid-run, racing runs and publications, S3 going away, empty and
broken days, a planted secret. Invariants: input rows = validated + quarantined; a rerun gives the
undisturbed run's bytes; a snapshot is whole or invisible; a batch is recorded once."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO, SUBPROCESS_TIMEOUT, copy_store, free_port
from dagster import AssetSelection, DagsterInstance, materialize

from labelops import snapshots
from labelops.storage import LocalStore, S3Store, StorageUnavailableError
from pipelines.definitions import NIGHTLY_ASSETS
from resources import build_resources
from resources.settings import Settings

DAY = "2024-06-12"  # guideline v2 comes into force: remaps and relabels happen
CHAIN = [
    "item_catalog",
    "label_exports",
    "gold_labels",
    "production_predictions",
    "validated_annotations",
    "quarantined_annotations",
    "annotator_agreement",
    "consensus_labels",
    "annotator_scores",
    "label_issues",
    "review_queue",
    "item_index",
    "label_votes",
    "label_state",
    "annotator_model",
    "coverage_report",
    "risk_report",
    "dataset_snapshot",
    "production_drift",
    "labeling_tasks",
    "quality_report",
]


def settings(landing: str, warehouse: str, endpoint: str | None = None) -> Settings:
    return Settings(
        landing=landing,
        warehouse=warehouse,
        s3_endpoint_url=endpoint,
        config_dir=str(REPO / "config"),
        start_date="2024-01-01",
    )


def run(landing: Path, warehouse: Path, selection, day: str = DAY):
    from pipelines.definitions import defs

    return materialize(
        list(defs.assets),
        selection=selection,
        partition_key=day,
        resources=build_resources(settings(str(landing), str(warehouse))),
        instance=DagsterInstance.ephemeral(),
        raise_on_error=False,
    )


def killed_run(landing: Path, warehouse: Path, pattern: str, assets: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "LABELOPS_LANDING": str(landing), "LABELOPS_WAREHOUSE": str(warehouse)}
    return subprocess.run(
        [sys.executable, str(REPO / "tests" / "kill_at.py"), pattern, DAY, *assets],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
    )


def files(root: Path, under: str) -> dict[str, bytes]:
    base = root / under
    return (
        {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(base.rglob("*")) if p.is_file()}
        if base.exists()
        else {}
    )


@pytest.fixture(scope="module")
def undisturbed(demo_landing: LocalStore, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The undisturbed nightly run of DAY (a copy is kept), then its relabel batch."""
    warehouse = tmp_path_factory.mktemp("reference")
    assert run(demo_landing.root, warehouse, NIGHTLY_ASSETS).success
    before_batch = tmp_path_factory.mktemp("before-batch")
    shutil.copytree(warehouse, before_batch, dirs_exist_ok=True)
    assert run(demo_landing.root, warehouse, AssetSelection.assets("relabel_batch")).success
    return warehouse, before_batch


@pytest.fixture(scope="module")
def reference(undisturbed: tuple[Path, Path]) -> Path:
    return undisturbed[0]


def test_sigkill_during_ingest_then_rerun(demo_landing: LocalStore, reference: Path, tmp_path: Path) -> None:
    killed = killed_run(demo_landing.root, tmp_path, r"^tables/label_exports/", ["item_catalog", "label_exports"])
    assert killed.returncode == -signal.SIGKILL
    assert not (tmp_path / "tables" / "label_exports").exists()  # nothing half-written
    assert run(demo_landing.root, tmp_path, AssetSelection.groups("ingest")).success
    assert files(tmp_path, "tables") == {
        k: v
        for k, v in files(reference, "tables").items()
        if k.split("/")[1] in {"item_catalog", "label_exports", "gold_labels", "production_predictions"}
    }
    exports = pd.read_parquet(tmp_path / "tables" / "label_exports" / f"{DAY}.parquet")
    assert exports["annotation_id"].is_unique


def test_sigkill_between_snapshot_data_and_manifest_then_rerun(
    demo_landing: LocalStore, reference: Path, tmp_path: Path
) -> None:
    killed = killed_run(demo_landing.root, tmp_path, r"^snapshots/v0001/manifest\.json$", CHAIN)
    assert killed.returncode == -signal.SIGKILL
    store = LocalStore(tmp_path)
    assert (tmp_path / "snapshots" / "v0001" / "items.parquet").exists()  # the data was written ...
    assert snapshots.versions(store) == [] and snapshots.latest(store) is None  # ... and nothing is visible
    assert run(demo_landing.root, tmp_path, NIGHTLY_ASSETS).success
    assert snapshots.versions(store) == ["v0001"]
    ours, theirs = snapshots.manifest(store, "v0001"), snapshots.manifest(LocalStore(reference), "v0001")
    assert ours["content_hash"] == theirs["content_hash"] and ours["rows"] == theirs["rows"]
    validated = pd.read_parquet(tmp_path / "tables" / "validated_annotations" / f"{DAY}.parquet")
    quarantined = pd.read_parquet(tmp_path / "tables" / "quarantined_annotations" / f"{DAY}.parquet")
    exports = pd.read_parquet(tmp_path / "tables" / "label_exports" / f"{DAY}.parquet")
    assert len(validated) + len(quarantined) == len(exports)  # nothing lost


@pytest.mark.parametrize("point", [r"^outbox/relabel/2024-06-12/.*\.csv$", r"^outbox/relabel/ledger/"])
def test_sigkill_while_a_relabel_batch_is_written_then_rerun(
    demo_landing: LocalStore, undisturbed: tuple[Path, Path], tmp_path: Path, point: str
) -> None:
    reference, before_batch = undisturbed
    shutil.copytree(before_batch, tmp_path, dirs_exist_ok=True)
    killed = killed_run(demo_landing.root, tmp_path, point, ["relabel_batch"])
    assert killed.returncode == -signal.SIGKILL
    assert not (tmp_path / "outbox" / "relabel" / "ledger").exists()  # not recorded as sent
    assert run(demo_landing.root, tmp_path, AssetSelection.assets("relabel_batch")).success
    assert files(tmp_path, "outbox/relabel") == files(reference, "outbox/relabel")
    ledger = pd.read_csv(tmp_path / "outbox" / "relabel" / "ledger" / f"{DAY}.csv")
    assert ledger["item_id"].is_unique and len(ledger) > 0  # the batch is sent once


def test_two_runs_of_the_same_partition_at_once(demo_landing: LocalStore, reference: Path, tmp_path: Path) -> None:
    assets = ["item_catalog", "label_exports", "validated_annotations", "quarantined_annotations"]
    env = {**os.environ, "LABELOPS_LANDING": str(demo_landing.root), "LABELOPS_WAREHOUSE": str(tmp_path)}
    command = [sys.executable, str(REPO / "tests" / "kill_at.py"), "^never$", DAY, *assets]
    runs = [
        subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    assert [p.wait(timeout=SUBPROCESS_TIMEOUT) for p in runs] == [0, 0]
    for name in ("item_catalog", "label_exports", "validated_annotations", "quarantined_annotations"):
        key = f"tables/{name}/{DAY}.parquet"
        assert (tmp_path / key).read_bytes() == (reference / key).read_bytes()
    assert not list(tmp_path.rglob(".tmp-*"))


RENDEZVOUS_GUARD = 900.0  # seconds; never reached unless a publisher died before its claim


@dataclass
class MeetAtTheClaim:
    """A store on which every publisher waits at its version claim until all of them have reached it.

    By then each has read the published versions and chosen the same next one, so both claims are
    attempted for one version: the exclusive create decides, whatever the scheduler does. (Without
    the rendezvous a busy machine may run one publication to its end before the other starts, and
    the second then simply becomes the next version.)
    """

    inner: LocalStore
    rendezvous: threading.Barrier

    def create(self, key: str, data: bytes) -> bool:
        if key.endswith("/claim.json"):
            self.rendezvous.wait(timeout=RENDEZVOUS_GUARD)  # only a guard against a hang if the other thread died
        return self.inner.create(key, data)

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


def test_racing_snapshot_publications(tmp_path: Path) -> None:
    """Different contents racing for the same version: one wins, the other is refused; nothing is corrupted."""
    from test_snapshots import CONFIG, EMPTY, inputs

    for attempt in range(5):
        store = LocalStore(tmp_path / str(attempt))
        racing = MeetAtTheClaim(store, threading.Barrier(2))
        contents = [
            snapshots.curate(*inputs(300, seed=s), EMPTY, EMPTY, pd.Series(dtype=object), CONFIG) for s in (1, 2)
        ]
        outcomes: list[object] = [None, None]

        def publish(n: int, racing=racing, contents=contents, outcomes=outcomes) -> None:
            try:
                outcomes[n] = snapshots.publish(racing, contents[n], {})[0]
            except (snapshots.SnapshotConflictError, threading.BrokenBarrierError) as error:
                outcomes[n] = error

        threads = [threading.Thread(target=publish, args=(n,)) for n in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        winners = [o for o in outcomes if o == "v0001"]
        conflicts = [o for o in outcomes if isinstance(o, snapshots.SnapshotConflictError)]
        assert len(winners) == 1 and len(conflicts) == 1, outcomes
        manifest = snapshots.manifest(store, "v0001")
        for name, digest in manifest["files"].items():  # the winner's files are the winner's
            assert hashlib.sha256(store.read_bytes(f"snapshots/v0001/{name}")).hexdigest() == digest
        assert snapshots.versions(store) == ["v0001"]
        # the loser runs again later and becomes the next version, on top of the winner
        loser = 1 - outcomes.index("v0001")
        assert snapshots.publish(store, contents[loser], {})[0] == "v0002"


def test_an_identical_twin_publication_is_a_no_op(tmp_path: Path) -> None:
    from test_snapshots import CONFIG, EMPTY, inputs

    store = LocalStore(tmp_path)
    curated = snapshots.curate(*inputs(100), EMPTY, EMPTY, pd.Series(dtype=object), CONFIG)
    store.create(
        "snapshots/v0001/claim.json",
        b'{"content_hash": "'
        + snapshots.content_hash(
            {
                "items.parquet": snapshots.parquet_bytes(curated.items),
                "labels.parquet": snapshots.parquet_bytes(curated.labels),
            }
        ).encode()
        + b'"}',
    )
    assert snapshots.publish(store, curated, {})[0] == "v0001"  # same content: the claim is its own


def test_a_twin_published_while_this_run_encodes_is_the_parent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run encodes its files while reading and diffing the parent: a twin that publishes the same content meanwhile
    makes that content the latest, so this run publishes nothing, and never a second version of it."""
    from test_snapshots import CONFIG, EMPTY, inputs

    store = LocalStore(tmp_path)
    first = snapshots.curate(*inputs(100, seed=1), EMPTY, EMPTY, pd.Series(dtype=object), CONFIG)
    assert snapshots.publish(store, first, {})[:3:2] == ("v0001", True)
    second = snapshots.curate(*inputs(100, seed=2), EMPTY, EMPTY, pd.Series(dtype=object), CONFIG)
    encode, twins = snapshots.parquet_bytes, []

    def encode_while_a_twin_publishes(frame: pd.DataFrame) -> bytes:
        if not twins:
            twins.append(None)
            monkeypatch.setattr(snapshots, "parquet_bytes", encode)
            twins[0] = snapshots.publish(store, second, {})
        return encode(frame)

    monkeypatch.setattr(snapshots, "parquet_bytes", encode_while_a_twin_publishes)
    version, document, created = snapshots.publish(store, second, {})
    assert twins[0][0] == "v0002" and twins[0][2]
    assert (version, created, document["parent_version"]) == ("v0002", False, "v0001")
    assert snapshots.versions(store) == ["v0001", "v0002"]


@pytest.mark.parametrize("case", ["no_files", "only_malformed", "production_without_rows"])
def test_degenerate_days_have_a_clear_outcome(tmp_path: Path, case: str) -> None:
    landing = LocalStore(tmp_path / "landing")
    landing.write_bytes(
        f"items/{DAY}/items.csv", b"item_id,uri,width,height,lighting\nimg-1,s3://b/1.jpg,640,480,day\n"
    )
    if case == "only_malformed":
        landing.write_bytes(f"exports/{DAY}/broken.json", b'{"images": [')
        landing.write_bytes(f"exports/{DAY}/weird.bin", b"\x00\x01\x02")
    if case == "production_without_rows":
        landing.write_bytes(f"exports/{DAY}/vendor.csv", b"item_id,annotator_id,label\nimg-1,a,urban\nimg-1,b,urban\n")
        landing.write_bytes(
            f"production/{DAY}/predictions.csv", b"item_id,ts,model_version,predicted_label,confidence\n"
        )
    result = run(landing.root, tmp_path / "wh", NIGHTLY_ASSETS)
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    checks = {(c.asset_key.to_user_string(), c.check_name): c for c in result.get_asset_check_evaluations()}
    assert checks[("validated_annotations", "rows_reconcile")].passed
    assert checks[("label_exports", "files_readable")].passed is (case != "only_malformed")
    ledger = pd.read_csv(tmp_path / "wh" / "ledgers" / "label_exports" / f"{DAY}.csv")
    assert len(ledger) == {"no_files": 0, "only_malformed": 2, "production_without_rows": 1}[case]
    drift = pd.read_parquet(tmp_path / "wh" / "tables" / "production_drift" / f"{DAY}.parquet")
    assert not drift["drifted"].any()
    assert (tmp_path / "wh" / "reports" / "quality" / f"{DAY}.html").is_file()


SECRET = "planted-Secret-7f3a9c"


def test_s3_outage_is_retried_then_fails_clearly_and_a_rerun_matches(
    demo_landing: LocalStore, tmp_path: Path, monkeypatch
) -> None:
    from moto.server import ThreadedMotoServer

    import labelops.storage

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAPLANTED")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    servers = [ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)]

    def restart() -> None:  # moto keeps its state in the process: a new server on the port sees the same buckets
        servers.append(ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False))
        servers[-1].start()

    servers[0].start()
    import boto3

    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="outage")
    copy_store(demo_landing, "s3://outage/landing", endpoint)
    store = S3Store("outage", "probe", endpoint)
    try:
        # down for a moment: retries with backoff ride it out
        monkeypatch.setattr(labelops.storage, "S3_BACKOFF", (0.5, 1.0, 2.0))
        servers[-1].stop()
        later = threading.Timer(1.5, restart)
        later.start()
        started = time.monotonic()
        store.write_bytes("k", b"survived")
        later.join()
        assert store.read_bytes("k") == b"survived" and time.monotonic() - started >= 1.0

        # down for good during a run: bounded retries, then a clear failure naming the object
        monkeypatch.setattr(labelops.storage, "S3_BACKOFF", (0.2,))
        servers[-1].stop()
        with pytest.raises(
            StorageUnavailableError, match=r"s3://outage/probe/k: get_object failed after 2 attempts over 0.2 s"
        ):
            S3Store("outage", "probe", endpoint).read_bytes("k")
        from pipelines.definitions import defs

        instance = DagsterInstance.ephemeral()
        remote = build_resources(settings("s3://outage/landing", "s3://outage/warehouse", endpoint))
        failed = materialize(
            list(defs.assets),
            selection=AssetSelection.groups("ingest"),
            partition_key=DAY,
            resources=remote,
            instance=instance,
            raise_on_error=False,
        )
        assert not failed.success
        from dagster._serdes import serialize_value

        failure = next(e for e in failed.all_events if e.event_type_value == "STEP_FAILURE")
        assert "s3://outage/landing" in serialize_value(failure) and "failed after 2 attempts" in serialize_value(
            failure
        )

        restart()  # back: the rerun completes with the undisturbed outputs
        rerun = materialize(
            list(defs.assets),
            selection=AssetSelection.groups("ingest"),
            partition_key=DAY,
            resources=remote,
            instance=instance,
        )
        assert rerun.success
        local = tmp_path / "local"
        assert run(demo_landing.root, local, AssetSelection.groups("ingest")).success
        warehouse = S3Store("outage", "warehouse", endpoint)
        for name in ("item_catalog", "label_exports", "gold_labels", "production_predictions"):
            key = f"tables/{name}/{DAY}.parquet"
            assert warehouse.read_bytes(key) == (local / key).read_bytes()

        # the planted secret is nowhere: not in any event of either run, nor in the warehouse
        for result in (failed, rerun):
            for entry in instance.all_logs(result.run_id):
                assert SECRET not in serialize_value(entry)
        for key in warehouse.list():
            assert SECRET.encode() not in warehouse.read_bytes(key)
    finally:
        servers[-1].stop()
