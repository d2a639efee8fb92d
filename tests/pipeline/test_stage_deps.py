"""Correct by construction: every stage's deps cover the code it really runs, so a change to any module a stage
imports re-runs that stage (before, a change to the verdict rule left reports/report.html stale while `dvc repro`
said "up to date"). A stage's code dep is fingerprints/<script>.txt, which lists the files its script runs,
found by reading the code (mnist_xai.fingerprints). The stages of the real test pipeline record the mnist_xai
modules they loaded (MNIST_XAI_IMPORT_LOG); each must be listed in the stage's fingerprint, or be a declared dep,
or lie inside one."""

from __future__ import annotations

import json
from pathlib import PurePosixPath

import yaml

from tests.helpers import ran_stages


def loaded_modules(pipeline) -> dict[str, set[str]]:
    """stage -> the repository paths (src/mnist_xai/..., stages/...) of the code it loaded."""
    loaded: dict[str, set[str]] = {}
    for line in pipeline.import_log.read_text().splitlines():
        record = json.loads(line)
        files = {_repo_path(f) for f in record["modules"]} | {_repo_path(record["script"])}
        loaded.setdefault(record["stage"], set()).update(files)
    return loaded


def _repo_path(file: str) -> str:
    parts = PurePosixPath(file).parts
    for anchor in ("src", "stages"):
        if anchor in parts:
            return str(PurePosixPath(*parts[len(parts) - 1 - parts[::-1].index(anchor):]))
    raise AssertionError(f"{file} is neither under src/ nor stages/")


def declared_deps(pipeline) -> dict[str, list[str]]:
    """stage -> its deps in dvc.lock, each fingerprints/<script>.txt expanded into the files it lists."""
    stages = yaml.safe_load((pipeline.path / "dvc.lock").read_text())["stages"]
    declared = {}
    for name, stage in stages.items():
        deps = [dep["path"] for dep in stage.get("deps", [])]
        listed = [line.split("  ", 1)[1] for dep in deps if dep.startswith("fingerprints/")
                  for line in (pipeline.path / dep).read_text().splitlines()]
        declared[name] = deps + listed
    return declared


def uncovered(loaded: set[str], deps: list[str]) -> list[str]:
    """The loaded files that no dep names, either as the file itself or as a folder above it."""
    return sorted(f for f in loaded if not any(f == d or f.startswith(d.rstrip("/") + "/") for d in deps))


def test_every_stage_ran_and_recorded_its_imports(pipeline):
    from tests.conftest import PIPELINE_METHODS

    loaded = loaded_modules(pipeline)
    stages = {"fingerprints", "download", "train", "evaluate", "train_random_labels", "train_replicates", "train_decoy",
              "verdicts", "report"}
    assert set(loaded) == stages | {f"{kind}@{m}" for kind in ("explain", "quality") for m in PIPELINE_METHODS}
    assert set(loaded) <= set(declared_deps(pipeline))
    assert "src/mnist_xai/quality/verdict.py" in loaded["verdicts"]
    assert not any(f.startswith("src/mnist_xai/attribution/gradients") for f in loaded["verdicts"])  # no torch


def test_every_stage_declares_the_code_it_imports(pipeline):
    loaded, deps = loaded_modules(pipeline), declared_deps(pipeline)
    missing = {stage: uncovered(files, deps[stage]) for stage, files in loaded.items()}
    assert not any(missing.values()), {stage: files for stage, files in missing.items() if files}


def test_the_check_fails_when_a_dep_is_removed(pipeline):
    """The same check on dvc.lock with one dep taken out: the report stage without src/mnist_xai/quality/metrics.py
    (the table its verdict columns come from), and quality@saliency without the whole quality package."""
    loaded, deps = loaded_modules(pipeline), declared_deps(pipeline)
    report = [d for d in deps["report"] if d != "src/mnist_xai/quality/metrics.py"]
    assert uncovered(loaded["report"], report) == ["src/mnist_xai/quality/metrics.py"]
    scoring = [d for d in deps["quality@saliency"] if not d.startswith("src/mnist_xai/quality/")]
    assert "src/mnist_xai/quality/scoring.py" in uncovered(loaded["quality@saliency"], scoring)


def test_a_code_change_reruns_the_stages_that_run_it_and_no_other(pipeline):
    """The verdict rule changes: the fingerprints are re-made, and only the stage that runs quality/verdict.py
    re-runs (the fingerprints of the others come out the same); the report after it only if what it wrote
    changed."""
    module = pipeline.path / "src/mnist_xai/quality/verdict.py"
    original = module.read_text()
    try:
        module.write_text(original + "\n# a change\n")
        ran = ran_stages(pipeline.dvc("repro").stdout)
        assert ran[:2] == ["fingerprints", "verdicts"] and ran[2:] in ([], ["report"])
    finally:
        module.write_text(original)
        restored = pipeline.dvc("repro")  # the run cache may bring the previous outputs back instead
        assert set(ran_stages(restored.stdout)) <= {"fingerprints", "verdicts", "report"}
        assert "Data and pipelines are up to date" in pipeline.dvc("repro").stdout
