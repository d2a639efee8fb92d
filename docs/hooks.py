"""MkDocs hook: say out loud when a screenshot was taken from other code than the code being documented.

docs/screenshots.py records, for each screenshot, the MD5 of the code that renders its page. Here each record is
compared with the code as it is now, and a screenshot whose code has changed since is named in a warning line. It
warns and does not fail the build: re-taking a picture needs a full pipeline run, which CI does not make.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from screenshots import RECORD, stale  # noqa: E402  (docs/ is not a package)


def on_pre_build(config, **kwargs):
    record = json.loads(RECORD.read_text()) if RECORD.exists() else {}
    for name, reason in stale(record).items():
        print(f"WARNING  -  docs/{name} is stale ({reason}): re-take it with `python docs/screenshots.py`",
              file=sys.stderr)
