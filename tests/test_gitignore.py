"""Every output dvc.yaml declares is ignored by git: after `dvc repro` in a fresh clone, `git status` lists no
untracked output."""

from __future__ import annotations

import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def declared_outputs() -> list[str]:
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    paths = []
    for stage in stages.values():
        body = stage.get("do", stage)
        for kind in ("outs", "metrics", "plots"):
            for entry in body.get(kind) or []:
                path = next(iter(entry)) if isinstance(entry, dict) else entry
                paths.append(path.replace("${key}", "saliency").replace("${base.dataset}", "mnist"))
    return paths


def test_every_pipeline_output_is_ignored_by_git():
    paths = declared_outputs()
    assert "ground_truth/decoy.npz" in paths and "models/decoy" in paths
    result = subprocess.run(["git", "check-ignore", "--no-index", "-v", *paths], cwd=ROOT, capture_output=True,
                            text=True)
    ignored = {line.split("\t", 1)[1] for line in result.stdout.splitlines()}
    assert not set(paths) - ignored, f"not in .gitignore: {sorted(set(paths) - ignored)}"
