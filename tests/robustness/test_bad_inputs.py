"""Every kind of bad input, through the real stage scripts: one clear line, a non-zero exit, and the
stage's existing outputs left exactly as they were."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from tests.conftest import SHARED_DATA
from tests.helpers import PipelineRepo

GUARD = Path(__file__).resolve().parents[1] / "network_guard"
OUTPUTS = {  # what each stage writes, which a failed run must leave untouched
    "download": ["data/mnist/t10k-images-idx3-ubyte", "data/mnist/train-labels-idx1-ubyte"],
    "train": ["models/model.pt", "metrics/train.json", "plots/train/history.csv"],
    "evaluate": ["metrics/evaluate.json", "predictions/misclassified.json"],
    "explain": ["explanations/saliency.npz", "explanations/smoothgrad.npz", "explanations/gradcam.npz"],
    "quality": ["metrics/quality.json", "plots/quality/curves.json"],
    "report": ["reports/report.html"],
}

PARAM_CASES = [  # stage (and argument), params change, the message the one line must hold
    ("download", {"base": {"dataset": "cifar"}}, "base.dataset='cifar' is not allowed: choose one of mnist, "
                                                 "fashion-mnist"),
    ("train", {"train": {"epochs": 0}}, "train.epochs=0 is not allowed: it must be greater than 0"),
    ("train", {"train": {"epochs": -2}}, "train.epochs=-2 is not allowed: it must be greater than 0"),
    ("train", {"train": {"epochs": "many"}}, "train.epochs='many' is not allowed: expected a whole number"),
    ("train", {"train": {"lr": 0}}, "train.lr=0 is not allowed: it must be greater than 0"),
    ("train", {"train": {"lr": -0.1}}, "train.lr=-0.1 is not allowed: it must be greater than 0"),
    ("train", {"train": {"lr": "fast"}}, "train.lr='fast' is not allowed: expected a finite number"),
    ("train", {"train": {"batch_size": 0}}, "train.batch_size=0 is not allowed: it must be greater than 0"),
    ("train", {"train": {"batch_size": -64}}, "train.batch_size=-64 is not allowed: it must be greater than 0"),
    ("train", {"train": {"batch_size": "big"}}, "train.batch_size='big' is not allowed: expected a whole number"),
    ("train", {"train": {"epoch": 3}}, "unknown key train.epoch in params.yaml (a typo?): did you mean "
                                       "train.epochs?"),
    ("explain saliency", {"explain": {"n_images": 0}}, "explain.n_images=0 is not allowed: it must be greater than 0"),
    ("explain saliency", {"explain": {"n_images": -5}}, "explain.n_images=-5 is not allowed"),
    ("explain saliency", {"explain": {"n_images": "all"}}, "explain.n_images='all' is not allowed: expected a "
                                                           "whole number"),
    ("explain smoothgrad", {"explain": {"methods": {"smoothgrad": {"sigma": 0}}}},
     "explain.methods.smoothgrad.sigma=0 is not allowed: it must be greater than 0"),
    ("explain smoothgrad", {"explain": {"methods": {"smoothgrad": {"sigma": -0.15}}}},
     "explain.methods.smoothgrad.sigma=-0.15 is not allowed: it must be greater than 0"),
    ("explain smoothgrad", {"explain": {"methods": {"smoothgrad": {"sigma": "wide"}}}},
     "explain.methods.smoothgrad.sigma='wide' is not allowed: expected a finite number"),
    ("explain gradcm", {"explain": {"methods": {"gradcm": {}}}},
     "unknown attribution method 'gradcm' (did you mean 'gradcam'?): choose from saliency, smoothgrad"),
    ("explain gradcam", {"explain": {"methods": {"gradcam": {"layer": "relu9"}}}},
     "unknown layer 'relu9' for a CAM method: choose one of conv1, relu1, pool1, conv2, relu2"),
    ("quality", {"quality": {"deletion_step": 0}}, "quality.deletion_step=0 is not allowed: it must be greater than 0"),
    ("quality", {"quality": {"deletion_step": -28}}, "quality.deletion_step=-28 is not allowed"),
    ("quality", {"quality": {"deletion_step": "x"}}, "quality.deletion_step='x' is not allowed: expected a whole "
                                                     "number"),
    ("report", "empty methods", "explain.methods in params.yaml is empty: list at least one method"),
    ("train", "yaml syntax", "params.yaml is not valid YAML at line"),
]


@pytest.fixture(scope="module")
def repo(pipeline, tmp_path_factory) -> PipelineRepo:
    """A copy of the session pipeline, outputs included, to break things in."""
    path = tmp_path_factory.mktemp("bad-inputs") / "repo"
    shutil.copytree(pipeline.path, path, symlinks=True)
    return PipelineRepo(path=path, env=pipeline.env)


def fingerprint(repo: PipelineRepo, stage: str) -> dict[str, str]:
    return {name: hashlib.md5((repo.path / name).read_bytes()).hexdigest() for name in OUTPUTS[stage]}


def assert_one_line_failure(result, message: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and errors[0] == lines[-1], lines[-5:]
    assert message in errors[0], errors[0]


def run_stage(repo: PipelineRepo, stage: str, **kwargs):
    name, *args = stage.split()
    return repo.stage(name, *args, **kwargs)


@pytest.mark.parametrize("stage, change, message", PARAM_CASES,
                         ids=[f"{c[0]}-{str(c[1])[:40]}" for c in PARAM_CASES])
def test_bad_params(repo, stage, change, message):
    params_file = repo.path / "params.yaml"
    original = params_file.read_text()
    before = fingerprint(repo, stage.split()[0])
    try:
        if change == "yaml syntax":
            params_file.write_text(original.replace("train:\n", "train:\n  epochs: [5\n", 1))
        elif change == "empty methods":
            repo.update_params({"explain": {"methods": {}}}, replace_methods=True)
        else:
            repo.update_params(change)
        result = run_stage(repo, stage)
    finally:
        params_file.write_text(original)
    assert_one_line_failure(result, message)
    assert fingerprint(repo, stage.split()[0]) == before


def test_empty_methods_under_dvc_repro_fail_clearly(repo):
    original = (repo.path / "params.yaml").read_text()
    try:
        repo.update_params({"explain": {"methods": {}}}, replace_methods=True)
        result = repo.dvc("repro", check=False)
    finally:
        (repo.path / "params.yaml").write_text(original)
    assert result.returncode != 0
    assert "explain.methods in params.yaml is empty" in result.stderr


def _archives(folder: Path, source: Path, damage) -> Path:
    folder.mkdir()
    for archive in source.glob("*.gz"):
        (folder / archive.name).write_bytes(damage(archive.read_bytes()))
    return folder


@pytest.mark.parametrize("damage, message", [
    ("truncated", "EOFError"),
    ("wrong checksum", "checksum mismatch"),
])
def test_bad_archives_fail_the_download_and_keep_the_data(repo, tmp_path, damage, message):
    """Fashion-MNIST, so that no committed copy can rescue the download; the official mirror is refused
    by the network guard, as it would be offline."""
    if damage == "truncated":
        mirror = _archives(tmp_path / "bad", SHARED_DATA / "fashion-mnist", lambda b: b[: len(b) // 2])
    else:  # valid archives, wrong content: MNIST's files under Fashion-MNIST's names
        mirror = _archives(tmp_path / "bad", SHARED_DATA / "mnist", lambda b: b)
    original = (repo.path / "params.yaml").read_text()
    try:
        repo.update_params({"base": {"dataset": "fashion-mnist"}})
        result = repo.stage("download", env={"MNIST_XAI_MIRRORS": str(mirror), "PYTHONPATH": str(GUARD),
                                             "MNIST_XAI_NETWORK_LOG": str(tmp_path / "network.log")})
    finally:
        (repo.path / "params.yaml").write_text(original)
    assert_one_line_failure(result, "could not get a verified")
    assert message in result.stderr and str(mirror) in result.stderr and "MNIST_XAI_MIRRORS=" in result.stderr
    assert not (repo.path / "data/fashion-mnist").exists()  # nothing half-written


@pytest.mark.parametrize("target, make, message", [
    ("data/mnist/t10k-images-idx3-ubyte", lambda b: b"\x00\x00\x08\x07" + b[4:], "bad IDX magic number 0x00000807"),
    ("data/mnist/t10k-images-idx3-ubyte", lambda b: b[:-784], "IDX dimensions (10000, 28, 28) need 7840016 bytes "
                                                              "but the file has 7839232"),
    ("models/model.pt", None, "model file models/model.pt is missing: run the train stage"),
    ("models/model.pt", "other architecture", "does not match the MnistCNN architecture"),
    ("models/model.pt", "malicious pickle", "is not a loadable weights-only state_dict"),
], ids=["idx-magic", "idx-dimensions", "missing-model", "other-architecture", "malicious-pickle"])
def test_bad_files_fail_evaluate_and_keep_its_outputs(repo, target, make, message):
    before = fingerprint(repo, "evaluate")
    path = repo.path / target
    saved = path.read_bytes()
    try:
        if make is None:
            path.unlink()
        elif make == "other architecture":
            buffer = io.BytesIO()
            torch.save(torch.nn.Sequential(torch.nn.Linear(784, 10)).state_dict(), buffer)
            path.write_bytes(buffer.getvalue())
        elif make == "malicious pickle":
            buffer = io.BytesIO()
            torch.save({"conv1.weight": Exploit()}, buffer, pickle_module=pickle)
            path.write_bytes(buffer.getvalue())
        else:
            path.write_bytes(make(saved))
        result = repo.stage("evaluate")
    finally:
        path.write_bytes(saved)
    assert_one_line_failure(result, message)
    assert fingerprint(repo, "evaluate") == before
    assert not (repo.path / "pwned").exists()


class Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned",))

