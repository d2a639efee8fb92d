"""Every kind of bad input, through the real stage scripts: one clear line, a non-zero exit, and the
stage's existing outputs left exactly as they were."""

from __future__ import annotations

import hashlib
import io
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import ARCHIVES
from tests.helpers import Exploit, PipelineRepo

GUARD = Path(__file__).resolve().parents[1] / "network_guard"
OUTPUTS = {  # what each stage writes, which a failed run must leave untouched
    "download": ["data/mnist/t10k-images-idx3-ubyte", "data/mnist/train-labels-idx1-ubyte"],
    "train": ["models/model.pt", "metrics/train.json", "plots/train/history.csv"],
    "evaluate": ["metrics/evaluate.json", "predictions/misclassified.json"],
    "explain": ["explanations/saliency.npz", "explanations/smoothgrad.npz", "explanations/gradcam.npz"],
    "train_decoy": ["models/decoy/decoy_0.pt", "models/decoy/no_reliance_0.pt", "metrics/decoy.json",
                    "ground_truth/decoy.npz"],
    "quality": ["quality/scores/saliency.npz", "metrics/quality/saliency.json"],
    "verdicts": ["metrics/quality.json", "quality/verdicts.json", "plots/quality/curves.json"],
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
     "layer 'relu9' is unknown for a CAM method: choose one of conv1, relu1, pool1, conv2, relu2, pool2"),
    ("quality saliency", {"quality": {"deletion_step": 0}}, "quality.deletion_step=0 is not allowed: it must be "
                                                            "greater than 0"),
    ("quality saliency", {"quality": {"deletion_step": -28}}, "quality.deletion_step=-28 is not allowed"),
    ("quality saliency", {"quality": {"deletion_step": "x"}}, "quality.deletion_step='x' is not allowed: expected a "
                                                              "whole number"),
    # a typo in any section stops every stage, in a fraction of a second
    ("download", {"quality": {"n_imagez": 3}}, "unknown key quality.n_imagez in params.yaml (a typo?): did you "
                                               "mean quality.n_images?"),
    ("train", {"train": {"lr": "1e-3x"}}, "train.lr='1e-3x' is not allowed: expected a finite number"),
    ("train", {"train": {"hidden": 100_000_000}}, "needs about"),
    ("train", {"base": {"seed": 2**70}}, "base.seed=1180591620717411303424 is not allowed: it must be at most "
                                         "2147483647"),
    *[(f"explain {method}", {"explain": {"methods": {method: {"layer": layer}}}},
       f"layer '{layer}' is not a spatial layer (its output is not a [N, K, h, w] feature map) for a CAM method: "
       "choose one of conv1, relu1, pool1, conv2, relu2, pool2")
      for method, layer in (("gradcam", "fc1"), ("gradcam", "flatten"), ("scorecam", "dropout"),
                            ("guided_gradcam", "relu3"), ("layercam", "fc2"))],
    ("explain smoothgrad", {"explain": {"methods": {"occlusion": {"stride": 5}}}},
     "explain.methods.occlusion.stride=5 is not allowed with window=4: a stride larger than the window leaves pixels "
     "that no patch covers"),
    ("explain smoothgrad", {"explain": {"methods": {"occlusion": {"stride": 30}}}},
     "explain.methods.occlusion.stride=30 is not allowed with window=4"),
    ("report", "empty methods", "explain.methods in params.yaml is empty: list at least one method"),
    ("train", "yaml syntax", "params.yaml is not valid YAML at line"),
    ("evaluate", "duplicate section", "params.yaml has the key 'train' twice"),
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
        elif change == "duplicate section":
            params_file.write_text(original + "train:\n  epochs: 3\n")
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
        repo.dvc("checkout")  # DVC removed the failed stage's outputs before running it: restore them
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
    """The repository under test commits no archives, so no copy can rescue the download; the official mirror
    is refused by the network guard, as it would be offline."""
    if damage == "truncated":
        mirror = _archives(tmp_path / "bad", ARCHIVES / "fashion-mnist", lambda b: b[: len(b) // 2])
    else:  # valid archives, wrong content: MNIST's files under Fashion-MNIST's names
        mirror = _archives(tmp_path / "bad", ARCHIVES / "mnist", lambda b: b)
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



@pytest.mark.parametrize("stage, target, damage, message", [
    ("explain saliency", "predictions/misclassified.json", b"{not json",
     "predictions/misclassified.json is corrupt (not valid JSON: "),
    ("explain saliency", "predictions/misclassified.json", b'{"indices": "all"}',
     "predictions/misclassified.json lacks its list of indices: re-make it with `dvc repro -f evaluate`"),
    ("quality saliency", "explanations/saliency.npz", "truncate",
     "explanations/saliency.npz is corrupt (BadZipFile: "),
    ("verdicts", "metrics/quality/gradcam.json", b"[1, 2",
     "metrics/quality/gradcam.json is corrupt (not valid JSON: "),
    ("report", "metrics/quality.json", b"",
     "metrics/quality.json is corrupt (not valid JSON: Expecting value: line 1 column 1 (char 0)); restore it with "
     "`dvc checkout metrics/quality.json` or re-make it with `dvc repro verdicts`"),
    ("report", "ground_truth/decoy.npz", None, "ground_truth/decoy.npz is missing; restore it with `dvc checkout "
                                               "ground_truth/decoy.npz` or re-make it with `dvc repro train_decoy`"),
], ids=["corrupt-misclassified", "misclassified-without-indices", "truncated-explanation", "invalid-method-quality",
        "empty-quality", "missing-ground-truth"])
def test_a_corrupt_input_file_names_itself_and_the_stage_that_remakes_it(repo, stage, target, damage, message):
    name = stage.split()[0]
    before = fingerprint(repo, name)
    path = repo.path / target
    saved = path.read_bytes()
    try:
        if damage is None:
            path.unlink()
        elif damage == "truncate":
            path.write_bytes(saved[: len(saved) // 2])
        else:
            path.write_bytes(damage)
        result = run_stage(repo, stage)
    finally:
        path.write_bytes(saved)
    assert_one_line_failure(result, message)
    assert fingerprint(repo, name) == before


def test_asking_for_more_images_than_exist_warns_once_and_records_what_was_used(repo):
    """explain.n_images: 20000 was silently clamped to the 10,000 test images while MLflow recorded 20000."""
    from mlflow.tracking import MlflowClient

    original = (repo.path / "params.yaml").read_text()
    saved = (repo.path / "explanations/random.npz").read_bytes()
    try:
        repo.update_params({"explain": {"n_images": 20000}})
        result = repo.stage("explain", "random")
        maps = np.load(repo.path / "explanations/random.npz")["maps"]
    finally:
        (repo.path / "params.yaml").write_text(original)
        (repo.path / "explanations/random.npz").write_bytes(saved)
    assert result.returncode == 0, result.stderr[-2000:]
    warnings = [line for line in result.stderr.splitlines() if "asks for more than" in line]
    assert warnings == ["WARNING params: explain.n_images=20000 asks for more than the 10000 test images: using 10000"]
    assert maps.shape == (10000, 28, 28)
    client = MlflowClient(f"sqlite:///{repo.path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("mnist-xai").experiment_id],
                              "tags.dvc_stage = 'explain@random'", order_by=["attributes.start_time DESC"])
    assert runs[0].data.params["n_images"] == "10000" and runs[0].data.params["n_images_requested"] == "20000"


def test_scoring_more_images_than_were_explained_warns_and_records_what_was_used(repo):
    """quality.n_images above explain.n_images was clamped in silence."""
    from mlflow.tracking import MlflowClient

    outputs = [repo.path / "quality/scores/random.npz", repo.path / "metrics/quality/random.json"]
    original, saved = (repo.path / "params.yaml").read_text(), [path.read_bytes() for path in outputs]
    explained = len(np.load(repo.path / "explanations/random.npz")["maps"])
    try:
        repo.update_params({"quality": {"n_images": explained + 30}})
        result = repo.stage("quality", "random")
    finally:
        (repo.path / "params.yaml").write_text(original)
        for path, content in zip(outputs, saved, strict=True):
            path.write_bytes(content)
    assert result.returncode == 0, result.stderr[-2000:]
    warnings = [line for line in result.stderr.splitlines() if "asks for more than" in line]
    assert warnings == [f"WARNING params: quality.n_images={explained + 30} asks for more than the {explained} "
                        f"explained images: using {explained}"]
    client = MlflowClient(f"sqlite:///{repo.path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("mnist-xai").experiment_id],
                              "tags.dvc_stage = 'quality@random'", order_by=["attributes.start_time DESC"])
    assert runs[0].data.params["n_images"] == str(explained)


@pytest.mark.parametrize("variable, value, message", [
    ("MLFLOW_TRACKING_URI", "garbage", "MLFLOW_TRACKING_URI='garbage' is not a tracking URI: give a server "
                                      "(http://host:5000), a database"),
    ("MNIST_XAI_STORE_LOCK_TIMEOUT", "abc", "MNIST_XAI_STORE_LOCK_TIMEOUT='abc' is not allowed: give a number of "
                                           "seconds (default 60)"),
])
def test_a_bad_tracking_setting_is_one_clear_line(repo, variable, value, message):
    before = fingerprint(repo, "evaluate")
    result = repo.stage("evaluate", env={variable: value})
    assert_one_line_failure(result, message)
    assert fingerprint(repo, "evaluate") == before


def test_a_full_disk_while_writing_the_report_is_one_line_and_the_old_report_survives(repo, tmp_path):
    """A real full disk: reports/ becomes a 256 kB filesystem (tmpfs, which needs root: CI runs as root) that
    holds the previous report's first bytes only; the stage cannot write the new one."""
    import os
    import subprocess

    if os.geteuid() != 0:
        pytest.skip("mounting a small filesystem needs root (CI runs the suite as root)")
    reports = repo.path / "reports"
    saved = (reports / "report.html").read_bytes()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(reports)], check=True)
    try:
        (reports / "report.html").write_bytes(saved[:100_000])  # what "the old report" is, on this small disk
        result = repo.stage("report")
        survived = (reports / "report.html").read_bytes()
        leftovers = [p.name for p in reports.iterdir() if p.name != "report.html"]
    finally:
        subprocess.run(["umount", str(reports)], check=True)
    assert_one_line_failure(result, "cannot access reports/report.html: No space left on device; free disk space")
    assert survived == saved[:100_000] and leftovers == []
    assert (reports / "report.html").read_bytes() == saved
