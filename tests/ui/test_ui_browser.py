"""The dashboard in a real browser: Debian's chromium driven by Playwright, against `c4 ui` and `c4 demo`.

Screenshots of every page land in build/test-artifacts/ui/ (kept after the run, for a human to look at).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from testkit.procs import C4, free_port

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "build" / "test-artifacts" / "ui"
#: url path -> pattern the page's text must match for the filled collector (tables are canvases, so
#: the checks read headings, metrics, alerts and captions).
PAGES = {
    "": r"Active faults\s+[1-9]",
    # the chosen fault's recovery timeline line (tables are canvases): at least onset and detection
    "faults": r"(?s)(?=.*host1/mlx5_2p1)(?=.*Recovery timeline · onset ✓ → detected ✓)",
    "jobs": r"1 rank\(s\) blamed, [1-9]\d* only waited on a cause",
    # the pushed accounts (conftest.push_accounting): metrics, every panel's heading, the stage counts
    "goodput": r"(?s)ETTR\s+\d+\.\d%.*GPU-hours lost\s+\d.*ETTR over time.*Lost GPU-hours by cause.*"
    r"hung.*Worst faults by cost.*Recovery timeline.*Detected\s+[1-9]\d* of [1-9]",
    "bandwidth": r"Open NIC port faults: host1/mlx5_2p1",
    "collectives": r"Blamed connections",
    # the newest plan (the replan after a spine link died) and its job's history, both plans in it
    "traffic": r"(?s)Plan history.*2 plan\(s\) since.*link\(s\) had less than their nominal capacity",
    "sql": r"[1-9]\d* rows",
}


def wait_http_ok(url: str, timeout_s: float = 60.0) -> None:
    """Poll until the URL answers 200."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer")


@pytest.fixture(scope="module")
def browser():
    """A headless Debian chromium under Playwright."""
    assert CHROMIUM.exists(), "chromium missing: `make sysdeps` installs Debian's chromium"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-gpu"])
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def dashboard(filled_collector, tmp_path_factory):
    """`c4 ui` serving the dashboard for the twin-filled collector."""
    port = free_port()
    log = tmp_path_factory.mktemp("ui-server") / "ui.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            C4 + ["ui", "--collector", filled_collector.address, "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_http_ok(f"http://127.0.0.1:{port}/_stcore/health")
        yield f"http://127.0.0.1:{port}/"
    finally:
        proc.terminate()
        proc.wait(20)


def render(browser, url: str, screenshot: Path) -> str:
    """Load a page, wait for the script run and the charts, screenshot it; returns the page text."""
    page = browser.new_page(viewport={"width": 1500, "height": 2200})
    try:
        page.goto(url, wait_until="networkidle", timeout=60_000)
        page.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]', timeout=60_000)
        page.wait_for_selector('[data-testid="stMainBlockContainer"] h1', timeout=30_000)
        page.wait_for_load_state("networkidle")
        page.wait_for_timeout(1500)  # let Vega finish drawing before the screenshot
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(screenshot), full_page=True)
        exceptions = page.locator('[data-testid="stException"]').all_inner_texts()
        errors = page.locator('[data-testid="stAlertContentError"]').all_inner_texts()
        assert not exceptions, f"{url}: exception shown: {exceptions}"
        assert not errors, f"{url}: error shown: {errors}"
        return page.locator('[data-testid="stApp"]').inner_text()
    finally:
        page.close()


@pytest.mark.parametrize("path", list(PAGES))
def test_page_renders_in_chromium(path, browser, dashboard):
    text = render(browser, dashboard + path, ARTIFACTS / f"{path or 'overview'}.png")
    assert re.search(PAGES[path], text), f"/{path}: {PAGES[path]!r} not on the page:\n{text}"


def test_demo_starts_the_dashboard(browser, tmp_path):
    """`c4 demo` prints the dashboard URL; the page loads in the browser without errors."""
    proc = subprocess.Popen(
        C4
        + [
            "demo",
            "--workdir",
            str(tmp_path),
            "--listen",
            f"127.0.0.1:{free_port()}",
            "--ui-port",
            str(free_port()),
            "--nodes",
            "2",
            "--duration-s",
            "120",
            "--every-s",
            "60",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        url = None
        seen = []
        deadline = time.monotonic() + 90
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            seen.append(line)
            if m := re.search(r"dashboard at (http://\S+)", line):
                url = m.group(1)
        assert url, "".join(seen)
        wait_http_ok(url + "_stcore/health")
        text = render(browser, url, ARTIFACTS / "demo-overview.png")
        assert "Cluster overview" in text
        # C4P's benefit in the demo's words: the twin's ECMP overloads a spine link, its plan does not
        text = render(browser, url + "traffic", ARTIFACTS / "demo-traffic.png")
        m = re.search(
            r"Under ECMP, link (\S+) carries (\d+\.\d+) x what the plan puts on its busiest link", text
        )
        assert m, text
        assert "spine" in m.group(1) and float(m.group(2)) >= 1.5, m.groups()
        assert re.search(r"(?s)Plan history.*Job train: 1 plan\(s\) since", text), text
        assert "Links ECMP overloads, and the plan's load on them" in text
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_choosing_a_history_row_shows_that_plan(browser, dashboard):
    """A click on the first plan's row of the history table makes the picker (and the loads) follow it."""
    page = browser.new_page(viewport={"width": 1500, "height": 2200})
    try:
        page.goto(dashboard + "traffic", wait_until="networkidle", timeout=60_000)
        page.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]', timeout=60_000)
        page.wait_for_selector('[data-testid="stDataFrame"]', timeout=30_000)
        app = page.locator('[data-testid="stApp"]')
        assert "Plan plan-test-2 ·" in app.inner_text()  # the newest plan's caption
        history = page.locator('[data-testid="stDataFrame"]').first  # the first table on the page
        history.scroll_into_view_if_needed()
        box = history.bounding_box()
        assert box
        page.mouse.click(box["x"] + 12, box["y"] + 35 + 17)  # the selection cell of the first row (plan-test)
        page.wait_for_function(
            "() => document.querySelector('[data-testid=\"stApp\"]').innerText.includes('Plan plan-test ·')",
            timeout=30_000,
        )
        page.wait_for_selector('[data-testid="stApp"][data-test-script-state="notRunning"]', timeout=60_000)
        assert "Plan plan-test-2 ·" not in app.inner_text()
    finally:
        page.close()
