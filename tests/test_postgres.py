"""Dagster instance storage on a real PostgreSQL server (Debian's postgresql), with deploy/dagster.yaml.

The server is started here, on a loopback port, by a non-root user (initdb refuses root; as
root the server runs as the `postgres` account). Runs, event logs, asset materializations,
check results and sensor cursors of a real `dagster asset materialize` land in PostgreSQL and
are read back through a second DagsterInstance, as a webserver on another machine would.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from conftest import REPO, SUBPROCESS_TIMEOUT, free_port
from dagster import AssetKey, DagsterEventType, DagsterInstance, build_sensor_context

from labelops.storage import LocalStore

BINARIES = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
# The parts of the production instance that need nothing but Dagster and PostgreSQL.
PORTABLE = ("storage", "run_coordinator", "run_retries", "retention", "telemetry")


def _as_server_user(command: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    """A throw-away PostgreSQL cluster on 127.0.0.1; yields a SQLAlchemy URL for database `dagster`."""
    if not BINARIES:
        pytest.fail("PostgreSQL server binaries are missing: `make test` installs Debian's postgresql")
    bin_dir = Path(BINARIES[-1])
    root = Path(tempfile.mkdtemp(prefix="labelops-pg-"))  # not under pytest's root-only temp dirs
    data, port = root / "data", free_port()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    subprocess.run(
        _as_server_user([str(bin_dir / "initdb"), "-D", str(data), "-U", "labelops", "--auth=trust", "-E", "UTF8"]),
        check=True,
        capture_output=True,
    )
    start = [
        str(bin_dir / "pg_ctl"),
        "-D",
        str(data),
        "-l",
        str(root / "server.log"),
        "-w",
        "-o",
        f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off",
        "start",
    ]
    subprocess.run(_as_server_user(start), check=True, capture_output=True)
    try:
        subprocess.run(
            [
                "psql",
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-U",
                "labelops",
                "-d",
                "postgres",
                "-c",
                "CREATE DATABASE dagster",
            ],
            check=True,
            capture_output=True,
        )
        yield f"postgresql+psycopg2://labelops@127.0.0.1:{port}/dagster"
    finally:
        subprocess.run(
            _as_server_user([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]), capture_output=True
        )
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def postgres_home(postgres: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A DAGSTER_HOME whose dagster.yaml is the production one minus the Kubernetes and S3 parts."""
    production = yaml.safe_load((REPO / "deploy" / "dagster.yaml").read_text())
    home = tmp_path_factory.mktemp("dagster-home")
    (home / "dagster.yaml").write_text(yaml.safe_dump({k: production[k] for k in PORTABLE}))
    return home


def test_a_materialization_is_stored_in_postgres(
    postgres: str, postgres_home: Path, demo_landing: LocalStore, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "DAGSTER_HOME": str(postgres_home),
        "DAGSTER_PG_URL": postgres,
        "LABELOPS_LANDING": str(demo_landing.root),
        "LABELOPS_WAREHOUSE": str(tmp_path / "wh"),
    }
    run = subprocess.run(
        [
            str(Path(sys.executable).parent / "dagster"),
            "asset",
            "materialize",
            "-m",
            "pipelines.definitions",
            "--select",
            "group:ingest",
            "--partition",
            "2024-06-13",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
    )
    assert run.returncode == 0, run.stderr[-3000:]

    os.environ["DAGSTER_PG_URL"] = postgres
    with DagsterInstance.from_config(str(postgres_home)) as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert type(instance.schedule_storage).__name__ == "PostgresScheduleStorage"
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        [record] = instance.get_run_records()
        assert record.dagster_run.is_success
        materialization = instance.fetch_materializations(AssetKey("label_exports"), limit=1).records[0]
        assert materialization.partition_key == "2024-06-13"
        assert materialization.asset_materialization.metadata["dagster/row_count"].value > 1000
        checks = instance.all_logs(record.dagster_run.run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION)
        assert {c.dagster_event.event_specific_data.check_name for c in checks} == {"files_readable"} and len(
            checks
        ) == 4

        from pipelines.automation import drift_sensor
        from pipelines.definitions import defs

        tick = drift_sensor.evaluate_tick(build_sensor_context(instance=instance, definitions=defs))
        assert "no new production_drift materializations" in tick.skip_message  # read from PostgreSQL
    tables = subprocess.run(
        [
            "psql",
            postgres.replace("+psycopg2", ""),
            "-Atc",
            "select count(*) from runs; select count(*) from event_logs; select count(*) from asset_keys",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    runs, events, asset_keys = map(int, tables)
    assert runs == 1 and events > 20 and asset_keys == 4
