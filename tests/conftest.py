"""Shared fixtures: the shipped real data, a seeded demo landing zone, and a real S3 server."""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

# Tests write landing files moments before they ingest them: read them at once (the settle time that defers
# files still being uploaded is tested on its own, with its own setting).
os.environ.setdefault("LABELOPS_SETTLE_SECONDS", "0")

from labelops.demo import Seeded, seed_landing
from labelops.storage import LocalStore, open_store

REPO = Path(__file__).resolve().parents[1]
REAL = REPO / "data" / "real"
# A subprocess (a `dagster` CLI run, a killed run) gets this long before it counts as hung: on a loaded 2-core
# machine a full materialization can take several times its quiet-machine duration.
SUBPROCESS_TIMEOUT = 900


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def real() -> Path:
    return REAL


@pytest.fixture(scope="session")
def demo_seeded(tmp_path_factory: pytest.TempPathFactory) -> tuple[LocalStore, Seeded]:
    """The demo landing zone, seeded once per session (read-only for tests), and the truth behind it."""
    store = LocalStore(tmp_path_factory.mktemp("demo-landing"))
    return store, seed_landing(store)


@pytest.fixture(scope="session")
def demo_landing(demo_seeded: tuple[LocalStore, Seeded]) -> LocalStore:
    return demo_seeded[0]


@dataclass(frozen=True)
class DemoNights:
    defs: Any
    resources: dict[str, Any]
    instance: Any
    warehouse: Path


@pytest.fixture(scope="session")
def demo_nights(demo_landing: LocalStore, tmp_path_factory: pytest.TempPathFactory) -> DemoNights:
    """The nightly job on the demo's 2024-06-10 and -11 (quiet) and -13 (the second drift day), once per session,
    in one instance. Tests read it; a test that writes into it (a relabel batch, a guideline backfill) copies the
    warehouse first or writes only what no other test reads."""
    from dagster import DagsterInstance, materialize

    from pipelines.definitions import NIGHTLY_ASSETS, defs
    from resources import build_resources
    from resources.settings import Settings

    warehouse = tmp_path_factory.mktemp("demo-nights")
    settings = Settings(
        landing=str(demo_landing.root),
        warehouse=str(warehouse),
        s3_endpoint_url=None,
        config_dir=str(REPO / "config"),
        start_date="2024-01-01",
    )
    resources, instance = build_resources(settings), DagsterInstance.ephemeral()
    for day in DEMO_NIGHTS:
        assert materialize(
            list(defs.assets), selection=NIGHTLY_ASSETS, partition_key=day, resources=resources, instance=instance
        ).success
    return DemoNights(defs, resources, instance, warehouse)


DEMO_NIGHTS = ("2024-06-10", "2024-06-11", "2024-06-13")


@dataclass(frozen=True)
class DemoLoop:
    root: Path  # landing/ (the reviewers' answers are written into it), warehouse/, config/
    seeded: Seeded
    sent: Any  # the 2024-06-12 relabel ledger as the drift sensor's run wrote it

    def copy(self, target: Path) -> Path:
        """A private copy for a test that writes (a rerun, a new guideline version)."""
        shutil.copytree(self.root, target)
        return target


@pytest.fixture(scope="session")
def demo_loop(demo_seeded: tuple[LocalStore, Seeded], tmp_path_factory: pytest.TempPathFactory) -> DemoLoop:
    """The demo's last four nights as `make demo` runs them (drift sensor, relabel batch, simulated answers
    delivered the next day), once per session. Read-only: a test that writes uses `copy`."""
    import pandas as pd
    from dagster import DagsterInstance

    from labelops.demo import days
    from pipelines.demo import run_nights

    source, seeded = demo_seeded
    root = tmp_path_factory.mktemp("demo-loop")
    shutil.copytree(source.root, root / "landing")
    shutil.copytree(REPO / "config", root / "config")
    assert run_nights(days()[10:], DagsterInstance.ephemeral(), demo_resources(root), seeded.truth) == []
    sent = pd.read_csv(root / "warehouse" / "outbox" / "relabel" / "ledger" / "2024-06-12.csv")
    return DemoLoop(root, seeded, sent)


def demo_resources(root: Path, config: Path | None = None) -> dict[str, Any]:
    """The resources of a warehouse laid out as `demo_loop`'s: landing/ and warehouse/ under one root, the
    guidelines in ``config`` (default: the root's config/)."""
    from resources import build_resources
    from resources.settings import Settings

    return build_resources(
        Settings(
            landing=str(root / "landing"),
            warehouse=str(root / "warehouse"),
            s3_endpoint_url=None,
            config_dir=str(config or root / "config"),
            start_date="2024-06-01",
        )
    )


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3 endpoint over HTTP on 127.0.0.1 (moto in server mode), not a mock."""
    from moto.server import ThreadedMotoServer

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint: str, request: pytest.FixtureRequest) -> str:
    """A fresh bucket per test."""
    import boto3

    name = "labelops-" + request.node.name.lower().replace("_", "-")[:40].strip("-")
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=name)
    return name


def copy_store(source: LocalStore, target_url: str, endpoint: str | None = None) -> None:
    target = open_store(target_url, endpoint_url=endpoint)
    for key in source.list():
        target.write_bytes(key, source.read_bytes(key))


# A test is end-to-end (`-m e2e`; `make test-fast` leaves them out) when it drives real Dagster runs or real servers:
# the fixtures below start or need them, and these modules run the rest (CLI subprocesses, PostgreSQL, Chromium,
# Label Studio, killed runs).
E2E_FIXTURES = {"demo_landing", "demo_seeded", "demo_nights", "demo_loop", "s3_endpoint", "s3_bucket"}
E2E_MODULES = {
    "test_postgres",
    "test_ui",
    "test_label_studio_e2e",
    "test_reliability",
    "test_backfill",
    "test_ingest_assets",
    "test_validation_assets",
    "test_quality_assets",
    "test_state_days",
    "test_demo_loop",
    "test_guideline_change",
    "test_automation",
    "test_privacy",
    "test_corpus",
    "test_field_exports",
    "test_reports",
    "test_outbox",
    "test_coverage",
    "test_drift",
}


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """With `-m "not e2e"` the whole-e2e modules are not even imported: their imports (the Dagster definitions,
    Playwright, the Dagster webserver's client) cost the fast run about 2 s of collection for no test."""
    if config.option.markexpr.replace(" ", "") == "note2e" and collection_path.stem in E2E_MODULES:
        return True
    return None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        module = item.module.__name__ if item.module is not None else ""
        if module in E2E_MODULES or E2E_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.e2e)
