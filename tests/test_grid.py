"""The cell command as a scheduler runs it, for real: a bare git repository as the git remote, a local folder as
the DVC remote, an `mlflow server` on 127.0.0.1 as the team's server. A cell killed mid-run (its machine died)
is run again, completes and is pushed once; a cell already pushed is skipped."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from mnist_xai.grid import GridError, expand
from tests.conftest import quick_params
from tests.helpers import PipelineRepo
from tests.servers import mlflow_server

pytestmark = pytest.mark.xdist_group("cell")
METHODS = ["saliency"]


@pytest.fixture(scope="module")
def team(tmp_path_factory):
    """A pipeline committed with a default DVC remote and pushed to a bare git remote; the team's MLflow server."""
    tmp = tmp_path_factory.mktemp("team")
    repo = PipelineRepo.create(tmp / "repo", quick_params(METHODS))
    repo.dvc("remote", "add", "-d", "team", str(tmp / "dvc-remote"))
    repo.git("commit", "-qam", "the team's DVC remote")
    subprocess.run(["git", "clone", "-q", "--bare", str(repo.path), str(tmp / "remote.git")], check=True)
    with mlflow_server(f"sqlite:///{tmp / 'server.db'}", tmp / "artifacts", tmp / "server.log") as uri:
        repo.env["MLFLOW_TRACKING_URI"] = uri
        yield repo, tmp / "remote.git", tmp / "dvc-remote", uri


def cell_command(repo: PipelineRepo, remote: Path, name: str, *settings: str) -> list[str]:
    rev = repo.git("rev-parse", "HEAD").stdout.strip()
    return [sys.executable, "-m", "mnist_xai.cli", "cell", "--repo", str(remote), "--rev", rev, "--name", name,
            "--cpus", "1", *(arg for setting in settings for arg in ("-S", setting))]


def experiment_refs(remote: Path) -> list[str]:
    out = subprocess.run(["git", "ls-remote", str(remote), "refs/exps/*"], capture_output=True, text=True, check=True)
    return [line.split("\t")[1] for line in out.stdout.splitlines()]


def test_a_cell_killed_mid_run_is_completed_by_a_rerun_and_pushed_once(team, tmp_path):
    repo, remote, dvc_remote, uri = team
    command = cell_command(repo, remote, "cell-a", "train.epochs=1")
    # without the stage server every process of the cell is in its session, and dies with it
    died = subprocess.Popen(command, env={**repo.env, "MNIST_XAI_SERVER": "0"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    time.sleep(25)  # cloned, and well into the pipeline
    os.killpg(died.pid, signal.SIGKILL)  # the machine dies: nothing is cleaned up or pushed
    died.wait()
    assert experiment_refs(remote) == []
    rerun = subprocess.run(command, env=repo.env, capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert re.fullmatch(r"cell cell-a: pushed \(clone [\d.]+ s, run [\d.]+ s, push [\d.]+ s\)",
                        rerun.stdout.strip().splitlines()[-1]), rerun.stdout
    assert [ref.rsplit("/", 1)[-1] for ref in experiment_refs(remote)] == ["cell-a"]
    assert any(dvc_remote.rglob("*")), "no output reached the DVC remote"
    again = subprocess.run(command, env=repo.env, capture_output=True, text=True, timeout=120)
    assert again.stdout.strip().splitlines()[-1] == "cell cell-a: skipped", again.stderr[-2000:]
    assert len(experiment_refs(remote)) == 1
    # the results come back to any clone: the experiment, its metrics and its outputs
    fresh = tmp_path / "fresh"
    subprocess.run(["git", "clone", "-q", str(remote), str(fresh)], check=True)
    subprocess.run([sys.executable, "-m", "dvc", "exp", "pull", "origin", "cell-a"], cwd=fresh, env=repo.env,
                   check=True, capture_output=True)
    from mnist_xai.study import list_experiments

    pulled = {e["name"]: e for e in list_experiments(fresh)}
    assert pulled["cell-a"]["metrics"]["metrics/evaluate.json"]["accuracy"] > 0.5
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("mnist-xai").experiment_id],
                              "tags.dvc_exp_name = 'cell-a'")
    assert {run.data.tags["dvc_stage"] for run in runs} >= {"train", "report"}
    # the killed attempt's RUNNING run is closed by a later stage on the same host, its process being gone
    assert all(run.info.status in ("FINISHED", "KILLED") for run in runs), [r.info.status for r in runs]


def test_a_cell_without_a_dvc_remote_or_with_a_bad_name_is_one_line(team, tmp_path):
    repo, remote, _, _ = team
    bad = subprocess.run(cell_command(repo, remote, "bad name"), env=repo.env, capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error: --name 'bad name'"), bad.stderr


def test_a_grid_expands_into_one_named_cell_per_combination():
    cells = expand(["base.dataset=mnist,fashion-mnist", "train.arch=cnn,resnet", "train.epochs=2"])
    assert cells == {
        "cell-mnist-cnn": ["base.dataset=mnist", "train.arch=cnn", "train.epochs=2"],
        "cell-mnist-resnet": ["base.dataset=mnist", "train.arch=resnet", "train.epochs=2"],
        "cell-fashion-mnist-cnn": ["base.dataset=fashion-mnist", "train.arch=cnn", "train.epochs=2"],
        "cell-fashion-mnist-resnet": ["base.dataset=fashion-mnist", "train.arch=resnet", "train.epochs=2"]}
    with pytest.raises(GridError, match="give key=value"):
        expand(["base.seed"])
