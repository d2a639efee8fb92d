"""Pages as a person sees them: headless Chromium (Debian's package) driven by Playwright. Screenshots go to
test-artifacts/. The `browser` fixture (conftest.py) launches it once per session."""

from __future__ import annotations

import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts"
SKIP_BROWSER = "MNIST_XAI_SKIP_BROWSER"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


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

    def images_and_layout(self) -> dict:
        """What every page check reads: the images (how many, which failed to load, which lack alt text) and
        how far the page overflows the window horizontally."""
        return self.page.evaluate("""() => {
            const images = Array.from(document.images);
            return {count: images.length,
                    broken: images.filter(i => !i.complete || i.naturalWidth === 0).map(i => i.alt),
                    missing_alt: images.filter(i => !i.alt.trim()).length,
                    overflow: document.documentElement.scrollWidth - window.innerWidth};
        }""")

    def external_requests(self) -> list[str]:
        """Requests that left the file: a self-contained page makes none."""
        return [url for url in self.requests if not url.startswith(("file://", "data:"))]

    def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / name
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def close(self):
        self.context.close()
