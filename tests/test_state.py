"""The label state: judgments pool across days, answers supersede, and the snapshot reads the state."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from crowd_data import snow
from dagster import DagsterInstance, materialize

from labelops import consensus as ds
from labelops import ingest, labeling, quality, snapshots, state
from labelops.agreement import Votes
from labelops.columns import positions
from labelops.guidelines import load_guidelines, removals
from labelops.storage import LocalStore

DAYS = ["2024-06-10", "2024-06-11", "2024-06-12"]
REPO = Path(__file__).resolve().parents[1]


def crowd_votes(frame: pd.DataFrame, day: str) -> pd.DataFrame:
    """Crowd judgments as one day's validated annotations (scene labels)."""
    out = frame.assign(
        kind="classification",
        x=np.nan,
        y=np.nan,
        w=np.nan,
        h=np.nan,
        attributes="{}",
        export_date=date.fromisoformat(day),
        source_file=f"exports/{day}/crowd.csv",
        source_format="csv",
        source_ref="line",
    )
    out["annotation_id"] = ingest.hex_strings(
        pd.util.hash_pandas_object(out[["item_id", "annotator_id"]], index=False).to_numpy()
    )
    out["content_id"] = ingest.content_ids(out.assign(points=None))
    return out


def consensus_of(votes: pd.DataFrame, items: pd.Series, day: str) -> pd.DataFrame:
    """The state's consensus of ``items`` on ``day``: no previous state, no gold, the default settings."""
    labels, _ = state.consensus(
        votes,
        pd.DataFrame(columns=state.quality.CONSENSUS_COLUMNS),
        items,
        pd.DataFrame(columns=["item_id", "kind", "label"]),
        state.StateConfig(),
        day=day,
    )
    return labels


def test_rounds_on_different_days_pool_into_one_dawid_skene_fit() -> None:
    frame, _ = snow("rte")
    day_of = pd.util.hash_pandas_object(frame[["item_id", "annotator_id"]], index=False).to_numpy() % 3  # seeded rule
    votes = state.empty_votes()
    for n, day in enumerate(DAYS):
        votes = state.fold_votes(votes, crowd_votes(frame[day_of == n], day))
    assert len(votes) == len(frame) == 8000 and votes["superseded_by"].isna().all()
    assert sorted(votes.groupby("export_date").size()) == sorted(np.bincount(day_of).tolist())
    pooled = consensus_of(votes, votes["item_id"], DAYS[2])
    one_day = ds.dawid_skene(Votes.from_frame(frame)).table(Votes.from_frame(frame)).set_index("item_id")
    pooled = pooled.set_index("item_id").loc[one_day.index]
    assert (pooled["label"] == one_day["label"]).all()
    np.testing.assert_allclose(pooled["confidence"].to_numpy(float), one_day["confidence"].to_numpy(float), atol=1e-12)
    assert (pooled["n_votes"] == 10).all()  # every item's ten judgments in one vote set, not 3 + 3 + 4
    again = state.fold_votes(votes, crowd_votes(frame[day_of == 2], DAYS[2]))  # a rerun adds nothing
    pd.testing.assert_frame_equal(again, votes)


def box(item: str, who: str, label: str, x: float, day: str, batch: str | None = None) -> dict:
    attributes = json.dumps({"batch_id": batch}, separators=(",", ":")) if batch else "{}"
    return {
        "item_id": item,
        "annotator_id": who,
        "kind": "bbox",
        "label": label,
        "x": x,
        "y": 10.0,
        "w": 40.0,
        "h": 30.0,
        "attributes": attributes,
        "export_date": date.fromisoformat(day),
        "source_file": f"exports/{day}/f.json",
        "annotation_id": f"{item}-{who}-{label}-{x}-{day}",
        "source_format": "csv",
        "source_ref": "line",
    }


def first_state(
    votes: pd.DataFrame,
    touched: pd.Series,
    reviewed_today: pd.Series,
    unsure_today: pd.Series | None = None,
    critical: frozenset[str] = frozenset(),
) -> pd.DataFrame:
    """The state at the end of DAYS[1] folded from nothing: no gold, no request, nothing in review before."""
    table, _ = state.fold_state(
        votes,
        state.empty_state(),
        touched,
        pd.DataFrame(columns=["item_id", "kind", "label"]),
        state.StateConfig(),
        day=DAYS[1],
        model=None,
        requests=pd.DataFrame(columns=["item_id", "batch_id", "sent_on"]),
        in_review=pd.Series(dtype=object),
        reviewed_today=reviewed_today,
        unsure_today=unsure_today,
        critical=critical,
    )
    return table


def validated(rows: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    return frame.assign(content_id=ingest.content_ids(frame.assign(points=None)))


def test_an_answer_supersedes_the_kinds_it_covers_and_one_reviewer_decides() -> None:
    first = validated(
        [
            box("a", "u1", "car", 10, DAYS[0]),
            box("a", "u2", "car", 11, DAYS[0]),
            box("a", "u1", "truck", 200, DAYS[0]),
            box("a", "u2", "truck", 201, DAYS[0]),
            box("b", "u1", "car", 10, DAYS[0]),
            box("b", "u2", "car", 12, DAYS[0]),
        ]
    )
    scene = validated(
        [
            {
                **box("a", "u1", "urban", np.nan, DAYS[0]),
                "kind": "classification",
                "y": np.nan,
                "w": np.nan,
                "h": np.nan,
                "annotation_id": "a-scene",
            }
        ]
    )
    votes = state.fold_votes(state.empty_votes(), pd.concat([first, scene], ignore_index=True))
    answer = validated([box("a", "reviewer", "bus", 300, DAYS[1], batch=f"relabel-{DAYS[0]}")])
    votes = state.fold_votes(votes, answer)
    live = state.current(votes)
    assert sorted(live.loc[live["item_id"] == "a", "label"]) == ["bus", "urban"]  # boxes replaced, scene kept
    assert set(votes.loc[votes["superseded_by"].notna(), "annotation_id"]) == set(first["annotation_id"][:4])
    assert (votes["superseded_by"].dropna() == f"relabel-{DAYS[0]}").all()
    labels = consensus_of(votes, answer["item_id"], DAYS[1])
    boxes_of_a = labels[(labels["item_id"] == "a") & (labels["kind"] == "bbox")]
    assert boxes_of_a[["label", "x", "support"]].values.tolist() == [["bus", 300.0, 1.0]]  # no quorum of two
    requested = pd.DataFrame({"item_id": ["a", "b"], "batch_id": f"relabel-{DAYS[0]}", "sent_on": DAYS[0]})
    items = state.item_state(votes, labels, requested, pd.Series(["a"]))
    assert items.drop_duplicates("item_id").set_index("item_id")["status"].to_dict() == {
        "a": "answered",
        "b": "relabel_requested",
    }


def scene_vote(item: str, who: str, label: str, day: str, batch: str | None = None) -> dict:
    return {
        **box(item, who, label, np.nan, day, batch),
        "kind": "classification",
        "y": np.nan,
        "w": np.nan,
        "h": np.nan,
    }


def test_an_answer_stays_final_and_an_answer_without_boxes_says_the_item_has_none() -> None:
    """Ordinary judgments delivered after an answer do not reopen what it covers (the state keeps the answer's
    labels only). An answer always covers the objects: a reviewer who deleted the boxes answered "no objects",
    so boxes that had reached the quorum go too. A scene label the answer does not give stays the crowd's."""
    answer = f"relabel-{DAYS[0]}"
    days = [
        [
            scene_vote("s", "a1", "urban", DAYS[0]),
            scene_vote("s", "a2", "urban", DAYS[0]),
            box("s", "a1", "car", 10, DAYS[0]),
            box("s", "a2", "car", 11, DAYS[0]),
            scene_vote("q", "a1", "urban", DAYS[0]),
            scene_vote("q", "a2", "urban", DAYS[0]),
            box("q", "a1", "car", 100, DAYS[0]),  # two annotators agree: the box reaches the quorum of 2
            box("q", "a2", "car", 101, DAYS[0]),
            scene_vote("n", "a1", "highway", DAYS[0]),
            scene_vote("n", "a2", "highway", DAYS[0]),
            box("n", "a1", "truck", 50, DAYS[0]),
            box("n", "a2", "truck", 51, DAYS[0]),
        ],
        [
            scene_vote("s", "reviewer", "highway", DAYS[1], answer),
            box("s", "reviewer", "truck", 300, DAYS[1], answer),
            scene_vote("q", "reviewer", "urban", DAYS[1], answer),  # the boxes deleted, the scene confirmed
            box("n", "reviewer", "bus", 70, DAYS[1], answer),  # a box answer only: the scene stays the crowd's
        ],
        [  # an ordinary round after the answer
            scene_vote("s", "a3", "residential", DAYS[2]),
            scene_vote("s", "a4", "residential", DAYS[2]),
            scene_vote("s", "a5", "residential", DAYS[2]),
            box("s", "a3", "bus", 500, DAYS[2]),
            box("q", "a3", "car", 100, DAYS[2]),
            box("q", "a4", "car", 100, DAYS[2]),
        ],
    ]
    votes = state.empty_votes()
    for rows in days:
        votes = state.fold_votes(votes, validated(rows))
    live = state.current(votes)
    assert live[live["item_id"] == "s"][["annotator_id", "label"]].values.tolist() == [
        ["reviewer", "highway"],
        ["reviewer", "truck"],
    ]
    assert live[live["item_id"] == "q"][["annotator_id", "label"]].values.tolist() == [["reviewer", "urban"]]
    assert sorted(map(tuple, live.loc[live["item_id"] == "n", ["annotator_id", "label"]].values.tolist())) == [
        ("a1", "highway"),
        ("a2", "highway"),
        ("reviewer", "bus"),
    ]
    later = votes[votes["export_date"] == DAYS[2]]
    assert (later["superseded_by"] == answer).all()  # kept as lineage
    labels = consensus_of(votes, pd.Series(["s", "q", "n"]), DAYS[2])
    support = labels["support"].fillna(0)  # scene labels have none
    assert sorted(map(tuple, labels[["item_id", "kind", "label"]].assign(support=support).values.tolist())) == [
        ("n", "bbox", "bus", 1.0),
        ("n", "classification", "highway", 0.0),
        ("q", "classification", "urban", 0.0),  # no box: the answer drew none, the crowd's later two do not count
        ("s", "bbox", "truck", 1.0),
        ("s", "classification", "highway", 0.0),
    ]


def test_an_answer_in_a_class_since_split_leaves_the_item_waiting_for_a_relabel() -> None:
    """A task sent under v1 and answered after v2 split the class it offered (``cyclist``): validation marks the
    answer's box ``needs_relabel``. The answer still closes the request and supersedes the crowd's boxes, but it
    does not answer the item: the item waits for a relabel (left out of the snapshot, counted, and a candidate
    for the next batch) instead of being `answered` with its cyclist gone."""
    batch, split = f"relabel-{DAYS[0]}", "v2: split of 'cyclist'"
    crowd = [
        scene_vote("c", "a1", "urban", DAYS[0]),
        scene_vote("c", "a2", "urban", DAYS[0]),
        *(box("c", who, "cyclist", 10, DAYS[0]) for who in ("a3", "a4", "a5")),  # fresh votes under v2
        scene_vote("k", "a1", "urban", DAYS[0]),
        scene_vote("k", "a2", "urban", DAYS[0]),
        scene_vote("b", "a1", "urban", DAYS[0]),
        box("b", "a1", "car", 200, DAYS[0]),
    ]
    answers = [
        scene_vote("c", "reviewer", "residential", DAYS[1], batch),
        {**box("c", "reviewer", "cyclist", 12, DAYS[1], batch), "needs_relabel": split},  # answered under v1
        scene_vote("k", "reviewer", "highway", DAYS[1], batch),  # a readable answer, for contrast
        {**box("b", "reviewer", "cyclist", 30, DAYS[1], batch), "needs_relabel": split},  # nothing else answered
    ]
    votes = state.empty_votes()
    for rows in (crowd, answers):
        votes = state.fold_votes(votes, validated(rows).assign(guideline_version="v2"))
    labels = consensus_of(votes, pd.Series(["b", "c", "k"]), DAYS[1])
    requested = pd.DataFrame({"item_id": ["b", "c", "k"], "batch_id": batch, "sent_on": DAYS[0]})
    items = state.item_state(votes, labels, requested, pd.Series(dtype=object)).drop_duplicates("item_id")
    items = items.set_index("item_id")
    assert items["status"].to_dict() == {"b": "needs_relabel", "c": "needs_relabel", "k": "answered"}
    assert (items.loc[["b", "c"], "needs_relabel"] == split).all()
    assert (items["answered_batch"] == batch).all()  # each answer arrived: no request stays open
    inputs = snapshots.state_inputs(items.reset_index())
    assert list(inputs.relabel["item_id"]) == ["b", "c"] and inputs.review.empty  # waiting_for_relabel


def test_carrying_votes_to_a_version_twice_changes_nothing_the_first_time_did_not() -> None:
    """A judgment a change marked keeps the version it was made under, whenever it was marked (the same day or a
    later carry): it is read under no version, so the column says which one it belongs to."""
    guidelines = load_guidelines(LocalStore(REPO / "config"))
    rows = [box("i", "a1", "cyclist", 10, DAYS[0]), box("i", "a1", "traffic_light", 200, DAYS[0])]
    unmarked = pd.Series([None, None], dtype=object)
    made = validated(rows).assign(guideline_version="v1", needs_relabel=unmarked, remapped_from=unmarked)
    votes = state.fold_votes(state.empty_votes(), made)
    once = state.carry_votes(votes, guidelines, "v2")
    assert once[["label", "guideline_version", "needs_relabel"]].values.tolist() == [
        ["cyclist", "v1", "v2: split of 'cyclist'"],
        ["traffic_signal", "v2", None],
    ]
    pd.testing.assert_frame_equal(state.carry_votes(once, guidelines, "v2"), once)


def test_a_box_disagreement_across_days_holds_its_item_in_review() -> None:
    """A truck drawn one day and a bus on the same object the next, or a pedestrian drawn one day that the next
    day's annotator (in a file that asked for boxes) did not draw: the box quorum would drop the object, and no
    day's queue saw both days. The pooled votes show it and the item waits for a reviewer, as within one day.
    Boxes that agree across days hold nothing, nor does a pedestrian whose later judge only labeled scenes."""
    crowd, other = {"source_file": f"exports/{DAYS[1]}/scenes.csv"}, {"source_file": f"exports/{DAYS[1]}/g.json"}
    rows = [
        box("mixed", "a1", "truck", 10, DAYS[0]),
        box("mixed", "a2", "bus", 11, DAYS[1]),
        box("agreed", "a1", "car", 10, DAYS[0]),
        box("agreed", "a2", "car", 11, DAYS[1]),
        box("missed", "a1", "pedestrian", 10, DAYS[0]),
        box("missed", "a2", "car", 300, DAYS[1]),
        box("missed_scene", "a1", "pedestrian", 10, DAYS[0]),
        {**scene_vote("missed_scene", "a2", "urban", DAYS[1]), **other},  # g.json drew boxes on other items
        {**box("elsewhere", "a2", "car", 10, DAYS[1]), **other},
        box("asked_not", "a1", "pedestrian", 10, DAYS[0]),
        {**scene_vote("asked_not", "w1", "urban", DAYS[1]), **crowd},
    ]
    votes = state.empty_votes()
    for day in DAYS[:2]:
        votes = state.fold_votes(votes, validated([r for r in rows if str(r["export_date"]) == day]))
    items = pd.Series(["agreed", "asked_not", "elsewhere", "missed", "missed_scene", "mixed"])
    assert state.box_disagreements(votes, items).tolist() == ["mixed"]  # without critical classes
    # a night that reads every item again (a new guideline) looks only at the items judged that night
    assert state.box_disagreements(votes, items, day=DAYS[1]).tolist() == ["mixed"]
    assert state.box_disagreements(votes, items, day=DAYS[2]).tolist() == []
    table = first_state(votes, items, pd.Series(dtype=object), critical=frozenset({"pedestrian"}))
    assert table.drop_duplicates("item_id").set_index("item_id")["status"].to_dict() == {
        "agreed": "labeled",
        "asked_not": "labeled",
        "elsewhere": "no_consensus",
        "missed": "in_review",
        "missed_scene": "in_review",
        "mixed": "in_review",
    }


def test_objects_of_a_removed_class_stop_counting_without_holding_their_item() -> None:
    """A later version removes `e_scooter`: nothing about an item with a parked e-scooter is in doubt, so its
    e-scooter boxes leave its labels and the item stays in the dataset (a split would hold it). A removed scene
    class still leaves its item without a scene label: that item waits. An answer drawn with the old config's
    e-scooter is still an answer."""
    guidelines = load_guidelines(LocalStore(REPO / "config"))
    assert not removals(pd.Series(guidelines.remap("v1", "v2").relabel)).any()  # a split is no removal
    removed, scene_removed = "v3: remove of 'e_scooter'", "v3: remove of 'residential'"
    batch = f"relabel-{DAYS[0]}"
    rows = [
        *(scene_vote("parked", who, "urban", DAYS[0]) for who in ("a1", "a2")),
        *({**box("parked", who, "e_scooter", 10, DAYS[0]), "needs_relabel": removed} for who in ("a1", "a2")),
        *(box("parked", who, "car", 200, DAYS[0]) for who in ("a1", "a2")),
        *({**scene_vote("street", who, "residential", DAYS[0]), "needs_relabel": scene_removed} for who in ("a1",)),
        scene_vote("answered", "reviewer", "urban", DAYS[1], batch),
        {**box("answered", "reviewer", "e_scooter", 30, DAYS[1], batch), "needs_relabel": removed},
    ]
    votes = state.fold_votes(state.empty_votes(), validated(rows).assign(guideline_version="v3"))
    assert state.waiting_for_relabel(votes)[["item_id", "needs_relabel"]].values.tolist() == [["street", scene_removed]]
    labels = consensus_of(votes, pd.Series(["answered", "parked", "street"]), DAYS[1])
    assert "e_scooter" not in set(labels["label"])
    requested = pd.DataFrame({"item_id": ["answered"], "batch_id": batch, "sent_on": DAYS[0]})
    items = state.item_state(votes, labels, requested, pd.Series(dtype=object)).drop_duplicates("item_id")
    assert items.set_index("item_id")["status"].to_dict() == {
        "answered": "answered",
        "parked": "labeled",
        "street": "needs_relabel",
    }


def test_an_ambiguous_judgment_holds_its_item_only_if_too_few_others_judged_that_part() -> None:
    """A vendor still delivering v1's `cyclist` (split by v2) beside two annotators using v2: the two decide the
    objects without it, as the box quorum would without a lone box, so the item needs no relabel. An item whose
    cyclist two of three annotators drew, or whose others judged only its scene, waits; and a scene the change
    left ambiguous waits unless two others judged the scene."""
    split = "v2: split of 'cyclist'"
    rows = [
        {**box("vendor", "old", "cyclist", 10, DAYS[0]), "needs_relabel": split},
        box("vendor", "a1", "scooter_rider", 10, DAYS[0]),
        box("vendor", "a2", "scooter_rider", 11, DAYS[1]),  # delivered a day later: pooled all the same
        {**box("drawn", "old", "cyclist", 10, DAYS[0]), "needs_relabel": split},
        {**box("drawn", "a1", "cyclist", 10, DAYS[0]), "needs_relabel": split},
        box("drawn", "a2", "car", 200, DAYS[0]),
        {**box("scenes", "old", "cyclist", 10, DAYS[0]), "needs_relabel": split},
        scene_vote("scenes", "a1", "urban", DAYS[0]),
        scene_vote("scenes", "a2", "urban", DAYS[0]),
        {**scene_vote("scene", "old", "urban", DAYS[0]), "needs_relabel": "v2: redefinition of 'urban'"},
        scene_vote("scene", "a1", "residential", DAYS[0]),
        scene_vote("scene", "a2", "residential", DAYS[0]),
        box("scene", "a1", "car", 10, DAYS[0]),
    ]
    votes = state.fold_votes(state.empty_votes(), validated(rows).assign(guideline_version="v2"))
    assert state.waiting_for_relabel(votes)[["item_id", "needs_relabel"]].values.tolist() == [
        ["drawn", split],
        ["scenes", split],
    ]
    assert list(state.waiting_for_relabel(votes, quorum=3)["item_id"]) == ["drawn", "scene", "scenes", "vendor"]


def test_the_same_answer_to_a_later_request_is_a_new_answer_and_a_redelivered_one_a_copy(tmp_path: Path) -> None:
    """A reviewer who answers a second request for an item as they answered the first (or as they answered it
    as a honeypot) gives a new answer: it supersedes, and the item's latest request is answered. The first
    answer delivered again (a project exported whole each day) stays a copy."""
    store = LocalStore(tmp_path)
    ordinary = [
        box("a", "u1", "car", 10, DAYS[0]),
        box("a", "u2", "car", 11, DAYS[0]),
        box("g", "u1", "car", 10, DAYS[0]),
    ]
    first_answer = box("a", "reviewer", "bus", 300, DAYS[1], batch=f"relabel-{DAYS[0]}")
    honeypot = box("g", "reviewer", "bus", 300, DAYS[1])  # a honeypot's answer names no batch
    days = [
        ordinary,
        [first_answer, honeypot],
        [  # the same answers again: to the new requests, and the first delivered once more
            {**first_answer, "export_date": date.fromisoformat(DAYS[2]), "annotation_id": "a-again"},
            box("a", "reviewer", "bus", 300, DAYS[2], batch=f"relabel-{DAYS[1]}"),
            box("g", "reviewer", "bus", 300, DAYS[2], batch=f"relabel-{DAYS[1]}"),
        ],
    ]
    votes, marked = state.empty_votes(), pd.DataFrame()
    for day, rows in zip(DAYS, days, strict=True):
        frame = pd.DataFrame(rows).assign(points=None)
        marked = ingest.mark_duplicates(frame, ingest.known_judgments(store, day))
        ingest.record_judgments(store, day, marked)
        fresh = marked[marked["duplicate_of"].isna()].drop(columns=["points", "duplicate_of"])
        votes = state.fold_votes(votes, fresh, marked[marked["duplicate_of"].notna()])
    assert marked["duplicate_of"].tolist() == [first_answer["annotation_id"], None, None]
    assert marked["content_id"].nunique() == 3
    judgments = pd.DataFrame(days[1]).assign(points=None)  # rows that answer no batch keep the judgment's id
    without = ingest.content_ids(judgments.drop(columns="attributes"))
    assert ingest.content_ids(judgments)[1] == without[1] and ingest.content_ids(judgments)[0] != without[0]
    live = state.current(votes)
    assert live.groupby("item_id")["answer_to"].agg(list).to_dict() == {
        "a": [f"relabel-{DAYS[1]}"],
        "g": [f"relabel-{DAYS[1]}"],
    }
    labels = consensus_of(votes, pd.Series(["a", "g"]), DAYS[2])
    requested = pd.DataFrame(
        {"item_id": ["a", "a", "g"], "batch_id": [f"relabel-{DAYS[0]}", *[f"relabel-{DAYS[1]}"] * 2]}
    ).assign(sent_on=lambda f: f["batch_id"].str.removeprefix("relabel-"))
    items = state.item_state(votes, labels, requested, pd.Series(dtype=object))
    assert items.drop_duplicates("item_id").set_index("item_id")["status"].to_dict() == {
        "a": "answered",
        "g": "answered",
    }


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory):
    """Two nights: ordinary labels of four items, a relabel request for two, their answers the next day."""
    from pipelines.definitions import defs
    from resources import build_resources
    from resources.settings import Settings

    root = tmp_path_factory.mktemp("loop")
    landing, warehouse = LocalStore(root / "landing"), LocalStore(root / "warehouse")
    items = "item_id,uri,width,height,session_id\n" + "".join(
        f"img-{i},s3://b/img-{i}.jpg,1000,500,s{i}\n" for i in range(4)
    )
    landing.write_bytes(f"items/{DAYS[0]}/items.csv", items.encode())
    rows = ["item_id,annotator_id,label,x,y,w,h"]
    for i in range(4):
        for who in ("u1", "u2", "u3"):
            rows += [f"img-{i},{who},urban,,,,", f"img-{i},{who},car,{100 + i},{50},{80},{40}"]
    landing.write_bytes(f"exports/{DAYS[0]}/crowd.csv", ("\n".join(rows) + "\n").encode())
    # the outbox ledger of a relabel batch sent that night, as relabel_batch writes it
    warehouse.write_bytes(
        f"outbox/relabel/ledger/{DAYS[0]}.csv",
        f"item_id,batch_id,sent_on\nimg-0,relabel-{DAYS[0]},{DAYS[0]}\n"
        f"img-1,relabel-{DAYS[0]},{DAYS[0]}\nprod-7,relabel-{DAYS[0]},{DAYS[0]}\n".encode(),
    )
    # a production item of the batch, which no catalog holds: the batch wrote its item row
    warehouse.write_bytes(
        f"outbox/relabel/{DAYS[0]}/relabel-{DAYS[0]}.items.csv",
        b"item_id,uri,width,height,captured_at,session_id\n"
        b"prod-7,s3://p/prod-7.jpg,1000,500,2024-06-10T08:00:00+0000,p1\n",
    )
    answers = [
        {
            "id": n,
            "data": {"image": f"s3://b/img-{n}.jpg", "item_id": f"img-{n}", "batch_id": f"relabel-{DAYS[0]}"},
            "annotations": [
                {
                    "id": 10 + n,
                    "completed_by": 7,
                    "updated_at": f"{DAYS[1]}T09:00:00Z",
                    "result": [
                        {
                            "id": "r1",
                            "type": "rectanglelabels",
                            "from_name": "label",
                            "to_name": "image",
                            "original_width": 1000,
                            "original_height": 500,
                            "value": {
                                "x": 50.0,
                                "y": 20.0,
                                "width": 10.0,
                                "height": 10.0,
                                "rectanglelabels": ["truck"],
                            },
                        },
                        {
                            "id": "r2",
                            "type": "choices",
                            "from_name": "scene",
                            "to_name": "image",
                            "value": {"choices": ["highway"]},
                        },
                    ],
                }
            ],
        }
        for n in (0, 7)
    ]
    answers[1]["data"].update(image="s3://p/prod-7.jpg", item_id="prod-7")
    landing.write_bytes(f"exports/{DAYS[1]}/answers.json", json.dumps(answers).encode())
    resources = build_resources(
        Settings(
            landing=str(landing.root),
            warehouse=str(warehouse.root),
            s3_endpoint_url=None,
            config_dir=str(Path(__file__).parents[1] / "config"),
            start_date="2024-06-01",
        )
    )
    instance = DagsterInstance.ephemeral()
    selection = [k for k in defs.resolve_job_def("nightly_job").asset_layer.executable_asset_keys]
    for day in DAYS[:2]:
        result = materialize(
            list(defs.assets), selection=selection, partition_key=day, resources=resources, instance=instance
        )
        assert result.success
    return warehouse


@pytest.mark.e2e  # two nights through Dagster
def test_answers_reach_the_snapshot_and_replace_the_old_boxes(loop: LocalStore) -> None:
    current = pd.read_parquet(loop.path(f"tables/label_state/{DAYS[1]}.parquet"))
    status = current.drop_duplicates("item_id").set_index("item_id")["status"].to_dict()
    assert status == {
        "img-0": "answered",
        "img-1": "relabel_requested",
        "img-2": "labeled",
        "img-3": "labeled",
        "prod-7": "answered",
    }
    version = snapshots.latest(loop)
    labels = snapshots.read_table(loop, version, "labels.parquet")
    answered = labels[labels["item_id"] == "img-0"]
    assert answered[["kind", "label"]].values.tolist() == [["bbox", "truck"], ["classification", "highway"]]
    assert answered.loc[answered["kind"] == "bbox", ["x", "y", "w", "h"]].values.tolist() == [
        [500.0, 100.0, 100.0, 50.0]
    ]
    manifest = snapshots.manifest(loop, version)
    items = snapshots.read_table(loop, version, "items.parquet")
    assert sorted(items["item_id"]) == ["img-0", "img-2", "img-3", "prod-7"]  # prod-7: catalogued by its batch
    assert items.set_index("item_id").at["prod-7", "uri"] == "s3://p/prod-7.jpg"
    assert manifest["excluded"]["waiting_for_relabel"] == 1  # img-1: requested, not answered yet
    assert len(items) + sum(manifest["excluded"].values()) == 5  # every item of the state is counted
    report = loop.read_bytes(f"reports/quality/{DAYS[1]}.html").decode()
    assert "<h2>Labeling loop</h2>" in report and "relabel-2024-06-10" in report
    assert "answered items in the latest snapshot<b>2</b>" in report


@pytest.mark.e2e  # two nights through Dagster
def test_a_rerun_of_the_batch_day_sends_no_answered_item(loop: LocalStore) -> None:
    """relabel_batch skips the items the latest label state shows answered, whatever day's batch is rerun."""
    from assets.labeling import _answered
    from labelops import labeling
    from resources.io_manager import DayTables

    def read(day: str, keep: tuple[str, ...] | None = None, drop: frozenset[str] = frozenset()) -> pd.DataFrame:
        return pd.read_parquet(loop.path(f"tables/label_state/{day}.parquet"), columns=list(keep) if keep else None)

    assert _answered(DayTables([DAYS[0]], read)) == set()  # the batch's own day: nothing answered yet
    answered = _answered(DayTables(DAYS[:2], read))
    assert answered == {"img-0", "prod-7"}
    candidates = pd.DataFrame(
        {
            "item_id": ["img-0", "img-1", "img-2"],
            "reason": "review_queue",
            "kind": "review_queue",
            "priority": 4.0,
            "stratum": "",
            "uncertainty": 0.5,
        }
    )
    assert sorted(labeling.select(candidates, 10, answered)["item_id"]) == ["img-1", "img-2"]


def test_a_batch_is_sent_once_its_ledger_entry_is_written_and_read_back_as_sent(tmp_path: Path) -> None:
    """The manifest alone (a run that died before its ledger entry) is no sent batch; with the entry, the batch reads
    back as it was sent, an item id of digits as text, with the guideline version its labeling config names."""
    store = LocalStore(tmp_path)
    prefix, batch = "outbox/relabel/2024-06-12", "relabel-2024-06-12"
    store.write_bytes(
        f"{prefix}/{batch}.csv",
        b"item_id,reason,kind,priority,batch_id,rank,honeypot\n0001,review_queue:x,review_queue,2.5,"
        + batch.encode()
        + b",1,False\n",
    )
    assert labeling.sent_batch(store, "relabel", "2024-06-12", batch) is None
    store.write_bytes("outbox/relabel/ledger/2024-06-12.csv", b"item_id,batch_id,sent_on,reason\n0001,x,2024-06-12,r\n")
    store.write_bytes(f"{prefix}/labeling_config.v2.xml", b"<View/>")
    sent = labeling.sent_batch(store, "relabel", "2024-06-12", batch)
    assert sent is not None and sent[1] == "v2"  # the guideline it was sent under
    assert sent[0].to_dict("records") == [
        {
            "item_id": "0001",
            "reason": "review_queue:x",
            "kind": "review_queue",
            "priority": 2.5,
            "batch_id": batch,
            "rank": 1,
            "honeypot": False,
        }
    ]


def test_a_request_stays_open_until_the_state_says_it_was_answered() -> None:
    """An ordinary judgment delivered after a request does not answer it: the item is still `relabel_requested`,
    and a later batch must not send it again (the delivery-date rule did, paying twice for one item). An answered
    item, one a guideline change sends back (`needs_relabel`) and a lapsed request are not open; a production
    item with no state yet is; a honeypot is open until any judgment of it comes back."""
    sent = pd.DataFrame(
        {
            "item_id": ["judged", "answered", "resent", "lapsed", "prod-1", "gold-1", "gold-2"],
            "batch_id": "relabel-2024-06-10",
            "sent_on": ["2024-06-10"] * 3 + ["2024-05-01"] + ["2024-06-10"] * 3,
            "reason": ["review_queue"] * 5 + ["honeypot"] * 2,
        }
    )
    latest = pd.DataFrame(
        {
            "item_id": ["judged", "answered", "resent", "lapsed", "gold-1", "gold-2"],
            "status": ["relabel_requested", "answered", "needs_relabel", "labeled", "labeled", "labeled"],
            "days": ["2024-06-09,2024-06-11", "2024-06-11", "2024-06-11", "2024-06-11", "2024-06-09", "2024-06-11"],
        }
    )
    assert labeling.open_requests(sent, latest, "2024-06-12", expire_days=14) == {"judged", "prod-1", "gold-1"}
    # by delivery date alone, the ordinary judgment of 06-11 looked like the answer
    assert "judged" not in labeling.still_open(sent, state.last_labeled(latest), "2024-06-12", expire_days=14)


def test_an_unanswered_request_lapses_and_the_item_may_go_again() -> None:
    ledger = pd.DataFrame(
        {
            "item_id": ["a", "b", "c"],
            "batch_id": ["relabel-2024-05-20", "relabel-2024-06-01", "relabel-2024-06-13"],
            "sent_on": ["2024-05-20", "2024-06-01", "2024-06-13"],
        }
    )
    assert state.open_requests(ledger, "2024-06-12", 14)["item_id"].tolist() == ["b"]  # a lapsed, c not yet sent
    votes = state.fold_votes(state.empty_votes(), validated([box(i, "u1", "car", 10, DAYS[0]) for i in "abc"]))
    items = state.item_state(
        votes,
        pd.DataFrame(columns=state.quality.CONSENSUS_COLUMNS),
        state.open_requests(ledger, "2024-06-12", 14),
        pd.Series(dtype=object),
    )
    assert items.set_index("item_id")["status"].to_dict() == {
        "a": "no_consensus",
        "b": "relabel_requested",
        "c": "no_consensus",
    }


def test_a_honeypot_answer_is_an_ordinary_judgment() -> None:
    from labelops.formats import parse_file

    def task(honeypot: bool) -> dict:
        return {
            "id": 1,
            "data": {"image": "s3://b/g.jpg", "item_id": "gold-1", "batch_id": "relabel-2024-06-10"},
            "meta": {"reason": "honeypot" if honeypot else "review_queue", "honeypot": honeypot},
            "annotations": [
                {
                    "id": 5,
                    "completed_by": 3,
                    "updated_at": "2024-06-11T09:00:00Z",
                    "result": [
                        {
                            "id": "s",
                            "type": "choices",
                            "from_name": "scene",
                            "to_name": "image",
                            "value": {"choices": ["urban"]},
                        }
                    ],
                }
            ],
        }

    honeypot, answer = (parse_file("a.json", json.dumps([task(h)]).encode()).objects for h in (True, False))
    assert '"batch_id"' not in honeypot["attributes"].iloc[0]
    assert '"batch_id":"relabel-2024-06-10"' in answer["attributes"].iloc[0]


def test_lineage_carried_for_untouched_items_equals_lineage_recomputed() -> None:
    """A night recomputes lineage only for the items it touched; the result is the full recomputation's. Each
    night's state is the same whether the votes come as pandas or as label_state reads them (Arrow)."""
    frame, _ = snow("temp")
    day_of = pd.util.hash_pandas_object(frame[["item_id", "annotator_id"]], index=False).to_numpy() % 3
    none = pd.Series(dtype=object)
    gold = pd.DataFrame(columns=["item_id", "kind", "label"])
    votes, previous = state.empty_votes(), state.empty_state()
    requests = pd.DataFrame(columns=["item_id", "batch_id", "sent_on"])
    settings, model = state.StateConfig(), None
    for n, day in enumerate(DAYS):
        votes = state.fold_votes(votes, crowd_votes(frame[day_of == n], day))
        touched = state.touched_items(votes, day)
        kept = model  # the first night fits, the later ones label their items with that fit
        labels, model = state.consensus(votes, previous, touched, gold, settings, day=day, model=model)
        night = state.item_state(votes, labels, requests, none, previous=previous, touched=touched)
        # read as label_state reads it: Arrow, its low-cardinality text as dictionaries; the same state
        table = pa.Table.from_pandas(votes[state.STATE_INPUTS], preserve_index=False)
        for name in ("annotator_id", "kind", "label", "export_date", "source_file"):
            table = table.set_column(table.schema.get_field_index(name), name, table.column(name).dictionary_encode())
        assert state.touched_items(table, day).tolist() == touched.tolist()
        read, _ = state.consensus(table, previous, touched, gold, settings, day=day, model=kept)
        pd.testing.assert_frame_equal(read, labels)
        as_read = state.item_state(table, read, requests, none, previous=previous, touched=touched)
        pd.testing.assert_frame_equal(as_read, night)
        previous = night
    full = state.item_state(votes, labels, requests, none)
    assert len(previous) == frame["item_id"].nunique() == 462
    pd.testing.assert_frame_equal(previous, full)


@pytest.mark.parametrize("seed", range(20))
def test_with_items_equals_a_right_merge(seed: int) -> None:
    """Consensus rows placed by position under their items: what ``labels.merge(per_item, how="right")`` gives,
    dtypes included (items without a label, labels of no item, an item order of any kind)."""
    random = np.random.default_rng(seed)
    ids = np.array([f"img-{i:03d}" for i in range(30)], dtype=object)
    n = int(random.integers(0, 40))
    labels = pd.DataFrame(
        {
            "item_id": pd.Series(np.sort(random.choice(ids, n)), dtype="str"),
            "kind": random.choice(["bbox", "classification"], n),
            "label": pd.Series(random.choice(["car", "bus", None], n), dtype=object),
            "confidence": random.random(n),
            "n_votes": random.integers(0, 5, n),
            "flag": random.random(n) > 0.5,
        }
    ).sample(frac=1.0, random_state=seed)
    chosen = random.choice(ids, int(random.integers(0, 30)), replace=False)
    per_item = pd.DataFrame(
        {
            "item_id": pd.Series(np.sort(chosen) if seed % 3 else chosen, dtype="str"),
            "rounds": np.arange(len(chosen)),
            "answered_batch": pd.Series([None] * len(chosen), dtype=object),
        }
    )
    expected = labels.merge(per_item, on="item_id", how="right").reset_index(drop=True)
    got = state.with_items(labels, per_item, positions(labels["item_id"], per_item["item_id"]))
    pd.testing.assert_frame_equal(got, expected, check_exact=True)


def test_an_edit_of_an_annotation_stored_under_a_key_without_its_annotator_replaces_it() -> None:
    """Votes stored before keys named the annotator keep their old keys (the vote table is never rewritten): an
    edit delivered now of such an annotation still replaces it, and another annotator's annotation with the same
    tool ids still does not."""
    tool = {"source_format": "label_studio", "source_ref": "task=1/annotation=101/result=b0"}
    first = [{**box("a", "u1", "car", 10, DAYS[0]), **tool}, {**box("a", "u2", "car", 11, DAYS[0]), **tool}]
    votes = state.fold_votes(state.empty_votes(), validated(first))
    votes["annotation_key"] = "label_studio|a|task=1/annotation=101"  # as stored before
    edited = validated([{**box("a", "u1", "truck", 10, DAYS[1]), **tool}])
    later = state.fold_votes(votes, edited)
    replaced = later.loc[later["replaced_on"].notna(), ["annotator_id", "label"]].values.tolist()
    assert replaced == [["u1", "car"]]  # u2's annotation 101 is another instance's, not an earlier version


@pytest.mark.parametrize("rows", [slice(None), slice(1, 3), slice(0, 1)])
def test_annotation_keys_equal_the_joined_texts_where_the_tool_gives_ids(rows: slice) -> None:
    """A Label Studio annotation's key is its format, item, annotator and tool ids; rows without tool ids (CSV lines, an
    annotation id of None, a missing ref) have none. The keys are joined for the keyed rows alone."""
    frame = pd.DataFrame(
        {
            "source_ref": [
                "task=1/annotation=2/result=r1",
                "line=3",
                "task=5/annotation=None/r",
                None,
                "task=7/annotation=9/",
            ],
            "source_format": ["label_studio", "csv", "label_studio", "csv", "label_studio"],
            "item_id": ["a", "b", "c", "d", "é"],
            "annotator_id": ["u1", "u2", "u3", "u4", "u5"],
        },
        index=[10, 11, 12, 13, 14],
    ).iloc[rows]
    ids = frame["source_ref"].str.extract(r"^(task=[^/]+/annotation=(?!None/)[^/]+)/", expand=False)
    joined = frame["source_format"] + "|" + frame["item_id"] + "|" + ids + "|" + frame["annotator_id"]
    expected = joined.astype(object).where(ids.notna(), None)
    pd.testing.assert_series_equal(state.annotation_keys(frame), expected, check_names=False)


def test_items_held_back_for_review_on_no_batch_day_or_across_days_go_back_with_a_later_batch() -> None:
    """The relabel batch reads its own day's review queue; the label state's backlog brings the rest: an item an
    earlier day's queue put in review, and a scene label split across days (one vote each day, so no day's queue
    saw a disagreement) that the snapshot leaves out as ``low_confidence``."""
    days = [
        [scene_vote("split", "a1", "urban", DAYS[0]), scene_vote("sure", "a1", "urban", DAYS[0])],
        [
            scene_vote("split", "a2", "highway", DAYS[1]),
            scene_vote("sure", "a2", "urban", DAYS[1]),
            scene_vote("alone", "a1", "urban", DAYS[1]),
            scene_vote("waiting", "a1", "urban", DAYS[1]),
            scene_vote("waiting", "a2", "urban", DAYS[1]),
            scene_vote("today", "a1", "urban", DAYS[1]),
            scene_vote("today", "a2", "highway", DAYS[1]),
        ],
    ]
    votes = state.empty_votes()
    for rows in days:
        votes = state.fold_votes(votes, validated(rows))
    labels, _ = state.consensus(
        votes,
        pd.DataFrame(columns=state.quality.CONSENSUS_COLUMNS),
        votes["item_id"],
        pd.DataFrame(columns=["item_id", "kind", "label"]),
        state.StateConfig(method="majority_vote"),
        day=DAYS[1],
    )
    items = state.item_state(votes, labels, pd.DataFrame(columns=["item_id", "batch_id"]), pd.Series(["waiting"]))
    in_review = items.loc[items["status"] == "in_review", ["item_id"]]
    catalog = pd.DataFrame({"item_id": items["item_id"].unique(), "uri": items["item_id"].unique()})
    curated = snapshots.curate(
        items,
        catalog,
        in_review,
        pd.DataFrame(columns=["item_id", "rule"]),
        pd.Series(dtype=object),
        snapshots.CurationConfig(),
    )
    excluded = {reason: n for reason, n in curated.excluded.items() if n}
    assert excluded == {"low_confidence": 2, "waiting_for_review": 1}  # split and today; waiting
    backlog = labeling.review_backlog(items, pd.Series(["today"]), min_confidence=0.7)  # today: in the day's queue
    assert backlog[["item_id", "reason"]].values.tolist() == [
        ["waiting", "in review since an earlier day"],
        ["split", "low consensus confidence over days (0.5)"],
    ]
    assert backlog["uncertainty"].tolist() == [0.0, 0.5]
    # held the night before: in review since then; not held before and listed by no queue: the state found it
    since = labeling.review_backlog(items, pd.Series(["today"]), min_confidence=0.7, held_before=pd.Series(["waiting"]))
    assert since.equals(backlog)
    found = labeling.review_backlog(
        items, pd.Series(["today"]), min_confidence=0.7, held_before=pd.Series(dtype=object)
    )
    assert found[["reason", "uncertainty"]].values.tolist()[0] == [labeling.STATE_HELD, 1.0]
    candidates = labeling.relabel_candidates(
        pd.DataFrame(columns=["item_id"]),
        pd.DataFrame(),
        pd.DataFrame(),
        pd.DataFrame(columns=["item_id", "reason", "priority"]),
        pd.DataFrame(),
        backlog,
    )
    assert sorted(labeling.select(candidates, 10, set())["item_id"]) == ["split", "waiting"]


def test_a_small_days_unsure_scene_waits_for_review_only_if_the_pooled_consensus_is_unsure() -> None:
    """A day of two annotators who each gave one class all day (a project re-exported) and a reviewer's nine
    answers: the day's Dawid-Skene fit learns nothing from the two, so twelve items both called `urban` fall back
    to the day's prior (`residential`, 0.667, agreement 0) and the review queue lists them for it alone. Pooled
    with the three votes each had the day before, they are `urban` at full confidence: labeled, not in review,
    and a batch does not send them for review. An item the pooled votes still split waits."""
    items = [f"A{n:02d}" for n in range(12)]
    day1 = [scene_vote(i, who, "urban", DAYS[0]) for i in items for who in ("a3", "a4", "a5")]
    day1 += [
        scene_vote(f"{label[0].upper()}{n}", who, label, DAYS[0])
        for label in ("highway", "residential")
        for n in range(4)
        for who in ("a3", "a4", "a5")
    ]
    day1 += [scene_vote("split", "a3", "urban", DAYS[0])]
    day2 = [scene_vote(i, who, "urban", DAYS[1]) for i in items for who in ("a1", "a2")]
    day2 += [scene_vote("split", "a6", "highway", DAYS[1]), scene_vote("split", "a7", "residential", DAYS[1])]
    day2 += [scene_vote(f"R{n}", "rev", "residential", DAYS[1]) for n in range(6)]
    day2 += [scene_vote(f"C{n}", "rev", "urban", DAYS[1]) for n in range(3)]
    today = validated(day2).assign(points=None, needs_relabel=None)
    table, _ = quality.consensus_and_scores(today, pd.DataFrame(columns=["item_id", "kind", "label"]))
    guideline = load_guidelines(LocalStore(REPO / "config")).by_version["v1"]
    queue = quality.review(today, table, guideline, min_confidence=0.7, min_agreement=0.6)
    day_view = table.set_index("item_id").loc[items]
    assert (day_view["label"] == "residential").all() and (day_view["confidence"] < 0.7).all()
    assert set(items) <= set(queue.loc[queue["scene_only"], "item_id"]) and "split" in set(queue["item_id"])

    votes = state.empty_votes()
    for rows in (day1, day2):
        votes = state.fold_votes(votes, validated(rows))
    folded = first_state(
        votes, votes["item_id"].drop_duplicates(), queue["item_id"], queue.loc[queue["scene_only"], "item_id"]
    )
    latest = folded.drop_duplicates("item_id").set_index("item_id")
    assert (latest.loc[items, "label"] == "urban").all() and (latest.loc[items, "confidence"] > 0.99).all()
    assert (latest.loc[items, "status"] == "labeled").all() and latest.loc["split", "status"] == "in_review"
    sent = labeling.held_for_review(queue, latest.reset_index())
    assert not set(items) & set(sent["item_id"]) and "split" in set(sent["item_id"])


def test_the_loop_counts_a_sent_production_item_without_judgments_as_waiting() -> None:
    """A production item sent for labeling has no state row until its answer arrives: the quality report's loop
    section counts it as waiting, not as nothing."""
    batch = f"relabel-{DAYS[0]}"
    sent = pd.DataFrame(
        {
            "item_id": ["a", "b", "prod-1", "gold-1", "c"],
            "batch_id": batch,
            "sent_on": DAYS[0],
            "reason": ["review_queue:x", "review_queue:x", "drifted_slice:x", "honeypot", "coverage_gap:x"],
        }
    )
    items = pd.DataFrame(
        {
            "item_id": ["a", "b", "c", "gold-1"],
            "status": ["answered", "relabel_requested", "labeled", "labeled"],
            "answered_batch": [batch, None, None, None],
        }
    )
    loop = state.loop_by_batch(sent, items, pd.Series(["a"]))
    assert loop[["sent", "honeypots", "answered", "waiting", "answered_in_snapshot"]].values.tolist() == [
        [4, 1, 1, 2, 1]
    ]
