"""Coverage of the labeled data against a spec and against production traffic, and the model's risk.

Accuracy hides the cells that matter: night images, a new device, the rare class whose errors
are expensive. The coverage report counts labeled objects per class × slice value and compares
them with the spec's minimum and with production's share of the same cell; the risk report
scores the production model on labeled items per class and slice, with Wilson intervals on
recall so that "no errors on three examples" is not read as safe.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import yaml

from labelops.boxes import match_boxes
from labelops.columns import codes, first_appearances, isin
from labelops.guidelines import Guideline
from labelops.storage import Store

BACKGROUND = "background"
ALL = "*"


class CoverageSpecError(ValueError):
    """A coverage spec that cannot be used; the message names the file."""


@dataclass(frozen=True)
class Dimension:
    name: str
    source: str  # "item" (an item catalog column) or "derived"
    bins: dict[str, tuple[float, float | None]] = field(default_factory=dict)


@dataclass(frozen=True)
class CoverageSpec:
    dimensions: dict[str, Dimension]
    required: tuple[str, ...]
    default_minimum: int
    minimums: dict[tuple[str, str, str], int]
    critical: frozenset[str]
    default_recall: float
    recall: dict[str, float]
    costs: dict[tuple[str, str], float]
    severity: dict[str, float]
    blocking: bool

    def minimum(self, label: str, dimension: str, value: str) -> int:
        return self.minimums.get((label, dimension, value), self.default_minimum)

    def cost(self, true: str, predicted: str) -> float:
        if true == predicted:
            return 0.0
        if (true, predicted) in self.costs:
            return self.costs[(true, predicted)]
        return 1.0 if true == BACKGROUND else self.severity.get(true, 1.0)


def load_coverage_spec(store: Store, guideline: Guideline, key: str = "coverage.yaml") -> CoverageSpec:
    where = f"{store.url}/{key}"
    try:
        document = yaml.safe_load(store.read_bytes(key))
    except yaml.YAMLError as error:
        raise CoverageSpecError(f"{where}: not valid YAML for the safe loader ({error})".replace("\n", " ")) from None
    if not isinstance(document, dict):
        raise CoverageSpecError(f"{where}: the spec is a mapping")
    classes = set(guideline.classes)

    def known_class(name: object, context: str) -> str:
        if name not in classes and name != BACKGROUND:
            raise CoverageSpecError(
                f"{where}: {context} names class {name!r}, which guideline {guideline.version} does not have"
            )
        return str(name)

    dimensions: dict[str, Dimension] = {}
    for name, entry in (document.get("dimensions") or {}).items():
        entry = entry or {}
        source = entry.get("source", "item")
        if source not in ("item", "derived"):
            raise CoverageSpecError(f"{where}: dimension {name!r} has source {source!r} (item or derived)")
        bins = {}
        if source == "derived":
            if name != "box_size":
                raise CoverageSpecError(f"{where}: unknown derived dimension {name!r} (only box_size)")
            bins = {
                str(k): (float(v[0]), None if v[1] is None else float(v[1]))
                for k, v in (entry.get("bins") or {}).items()
            }
            if not bins:
                raise CoverageSpecError(f"{where}: box_size needs bins")
        dimensions[str(name)] = Dimension(str(name), source, bins)

    def known_dimension(name: object, context: str) -> str:
        if name not in dimensions:
            raise CoverageSpecError(f"{where}: {context} names dimension {name!r}, which the spec does not declare")
        return str(name)

    required = tuple(known_dimension(d, "required_slices") for d in document.get("required_slices") or [])
    minimum = document.get("minimum") or {}
    minimums = {}
    for entry in minimum.get("overrides") or []:
        label = known_class(entry.get("class"), "a minimum override")
        minimums[(label, known_dimension(entry.get("dimension"), "a minimum override"), str(entry.get("value")))] = int(
            entry["min"]
        )
    critical = {name for name, c in guideline.classes.items() if c.critical}
    critical |= {known_class(c, "critical_classes") for c in document.get("critical_classes") or []}
    recall = document.get("recall") or {}
    thresholds = {known_class(k, "recall.thresholds"): float(v) for k, v in (recall.get("thresholds") or {}).items()}
    costs = {
        (known_class(c.get("actual"), "a cost override"), known_class(c.get("predicted"), "a cost override")): float(
            c["cost"]
        )
        for c in document.get("cost_overrides") or []
    }
    return CoverageSpec(
        dimensions=dimensions,
        required=required,
        default_minimum=int(minimum.get("default", 0)),
        minimums=minimums,
        critical=frozenset(critical),
        default_recall=float(recall.get("default_threshold", 0.8)),
        recall=thresholds,
        costs=costs,
        severity={n: c.severity for n, c in guideline.classes.items()},
        blocking=bool(document.get("blocking", False)),
    )


def item_columns(spec: CoverageSpec) -> list[str]:
    """What :func:`slice_values` reads of an item table: the ids, and the dimensions whose values items carry."""
    return ["item_id", *(d for d, dim in spec.dimensions.items() if dim.source == "item")]


def slice_values(objects: pd.DataFrame, items: pd.DataFrame, spec: CoverageSpec) -> pd.DataFrame:
    """Objects (item_id, label[, x, y, w, h]) with one column per spec dimension."""
    attributes = [
        d
        for d, dim in spec.dimensions.items()
        if dim.source == "item" and d in items.columns and d not in objects.columns
    ]
    out = objects.reset_index(drop=True)  # a copy: the columns below are added to it
    if attributes:
        # objects.merge(items.drop_duplicates("item_id", keep="last"), how="left"), by position: the merge hashes
        # every id of both sides (a state's million objects against the item index's 1.2 M items)
        at = _last_rows(objects["item_id"], items["item_id"])
        for name in attributes:
            out[name] = pd.Series(items[name].array.take(at, allow_fill=True), copy=False)
    for name, dimension in spec.dimensions.items():
        if dimension.source == "derived":
            size = (
                np.sqrt(out["w"].astype(float) * out["h"].astype(float))
                if {"w", "h"} <= set(out.columns)
                else pd.Series(np.nan, index=out.index)
            )
            labels = pd.Series(None, index=out.index, dtype=object)
            for value, (low, high) in dimension.bins.items():
                labels[(size >= low) & ((size < high) if high is not None else True)] = value
            out[name] = labels
        elif name not in out.columns:
            out[name] = None
    return out


ROWS = "rows"  # a cell's count of rows: objects labeled, or predictions


def labeled_cells(
    objects: pd.DataFrame, items: pd.DataFrame, spec: CoverageSpec, rows: np.ndarray | None = None
) -> pd.DataFrame:
    """The objects at ``rows`` (every row by default) counted per class and slice values: :func:`slice_values` of
    them grouped by ``label`` and every dimension, missing values kept, as :func:`production_cells` counts
    production, and the same input to :func:`coverage_report`.

    A label state's million objects are not copied to be sliced: their ids are looked up in ``items`` once (an
    item's last row there), each key column is coded once (an item column over the item table's rows), and the
    rows are counted per combination of codes."""
    at = np.arange(len(objects)) if rows is None else np.asarray(rows, dtype=np.int64)
    coded = {"label": _coded(objects["label"].array, at)}
    found: np.ndarray | None = None
    for name, dimension in spec.dimensions.items():
        if dimension.source == "derived":
            bins = np.full(len(at), -1, dtype=np.int64)
            if {"w", "h"} <= set(objects.columns):
                size = np.sqrt(objects["w"].to_numpy(dtype=float)[at] * objects["h"].to_numpy(dtype=float)[at])
                for position, (low, high) in enumerate(dimension.bins.values()):  # a later bin wins, as there
                    bins[(size >= low) & ((size < high) if high is not None else True)] = position
            coded[name] = (bins, np.asarray(list(dimension.bins), dtype=object))
        elif name in objects.columns:
            coded[name] = _coded(objects[name].array, at)
        elif name in items.columns:
            if found is None:
                found = _last_rows(objects["item_id"], items["item_id"])[at]
            coded[name] = _coded(items[name].array, found)
        else:
            coded[name] = (np.full(len(at), -1, dtype=np.int64), np.array([], dtype=object))
    keys = ["label", *spec.dimensions]
    shape = [len(coded[key][1]) + 1 for key in keys]  # a key's codes shifted by one: 0 is missing
    if float(np.prod(shape, dtype=float)) < 2**62:  # one integer per cell (pandas' groupby on six columns: 0.3 s)
        combined = np.zeros(len(at), dtype=np.int64)
        for key, size in zip(keys, shape, strict=True):
            combined = combined * size + coded[key][0] + 1
        present, counts = np.unique(combined, return_counts=True)
        levels = np.unravel_index(present, shape)
    else:  # more combinations than 64 bits number
        sizes = pd.DataFrame({key: coded[key][0] + 1 for key in keys}).groupby(keys).size()
        levels, counts = tuple(sizes.index.to_frame(index=False)[key].to_numpy() for key in keys), sizes.to_numpy()
    cells = {
        key: np.concatenate([np.array([None], dtype=object), coded[key][1]])[level]
        for key, level in zip(keys, levels, strict=True)
    }
    return pd.DataFrame({**cells, ROWS: np.asarray(counts, dtype=np.int64)})


def _last_rows(keys: pd.Series, ids: pd.Series) -> np.ndarray:
    """Each key's last row in ``ids`` (-1: none), compared as text. Ranked together, not hashed: a label state's
    1.2 M item ids against an item index of as many, both in a few sorted runs, took 0.94 s by Arrow's hash
    (``index_in``) and take 0.42 s by its sort, in a fresh process."""
    key_codes, id_codes = codes(keys, ids)
    last = np.full(max(int(key_codes.max(initial=-1)), int(id_codes.max(initial=-1))) + 1, -1, dtype=np.int64)
    np.maximum.at(last, id_codes, np.arange(len(id_codes), dtype=np.int64))
    return last[key_codes]


def _coded(values: pd.api.extensions.ExtensionArray, at: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The codes of ``values`` at ``at`` (-1 where the value is missing or ``at`` is -1) and the values they
    code, as objects typed as ``values.take(at, allow_fill=True)`` types them (an integer column with a position
    -1 reads as floats)."""
    value_codes, uniques = pd.factorize(values, use_na_sentinel=True)
    picked = (
        np.where(at >= 0, value_codes[at.clip(0)], -1) if len(value_codes) else np.full(len(at), -1, dtype=np.int64)
    )
    firsts = np.flatnonzero(first_appearances(value_codes))  # a unique value's first row, in the uniques' order
    fill = [-1] if (at < 0).any() else []
    taken = values.take(np.concatenate([firsts, fill]).astype(np.int64), allow_fill=True)
    return picked.astype(np.int64), np.asarray(taken.to_numpy(dtype=object))[: len(uniques)]


def production_cells(parts: Iterable[pd.DataFrame], spec: CoverageSpec) -> pd.DataFrame:
    """Production rows (item_id, label = the predicted class, box, slice columns) counted per class and slice
    values, part by part: all :func:`coverage_report` needs of a day of any size, in the size of the cells."""
    keys = ["label", *spec.dimensions]
    counted = []
    for part in parts:
        sliced = slice_values(part, pd.DataFrame({"item_id": []}), spec)
        counted.append(sliced.groupby(keys, dropna=False).size().rename(ROWS))
    if not counted:
        return pd.DataFrame(columns=[*keys, ROWS])
    cells = pd.concat(counted).groupby(level=list(range(len(keys))), dropna=False).sum()
    return cells.reset_index()


def coverage_report(
    labeled: pd.DataFrame, production: pd.DataFrame, spec: CoverageSpec, *, counted: bool = False
) -> pd.DataFrame:
    """Class × slice-value cells (and each dimension alone, class '*'), worst under-representation first.

    ``labeled`` and ``production`` are outputs of :func:`slice_values`, with ``label`` the labeled
    class and the predicted class respectively; with ``counted``, they are :func:`labeled_cells` and
    :func:`production_cells` (rows per cell) instead of one row per object and prediction.
    """
    if not counted:
        no_items = pd.DataFrame({"item_id": []})
        labeled, production = labeled_cells(labeled, no_items, spec), labeled_cells(production, no_items, spec)
    rows = []
    n_labeled, n_production = int(labeled[ROWS].sum()), int(production[ROWS].sum())
    for dimension in spec.dimensions:
        for by_class in (True, False):
            keys = ["label", dimension] if by_class else [dimension]
            left, right = (
                side.groupby(keys, dropna=True)[ROWS].sum().rename(name)
                for side, name in ((labeled, "labeled_count"), (production, "production_count"))
            )
            cells = pd.concat([left, right], axis=1).fillna(0).reset_index()
            if not by_class:
                cells.insert(0, "label", ALL)
            cells = cells.rename(columns={dimension: "value"}).assign(dimension=dimension)
            rows.append(cells)
    report = (
        pd.concat(rows, ignore_index=True)
        if rows
        else pd.DataFrame(columns=["label", "value", "labeled_count", "production_count", "dimension"])
    )
    report["value"] = report["value"].astype(str)
    report["labeled_count"] = report["labeled_count"].astype(np.int64)
    report["production_count"] = report["production_count"].astype(np.int64)
    report["training_share"] = report["labeled_count"] / max(n_labeled, 1)
    report["production_share"] = report["production_count"] / max(n_production, 1)
    report["min_required"] = [
        spec.minimum(label, d, v) if label != ALL else 0
        for label, d, v in zip(report["label"], report["dimension"], report["value"], strict=True)
    ]
    report["gap"] = (report["min_required"] - report["labeled_count"]).clip(lower=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = report["production_share"] / report["training_share"]
    report["underrepresentation"] = np.where(report["production_count"] == 0, 0.0, ratio)
    report["unseen_in_training"] = (report["labeled_count"] == 0) & (report["production_count"] > 0)
    report["critical"] = report["label"].isin(spec.critical)
    report = report.sort_values(
        ["underrepresentation", "gap", "production_count", "label", "dimension", "value"],
        ascending=[False, False, False, True, True, True],
        kind="stable",
    ).reset_index(drop=True)
    return report[
        [
            "label",
            "dimension",
            "value",
            "labeled_count",
            "training_share",
            "production_count",
            "production_share",
            "min_required",
            "gap",
            "underrepresentation",
            "unseen_in_training",
            "critical",
        ]
    ]


def missing_critical_cells(report: pd.DataFrame, spec: CoverageSpec) -> pd.DataFrame:
    """Critical class × required-slice-value cells below their minimum (also values never labeled)."""
    values = report[(report["label"] == ALL) & report["dimension"].isin(spec.required)][
        ["dimension", "value"]
    ].drop_duplicates()
    grid = pd.DataFrame(
        [(c, d, v) for c in sorted(spec.critical) for d, v in values.itertuples(index=False)],
        columns=["label", "dimension", "value"],
    )
    cells = grid.merge(report, on=["label", "dimension", "value"], how="left")
    cells["labeled_count"] = cells["labeled_count"].fillna(0).astype(np.int64)
    cells["min_required"] = [
        spec.minimum(label, d, v)
        for label, d, v in zip(cells["label"], cells["dimension"], cells["value"], strict=True)
    ]
    cells["gap"] = cells["min_required"] - cells["labeled_count"]
    return cells[cells["gap"] > 0][["label", "dimension", "value", "labeled_count", "min_required", "gap"]].reset_index(
        drop=True
    )


def wilson_interval(
    successes: np.ndarray, trials: np.ndarray, confidence: float = 0.95
) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval; (0, 1) where there are no trials."""
    from scipy.stats import norm  # here: scipy.stats costs a second at every process start (code location load)

    z = norm.ppf(0.5 + confidence / 2)
    n = np.asarray(trials, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = np.asarray(successes, dtype=float) / n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    low = np.where(n > 0, centre - half, 0.0)
    high = np.where(n > 0, centre + half, 1.0)
    return np.clip(low, 0, 1), np.clip(high, 0, 1)


def confusion_pairs(reference: pd.DataFrame, predictions: pd.DataFrame, *, iou: float = 0.5) -> pd.DataFrame:
    """(item_id, true, predicted) per object: matched pairs, misses (predicted background), false alarms."""
    truth = reference[["item_id", "label", "x", "y", "w", "h"]].assign(annotator_id="\x00truth")
    model = predictions[["item_id", "label", "x", "y", "w", "h"]].assign(annotator_id="\x01model")
    matching = match_boxes(pd.concat([truth, model], ignore_index=True), min_iou=iou - 1e-12, conflict_iou=iou)
    boxes = matching.boxes
    pairs = matching.matches[["item_id", "label_a", "label_b"]].rename(
        columns={"label_a": "true", "label_b": "predicted"}
    )
    lonely = boxes[~matching.paired]
    missed = lonely[lonely["annotator_id"] == "\x00truth"]
    alarms = lonely[lonely["annotator_id"] == "\x01model"]
    return pd.concat(
        [
            pairs,
            pd.DataFrame({"item_id": missed["item_id"], "true": missed["label"], "predicted": BACKGROUND}),
            pd.DataFrame({"item_id": alarms["item_id"], "true": BACKGROUND, "predicted": alarms["label"]}),
        ],
        ignore_index=True,
    )


def risk_report(pairs: pd.DataFrame, items: pd.DataFrame, spec: CoverageSpec) -> pd.DataFrame:
    """Per scope (overall, each slice value) and class: precision, recall with its Wilson interval, cost."""
    sliced = slice_values(pairs.rename(columns={"true": "label"}), items, spec).rename(columns={"label": "true"})
    scopes = [("overall", np.ones(len(sliced), bool))]
    scopes += [
        (f"{dimension}={value}", (sliced[dimension].astype(str) == value).to_numpy())
        for dimension, d in spec.dimensions.items()
        if d.source == "item"
        for value in sorted(sliced[dimension].dropna().astype(str).unique())
    ]
    rows = []
    combos = sliced[["true", "predicted"]].drop_duplicates()
    costs = {(t, p): spec.cost(t, p) for t, p in combos.itertuples(index=False)}
    cost = (
        pd.MultiIndex.from_frame(sliced[["true", "predicted"]]).map(costs).to_numpy(dtype=float)
        if len(sliced)
        else np.zeros(0)
    )
    for scope, mask in scopes:
        part = sliced[mask]
        part_cost = cost[mask]
        classes = sorted((set(part["true"].unique()) | set(part["predicted"].unique())) - {BACKGROUND})
        correct = part["true"] == part["predicted"]
        support = part[part["true"] != BACKGROUND].groupby("true").size()
        predicted = part[part["predicted"] != BACKGROUND].groupby("predicted").size()
        hits = part[correct].groupby("true").size()
        class_cost = pd.Series(part_cost, index=part.index).groupby(part["true"]).sum()
        for label in classes:
            n, tp, npred = int(support.get(label, 0)), int(hits.get(label, 0)), int(predicted.get(label, 0))
            low, high = wilson_interval(np.array([tp]), np.array([n]))
            rows.append(
                (
                    scope,
                    label,
                    n,
                    npred,
                    tp,
                    tp / npred if npred else np.nan,
                    tp / n if n else np.nan,
                    float(low[0]),
                    float(high[0]),
                    label in spec.critical,
                    float(class_cost.get(label, 0.0)) / n if n else np.nan,
                )
            )
        n_all = int(support.sum())
        tp_all = int(correct[part["true"] != BACKGROUND].sum())
        low, high = wilson_interval(np.array([tp_all]), np.array([n_all]))
        rows.append(
            (
                scope,
                ALL,
                n_all,
                int(predicted.sum()),
                tp_all,
                tp_all / predicted.sum() if predicted.sum() else np.nan,
                tp_all / n_all if n_all else np.nan,
                float(low[0]),
                float(high[0]),
                False,
                float(part_cost.sum()) / n_all if n_all else np.nan,
            )
        )
    return pd.DataFrame(
        rows,
        columns=[
            "scope",
            "label",
            "support",
            "predicted",
            "true_positives",
            "precision",
            "recall",
            "recall_ci_low",
            "recall_ci_high",
            "critical",
            "cost_per_object",
        ],
    )


def failing_critical_recall(report: pd.DataFrame, spec: CoverageSpec) -> pd.DataFrame:
    """Critical classes whose overall recall lower bound is below the threshold (or never seen, on a day that
    scored objects: a day without labeled objects, say one of scene labels only, says nothing of recall)."""
    overall = report[report["scope"] == "overall"].set_index("label")
    rows = []
    if not (overall["support"] > 0).any():
        return pd.DataFrame(rows, columns=["label", "support", "recall_ci_low", "threshold"])
    for label in sorted(spec.critical):
        threshold = spec.recall.get(label, spec.default_recall)
        low = float(overall.loc[label, "recall_ci_low"]) if label in overall.index else 0.0
        support = int(overall.loc[label, "support"]) if label in overall.index else 0
        if low < threshold:
            rows.append((label, support, low, threshold))
    return pd.DataFrame(rows, columns=["label", "support", "recall_ci_low", "threshold"])


def reference_boxes(consensus: pd.DataFrame, gold: pd.DataFrame) -> pd.DataFrame:
    """The boxes the model is scored against, on the day's labeled items: gold boxes on gold items,
    consensus boxes elsewhere."""
    gold_boxes = gold[(gold["kind"] == "bbox") & isin(gold["item_id"], consensus["item_id"])][
        ["item_id", "label", "x", "y", "w", "h"]
    ]
    fused = consensus[(consensus["kind"] == "bbox") & ~isin(consensus["item_id"], gold_boxes["item_id"])]
    return pd.concat([gold_boxes, fused[["item_id", "label", "x", "y", "w", "h"]]], ignore_index=True)


def detections(predictions: pd.DataFrame, reference: pd.DataFrame) -> pd.DataFrame:
    """The model's box predictions on items that have reference boxes."""
    if not {"x", "y", "w", "h"} <= set(predictions.columns):
        return pd.DataFrame(columns=["item_id", "label", "x", "y", "w", "h"])
    boxed = predictions[
        predictions[["x", "y", "w", "h"]].notna().all(axis=1) & isin(predictions["item_id"], reference["item_id"])
    ]
    return boxed.rename(columns={"predicted_label": "label"})[["item_id", "label", "x", "y", "w", "h"]]
