"""Inter-annotator agreement for classification: Krippendorff's alpha, Fleiss' kappa,
mean pairwise Cohen's kappa and percent agreement, with seeded bootstrap intervals.

Everything is computed from two encodings of the judgments, never by looping over rows:
an item × label count matrix (alpha, Fleiss, percent agreement) and a per annotator-pair
confusion tensor (Cohen). Both are sums over items, so a bootstrap replicate is the same
sums with items re-weighted by how often the resample drew them — and a batch of replicates
is one matrix product of the replicates' item weights with those per-item terms.

Items that only one annotator labeled cannot show (dis)agreement; they are excluded from
the statistics, as the references do, but counted: every scope reports how many there are.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

METRICS = ("krippendorff_alpha", "fleiss_kappa", "mean_pairwise_cohen_kappa", "percent_agreement")
CI_LEVEL = 0.95
BOOT_CELLS = 20_000_000  # bootstrap replicates are computed in batches of about this many confusion cells


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
    def from_frame(cls, frame: pd.DataFrame) -> Votes:
        """Latest judgment per (item, annotator) wins: a corrected answer replaces the first one."""
        item, items = pd.factorize(frame["item_id"].astype(str), sort=True)
        annotator, annotators = pd.factorize(frame["annotator_id"].astype(str), sort=True)
        # the last row of each (item, annotator), found on integer codes (pandas' drop_duplicates hashes the
        # strings again: 1.7 s for 3.3 M votes); dropping repeats loses no item or annotator, possibly a label
        key = item.astype(np.int64) * max(1, len(annotators)) + annotator
        _, last_from_end = np.unique(key[::-1], return_index=True)
        keep = np.sort(len(key) - 1 - last_from_end)
        label, labels = pd.factorize(frame["label"].astype(str), sort=True)
        used = np.unique(label[keep])  # sorted, so the kept labels stay in order
        return cls(
            item[keep],
            annotator[keep],
            np.searchsorted(used, label[keep]),
            np.asarray(items),
            np.asarray(annotators),
            np.asarray(labels)[used],
        )

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.items), len(self.labels)

    def counts(self) -> np.ndarray:
        """Items × labels: how many annotators gave each label to each item."""
        n_items, n_labels = self.shape
        return (
            np.bincount(self.item * n_labels + self.label, minlength=n_items * n_labels)
            .reshape(n_items, n_labels)
            .astype(float)
        )


@dataclass(frozen=True)
class ItemStats:
    """Per-item terms of alpha and Fleiss' kappa, computed once; a statistic is then a few weighted sums.

    With o the coincidence matrix, alpha's observed disagreement is Σ_u w_u (m_u² − Σ_c n_uc²)/(m_u − 1)
    and its expected disagreement (n² − Σ_c n_c²)/(n − 1) with n_c = Σ_u w_u n_uc; Fleiss' P_i is
    (Σ_c n_uc² − m_u)/(m_u (m_u − 1)). Only items with two or more judgments take part.
    """

    index: np.ndarray  # positions of the pairable items
    every_item: bool  # all items are pairable: weights need no selection
    counts: np.ndarray
    m: np.ndarray
    disagreement: np.ndarray
    agreement: np.ndarray

    @classmethod
    def from_counts(cls, counts: np.ndarray) -> ItemStats:
        m = counts.sum(axis=1)
        index = np.flatnonzero(m >= 2)
        c, m = counts[index], m[index]
        squares = (c * c).sum(axis=1)
        return cls(index, len(index) == len(counts), c, m, (m * m - squares) / (m - 1), (squares - m) / (m * (m - 1)))

    def _weights(self, weights: np.ndarray | None) -> np.ndarray:
        """Item weights as replicates × pairable items (one row of ones by default)."""
        if weights is None:
            return np.ones((1, len(self.m)))
        weights = np.atleast_2d(weights)
        return weights if self.every_item else weights[:, self.index]

    def alpha(self, weights: np.ndarray | None = None) -> float:
        """Krippendorff's alpha (nominal). Perfect agreement is 1 even when only one label occurs
        (the references leave that case undefined)."""
        return float(self.batch(weights)[0][0])

    def fleiss(self, weights: np.ndarray | None = None) -> tuple[float, float]:
        """Fleiss' kappa and percent agreement (Fleiss' P̄). With the same number of raters on every
        item this is statsmodels' ``fleiss_kappa``; otherwise each item's agreement is over its own pairs."""
        _, kappa, observed = self.batch(weights)
        return float(kappa[0]), float(observed[0])

    def batch(self, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Alpha, Fleiss' kappa and percent agreement for each row of a replicates × items weight matrix: the
        weighted label counts the three share are summed once per batch of bootstrap replicates."""
        w = self._weights(weights)
        n_c = w @ self.counts
        n = n_c.sum(axis=1)
        disagreement = w @ self.disagreement
        expected = (n * n - (n_c * n_c).sum(axis=1)) / np.where(n > 1, n - 1, 1)
        total = w.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            value = np.where(expected > 0, 1.0 - disagreement / expected, np.nan)
            observed = (w @ self.agreement) / total
            shares = n_c / (w @ self.m)[:, None]
            chance = (shares * shares).sum(axis=1)
            kappa = np.where(chance < 1, (observed - chance) / (1 - chance), np.where(observed == 1, 1.0, np.nan))
        alpha = np.where(n <= 1, np.nan, np.where(disagreement == 0, 1.0, value))
        empty = total == 0
        return alpha, np.where(empty, np.nan, kappa), np.where(empty, np.nan, observed)


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
    n_items: int

    @classmethod
    def from_votes(cls, votes: Votes) -> PairTable:
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
        return cls(item[left_i], pair, label[left_i], label[right_i], int(pair.max(initial=-1)) + 1, len(votes.items))

    def confusion(self, n_labels: int, weights: np.ndarray | None = None) -> np.ndarray:
        """Pairs × labels × labels confusion counts (optionally item-weighted)."""
        key = (self.pair * n_labels + self.label_a) * n_labels + self.label_b
        w = None if weights is None else weights[self.item]
        size = self.n_pairs * n_labels * n_labels
        return np.bincount(key, weights=w, minlength=size).reshape(self.n_pairs, n_labels, n_labels)

    def by_item(self, n_labels: int):
        """Items × (pair, label_a, label_b) counts as a sparse matrix: weights @ it is a batch of confusions."""
        from scipy.sparse import csr_matrix

        key = (self.pair * n_labels + self.label_a) * n_labels + self.label_b
        return csr_matrix(
            (np.ones(len(key)), (self.item, key)), shape=(self.n_items, self.n_pairs * n_labels * n_labels)
        )


# Sums over the small label axes go through einsum: numpy's reductions over a trailing axis of 3-10 labels cost
# 3-4x as much on the bootstrap's replicates × pairs × labels × labels tensors. The entries are counts, so every
# order of summation gives the same floats.


def cohen_kappas(confusion: np.ndarray) -> np.ndarray:
    """Cohen's kappa of every annotator pair (the last three axes: pairs × labels × labels);
    NaN where chance agreement is 1 (as scikit-learn)."""
    n = np.einsum("...ij->...", confusion)
    rows, columns = np.einsum("...ij->...i", confusion), np.einsum("...ij->...j", confusion)
    with np.errstate(invalid="ignore", divide="ignore"):
        observed = np.einsum("...ii->...", confusion) / n
        chance = np.einsum("...i,...i->...", rows, columns) / (n * n)
        return (observed - chance) / (1 - chance)


def binary_confusion(confusion: np.ndarray, label: int) -> np.ndarray:
    """Collapse a K-label confusion (last two axes) to "label vs. any other" for per-label agreement."""
    both = confusion[..., label, label]
    a_only = np.einsum("...j->...", confusion[..., label, :]) - both
    b_only = np.einsum("...i->...", confusion[..., :, label]) - both
    neither = np.einsum("...ij->...", confusion) - both - a_only - b_only
    return np.stack([np.stack([both, a_only], axis=-1), np.stack([b_only, neither], axis=-1)], axis=-2)


def _scope_metrics(stats: ItemStats, confusion: np.ndarray, weights: np.ndarray) -> dict[str, np.ndarray]:
    """The four metrics for each replicate: ``weights`` is replicates × items, ``confusion`` replicates × pairs × L × L."""
    alpha, kappa, agreement = stats.batch(weights)
    kappas = cohen_kappas(confusion)
    valid = np.isfinite(kappas) & (np.einsum("...ij->...", confusion) > 0)
    n_valid = valid.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_kappa = np.where(valid, kappas, 0.0).sum(axis=-1) / n_valid
    return {
        "krippendorff_alpha": alpha,
        "fleiss_kappa": kappa,
        "mean_pairwise_cohen_kappa": np.where(n_valid > 0, mean_kappa, np.nan),
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
        slice_masks = [
            (f"{dimension}={value}", (table[dimension].astype(str) == value).to_numpy())
            for dimension in table.columns
            for value in sorted(table[dimension].dropna().astype(str).unique())
        ]
    pairs = PairTable.from_votes(votes)
    by_item = pairs.by_item(n_labels)
    slice_rows = [(scope, np.flatnonzero(mask)) for scope, mask in slice_masks]
    slice_matrices = [by_item[rows] for _, rows in slice_rows]

    def every_scope(weights: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
        """All scopes for a batch of item weights (replicates × items); per-label scopes reuse the overall confusion."""
        shape = (len(weights), pairs.n_pairs, n_labels, n_labels)
        confusion = np.asarray((by_item.T @ weights.T).T).reshape(shape)
        out = {"overall": _scope_metrics(stats, confusion, weights)}
        for k, name in enumerate(votes.labels):
            out[f"label={name}"] = _scope_metrics(binary[k], binary_confusion(confusion, k), weights)
        for (scope, rows), matrix in zip(slice_rows, slice_matrices, strict=True):
            scoped = np.zeros_like(weights)
            scoped[:, rows] = weights[:, rows]
            out[scope] = _scope_metrics(stats, np.asarray((matrix.T @ weights[:, rows].T).T).reshape(shape), scoped)
        return out

    rng = np.random.default_rng(seed)
    point = {
        scope: {m: float(v[0]) for m, v in metrics.items()}
        for scope, metrics in every_scope(np.ones((1, n_items))).items()
    }
    draws = [np.bincount(rng.integers(0, n_items, n_items), minlength=n_items).astype(float) for _ in range(n_boot)]
    batch = int(
        max(1, min(50, BOOT_CELLS // max(1, pairs.n_pairs * n_labels * n_labels), BOOT_CELLS // max(1, 8 * n_items)))
    )
    batches = [every_scope(np.stack(draws[i : i + batch])) for i in range(0, n_boot, batch)]
    masks = {
        "overall": np.ones(n_items, bool),
        **{f"label={n}": np.ones(n_items, bool) for n in votes.labels},
        **dict(slice_masks),
    }
    rows = []
    for scope, mask in masks.items():
        n_scope_items, n_annotations = int(mask.sum()), int(per_item[mask].sum())
        for metric in METRICS:
            samples = np.concatenate([b[scope][metric] for b in batches]) if batches else np.zeros(0)
            samples = samples[np.isfinite(samples)]
            low, high = (
                np.quantile(samples, [(1 - CI_LEVEL) / 2, (1 + CI_LEVEL) / 2]) if len(samples) else (np.nan, np.nan)
            )
            rows.append((scope, metric, point[scope][metric], float(low), float(high), n_scope_items, n_annotations))
        single = int(((per_item == 1) & mask).sum())
        rows.append((scope, "single_annotator_items", float(single), np.nan, np.nan, n_scope_items, n_annotations))
    return pd.DataFrame(rows, columns=columns)
