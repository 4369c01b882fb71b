"""Annotators' privacy: keyed pseudonyms (labelops.privacy), the settings that ask for them, and real
materializations of a landing zone whose exports name annotators by e-mail, searched afterwards for any
address or the key in every warehouse file, every event of the runs, and the UI's view of the resources."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import os
import re
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from conftest import REPO, copy_store
from dagster import AssetKey, AssetSelection, DagsterInstance, Definitions, materialize
from dagster._core.remote_representation.external_data import RepositorySnap
from dagster._serdes import serialize_value

from labelops import ingest, privacy
from labelops.demo import ANNOTATORS, email
from labelops.storage import LocalStore
from pipelines.definitions import NIGHTLY_ASSETS
from resources import build_resources
from resources.io_manager import read_table
from resources.settings import ANNOTATOR_IDS, ANNOTATOR_KEY, Settings, annotator_ids_mode

DAY, NEXT_DAY = "2024-06-12", "2024-06-13"
KEY, OTHER_KEY = "k3y-9f2c41d7e0b85a6f3c19d4e7a2b6c8f0", "another-k3y-5b7e19c2d4a6f8e0"
PSEUDONYM = re.compile(r"^ann-[0-9a-f]{16}$")
# vendor B's people, named by e-mail in every shape the exports deliver
MARIA, JAN, LI, OLGA = (f"{n}@vendor-b.example" for n in ("maria.rossi", "jan.kowalski", "li.wei", "olga.ivanova"))
EMAILS = [email(a.name) for a in ANNOTATORS] + [MARIA, JAN, LI, OLGA]


# ---------------------------------------------------------------------------------------------- unit


def test_pseudonym_is_a_truncated_hmac_sha256() -> None:
    expected = "ann-" + hmac.new(KEY.encode(), MARIA.encode(), hashlib.sha256).hexdigest()[:16]
    assert privacy.pseudonym(MARIA, KEY) == privacy.pseudonym(MARIA, KEY.encode()) == expected
    assert PSEUDONYM.match(expected)
    assert privacy.pseudonym(MARIA, OTHER_KEY) != expected
    assert privacy.pseudonym(JAN, KEY) != expected


def test_pseudonyms_hash_each_distinct_value_once(monkeypatch: pytest.MonkeyPatch) -> None:
    values = pd.Series([MARIA, JAN, None, MARIA, "w01", JAN] * 1000, index=range(10, 6010), name="annotator_id")
    calls: list[str] = []
    original = privacy.pseudonym
    monkeypatch.setattr(privacy, "pseudonym", lambda value, key: calls.append(value) or original(value, key))
    out = privacy.pseudonyms(values, KEY)
    assert sorted(calls) == sorted([MARIA, JAN, "w01"])
    assert out.index.equals(values.index) and out.name == "annotator_id" and out.dtype == values.dtype
    assert out.isna().equals(values.isna())
    assert (out[values == MARIA] == original(MARIA, KEY)).all()
    assert out.dropna().str.match(PSEUDONYM.pattern).all()
    assert out.nunique() == values.nunique()


def test_an_empty_key_is_an_error() -> None:
    with pytest.raises(ValueError, match="key is empty"):
        privacy.pseudonym(MARIA, "")
    with pytest.raises(ValueError, match="key is empty"):
        privacy.pseudonyms(pd.Series([], dtype=object), b"")
    with pytest.raises(ValueError, match="key is empty"):
        privacy.pseudonymize_emails(pd.Series(["no address here"]), "")


def test_emails_inside_free_text_become_pseudonyms() -> None:
    quoted = f"CSV parse error: Expected 3 columns, got 4: {OLGA},img-1,car,x"
    texts = pd.Series([quoted, None, "line 3: bad", "@ alone"])
    out = privacy.pseudonymize_emails(texts, KEY)
    assert out[0] == f"CSV parse error: Expected 3 columns, got 4: {privacy.pseudonym(OLGA, KEY)},img-1,car,x"
    assert pd.isna(out[1]) and out[2] == "line 3: bad" and out[3] == "@ alone"


def test_protect_exports_by_mode(tmp_path: Path) -> None:
    landing = LocalStore(tmp_path)
    write_vendor_b(landing, DAY)
    delivered = ingest.read_exports(landing, DAY)
    assert set(delivered.table["annotator_id"]) == {MARIA, JAN, LI}
    assert privacy.protect_exports(delivered, privacy.AS_DELIVERED, "") is delivered
    with pytest.raises(ValueError, match="unknown annotator id mode 'hash'"):
        privacy.protect_exports(delivered, "hash", KEY)

    protected = privacy.protect_exports(delivered, privacy.PSEUDONYMIZE, KEY)
    assert list(protected.table["annotator_id"]) == [privacy.pseudonym(a, KEY) for a in delivered.table["annotator_id"]]
    assert MARIA not in protected.table.to_string()
    assert privacy.pseudonym(MARIA, KEY) in "".join(protected.table["attributes"])  # the reviewer column
    others = [c for c in delivered.table.columns if c not in ("annotator_id", "attributes")]
    pd.testing.assert_frame_equal(protected.table[others], delivered.table[others])  # annotation ids are unchanged
    error = protected.ledger.loc[protected.ledger["status"] == "error", "error"].item()
    assert OLGA not in error and privacy.pseudonym(OLGA, KEY) in error and "Expected 3 columns" in error
    # as ingest applies it: before content ids, so no id is derived from an e-mail
    ingested = ingest.read_exports(
        landing, DAY, protect=lambda e: privacy.protect_exports(e, privacy.PSEUDONYMIZE, KEY)
    )
    assert list(ingested.table["annotator_id"]) == list(protected.table["annotator_id"])
    assert delivered.emptied["annotator_id"].tolist() == [MARIA]
    assert ingested.emptied["annotator_id"].tolist() == [privacy.pseudonym(MARIA, KEY)]
    assert not set(ingested.table["content_id"]) & set(delivered.table["content_id"])


def test_settings_modes(monkeypatch: pytest.MonkeyPatch) -> None:
    assert annotator_ids_mode({}) == privacy.AS_DELIVERED
    assert annotator_ids_mode({ANNOTATOR_IDS: "pseudonymize", ANNOTATOR_KEY: KEY}) == privacy.PSEUDONYMIZE
    with pytest.raises(ValueError, match="LABELOPS_ANNOTATOR_IDS='hashed' is not a mode"):
        annotator_ids_mode({ANNOTATOR_IDS: "hashed"})
    for environ in ({ANNOTATOR_IDS: "pseudonymize"}, {ANNOTATOR_IDS: "pseudonymize", ANNOTATOR_KEY: ""}):
        with pytest.raises(ValueError, match="needs the secret key in LABELOPS_ANNOTATOR_KEY, which is unset or empty"):
            annotator_ids_mode(environ)
    monkeypatch.setenv(ANNOTATOR_IDS, "pseudonymize")
    monkeypatch.setenv(ANNOTATOR_KEY, KEY)
    settings = Settings.from_env()
    assert settings.annotator_ids == privacy.PSEUDONYMIZE and KEY not in repr(settings)


def test_code_location_without_key_does_not_load() -> None:
    env = {k: v for k, v in os.environ.items() if k != ANNOTATOR_KEY} | {ANNOTATOR_IDS: "pseudonymize"}
    loaded = subprocess.run(
        [sys.executable, "-c", "import pipelines.definitions"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert loaded.returncode != 0
    assert (
        "ValueError: LABELOPS_ANNOTATOR_IDS=pseudonymize needs the secret key in LABELOPS_ANNOTATOR_KEY, "
        "which is unset or empty"
    ) in loaded.stderr


def test_the_ui_sees_the_key_variable_not_its_value(monkeypatch: pytest.MonkeyPatch) -> None:
    """The webserver displays what the code location's snapshot holds, resource configuration included."""
    from pipelines.definitions import defs

    monkeypatch.setenv(ANNOTATOR_IDS, "pseudonymize")
    monkeypatch.setenv(ANNOTATOR_KEY, KEY)
    snapshot = serialize_value(
        RepositorySnap.from_def(
            Definitions(assets=list(defs.assets), resources=build_resources(Settings.from_env())).get_repository_def()
        )
    )
    assert KEY not in snapshot and ANNOTATOR_KEY in snapshot


# ------------------------------------------------------------------------------ real materializations


def write_vendor_b(store: LocalStore, day: str) -> None:
    """Vendor B's exports of a day: Label Studio with ``completed_by`` as an e-mail string and as a user
    object, a CSV with a reviewer's e-mail in an extra column, and a CSV whose broken row names someone."""
    stamp = day.replace("-", "")
    image = [f"/data/upload/12/img-{stamp}-{n:04d}.jpg" for n in range(3)]

    def annotation(a_id: int, who: object, scene: str) -> dict:
        size = {"original_width": 1920.0, "original_height": 1080.0}
        box = {"x": 10.0, "y": 20.0, "width": 30.0, "height": 40.0, "rotation": 0, "rectanglelabels": ["car"]}
        # a polygon too: choices with rectangles and no polygon crash read_exports today (reported separately)
        outline = {"points": [[50.0, 50.0], [60.0, 50.0], [55.0, 70.0]], "polygonlabels": ["pedestrian"]}
        return {
            "id": a_id,
            "completed_by": who,
            "created_at": f"{day}T09:00:00Z",
            "result": [
                {"id": "s", "type": "choices", "from_name": "scene", "to_name": "image", "value": {"choices": [scene]}},
                {"id": "b", "type": "rectanglelabels", "from_name": "label", "to_name": "image", **size, "value": box},
                {
                    "id": "p",
                    "type": "polygonlabels",
                    "from_name": "label",
                    "to_name": "image",
                    **size,
                    "value": outline,
                },
            ],
        }

    tasks = [
        {
            "id": 900 + n,
            "data": {"image": image[n]},
            "annotations": [
                annotation(9000 + 10 * n, MARIA, "highway"),
                annotation(9001 + 10 * n, {"id": 41, "email": JAN}, "urban"),
            ],
        }
        for n in range(3)
    ]
    # a cancelled annotation names its labeler too (kept beside the table: it withdraws an earlier version)
    tasks[0]["annotations"].append(annotation(9100, MARIA, "urban") | {"was_cancelled": True})
    store.write_bytes(f"exports/{day}/label_studio_vendor-b.json", json.dumps(tasks).encode())
    rows = "".join(f"{LI},img-{stamp}-{n:04d},urban,{MARIA}\n" for n in range(3))
    review = "annotator,item_id,label,reviewer\n" + rows
    store.write_bytes(f"exports/{day}/vendor_b_review.csv", review.encode())
    broken = f"annotator,item_id,label\n{LI},img-{stamp}-0000,urban\n{OLGA},img-{stamp}-0001,urban,late\n"
    store.write_bytes(f"exports/{day}/vendor_b_broken.csv", broken.encode())


@pytest.fixture(scope="module")
def landing(demo_landing: LocalStore, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("privacy-landing")
    copy_store(demo_landing, str(root))
    for day in (DAY, NEXT_DAY):
        write_vendor_b(LocalStore(root), day)
    return root


def run(landing: Path, warehouse: Path, key: str, selection: AssetSelection, day: str, instance: DagsterInstance):
    from pipelines.definitions import defs

    settings = Settings(
        landing=str(landing),
        warehouse=str(warehouse),
        s3_endpoint_url=None,
        config_dir=str(REPO / "config"),
        start_date="2024-01-01",
        annotator_ids=privacy.PSEUDONYMIZE,
    )
    with pytest.MonkeyPatch.context() as env:
        env.setenv(ANNOTATOR_KEY, key)  # the resource reads it in the step, as a code location does
        result = materialize(
            list(defs.assets),
            selection=selection,
            partition_key=day,
            resources=build_resources(settings),
            instance=instance,
        )
    assert result.success
    return result


@pytest.fixture(scope="module")
def pseudonymized(landing: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DagsterInstance, list[str]]:
    """The nightly run of DAY (reports, snapshot and outboxes included), then the ingest of NEXT_DAY."""
    warehouse, instance = tmp_path_factory.mktemp("privacy-warehouse"), DagsterInstance.ephemeral()
    runs = [
        run(landing, warehouse, KEY, NIGHTLY_ASSETS, DAY, instance).run_id,
        run(landing, warehouse, KEY, AssetSelection.groups("ingest"), NEXT_DAY, instance).run_id,
    ]
    return warehouse, instance, runs


def readable(path: Path) -> Iterator[str]:
    """Every text a file holds, decoded: Parquet pages are compressed and zip members deflated, so their
    raw bytes could hide an address that a reader of the table or the archive would see."""
    data = path.read_bytes()
    yield data.decode("utf-8", errors="replace")
    if path.suffix == ".parquet":
        table = pq.read_table(path)
        yield json.dumps(table.to_pylist(), default=str)
        yield str(table.schema.metadata)
    if path.suffix == ".zip":
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            yield from (archive.read(name).decode("utf-8", errors="replace") for name in archive.namelist())


def table(warehouse: Path, name: str, day: str) -> pd.DataFrame:
    """A day's table as the pipeline reads it (label_votes' days are layers over the day before)."""
    return read_table(LocalStore(warehouse), f"tables/{name}/{day}.parquet")


def test_no_address_nor_key_in_the_warehouse(pseudonymized: tuple[Path, DagsterInstance, list[str]]) -> None:
    warehouse, _, _ = pseudonymized
    files = [p for p in sorted(warehouse.rglob("*")) if p.is_file()]
    kinds = {p.relative_to(warehouse).parts[0] for p in files}
    assert {"tables", "ledgers", "reports", "snapshots", "outbox"} <= kinds, kinds
    assert (warehouse / "reports" / "quality" / f"{DAY}.html").exists()
    for path in files:
        for text in readable(path):
            found = [e for e in EMAILS if e in text] + (["the key"] if KEY in text else [])
            assert not found, f"{path.relative_to(warehouse)} holds {found}"


def test_no_address_nor_key_in_events_or_metadata(pseudonymized: tuple[Path, DagsterInstance, list[str]]) -> None:
    _, instance, runs = pseudonymized
    materialized = set()
    for run_id in runs:
        for entry in instance.all_logs(run_id):
            text = serialize_value(entry)
            assert not [e for e in EMAILS if e in text] and KEY not in text, text[:500]
            if entry.dagster_event and entry.dagster_event.is_step_materialization:
                materialized.add(entry.dagster_event.asset_key.to_user_string())
    assert {"label_exports", "quarantined_annotations", "annotator_scores", "quality_report"} <= materialized
    exports = instance.get_latest_materialization_event(AssetKey("label_exports")).asset_materialization
    assert exports.metadata["annotator_ids"].value == "pseudonymize"
    assert privacy.pseudonym(MARIA, KEY) in exports.metadata["by_annotator"].value


def test_pseudonyms_flow_downstream_and_stay_stable(pseudonymized: tuple[Path, DagsterInstance, list[str]]) -> None:
    warehouse, _, _ = pseudonymized
    day, next_day = table(warehouse, "label_exports", DAY), table(warehouse, "label_exports", NEXT_DAY)
    assert day["annotator_id"].str.match(PSEUDONYM.pattern).all()
    for person in (MARIA, JAN, LI, *(email(a.name) for a in ANNOTATORS)):
        assert privacy.pseudonym(person, KEY) in set(day["annotator_id"]), person
    assert privacy.pseudonym("w01", KEY) in set(day["annotator_id"])  # crowd worker ids too
    same_people = set(day["annotator_id"]) & set(next_day["annotator_id"])
    assert {privacy.pseudonym(p, KEY) for p in (MARIA, JAN, LI, email(ANNOTATORS[0].name))} <= same_people
    scores = table(warehouse, "annotator_scores", DAY)
    assert scores["annotator_id"].str.match(PSEUDONYM.pattern).all()
    assert privacy.pseudonym(email("ann04"), KEY) in set(scores.loc[scores["flagged"], "annotator_id"])  # still flagged
    ledger = pd.read_csv(warehouse / "ledgers" / "label_exports" / f"{DAY}.csv")
    broken = ledger.loc[ledger["source_file"].str.endswith("vendor_b_broken.csv"), "error"].item()
    assert privacy.pseudonym(OLGA, KEY) in broken


def test_another_key_gives_other_pseudonyms(
    landing: Path, tmp_path: Path, pseudonymized: tuple[Path, DagsterInstance, list[str]]
) -> None:
    run(landing, tmp_path, OTHER_KEY, AssetSelection.groups("ingest"), DAY, DagsterInstance.ephemeral())
    first, other = table(pseudonymized[0], "label_exports", DAY), table(tmp_path, "label_exports", DAY)
    assert len(first) == len(other) and not set(first["annotator_id"]) & set(other["annotator_id"])
    assert list(first["annotation_id"]) == list(other["annotation_id"])
    renamed = dict(zip(other["annotator_id"], first["annotator_id"], strict=True))  # one person, one pseudonym per key
    assert len(renamed) == len(set(renamed.values())) == other["annotator_id"].nunique()
