"""The Dagster UI in a real headless Chromium.

`dagster dev` starts on a seeded demo landing zone; the browser finds the assets, launches a
materialization of one partition from the asset page, waits for the run to succeed, and reads
the asset's metadata and check. Screenshots go to test-output/; the process group is gone after.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO, free_port

from labelops.storage import LocalStore

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOTS = REPO / "test-output"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def dagster_dev(demo_landing: LocalStore, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """`dagster dev` in its own process group; SIGINT to the whole group on the way out."""
    port = free_port()
    home = tmp_path / "home"
    home.mkdir()
    env = dict(
        os.environ,
        LABELOPS_LANDING=str(demo_landing.root),
        LABELOPS_WAREHOUSE=str(tmp_path / "wh"),
        DAGSTER_HOME=str(home),
        LABELOPS_START_DATE="2024-06-01",
    )
    log = (tmp_path / "dagster-dev.log").open("w")
    process = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "dagster"),
            "dev",
            "-w",
            "workspace.yaml",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                with urllib.request.urlopen(f"{url}/server_info", timeout=2):
                    break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        "dagster dev did not start:\n" + (tmp_path / "dagster-dev.log").read_text()[-3000:]
                    ) from None
                time.sleep(1)
        yield url, tmp_path / "wh"
    finally:
        pgid = process.pid
        if group_alive(pgid):
            os.killpg(pgid, signal.SIGINT)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(pgid, signal.SIGKILL)
            process.wait(timeout=10)
        deadline = time.monotonic() + 30
        while group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.5)
        leftover = group_alive(pgid)
        if leftover:
            os.killpg(pgid, signal.SIGKILL)
        log.close()
        assert not leftover, "dagster dev left processes behind after SIGINT"


def dismiss_newsletter(page) -> None:
    """Dagster shows a newsletter dialog on a fresh instance, a few seconds after load; close it if it comes."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.get_by_role("button", name="Skip").click(timeout=8_000)
    except PlaywrightTimeout:
        pass


def browser_page(playwright):
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    return browser, browser.new_page(viewport={"width": 1600, "height": 1000})


def wait_for_text(page, url: str, text: str, timeout_s: float = 180) -> None:
    """Reload ``url`` until ``text`` shows: run status is polled by the UI, a reload makes it deterministic."""
    deadline = time.monotonic() + timeout_s
    while True:
        page.goto(url, wait_until="domcontentloaded")
        try:
            page.get_by_text(text, exact=True).first.wait_for(timeout=5_000)
            return
        except Exception:
            if time.monotonic() > deadline:
                page.screenshot(path=str(SCREENSHOTS / "timeout.png"))
                raise


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is installed by `make test`")
def test_launch_one_partition_from_the_ui_and_read_its_metadata(dagster_dev: tuple[str, Path]) -> None:
    from playwright.sync_api import sync_playwright

    url, warehouse = dagster_dev
    day = "2024-06-10"
    SCREENSHOTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser, page = browser_page(playwright)
        try:
            page.goto(f"{url}/locations/labelops/asset-groups/ingest", wait_until="domcontentloaded")
            page.get_by_text("item_catalog", exact=True).first.wait_for(timeout=60_000)
            dismiss_newsletter(page)
            page.screenshot(path=str(SCREENSHOTS / "asset-graph-ingest.png"))
            page.get_by_role("tab", name="List").click()  # the graph draws only what is in view; the list has all
            for name in ("label_exports", "item_catalog", "gold_labels", "production_predictions"):
                page.get_by_text(name, exact=True).first.wait_for(timeout=60_000)

            page.goto(f"{url}/assets/item_catalog", wait_until="domcontentloaded")
            page.get_by_text("team:data-platform", exact=False).or_(
                page.get_by_text("data-platform", exact=True)
            ).first.wait_for(timeout=60_000)
            page.get_by_role("button", name="Materialize…").click(timeout=60_000)
            dialog = page.get_by_role("dialog")
            dialog.get_by_text("Show all partitions").click()  # demo days are older than the default 90-day window
            selection = dialog.get_by_role("textbox").first
            selection.fill(day)
            selection.press("Enter")
            dialog.get_by_text("Backfills all partitions in a single run.").wait_for(timeout=30_000)
            page.screenshot(path=str(SCREENSHOTS / "launch-one-partition.png"))
            dialog.get_by_role("button", name="Launch 1 run").click()
            page.get_by_text("Launched run").first.wait_for(timeout=60_000)

            wait_for_text(page, f"{url}/runs", "Success")
            page.screenshot(path=str(SCREENSHOTS / "runs.png"))
            assert (warehouse / "tables" / "item_catalog" / f"{day}.parquet").is_file()

            wait_for_text(page, f"{url}/assets/item_catalog?view=events&partition={day}", "dagster/row_count")
            for shown in ("file_ledger", "files_rejected", "slice_columns", f"items/{day}/items.csv"):
                page.get_by_text(shown).first.wait_for(timeout=30_000)
            page.screenshot(path=str(SCREENSHOTS / "asset-metadata.png"))

            page.goto(f"{url}/assets/item_catalog?view=checks", wait_until="domcontentloaded")
            page.get_by_text("Every landing file of the day was read.").first.wait_for(timeout=60_000)
            page.get_by_text("Passed").first.wait_for(timeout=60_000)
            page.screenshot(path=str(SCREENSHOTS / "asset-checks.png"))
        finally:
            browser.close()
