"""What each stage's fingerprint lists, read from the real code: precise enough that an edit re-runs only the
stages that run the edited file (tests/pipeline/test_stage_deps.py checks that it misses nothing a real stage
loads)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from mnist_xai import fingerprints

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def in_repository(monkeypatch):
    monkeypatch.chdir(ROOT)


def listed(script: str) -> set[str]:
    return {file.as_posix() for file in fingerprints.code_files(Path(f"stages/{script}.py"))}


def test_the_fingerprint_is_md5sum_format_of_the_files_listed():
    text = fingerprints.fingerprint(Path("stages/train.py"))
    for line in text.splitlines():
        md5, path = line.split("  ", 1)
        assert hashlib.md5(Path(path).read_bytes()).hexdigest() == md5
    assert {line.split("  ", 1)[1] for line in text.splitlines()} == listed("train")


def test_each_stage_depends_on_the_fingerprint_of_the_script_it_runs():
    """dvc.yaml: the fingerprints stage writes one file per stage script, and every other stage's one code dep
    is its own script's file (a stage wired to another script's fingerprint would miss its own code's edits)."""
    import yaml

    stages = yaml.safe_load(Path("dvc.yaml").read_text())["stages"]
    scripts = fingerprints.stage_scripts()
    assert "stages/fingerprints.py" not in {s.as_posix() for s in scripts}
    assert sorted(stages["fingerprints"]["outs"]) == [f"fingerprints/{s.stem}.txt" for s in scripts]
    for name, stage in stages.items():
        stage = stage.get("do", stage)  # foreach stages
        script = Path(stage["cmd"].split()[1])
        code = [dep for dep in stage["deps"] if dep.startswith(("fingerprints/", "src/", "stages"))]
        expected = ["stages", "src/mnist_xai"] if name == "fingerprints" else [f"fingerprints/{script.stem}.txt"]
        assert code == expected, name


def test_a_lazy_package_attribute_is_followed_only_by_who_asks_for_it():
    """attribution/__init__.py loads core.py (and torch) only when `attribute` is asked for: the download
    stage, which only checks params against the registry, does not run the methods' code."""
    download = listed("download")
    assert {"src/mnist_xai/attribution/__init__.py", "src/mnist_xai/attribution/registry.py"} <= download
    assert not any(f.startswith("src/mnist_xai/attribution/") and f.endswith(("core.py", "gradients.py"))
                   for f in download)
    assert "src/mnist_xai/model.py" not in download


def test_methods_loaded_by_name_are_listed_for_the_stages_that_attribute():
    """The registry names each implementation as text ("gradients:smoothgrad"): no import statement shows it."""
    for script in ("explain", "quality"):
        assert {"src/mnist_xai/attribution/gradients.py", "src/mnist_xai/attribution/cam.py",
                "src/mnist_xai/attribution/perturbation.py"} <= listed(script)


def test_templates_go_with_the_module_that_reads_them():
    assert "src/mnist_xai/report/report.html.j2" in listed("report")
    assert "src/mnist_xai/report/report.html.j2" not in listed("explain")  # it draws figures, builds no page
    assert "src/mnist_xai/report/figures.py" in listed("explain")


def test_the_stage_launcher_is_in_no_fingerprint():
    for script in fingerprints.stage_scripts():
        assert "src/mnist_xai/server.py" not in listed(script.stem)


def test_a_relative_import_is_refused_not_missed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "src/mnist_xai").mkdir(parents=True)
    (tmp_path / "src/mnist_xai/__init__.py").write_text("")
    (tmp_path / "src/mnist_xai/a.py").write_text("from . import b\n")
    (tmp_path / "stages").mkdir()
    (tmp_path / "stages/s.py").write_text("import mnist_xai.a\n")
    with pytest.raises(ValueError, match="relative imports"):
        fingerprints.code_files(Path("stages/s.py"))
