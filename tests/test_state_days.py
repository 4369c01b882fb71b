"""The label state across days through Dagster: reruns change nothing, and a re-materialized day is followed,
in day order, by the later days folding into it again (the state sensor)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO, demo_resources
from dagster import AssetKey, DagsterInstance, RunRequest, build_sensor_context, materialize

from labelops import snapshots
from labelops.formats import parse_file
from labelops.schema import annotation_identity
from labelops.storage import LocalStore
from resources.io_manager import read_table

DAYS = ["2024-06-10", "2024-06-11", "2024-06-12"]
STATE_TABLES = ("item_index", "label_votes", "label_state", "annotator_model")


def landing(root: Path, *, late: bool = False) -> LocalStore:
    """Six items judged on three days by different annotators (rounds that pool); with ``late``, a fourth
    annotator's judgments of the first day arrive (a late export, delivered into that day's folder)."""
    store = LocalStore(root)
    store.write_bytes(
        f"items/{DAYS[0]}/items.csv",
        (
            "item_id,uri,width,height,session_id\n"
            + "".join(f"img-{i},s3://b/img-{i}.jpg,1000,500,s{i}\n" for i in range(6))
        ).encode(),
    )
    judges = {DAYS[0]: ("u1", "u2"), DAYS[1]: ("u3",), DAYS[2]: ("u4",)}
    for day, who in judges.items():
        rows = ["item_id,annotator_id,label,x,y,w,h"]
        for i in range(6):
            for name in who:
                scene = "highway" if (i + len(name) + int(name[1:])) % 3 == 0 else "urban"
                rows += [f"img-{i},{name},{scene},,,,", f"img-{i},{name},car,{100 + i},50,80,40"]
        store.write_bytes(f"exports/{day}/crowd.csv", ("\n".join(rows) + "\n").encode())
    if late:
        rows = ["item_id,annotator_id,label,x,y,w,h"] + [f"img-{i},u9,highway,,,," for i in range(6)]
        store.write_bytes(f"exports/{DAYS[0]}/crowd_late.csv", ("\n".join(rows) + "\n").encode())
    return store


def night(resources: dict, instance: DagsterInstance, day: str) -> None:
    from pipelines.definitions import defs

    selection = list(defs.resolve_job_def("nightly_job").asset_layer.executable_asset_keys)
    assert materialize(
        list(defs.assets), selection=selection, partition_key=day, resources=resources, instance=instance
    ).success


def state_bytes(warehouse: Path) -> dict[str, bytes]:
    return {f"{t}/{d}": (warehouse / "tables" / t / f"{d}.parquet").read_bytes() for t in STATE_TABLES for d in DAYS}


def snapshot_bytes(warehouse: Path) -> dict[str, bytes]:
    version = snapshots.latest(LocalStore(warehouse))
    root = warehouse / "snapshots" / str(version)
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def three_nights(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, DagsterInstance]:
    root = tmp_path_factory.mktemp("nights")
    landing(root / "landing")
    resources, instance = demo_resources(root, REPO / "config"), DagsterInstance.ephemeral()
    for day in DAYS:
        night(resources, instance, day)
    return root, resources, instance


def test_rerunning_any_day_leaves_the_state_and_the_latest_snapshot_byte_identical(three_nights) -> None:
    root, resources, instance = three_nights
    warehouse = root / "warehouse"
    states, version, snapshot = (
        state_bytes(warehouse),
        snapshots.latest(LocalStore(warehouse)),
        snapshot_bytes(warehouse),
    )
    votes = read_table(LocalStore(warehouse), f"tables/label_votes/{DAYS[2]}.parquet")
    assert votes.groupby("item_id").size().eq(8).all()  # 2 + 1 + 1 annotators, a scene and a box each, pooled
    for day in (DAYS[1], DAYS[0], DAYS[2]):
        night(resources, instance, day)
        assert state_bytes(warehouse) == states, day
        assert snapshots.latest(LocalStore(warehouse)) == version and snapshot_bytes(warehouse) == snapshot, day


def test_the_first_night_fits_and_the_next_keep_the_fit_until_a_warehouse_lacks_it(
    three_nights, tmp_path: Path
) -> None:
    """annotator_model through Dagster: the first day's fit is kept by the next day (a week has not passed), the
    first day of guideline v2 (DAYS[2]) fits again, and so does a day whose previous fit is missing (a warehouse
    from before annotator_model)."""
    root, _, _ = three_nights
    store = LocalStore(root / "warehouse")
    models = [read_table(store, f"tables/annotator_model/{day}.parquet") for day in DAYS]
    assert set(models[0]["fitted_on"]) == {DAYS[0]} and models[0]["annotator_id"].nunique() == 2
    pd.testing.assert_frame_equal(models[1], models[0])  # u3's judgments labeled with u1's and u2's fit
    assert set(models[2]["fitted_on"]) == {DAYS[2]} and models[2]["annotator_id"].nunique() == 4
    copy = tmp_path / "root"
    copy.mkdir()
    (copy / "landing").symlink_to(root / "landing")
    shutil.copytree(root / "warehouse", copy / "warehouse")
    (copy / "warehouse" / "tables" / "annotator_model" / f"{DAYS[0]}.parquet").unlink()
    night(demo_resources(copy, REPO / "config"), DagsterInstance.ephemeral(), DAYS[1])
    refit = read_table(LocalStore(copy / "warehouse"), f"tables/annotator_model/{DAYS[1]}.parquet")
    assert set(refit["fitted_on"]) == {DAYS[1]} and refit["annotator_id"].nunique() == 3


def test_a_re_materialized_day_refolds_the_later_days_in_order(tmp_path: Path) -> None:
    """A late export for the first day: rerunning that day makes the state sensor fold the second day, then the
    third (with a snapshot); the result equals a warehouse that had the late export from the start."""
    from pipelines.automation import state_sensor
    from pipelines.definitions import defs

    store = landing(tmp_path / "landing")
    resources, instance = demo_resources(tmp_path, REPO / "config"), DagsterInstance.ephemeral()
    for day in DAYS:
        night(resources, instance, day)
    quiet = state_sensor.evaluate_tick(build_sensor_context(instance=instance, definitions=defs))
    assert not quiet.run_requests and "every day of the label state" in quiet.skip_message
    landing(store.root, late=True)
    night(resources, instance, DAYS[0])
    requested = []
    for _ in range(4):
        result = state_sensor.evaluate_tick(build_sensor_context(instance=instance, definitions=defs))
        if not result.run_requests:
            break
        [request] = result.run_requests
        assert isinstance(request, RunRequest)
        requested.append((request.partition_key, sorted(k.to_user_string() for k in request.asset_selection)))
        assert materialize(
            list(defs.assets),
            selection=request.asset_selection,
            partition_key=request.partition_key,
            resources=resources,
            instance=instance,
        ).success
    assert requested == [
        (DAYS[1], ["annotator_model", "item_index", "label_state", "label_votes"]),
        (DAYS[2], ["annotator_model", "dataset_snapshot", "item_index", "label_state", "label_votes"]),
    ]
    assert "every day of the label state" in result.skip_message  # caught up

    fresh = tmp_path / "fresh"
    landing(fresh / "landing", late=True)
    fresh_resources, fresh_instance = demo_resources(fresh, REPO / "config"), DagsterInstance.ephemeral()
    for day in DAYS:
        night(fresh_resources, fresh_instance, day)
    assert state_bytes(tmp_path / "warehouse") == state_bytes(fresh / "warehouse")
    ours, theirs = LocalStore(tmp_path / "warehouse"), LocalStore(fresh / "warehouse")
    for table in ("items.parquet", "labels.parquet"):
        pd.testing.assert_frame_equal(
            snapshots.read_table(ours, snapshots.latest(ours), table),
            snapshots.read_table(theirs, snapshots.latest(theirs), table),
        )
    state = pd.read_parquet(tmp_path / "warehouse" / "tables" / "label_state" / f"{DAYS[2]}.parquet")
    assert state.drop_duplicates("item_id")["judgments"].eq(9).all()  # + the late vote


def day_votes(tmp_path: Path, day: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The vote table of ``day`` in the test's warehouse, and its judgments that count (neither superseded by an
    answer nor replaced by an edit)."""
    votes = read_table(LocalStore(tmp_path / "warehouse"), f"tables/label_votes/{day}.parquet")
    return votes, votes[votes["superseded_by"].isna() & votes["replaced_on"].isna()]


def ls_task(task: int, item: str, annotations: list[tuple[int, int, str, list[tuple[str, float]]]]) -> dict:
    """A Label Studio task; each annotation is (id, user, updated_at, [(box label, x %), ...]) plus a scene."""
    return {
        "id": task,
        "data": {"image": f"s3://b/{item}.jpg", "item_id": item},
        "annotations": [
            {
                "id": ann,
                "completed_by": user,
                "updated_at": stamp,
                "result": [
                    *(
                        {
                            "id": f"b{n}",
                            "type": "rectanglelabels",
                            "from_name": "label",
                            "to_name": "image",
                            "original_width": 1000,
                            "original_height": 500,
                            "value": {"x": x, "y": 20.0, "width": 10.0, "height": 10.0, "rectanglelabels": [label]},
                        }
                        for n, (label, x) in enumerate(boxes)
                    ),
                    {
                        "id": "s",
                        "type": "choices",
                        "from_name": "scene",
                        "to_name": "image",
                        "value": {"choices": ["urban"]},
                    },
                ],
            }
            for ann, user, stamp, boxes in annotations
        ],
    }


def test_a_cumulative_re_export_with_an_edited_annotation_counts_the_edit_once(tmp_path: Path) -> None:
    """Teams export the whole Label Studio project every day: unchanged annotations come again (copies), and an
    annotation edited since replaces its earlier version instead of voting a second time; an edit undone
    brings the earlier version back."""
    store = LocalStore(tmp_path / "landing")
    store.write_bytes(
        f"items/{DAYS[0]}/items.csv",
        b"item_id,uri,width,height\nimg-0,s3://b/img-0.jpg,1000,500\nimg-1,s3://b/img-1.jpg,1000,500\n",
    )
    first = [
        ls_task(
            1,
            "img-0",
            [
                (101, 1, f"{DAYS[0]}T09:00:00Z", [("car", 10.0), ("bus", 50.0)]),
                (102, 2, f"{DAYS[0]}T09:30:00Z", [("car", 10.2), ("bus", 50.1)]),
            ],
        )
    ]
    edited = [
        ls_task(
            1,
            "img-0",
            [
                (101, 1, f"{DAYS[1]}T08:00:00Z", [("car", 10.0), ("truck", 50.0)]),
                (102, 2, f"{DAYS[0]}T09:30:00Z", [("car", 10.2), ("bus", 50.1)]),
            ],
        ),
        ls_task(2, "img-1", [(103, 1, f"{DAYS[1]}T08:30:00Z", [("car", 30.0)])]),
    ]
    store.write_bytes(f"exports/{DAYS[0]}/project-3.json", json.dumps(first).encode())
    store.write_bytes(f"exports/{DAYS[1]}/project-3.json", json.dumps(edited).encode())
    resources, instance = demo_resources(tmp_path, REPO / "config"), DagsterInstance.ephemeral()
    for day in DAYS[:2]:
        night(resources, instance, day)
    votes, live = day_votes(tmp_path, DAYS[1])
    mine = live[(live["item_id"] == "img-0") & (live["annotator_id"] == "1")].sort_values(["kind", "label"])
    assert mine[["kind", "label"]].values.tolist() == [["bbox", "car"], ["bbox", "truck"], ["classification", "urban"]]
    assert votes.loc[votes["replaced_on"].notna(), "label"].tolist() == ["bus"]  # annotator 1's old version
    assert live.groupby("annotator_id").size().to_dict() == {"1": 5, "2": 3}  # 3 on img-0 and 2 on img-1; 3
    quarantined = pd.read_parquet(tmp_path / "warehouse" / "tables" / "quarantined_annotations" / f"{DAYS[1]}.parquet")
    assert quarantined["duplicate_of"].notna().sum() == 5  # the unchanged judgments, delivered again
    # the edit undone the next day: the first version counts again, the edited one no longer
    reverted = [
        first[0] | {"annotations": [a | {"updated_at": f"{DAYS[2]}T08:00:00Z"} for a in first[0]["annotations"]]}
    ]
    store.write_bytes(f"exports/{DAYS[2]}/project-3.json", json.dumps(reverted + edited[1:]).encode())
    night(resources, instance, DAYS[2])
    votes, live = day_votes(tmp_path, DAYS[2])
    mine = live[(live["item_id"] == "img-0") & (live["annotator_id"] == "1")].sort_values(["kind", "label"])
    assert mine[["kind", "label", "export_date"]].astype(str).values.tolist() == [
        ["bbox", "bus", DAYS[0]],
        ["bbox", "car", DAYS[0]],
        ["classification", "urban", DAYS[0]],
    ]
    assert votes.loc[votes["replaced_on"].notna(), ["label", "replaced_on"]].values.tolist() == [["truck", DAYS[2]]]
    assert len(votes) == 9 and live.groupby("annotator_id").size().to_dict() == {"1": 5, "2": 3}
    state = pd.read_parquet(tmp_path / "warehouse" / "tables" / "label_state" / f"{DAYS[2]}.parquet")
    boxes = state[(state["item_id"] == "img-0") & (state["kind"] == "bbox")]
    assert sorted(boxes["label"]) == ["bus", "car"] and boxes["support"].eq(2).all()  # both annotators again


def test_the_state_sensor_leaves_half_written_days_to_their_own_runs() -> None:
    from pipelines.automation import STATE_ASSETS, first_stale_day

    index, votes, labels = STATE_ASSETS
    running = {index: {DAYS[0]: 1, DAYS[1]: 5}, votes: {DAYS[0]: 2, DAYS[1]: 6}, labels: {DAYS[0]: 3}}
    assert first_stale_day(running) is None  # DAYS[1]'s run has not written label_state yet
    rerun = {index: {DAYS[0]: 7, DAYS[1]: 5}, votes: {DAYS[0]: 8, DAYS[1]: 6}, labels: {DAYS[0]: 9, DAYS[1]: 4}}
    assert first_stale_day(rerun) == (DAYS[1], 9)


def one_night(tmp_path: Path, items: list[str], exports: dict[str, bytes]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The nightly job for the first day on a landing zone of ``items`` and the day's ``exports`` (file name to
    bytes): the vote table, and the file ledger by file."""
    store = LocalStore(tmp_path / "landing")
    catalog = "item_id,uri,width,height\n" + "".join(f"{item},s3://b/{item}.jpg,1000,500\n" for item in items)
    store.write_bytes(f"items/{DAYS[0]}/items.csv", catalog.encode())
    for name, data in exports.items():
        store.write_bytes(f"exports/{DAYS[0]}/{name}", data)
    night(demo_resources(tmp_path, REPO / "config"), DagsterInstance.ephemeral(), DAYS[0])
    votes = read_table(LocalStore(tmp_path / "warehouse"), f"tables/label_votes/{DAYS[0]}.parquet")
    ledger = pd.read_csv(tmp_path / "warehouse" / "ledgers" / "label_exports" / f"{DAYS[0]}.csv")
    return votes, ledger.set_index("source_file")


def test_two_exports_of_one_project_on_one_day_count_the_latest_version(tmp_path: Path) -> None:
    """The project exported at 10:00 and again at 18:00, an annotation edited in between: its 18:00 version is
    read, the 10:00 one counted as skipped; the unchanged annotation is a copy, as always."""
    unchanged = (102, 2, f"{DAYS[0]}T09:30:00Z", [("car", 10.2), ("bus", 50.1)])
    morning = [ls_task(1, "img-0", [(101, 1, f"{DAYS[0]}T09:00:00Z", [("car", 10.0), ("bus", 50.0)]), unchanged])]
    evening = [ls_task(1, "img-0", [(101, 1, f"{DAYS[0]}T17:00:00Z", [("car", 10.0), ("truck", 50.0)]), unchanged])]
    votes, ledger = one_night(
        tmp_path,
        ["img-0"],
        {"project-3-1000.json": json.dumps(morning).encode(), "project-3-1800.json": json.dumps(evening).encode()},
    )
    mine = votes[votes["annotator_id"] == "1"].sort_values(["kind", "label"])
    assert mine[["kind", "label"]].values.tolist() == [["bbox", "car"], ["bbox", "truck"], ["classification", "urban"]]
    assert len(votes) == 6 and votes["replaced_on"].isna().all()  # 3 + 3: nothing votes twice
    morning_row = ledger.loc[f"exports/{DAYS[0]}/project-3-1000.json"]
    assert morning_row["rows"] == 3 and json.loads(morning_row["skipped"]) == {"superseded annotation version": 3}
    assert ledger.loc[f"exports/{DAYS[0]}/project-3-1800.json", ["rows", "duplicates"]].tolist() == [6, 3]


def cvat_task(
    task: int | str,
    assignee: str,
    updated: str,
    images: list[tuple[str, list[tuple[str, float]], str]],
    *,
    created: str | None = None,
) -> bytes:
    """A CVAT for images 1.1 task export as CVAT writes it: the task's id, last update and assignee in its meta (and
    its creation time, which CVAT writes and some hand-made exports lack), and every image of the task with its
    shapes as they stand (boxes (label, xtl), then the scene tag)."""
    shapes = [
        f'<image id="{frame}" name="{name}.jpg" width="1000" height="500">'
        + "".join(
            f'<box label="{label}" source="manual" occluded="0" xtl="{x}" ytl="100" xbr="{x + 80}" ybr="140" '
            'z_order="0"></box>'
            for label, x in boxes
        )
        + (f'<tag label="{scene}" source="manual"></tag>' if scene else "")  # "": no scene tag
        + "</image>"
        for frame, (name, boxes, scene) in enumerate(images)
    ]
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n<annotations><version>1.1</version><meta><task>'
        f"<id>{task}</id><name>drive {task}</name><size>{len(images)}</size><mode>annotation</mode>"
        + (f"<created>{created}</created>" if created else "")
        + f"<updated>{updated}</updated><owner><username>lead</username></owner>"
        f"<assignee><username>{assignee}</username></assignee></task></meta>{''.join(shapes)}</annotations>"
    ).encode()


def test_a_cvat_task_exported_again_after_an_edit_counts_the_edit_once(tmp_path: Path) -> None:
    """Teams export a CVAT task again every day it is worked on, and the export holds every image as it stands: the
    unchanged shapes come again (copies), and an image whose shapes an annotator edited replaces that annotator's
    earlier shapes of it in the task (a box relabelled no longer votes as its old label too); an edit undone brings
    the earlier shapes back. The second annotator's task is left alone."""
    store = LocalStore(tmp_path / "landing")
    store.write_bytes(
        f"items/{DAYS[0]}/items.csv",
        b"item_id,uri,width,height\nimg-0,s3://b/img-0.jpg,1000,500\nimg-1,s3://b/img-1.jpg,1000,500\n",
    )
    first = [("img-0", [("car", 100.0), ("bus", 300.0)], "urban"), ("img-1", [("car", 50.0)], "highway")]
    edited = [("img-0", [("car", 100.0), ("truck", 300.0)], "urban"), first[1]]
    other = [("img-0", [("car", 101.0), ("bus", 301.0)], "urban"), ("img-1", [("car", 51.0)], "highway")]
    store.write_bytes(f"exports/{DAYS[0]}/task_7.xml", cvat_task(7, "alice", f"{DAYS[0]} 09:00:00+00:00", first))
    store.write_bytes(f"exports/{DAYS[0]}/task_8.xml", cvat_task(8, "bob", f"{DAYS[0]} 09:30:00+00:00", other))
    store.write_bytes(f"exports/{DAYS[1]}/task_7.xml", cvat_task(7, "alice", f"{DAYS[1]} 08:00:00+00:00", edited))
    resources, instance = demo_resources(tmp_path, REPO / "config"), DagsterInstance.ephemeral()
    for day in DAYS[:2]:
        night(resources, instance, day)
    votes, live = day_votes(tmp_path, DAYS[1])
    mine = live[(live["item_id"] == "img-0") & (live["annotator_id"] == "alice")].sort_values(["kind", "label"])
    assert mine[["kind", "label"]].values.tolist() == [["bbox", "car"], ["bbox", "truck"], ["classification", "urban"]]
    assert votes.loc[votes["replaced_on"].notna(), ["annotator_id", "label"]].values.tolist() == [["alice", "bus"]]
    assert live.groupby("annotator_id").size().to_dict() == {"alice": 5, "bob": 5}
    quarantined = pd.read_parquet(tmp_path / "warehouse" / "tables" / "quarantined_annotations" / f"{DAYS[1]}.parquet")
    assert quarantined["duplicate_of"].notna().sum() == 4  # img-0's car and scene, img-1's car and scene
    # the edit undone the next day: alice's first shapes of img-0 count again, the truck no longer
    store.write_bytes(f"exports/{DAYS[2]}/task_7.xml", cvat_task(7, "alice", f"{DAYS[2]} 08:00:00+00:00", first))
    night(resources, instance, DAYS[2])
    votes, live = day_votes(tmp_path, DAYS[2])
    assert votes.loc[votes["replaced_on"].notna(), ["label", "replaced_on"]].values.tolist() == [["truck", DAYS[2]]]
    assert live.groupby("annotator_id").size().to_dict() == {"alice": 5, "bob": 5}
    state = pd.read_parquet(tmp_path / "warehouse" / "tables" / "label_state" / f"{DAYS[2]}.parquet")
    boxes = state[(state["item_id"] == "img-0") & (state["kind"] == "bbox")]
    assert sorted(boxes["label"]) == ["bus", "car"] and boxes["support"].eq(2).all()  # both annotators again


def test_a_cvat_task_reassigned_counts_its_shapes_once(tmp_path: Path) -> None:
    """CVAT records no author per shape: a task handed from alice to carol is exported with carol as the annotator
    of every shape it holds, alice's unchanged ones too. Named with its creation time, the task is one annotation
    whoever holds it, so carol's export replaces alice's shapes (one set of boxes, not two reaching the quorum);
    bob's task, created at another time, is left alone."""
    store = LocalStore(tmp_path / "landing")
    store.write_bytes(
        f"items/{DAYS[0]}/items.csv",
        b"item_id,uri,width,height\nimg-0,s3://b/img-0.jpg,1000,500\nimg-1,s3://b/img-1.jpg,1000,500\n",
    )
    first = [("img-0", [("car", 100.0), ("bus", 300.0)], "urban"), ("img-1", [("car", 50.0)], "highway")]
    carols = [("img-0", [("car", 100.0), ("truck", 300.0)], "urban"), first[1]]
    other = [("img-0", [("car", 101.0), ("bus", 301.0)], "urban")]
    born = {7: "2024-05-01 08:00:00.123456+00:00", 8: "2024-05-01 08:05:00.654321+00:00"}
    store.write_bytes(
        f"exports/{DAYS[0]}/task_7.xml", cvat_task(7, "alice", f"{DAYS[0]} 09:00:00+00:00", first, created=born[7])
    )
    store.write_bytes(
        f"exports/{DAYS[0]}/task_8.xml", cvat_task(8, "bob", f"{DAYS[0]} 09:30:00+00:00", other, created=born[8])
    )
    store.write_bytes(
        f"exports/{DAYS[1]}/task_7.xml", cvat_task(7, "carol", f"{DAYS[1]} 08:00:00+00:00", carols, created=born[7])
    )
    resources, instance = demo_resources(tmp_path, REPO / "config"), DagsterInstance.ephemeral()
    for day in DAYS[:2]:
        night(resources, instance, day)
    votes, live = day_votes(tmp_path, DAYS[1])
    assert set(votes.loc[votes["replaced_on"].notna(), "annotator_id"]) == {"alice"}
    assert votes["replaced_on"].notna().sum() == 5  # all of alice's shapes, the unchanged ones too
    assert live.groupby("annotator_id").size().to_dict() == {"bob": 3, "carol": 5}
    state = pd.read_parquet(tmp_path / "warehouse" / "tables" / "label_state" / f"{DAYS[1]}.parquet")
    boxes = state[(state["item_id"] == "img-1") & (state["kind"] == "bbox")]
    assert boxes.empty  # img-1's car is one labeler's box, below the box quorum of two (alice's and carol's before)


def test_a_cvat_task_reassigned_within_a_day_reads_the_latest_export(tmp_path: Path) -> None:
    """The same hand-over between two exports of one day: the evening's export (carol's) is the task as it stands,
    alice's morning shapes are an older version of it."""
    images = [("img-0", [("car", 100.0)], "urban")]
    created = "2024-05-01 08:00:00.123456+00:00"
    votes, ledger = one_night(
        tmp_path,
        ["img-0"],
        {
            "task_7-1000.xml": cvat_task(7, "alice", f"{DAYS[0]} 10:00:00+00:00", images, created=created),
            "task_7-1800.xml": cvat_task(7, "carol", f"{DAYS[0]} 18:00:00+00:00", images, created=created),
        },
    )
    assert votes["annotator_id"].tolist() == ["carol", "carol"]
    assert json.loads(ledger.loc[f"exports/{DAYS[0]}/task_7-1000.xml", "skipped"]) == {
        "superseded annotation version": 2
    }


def test_only_a_cvat_task_with_its_creation_time_leaves_the_annotator_out() -> None:
    """A Label Studio id may hold "@" (a converted file's string task ids): it keeps its annotator."""
    ids = pd.Series(["task=7@2024-05-01 08:00:00+00:00", "task=scene@1/annotation=5", "task=7"])
    keys = annotation_identity(pd.Series(["i", "i", "i"]), pd.Series(["alice", "bob", "carol"]), ids)
    assert keys.tolist() == ["i|task=7@2024-05-01 08:00:00+00:00|", "i|task=scene@1/annotation=5|bob", "i|task=7|carol"]


def test_a_cvat_task_id_holding_an_at_sign_does_not_pass_for_a_named_task(tmp_path: Path) -> None:
    """A hand-made export with no creation time whose task id is our task's id and creation time joined by "@" is
    another task (its id is escaped): it replaces none of our shapes."""
    born = "2024-05-01 08:00:00+00:00"
    store = LocalStore(tmp_path / "landing")
    store.write_bytes(f"items/{DAYS[0]}/items.csv", b"item_id,uri,width,height\nimg-0,s3://b/img-0.jpg,1000,500\n")
    ours = cvat_task(7, "alice", f"{DAYS[0]} 09:00:00+00:00", [("img-0", [("car", 100.0)], "urban")], created=born)
    forged = cvat_task(f"7@{born}", "mallory", f"{DAYS[1]} 09:00:00+00:00", [("img-0", [("bus", 300.0)], "urban")])
    store.write_bytes(f"exports/{DAYS[0]}/task_7.xml", ours)
    store.write_bytes(f"exports/{DAYS[1]}/forged.xml", forged)
    resources, instance = demo_resources(tmp_path, REPO / "config"), DagsterInstance.ephemeral()
    for day in DAYS[:2]:
        night(resources, instance, day)
    votes, live = day_votes(tmp_path, DAYS[1])
    assert votes["replaced_on"].isna().all() and live.groupby("annotator_id").size().to_dict() == {
        "alice": 2,
        "mallory": 2,
    }
    assert votes.loc[votes["annotator_id"] == "mallory", "annotation_key"].str.contains("task=7%40", regex=False).all()


def test_two_cvat_instances_tasks_of_one_id_are_two_annotations(tmp_path: Path) -> None:
    """A vendor's CVAT numbers its tasks from 1 as ours does: its task 7, created at another time, is another
    task, whose labeler's shapes count beside ours on the same day and after an edit on the next."""
    store = LocalStore(tmp_path / "landing")
    store.write_bytes(f"items/{DAYS[0]}/items.csv", b"item_id,uri,width,height\nimg-0,s3://b/img-0.jpg,1000,500\n")
    ours = cvat_task(
        7,
        "alice",
        f"{DAYS[0]} 09:00:00+00:00",
        [("img-0", [("car", 100.0)], "urban")],
        created="2024-05-01 08:00:00+00:00",
    )
    vendor = [("img-0", [("car", 102.0)], "urban")]
    store.write_bytes(f"exports/{DAYS[0]}/task_7.xml", ours)
    store.write_bytes(
        f"exports/{DAYS[0]}/vendor_task_7.xml",
        cvat_task(7, "dmitri", f"{DAYS[0]} 11:00:00+00:00", vendor, created="2024-05-20 14:00:00+00:00"),
    )
    edited = [("img-0", [("car", 104.0)], "urban")]
    store.write_bytes(
        f"exports/{DAYS[1]}/vendor_task_7.xml",
        cvat_task(7, "dmitri", f"{DAYS[1]} 08:00:00+00:00", edited, created="2024-05-20 14:00:00+00:00"),
    )
    resources, instance = demo_resources(tmp_path, REPO / "config"), DagsterInstance.ephemeral()
    for day in DAYS[:2]:
        night(resources, instance, day)
    votes, live = day_votes(tmp_path, DAYS[1])
    assert live.groupby("annotator_id").size().to_dict() == {"alice": 2, "dmitri": 2}
    assert votes.loc[votes["replaced_on"].notna(), ["annotator_id", "x"]].values.tolist() == [["dmitri", 102.0]]


def cvat_project(tasks: list[tuple[int, str, str, list[tuple[str, list[tuple[str, float]], str]]]]) -> bytes:
    """A CVAT for images 1.1 project export as CVAT writes it: each task (id, assignee, updated, images) in the meta,
    and every image with its task's id and subset, numbered across the project's tasks in task order."""
    meta = "".join(
        f"<task><id>{task}</id><name>drive {task}</name><updated>{updated}</updated><subset>Train</subset>"
        f"<owner><username>lead</username></owner><assignee><username>{assignee}</username></assignee></task>"
        for task, assignee, updated, _ in tasks
    )
    images, frame = [], 0
    for task, _, _, shapes in tasks:
        for name, boxes, scene in shapes:
            images.append(
                f'<image id="{frame}" name="{name}.jpg" subset="Train" task_id="{task}" width="1000" height="500">'
                + "".join(
                    f'<box label="{label}" source="manual" occluded="0" xtl="{x}" ytl="100" xbr="{x + 80}" '
                    'ybr="140" z_order="0"></box>'
                    for label, x in boxes
                )
                + f'<tag label="{scene}" source="manual"></tag></image>'
            )
            frame += 1
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n<annotations><version>1.1</version><meta><project><id>3</id>'
        f"<tasks>{meta}</tasks></project></meta>{''.join(images)}</annotations>"
    ).encode()


def test_a_cvat_edit_replaces_across_task_and_project_exports_and_renumbered_images(tmp_path: Path) -> None:
    """Task 8 is exported alone on Monday and within its project on Tuesday, after an edit: the two exports name its
    image alike (a single-task export's images take the meta's task id), so the edit replaces. On Wednesday task 7 is
    deleted from the project, which renumbers task 8's images (a project export numbers them across its tasks), and
    another edit still replaces: an image is told apart by its name, not its number."""
    store = LocalStore(tmp_path / "landing")
    store.write_bytes(
        f"items/{DAYS[0]}/items.csv",
        b"item_id,uri,width,height\nimg-0,s3://b/img-0.jpg,1000,500\nimg-1,s3://b/img-1.jpg,1000,500\n",
    )
    seven = (7, "alice", f"{DAYS[0]} 09:00:00+00:00", [("img-0", [("car", 100.0)], "urban")])
    store.write_bytes(
        f"exports/{DAYS[0]}/task_8.xml",
        cvat_task(8, "bob", f"{DAYS[0]} 09:00:00+00:00", [("img-1", [("bus", 300.0)], "highway")]),
    )
    store.write_bytes(
        f"exports/{DAYS[1]}/project_3.xml",
        cvat_project([seven, (8, "bob", f"{DAYS[1]} 09:00:00+00:00", [("img-1", [("truck", 300.0)], "highway")])]),
    )
    store.write_bytes(
        f"exports/{DAYS[2]}/project_3.xml",
        cvat_project([(8, "bob", f"{DAYS[2]} 09:00:00+00:00", [("img-1", [("truck", 310.0)], "highway")])]),
    )
    resources, instance = demo_resources(tmp_path, REPO / "config"), DagsterInstance.ephemeral()
    for day in DAYS:
        night(resources, instance, day)
    votes, live = day_votes(tmp_path, DAYS[2])
    bob = live[live["annotator_id"] == "bob"].sort_values("kind")
    assert bob[["kind", "label"]].values.tolist() == [["bbox", "truck"], ["classification", "highway"]]
    assert bob["x"].iloc[0] == 310.0
    replaced = votes[votes["replaced_on"].notna()].sort_values("replaced_on")
    assert replaced[["label", "x", "replaced_on"]].values.tolist() == [
        ["bus", 300.0, DAYS[1]],
        ["truck", 300.0, DAYS[2]],
    ]
    assert live.groupby("annotator_id").size().to_dict() == {"alice": 2, "bob": 2}


def test_two_exports_of_one_cvat_task_on_one_day_count_the_latest(tmp_path: Path) -> None:
    """The task exported at 10:00 and again at 18:00 (its `updated` later), an image edited in between: the 18:00
    export is the task as it stands, so its shapes are read and the 10:00 ones counted as skipped, the unchanged
    image's too (CVAT dates the task, not its images)."""
    morning = [("img-0", [("car", 100.0), ("bus", 300.0)], "urban"), ("img-1", [("car", 50.0)], "highway")]
    evening = [("img-0", [("car", 100.0), ("truck", 300.0)], "urban"), morning[1]]
    votes, ledger = one_night(
        tmp_path,
        ["img-0", "img-1"],
        {
            "task_7-1000.xml": cvat_task(7, "alice", f"{DAYS[0]} 10:00:00+00:00", morning),
            "task_7-1800.xml": cvat_task(7, "alice", f"{DAYS[0]} 18:00:00+00:00", evening),
        },
    )
    mine = votes[votes["item_id"] == "img-0"].sort_values(["kind", "label"])
    assert mine[["kind", "label"]].values.tolist() == [["bbox", "car"], ["bbox", "truck"], ["classification", "urban"]]
    assert len(votes) == 5 and votes["replaced_on"].isna().all()  # 3 + 2: nothing votes twice
    morning_row = ledger.loc[f"exports/{DAYS[0]}/task_7-1000.xml"]
    assert morning_row["rows"] == 0 and json.loads(morning_row["skipped"]) == {"superseded annotation version": 5}
    assert ledger.loc[f"exports/{DAYS[0]}/task_7-1800.xml", ["rows", "duplicates"]].tolist() == [5, 0]


def withdrawn(annotation: dict, how: str, stamp: str) -> dict:
    """A Label Studio annotation as a later export gives it once its labeler cancelled (skipped) it or deleted
    everything it held."""
    return annotation | {"updated_at": stamp, "result": []} | ({"was_cancelled": True} if how == "cancelled" else {})


@pytest.mark.parametrize("how", ["empty", "cancelled"])
def test_an_annotation_emptied_or_cancelled_later_withdraws_its_earlier_version(tmp_path: Path, how: str) -> None:
    """A cumulative export gives an annotation whose labeler deleted every region (or skipped the task after
    submitting) with no result: its earlier judgments stop counting, the other annotator's stay; filled in again,
    its judgments count again (copies of the first version)."""
    store = LocalStore(tmp_path / "landing")
    store.write_bytes(f"items/{DAYS[0]}/items.csv", b"item_id,uri,width,height\nimg-0,s3://b/img-0.jpg,1000,500\n")
    first = [
        ls_task(
            1,
            "img-0",
            [
                (101, 1, f"{DAYS[0]}T09:00:00Z", [("car", 10.0), ("bus", 50.0)]),
                (102, 2, f"{DAYS[0]}T09:30:00Z", [("car", 10.2), ("bus", 50.1)]),
            ],
        )
    ]
    later = [first[0] | {"annotations": [withdrawn(first[0]["annotations"][0], how, f"{DAYS[1]}T08:00:00Z")]}]
    later[0]["annotations"].append(first[0]["annotations"][1])
    again = [first[0] | {"annotations": [a | {"updated_at": f"{DAYS[2]}T08:00:00Z"} for a in first[0]["annotations"]]}]
    for day, tasks in zip(DAYS, (first, later, again), strict=True):
        store.write_bytes(f"exports/{day}/project-3.json", json.dumps(tasks).encode())
    resources, instance = demo_resources(tmp_path, REPO / "config"), DagsterInstance.ephemeral()
    for day in DAYS[:2]:
        night(resources, instance, day)
    emptied = pd.read_parquet(tmp_path / "warehouse" / "ledgers" / "emptied" / f"{DAYS[1]}.parquet")
    assert emptied["source_ref"].tolist() == [f"task=1/annotation=101/{how}"]
    votes, live = day_votes(tmp_path, DAYS[1])
    assert votes.loc[votes["replaced_on"].notna(), "annotator_id"].tolist() == ["1", "1", "1"]
    assert (votes["replaced_on"].dropna() == DAYS[1]).all()
    assert live.groupby("annotator_id").size().to_dict() == {"2": 3}
    state = pd.read_parquet(tmp_path / "warehouse" / "tables" / "label_state" / f"{DAYS[1]}.parquet")
    assert state["current_judgments"].eq(3).all() and state["judgments"].eq(6).all()  # the withdrawal stays lineage
    night(resources, instance, DAYS[2])
    votes, live = day_votes(tmp_path, DAYS[2])
    assert len(votes) == 6 and votes["replaced_on"].isna().all()  # the first version counts again
    assert live.groupby("annotator_id").size().to_dict() == {"1": 3, "2": 3}


def test_a_cvat_image_left_without_shapes_withdraws_its_earlier_shapes(tmp_path: Path) -> None:
    """A CVAT task export lists every image of the task: one whose shapes its annotator deleted comes with none,
    and its earlier shapes stop counting; the task's other image is unchanged (copies)."""
    store = LocalStore(tmp_path / "landing")
    store.write_bytes(
        f"items/{DAYS[0]}/items.csv",
        b"item_id,uri,width,height\nimg-0,s3://b/img-0.jpg,1000,500\nimg-1,s3://b/img-1.jpg,1000,500\n",
    )
    first = [("img-0", [("car", 100.0), ("bus", 300.0)], "urban"), ("img-1", [("car", 50.0)], "highway")]
    cleared = [("img-0", [], ""), first[1]]
    store.write_bytes(f"exports/{DAYS[0]}/task_7.xml", cvat_task(7, "alice", f"{DAYS[0]} 09:00:00+00:00", first))
    store.write_bytes(f"exports/{DAYS[1]}/task_7.xml", cvat_task(7, "alice", f"{DAYS[1]} 08:00:00+00:00", cleared))
    resources, instance = demo_resources(tmp_path, REPO / "config"), DagsterInstance.ephemeral()
    for day in DAYS[:2]:
        night(resources, instance, day)
    votes, live = day_votes(tmp_path, DAYS[1])
    assert sorted(votes.loc[votes["replaced_on"].notna(), "label"]) == ["bus", "car", "urban"]
    assert set(votes.loc[votes["replaced_on"].notna(), "item_id"]) == {"img-0"}
    assert live["item_id"].tolist() == ["img-1", "img-1"]


def test_an_annotation_cancelled_after_its_first_export_that_day_keeps_nothing(tmp_path: Path) -> None:
    """The project exported at 10:00 and at 18:00, an annotation cancelled in between: the 18:00 version (none) is
    the annotation as it stands, so the 10:00 judgments are skipped as an older version, and nothing votes."""
    kept = (102, 2, f"{DAYS[0]}T09:30:00Z", [("car", 10.2)])
    morning = [ls_task(1, "img-0", [(101, 1, f"{DAYS[0]}T09:00:00Z", [("car", 10.0), ("bus", 50.0)]), kept])]
    evening = [morning[0] | {"annotations": list(morning[0]["annotations"])}]
    evening[0]["annotations"][0] = withdrawn(evening[0]["annotations"][0], "cancelled", f"{DAYS[0]}T17:00:00Z")
    votes, ledger = one_night(
        tmp_path,
        ["img-0"],
        {"project-3-1000.json": json.dumps(morning).encode(), "project-3-1800.json": json.dumps(evening).encode()},
    )
    assert votes["annotator_id"].tolist() == ["2", "2"] and votes["replaced_on"].isna().all()
    morning_row = ledger.loc[f"exports/{DAYS[0]}/project-3-1000.json"]
    assert json.loads(morning_row["skipped"]) == {"superseded annotation version": 3}


def test_an_answer_emptied_later_stays_the_answer(tmp_path: Path) -> None:
    """An answer to a relabel request is final for what it covers: a later export that gives it empty does not
    bring the item's superseded labels back (it says nothing a later round should undo)."""
    store = LocalStore(tmp_path / "landing")
    store.write_bytes(f"items/{DAYS[0]}/items.csv", b"item_id,uri,width,height\nimg-0,s3://b/img-0.jpg,1000,500\n")
    answer = ls_task(9, "img-0", [(901, 5, f"{DAYS[0]}T09:00:00Z", [("truck", 30.0)])])
    answer["data"]["batch_id"] = "relabel-2024-06-09"
    store.write_bytes(f"exports/{DAYS[0]}/answers.json", json.dumps([answer]).encode())
    emptied = answer | {"annotations": [withdrawn(answer["annotations"][0], "empty", f"{DAYS[1]}T08:00:00Z")]}
    store.write_bytes(f"exports/{DAYS[1]}/answers.json", json.dumps([emptied]).encode())
    resources, instance = demo_resources(tmp_path, REPO / "config"), DagsterInstance.ephemeral()
    for day in DAYS[:2]:
        night(resources, instance, day)
    votes, live = day_votes(tmp_path, DAYS[1])
    assert votes["replaced_on"].isna().all() and live["answer_to"].notna().all() and len(live) == 2


def test_an_answer_emptied_in_a_later_export_of_its_day_stays_the_answer(tmp_path: Path) -> None:
    """The same rule within a day: the project exported at 10:00 with the answer and at 18:00 with it emptied.
    The emptied version is not read as the later one (it would hide the answer), and nothing is withdrawn."""
    answer = ls_task(9, "img-0", [(901, 5, f"{DAYS[0]}T09:00:00Z", [("truck", 30.0)])])
    answer["data"]["batch_id"] = "relabel-2024-06-09"
    emptied = answer | {"annotations": [withdrawn(answer["annotations"][0], "empty", f"{DAYS[0]}T17:00:00Z")]}
    votes, ledger = one_night(
        tmp_path,
        ["img-0"],
        {"answers-1000.json": json.dumps([answer]).encode(), "answers-1800.json": json.dumps([emptied]).encode()},
    )
    assert len(votes) == 2 and votes["answer_to"].notna().all() and votes["replaced_on"].isna().all()
    assert ledger.loc[f"exports/{DAYS[0]}/answers-1000.json", "rows"] == 2
    assert pd.read_parquet(tmp_path / "warehouse" / "ledgers" / "emptied" / f"{DAYS[0]}.parquet").empty


def test_another_instances_annotations_with_the_same_ids_are_no_edits_of_ours(tmp_path: Path) -> None:
    """A vendor's Label Studio imports our task file and numbers tasks and annotations from 1 as ours does: its
    annotation 101 of task 1, by its own labeler, is a judgment of its own, on the day ours arrives (not a later
    version that hides ours) and on a later day (not an edit that replaces ours)."""
    store = LocalStore(tmp_path / "landing")
    store.write_bytes(f"items/{DAYS[0]}/items.csv", b"item_id,uri,width,height\nimg-0,s3://b/img-0.jpg,1000,500\n")
    ours = [ls_task(1, "img-0", [(101, 1, f"{DAYS[0]}T09:00:00Z", [("car", 10.0), ("bus", 50.0)])])]
    vendor = ls_task(1, "img-0", [(101, 1, f"{DAYS[0]}T11:00:00Z", [("car", 10.3), ("bus", 50.2)])])
    vendor["annotations"][0]["completed_by"] = {"id": 1, "email": "labeler@vendor.example"}
    store.write_bytes(f"exports/{DAYS[0]}/project-3.json", json.dumps(ours).encode())
    store.write_bytes(f"exports/{DAYS[0]}/vendor-project-1.json", json.dumps([vendor]).encode())
    later = vendor | {"annotations": [vendor["annotations"][0] | {"updated_at": f"{DAYS[1]}T08:00:00Z"}]}
    later["annotations"][0]["result"][0]["value"]["x"] = 10.4  # the vendor's labeler moved a box
    store.write_bytes(f"exports/{DAYS[1]}/vendor-project-1.json", json.dumps([later]).encode())
    resources, instance = demo_resources(tmp_path, REPO / "config"), DagsterInstance.ephemeral()
    for day in DAYS[:2]:
        night(resources, instance, day)
    votes, live = day_votes(tmp_path, DAYS[1])
    assert live.groupby("annotator_id").size().to_dict() == {"1": 3, "labeler@vendor.example": 3}
    assert votes.loc[votes["replaced_on"].notna(), "annotator_id"].tolist() == ["labeler@vendor.example"]
    state = pd.read_parquet(tmp_path / "warehouse" / "tables" / "label_state" / f"{DAYS[1]}.parquet")
    boxes = state[state["kind"] == "bbox"]
    assert sorted(boxes["label"]) == ["bus", "car"] and boxes["support"].eq(2).all()


def test_two_instances_exports_concatenated_into_one_file_keep_both() -> None:
    """Ours and the vendor's export of the same task file, joined into one (`jq -s add`): task 1's annotation
    101 twice, by two annotators, is two annotations; only one annotator's two versions compete."""
    ours = ls_task(1, "img-0", [(101, 1, f"{DAYS[0]}T09:00:00Z", [("car", 10.0)])])
    vendor = ls_task(1, "img-0", [(101, 2, f"{DAYS[0]}T11:00:00Z", [("car", 10.3)])])
    edited = ls_task(1, "img-0", [(101, 2, f"{DAYS[0]}T12:00:00Z", [("bus", 10.3)])])
    parsed = parse_file("merged.json", json.dumps([ours, vendor, edited]).encode(), {})
    assert sorted(map(tuple, parsed.objects[["annotator_id", "label"]].values.tolist())) == [
        ("1", "car"),
        ("1", "urban"),
        ("2", "bus"),
        ("2", "urban"),
    ]
    assert parsed.skipped == {"superseded annotation version": 2}


def test_a_box_label_conflict_across_two_nights_is_held_in_review_and_counted(tmp_path: Path) -> None:
    """Monday's annotator draws a truck, Tuesday's a bus on the same object: no day's review queue saw both, the
    label state holds the item in review, says so in its metadata, and the snapshot counts it as waiting."""
    store = LocalStore(tmp_path / "landing")
    store.write_bytes(f"items/{DAYS[0]}/items.csv", b"item_id,uri,width,height\nimg-0,s3://b/img-0.jpg,1000,500\n")
    monday = [ls_task(1, "img-0", [(101, 1, f"{DAYS[0]}T09:00:00Z", [("truck", 10.0)])])]
    tuesday = [ls_task(1, "img-0", [(102, 2, f"{DAYS[1]}T09:00:00Z", [("bus", 10.2)])])]
    store.write_bytes(f"exports/{DAYS[0]}/project-3.json", json.dumps(monday).encode())
    store.write_bytes(f"exports/{DAYS[1]}/project-3-tuesday.json", json.dumps(tuesday).encode())
    resources, instance = demo_resources(tmp_path, REPO / "config"), DagsterInstance.ephemeral()
    for day in DAYS[:2]:
        night(resources, instance, day)
    queue = pd.read_parquet(tmp_path / "warehouse" / "tables" / "review_queue" / f"{DAYS[1]}.parquet")
    assert queue.empty  # Tuesday's queue saw one annotator's bus
    state = pd.read_parquet(tmp_path / "warehouse" / "tables" / "label_state" / f"{DAYS[1]}.parquet")
    assert state["status"].unique().tolist() == ["in_review"]
    event = instance.get_latest_materialization_event(AssetKey("label_state"))
    assert event is not None and event.asset_materialization is not None
    assert event.asset_materialization.partition == DAYS[1]
    assert event.asset_materialization.metadata["box_disagreements_across_days"].value == 1
    manifest = snapshots.manifest(
        LocalStore(tmp_path / "warehouse"), snapshots.latest(LocalStore(tmp_path / "warehouse"))
    )
    assert manifest["excluded"]["waiting_for_review"] == 1
    # a relabel batch of the night says why: the state found the conflict that night (no day's queue listed it)
    from pipelines.definitions import defs

    assert materialize(
        list(defs.assets), selection=["relabel_batch"], partition_key=DAYS[1], resources=resources, instance=instance
    ).success
    batch = pd.read_parquet(tmp_path / "warehouse" / "tables" / "relabel_batch" / f"{DAYS[1]}.parquet")
    assert batch[["item_id", "reason", "priority"]].values.tolist() == [
        ["img-0", "review_queue:box disagreement across days (held by the label state)", 4.999]
    ]


def test_a_box_conflict_across_days_is_counted_when_the_days_queue_listed_the_item_for_its_scene(
    tmp_path: Path,
) -> None:
    """Tuesday's two annotators split on the scene (the day's queue lists the item for its scene alone) and draw a
    bus where Monday's two drew a truck: pooled over days the scene is sure (three urban of four), so the state
    holds the item for the box conflict alone, which its metadata counts, and a relabel batch says so."""
    store = LocalStore(tmp_path / "landing")
    store.write_bytes(f"items/{DAYS[0]}/items.csv", b"item_id,uri,width,height\nimg-0,s3://b/img-0.jpg,1000,500\n")
    monday = [
        ls_task(
            1,
            "img-0",
            [(101, 1, f"{DAYS[0]}T09:00:00Z", [("truck", 10.0)]), (102, 4, f"{DAYS[0]}T09:10:00Z", [("truck", 10.1)])],
        )
    ]
    tuesday = [
        ls_task(
            1,
            "img-0",
            [(103, 2, f"{DAYS[1]}T09:00:00Z", [("bus", 10.2)]), (104, 3, f"{DAYS[1]}T09:10:00Z", [("bus", 10.1)])],
        )
    ]
    tuesday[0]["annotations"][1]["result"][-1]["value"]["choices"] = ["highway"]
    store.write_bytes(f"exports/{DAYS[0]}/project-3.json", json.dumps(monday).encode())
    store.write_bytes(f"exports/{DAYS[1]}/project-3-tuesday.json", json.dumps(tuesday).encode())
    resources, instance = demo_resources(tmp_path, REPO / "config"), DagsterInstance.ephemeral()
    for day in DAYS[:2]:
        night(resources, instance, day)
    queue = pd.read_parquet(tmp_path / "warehouse" / "tables" / "review_queue" / f"{DAYS[1]}.parquet")
    assert queue["item_id"].tolist() == ["img-0"] and queue["scene_only"].tolist() == [True]
    state = pd.read_parquet(tmp_path / "warehouse" / "tables" / "label_state" / f"{DAYS[1]}.parquet")
    assert state["status"].unique().tolist() == ["in_review"]
    event = instance.get_latest_materialization_event(AssetKey("label_state"))
    assert event is not None and event.asset_materialization is not None
    metadata = event.asset_materialization.metadata
    assert metadata["review_scene_only"].value == {"listed": 1, "in_review": 1}
    assert metadata["box_disagreements_across_days"].value == 1
