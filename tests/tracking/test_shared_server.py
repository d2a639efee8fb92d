"""What a team's shared MLflow server does to stages on several machines, reproduced on 127.0.0.1 with real
`mlflow server` processes: a host name the server does not accept, a login it asks for, workers racing to create
the experiment, and runs left RUNNING by a machine that died."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from mlflow.tracking import MlflowClient

from mnist_xai import tracking
from tests.servers import mlflow_server

pytestmark = pytest.mark.xdist_group("shared-server")
ADMIN_PASSWORD = "a-Strong-test-passw0rd"


def start_stage_run(uri: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """What a stage does first: open the store and start its run (in a fresh process, as a stage would)."""
    code = ("from mnist_xai import tracking\n"
            "with tracking.stage_run('train', 'mnist-xai'):\n    pass\n")
    environment = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}
    environment |= {"MLFLOW_TRACKING_URI": uri, **(env or {})}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment, timeout=120)


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode != 0, result.stderr
    return result.stderr.strip().splitlines()[-1]


def test_a_host_name_the_server_does_not_accept_says_how_to_start_it(tmp_path):
    """MLflow 3 answers /health but refuses the API to a Host header outside --allowed-hosts."""
    with mlflow_server(f"sqlite:///{tmp_path / 's.db'}", tmp_path / "artifacts", tmp_path / "server.log",
                       extra=["--allowed-hosts", "tracking-host:5000"]) as uri:
        line = one_line_error(start_stage_run(uri))
    host = uri.removeprefix("http://")
    assert f"refused the host name {host}" in line and f"--allowed-hosts {host}" in line, line
    assert "MLFLOW_SERVER_ALLOWED_HOSTS" in line


def test_a_server_with_basic_auth_refuses_a_client_without_a_login_in_one_clear_line(tmp_path):
    with mlflow_server(f"sqlite:///{tmp_path / 's.db'}", tmp_path / "artifacts", tmp_path / "server.log",
                       extra=["--app-name", "basic-auth"],
                       env={"MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN_PASSWORD,
                            "MLFLOW_FLASK_SERVER_SECRET_KEY": "test-secret"}) as uri:
        anonymous = one_line_error(start_stage_run(uri))
        wrong = one_line_error(start_stage_run(uri, {"MLFLOW_TRACKING_USERNAME": "admin",
                                                     "MLFLOW_TRACKING_PASSWORD": "wrong"}))
        admin = start_stage_run(uri, {"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": ADMIN_PASSWORD})
    assert "asks for a login: set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD" in anonymous, anonymous
    assert "refused the login of 'admin'" in wrong, wrong
    assert admin.returncode == 0, admin.stderr


def test_workers_starting_together_on_a_new_server_all_get_the_experiment(tmp_path):
    """Six processes ask for the same new experiment at the same instant, twice over: without handling the
    loser's RESOURCE_ALREADY_EXISTS, some of them fail."""
    code = ("import sys, time\n"
            "from mlflow.tracking import MlflowClient\n"
            "from mnist_xai import tracking\n"
            "uri, name, start = sys.argv[1], sys.argv[2], float(sys.argv[3])\n"
            "client = MlflowClient(uri)\n"
            "client.search_experiments(max_results=1)  # connected and warm before the start line\n"
            "time.sleep(max(0.0, start - time.time()))\n"
            "print(tracking._experiment_id(client, name, uri))\n")
    with mlflow_server(f"sqlite:///{tmp_path / 's.db'}", tmp_path / "artifacts", tmp_path / "server.log",
                       workers=4) as uri:
        for attempt in range(2):
            start = time.time() + 12  # after every process has imported MLflow
            workers = [subprocess.Popen([sys.executable, "-c", code, uri, f"race-{attempt}", str(start)],
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                       for _ in range(6)]
            results = [(worker.wait(timeout=120), worker.stdout.read().strip(), worker.stderr.read())
                       for worker in workers]
            failed = [err.strip().splitlines()[-1] for code_, _, err in results if code_ != 0]
            assert failed == [], failed
            assert len({out for _, out, _ in results}) == 1  # one experiment, the same id for all


def test_a_run_left_running_on_another_host_is_killed_once_its_heartbeat_is_old(tmp_path, monkeypatch):
    monkeypatch.delenv(tracking.STALE_ENV, raising=False)
    with mlflow_server(f"sqlite:///{tmp_path / 's.db'}", tmp_path / "artifacts", tmp_path / "server.log") as uri:
        client = MlflowClient(uri)
        experiment = client.create_experiment("mnist-xai")
        now = time.time()

        def run_on(host: str, heartbeat: float | None, tags: bool = True) -> str:
            extra = {"mnist_xai.host": host, "mnist_xai.pid": "1", "mnist_xai.pid_start": "0"} if tags else {}
            if heartbeat is not None:
                extra[tracking.HEARTBEAT_TAG] = str(int(heartbeat))
            return client.create_run(experiment, tags={"dvc_stage": "train", **extra}).info.run_id

        died = run_on("machine-that-died", now - 2 * tracking.STALE_AFTER_S)
        alive = run_on("busy-machine", now - 30)
        foreign = run_on("", None, tags=False)  # a run someone else started in the experiment by hand
        tracking._sweep_abandoned_runs(client, experiment)
        status = {run: client.get_run(run).info.status for run in (died, alive, foreign)}
    assert status == {died: "KILLED", alive: "RUNNING", foreign: "RUNNING"}


def test_a_stage_run_beats_while_it_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(tracking, "HEARTBEAT_S", 0.2)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)
    with tracking.stage_run("train", "mnist-xai") as run:
        first = int(MlflowClient().get_run(run.run_id).data.tags[tracking.HEARTBEAT_TAG])
        time.sleep(1.5)
        later = int(MlflowClient().get_run(run.run_id).data.tags[tracking.HEARTBEAT_TAG])
    assert later > first
