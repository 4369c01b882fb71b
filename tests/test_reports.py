"""HTML reports: self-contained, every piece of vendor text escaped, hostile labels stay text — in a real run."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
from dagster import DagsterInstance, materialize

from labelops import plots
from labelops.report import Report

REPO = Path(__file__).resolve().parents[1]
HOSTILE = ["<script>alert(1)</script>", "<img src=x onerror=alert(2)>", "$\\frac{a}{$", "\"'><svg/onload=alert(3)>"]


class Elements(HTMLParser):
    """Every element and attribute the browser would build."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def elements(document: str) -> list[tuple[str, dict[str, str | None]]]:
    parser = Elements()
    parser.feed(document)
    return parser.tags


def assert_inert(document: str) -> None:
    tags = elements(document)
    assert not [t for t, _ in tags if t in {"script", "svg", "iframe", "object", "embed"}]
    assert not [a for _, attrs in tags for a in attrs if a.startswith("on")]
    assert all(attrs["src"].startswith("data:image/png;base64,") for t, attrs in tags if t == "img")
    assert "Content-Security-Policy" in document and "default-src 'none'" in document


def test_report_escapes_text_tables_and_attributes() -> None:
    report = Report(HOSTILE[0], HOSTILE[1])
    report.section(HOSTILE[2])
    report.facts({HOSTILE[3]: HOSTILE[0]})
    report.table(pd.DataFrame({HOSTILE[1]: HOSTILE, "n": range(4)}))
    report.link(HOSTILE[3], HOSTILE[3])
    report.image(plots.confidence_histogram(pd.Series([0.2, 0.9]), threshold=0.7), HOSTILE[3])
    document = report.html()
    assert_inert(document)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in document


def test_plots_draw_hostile_labels_as_text() -> None:
    scores = pd.DataFrame(
        {
            "annotator_id": HOSTILE,
            "estimated_accuracy": [0.9, 0.8, 0.7, 0.6],
            "agreement_with_consensus": [0.9, 0.8, 0.7, 0.6],
            "flagged": [False, False, True, True],
        }
    )
    intervals = pd.DataFrame({"name": HOSTILE, "value": [0.5] * 4, "ci_low": [0.4] * 4, "ci_high": [0.6] * 4})
    drift = pd.DataFrame(
        {
            "feature": HOSTILE,
            "method": "ks",
            "statistic": 0.2,
            "p_value": [0.01, 0.5, None, None],
            "threshold": [0.05, 0.05, 0.1, 0.1],
            "drifted": [True, False, True, False],
        }
    )
    for png in (
        plots.annotator_scores(scores),
        plots.intervals(intervals, title=HOSTILE[2]),
        plots.drift_by_feature(drift),
        plots.split_classes(
            pd.crosstab(pd.Series(HOSTILE, name="label"), pd.Series(["train", "val", "test", "train"], name="split"))
        ),
    ):
        assert png.startswith(b"\x89PNG")


def test_hostile_labels_in_a_real_run_reach_the_report_as_text(tmp_path: Path) -> None:
    """A vendor file whose labels and annotator ids are markup goes through every asset into both reports."""
    from pipelines.definitions import NIGHTLY_ASSETS, defs
    from resources import build_resources
    from resources.settings import Settings

    day = "2024-06-03"
    landing = tmp_path / "landing"
    (landing / "items" / day).mkdir(parents=True)
    (landing / "exports" / day).mkdir(parents=True)
    (landing / "items" / day / "items.csv").write_text(
        "item_id,uri,width,height,lighting\n"
        + "".join(f"img-{n},s3://b/{n}.jpg,1920,1080,{HOSTILE[n % 4].replace(',', ' ')}\n" for n in range(30))
    )
    rows = "".join(
        f'img-{n % 30},"{HOSTILE[a]}",{["car", "pedestrian"][(n + a) % 2]},{10 + n},20,60,40\n'
        for n in range(60)
        for a in range(3)
    )
    (landing / "exports" / day / "vendor.csv").write_text("item_id,annotator_id,label,x,y,w,h\n" + rows)
    settings = Settings(
        landing=str(landing),
        warehouse=str(tmp_path / "wh"),
        s3_endpoint_url=None,
        config_dir=str(REPO / "config"),
        start_date="2024-01-01",
    )
    result = materialize(
        list(defs.assets),
        selection=NIGHTLY_ASSETS,
        partition_key=day,
        resources=build_resources(settings),
        instance=DagsterInstance.ephemeral(),
    )
    assert result.success
    quality = (tmp_path / "wh" / "reports" / "quality" / f"{day}.html").read_text()
    snapshot = (tmp_path / "wh" / "reports" / "snapshots" / "v0001.html").read_text()
    for document in (quality, snapshot):
        assert_inert(document)
    assert "&lt;img src=x onerror=alert(2)&gt;" in quality  # the annotator id, shown as text
