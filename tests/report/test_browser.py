"""The report as a person sees it, in headless Chromium (Debian's package) driven by Playwright.
Screenshots go to test-artifacts/."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import ROOT

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts"
SKIP_BROWSER = "MNIST_XAI_SKIP_BROWSER"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).is_file():
        message = "Chromium is not installed (apt-get install chromium; ./dev.sh test does it as root)"
        if os.environ.get(SKIP_BROWSER) == "1":
            pytest.skip(message)
        pytest.fail(f"{message}; set {SKIP_BROWSER}=1 to skip the browser tests knowingly")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield launched
        launched.close()


class Visit:
    """One page load with everything the page did recorded."""

    def __init__(self, browser, url: str, width: int, javascript: bool = True):
        self.context = browser.new_context(viewport={"width": width, "height": 900}, java_script_enabled=javascript)
        self.page = self.context.new_page()
        self.console_errors, self.requests, self.dialogs = [], [], []
        self.page.on("console", lambda m: self.console_errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.console_errors.append(str(e)))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        self.page.goto(url, wait_until="load")

    def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / name
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def close(self):
        self.context.close()


@pytest.fixture(scope="module")
def report_url(pipeline) -> str:
    return (pipeline.path / "reports/report.html").as_uri()


@pytest.mark.parametrize("width", [1280, 390])
def test_page_renders_with_no_network_no_errors_and_fits(browser, report_url, width):
    visit = Visit(browser, report_url, width)
    try:
        broken = visit.page.evaluate(
            "Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0).map(i => i.alt)")
        count = visit.page.evaluate("document.images.length")
        overflow = visit.page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        missing_alt = visit.page.evaluate("Array.from(document.images).filter(i => !i.alt.trim()).length")
        visit.screenshot(f"report-{width}px.png")
    finally:
        visit.close()
    assert count > 50 and broken == [], broken[:5]
    assert visit.console_errors == []
    external = [url for url in visit.requests if not url.startswith(("file://", "data:"))]
    assert external == [], external
    assert overflow <= 0, f"{overflow}px of horizontal scroll at {width}px"
    assert missing_alt == 0


def test_clicking_a_column_heading_sorts_the_table(browser, report_url):
    visit = Visit(browser, report_url, 1280)
    try:
        def column(index):
            return visit.page.eval_on_selector_all(
                "#quality-table tbody tr", f"rows => rows.map(r => r.cells[{index}].dataset.value)")
        heading = visit.page.locator("#quality-table th", has_text="Deletion AUC")
        headings = visit.page.eval_on_selector_all("#quality-table th", "ths => ths.map(th => th.textContent)")
        index = next(i for i, text in enumerate(headings) if "Deletion AUC" in text)
        heading.click()
        ascending = [float(v) for v in column(index)]
        assert heading.get_attribute("aria-sort") == "ascending"
        heading.click()
        descending = [float(v) for v in column(index)]
        methods = visit.page.eval_on_selector_all("#quality-table tbody tr",
                                                  "rows => rows.map(r => r.cells[0].textContent)")
        visit.screenshot("report-sorted.png")
    finally:
        visit.close()
    assert ascending == sorted(ascending) and descending == sorted(ascending, reverse=True)
    assert len(set(ascending)) > 1 and methods[0] != "" and visit.console_errors == []


def test_readable_without_javascript(browser, report_url):
    visit = Visit(browser, report_url, 1280, javascript=False)
    try:
        headings = visit.page.eval_on_selector_all("h2", "hs => hs.map(h => h.textContent.trim())")
        decoded = visit.page.evaluate("Array.from(document.images).every(i => i.naturalWidth > 0)")
        rows = visit.page.locator("#quality-table tbody tr").count()
    finally:
        visit.close()
    assert "Summary" in headings and "Method gallery" in headings and decoded and rows > 0


def test_heading_structure(browser, report_url):
    visit = Visit(browser, report_url, 1280)
    try:
        levels = visit.page.eval_on_selector_all("h1, h2, h3, h4", "hs => hs.map(h => Number(h.tagName[1]))")
    finally:
        visit.close()
    assert levels[0] == 1 and levels.count(1) == 1
    assert all(b - a <= 1 for a, b in zip(levels, levels[1:], strict=False)), levels  # no skipped levels


def test_injected_script_renders_as_text_in_the_browser(browser, tmp_path):
    from mnist_xai.report import build_report
    from tests.report.test_builder import EVIL, make_inputs

    page_file = tmp_path / "evil.html"
    page_file.write_text(build_report(make_inputs(class_names=[f"{EVIL}{c}" for c in range(10)],
                                                  git={"git_commit": EVIL, "git_dirty": "false"})))
    visit = Visit(browser, page_file.as_uri(), 1280)
    try:
        pwned = visit.page.evaluate("window.pwned === undefined")
        text = visit.page.inner_text("body")
    finally:
        visit.close()
    assert pwned and visit.dialogs == []
    assert "<script>window.pwned" in text  # shown to the reader as the literal text it is
