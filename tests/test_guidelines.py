"""Guideline versions: loading, validation of the change log, and what a change does to old labels."""

from __future__ import annotations

from pathlib import Path
from textwrap import dedent

import pandas as pd
import pytest

from labelops.guidelines import (
    GuidelineError,
    GuidelineSet,
    labels_under,
    load_guidelines,
    parse_guideline,
    predictions_under,
)
from labelops.storage import LocalStore

REPO = Path(__file__).resolve().parents[1]

BASE = """
version: a
effective_from: 2024-01-01
classes:
  - {name: car}
  - {name: truck}
  - {name: van}
  - {name: person, critical: true, severity: 10}
  - {name: bike}
"""


def version(name: str, parent: str, day: str, classes: list[str], changes: str) -> str:
    listed = "\n".join(f"  - {{name: {c}}}" for c in classes)
    return f"version: {name}\nparent: {parent}\neffective_from: {day}\nclasses:\n{listed}\nchanges:\n{dedent(changes)}"


def guideline_set(*documents: str) -> GuidelineSet:
    return GuidelineSet([parse_guideline(f"g{i}.yaml", d) for i, d in enumerate(documents)])


def test_shipped_guidelines_load_and_v2_remaps_v1() -> None:
    guidelines = load_guidelines(LocalStore(REPO / "config"))
    assert guidelines.in_force("2024-06-11").version == "v1"
    assert guidelines.in_force("2024-06-12").version == "v2"
    remap = guidelines.remap("v1", "v2")
    assert remap.mapping == {"traffic_light": "traffic_signal"}
    assert set(remap.relabel) == {"cyclist"}
    assert guidelines.by_version["v2"].classes["pedestrian"].critical
    assert guidelines.renames_into("v2") == {"traffic_light": "traffic_signal"}
    assert guidelines.renames_into("v1") == {}


def test_rename_merge_split_redefine_remove() -> None:
    b = version(
        "b",
        "a",
        "2024-02-01",
        ["automobile", "vehicle", "person", "cyclist", "scooter"],
        """
      - {op: rename, from: car, to: automobile}
      - {op: merge, from: [truck, van], into: vehicle}
      - {op: split, from: bike, into: [cyclist, scooter]}
      - {op: redefine, class: person}
    """,
    )
    c = version(
        "c",
        "b",
        "2024-03-01",
        ["auto", "vehicle", "person", "cyclist"],
        """
      - {op: rename, from: automobile, to: auto}
      - {op: remove, class: scooter}
    """,
    )
    guidelines = guideline_set(BASE, b, c)
    ab = guidelines.remap("a", "b")
    assert ab.mapping == {"car": "automobile", "truck": "vehicle", "van": "vehicle"}
    assert set(ab.relabel) == {"bike", "person"}
    assert "split" in ab.relabel["bike"] and "redefine" in ab.relabel["person"]
    ac = guidelines.remap("a", "c")  # changes compose across versions
    assert ac.mapping == {"car": "auto", "truck": "vehicle", "van": "vehicle"}
    bc = guidelines.remap("b", "c")
    assert bc.mapping == {"automobile": "auto"} and set(bc.relabel) == {"scooter"}
    assert guidelines.remap("c", "c").mapping == {}
    assert guidelines.in_force("2024-02-15").version == "b"


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (version("b", "a", "2024-02-01", ["car"], "  - {op: rename, from: lorry, to: car}"), "unknown class 'lorry'"),
        (version("b", "a", "2024-02-01", ["car"], "  - {op: split, from: bike}"), "split of 'bike' has no targets"),
        (
            version("b", "a", "2024-02-01", ["car"], "  - {op: split, from: bike, into: [cyclist]}"),
            "at least two targets",
        ),
        (version("b", "a", "2024-02-01", ["car"], "  - {op: merge, from: [car], into: auto}"), "at least two classes"),
        (version("b", "a", "2024-02-01", ["car"], "  - {op: teleport, class: car}"), "needs an op out of"),
        (
            version("b", "a", "2024-02-01", ["car", "truck", "van", "person", "bike"], "  - {op: add, class: car}"),
            "'car' already exists",
        ),
        (
            version(
                "b", "a", "2024-02-01", ["car", "truck", "van", "person"], "  - {op: rename, from: bike, to: cycle}"
            ),
            "listed but not derived: \\[\\]; derived but not listed: \\['cycle'\\]",
        ),
    ],
)
def test_bad_change_logs_are_clear_errors(document: str, message: str) -> None:
    with pytest.raises(GuidelineError, match=message):
        guideline_set(BASE, document)


def test_cycles_and_missing_parents() -> None:
    b = version("b", "c", "2024-02-01", ["car"], "[]").replace("changes:\n[]", "")
    c = version("c", "b", "2024-03-01", ["car"], "[]").replace("changes:\n[]", "")
    with pytest.raises(GuidelineError, match="cycle"):
        guideline_set(BASE, b, c)
    orphan = version("d", "zz", "2024-03-01", ["car"], "[]").replace("changes:\n[]", "")
    with pytest.raises(GuidelineError, match="parent version 'zz' does not exist"):
        guideline_set(BASE, orphan)


def test_yaml_tags_are_refused_and_files_are_named(tmp_path: Path) -> None:
    (tmp_path / "guidelines").mkdir()
    (tmp_path / "guidelines" / "evil.yaml").write_text(
        "version: !!python/object/apply:os.system ['echo pwned']\nclasses: []\n"
    )
    with pytest.raises(GuidelineError, match=r"evil.yaml: not valid YAML for the safe loader"):
        load_guidelines(LocalStore(tmp_path))
    for text, message in [
        ("- a list", "a guideline is a mapping"),
        ("version: x\neffective_from: soon\nclasses: [{name: a}]", "not a date"),
        ("version: x\neffective_from: 2024-01-01\nclasses: [{name: a, geometry: [cuboid]}]", "geometry must be"),
    ]:
        with pytest.raises(GuidelineError, match=message):
            parse_guideline("bad.yaml", text)


def test_a_model_belongs_to_one_version_and_models_list_names() -> None:
    b = version("b", "a", "2024-02-01", ["car", "truck", "van", "person", "bike"], "").replace(
        "classes:", "models: [det-2]\nclasses:"
    )
    assert guideline_set(BASE, b).model_versions == {"det-2": "b"}
    with pytest.raises(GuidelineError, match=r"g1\.yaml.*model 'det-2' is listed by version 'a' too"):
        guideline_set(BASE.replace("classes:", "models: [det-2]\nclasses:"), b)
    with pytest.raises(GuidelineError, match=r"g0\.yaml.*models must list model versions"):
        guideline_set(BASE.replace("classes:", "models: det-2\nclasses:"))


def test_rows_of_a_removed_class_are_left_out_where_labels_are_compared() -> None:
    """v `c` removes `scooter`: gold and predictions of it compare with nothing any more (no coverage gap, no
    relabel reason, no risk row); drift keeps every row of the traffic."""
    b = version(
        "b", "a", "2024-02-01", ["car", "truck", "van", "person", "bike", "scooter"], "  - {op: add, class: scooter}"
    ).replace("classes:", "models: [m]\nclasses:")  # model m knows scooters
    c = version(
        "c",
        "b",
        "2024-03-01",
        ["auto", "truck", "van", "person", "bike"],
        """
      - {op: rename, from: car, to: auto}
      - {op: remove, class: scooter}
    """,
    )
    guidelines = guideline_set(BASE, b, c)
    assert guidelines.removed_by("c") == {"scooter"} and guidelines.removed_by("b") == set()
    predictions = pd.DataFrame({"predicted_label": ["car", "scooter", "bike"], "model_version": "m"})
    assert predictions_under(predictions, guidelines, "c")["predicted_label"].tolist() == ["auto", "bike"]
    kept = predictions_under(predictions, guidelines, "c", keep_removed=True)["predicted_label"].tolist()
    assert kept == ["auto", "scooter", "bike"]
    assert labels_under(predictions.rename(columns={"predicted_label": "label"}), guidelines, "b")[
        "label"
    ].tolist() == [
        "car",
        "scooter",
        "bike",
    ]
    assert not guidelines.predicted_in_doubt(predictions, "c").any()  # a removed class is not in doubt: it is gone


def test_removed_and_doubtful_classes_are_found_across_chains_of_changes() -> None:
    """A class renamed and then removed is gone under its first name too; a class split and then renamed is in
    doubt under its new name too (predictions arrive already read under the version in force)."""
    classes = ["car", "truck", "van", "person"]
    renamed = version("b", "a", "2024-02-01", [*classes, "cycle"], "  - {op: rename, from: bike, to: cycle}")
    removed = version("c", "b", "2024-03-01", classes, "  - {op: remove, class: cycle}")
    chain = guideline_set(BASE.replace("classes:", "models: [m]\nclasses:"), renamed, removed)
    assert chain.removed_by("c") == {"bike", "cycle"}
    old_model = pd.DataFrame({"predicted_label": ["bike", "car"], "model_version": "m"})
    assert predictions_under(old_model, chain, "c")["predicted_label"].tolist() == ["car"]
    split = version(
        "b", "a", "2024-02-01", [*classes, "bike", "scooter"], "  - {op: split, from: bike, into: [bike, scooter]}"
    )
    then_renamed = version(
        "c", "b", "2024-03-01", [*classes, "bicycle", "scooter"], "  - {op: rename, from: bike, to: bicycle}"
    )
    chain = guideline_set(BASE.replace("classes:", "models: [m]\nclasses:"), split, then_renamed)
    read = predictions_under(old_model, chain, "c")
    assert read["predicted_label"].tolist() == ["bicycle", "car"]
    assert chain.predicted_in_doubt(read, "c").tolist() == [True, False]
