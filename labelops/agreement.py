"""Inter-annotator agreement for classification: Krippendorff's alpha, Fleiss' kappa,
mean pairwise Cohen's kappa and percent agreement, with seeded bootstrap intervals.

Everything is computed from two encodings of the judgments, never by looping over rows:
an item × label count matrix (alpha, Fleiss, percent agreement) and a per annotator-pair
confusion tensor (Cohen). Both are sums over items, so a bootstrap replicate is the same
sums with items re-weighted by how often the resample drew them.

Items that only one annotator labeled cannot show (dis)agreement; they are excluded from
the statistics, as the references do, but counted: every scope reports how many there are.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

METRICS = ("krippendorff_alpha", "fleiss_kappa", "mean_pairwise_cohen_kappa", "percent_agreement")
CI_LEVEL = 0.95


@dataclass(frozen=True)
class Votes:
    """One classification judgment per (item, annotator), as integer codes."""

    item: np.ndarray
    annotator: np.ndarray
    label: np.ndarray
    items: np.ndarray
    annotators: np.ndarray
    labels: np.ndarray

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> "Votes":
        """Latest judgment per (item, annotator) wins: a corrected answer replaces the first one."""
        frame = frame.drop_duplicates(["item_id", "annotator_id"], keep="last")
        item, items = pd.factorize(frame["item_id"].astype(str), sort=True)
        annotator, annotators = pd.factorize(frame["annotator_id"].astype(str), sort=True)
        label, labels = pd.factorize(frame["label"].astype(str), sort=True)
        return cls(item, annotator, label, np.asarray(items), np.asarray(annotators), np.asarray(labels))

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.items), len(self.labels)

    def counts(self) -> np.ndarray:
        """Items × labels: how many annotators gave each label to each item."""
        n_items, n_labels = self.shape
        return np.bincount(self.item * n_labels + self.label, minlength=n_items * n_labels).reshape(n_items, n_labels).astype(float)


@dataclass(frozen=True)
class ItemStats:
    """Per-item terms of alpha and Fleiss' kappa, computed once; a statistic is then a few weighted sums.

    With o the coincidence matrix, alpha's observed disagreement is Σ_u w_u (m_u² − Σ_c n_uc²)/(m_u − 1)
    and its expected disagreement (n² − Σ_c n_c²)/(n − 1) with n_c = Σ_u w_u n_uc; Fleiss' P_i is
    (Σ_c n_uc² − m_u)/(m_u (m_u − 1)). Only items with two or more judgments take part.
    """

    index: np.ndarray  # positions of the pairable items
    counts: np.ndarray
    m: np.ndarray
    disagreement: np.ndarray
    agreement: np.ndarray

    @classmethod
    def from_counts(cls, counts: np.ndarray) -> "ItemStats":
        m = counts.sum(axis=1)
        index = np.flatnonzero(m >= 2)
        c, m = counts[index], m[index]
        squares = (c * c).sum(axis=1)
        return cls(index, c, m, (m * m - squares) / (m - 1), (squares - m) / (m * (m - 1)))

    def alpha(self, weights: np.ndarray | None = None) -> float:
        """Krippendorff's alpha (nominal). Perfect agreement is 1 even when only one label occurs
        (the references leave that case undefined)."""
        w = np.ones(len(self.m)) if weights is None else weights[self.index]
        n_c = w @ self.counts
        n = n_c.sum()
        if n <= 1:
            return float("nan")
        observed = w @ self.disagreement
        if observed == 0:
            return 1.0
        expected = (n * n - (n_c * n_c).sum()) / (n - 1)
        return float(1.0 - observed / expected) if expected > 0 else float("nan")

    def fleiss(self, weights: np.ndarray | None = None) -> tuple[float, float]:
        """Fleiss' kappa and percent agreement (Fleiss' P̄). With the same number of raters on every
        item this is statsmodels' ``fleiss_kappa``; otherwise each item's agreement is over its own pairs."""
        w = np.ones(len(self.m)) if weights is None else weights[self.index]
        if w.sum() == 0:
            return float("nan"), float("nan")
        observed = float(w @ self.agreement / w.sum())
        shares = (w @ self.counts) / (w @ self.m)
        chance = float((shares * shares).sum())
        kappa = (observed - chance) / (1 - chance) if chance < 1 else (1.0 if observed == 1 else float("nan"))
        return float(kappa), observed


def alpha_from_counts(counts: np.ndarray) -> float:
    """Krippendorff's alpha (nominal) from an item × label count matrix."""
    return ItemStats.from_counts(counts).alpha()


def fleiss_from_counts(counts: np.ndarray) -> tuple[float, float]:
    """Fleiss' kappa and percent agreement from an item × label count matrix."""
    return ItemStats.from_counts(counts).fleiss()


@dataclass(frozen=True)
class PairTable:
    """Every pair of judgments on the same item, by annotator pair (a < b)."""

    item: np.ndarray
    pair: np.ndarray  # index into pairs
    label_a: np.ndarray
    label_b: np.ndarray
    n_pairs: int

    @classmethod
    def from_votes(cls, votes: Votes) -> "PairTable":
        order = np.lexsort((votes.annotator, votes.item))
        item, annotator, label = votes.item[order], votes.annotator[order], votes.label[order]
        left, right = [], []
        # pairs within an item are (i, i + d) for every offset d up to the largest item size
        sizes = np.bincount(item)
        for d in range(1, int(sizes.max(initial=1))):
            same = np.flatnonzero(item[:-d] == item[d:])
            left.append(same)
            right.append(same + d)
        left_i = np.concatenate(left) if left else np.empty(0, int)
        right_i = np.concatenate(right) if right else np.empty(0, int)
        a, b = annotator[left_i], annotator[right_i]  # a < b: sorted by annotator within items
        pair, _ = pd.factorize(a.astype(np.int64) * len(votes.annotators) + b, sort=True)
        return cls(item[left_i], pair, label[left_i], label[right_i], int(pair.max(initial=-1)) + 1)

    def confusion(self, n_labels: int, weights: np.ndarray | None = None) -> np.ndarray:
        """Pairs × labels × labels confusion counts (optionally item-weighted)."""
        key = (self.pair * n_labels + self.label_a) * n_labels + self.label_b
        w = None if weights is None else weights[self.item]
        size = self.n_pairs * n_labels * n_labels
        return np.bincount(key, weights=w, minlength=size).reshape(self.n_pairs, n_labels, n_labels)


def cohen_kappas(confusion: np.ndarray) -> np.ndarray:
    """Cohen's kappa of every annotator pair; NaN where chance agreement is 1 (as scikit-learn)."""
    n = confusion.sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        observed = np.trace(confusion, axis1=1, axis2=2) / n
        chance = (confusion.sum(axis=2) * confusion.sum(axis=1)).sum(axis=1) / (n * n)
        return (observed - chance) / (1 - chance)


def binary_confusion(confusion: np.ndarray, label: int) -> np.ndarray:
    """Collapse a K-label confusion to "label vs. any other" for per-label agreement."""
    both = confusion[:, label, label]
    a_only = confusion[:, label, :].sum(axis=1) - both
    b_only = confusion[:, :, label].sum(axis=1) - both
    neither = confusion.sum(axis=(1, 2)) - both - a_only - b_only
    return np.stack([np.stack([both, a_only], axis=1), np.stack([b_only, neither], axis=1)], axis=1)


def _scope_metrics(stats: ItemStats, confusion: np.ndarray, weights: np.ndarray) -> dict[str, float]:
    kappa, agreement = stats.fleiss(weights)
    kappas = cohen_kappas(confusion)
    valid = np.isfinite(kappas) & (confusion.sum(axis=(1, 2)) > 0)
    return {
        "krippendorff_alpha": stats.alpha(weights),
        "fleiss_kappa": kappa,
        "mean_pairwise_cohen_kappa": float(kappas[valid].mean()) if valid.any() else float("nan"),
        "percent_agreement": agreement,
    }


def classification_agreement(
    frame: pd.DataFrame,
    *,
    slices: pd.DataFrame | None = None,
    n_boot: int = 200,
    seed: int = 0,
) -> pd.DataFrame:
    """The ``annotator_agreement`` rows for classification judgments.

    ``frame`` holds item_id, annotator_id, label; ``slices`` (item_id plus one column
    per slice dimension) adds a scope per slice value. Intervals are percentile
    bootstrap intervals over items, from ``seed``.
    """
    columns = ["scope", "metric", "value", "ci_low", "ci_high", "n_items", "n_annotations"]
    if frame.empty:
        return pd.DataFrame(columns=columns)
    votes = Votes.from_frame(frame)
    n_items, n_labels = votes.shape
    counts = votes.counts()
    per_item = counts.sum(axis=1)
    stats = ItemStats.from_counts(counts)
    binary = [ItemStats.from_counts(np.stack([counts[:, k], per_item - counts[:, k]], axis=1)) for k in range(n_labels)]
    slice_masks: list[tuple[str, np.ndarray]] = []
    if slices is not None and not slices.empty:
        table = slices.drop_duplicates("item_id").set_index("item_id").reindex(votes.items)
        for dimension in table.columns:
            for value in sorted(table[dimension].dropna().astype(str).unique()):
                slice_masks.append((f"{dimension}={value}", (table[dimension].astype(str) == value).to_numpy()))
    pairs = PairTable.from_votes(votes)

    def every_scope(weights: np.ndarray) -> dict[str, dict[str, float]]:
        """All scopes for one set of item weights; per-label scopes reuse the overall confusion."""
        confusion = pairs.confusion(n_labels, weights)
        out = {"overall": _scope_metrics(stats, confusion, weights)}
        for k, name in enumerate(votes.labels):
            out[f"label={name}"] = _scope_metrics(binary[k], binary_confusion(confusion, k), weights)
        for scope, mask in slice_masks:
            scoped = weights * mask
            out[scope] = _scope_metrics(stats, pairs.confusion(n_labels, scoped), scoped)
        return out

    rng = np.random.default_rng(seed)
    point = every_scope(np.ones(n_items))
    replicates = [every_scope(np.bincount(rng.integers(0, n_items, n_items), minlength=n_items).astype(float)) for _ in range(n_boot)]
    masks = {"overall": np.ones(n_items, bool), **{f"label={n}": np.ones(n_items, bool) for n in votes.labels}, **dict(slice_masks)}
    rows = []
    for scope, mask in masks.items():
        n_scope_items, n_annotations = int(mask.sum()), int(per_item[mask].sum())
        for metric in METRICS:
            samples = np.array([r[scope][metric] for r in replicates], dtype=float)
            samples = samples[np.isfinite(samples)]
            low, high = np.quantile(samples, [(1 - CI_LEVEL) / 2, (1 + CI_LEVEL) / 2]) if len(samples) else (np.nan, np.nan)
            rows.append((scope, metric, point[scope][metric], float(low), float(high), n_scope_items, n_annotations))
        single = int(((per_item == 1) & mask).sum())
        rows.append((scope, "single_annotator_items", float(single), np.nan, np.nan, n_scope_items, n_annotations))
    return pd.DataFrame(rows, columns=columns)
