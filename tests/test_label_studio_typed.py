"""The typed Label Studio path (labelops/formats/label_studio_typed.py) against the generic parser.

The frozen outputs (tests/test_label_studio_outputs.py) hold parse_file to the old parser's output; most of
their documents mix features the typed path leaves to the generic parser (annotation versions, attributes
folded into regions). Here each feature is also read alone, in documents the typed path does read, and its
output is compared cell by cell with the generic parser's on the same bytes.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from corpus import CaseSpec, generate
from test_label_studio_outputs import ERRORS, FEATURES, SIZED, Case, box, snapshot, task

from bench.ingest import as_label_studio, synthetic
from labelops.formats import label_studio_arrow, label_studio_typed

KINDS = ("classification", "bbox", "polygon")


def generated(spec: CaseSpec) -> Case:
    corpus = generate(spec)
    (key,) = [k for k in corpus.files if k.endswith(".json")]
    return key, corpus.files[key], {}


def bench_file(rotated: bool) -> Case:
    data = json.loads(as_label_studio(synthetic(500)))
    if rotated:
        for n, a in enumerate(a for t in data for a in t["annotations"]):
            for r in a["result"]:
                r["value"]["rotation"] = [0, 12.5, 0.0, -3][n % 4]
    return "bench.json", json.dumps(data).encode(), {}


# The frozen features but the two versions of task 7 (left to the generic parser), with the item catalog one needs.
ONE_VERSION = [(n, t) for n, t in enumerate(FEATURES) if t.get("id") != 7]
CATALOG = {"eleven": (1000.0, 500.0)}

FAST_CASES: dict[str, Case] = {
    **{f"feature-{n}": (f"f{n}.json", json.dumps([t]).encode(), CATALOG) for n, t in ONE_VERSION},
    "features": ("f.json", json.dumps([t for _, t in ONE_VERSION]).encode(), CATALOG),
    "attribute-of-a-region": (
        "a.json",
        json.dumps([task(1, [box("r"), {"id": "r", "type": "choices", "value": {"choices": ["occluded"]}}])]).encode(),
        {},
    ),
    "bench": bench_file(rotated=False),
    "bench-rotated": bench_file(rotated=True),
    "scene-and-regions": (
        "s.json",
        json.dumps(
            [
                task(
                    1,
                    [
                        {"id": "s", "type": "choices", "from_name": "scene", "value": {"choices": ["day", "rain"]}},
                        {"id": "e", "type": "choices", "from_name": "empty", "value": {"choices": None}},
                        {"id": "t", "type": "textarea", "from_name": "note", "value": {"text": ["free"]}},
                        {"id": "l", "type": "relation", "from_id": "a", "to_id": "b"},
                        {"type": "brushlabels", "value": {"brushlabels": ["x"]}},
                        box("a", rotation=30.5),
                        box(7, label="bus", x="12.5", width=1, height=2e-3),
                        {
                            **SIZED,
                            "type": "polygonlabels",
                            "value": {"points": [[1, 2], [3.5, 4], [0, 9]], "polygonlabels": ["lane"]},
                        },
                    ],
                    ground_truth=True,
                ),
                task(2, [box("b")], was_cancelled=True),
                task(3, []),
                {"id": 4, "data": {"image": "/x/4.jpg"}, "annotations": None},
                {"data": {"image": "/x/.hidden", "guideline_version": "v2"}, "annotations": [{"result": [box("c")]}]},
            ]
        ).encode(),
        {},
    ),
    "catalog-sizes": (
        "c.json",
        json.dumps(
            [
                task(
                    1,
                    [
                        {**box("a"), "original_width": None},
                        {k: v for k, v in box("b").items() if k != "original_height"},
                    ],
                )
            ]
        ).encode(),
        {"frame-1": (800.0, 600.0)},
    ),
    **{
        f"generated-{n}": generated(spec)
        for n, spec in enumerate(
            [
                CaseSpec("g0", ("label_studio",), KINDS, n_items=15, seed=11),
                CaseSpec("g1", ("label_studio",), KINDS, n_items=15, ls_users="id", n_annotators=4, seed=12),
                CaseSpec("g2", ("label_studio",), ("bbox",), other_records=False, seed=13),
                CaseSpec("g3", ("label_studio",), ("classification",), predictions=False, cancelled=False, seed=14),
                CaseSpec("g4", ("label_studio",), ("polygon",), n_annotators=1, seed=15),
            ]
        )
    },
}


@pytest.mark.parametrize("name", sorted(FAST_CASES))
def test_typed_path_reads_as_the_generic_parser(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    source, data, sizes = FAST_CASES[name]
    assert label_studio_typed.parse(source, data, dict(sizes)) is not None, "the typed path should read this file"
    monkeypatch.setattr(label_studio_arrow, "parse", lambda *args: None)  # the Arrow path reads some of these first
    typed = snapshot(FAST_CASES[name])
    monkeypatch.setattr(label_studio_typed, "parse", lambda *args: None)
    assert typed == snapshot(FAST_CASES[name])


def versions_twice() -> bytes:
    document: list[dict[str, Any]] = [task(1, [box("a")]), task(1, [box("b")], updated_at="2024-06-03T10:00:00Z")]
    return json.dumps(document).encode()


LEFT: dict[str, bytes] = {
    "annotation versions": versions_twice(),
    "not a list of tasks": b'{"images": []}',
    "empty": b"[]",
    "no annotations key": b'[{"data": {}}]',
    "an open polygon": json.dumps(
        [
            task(
                1,
                [
                    {
                        **SIZED,
                        "id": "p",
                        "type": "polygonlabels",
                        "value": {"points": [[1, 2], [3, 4], [0, 9]], "closed": False, "polygonlabels": ["lane"]},
                    }
                ],
            )
        ]
    ).encode(),
    **{name: json.dumps(doc).encode() for name, doc in ERRORS.items()},
}


@pytest.mark.parametrize("name", sorted(LEFT))
def test_what_the_typed_path_leaves_to_the_generic_parser(name: str) -> None:
    assert label_studio_typed.parse(f"{name}.json", LEFT[name], {}) is None
