"""The embedded MLflow store of the session pipeline: one run per stage, tags, batches, the model."""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from mnist_xai import tracking
from mnist_xai.model import load_model
from tests.conftest import PIPELINE_METHODS


@pytest.fixture(scope="module")
def client(pipeline):
    return MlflowClient(f"sqlite:///{pipeline.path / 'mlflow.db'}")


@pytest.fixture(scope="module")
def runs(client):
    experiment = client.get_experiment_by_name("mnist-xai")
    assert experiment.artifact_location.endswith("/mlruns")  # absolute, at the repository root
    return client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])


def by_stage(runs, stage):
    return [run for run in runs if run.data.tags.get("dvc_stage") == stage]


def test_dvc_lock_hashes_match_the_tags(pipeline, runs):
    lock = yaml.safe_load((pipeline.path / "dvc.lock").read_text())["stages"]
    data_md5 = lock["download"]["outs"][0]["md5"]
    model_md5 = next(out["md5"] for out in lock["train"]["outs"] if out["path"] == "models/model.pt")
    assert tracking.dir_md5(pipeline.path / "data/mnist") == data_md5
    train = by_stage(runs, "train")[0]
    assert train.data.tags["data_md5"] == data_md5 and train.data.tags["model_md5"] == model_md5


def test_one_finished_run_per_stage_with_the_shared_tags(pipeline, runs):
    stages = ["train", "evaluate", "train_random_labels", "train_replicates", "train_decoy", "verdicts", "report"] + [
        f"{kind}@{m}" for kind in ("explain", "quality") for m in PIPELINE_METHODS]
    commit = pipeline.git("rev-parse", "HEAD").stdout.strip()
    for stage in stages:
        found = by_stage(runs, stage)
        assert found, f"no MLflow run for {stage}"
        run = found[0]
        assert run.info.status == "FINISHED"
        assert run.data.tags["git_commit"] == commit and run.data.tags["git_dirty"] in ("true", "false")
        assert run.info.run_name == stage
    model_md5 = by_stage(runs, "train")[0].data.tags["model_md5"]
    for stage in ["evaluate", "report"] + [f"{kind}@{m}" for kind in ("explain", "quality")
                                                         for m in PIPELINE_METHODS]:
        assert by_stage(runs, stage)[0].data.tags["model_md5"] == model_md5  # the shared tag that groups them
    assert by_stage(runs, "explain@gradcam")[0].data.tags["method"] == "gradcam"


def test_train_run_has_params_epoch_metrics_and_a_registered_model(pipeline, client, runs):
    run = by_stage(runs, "train")[0]
    assert run.data.params["train.epochs"] == "1" and run.data.params["base.dataset"] == "mnist"
    history = client.get_metric_history(run.info.run_id, "test_accuracy")
    assert [m.step for m in history] == [1]
    assert run.data.metrics["final_test_accuracy"] == json.loads(
        (pipeline.path / "metrics/train.json").read_text())["test_accuracy"]
    versions = client.search_model_versions("name = 'mnist-xai-cnn'")
    assert any(v.run_id == run.info.run_id for v in versions)


def test_logged_model_loads_back_and_predicts_any_batch_size(pipeline, runs, explain_inputs):
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{pipeline.path / 'mlflow.db'}"
    try:
        logged = mlflow.pytorch.load_model(f"runs:/{by_stage(runs, 'train')[0].info.run_id}/model")
    finally:
        del os.environ["MLFLOW_TRACKING_URI"]
    reference = load_model(pipeline.path / "models/model.pt")
    x, _ = explain_inputs
    for batch in (1, 3, 64):
        with torch.no_grad():
            torch.testing.assert_close(logged(x[:batch].contiguous()), reference(x[:batch]), rtol=1e-4, atol=1e-4)


def test_explain_and_report_runs_carry_their_artifacts(pipeline, client, runs, tmp_path):
    explain = by_stage(runs, "explain@saliency")[0]
    assert {"saliency.png", "maps"} <= {a.path for a in client.list_artifacts(explain.info.run_id)}
    maps = client.download_artifacts(explain.info.run_id, "maps/saliency.npz", str(tmp_path))
    assert Path(maps).read_bytes() == (pipeline.path / "explanations/saliency.npz").read_bytes()
    assert explain.data.metrics["images_per_second"] > 0 and explain.data.params["method"] == "saliency"
    report = by_stage(runs, "report")[0]
    assert {a.path for a in client.list_artifacts(report.info.run_id)} == {"report.html"}


def test_report_links_the_run_behind_each_file(pipeline, client):
    html = (pipeline.path / "reports/report.html").read_text()
    table = html[html.index('id="provenance-table"'):]
    rows = re.findall(r"<tr><td>([^<]+)</td><td><code>([^<]+)</code></td><td><code>[0-9a-f]+</code></td>"
                      r"<td><code>([0-9a-f]+)</code></td></tr>", table[:table.index("</table>")])
    stages = {"train", "evaluate", "train_random_labels", "train_replicates", "train_decoy", "verdicts"}
    assert {stage for stage, _, _ in rows} == stages | {f"{kind}@{m}" for kind in ("explain", "quality")
                                                        for m in PIPELINE_METHODS}
    for stage, file, run_id in rows:
        run = client.get_run(run_id)
        assert run.data.tags["dvc_stage"] == stage
        assert run.data.tags["output_md5"] == tracking.file_md5(pipeline.path / file)


def test_unreachable_tracking_server_fails_fast_before_training(pipeline):
    before = (pipeline.path / "models/model.pt").read_bytes()
    started = time.monotonic()
    result = subprocess.run([sys.executable, "stages/train.py"], cwd=pipeline.path, capture_output=True, text=True,
                            env={**pipeline.env, "MLFLOW_TRACKING_URI": "http://127.0.0.1:9"}, timeout=60)
    elapsed = time.monotonic() - started
    assert result.returncode == 2 and elapsed < 10, (result.returncode, elapsed)
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and "MLflow tracking server http://127.0.0.1:9 is unreachable" in errors[0]
    assert "train:" not in result.stderr  # no training started
    assert (pipeline.path / "models/model.pt").read_bytes() == before


def test_metric_names_are_stable_for_dvc_comparisons(pipeline):
    shown = json.loads(pipeline.dvc("metrics", "show", "--json").stdout)
    metrics = next(iter(shown.values()))["data"]
    assert metrics["metrics/evaluate.json"]["data"]["accuracy"] > 0
    assert set(metrics["metrics/quality.json"]["data"]["methods"]) == set(PIPELINE_METHODS)
    assert np.isfinite(metrics["metrics/train.json"]["data"]["test_accuracy"])


def test_a_copied_repository_writes_its_artifacts_only_into_itself(pipeline, tmp_path):
    """The embedded store records the experiment's artifact location as an absolute path: a copy of the
    repository, store included, wrote its artifacts into the original's mlruns/. Now the copy says so in one
    line and writes into its own."""
    import shutil

    def listing(root: Path) -> set[str]:
        return {str(p.relative_to(root)) for p in (root / "mlruns").rglob("*")}

    copy = tmp_path / "copy"
    shutil.copytree(pipeline.path, copy, symlinks=True)
    original_before, copy_before = listing(pipeline.path), listing(copy)
    result = subprocess.run([sys.executable, "stages/explain.py", "random"], cwd=copy, capture_output=True,
                            text=True, env=pipeline.env, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert listing(pipeline.path) == original_before
    new = listing(copy) - copy_before
    assert any(p.endswith("maps/random.npz") for p in new), sorted(new)[:5]
    warnings = [line for line in result.stderr.splitlines() if "outside this repository" in line]
    assert len(warnings) == 1 and str(pipeline.path / "mlruns") in warnings[0] and str(copy / "mlruns") in warnings[0]
    experiment = MlflowClient(f"sqlite:///{copy / 'mlflow.db'}").get_experiment_by_name("mnist-xai")
    assert experiment.artifact_location == (copy / "mlruns").as_uri()


def test_dvc_rewriting_its_lock_file_does_not_make_the_tree_dirty(tmp_path, monkeypatch):
    """In a fresh clone `./dev.sh repro` rewrites dvc.lock, and the report said "(dirty)"; DVC's own files do
    not count, and what does count is named."""
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    for name in ("dvc.lock", "params.yaml"):
        (tmp_path / name).write_text("a: 1\n")
    git = ["git", "-c", "user.email=t@example.com", "-c", "user.name=t"]
    subprocess.run([*git, "add", "-A"], cwd=tmp_path, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "x"], cwd=tmp_path, check=True)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dvc.lock").write_text("a: 2\n")
    assert tracking.git_state()["git_dirty"] == "false"
    (tmp_path / "params.yaml").write_text("a: 2\n")
    state = tracking.git_state()
    assert state["git_dirty"] == "true" and state["git_dirty_files"] == "params.yaml"
