"""Versioned labeling guidelines: the taxonomy, its rules, and typed changes between versions.

A guideline file is self-contained (it lists every class of its version) and, from the
second version on, names its parent and the typed operations that lead from the parent
to it. The two must agree: applying the operations to the parent's classes has to give
exactly the classes the file lists, so a guideline cannot silently drift from its change
log. Files are loaded with YAML's safe loader; tags such as ``!!python/object`` are refused.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import numpy as np
import pandas as pd
import yaml

from labelops.storage import Store

GEOMETRIES = ("classification", "bbox", "polygon")
OPERATIONS = ("rename", "merge", "split", "add", "remove", "redefine")
# What each operation means for labels made under the parent version.
REMAPPING = ("rename", "merge")
INVALIDATING = ("split", "redefine", "remove")


class GuidelineError(ValueError):
    """A guideline file that cannot be used; the message names the file."""

    def __init__(self, source: str, problem: str) -> None:
        self.source = source
        super().__init__(f"{source}: {problem}")


@dataclass(frozen=True)
class LabelClass:
    name: str
    description: str
    geometry: tuple[str, ...]
    critical: bool
    severity: float
    min_box_size: tuple[float, float] | None
    attributes: dict[str, tuple[str, ...]]


@dataclass(frozen=True)
class Change:
    op: str
    sources: tuple[str, ...]  # classes of the parent the operation reads
    targets: tuple[str, ...]  # classes of this version it produces
    note: str = ""


@dataclass(frozen=True)
class Guideline:
    version: str
    effective_from: date
    parent: str | None
    classes: dict[str, LabelClass]
    changes: tuple[Change, ...]
    min_box_size: tuple[float, float]
    source: str
    models: tuple[str, ...] = ()  # production model versions whose classes are this version's

    def min_size(self, label: str) -> tuple[float, float]:
        cls = self.classes.get(label)
        return cls.min_box_size if cls is not None and cls.min_box_size is not None else self.min_box_size


@dataclass(frozen=True)
class Remap:
    """How labels made under an older version read under a newer one.

    ``mapping`` renames labels whose meaning survived unambiguously (rename, merge);
    ``relabel`` lists labels that a human must look at again (split, redefine,
    remove), with the change that invalidated them (:func:`removals` tells a removal apart).
    """

    from_version: str
    to_version: str
    mapping: dict[str, str] = field(default_factory=dict)
    relabel: dict[str, str] = field(default_factory=dict)

    @property
    def removed(self) -> set[str]:
        """The labels of ``from_version`` whose class a change removed."""
        reasons = pd.Series(self.relabel, dtype=object)
        return set(reasons.index[removals(reasons)]) if len(reasons) else set()


class GuidelineSet:
    """All guideline versions, ordered by the day they take effect."""

    def __init__(self, guidelines: list[Guideline]) -> None:
        if not guidelines:
            raise GuidelineError("guidelines", "no guideline versions found")
        self.by_version = {g.version: g for g in guidelines}
        self.ordered = sorted(guidelines, key=lambda g: (g.effective_from, g.version))
        self._check_lineage()
        self.model_versions: dict[str, str] = {}
        for guideline in self.ordered:
            for model in guideline.models:
                if model in self.model_versions:
                    raise GuidelineError(
                        guideline.source, f"model {model!r} is listed by version {self.model_versions[model]!r} too"
                    )
                self.model_versions[model] = guideline.version

    def _check_lineage(self) -> None:
        for guideline in self.ordered:
            seen = {guideline.version}
            current = guideline
            while current.parent is not None:
                if current.parent not in self.by_version:
                    raise GuidelineError(current.source, f"parent version {current.parent!r} does not exist")
                if current.parent in seen:
                    raise GuidelineError(current.source, f"versions form a cycle through {current.parent!r}")
                seen.add(current.parent)
                current = self.by_version[current.parent]
        for guideline in self.ordered:
            if guideline.parent is None:
                if guideline.changes:
                    raise GuidelineError(guideline.source, "a first version (no parent) cannot list changes")
                continue
            parent = self.by_version[guideline.parent]
            if parent.effective_from > guideline.effective_from:
                raise GuidelineError(guideline.source, f"takes effect before its parent {parent.version!r}")
            _check_changes(guideline, parent)

    def in_force(self, day: date | str) -> Guideline:
        """The version in force on ``day``: the latest one that took effect on or before it."""
        when = date.fromisoformat(day) if isinstance(day, str) else day
        eligible = [g for g in self.ordered if g.effective_from <= when]
        if not eligible:
            raise GuidelineError("guidelines", f"no guideline version is in force on {when.isoformat()}")
        return eligible[-1]

    def made_under(self, in_force: str, label: str) -> str:
        """The version a label without a declared version was made under, given the version in force when it was
        made: the newest of that version and its ancestors whose taxonomy holds the label. An export delivered
        after a change was usually labeled before it, so an old name is the old version's label, not an error.
        A label no version of the lineage knows stays with ``in_force`` (and fails its taxonomy check)."""
        for guideline in reversed(self.lineage(in_force)):
            if label in guideline.classes:
                return guideline.version
        return in_force

    def lineage(self, version: str) -> list[Guideline]:
        """``version`` and its ancestors, oldest first."""
        chain = [self.by_version[version]]
        while chain[-1].parent is not None:
            chain.append(self.by_version[chain[-1].parent])
        return chain[::-1]

    def remap(self, from_version: str, to_version: str) -> Remap:
        """Labels of ``from_version`` read under ``to_version`` (a descendant, or the same)."""
        for version in (from_version, to_version):
            if version not in self.by_version:
                raise GuidelineError("guidelines", f"unknown guideline version {version!r}")
        chain = self.lineage(to_version)
        versions = [g.version for g in chain]
        if from_version not in versions:
            raise GuidelineError("guidelines", f"{to_version!r} does not descend from {from_version!r}")
        labels = {name: name for name in self.by_version[from_version].classes}
        relabel: dict[str, str] = {}
        for guideline in chain[versions.index(from_version) + 1 :]:
            for change in guideline.changes:
                for original, current in list(labels.items()):
                    if current not in change.sources:
                        continue
                    if change.op in REMAPPING:
                        labels[original] = change.targets[0]
                    elif change.op in INVALIDATING:
                        relabel.setdefault(original, _reason(guideline.version, change.op, current))
        mapping = {o: c for o, c in labels.items() if o != c and o not in relabel}
        return Remap(from_version, to_version, mapping, relabel)

    def remap_between(self, from_version: str | None, to_version: str) -> Remap | None:
        """What the changes from ``from_version`` to ``to_version`` did to its labels; None when the first is
        unknown or no ancestor of the second (nothing was carried)."""
        if from_version not in self.by_version or to_version not in self.by_version:
            return None
        if from_version not in {g.version for g in self.lineage(to_version)}:
            return None
        return self.remap(from_version, to_version)

    def read_under(self, labels: pd.Series, version: str) -> pd.Series:
        """Labels named under any earlier version (a model's predicted classes, older consensus) read under
        ``version``: renamed and merged classes take their new name; other labels are kept."""
        renames = self.renames_into(version)
        return labels.replace(renames) if renames and len(labels) else labels

    def predicted_in_doubt(self, predictions: pd.DataFrame, version: str) -> np.ndarray:
        """Which predictions (``model_version``, ``predicted_label`` read under ``version``) name a class that a
        change since the model's version split or redefined: a v1 model's `cyclist` may be a v2 `scooter_rider`,
        so it cannot stand as a v2 `cyclist` (a removed class is no class of ``version`` at all). A model is of the version whose ``models`` list it; one no version
        lists is taken to predate every change of ``version``'s lineage."""
        doubt = np.zeros(len(predictions), dtype=bool)
        if not len(predictions):
            return doubt
        first = self.lineage(version)[0].version
        models = predictions.get("model_version", pd.Series("", index=predictions.index)).astype(object)
        models = models.fillna("").to_numpy()
        ancestors = {g.version for g in self.lineage(version)}
        for model in pd.unique(models):
            made = self.model_versions.get(model, first)
            if made not in ancestors:
                continue  # a newer (or unrelated) version's model: read by its own classes
            reasons = pd.Series(self.remap(made, version).relabel, dtype=object)
            doubtful = pd.Series(reasons.index[~removals(reasons)] if len(reasons) else [], dtype=object)
            # under the model's names, and under the names ``version`` reads them by (split, then renamed)
            relabel = list({*doubtful, *self.read_under(doubtful, version)})
            rows = models == model
            doubt[rows] = predictions.loc[rows, "predicted_label"].isin(relabel).to_numpy()
        return doubt

    def removed_by(self, version: str) -> set[str]:
        """The labels of any ancestor whose class a ``remove`` change of ``version``'s lineage retired, under the
        ancestor's names (a class renamed and then removed is gone under its first name too), and that
        ``version`` does not have."""
        removed = {name for g in self.lineage(version)[:-1] for name in self.remap(g.version, version).removed}
        return removed - set(self.by_version[version].classes)

    def renames_into(self, version: str) -> dict[str, str]:
        """Every older label that ``version`` reads under another name (rename and merge, composed)."""
        mapping: dict[str, str] = {}
        for ancestor in self.lineage(version)[:-1]:
            mapping.update(self.remap(ancestor.version, version).mapping)
        return mapping


def _reason(version: str, op: str, label: str) -> str:
    """What a ``relabel`` entry (and a judgment's ``needs_relabel``) says: the version and the change."""
    return f"{version}{_op_words(op)}{label!r}"


def _op_words(op: str) -> str:
    return f": {op} of "


def removals(reasons: pd.Series) -> np.ndarray:
    """Which ``needs_relabel`` reasons are a removal. A removed class left the taxonomy: its objects stop
    counting and nothing about the item is in doubt, so they hold no item for a relabel; a removed scene class
    still leaves its item without a scene label, which only a labeler can give."""
    return reasons.astype(str).str.contains(_op_words("remove"), regex=False).to_numpy()


def _check_changes(guideline: Guideline, parent: Guideline) -> None:
    names = set(parent.classes)
    for change in guideline.changes:
        where = f"change {change.op} {list(change.sources) or list(change.targets)}"
        unknown = [s for s in change.sources if s not in names]
        if unknown:
            raise GuidelineError(
                guideline.source, f"{where}: unknown class {unknown[0]!r} in version {parent.version!r}"
            )
        if change.op == "rename":
            names = (names - set(change.sources)) | set(change.targets)
        elif change.op == "merge":
            names = (names - set(change.sources)) | set(change.targets)
        elif change.op == "split":
            names = (names - set(change.sources)) | set(change.targets)
        elif change.op == "add":
            clash = [t for t in change.targets if t in names]
            if clash:
                raise GuidelineError(guideline.source, f"{where}: class {clash[0]!r} already exists")
            names |= set(change.targets)
        elif change.op == "remove":
            names -= set(change.sources)
    if names != set(guideline.classes):
        missing, extra = sorted(set(guideline.classes) - names), sorted(names - set(guideline.classes))
        raise GuidelineError(
            guideline.source,
            f"its changes do not lead from {parent.version!r} to its classes (listed but not derived: {missing}; "
            f"derived but not listed: {extra})",
        )


def parse_guideline(source: str, text: str) -> Guideline:
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise GuidelineError(source, f"not valid YAML for the safe loader ({error})".replace("\n", " ")) from None
    if not isinstance(document, dict):
        raise GuidelineError(source, "a guideline is a mapping with version, effective_from and classes")
    version = _required(source, document, "version", str)
    try:
        effective = document.get("effective_from")
        effective_from = effective if isinstance(effective, date) else date.fromisoformat(str(effective))
    except ValueError:
        raise GuidelineError(source, f"effective_from {document.get('effective_from')!r} is not a date") from None
    default_min = _box_size(source, document.get("min_box_size", {"w": 1, "h": 1}), "min_box_size")
    classes: dict[str, LabelClass] = {}
    for entry in _required(source, document, "classes", list):
        cls = _label_class(source, entry)
        if cls.name in classes:
            raise GuidelineError(source, f"class {cls.name!r} is declared twice")
        classes[cls.name] = cls
    changes = tuple(_change(source, entry) for entry in document.get("changes") or [])
    parent = document.get("parent")
    if parent is not None and not isinstance(parent, str):
        raise GuidelineError(source, "parent must be a version name")
    models = document.get("models") or []
    if not isinstance(models, list) or not all(isinstance(m, str) and m for m in models):
        raise GuidelineError(source, "models must list model versions (the production log's model_version)")
    return Guideline(version, effective_from, parent, classes, changes, default_min, source, tuple(models))


def _required(source: str, document: dict[str, Any], key: str, kind: type) -> Any:
    value = document.get(key)
    if not isinstance(value, kind) or (kind is list and not value):
        raise GuidelineError(
            source, f"'{key}' is required and must be a {'non-empty list' if kind is list else kind.__name__}"
        )
    return value


def _box_size(source: str, value: Any, where: str) -> tuple[float, float]:
    if not isinstance(value, dict) or not {"w", "h"} <= value.keys():
        raise GuidelineError(source, f"{where} must be a mapping with w and h (pixels)")
    try:
        w, h = float(value["w"]), float(value["h"])
    except (TypeError, ValueError):
        raise GuidelineError(source, f"{where} must hold numbers") from None
    if w < 0 or h < 0:
        raise GuidelineError(source, f"{where} cannot be negative")
    return w, h


def _label_class(source: str, entry: Any) -> LabelClass:
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not entry["name"].strip():
        raise GuidelineError(source, f"every class needs a name, got {entry!r}")
    name = entry["name"]
    geometry = entry.get("geometry", ["bbox"])
    geometry = [geometry] if isinstance(geometry, str) else geometry
    if not isinstance(geometry, list) or not geometry or any(g not in GEOMETRIES for g in geometry):
        raise GuidelineError(source, f"class {name!r}: geometry must be some of {list(GEOMETRIES)}, got {geometry!r}")
    try:
        severity = float(entry.get("severity", 1.0))
    except (TypeError, ValueError):
        raise GuidelineError(source, f"class {name!r}: severity must be a number") from None
    if severity < 0:
        raise GuidelineError(source, f"class {name!r}: severity cannot be negative")
    attributes = entry.get("attributes") or {}
    if not isinstance(attributes, dict) or not all(isinstance(v, list) for v in attributes.values()):
        raise GuidelineError(source, f"class {name!r}: attributes map a name to its list of allowed values")
    return LabelClass(
        name=name,
        description=str(entry.get("description", "")),
        geometry=tuple(geometry),
        critical=bool(entry.get("critical", False)),
        severity=severity,
        min_box_size=_box_size(source, entry["min_box_size"], f"class {name!r} min_box_size")
        if "min_box_size" in entry
        else None,
        attributes={
            str(k): tuple(str(v).lower() if isinstance(v, bool) else str(v) for v in values)
            for k, values in attributes.items()
        },
    )


def _names(source: str, value: Any, where: str) -> tuple[str, ...]:
    values = [value] if isinstance(value, str) else value
    if not isinstance(values, list) or not values or not all(isinstance(v, str) and v for v in values):
        raise GuidelineError(source, f"{where} must name one or more classes")
    return tuple(values)


def _change(source: str, entry: Any) -> Change:
    if not isinstance(entry, dict) or entry.get("op") not in OPERATIONS:
        raise GuidelineError(source, f"every change needs an op out of {list(OPERATIONS)}, got {entry!r}")
    op = entry["op"]
    note = str(entry.get("note", ""))
    if op == "rename":
        return Change(
            op,
            _names(source, entry.get("from"), "rename.from")[:1],
            _names(source, entry.get("to"), "rename.to")[:1],
            note,
        )
    if op == "merge":
        sources = _names(source, entry.get("from"), "merge.from")
        if len(sources) < 2:
            raise GuidelineError(source, "merge needs at least two classes in 'from'")
        return Change(op, sources, _names(source, entry.get("into"), "merge.into")[:1], note)
    if op == "split":
        if not entry.get("into"):
            raise GuidelineError(source, f"split of {entry.get('from')!r} has no targets ('into')")
        targets = _names(source, entry.get("into"), "split.into")
        if len(targets) < 2:
            raise GuidelineError(source, f"split of {entry.get('from')!r} needs at least two targets")
        return Change(op, _names(source, entry.get("from"), "split.from")[:1], targets, note)
    if op == "add":
        return Change(op, (), _names(source, entry.get("class"), "add.class"), note)
    # remove, redefine: one or more existing classes
    names = _names(source, entry.get("class"), f"{op}.class")
    return Change(op, names, names if op == "redefine" else (), note)


def load_guidelines(store: Store, prefix: str = "guidelines") -> GuidelineSet:
    """Every ``<version>.yaml`` under ``prefix`` of the config store."""
    keys = [k for k in store.list(prefix) if k.endswith((".yaml", ".yml"))]
    guidelines = [parse_guideline(posixpath.join(store.url, k), store.read_bytes(k).decode("utf-8")) for k in keys]
    versions = [g.version for g in guidelines]
    duplicated = sorted({v for v in versions if versions.count(v) > 1})
    if duplicated:
        raise GuidelineError(
            posixpath.join(store.url, prefix), f"version {duplicated[0]!r} is declared by more than one file"
        )
    return GuidelineSet(guidelines)


def predictions_under(
    predictions: pd.DataFrame, guidelines: GuidelineSet, version: str, *, keep_removed: bool = False
) -> pd.DataFrame:
    """A production model's predictions with their classes read under ``version``: a model keeps the names it
    was trained with, so a class a guideline renamed or merged since would otherwise count as one that
    training never saw. Predictions of a class it removed are left out (no coverage gap, no relabel reason,
    no false alarm in the risk report) unless ``keep_removed``: drift compares the whole traffic, whatever the
    class of a frame."""
    return labels_under(predictions, guidelines, version, column="predicted_label", keep_removed=keep_removed)


def labels_under(
    frame: pd.DataFrame, guidelines: GuidelineSet, version: str, *, column: str = "label", keep_removed: bool = False
) -> pd.DataFrame:
    """A table of labels named under any earlier version (gold files, predictions) read under ``version``, so a
    renamed or merged class compares equal to the judgments validation carried to it. Rows of a class a change
    of ``version``'s lineage removed are left out: nobody labels it any more, so nothing compares with them."""
    if column not in frame or frame.empty:
        return frame
    removed = guidelines.removed_by(version)
    if removed and not keep_removed:
        frame = frame[~frame[column].isin(list(removed)).to_numpy()]
    return frame.assign(**{column: guidelines.read_under(frame[column], version)})
