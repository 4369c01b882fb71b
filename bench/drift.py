"""Drift of 1,000,000 production rows x 10 columns against a 1,000,000-row reference.

`python -m bench.drift`: six numeric and four categorical columns, three of them shifted;
the statistics are the production_drift asset's (labelops.drift.dataset_drift).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from labelops.drift import dataset_drift


def frame(rows: int, shift: float, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    data = {f"num_{i}": rng.normal(0, 1, rows) + (shift if i < 2 else 0.0) for i in range(6)}
    for i in range(4):
        p = np.array([0.5, 0.3, 0.15, 0.05])
        if i == 0 and shift:
            p = np.array([0.3, 0.3, 0.25, 0.15])
        data[f"cat_{i}"] = pd.Series(rng.choice(np.array(["a", "b", "c", "d"], dtype=object), rows, p=p), dtype="str")
    return pd.DataFrame(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    reference, current = frame(args.rows, 0.0, 1), frame(args.rows, 0.2, 2)
    start = time.perf_counter()
    table = dataset_drift(reference, current, list(reference.columns))
    seconds = time.perf_counter() - start
    print(table[["feature", "method", "statistic", "drifted", "psi_band"]].to_string(index=False))
    print(f"{args.rows:,} x {reference.shape[1]} against {args.rows:,}: {seconds:.2f} s")


if __name__ == "__main__":
    main()
