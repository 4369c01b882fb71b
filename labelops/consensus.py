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

    def model(self, fitted_on: str) -> AnnotatorModel:
        """What the fit learned, to label later judgments with (Dawid-Skene only)."""
        if self.confusions is None or self.annotators is None:
            raise ValueError(f"{self.method} learns no annotator model")
        priors = self.posteriors.mean(axis=0)  # as estimated_accuracy weighs each class
        return AnnotatorModel(self.labels, self.annotators, priors, self.confusions, fitted_on)

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


MODEL_COLUMNS = ["annotator_id", "observed", "true", "probability", "fitted_on"]


@dataclass(frozen=True)
class AnnotatorModel:
    """A Dawid-Skene fit kept to label later judgments: the class priors and each annotator's confusion matrix.

    A fit reads every current judgment (the model is global); labeling a few new items with a kept fit is one
    E-step over their judgments alone, as an online Dawid-Skene labels a task when it completes (Amazon SageMaker
    Ground Truth's annotation consolidation does so), so a night's cost follows the day, not the history."""

    labels: np.ndarray  # sorted
    annotators: np.ndarray  # sorted
    priors: np.ndarray  # labels
    confusions: np.ndarray  # annotators × observed × true
    fitted_on: str

    def knows(self, labels: np.ndarray) -> bool:
        """Whether the fit saw every one of ``labels`` (a class first used later needs a new fit)."""
        return bool(np.isin(np.asarray(labels, dtype=str), self.labels.astype(str)).all())

    def accuracy(self) -> pd.Series:
        """Each annotator's accuracy the fit implies (estimated_accuracy of the fit)."""
        diagonal = np.diagonal(self.confusions, axis1=1, axis2=2)
        return pd.Series(diagonal @ self.priors, index=self.annotators, name="estimated_accuracy")

    def aggregate(self, votes: Votes, *, gold: pd.Series | None = None) -> tuple[Aggregate, Votes]:
        """Posteriors of the items of ``votes`` under the kept fit (one E-step, gold clamped), and the votes with
        the fit's label codes (their counts and agreement go with the posteriors). An annotator the fit never saw
        answers with the mean confusion matrix of those it did: nothing is known of them yet."""
        label = np.searchsorted(self.labels.astype(str), votes.labels.astype(str))[votes.label]
        coded = Votes(votes.item, votes.annotator, label, votes.items, votes.annotators, self.labels)
        known = np.searchsorted(self.annotators.astype(str), votes.annotators.astype(str)).clip(
            0, max(len(self.annotators) - 1, 0)
        )
        seen = self.annotators[known] == votes.annotators if len(self.annotators) else np.zeros(0, dtype=bool)
        confusions = np.concatenate([self.confusions, self.confusions.mean(axis=0, keepdims=True)])
        errors = confusions[np.where(seen, known, len(self.annotators))]
        n_labels = len(self.labels)
        with np.errstate(divide="ignore"):
            log_errors = np.log2(errors.reshape(-1, n_labels))
        log_errors[~np.isfinite(log_errors)] = 0.0  # an answer the annotator never gave in the fit: no evidence
        log_likelihood = np.log2(np.maximum(self.priors, EPS)) + _incidence(coded) @ log_errors
        scaled = np.exp2(log_likelihood - log_likelihood.max(axis=1, keepdims=True))
        posteriors = scaled / scaled.sum(axis=1, keepdims=True)
        clamp = _gold_rows(coded, gold)
        if clamp is not None:
            posteriors[clamp[0]] = 0.0
            posteriors[clamp] = 1.0
        aggregate = Aggregate(coded.items, self.labels, np.maximum(posteriors, EPS), "dawid_skene")
        return aggregate, coded

    def frame(self) -> pd.DataFrame:
        """The fit as a table (``MODEL_COLUMNS``): a row per annotator, answer and true class, and a row per class
        for the priors (no annotator, no answer)."""
        n_annotators, n_labels = len(self.annotators), len(self.labels)
        confusion = pd.DataFrame(
            {
                "annotator_id": np.repeat(self.annotators.astype(object), n_labels * n_labels),
                "observed": np.tile(np.repeat(self.labels.astype(object), n_labels), n_annotators),
                "true": np.tile(self.labels.astype(object), n_annotators * n_labels),
                "probability": self.confusions.reshape(-1),
            }
        )
        priors = pd.DataFrame(
            {"annotator_id": None, "observed": None, "true": self.labels.astype(object), "probability": self.priors}
        )
        return pd.concat([priors, confusion], ignore_index=True).assign(fitted_on=self.fitted_on)[MODEL_COLUMNS]

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> AnnotatorModel | None:
        """The fit a table of ``frame`` holds (None for an empty table: no fit yet)."""
        if frame.empty:
            return None
        prior = frame["annotator_id"].isna().to_numpy()
        labels = frame.loc[prior, "true"].to_numpy(dtype=object)
        rest = frame[~prior]
        n_labels = len(labels)
        annotators = rest["annotator_id"].to_numpy(dtype=object)[:: n_labels * n_labels]
        confusions = rest["probability"].to_numpy(dtype=float).reshape(len(annotators), n_labels, n_labels)
        priors = frame.loc[prior, "probability"].to_numpy(dtype=float)
        return cls(labels, annotators, priors, confusions, str(frame["fitted_on"].iloc[0]))


def estimated_accuracy(aggregate: Aggregate) -> pd.Series:
    """Each annotator's accuracy implied by DS: Σ_c prior_c · P(answer c | true c)."""
    if aggregate.confusions is None:
        raise ValueError(f"estimated_accuracy needs confusion matrices (Dawid-Skene); {aggregate.method} has none")
    priors = aggregate.posteriors.mean(axis=0)
    diagonal = np.diagonal(aggregate.confusions, axis1=1, axis2=2)
    return pd.Series(diagonal @ priors, index=aggregate.annotators, name="estimated_accuracy")
