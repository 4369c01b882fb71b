"""Agreement and consensus at scale: 1,000,000 labels, 200,000 items x 5 of 100 annotators, 10 classes.

`python -m bench.quality`: Krippendorff's alpha (point estimate, then with a 100-resample
bootstrap) and Dawid-Skene, beside crowd-kit's DawidSkene on the same data in the same
process (crowd-kit is a test dependency, installed by `make test`/`make bench`).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from labelops.agreement import Votes, alpha_from_counts, classification_agreement
from labelops.consensus import dawid_skene


def synthetic(
    items: int, per_item: int, annotators: int, classes: int, seed: int = 11
) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, classes, items)
    skill = rng.uniform(0.5, 0.95, annotators)
    who = np.argsort(rng.random((items, annotators)), axis=1)[:, :per_item].ravel()  # distinct annotators per item
    item = np.repeat(np.arange(items), per_item)
    correct = rng.random(len(item)) < skill[who]
    label = np.where(correct, truth[item], rng.integers(0, classes, len(item)))
    frame = pd.DataFrame(
        {
            "item_id": np.char.mod("i%07d", item),
            "annotator_id": np.char.mod("w%03d", who),
            "label": np.char.mod("c%d", label),
        }
    )
    return frame, truth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--skip-crowdkit", action="store_true")
    args = parser.parse_args()
    frame, truth = synthetic(args.items, 5, 100, 10)
    print(f"labels: {len(frame):,}")

    start = time.perf_counter()
    votes = Votes.from_frame(frame)
    encoded = time.perf_counter()
    alpha = alpha_from_counts(votes.counts())
    alpha_done = time.perf_counter()
    print(f"encode: {encoded - start:.2f} s; Krippendorff's alpha {alpha:.4f}: {alpha_done - encoded:.3f} s")

    start = time.perf_counter()
    table = classification_agreement(frame, n_boot=100)
    print(
        f"all four metrics, overall and per label, 100 bootstrap resamples: {time.perf_counter() - start:.1f} s ({len(table)} rows)"
    )

    start = time.perf_counter()
    ours = dawid_skene(votes)
    ours_seconds = time.perf_counter() - start
    accuracy = (ours.posteriors.argmax(axis=1) == np.argsort(np.char.mod("c%d", np.arange(10)))[truth]).mean()
    print(f"labelops Dawid-Skene: {ours_seconds:.2f} s, {ours.iterations} iterations, accuracy {accuracy:.4f}")
    if not args.skip_crowdkit:
        from crowdkit.aggregation import DawidSkene

        start = time.perf_counter()
        reference = DawidSkene(n_iter=100).fit(frame.rename(columns={"item_id": "task", "annotator_id": "worker"}))
        theirs = time.perf_counter() - start
        probas = reference.probas_.reindex(index=votes.items, columns=votes.labels).to_numpy()
        print(
            f"crowd-kit DawidSkene: {theirs:.2f} s, {len(reference.loss_history_)} iterations; "
            f"speed-up {theirs / ours_seconds:.1f}x; max posterior difference {np.abs(probas - ours.posteriors).max():.2e}"
        )


if __name__ == "__main__":
    main()
