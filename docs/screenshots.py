"""Re-take the documentation's screenshots from this code's pages, so that a picture never shows older code.

    python docs/screenshots.py [--root PIPELINE] [--only report,explain,study]

Run it after a full `dvc repro` (and, for the study page, after `mnist-xai study`). It drives headless Chromium
(Playwright, the test extras) over:

- report.png: reports/report.html, scrolled to its first answer (which explanation to trust);
- explain.png: the page `mnist-xai explain` writes for a photo-like digit (MNIST test digit 0 redrawn dark on
  light at 300 x 300, made here from the pipeline's own data);
- study.png: reports/study.html, when it exists (a grid of experiments; see docs/study.md).

Each picture is recorded in docs/screenshots.json with the commit it was taken at and the MD5 of the code that
renders its page; the docs build (docs/hooks.py) warns about any picture whose code has changed since.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
RECORD = DOCS / "screenshots.json"
LIBRARY = ROOT / "src" / "mnist_xai"
# the code that decides how each page looks (its content is the pipeline's, and changes with every run)
RENDERERS = {
    "report.png": ("report/builder.py", "report/figures.py", "report/report.html.j2"),
    "explain.png": ("explain_page.py", "explain_page.html.j2", "user_image.py"),
    "study.png": ("study.py", "study.html.j2"),
}
VIEWPORT = {"report.png": (960, 1012), "explain.png": (1280, 900), "study.png": (1280, 900)}
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
log = logging.getLogger("screenshots")


def code_md5(name: str) -> str:
    """One MD5 over the files that render a screenshot's page, in a fixed order."""
    digest = hashlib.md5()
    for relative in RENDERERS[name]:
        digest.update(relative.encode() + b"\0" + (LIBRARY / relative).read_bytes() + b"\0")
    return digest.hexdigest()


def stale(record: dict) -> dict[str, str]:
    """{screenshot: why it no longer shows this code} for every recorded screenshot whose renderer changed, and
    every screenshot the docs show that has no record."""
    reasons = {}
    for name in RENDERERS:
        entry = record.get(name)
        if entry is None:
            reasons[name] = "no record of the code it was taken from"
        elif entry["code_md5"] != code_md5(name):
            reasons[name] = f"taken at {entry['commit']}; the code that renders its page has changed since"
    return reasons


def commit() -> str:
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "src"], cwd=ROOT, capture_output=True, text=True)
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def photo_of_a_digit(pipeline: Path, path: Path) -> None:
    """MNIST test digit 0 as a photo of ink on paper: inverted, 300 x 300."""
    from PIL import Image

    from mnist_xai.data import load_split

    images, _ = load_split(pipeline / "data" / "mnist", "test")
    Image.fromarray(255 - images[0]).resize((300, 300), Image.Resampling.LANCZOS).save(path)


def shoot(url: str, out: Path, size: tuple[int, int], anchor: str | None = None) -> None:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": size[0], "height": size[1]})
        page.goto(url, wait_until="load")
        if anchor:
            page.evaluate(f"document.querySelector({json.dumps(anchor)}).scrollIntoView(); window.scrollBy(0, -16)")
        page.screenshot(path=str(out))
        browser.close()


def take(name: str, pipeline: Path, out_dir: Path) -> bool:
    """Take one screenshot into out_dir; False (with a log line) when its page cannot be made here."""
    out = out_dir / name
    if name == "report.png":
        report = pipeline / "reports" / "report.html"
        if not report.exists():
            log.error("no %s: run `dvc repro` first", report)
            return False
        shoot(report.as_uri(), out, VIEWPORT[name], anchor="#trust")
    elif name == "explain.png":
        # run as a user would, from the pipeline's folder, so the page names `my-digit.png` and `models/model.pt`
        digit = pipeline / "my-digit.png"
        if digit.exists():
            log.error("%s exists: move it away first (the screenshot writes its own image there)", digit)
            return False
        with tempfile.TemporaryDirectory() as folder:
            page = Path(folder) / "explain.html"
            try:
                photo_of_a_digit(pipeline, digit)
                subprocess.run([sys.executable, "-m", "mnist_xai.cli", "explain", digit.name, "--out", str(page)],
                               check=True, cwd=pipeline)
            finally:
                digit.unlink(missing_ok=True)
            shoot(page.as_uri(), out, VIEWPORT[name])
    elif name == "study.png":
        study = pipeline / "reports" / "study.html"
        if not study.exists():
            log.warning("no %s (run a grid and `mnist-xai study`): study.png left as it is", study)
            return False
        shoot(study.as_uri(), out, VIEWPORT[name])
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=ROOT, help="the pipeline folder (default: this repository)")
    parser.add_argument("--only", default=",".join(RENDERERS), help="comma-separated: report.png,explain.png,...")
    parser.add_argument("--out", type=Path, default=DOCS, help="where the pictures and their record go (default: docs)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    names = [name if name.endswith(".png") else f"{name}.png" for name in args.only.split(",")]
    unknown = [name for name in names if name not in RENDERERS]
    if unknown:
        parser.error(f"unknown screenshot {', '.join(unknown)}: choose from {', '.join(RENDERERS)}")
    record_file = args.out / RECORD.name
    record = json.loads(record_file.read_text()) if record_file.exists() else {}
    taken = commit()
    for name in names:
        if take(name, args.root.resolve(), args.out):
            record[name] = {"commit": taken, "code_md5": code_md5(name)}
            log.info("%s: taken at %s", args.out / name, taken)
    record_file.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
