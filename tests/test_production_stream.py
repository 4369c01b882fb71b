"""A production day read in parts: ingest, drift and coverage equal the in-memory results (or scipy on the
sampled rows), with a batch size forced small so every path crosses several parts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scipy import stats
from test_coverage import spec

from labelops import coverage, drift, ingest
from labelops.storage import LocalStore

DAY = "2024-06-03"


def _day(n: int, seed: int, shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "predicted_label": rng.choice(["car", "bus", "truck"], n, p=[0.5 - shift / 2, 0.3, 0.2 + shift / 2]),
            "confidence": rng.uniform(0.2, 1.0, n).round(4),
            "brightness": rng.normal(120 - 30 * shift, 25, n).round(2),
            "flag": rng.choice([0.0, 1.0], n),  # numeric with two values: the z-test on the small reference
            "lighting": pd.Series(rng.choice(["day", "dusk", "night", None], n), dtype=object),
        }
    )


def _parts(frame: pd.DataFrame, rows: int) -> Iterator[pd.DataFrame]:
    for start in range(0, len(frame), rows):
        yield frame.iloc[start : start + rows].reset_index(drop=True)


@pytest.mark.parametrize("reference_rows", [800, 3000])  # KS / chi-square / z, then Wasserstein / Jensen-Shannon
def test_streamed_drift_equals_dataset_drift_when_the_sample_holds_the_day(reference_rows: int) -> None:
    reference, current = _day(reference_rows, 1), _day(2500, 2, shift=0.3)
    columns = list(current.columns)
    whole = drift.dataset_drift(reference, current, columns)
    streamed = drift.stream_drift(reference, _parts(current, 700), len(current), columns, sample=len(current))
    pd.testing.assert_frame_equal(streamed, whole)
    assert set(whole["method"]) >= ({"ks", "chisquare", "z"} if reference_rows <= 1000 else {"wasserstein"})


def test_day_drift_reads_the_day_once_for_the_table_and_the_mean_confidence() -> None:
    reference, current = _day(3000, 1), _day(2500, 2, shift=0.3)
    current.loc[::7, "confidence"] = np.nan
    measured = drift.day_drift(reference, _parts(current, 700), len(current))
    monitored = drift.monitored_columns(current)
    pd.testing.assert_frame_equal(measured.table, drift.stream_drift(reference, _parts(current, 700), len(current)))
    assert set(measured.table["feature"]) == {*monitored, "__dataset__"}
    assert measured.mean_confidence == pytest.approx(current["confidence"].mean(), rel=1e-12)
    # no reference yet (the first production day): no column rows, but the day is still read for its mean
    first = drift.day_drift(reference.iloc[:0], _parts(current, 700), len(current))
    assert first.table["feature"].tolist() == ["__dataset__"] and first.table["current_rows"].tolist() == [2500]
    assert first.mean_confidence == pytest.approx(current["confidence"].mean(), rel=1e-12)
    assert drift.day_drift(reference, iter(()), 0).mean_confidence == 0.0


@pytest.mark.parametrize("reference_rows", [800, 3000])
def test_streamed_drift_counts_exactly_and_samples_the_values(reference_rows: int) -> None:
    reference, current = _day(reference_rows, 1), _day(2500, 2, shift=0.3)
    columns = list(current.columns)
    whole = drift.dataset_drift(reference, current, columns).set_index("feature")
    streamed = drift.stream_drift(reference, _parts(current, 700), len(current), columns, sample=600, seed=5)
    streamed = streamed.set_index("feature")
    positions = drift.sample_positions(len(current), 600, 5)
    assert positions is not None and len(positions) == 600
    sampled = current.iloc[positions]
    for feature, row in streamed.iterrows():
        expected = whole.loc[feature]
        # exact whatever the sample: the counts, PSI, the unseen rate, the method
        assert row["method"] == expected["method"] and row["current_rows"] == expected["current_rows"]
        if feature == "__dataset__":
            continue
        assert row["psi"] == pytest.approx(expected["psi"], rel=1e-12)
        assert row["unseen_rate"] == pytest.approx(expected["unseen_rate"], nan_ok=True)
        ref, cur = reference[feature].dropna(), sampled[feature].dropna()
        if row["method"] in ("chisquare", "z", "jensenshannon"):
            assert row["statistic"] == pytest.approx(expected["statistic"], rel=1e-12)
        elif row["method"] == "ks":  # on the sampled rows, as scipy computes it
            result = stats.ks_2samp(ref.to_numpy(float), cur.to_numpy(float))
            assert row["statistic"] == pytest.approx(result.statistic)
            assert row["p_value"] == pytest.approx(result.pvalue)
        else:
            distance = stats.wasserstein_distance(ref.to_numpy(float), cur.to_numpy(float))
            assert row["statistic"] == pytest.approx(distance / ref.to_numpy(float).std())
    assert streamed.loc["brightness", "drifted"]  # the shift is found from the sample too


class _Days:
    """A daily table read in parts, as the IO manager's DayTables is."""

    def __init__(self, frames: dict[str, pd.DataFrame], rows: int) -> None:
        self.frames, self.part_rows = frames, rows

    def rows(self, day: str) -> int:
        return len(self.frames[day])

    def batches(self, day: str, rows: int) -> Iterator[pd.DataFrame]:
        assert rows == self.part_rows
        yield from _parts(self.frames[day], rows)

    def __contains__(self, day: object) -> bool:
        return day in self.frames


def test_reference_sample_in_parts_draws_the_same_rows() -> None:
    frames = {"2024-06-01": _day(1800, 1), "2024-06-02": _day(400, 2)}
    whole = drift.reference_sample(frames, list(frames), 1000)
    parted = drift.reference_sample_parts(_Days(frames, 300), list(frames), 1000, 300)
    pd.testing.assert_frame_equal(parted.reset_index(drop=True), whole.reset_index(drop=True))


def test_a_day_drawn_when_it_arrived_gives_a_reference_the_same_rows() -> None:
    frames = {"2024-06-01": _day(1800, 1), "2024-06-02": _day(400, 2), "2024-06-03": _day(2200, 3)}
    days = _Days(frames, 300)
    fresh = drift.reference_sample_parts(days, list(frames), 1500, 300)  # 500 rows of each day
    # drawn with the reference's share of each day (the first and the small second), then with another share
    drawn = {d: drift.day_sample(days, d, 500, 300) for d in ("2024-06-01", "2024-06-02")}
    assert [len(f) for f in drawn.values()] == [500, 400]
    kept = drift.reference_sample_parts(days, list(frames), 1500, 300, drawn=_Days(drawn, 300))
    pd.testing.assert_frame_equal(kept, fresh)
    other = _Days({"2024-06-01": drift.day_sample(days, "2024-06-01", 700, 300)}, 300)
    assert not drift.kept_share(other, days, "2024-06-01", 500)  # another share is not used
    pd.testing.assert_frame_equal(drift.reference_sample_parts(days, list(frames), 1500, 300, drawn=other), fresh)
    # a day's draw is the same whichever days share the reference with it
    alone = drift.reference_sample_parts(days, ["2024-06-01"], 500, 300)
    pd.testing.assert_frame_equal(alone.reset_index(drop=True), fresh.iloc[:500].reset_index(drop=True))


def test_coverage_from_counted_parts_equals_the_row_report() -> None:
    s = spec()
    rng = np.random.default_rng(4)
    n = 2000
    production = pd.DataFrame(
        {
            "item_id": [f"p{i}" for i in range(n)],
            "label": rng.choice(["car", "pedestrian", "bus"], n),
            "x": 0.0,
            "y": 0.0,
            "w": rng.uniform(5, 300, n),
            "h": rng.uniform(5, 300, n),
            **{d: rng.choice(["a", "b", None], n) for d in ("lighting", "weather", "device", "region")},
        }
    )
    sample = production.sample(300, random_state=1)[["item_id", "label", "x", "y", "w", "h"]]
    items = production[["item_id", "lighting", "weather", "device", "region"]]
    labeled = coverage.slice_values(sample, items, s)
    rows = coverage.coverage_report(labeled, coverage.slice_values(production, pd.DataFrame({"item_id": []}), s), s)
    cells = coverage.production_cells(_parts(production, 450), s)
    assert cells[coverage.ROWS].sum() == n
    counted = coverage.coverage_report(coverage.labeled_cells(sample, items, s), cells, s, counted=True)
    pd.testing.assert_frame_equal(counted, rows)


def _landing(root: Path) -> LocalStore:
    folder = root / "production" / DAY
    folder.mkdir(parents=True)
    frame = _day(2600, 7).assign(item_id=[f"p{i}" for i in range(2600)], model_version="m1", ts=f"{DAY}T01:00:00Z")
    frame.iloc[:1000].to_csv(folder / "a.csv", index=False)
    frame.iloc[1000:2000].to_parquet(folder / "b.parquet", index=False)
    frame.iloc[2000:].to_json(folder / "c.jsonl", orient="records", lines=True)
    return LocalStore(root)


def _written(store: LocalStore, tmp_path: Path, rows: int) -> tuple[ingest.StreamedDay, pd.DataFrame]:
    out = tmp_path / "out.parquet"
    result = ingest.write_predictions(store, DAY, out, batch_rows=rows)
    return result, pq.read_table(out).to_pandas()


def test_streamed_ingest_equals_the_in_memory_reader(tmp_path: Path) -> None:
    store = _landing(tmp_path / "landing")
    whole = ingest.read_predictions(store, DAY)
    result, table = _written(store, tmp_path, 300)
    expected = pa.Table.from_pandas(whole.table, preserve_index=False).to_pandas()  # as the IO manager wrote it
    pd.testing.assert_frame_equal(table, expected)
    pd.testing.assert_frame_equal(result.ledger, whole.ledger)
    assert result.rows == len(table) == result.ledger["rows"].sum() == 2600  # every row accounted for
    assert result.passes == 1
    assert result.predicted_labels.sum() == 2600
    assert result.confidence_sum / result.confidence_rows == pytest.approx(table["confidence"].mean())


def test_a_bad_value_in_a_later_part_fails_its_file_alone(tmp_path: Path) -> None:
    store = _landing(tmp_path / "landing")
    bad = pd.read_csv(tmp_path / "landing" / "production" / DAY / "a.csv", dtype=str)
    bad.loc[850, "confidence"] = "high"  # in the file's third part of 300 rows, after two were written
    bad.to_csv(tmp_path / "landing" / "production" / DAY / "a.csv", index=False)
    result, table = _written(store, tmp_path, 300)
    error = result.ledger.set_index("source_file").loc[f"production/{DAY}/a.csv"]
    assert error["status"] == "error" and error["rows"] == 0
    assert f"production/{DAY}/a.csv" in error["error"] and "line 852" in error["error"] and "'high'" in error["error"]
    assert not table["source_file"].str.endswith("a.csv").any()  # none of its written rows kept
    assert result.rows == len(table) == result.ledger["rows"].sum() == 1600
    assert result.passes == 2


def test_text_in_a_later_file_makes_the_column_text_for_the_day(tmp_path: Path) -> None:
    store = _landing(tmp_path / "landing")
    path = tmp_path / "landing" / "production" / DAY / "d.csv"
    pd.DataFrame({"item_id": ["q1", "q2"], "brightness": ["dark", "12.5"], "extra": ["x", "y"]}).to_csv(
        path, index=False
    )
    result, table = _written(store, tmp_path, 300)
    # the column types are learnt from every file's first rows before any is written: no second pass
    assert result.passes == 1 and result.rows == len(table) == 2602
    assert table["brightness"].dtype != np.float64 and "dark" in set(table["brightness"])
    assert table["brightness"].iloc[0] == str(_day(2600, 7)["brightness"].iloc[0])  # the file's own text
    assert (
        table["extra"].isna().sum() == 2600 and pq.read_schema(tmp_path / "out.parquet").field("extra").type == "string"
    )


@pytest.mark.parametrize("as_bytes", [False, True])  # local disk, or an object's bytes (S3)
def test_day_tables_read_a_day_in_parts(tmp_path: Path, as_bytes: bool) -> None:
    from resources.io_manager import DayTables

    frame = _day(1000, 3)
    path = tmp_path / f"{DAY}.parquet"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, row_group_size=300)
    tables = DayTables(
        [DAY],
        lambda day, **columns: pd.read_parquet(path),
        open_file=lambda day: pq.ParquetFile(pa.BufferReader(path.read_bytes()) if as_bytes else str(path)),
    ).select(drop=["lighting"])
    parts = list(tables.batches(DAY, 250))
    assert tables.rows(DAY) == 1000 and max(len(p) for p in parts) <= 250
    pd.testing.assert_frame_equal(pd.concat(parts, ignore_index=True), frame.drop(columns="lighting"))


def test_text_past_the_probed_rows_still_makes_the_column_text(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ingest, "PROBE_ROWS", 100)
    store = _landing(tmp_path / "landing")
    path = tmp_path / "landing" / "production" / DAY / "a.csv"
    frame = pd.read_csv(path, dtype=str)
    frame.loc[500, "brightness"] = "dark"  # in a.csv's second part of 300 rows, past the 100 rows probed
    frame.to_csv(path, index=False)
    result, table = _written(store, tmp_path, 300)
    assert result.passes == 2 and result.rows == len(table) == 2600
    assert (
        "dark" in set(table["brightness"])
        and pq.read_schema(tmp_path / "out.parquet").field("brightness").type == "string"
    )


def test_a_line_longer_than_the_probes_block_is_learnt_by_the_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The probe parses small blocks; a file whose first line outgrows them is left to the pass that reads it,
    with the same table as an in-memory read, the day written again once its new column is learnt."""
    monkeypatch.setattr(ingest, "PROBE_BLOCK_BYTES", 4096)
    store = _landing(tmp_path / "landing")
    path = tmp_path / "landing" / "production" / DAY / "d.csv"
    pd.DataFrame({"item_id": ["q1", "q2"], "note": ["x" * 10_000, "short"]}).to_csv(path, index=False)
    whole = ingest.read_predictions(store, DAY)
    result, table = _written(store, tmp_path, 300)
    pd.testing.assert_frame_equal(table, pa.Table.from_pandas(whole.table, preserve_index=False).to_pandas())
    assert result.rows == 2602 and result.passes == 2 and table["note"].str.len().max() == 10_000
