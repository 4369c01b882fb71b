"""The outbox against the real Label Studio 1.23.2, on loopback: a project made from the generated labeling
config, with prediction validation on, imports the relabel batch's task file without an error; an answer made
through the API comes back in the plain JSON export and the project's parser reads it.

Label Studio runs from its own venv (`make label-studio` installs it into .venv-ls; `make test` points
LABELOPS_LABEL_STUDIO at it); without that executable the test is skipped.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import REPO, SUBPROCESS_TIMEOUT, free_port
from dagster import AssetSelection, DagsterInstance, materialize
from label_studio_checks import invalid_results

from labelops.formats import parse_file
from labelops.storage import LocalStore
from pipelines.definitions import NIGHTLY_ASSETS
from pipelines.demo import PRODUCTION_FRAMES
from resources import build_resources
from resources.settings import Settings

pytestmark = pytest.mark.e2e

DAY = "2024-06-14"  # guideline v2 is in force: the day whose batch the old task files could not import
EXECUTABLE = os.environ.get("LABELOPS_LABEL_STUDIO", "")
# Label Studio 1.23 only logs failed prediction validation unless this feature flag is on.
VALIDATION_FLAG = "fflag_feat_utc_210_prediction_validation_15082025"


@dataclass
class Server:
    process: subprocess.Popen
    url: str
    token: str
    log: Path

    def ready(self) -> Server:
        """Wait for the first start's database migrations, which take a minute or more on a busy machine."""
        deadline = time.monotonic() + SUBPROCESS_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"label-studio exited with {self.process.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                if self.call("GET", "/health") == {"status": "UP"}:
                    return self
            except OSError:
                pass
            time.sleep(2)
        pytest.fail(f"label-studio did not answer within {SUBPROCESS_TIMEOUT} s:\n{self.log.read_text()[-3000:]}")

    def call(self, method: str, path: str, body: bytes | dict | list | None = None) -> dict | list:
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={"Authorization": f"Token {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=300) as response:
            return json.loads(response.read())


@pytest.fixture(scope="module")
def label_studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A fresh Label Studio with its own data directory and an admin whose API token only this test knows."""
    if not EXECUTABLE or not os.access(EXECUTABLE, os.X_OK):
        pytest.skip(
            "LABELOPS_LABEL_STUDIO names no label-studio executable; `make label-studio` installs 1.23.2 "
            "into .venv-ls and `make test` sets it"
        )
    data = tmp_path_factory.mktemp("label-studio")
    port, token = free_port(), secrets.token_hex(20)
    url = f"http://127.0.0.1:{port}"
    # Label Studio reads FOO from LABEL_STUDIO_FOO, then HEARTEX_FOO, then FOO: the prefixed names set here win.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABEL_STUDIO_", "HEARTEX_"))}
    env.update(
        {
            "LABEL_STUDIO_USERNAME": "labelops-e2e@example.com",
            "LABEL_STUDIO_PASSWORD": secrets.token_urlsafe(16),
            "LABEL_STUDIO_USER_TOKEN": token,
            "LABEL_STUDIO_BASE_DATA_DIR": str(data),
            "LABEL_STUDIO_HOST": url,
            "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
            "LATEST_VERSION_CHECK": "false",
            VALIDATION_FLAG: "true",
            "HOME": str(data),
            "XDG_DATA_HOME": str(data),  # it creates its default data folders even when told another
        }
    )
    log = data / "label-studio.log"
    with log.open("wb") as out:
        # --enable-legacy-api-token: the token above is a plain API token, not a JWT refresh token
        process = subprocess.Popen(
            [
                EXECUTABLE,
                "start",
                "--no-browser",
                "--internal-host",
                "127.0.0.1",
                "--port",
                str(port),
                "--data-dir",
                str(data),
                "--enable-legacy-api-token",
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield Server(process, url, token, log)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def relabel_outbox(landing: Path, warehouse: Path) -> Path:
    """The day's nightly run, then its relabel batch, as the drift sensor requests it (with the demo's frames)."""
    from pipelines.definitions import defs

    settings = Settings(
        landing=str(landing),
        warehouse=str(warehouse),
        s3_endpoint_url=None,
        config_dir=str(REPO / "config"),
        start_date="2024-01-01",
    )
    resources, instance = build_resources(settings), DagsterInstance.ephemeral()
    assert materialize(
        list(defs.assets), selection=NIGHTLY_ASSETS, partition_key=DAY, resources=resources, instance=instance
    ).success
    config = {"ops": {"relabel_batch": {"config": {"production_uri_template": PRODUCTION_FRAMES}}}}
    assert materialize(
        list(defs.assets),
        selection=AssetSelection.assets("relabel_batch"),
        partition_key=DAY,
        resources=resources,
        instance=instance,
        run_config=config,
    ).success
    return warehouse / "outbox" / "relabel" / DAY


def test_relabel_batch_imports_into_a_project_built_from_its_config_and_answers_come_back(
    label_studio: Server, demo_landing: LocalStore, tmp_path: Path
) -> None:
    outbox = relabel_outbox(demo_landing.root, tmp_path / "wh")  # while Label Studio migrates its database
    server = label_studio.ready()
    config = (outbox / "labeling_config.v2.xml").read_text()
    task_file = (outbox / f"relabel-{DAY}.label_studio.json").read_bytes()
    tasks = json.loads(task_file)
    assert invalid_results(tasks, config.encode()) == []  # the offline check agrees with the server below
    project = server.call("POST", "/api/projects", {"title": f"relabel {DAY}", "label_config": config})
    assert sorted(project["parsed_label_config"]) == ["label", "polygon", "scene"]

    # validation is on: a result under a control the config lacks fails the whole import
    stale = [
        {
            "data": {"image": "s3://x/a.jpg", "item_id": "a"},
            "predictions": [
                {
                    "result": [
                        {
                            "id": "p0",
                            "type": "choices",
                            "from_name": "prediction",
                            "to_name": "image",
                            "value": {"choices": ["car"]},
                        }
                    ]
                }
            ],
        }
    ]
    with pytest.raises(urllib.error.HTTPError) as refused:
        server.call("POST", f"/api/projects/{project['id']}/import?commit_to_project=true", stale)
    assert refused.value.code == 400 and b"'prediction' not found in configuration" in refused.value.read()

    imported = server.call(
        "POST", f"/api/projects/{project['id']}/import?commit_to_project=true&return_task_ids=true", task_file
    )
    assert imported["task_count"] == len(tasks) and imported["annotation_count"] == 0
    assert imported["prediction_count"] == sum("predictions" in t for t in tasks) > 0

    listed = server.call("GET", f"/api/tasks?project={project['id']}&page_size={len(tasks)}&fields=all")["tasks"]
    by_item = {t["data"]["item_id"]: t for t in listed}
    assert len(by_item) == len(tasks)
    assert sum(t["meta"]["honeypot"] for t in listed) == sum(t["meta"]["honeypot"] for t in tasks)
    sent = next(
        t for t in tasks if any(r["type"] == "rectanglelabels" for p in t.get("predictions", []) for r in p["result"])
    )
    result = [{k: v for k, v in r.items() if k != "score"} for r in sent["predictions"][0]["result"]]
    corrected = next(r for r in result if r["type"] == "rectanglelabels")
    corrected["value"]["rectanglelabels"] = ["truck"]  # the labeler corrects one box and accepts the rest
    result.append(
        {"id": "a-scene", "type": "choices", "from_name": "scene", "to_name": "image", "value": {"choices": ["urban"]}}
    )
    task_id = by_item[sent["data"]["item_id"]]["id"]
    server.call(
        "POST", f"/api/tasks/{task_id}/annotations?project={project['id']}", {"result": result, "lead_time": 4.2}
    )

    export = server.call("GET", f"/api/projects/{project['id']}/export?exportType=JSON")  # answered tasks only
    assert [(t["data"]["item_id"], t["meta"]) for t in export] == [(sent["data"]["item_id"], sent["meta"])]
    parsed = parse_file("label_studio_export.json", json.dumps(export).encode())
    objects = parsed.objects
    expected = sorted(r["value"][r["type"]][0] for r in result)
    assert len(objects) == len(result) and sorted(objects["label"]) == expected
    types = [r["type"] for r in result]
    assert objects["kind"].value_counts().to_dict() == {
        "bbox": types.count("rectanglelabels"),
        "classification": types.count("choices"),
    }
    assert set(objects["item_id"]) == {sent["data"]["item_id"]} and set(objects["guideline_version"]) == {"v2"}
    assert objects["annotator_id"].str.fullmatch(r"\d+").all()  # the plain download's numeric completed_by
    assert parsed.skipped == {"prediction": 1}
