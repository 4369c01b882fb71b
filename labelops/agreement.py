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
        ordered = np.sort(key)
        if (ordered[1:] != ordered[:-1]).all():  # the usual case, one judgment per pair: a sort, no index sort
            keep = np.arange(len(key))
        else:
            _, last_from_end = np.unique(key[::-1], return_index=True)
            keep = np.sort(len(key) - 1 - last_from_end)
        label, labels = pd.factorize(frame["label"].astype(str), sort=True)
        kept_label = label[keep]
        used = np.flatnonzero(np.bincount(kept_label, minlength=len(labels)))  # sorted: labels keep their order
        if len(used) < len(labels):
            kept_label = np.searchsorted(used, kept_label)
        return cls(
            item[keep],
            annotator[keep],
            kept_label,
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
class SliceDimension:
    """A slice dimension's values (sorted, as strings) and each item's value code (-1: none)."""

    name: str
    values: list[str]
    codes: np.ndarray

    def masks(self) -> list[tuple[str, np.ndarray]]:
        return [(f"{self.name}={value}", self.codes == k) for k, value in enumerate(self.values)]


def slice_dimensions(votes: Votes, slices: pd.DataFrame | None) -> list[SliceDimension]:
    """The dimensions of ``slices`` (item_id plus a column per dimension) over the items of ``votes``."""
    if slices is None or slices.empty:
        return []
    table = slices.drop_duplicates("item_id").set_index("item_id").reindex(votes.items)
    dimensions = []
    for name in table.columns:
        values = sorted(table[name].dropna().astype(str).unique())
        codes = pd.Categorical(table[name].astype(str), categories=values).codes.astype(np.int64)
        dimensions.append(SliceDimension(str(name), values, codes))
    return dimensions


MAX_CELLS = 16  # slice cells a group of dimensions may have


@dataclass(frozen=True)
class CellGroup:
    """Items split by the values of some slice dimensions at once (cells: the combinations that occur).

    A slice value's sums are the sums of its cells, and the day's are all cells' of a group: each judgment
    pair enters the sparse product once per group instead of once per dimension and once for the day. The
    sums are counts, so adding cells gives the same floats. Dimensions join a group while it has at most
    MAX_CELLS cells: more cells mean more, emptier confusion blocks to add up.
    """

    cell: np.ndarray  # each item's cell
    n_cells: int
    scopes: list[tuple[str, np.ndarray]]  # slice scope and the cells it adds up

    @classmethod
    def split(cls, dimensions: list[SliceDimension], n_items: int) -> list[CellGroup]:
        """Consecutive dimensions grouped; always one group (a single cell when there are no slices)."""
        groups, members, cell = [], [], np.zeros(n_items, np.int64)
        for dimension in dimensions:
            joined, cells = pd.factorize(cell * (len(dimension.values) + 1) + dimension.codes + 1)
            if members and len(cells) > MAX_CELLS:
                groups.append(cls.of(members, cell))
                members, (joined, cells) = [], pd.factorize(dimension.codes + 1)
            members.append(dimension)
            cell = joined
        return [*groups, cls.of(members, cell)]

    @classmethod
    def of(cls, dimensions: list[SliceDimension], cell: np.ndarray) -> CellGroup:
        n_cells = int(cell.max(initial=0)) + 1
        scopes = []
        for dimension in dimensions:
            code = np.zeros(n_cells, np.int64)
            code[cell] = dimension.codes  # all items of a cell share its value
            scopes += [(scope, np.flatnonzero(code == k)) for k, (scope, _) in enumerate(dimension.masks())]
        return cls(cell, n_cells, scopes)


@dataclass(frozen=True)
class Scopes:
    """Every scope's statistics for a batch of bootstrap replicates (replicates × items weights).

    Scopes are the whole day, each label against the rest and each slice value (a subset of items). All the
    sums they need that hold integers (pair confusions, weighted label counts, pairable weight) come from one
    sparse product of the weights with ``sums`` (columns × items), per cell of each `CellGroup`: such sums
    are exact in any order. The weighted disagreement and agreement terms are not integers; each is the
    matrix-vector product of the replicates' weights it always was, with a slice's items selected by zeroing
    the others' terms (w · 0 = 0 · t, so the products and their order of addition are unchanged).
    """

    stats: ItemStats
    labels: list[str]
    groups: list[CellGroup]
    terms: dict[str, tuple[np.ndarray, np.ndarray]]  # per scope: disagreement and agreement terms, pairable items
    sums: csr_matrix
    n_pairs: int
    n_labels: int

    @classmethod
    def build(cls, votes: Votes, counts: np.ndarray, pairs: PairTable, dimensions: list[SliceDimension]) -> Scopes:
        n_items, n_labels = votes.shape
        stats = ItemStats.from_counts(counts)
        per_item = counts.sum(axis=1)
        binary = [
            ItemStats.from_counts(np.stack([counts[:, k], per_item - counts[:, k]], axis=1)) for k in range(n_labels)
        ]
        groups = CellGroup.split(dimensions, n_items)
        terms = {"overall": (stats.disagreement, stats.agreement)}
        for name, b in zip(votes.labels, binary, strict=True):
            terms[f"label={name}"] = (b.disagreement, b.agreement)
        for dimension in dimensions:
            for scope, mask in dimension.masks():
                terms[scope] = (stats.disagreement * mask[stats.index], stats.agreement * mask[stats.index])
        # columns, group after group: each cell's pair confusions, then each cell's label counts and pairable weight
        block = pairs.n_pairs * n_labels * n_labels
        key = (pairs.pair * n_labels + pairs.label_a) * n_labels + pairs.label_b
        labelled_item, label = np.nonzero(counts[stats.index])
        labelled_item = stats.index[labelled_item]
        columns, items, values, offset = [], [], [], 0
        for group in groups:
            sums_at = offset + group.n_cells * block
            columns += [
                offset + group.cell[pairs.item] * block + key,
                sums_at + group.cell[labelled_item] * (n_labels + 1) + label,
                sums_at + group.cell[stats.index] * (n_labels + 1) + n_labels,
            ]
            items += [pairs.item, labelled_item, stats.index]
            values += [np.ones(len(key)), counts[labelled_item, label], np.ones(len(stats.index))]
            # entries are counts of judgments: float32 holds them exactly
            offset = sums_at + group.n_cells * (n_labels + 1)
        sums = csr_matrix(
            (np.concatenate(values).astype(np.float32), (np.concatenate(columns), np.concatenate(items))),
            shape=(offset, n_items),
        )
        labels = [str(n) for n in votes.labels]
        return cls(stats, labels, groups, terms, sums, pairs.n_pairs, n_labels)

    def metrics(self, weights: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
        """The four metrics of every scope, one value per replicate (row of ``weights``: integer counts of each
        item in the replicate)."""
        n_reps, n_labels = len(weights), self.n_labels
        block = self.n_pairs * n_labels * n_labels
        # the sums are integers no larger than the heaviest replicate's weight times the largest entry: float32
        # holds them exactly below 2**24, and its product moves half the bytes
        exact32 = float(weights.sum(axis=1).max(initial=0)) * float(self.sums.data.max(initial=0)) < 2**24
        dtype = np.float32 if exact32 else np.float64
        replicates = np.ascontiguousarray(weights.T, dtype=dtype)
        totals = self.sums.astype(dtype, copy=False) @ replicates  # columns × replicates
        w = self.stats._weights(weights)

        def scope(
            confusions: np.ndarray, item_sums: np.ndarray, cells: np.ndarray
        ) -> tuple[PairMargins, np.ndarray, np.ndarray]:
            """The scope's pair margins, label counts (replicates × labels) and pairable weight."""
            confusion, sums = _cell_sum(confusions, cells), _cell_sum(item_sums, cells)
            margins = PairMargins.from_confusion(confusion.T.reshape(n_reps, self.n_pairs, n_labels, n_labels))
            return margins, np.ascontiguousarray(sums[:n_labels].T), sums[n_labels]

        def metrics(
            name: str, counts: np.ndarray, pairable: np.ndarray, kappas: np.ndarray, margins: PairMargins
        ) -> dict[str, np.ndarray]:
            disagreement, agreement_terms = self.terms[name]
            alpha, kappa, agreement = item_statistics(counts, pairable, w @ disagreement, w @ agreement_terms)
            return {
                "krippendorff_alpha": alpha,
                "fleiss_kappa": kappa,
                "mean_pairwise_cohen_kappa": mean_kappa(kappas, margins.n),
                "percent_agreement": agreement,
            }

        out, offset = {}, 0
        for g, group in enumerate(self.groups):
            sums_at = offset + group.n_cells * block
            confusions = totals[offset:sums_at].reshape(group.n_cells, block, n_reps)
            item_sums = totals[sums_at : sums_at + group.n_cells * (n_labels + 1)].reshape(group.n_cells, -1, n_reps)
            offset = sums_at + group.n_cells * (n_labels + 1)
            if g == 0:
                margins, counts, pairable = scope(confusions, item_sums, np.arange(group.n_cells))
                out["overall"] = metrics("overall", counts, pairable, margins.kappas(), margins)
                judged = counts.sum(axis=1)
                for k, name in enumerate(self.labels):
                    binary = np.stack([counts[:, k], judged - counts[:, k]], axis=1)
                    out[f"label={name}"] = metrics(f"label={name}", binary, pairable, margins.label_kappas(k), margins)
            for name, cells in group.scopes:
                margins, counts, pairable = scope(confusions, item_sums, cells)
                out[name] = metrics(name, counts, pairable, margins.kappas(), margins)
        return out


def _cell_sum(blocks: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """Some cells' blocks added up, in float64 (they hold counts: exact), one cell after another: summing a
    fancy-indexed selection would copy every block first."""
    total = blocks[cells[0]].astype(np.float64)
    for cell in cells[1:]:
        total += blocks[cell]
    return total


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
    dimensions = slice_dimensions(votes, slices)
    pairs = PairTable.from_votes(votes)
    scopes = Scopes.build(votes, counts, pairs, dimensions)
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
        **{scope: mask for dimension in dimensions for scope, mask in dimension.masks()},
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
