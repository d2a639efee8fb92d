"""The report as a person sees it, in headless Chromium (see tests/browser.py)."""

from __future__ import annotations

import pytest

from tests.browser import Visit


@pytest.fixture(scope="module")
def report_url(pipeline) -> str:
    return (pipeline.path / "reports/report.html").as_uri()


@pytest.mark.parametrize("width", [1280, 390])
def test_page_renders_with_no_network_no_errors_and_fits(browser, report_url, width):
    visit = Visit(browser, report_url, width)
    try:
        page = visit.images_and_layout()
        count, broken, missing_alt, overflow = page["count"], page["broken"], page["missing_alt"], page["overflow"]
        visit.screenshot(f"report-{width}px.png")
    finally:
        visit.close()
    assert count > 50 and broken == [], broken[:5]
    assert visit.console_errors == []
    external = visit.external_requests()
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
