"""The README stays short and its links lead somewhere; the docs' screenshots come from this code's pages.
(The site itself is built with --strict by `./dev.sh docs`, which CI runs: broken links, anchors and pages
left out of the navigation fail that build.)"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
sys.path.insert(0, str(DOCS))

import screenshots  # noqa: E402  (docs/screenshots.py)


def test_readme_is_short_with_the_two_commands_on_its_first_screen():
    text = README.read_text()
    assert len(text.encode()) <= 10_000
    first_screen = "\n".join(text.splitlines()[:40])
    assert "./dev.sh repro" in first_screen and "./dev.sh test" in first_screen


def test_readme_carries_no_commit_hashes_or_dated_measurements():
    text = README.read_text()
    assert not re.findall(r"\b(?:at|commit) [0-9a-f]{7,40}\b", text)
    assert not re.findall(r"\b20\d\d-\d\d-\d\d\b", text)


def test_every_relative_link_in_the_readme_and_docs_leads_to_a_file():
    broken = []
    for page in [README, *DOCS.glob("*.md")]:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            if not (page.parent / target.split("#")[0]).exists():
                broken.append(f"{page.name}: {target}")
    assert broken == []


def test_every_page_is_in_the_navigation_and_every_entry_is_a_page():
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    listed = {next(iter(entry.values())) for entry in config["nav"]}
    pages = {path.name for path in DOCS.glob("*.md")}
    assert listed == pages


def test_a_screenshot_whose_page_code_changed_is_reported_stale():
    current = {name: {"commit": "abc1234", "code_md5": screenshots.code_md5(name)} for name in screenshots.RENDERERS}
    assert screenshots.stale(current) == {}
    changed = {**current, "report.png": {"commit": "abc1234", "code_md5": "0" * 32}}
    assert set(screenshots.stale(changed)) == {"report.png"}
    assert set(screenshots.stale({})) == set(screenshots.RENDERERS)


def test_screenshots_are_taken_from_a_real_pipeline_run(pipeline, browser, tmp_path):
    """docs/screenshots.py on the small pipeline: the report and the explain page, each recorded with the code
    that rendered it (run in its own process: Playwright's sync API runs one instance per thread)."""
    subprocess.run([sys.executable, str(DOCS / "screenshots.py"), "--root", str(pipeline.path), "--out", str(tmp_path),
                    "--only", "report,explain"], check=True, cwd=ROOT, env=pipeline.env, timeout=300)
    from PIL import Image

    for name in ("report.png", "explain.png"):
        assert Image.open(tmp_path / name).size == screenshots.VIEWPORT[name]
    record = json.loads((tmp_path / "screenshots.json").read_text())
    assert set(record) == {"report.png", "explain.png"}
    assert screenshots.stale(record).keys() == {"study.png"}  # not taken: no study page in this pipeline
