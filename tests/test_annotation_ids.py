"""annotation_ids hashes each file name once and the refs without factorizing; the ids are those of the
row-by-row hashing it replaced (kept as the path for refs repeated within a file and for missing values)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from labelops.ingest import _annotation_ids_by_row, annotation_ids, hex_strings

FILES = ["exports/2024-06-01/a.json", "exports/2024-06-02/a.json", "b.json", "exports/2024-06-03/ü/é.json"]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("as_text", [False, True])
def test_ids_are_the_row_by_row_ids(seed: int, as_text: bool) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(0, 2000))
    files = rng.choice(FILES, n).tolist()
    pool = [f"task={i}/annotation=ä{i % 7}/result=r{i % 3}" for i in range(400)] + ["", " "]
    refs = rng.choice(pool, n).tolist() if seed % 2 else [f"t{i}/ß{j}" for i, j in enumerate(rng.integers(0, 9, n))]
    dtype = None if as_text else object  # pandas' own text dtype, or Python objects
    file_column, ref_column = pd.Series(files, dtype=dtype), pd.Series(refs, dtype=dtype, index=np.arange(n) + 3)
    ids = annotation_ids(file_column, ref_column)
    assert ids.dtype == object and all(type(i) is str for i in ids)
    assert ids.tolist() == _annotation_ids_by_row(file_column, ref_column).tolist()
    assert len(set(ids.tolist())) == n


def test_hex_strings() -> None:
    values = np.array([0, 1, 0xABCDEF, 2**64 - 1], dtype=np.uint64)
    assert hex_strings(values).tolist() == [f"{int(v):016x}" for v in values]
    assert hex_strings(np.array([], dtype=np.uint64)).tolist() == []
