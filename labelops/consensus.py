"""Label aggregation: majority vote and Dawid-Skene, vectorized over sparse incidence matrices.

Dawid-Skene follows crowd-kit's ``DawidSkene`` step for step — initialization from
majority-vote shares, gold items clamped to their gold label after every E-step,
confusion entries clipped at 1e-10, and the same stopping rule on the evidence lower
bound — so that posteriors agree to numerical precision. The difference is the
arithmetic: every E- and M-step is a sparse matrix product instead of a pandas join.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import sparse

from labelops.agreement import Votes

EPS = 1e-10


@dataclass
class Aggregate:
    """Posterior label distribution per item, and per-annotator confusion matrices (DS only)."""

    items: np.ndarray
    labels: np.ndarray
    posteriors: np.ndarray  # items × labels
    method: str
    confusions: np.ndarray | None = None  # annotators × observed × true
    annotators: np.ndarray | None = None
    iterations: int = 0

    def table(self, votes: Votes) -> pd.DataFrame:
        """The classification rows of ``consensus_labels``."""
        best = self.posteriors.argmax(axis=1)  # first maximum: the lowest label, like crowd-kit
        counts = votes.counts()
        n_votes = counts.sum(axis=1)
        agreeing = counts[np.arange(len(best)), best]
        return pd.DataFrame(
            {
                "item_id": self.items,
                "label": self.labels[best],
                "confidence": self.posteriors[np.arange(len(best)), best],
                "n_votes": n_votes.astype(np.int64),
                "agreement": np.divide(agreeing, n_votes, out=np.zeros_like(agreeing), where=n_votes > 0),
                "method": self.method,
            }
        )


def majority_vote(votes: Votes) -> Aggregate:
    counts = votes.counts()
    return Aggregate(votes.items, votes.labels, counts / counts.sum(axis=1, keepdims=True), "majority_vote")


def _incidence(votes: Votes) -> sparse.csr_matrix:
    """Items × (annotator, label) answer indicator."""
    n_items, n_labels = votes.shape
    columns = votes.annotator * n_labels + votes.label
    data = np.ones(len(columns))
    return sparse.csr_matrix((data, (votes.item, columns)), shape=(n_items, len(votes.annotators) * n_labels))


def dawid_skene(
    votes: Votes,
    *,
    gold: pd.Series | None = None,
    max_iter: int = 100,
    tol: float = 1e-5,
) -> Aggregate:
    """Dawid-Skene EM, initialized from majority vote; ``gold`` (item_id -> label) is clamped."""
    _n_items, n_labels = votes.shape
    n_annotators = len(votes.annotators)
    answers = _incidence(votes)
    answers_t = answers.T.tocsr()
    used = np.asarray(answers.sum(axis=0)).ravel().reshape(n_annotators, n_labels) > 0
    per_item = np.asarray(answers.sum(axis=1)).ravel()
    clamp = _gold_rows(votes, gold)

    def m_step(posteriors: np.ndarray) -> np.ndarray:
        errors = (answers_t @ posteriors).reshape(n_annotators, n_labels, n_labels)
        errors = np.where(used[:, :, None], np.maximum(errors, EPS), 0.0)
        return errors / errors.sum(axis=1, keepdims=True)

    def clamped(posteriors: np.ndarray) -> np.ndarray:
        if clamp is not None:
            rows, columns = clamp
            posteriors[rows] = 0.0
            posteriors[rows, columns] = 1.0
        return posteriors

    posteriors = clamped(majority_vote(votes).posteriors.copy())
    priors = posteriors.mean(axis=0)
    errors = m_step(posteriors)
    loss = -np.inf
    iterations = 0
    for iterations in range(1, max_iter + 1):  # noqa: B007  (the count is returned: how many steps EM took)
        with np.errstate(divide="ignore"):
            log_errors = np.log2(errors.reshape(n_annotators * n_labels, n_labels))
        log_errors[~used.ravel()] = 0.0  # never looked up: no answer uses them
        log_likelihood = np.log2(np.maximum(priors, EPS)) + answers @ log_errors
        scaled = np.exp2(log_likelihood - log_likelihood.max(axis=1, keepdims=True))
        posteriors = clamped(scaled / scaled.sum(axis=1, keepdims=True))
        priors = posteriors.mean(axis=0)
        errors = m_step(posteriors)
        new_loss = _evidence_lower_bound(answers, per_item, posteriors, priors, errors, len(votes.item))
        posteriors = np.maximum(posteriors, EPS)  # crowd-kit clips in place while computing the bound
        priors = np.maximum(priors, EPS)
        if new_loss - loss < tol:
            break
        loss = new_loss
    return Aggregate(votes.items, votes.labels, posteriors, "dawid_skene", errors, votes.annotators, iterations)


def _evidence_lower_bound(answers, per_item, posteriors, priors, errors, n_answers) -> float:
    """crowd-kit's bound: E[log joint] (the prior counted once per answer) plus the posterior entropy."""
    n_annotators, n_labels, _ = errors.shape
    with np.errstate(divide="ignore"):
        log_errors = np.log(errors.reshape(n_annotators * n_labels, n_labels))
    log_errors[~np.isfinite(log_errors)] = 0.0
    joint = float((posteriors * (answers @ log_errors)).sum())
    joint += float((per_item[:, None] * posteriors * np.log(np.maximum(priors, EPS))).sum())
    clipped = np.maximum(posteriors, EPS)
    entropy = -float((np.log(clipped) * clipped).sum())
    return (joint + entropy) / n_answers


def _gold_rows(votes: Votes, gold: pd.Series | None) -> tuple[np.ndarray, np.ndarray] | None:
    if gold is None or gold.empty:
        return None
    # votes.items and votes.labels are sorted (Votes.from_frame), so positions are binary searches, not hashes
    items, labels = gold.index.to_numpy(dtype=str), gold.astype(str).to_numpy(dtype=str)
    rows = np.searchsorted(votes.items.astype(str), items).clip(0, max(len(votes.items) - 1, 0))
    columns = np.searchsorted(votes.labels.astype(str), labels).clip(0, max(len(votes.labels) - 1, 0))
    known = (votes.items[rows] == items) & (votes.labels[columns] == labels) if len(votes.items) else rows < 0
    if not known.any():
        return None
    return rows[known], columns[known]


def estimated_accuracy(aggregate: Aggregate) -> pd.Series:
    """Each annotator's accuracy implied by DS: Σ_c prior_c · P(answer c | true c)."""
    if aggregate.confusions is None:
        raise ValueError(f"estimated_accuracy needs confusion matrices (Dawid-Skene); {aggregate.method} has none")
    priors = aggregate.posteriors.mean(axis=0)
    diagonal = np.diagonal(aggregate.confusions, axis1=1, axis2=2)
    return pd.Series(diagonal @ priors, index=aggregate.annotators, name="estimated_accuracy")
