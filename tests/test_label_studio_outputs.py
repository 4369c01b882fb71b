"""The Label Studio parser's output, cell by cell, frozen from the parser that walked the JSON in Python.

The columnar parser replaced a per-result Python walk; these snapshots hold it to that walk's exact output on
every real Label Studio export in data/real/, on generated exports (tests/corpus.py) and on small documents
built to reach each rule and each error: same columns, dtypes, values (floats to the last bit, ``None`` apart
from NaN), same skipped counts, same error messages, same annotation ids. After a deliberate change of
behaviour, re-freeze with ``python tests/test_label_studio_outputs.py`` and review the diff.
"""

from __future__ import annotations

import codecs
import json
import math
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from corpus import CaseSpec, generate

from labelops.errors import ExportError
from labelops.formats import label_studio, parse_file
from labelops.ingest import canonical_annotations

REPO = Path(__file__).resolve().parents[1]
REAL = REPO / "data" / "real"
FROZEN = Path(__file__).resolve().parent / "frozen" / "label_studio_outputs.json"
KINDS = ("classification", "bbox", "polygon")

# source name, bytes, image sizes (the item catalog)
Case = tuple[str, bytes, dict[str, tuple[float, float]]]


def real_files() -> dict[str, Callable[[], Case]]:
    found = {}
    for path in sorted(REAL.rglob("*.json")):
        if label_studio.looks_like(json.loads(path.read_bytes())):
            name = path.relative_to(REAL).as_posix()
            found[f"real/{name}"] = lambda path=path, name=name: (name, path.read_bytes(), {})
    return found


SPECS = [
    CaseSpec("all_email_both", ("label_studio",), KINDS, n_items=15, updated="both", seed=1),
    CaseSpec("all_id_first", ("label_studio",), KINDS, n_items=15, ls_users="id", updated="later_first", seed=2),
    CaseSpec(
        "boxes_plain",
        ("label_studio",),
        ("bbox",),
        n_annotators=1,
        predictions=False,
        cancelled=False,
        other_records=False,
        seed=3,
    ),
    CaseSpec("scenes_last", ("label_studio",), ("classification",), updated="later_last", seed=4),
    CaseSpec("polygons_both", ("label_studio",), ("polygon",), n_annotators=4, updated="both", seed=5),
    CaseSpec("all_many", ("label_studio",), KINDS, n_items=15, n_annotators=4, updated="later_last", seed=6),
]


def generated(spec: CaseSpec) -> Case:
    corpus = generate(spec)
    (key,) = [k for k in corpus.files if k.endswith(".json")]
    return key, corpus.files[key], {}


BOX = {"type": "rectanglelabels", "from_name": "objects", "to_name": "image", "origin": "manual"}
SIZED = {**BOX, "original_width": 640, "original_height": 480}


def box(rid: Any, label: Any = "car", **value: Any) -> dict[str, Any]:
    return {
        **SIZED,
        "id": rid,
        "value": {"x": 10, "y": 20.5, "width": 30, "height": 40.25, "rectanglelabels": [label], **value},
    }


def task(tid: Any, results: list[Any], **annotation: Any) -> dict[str, Any]:
    return {
        "id": tid,
        "data": {"image": f"s3://bucket/raw/frame-{tid}.jpg"},
        "annotations": [
            {"id": 100, "completed_by": 7, "updated_at": "2024-06-02T10:00:00Z", "result": results, **annotation}
        ],
    }


FEATURES = [
    # media references, item ids, guideline versions, batches and honeypots
    {
        "data": {"item_id": "  spaced  ", "guideline_version": 3, "batch_id": 5},
        "annotations": [{"id": 1, "result": [box("a")]}],
    },
    {
        "id": "t2",
        "data": {"item_id": 0, "img": "/data/upload/7/abc-frame-9.png"},
        "meta": {"honeypot": True},
        "completions": [{"id": 1, "completed_by": 0, "result": [box("b")]}],
    },
    {
        "id": 3,
        "data": {"image": 12, "url": "http://host/x/y/clip.mp4?sig=1", "batch_id": "b-1"},
        "meta": "not a dict",
        "annotations": [{"id": 1, "completed_by": {"id": 4}, "result": [box("c")]}],
    },
    {
        "id": 4,
        "data": {"text": "no media"},
        "predictions": [{"id": 1}, {"id": 2}, {"id": 3}],
        "annotations": [
            {
                "id": 1,
                "completed_by": {"id": 9, "email": "a@b.example"},
                "ground_truth": True,
                "created_at": "2024-06-02T09:00:00",
                "result": [box("d")],
            }
        ],
    },
    {
        "id": 5,
        "data": {"image": "/data/local-files/?d=fleet/raw/cam%201.jpg"},
        "predictions": None,
        "annotations": [{"id": 1, "completed_by": {}, "result": None}],
    },
    # choices, attributes folded into their region, rotation, polygons, number formats
    task(
        6,
        [
            {
                "id": "s",
                "type": "choices",
                "from_name": "scene",
                "value": {"choices": ["day", "rain"]},
                "origin": "prediction",
            },
            {"id": "e", "type": "choices", "from_name": "empty", "value": {"choices": []}},
            {"id": "n", "type": "choices", "from_name": "none", "value": {"choices": None}},
            {"id": "r", "type": "textarea", "from_name": "plate", "value": {"text": ["größe 2"]}},
            box("r", rotation=30.5),
            {"id": "r", "type": "choices", "value": {"choices": ["occluded"]}},
            {"id": "r", "type": "number", "from_name": "count", "value": {"number": 3.5}},
            {"id": "r", "type": "rating", "from_name": "stars", "value": {"rating": 4}},
            {"id": "r", "type": "taxonomy", "from_name": "tax", "value": {"taxonomy": [["A", "B"]]}},
            {"id": "r", "type": "datetime", "from_name": "when", "value": {}},
            box("q", label="bus", x="12.5", y=True, width=1, height=2e-3, rotation="0"),
            box("q2", rotation="-15"),
            box("q3", rotation=None, x=10**20),
            {
                **BOX,
                "id": "p",
                "type": "polygonlabels",
                "original_width": 100,
                "original_height": 50,
                "value": {"points": [[10, 20], [30.5, 40], [20, 5]], "polygonlabels": ["lane"]},
            },
            {
                **BOX,
                "id": "p1",
                "type": "polygonlabels",
                "original_width": "100",
                "original_height": 50.5,
                "value": {"points": [[1, 2]], "polygonlabels": ["lane"]},
            },
            {"id": "rel", "type": "relation", "from_id": "r", "to_id": "q"},
            {"id": "k", "type": "keypointlabels", "value": {"x": 1, "keypointlabels": ["nose"]}},
            {"type": "textarea", "value": {"text": ["a note"]}},
        ],
    ),
    # versions: the latest updated_at wins wherever it stands; ties go to the last; unreadable stamps sort first
    {
        "id": 7,
        "data": {"image": "a/b/seven.jpg"},
        "annotations": [
            {"id": 1, "completed_by": 1, "updated_at": "2024-06-02T12:00:00+02:00", "result": [box("old1")]},
            {"id": 1, "completed_by": 1, "updated_at": "2024-06-02T11:00:00Z", "result": [box("new1")]},
            {"id": 2, "completed_by": 2, "updated_at": "2024-06-02T10:00:00Z", "result": [box("tie-a"), box("tie-b")]},
            {"id": 2, "completed_by": 2, "updated_at": "2024-06-02T10:00:00Z", "result": [box("tie-c")]},
            {"id": 3, "completed_by": 3, "updated_at": "yesterday", "result": []},
            {"id": 3, "completed_by": 3, "created_at": "2024-06-01", "result": [box("dated")]},
            {"completed_by": 4, "result": [box("no-id-1")]},
            {"completed_by": 4, "result": [box("no-id-2")]},
            {"id": 5, "completed_by": 5, "was_cancelled": True, "result": []},
            {"id": 6, "completed_by": 5, "was_cancelled": True, "result": [box("x"), box("y"), box("z")]},
            {"id": 7, "completed_by": 5, "was_cancelled": 1, "result": None},
        ],
    },
    {
        "id": 7,
        "data": {"image": "a/b/seven-again.jpg"},
        "annotations": [
            {"id": 1, "completed_by": 1, "updated_at": "2024-06-02T09:00:00Z", "result": [box("older")]},
            {
                "id": 8,
                "completed_by": 1,
                "updated_at": "2024-06-03T09:00:00Z",
                "was_cancelled": True,
                "result": [box("c1")],
            },
            {"id": 8, "completed_by": 1, "updated_at": "2024-06-02T09:00:00Z", "result": [box("c0"), box("c0b")]},
        ],
    },
    {"id": 9, "data": {"image": "nine.jpg"}, "annotations": []},
    {"id": 10, "data": {"image": "ten.jpg"}, "annotations": None, "completions": [{"id": 1, "result": [box("ten")]}]},
    {
        "id": 11,
        "data": {"image": "eleven.jpg"},
        "annotations": [
            {
                "id": 1,
                "result": [
                    {
                        **BOX,
                        "id": "cat",
                        "value": {"x": 0, "y": 0, "width": 50, "height": 50, "rectanglelabels": ["car"]},
                    }
                ],
            }
        ],
    },
]


def dumped(document: Any) -> bytes:
    return json.dumps(document).encode()


def features() -> Case:
    return "features.json", dumped(FEATURES), {"eleven": (1000.0, 500.0)}


RAW = {
    # what Python's JSON reader accepts beyond strict JSON, and the encodings it detects
    "nan_infinity.json": b'[{"id": 1, "data": {"image": "n.jpg"}, "annotations": [{"id": 1, "result": [{"id": "a", "type": "rectanglelabels", "original_width": 10, "original_height": 10, "value": {"x": NaN, "y": Infinity, "width": -Infinity, "height": 1, "rectanglelabels": ["car"]}}]}]}]',
    "duplicate_keys.json": b'[{"id": 1, "data": {"image": "d.jpg", "image": "e.jpg"}, "annotations": [{"id": 1, "result": [{"id": "a", "type": "choices", "value": {"choices": ["x"], "choices": ["y"]}}]}]}]',
    "bom.json": codecs.BOM_UTF8 + dumped([task(1, [box("a")])]),
    "utf16.json": json.dumps([task(1, [box("a")])]).encode("utf-16"),
    "surrogate.json": b'[{"id": 1, "data": {"image": "s.jpg"}, "annotations": [{"id": 1, "result": [{"id": "a", "type": "choices", "value": {"choices": ["\\ud800"]}}]}]}]',
    "big_numbers.json": b'[{"id": 123456789012345678901234567890, "data": {"image": "b.jpg"}, "annotations": [{"id": 1, "result": [{"id": "a", "type": "rectanglelabels", "original_width": 1e400, "original_height": 10, "value": {"x": 1.7976931348623157e308, "y": 5e-324, "width": -0.0, "height": 0.1, "rectanglelabels": ["car"]}}]}]}]',
    "bad_stamp.json": dumped([task(1, [box("a")], updated_at="noon")]),
    "truncated.json": dumped([task(1, [box("a")])])[:-7],
    "deep_inside.json": dumped([{**task(1, [box("a")]), "meta": {"d": json.loads("[" * 500 + "]" * 500)}}]),
    # a polygon with no points: a row (validation quarantines it), not a failed file
    "polygon_empty.json": dumped(
        [
            task(
                1,
                [
                    box("a"),
                    {**SIZED, "id": "p", "type": "polygonlabels", "value": {"points": [], "polygonlabels": ["x"]}},
                ],
            )
        ]
    ),
}

ERRORS = {
    "task_not_object.json": [task(1, [box("a")]), "task"],
    "no_data.json": [task(1, [box("a")]), {"id": 2, "annotations": []}],
    "annotations_not_list.json": [task(1, [box("a")]), {"id": 2, "data": {}, "annotations": {"a": 1}}],
    "annotation_not_object.json": [{"id": 1, "data": {}, "annotations": [{"id": 1, "result": []}, 5]}],
    "result_not_list.json": [task(1, {"a": 1})],
    "result_string.json": [task(1, "abc")],
    "cancelled_result_number.json": [task(1, 5, was_cancelled=True)],
    "superseded_result_number.json": [
        {
            "id": 1,
            "data": {},
            "annotations": [
                {"id": 1, "updated_at": "2024-01-01", "result": 5},
                {"id": 1, "updated_at": "2024-01-02", "result": []},
            ],
        }
    ],
    "result_not_object.json": [task(1, [box("a"), ["b"]])],
    "value_not_object.json": [task(1, [box("a"), {"id": "b", "type": "keypointlabels", "value": [1]}])],
    "relation_without_value.json": [task(1, [{"id": "b", "type": "relation"}, {"id": "c", "type": "choices"}])],
    "choices_not_strings.json": [task(1, [{"id": "b", "type": "choices", "value": {"choices": ["a", 1]}}])],
    "choices_string.json": [task(1, [{"id": "b", "type": "choices", "value": {"choices": "abc"}}])],
    "two_labels.json": [
        task(1, [box("a"), {**box("b"), "value": {**box("b")["value"], "rectanglelabels": ["a", "b"]}}])
    ],
    "label_not_string.json": [task(1, [box("a", label=7)])],
    "no_labels.json": [task(1, [{**SIZED, "id": "a", "value": {"x": 1, "y": 1, "width": 1, "height": 1}}])],
    "no_size.json": [task(1, [{**BOX, "id": "a", "value": box("a")["value"]}])],
    "half_size.json": [task(1, [{**BOX, "id": "a", "original_width": 5, "value": box("a")["value"]}])],
    "bad_width.json": [task(1, [{**box("a"), "original_width": "wide"}])],
    "null_width.json": [task(1, [{**box("a"), "original_width": None}])],
    "x_word.json": [task(1, [box("a"), box("b", x="left")])],
    "x_missing.json": [task(1, [{**box("a"), "value": {"y": 1, "width": 1, "height": 1, "rectanglelabels": ["car"]}}])],
    "x_null.json": [task(1, [box("a", x=None)])],
    "x_list.json": [task(1, [box("a", x=[1])])],
    "height_word.json": [task(1, [box("a", height="tall")])],
    "rotation_word.json": [task(1, [box("a", rotation="tilted")])],
    "polygon_flat.json": [
        task(1, [{**SIZED, "id": "p", "type": "polygonlabels", "value": {"points": [1, 2, 3], "polygonlabels": ["x"]}}])
    ],
    "polygon_missing.json": [
        task(1, [{**SIZED, "id": "p", "type": "polygonlabels", "value": {"polygonlabels": ["x"]}}])
    ],
    "polygon_words.json": [
        task(
            1, [{**SIZED, "id": "p", "type": "polygonlabels", "value": {"points": [["a", 1]], "polygonlabels": ["x"]}}]
        )
    ],
    "media_escape.json": [
        task(1, [box("a")]),
        {"id": 2, "data": {"image": "/data/../../etc/passwd"}, "annotations": []},
    ],
    "media_no_file.json": [{"id": 1, "data": {"image": "s3://bucket/"}, "annotations": []}],
    "unhashable_task_id.json": [{"id": [1], "data": {}, "annotations": [{"id": 1, "result": []}]}],
    "unhashable_result_id.json": [task(1, [box("a"), {"id": ["b"], "type": "textarea", "value": {}}])],
    "unhashable_type.json": [task(1, [box("a"), {"id": "b", "type": ["textarea"], "value": {}}])],
    # two defects: the first in document order is the one reported
    "bad_value_then_bad_media.json": [
        task(1, [box("a", x="left")]),
        {"id": 2, "data": {"image": "../up"}, "annotations": []},
    ],
    "bad_media_then_bad_value.json": [
        {"id": 1, "data": {"image": "../up"}, "annotations": []},
        task(2, [box("a", x="left")]),
    ],
    "bad_value_then_no_data.json": [task(1, [box("a", x="left")]), {"id": 2}],
    "bad_choice_then_bad_box.json": [
        task(1, [{"id": "c", "type": "choices", "value": {"choices": [1]}}, box("a", x="left")])
    ],
    "bad_box_then_bad_choice.json": [
        task(1, [box("a", x="left"), {"id": "c", "type": "choices", "value": {"choices": [1]}}])
    ],
    "bad_size_then_bad_label.json": [task(1, [{**BOX, "id": "a", "value": box("a")["value"]}, box("b", label=None)])],
    "bad_polygon_then_bad_value.json": [
        task(
            1,
            [
                {**SIZED, "id": "p", "type": "polygonlabels", "value": {"points": [1], "polygonlabels": ["x"]}},
                {"id": "v", "type": "x", "value": 1},
            ],
        )
    ],
}


def cases() -> dict[str, Callable[[], Case]]:
    found: dict[str, Callable[[], Case]] = {**real_files()}
    found.update({f"generated/{spec.name}": lambda spec=spec: generated(spec) for spec in SPECS})
    found["features"] = features
    found.update({f"raw/{name}": lambda name=name, data=data: (name, data, {}) for name, data in RAW.items()})
    found.update({f"error/{name}": lambda name=name, doc=doc: (name, dumped(doc), {}) for name, doc in ERRORS.items()})
    return found


def cell(value: Any) -> Any:
    """A cell as JSON that keeps what matters: the Python type, and floats to the last bit (NaN, -0.0 included)."""
    if isinstance(value, float):
        return [type(value).__name__, "nan" if math.isnan(value) else float.hex(value)]
    if isinstance(value, list):
        return [type(value).__name__, [cell(v) for v in value]]
    return [type(value).__name__, value]


def snapshot(case: Case) -> dict[str, Any]:
    name, data, sizes = case
    try:
        parsed = parse_file(name, data, sizes)
    except ExportError as error:
        return {"error": str(error)}
    frame = parsed.objects
    out: dict[str, Any] = {
        "format": parsed.format,
        "skipped": parsed.skipped,
        "index": [type(frame.index).__name__, frame.index.tolist()],
        "dtypes": {column: str(dtype) for column, dtype in frame.dtypes.items()},
        "columns": {column: [cell(v) for v in frame[column].tolist()] for column in frame.columns},
    }
    try:
        table = canonical_annotations(parsed, f"exports/2024-06-01/{name}", date(2024, 6, 1))
    except ExportError as error:
        out["canonical_error"] = str(error)
    else:
        out["annotation_id"] = table["annotation_id"].tolist()
        out["annotated_at"] = [str(t) for t in table["annotated_at"]]
    return out


def frozen() -> dict[str, Any]:
    return json.loads(FROZEN.read_text())


CASES = cases()


def test_every_case_is_frozen() -> None:
    assert sorted(CASES) == sorted(frozen())


@pytest.mark.parametrize("name", sorted(CASES))
def test_label_studio_output_is_unchanged(name: str) -> None:
    expected = frozen()[name]
    actual = snapshot(CASES[name]())
    assert actual.keys() == expected.keys()
    for key in expected:
        assert actual[key] == expected[key], key


if __name__ == "__main__":
    FROZEN.parent.mkdir(exist_ok=True)
    outputs = {name: snapshot(make()) for name, make in sorted(CASES.items())}
    FROZEN.write_text(json.dumps(outputs, indent=1, sort_keys=True) + "\n")
    print(f"froze {len(outputs)} cases in {FROZEN}")
