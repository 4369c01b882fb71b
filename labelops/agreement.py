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
from scipy.sparse import csr_matrix

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
        """Alpha, Fleiss' kappa and percent agreement for each row of a replicates × items weight matrix."""
        w = self._weights(weights)
        return item_statistics(w @ self.counts, w.sum(axis=1), w @ self.disagreement, w @ self.agreement)


def item_statistics(
    label_counts: np.ndarray, total: np.ndarray, disagreement: np.ndarray, agreement: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Alpha, Fleiss' kappa and percent agreement per replicate from a scope's weighted sums: ``label_counts``
    (replicates × labels, C order: the shares' row sums add in numpy's order for a contiguous row), the weight
    of the pairable items and the weighted per-item disagreement and agreement terms. The label counts and the
    total are integer-valued, so any way of summing them gives these floats."""
    n = label_counts.sum(axis=1)
    expected = (n * n - (label_counts * label_counts).sum(axis=1)) / np.where(n > 1, n - 1, 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        value = np.where(expected > 0, 1.0 - disagreement / expected, np.nan)
        observed = agreement / total
        shares = label_counts / n[:, None]
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


# Sums over the small label axes go through einsum: numpy's reductions over a trailing axis of 3-10 labels cost
# 3-4x as much on the bootstrap's replicates × pairs × labels × labels tensors. The entries are counts, so every
# order of summation gives the same floats.


def cohen_kappas(confusion: np.ndarray) -> np.ndarray:
    """Cohen's kappa of every annotator pair (the last three axes: pairs × labels × labels);
    NaN where chance agreement is 1 (as scikit-learn)."""
    return PairMargins.from_confusion(confusion).kappas()


def _kappa(n: np.ndarray, agreeing: np.ndarray, chance_products: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        observed = agreeing / n
        chance = chance_products / (n * n)
        return (observed - chance) / (1 - chance)


@dataclass(frozen=True)
class PairMargins:
    """What Cohen's kappa needs of each pair's confusion: its total, diagonal and margins (leading axes as
    given, then pairs [× labels]). They are counts, so the kappas of "label vs. any other" follow from the
    K-label margins exactly, without building the 2 × 2 confusions."""

    n: np.ndarray
    diagonal: np.ndarray
    rows: np.ndarray
    columns: np.ndarray

    @classmethod
    def from_confusion(cls, confusion: np.ndarray) -> PairMargins:
        return cls(
            np.einsum("...ij->...", confusion),
            np.einsum("...ii->...i", confusion),
            np.einsum("...ij->...i", confusion),
            np.einsum("...ij->...j", confusion),
        )

    def kappas(self) -> np.ndarray:
        agreeing = np.einsum("...i->...", self.diagonal)
        return _kappa(self.n, agreeing, np.einsum("...i,...i->...", self.rows, self.columns))

    def label_kappas(self, label: int) -> np.ndarray:
        """Kappa of "label vs. any other": both gave it, or neither did."""
        both, a, b = self.diagonal[..., label], self.rows[..., label], self.columns[..., label]
        neither = self.n - a - b + both
        return _kappa(self.n, both + neither, a * b + (self.n - a) * (self.n - b))


def mean_kappa(kappas: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Mean over the pairs (last axis) of replicates × pairs kappas, where defined; NaN where no pair's is.

    The pairs are added one after another, as numpy adds them in an F-ordered array (the confusions leave the
    sparse product replicate-innermost): the bootstrap intervals are quantiles of these means, and numpy's
    pairwise addition of a C-ordered row could change their last bits.
    """
    valid = np.isfinite(kappas) & (n > 0)
    n_valid = valid.sum(axis=-1)
    summed = np.asfortranarray(np.where(valid, kappas, 0.0)).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_valid > 0, summed / n_valid, np.nan)


@dataclass(frozen=True)
class Scopes:
    """Every scope's statistics for a batch of bootstrap replicates (replicates × items weights).

    Scopes are the whole day, each label against the rest and each slice value (a subset of items). All the
    sums they need that hold integers (pair confusions, weighted label counts, pairable weight) are one sparse
    product of the weights with ``sums`` (columns × items): such sums are exact in any order. The weighted
    disagreement and agreement terms are not integers; each is the matrix-vector product of the replicates'
    weights it always was, with a slice's items selected by zeroing the others' terms (w · 0 = 0 · t, so the
    products and their order of addition are unchanged).
    """

    stats: ItemStats
    labels: list[str]
    slices: list[str]
    terms: np.ndarray  # per scope: disagreement and agreement terms over the pairable items (2·scopes rows)
    sums: csr_matrix
    n_pairs: int
    n_labels: int

    @classmethod
    def build(
        cls, votes: Votes, counts: np.ndarray, pairs: PairTable, slice_masks: list[tuple[str, np.ndarray]]
    ) -> Scopes:
        n_items, n_labels = votes.shape
        stats = ItemStats.from_counts(counts)
        per_item = counts.sum(axis=1)
        binary = [
            ItemStats.from_counts(np.stack([counts[:, k], per_item - counts[:, k]], axis=1)) for k in range(n_labels)
        ]
        masks = [np.ones(n_items, bool)] + [mask for _, mask in slice_masks]
        terms = [stats.disagreement, stats.agreement]
        for b in binary:
            terms += [b.disagreement, b.agreement]
        for mask in masks[1:]:
            terms += [stats.disagreement * mask[stats.index], stats.agreement * mask[stats.index]]
        # columns: each (slice) scope's pair confusions, then each one's label counts and pairable weight
        block = pairs.n_pairs * n_labels * n_labels
        key = (pairs.pair * n_labels + pairs.label_a) * n_labels + pairs.label_b
        item_counts = counts[stats.index]
        labelled = np.nonzero(item_counts)
        columns, items, values = [], [], []
        for j, mask in enumerate(masks):
            chosen = mask[pairs.item]
            columns.append(j * block + key[chosen])
            items.append(pairs.item[chosen])
            values.append(np.ones(int(chosen.sum())))
            base = len(masks) * block + j * (n_labels + 1)
            counted = mask[stats.index[labelled[0]]]
            columns += [base + labelled[1][counted], np.full(int(mask[stats.index].sum()), base + n_labels)]
            items += [stats.index[labelled[0][counted]], stats.index[mask[stats.index]]]
            values += [item_counts[labelled][counted], np.ones(int(mask[stats.index].sum()))]
        sums = csr_matrix(
            (np.concatenate(values), (np.concatenate(columns), np.concatenate(items))),
            shape=(len(masks) * (block + n_labels + 1), n_items),
        )
        return cls(
            stats,
            [str(n) for n in votes.labels],
            [s for s, _ in slice_masks],
            np.stack(terms),
            sums,
            pairs.n_pairs,
            n_labels,
        )

    def metrics(self, weights: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
        """The four metrics of every scope, one value per replicate (row of ``weights``)."""
        n_reps, n_labels, n_scopes = len(weights), self.n_labels, 1 + len(self.slices)
        block = self.n_pairs * n_labels * n_labels
        totals = self.sums @ np.ascontiguousarray(weights.T)  # columns × replicates

        def margins(j: int) -> PairMargins:
            confusion = totals[j * block : (j + 1) * block].T.reshape(n_reps, self.n_pairs, n_labels, n_labels)
            return PairMargins.from_confusion(confusion)

        item_sums = totals[n_scopes * block :].reshape(n_scopes, n_labels + 1, n_reps)
        label_counts = np.ascontiguousarray(item_sums[:, :n_labels].transpose(0, 2, 1))
        pairable_weight = item_sums[:, n_labels]
        w = self.stats._weights(weights)
        weighted = [w @ t for t in self.terms]

        def scope(j: int, t: int, counts: np.ndarray, mean_kappa: np.ndarray) -> dict[str, np.ndarray]:
            alpha, kappa, agreement = item_statistics(counts, pairable_weight[j], weighted[2 * t], weighted[2 * t + 1])
            return {
                "krippendorff_alpha": alpha,
                "fleiss_kappa": kappa,
                "mean_pairwise_cohen_kappa": mean_kappa,
                "percent_agreement": agreement,
            }

        overall = margins(0)
        out = {"overall": scope(0, 0, label_counts[0], mean_kappa(overall.kappas(), overall.n))}
        judged = label_counts[0].sum(axis=1)
        for k, name in enumerate(self.labels):
            binary = np.stack([label_counts[0][:, k], judged - label_counts[0][:, k]], axis=1)
            out[f"label={name}"] = scope(0, 1 + k, binary, mean_kappa(overall.label_kappas(k), overall.n))
        for j, name in enumerate(self.slices, start=1):
            scoped = margins(j)
            out[name] = scope(j, n_labels + j, label_counts[j], mean_kappa(scoped.kappas(), scoped.n))
        return out


def _slice_masks(votes: Votes, slices: pd.DataFrame | None) -> list[tuple[str, np.ndarray]]:
    """``dimension=value`` and its items (by item code) for every value of every slice dimension, values in
    sorted order (as strings)."""
    if slices is None or slices.empty:
        return []
    table = slices.drop_duplicates("item_id").set_index("item_id").reindex(votes.items)
    masks = []
    for dimension in table.columns:
        values = sorted(table[dimension].dropna().astype(str).unique())
        codes = pd.Categorical(table[dimension].astype(str), categories=values).codes
        masks += [(f"{dimension}={value}", codes == k) for k, value in enumerate(values)]
    return masks


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
    slice_masks = _slice_masks(votes, slices)
    pairs = PairTable.from_votes(votes)
    scopes = Scopes.build(votes, counts, pairs, slice_masks)
    rng = np.random.default_rng(seed)
    point = {
        scope: {m: float(v[0]) for m, v in metrics.items()}
        for scope, metrics in scopes.metrics(np.ones((1, n_items))).items()
    }
    draws = [np.bincount(rng.integers(0, n_items, n_items), minlength=n_items).astype(float) for _ in range(n_boot)]
    # the batches must stay these: a replicate's weighted sums of non-integer terms are matrix-vector products
    # whose order of addition may depend on the batch's shape and the replicate's row in it
    batch = int(
        max(1, min(50, BOOT_CELLS // max(1, pairs.n_pairs * n_labels * n_labels), BOOT_CELLS // max(1, 8 * n_items)))
    )
    batches = [scopes.metrics(np.stack(draws[i : i + batch])) for i in range(0, n_boot, batch)]
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
