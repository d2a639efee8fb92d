"""`mnist-xai grid --engine ray` on a real Ray cluster of separate processes on 127.0.0.1: a head with no CPUs and
two worker nodes with one CPU each, a bare git repository as the git remote, a local folder as the DVC remote and
an `mlflow server` on PostgreSQL as the team's server. One worker node is killed while its cell runs: Ray retries
that cell on the other node, every cell ends pushed exactly once, the study page lists every cell, and the server
has no run left RUNNING. A second grid, with no --address, starts a cluster of its own (the path of a user without
one), finds both cells on the remote and skips them."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import quick_params
from tests.helpers import PipelineRepo
from tests.servers import free_port, mlflow_server, postgres_cluster

pytestmark = pytest.mark.xdist_group("ray")
# Ray reports usage to its makers unless told not to; every node and the driver share one token (from the
# environment, never an argument): Ray's control plane refuses anyone without it
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}


def ray_node(env: dict, *args: str) -> subprocess.Popen:
    ray = os.path.join(os.path.dirname(sys.executable), "ray")
    return subprocess.Popen([ray, "start", "--block", "--node-ip-address", "127.0.0.1", "--disable-usage-stats",
                             *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def wait_for_cpus(env: dict, port: int, cpus: int, timeout: float = 90) -> None:
    ray = os.path.join(os.path.dirname(sys.executable), "ray")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = subprocess.run([ray, "status", "--address", f"127.0.0.1:{port}"], env=env, capture_output=True,
                                text=True)
        if status.returncode == 0 and (f"/{cpus}.0 CPU" in status.stdout or cpus == 0):  # no CPU line with none
            return
        time.sleep(2)
    raise TimeoutError(f"the Ray cluster did not reach {cpus} CPUs in {timeout} s")


def kill_node(node: subprocess.Popen) -> None:
    os.killpg(node.pid, signal.SIGKILL)  # the node's raylet and its workers: the machine is gone
    node.wait()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ray-grid")
    repo = PipelineRepo.create(tmp / "repo", quick_params(["saliency"]))
    repo.dvc("remote", "add", "-d", "team", str(tmp / "dvc-remote"))
    repo.git("commit", "-qam", "the team's DVC remote")
    subprocess.run(["git", "init", "-q", "--bare", str(tmp / "remote.git")], check=True)
    repo.git("remote", "add", "origin", str(tmp / "remote.git"))
    repo.git("push", "-q", "-u", "origin", "main")
    with postgres_cluster(tmp / "pg") as database, \
            mlflow_server(database, tmp / "artifacts", tmp / "server.log") as uri:
        ray_tmp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's Unix sockets live under it
        env = {**repo.env, **RAY_ENV, "MLFLOW_TRACKING_URI": uri, "RAY_TMPDIR": ray_tmp}
        env.pop("OMP_NUM_THREADS", None)
        port = free_port()
        nodes = [ray_node(env, "--head", "--port", str(port), "--num-cpus", "0", "--include-dashboard", "false")]
        wait_for_cpus(env, port, 0)
        for cpus in (1, 2):  # one at a time: two nodes joining at once on one host may not both get in
            nodes.append(ray_node(env, "--address", f"127.0.0.1:{port}", "--num-cpus", "1"))
            wait_for_cpus(env, port, cpus)
        try:
            yield repo, tmp / "remote.git", uri, f"127.0.0.1:{port}", env, nodes
        finally:
            for node in nodes:
                if node.poll() is None:
                    kill_node(node)
            shutil.rmtree(ray_tmp, ignore_errors=True)


def test_a_grid_on_ray_survives_a_dead_node_and_pushes_every_cell_once(cluster):
    repo, remote, uri, address, env, nodes = cluster
    grid = subprocess.Popen([sys.executable, "-m", "mnist_xai.cli", "grid", "--engine", "ray", "--address", address,
                             "--cpus-per-cell", "1", "-S", "train.epochs=1,2", "--root", str(repo.path)],
                            cwd=repo.path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    client = MlflowClient(uri)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # both cells well into their pipelines
        experiment = client.get_experiment_by_name("mnist-xai")
        if experiment and len(client.search_runs([experiment.experiment_id], "tags.dvc_stage = 'train'")) >= 2:
            break
        time.sleep(2)
    kill_node(nodes[1])
    out, err = grid.communicate(timeout=1500)
    assert grid.returncode == 0, err[-3000:]
    assert "cell cell-1: pushed (clone" in out and "cell cell-2: pushed (clone" in out, out
    # Ray set OMP_NUM_THREADS=1 in its workers; the cells dropped it, so that their stages share the cores (a cell
    # alone takes every core: the grid's last cell does not leave the others idle)
    assert out.count("; threads shared)") == 2, out
    refs = subprocess.run(["git", "ls-remote", str(remote), "refs/exps/*"], capture_output=True, text=True).stdout
    assert sorted(line.rsplit("/", 1)[-1] for line in refs.splitlines()) == ["cell-1", "cell-2"]
    html = (repo.path / "reports/study.html").read_text()
    assert "cell-1" in html and "cell-2" in html
    experiment = client.get_experiment_by_name("mnist-xai")
    running = client.search_runs([experiment.experiment_id], "attributes.status = 'RUNNING'")
    assert running == [], [run.data.tags.get("dvc_stage") for run in running]
    # the killed node's half-run copy of its cell died with it: one finished pipeline per cell, not two
    reports = client.search_runs([experiment.experiment_id], "tags.dvc_stage = 'report' and attributes.status = "
                                 "'FINISHED'")
    assert sorted(run.data.tags["dvc_exp_name"] for run in reports) == ["cell-1", "cell-2"]
    assert any((repo.path.parent / "dvc-remote").rglob("*")), "no output reached the DVC remote"
    # run again, as after a scheduler's retry: every cell is already on the remote, so nothing runs or is pushed.
    # This time with no --address, so `grid` starts a cluster of its own (its Ray temp folder another, so that it
    # does not find the one above): the path a user without a cluster takes
    local_tmp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    local_env = {key: value for key, value in env.items() if key != "RAY_ADDRESS"} | {"RAY_TMPDIR": local_tmp}
    try:
        again = subprocess.run([sys.executable, "-m", "mnist_xai.cli", "grid", "--engine", "ray", "-S",
                                "train.epochs=1,2", "--root", str(repo.path)], cwd=repo.path, env=local_env,
                               capture_output=True, text=True, timeout=300)
        started_here = list(Path(local_tmp).glob("ray/session_*"))
    finally:
        shutil.rmtree(local_tmp, ignore_errors=True)
    assert again.returncode == 0, again.stderr[-3000:]
    assert started_here, "grid without --address joined the running cluster instead of starting its own"
    assert "cell cell-1: skipped" in again.stdout and "cell cell-2: skipped" in again.stdout, again.stdout
    assert len(subprocess.run(["git", "ls-remote", str(remote), "refs/exps/*"], capture_output=True,
                              text=True).stdout.splitlines()) == 2
