"""The Arrow Label Studio path (labelops/formats/label_studio_arrow.py) against the generic parser.

Each document here is read by the Arrow path, and its output (rows, dtypes, skipped counts, the canonical
table) is compared cell by cell with the generic parser's on the same bytes; the documents it must leave to
the other readers give ``None`` and are read as before.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from test_label_studio_outputs import ERRORS, SIZED, Case, box, real_files, snapshot, task
from test_label_studio_typed import FAST_CASES, bench_file

from labelops import validation
from labelops.formats import label_studio_arrow, label_studio_typed, parse_file
from labelops.guidelines import load_guidelines
from labelops.ingest import canonical_annotations, canonical_emptied
from labelops.storage import LocalStore

REPO = Path(__file__).resolve().parents[1]


def document(name: str, tasks: list[Any]) -> Case:
    return f"{name}.json", json.dumps(tasks, indent=1).encode(), {}


def polygon(rid: str, label: str = "lane", points: Any = None) -> dict[str, Any]:
    points = [[1, 2], [3.5, 4], [0, 9.25]] if points is None else points
    return {**SIZED, "id": rid, "type": "polygonlabels", "value": {"points": points, "polygonlabels": [label]}}


def open_polygon(rid: str, closed: bool = False) -> dict[str, Any]:
    """A polygon with Label Studio's ``closed`` flag (false: the labeler never closed it)."""
    region = polygon(rid)
    return {**region, "value": {**region["value"], "closed": closed}}


def scene(rid: str, *labels: Any, from_name: str = "scene") -> dict[str, Any]:
    return {"id": rid, "type": "choices", "from_name": from_name, "value": {"choices": list(labels)}}


def annotation(aid: int, results: Any, who: Any = 7, **fields: Any) -> dict[str, Any]:
    return {"id": aid, "completed_by": who, "updated_at": "2024-06-02T10:00:00Z", "result": results, **fields}


MIXED = [
    {
        "id": 1,
        "data": {"image": "/data/upload/3/a.b.jpg", "guideline_version": "v2", "batch_id": "b-7"},
        "annotations": [
            annotation(
                11,
                [
                    {**box("r1", rotation=12.5), "from_name": "objects", "origin": "manual"},
                    polygon("p1"),
                    scene("s1", "day", "rain"),
                    {"id": "note", "type": "textarea", "value": {"text": ["see the left lane"]}},
                    {"type": "relation", "from_id": "r1", "to_id": "p1"},
                    {"id": "k", "type": "keypointlabels", "value": {"x": 1, "y": 2, "keypointlabels": ["eye"]}},
                ],
                ground_truth=True,
            ),
            annotation(12, [box("r2")], who=8, was_cancelled=True),
            annotation(13, [box("r9")], who=None, updated_at="", created_at="2024-06-01T09:00:00Z"),
            annotation(14, None, who=9),
        ],
        "predictions": [501, 502],
        "meta": {},
    },
    {
        "id": 2,
        "data": {"item_id": "frame-2", "image": "/ignored.jpg"},
        "annotations": [annotation(21, [box("r3", label="bus"), scene("s2")])],
        "meta": {"honeypot": True},
        "predictions": [],
    },
    {"id": 3, "data": {"image": "s3://bucket/raw/night%20one.png?x=1"}, "annotations": [annotation(31, [box("a")])]},
    {"id": 4, "data": {"item_id": "  spaced  "}, "annotations": [annotation(41, [box("a")])]},
    {"id": 5, "data": {"item_id": "caf\u00e9"}, "annotations": [annotation(51, [box("a")])]},
    {"id": 6, "data": {"img": "/x/.hidden"}, "annotations": [annotation(61, [box("a")])]},
    {"id": 7, "data": {}, "annotations": [annotation(71, [box("a")])]},
    {"id": 8, "data": {"image": "", "url": "/y/frame..8.jpg"}, "annotations": [annotation(81, [box("a")])]},
    {"id": 9, "data": {"image": "/y/z/"}, "annotations": None},
    {"id": 10, "data": {"image": "/y/ten.jpg"}, "annotations": []},
]

ARROW_CASES: dict[str, Case] = {
    "bench": bench_file(rotated=False),
    "bench-rotated": bench_file(rotated=True),
    "mixed": document("mixed", MIXED),
    "users-as-objects": document(
        "users",
        [
            {"id": 1, "data": {"image": "/a/1.jpg"}, "annotations": [annotation(1, [box("a")], who={"id": 3})]},
            {
                "id": 2,
                "data": {"image": "/a/2.jpg"},
                "annotations": [
                    annotation(2, [box("b")], who={"id": 4, "email": "ann@example.com"}),
                    annotation(3, [box("c")], who={"id": 5, "email": ""}),
                    annotation(4, [box("d")], who=None),
                ],
                "predictions": [{"id": 9, "result": [box("p")]}, {"model_version": "m1"}],
            },
        ],
    ),
    "names-as-users": document(
        "names", [{"id": 1, "data": {"image": "/a/1.jpg"}, "annotations": [annotation(1, [box("a")], who="ann3")]}]
    ),
    "choices-only": document(
        "choices",
        [
            {"id": n, "data": {"image": f"/c/{n}.jpg"}, "annotations": [annotation(n, [scene("s", "a", "b")])]}
            for n in (1, 2)
        ],
    ),
    "choices-empty": document(  # a scene result with nothing chosen: no row, counted as skipped
        "choices-empty",
        [
            {"id": n, "data": {"image": f"/e/{n}.jpg"}, "annotations": [annotation(n, [scene("s"), scene("t", "a")])]}
            for n in (1, 2)
        ],
    ),
    "polygons-only": document(
        "polygons",
        [
            {
                "id": 1,
                "data": {"image": "/p/1.jpg"},
                "annotations": [annotation(1, [polygon("a"), polygon("b", points=[[0, 0], [100, 100]])])],
            }
        ],
    ),
    "polygons-closed": document(  # Label Studio's own flag on a closed polygon: read here, left out of attributes
        "closed",
        [
            {
                "id": 1,
                "data": {"image": "/q/1.jpg"},
                "annotations": [annotation(1, [open_polygon("a", closed=True), polygon("b")])],
            }
        ],
    ),
    "no-rows": document("none", [{"id": 1, "data": {"image": "/n/1.jpg"}, "annotations": [annotation(1, [])]}]),
    **{
        name: case
        for name in ("feature-3", "feature-4", "feature-8", "generated-3", "generated-4")
        for case in [FAST_CASES[name]]
    },
}

REAL_EXPORT = "real/label-studio-real/relabel_answers_export.json"


def fast_paths_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(label_studio_arrow, "parse", lambda *args: None)
    monkeypatch.setattr(label_studio_typed, "parse", lambda *args: None)


@pytest.mark.parametrize("name", sorted(ARROW_CASES))
def test_arrow_path_reads_as_the_generic_parser(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    source, data, sizes = ARROW_CASES[name]
    assert label_studio_arrow.parse(source, data, dict(sizes)) is not None, "the Arrow path should read this file"
    read = snapshot(ARROW_CASES[name])
    fast_paths_off(monkeypatch)
    assert read == snapshot(ARROW_CASES[name])


REAL = real_files()


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_exports_read_by_the_arrow_path_as_by_the_generic_parser(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    case = REAL[name]()
    source, data, sizes = case
    if name == REAL_EXPORT:  # Label Studio 1.23.2's own export: user ids, prediction ids
        assert label_studio_arrow.parse(source, data, dict(sizes)) is not None
    read = snapshot(case)
    fast_paths_off(monkeypatch)
    assert read == snapshot(case)


def one_task(results: list[Any], **task_fields: Any) -> bytes:
    return json.dumps([{**task(1, results), **task_fields}]).encode()


LEFT: dict[str, bytes] = {
    "a region's attribute": one_task([box("r"), {"id": "r", "type": "textarea", "value": {"text": ["occluded"]}}]),
    "a size from the catalog": one_task([{**box("a"), "original_width": None}]),
    "a result id that is a number": one_task([box(7)]),
    "a task id that is a name": one_task([box("a")], id="t1"),
    "a number as text": one_task([box("a", x="12.5")]),
    "two labels on a box": one_task([{**box("a"), "value": {**box("a")["value"], "rectanglelabels": ["a", "b"]}}]),
    "a label that is a number": one_task([box("a", label=5)]),
    "a point with three numbers": one_task([polygon("p", points=[[1, 2, 3]])]),
    "a polygon without points": one_task([polygon("p", points=[])]),
    "an open polygon": one_task([box("r"), open_polygon("p")]),
    "a chosen label that is a number": one_task([scene("s", "day", 3)]),
    "a region without a value": one_task([{**box("a"), "value": None}]),
    "annotation versions": json.dumps([task(1, [box("a")]), task(1, [box("b")])]).encode(),
    "users of two kinds": json.dumps(
        [task(1, [box("a")]), {**task(2, [box("b")]), "annotations": [annotation(5, [box("b")], who="ann")]}]
    ).encode(),
    "completions": json.dumps([{"id": 1, "data": {}, "completions": [annotation(1, [box("a")])]}]).encode(),
    "a first task without annotations": json.dumps([{"id": 1, "data": {}}, task(2, [box("a")])]).encode(),
    "not a list of tasks": b'{"images": []}',
    "empty": b"[]",
    "not JSON": b"[{",
    "a task that is null": b'[{"id": 1, "data": {}, "annotations": []}, null]',  # crashed pyarrow's JSON reader
    **{name: json.dumps(doc).encode() for name, doc in ERRORS.items()},  # the general parser's errors
}


@pytest.mark.parametrize("name", sorted(LEFT))
def test_what_the_arrow_path_leaves_to_the_other_readers(name: str) -> None:
    assert label_studio_arrow.parse(f"{name}.json", LEFT[name], {}) is None


def test_an_open_polygon_keeps_its_flag_in_every_reader_and_validation_quarantines_it() -> None:
    """Label Studio writes ``closed: false`` on a polygon its labeler never closed; the ``polygon_closed`` rule
    reads the flag from the row's attributes. The fast readers leave such a file to the generic parser."""
    data = LEFT["an open polygon"]
    assert label_studio_typed.parse("open.json", data, {}) is None
    table = canonical_annotations(parse_file("open.json", data, {}), "exports/2024-06-01/open.json", date(2024, 6, 1))
    attributes = dict(zip(table["kind"], table["attributes"], strict=True))
    assert json.loads(attributes["polygon"]) == {"closed": False, "from_name": "objects", "origin": "manual"}
    assert "closed" not in json.loads(attributes["bbox"])
    guidelines = load_guidelines(LocalStore(REPO / "config"))
    now = datetime(2024, 6, 2, tzinfo=UTC)
    frame = validation.validation_frame(table, pd.DataFrame(), guidelines, "2024-06-01", now)
    assert frame.loc[frame["kind"] == "polygon", "polygon_closed"].tolist() == [False]  # quarantined by the rule


def test_nothing_chosen_is_counted_alike_by_every_reader() -> None:
    source, data, _ = ARROW_CASES["choices-empty"]
    for reader in (label_studio_arrow.parse, label_studio_typed.parse):
        parsed = reader(source, data, {})
        assert parsed is not None and parsed.skipped == {"empty choices": 2} and len(parsed.objects) == 2


def test_a_polygon_with_no_points_is_a_row_validation_quarantines_not_a_failed_file(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Label Studio can export a polygon whose points were all deleted: the file's other labels are read, the
    polygon becomes a row that ``polygon_min_points`` quarantines, and every reader gives the same rows."""
    data = LEFT["a polygon without points"]
    assert label_studio_arrow.parse("empty.json", data, {}) is None  # left to the other readers
    typed = label_studio_typed.parse("empty.json", data, {})
    assert typed is not None
    read = snapshot(("empty.json", data, {}))
    fast_paths_off(monkeypatch)
    assert read == snapshot(("empty.json", data, {}))
    table = canonical_annotations(parse_file("empty.json", data, {}), "exports/2024-06-01/empty.json", date(2024, 6, 1))
    assert table["kind"].tolist() == ["polygon"]
    guidelines = load_guidelines(LocalStore(REPO / "config"))
    frame = validation.validation_frame(
        table, pd.DataFrame(), guidelines, "2024-06-01", datetime(2024, 6, 2, tzinfo=UTC)
    )
    assert frame["polygon_min_points"].tolist() == [False]


def test_a_user_id_written_as_a_float_is_that_user_in_every_reader(monkeypatch: pytest.MonkeyPatch) -> None:
    """An export passed through a tool that reads numbers as floats writes ``"completed_by": 7.0`` (and an
    embedded user's ``"id": 7.0``): the same user 7 as the plain export's ``7``, not a second annotator "7.0"."""
    data = json.dumps(
        [
            task(1, [box("a")]),
            {**task(2, [box("b")]), "annotations": [annotation(5, [box("b")], who=7.0)]},
            {**task(3, [box("c")]), "annotations": [annotation(6, [box("c")], who={"id": 7.0})]},
        ]
    ).encode()
    readers = [parse_file("floats.json", data, {}).objects]
    fast_paths_off(monkeypatch)
    readers.append(parse_file("floats.json", data, {}).objects)
    for objects in readers:
        assert objects["annotator_id"].tolist() == ["7", "7", "7"]
    only_floats = json.dumps([{**task(1, [box("a")]), "annotations": [annotation(1, [box("a")], who=7.0)]}])
    assert parse_file("floats.json", only_floats.encode(), {}).objects["annotator_id"].tolist() == ["7"]


WITHDRAWN = [
    {
        "id": 1,
        "data": {"image": "/d/a.jpg"},
        "annotations": [
            annotation(11, []),
            annotation(12, [box("r")], who=8, was_cancelled=True, updated_at="", created_at="2024-06-01T09:00Z"),
            annotation(13, [box("s")]),
        ],
    },
    {"id": 2, "data": {"image": "/d/b.jpg"}, "annotations": [annotation(21, [], who=9, was_cancelled=True)]},
]


def emptied_of(case: Case) -> list[list[Any]]:
    name, data, sizes = case
    return parse_file(name, data, dict(sizes)).emptied.values.tolist()


@pytest.mark.parametrize("name", ["withdrawn", *sorted(REAL)])
def test_every_reader_names_the_annotations_delivered_without_a_judgment_alike(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cancelled and empty annotations (``Parsed.emptied``, which withdraw an earlier version in the label state)
    come out of each reader the same, in document order."""
    case = document("withdrawn", WITHDRAWN) if name == "withdrawn" else REAL[name]()
    source, data, sizes = case
    readers = [label_studio_arrow.parse(source, data, dict(sizes)), label_studio_typed.parse(source, data, dict(sizes))]
    found = [p.emptied.values.tolist() for p in readers if p is not None]
    fast_paths_off(monkeypatch)
    generic = emptied_of(case)
    assert all(f == generic for f in found)
    if name == "withdrawn":
        assert len(found) == 2  # the Arrow path and the typed one read it
        assert generic == [
            ["a", "7", "task=1/annotation=11/empty", "2024-06-02T10:00:00Z"],
            ["a", "8", "task=1/annotation=12/cancelled", "2024-06-01T09:00Z"],
            ["b", "9", "task=2/annotation=21/cancelled", "2024-06-02T10:00:00Z"],
        ]


def test_a_withdrawn_annotation_with_an_odd_time_still_reads_its_file() -> None:
    """A cancelled annotation was only counted as skipped before it named a withdrawal: an ``updated_at`` that is no
    timestamp leaves its time missing (it loses to a dated version of the day) instead of failing the file."""
    data = json.dumps(
        [
            {
                "id": 1,
                "data": {"image": "/d/a.jpg"},
                "annotations": [annotation(11, [], was_cancelled=True, updated_at="x")],
            }
        ]
    ).encode()
    emptied = canonical_emptied(parse_file("odd.json", data, {}), "exports/2024-06-02/odd.json", date(2024, 6, 2))
    assert emptied["source_ref"].tolist() == ["task=1/annotation=11/cancelled"]
    assert emptied["annotated_at"].isna().all() and emptied["export_date"].tolist() == ["2024-06-02"]
