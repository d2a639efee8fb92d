"""The embedded store in every DVC mode: workspace, -S, --temp, and a queue run two at a time."""

import json
import time

from mlflow.tracking import MlflowClient

from tests.helpers import ran_stages


def test_every_dvc_mode_lands_in_the_one_store_without_locking_errors(pipeline):
    repo = pipeline
    original = (repo.path / "params.yaml").read_text()
    try:
        workspace = repo.dvc("exp", "run", "-n", "ws-samples", "-S", "report.n_samples=4")
        assert ran_stages(workspace.stdout) == ["report"]
        temp = repo.dvc("exp", "run", "--temp", "-n", "temp-samples", "-S", "report.n_samples=5")
        assert "database is locked" not in temp.stdout + temp.stderr
        for n in (6, 7):
            repo.dvc("exp", "run", "--queue", "-n", f"queued-{n}", "-S", f"report.n_samples={n}")
        started = time.monotonic()
        repo.dvc("queue", "start", "-j", "2")
        status = ""
        while time.monotonic() - started < 300:
            status = repo.dvc("queue", "status").stdout
            if "Queued" not in status and "Running" not in status:
                break
            time.sleep(2)
        queue_seconds = time.monotonic() - started
        assert status.count("Success") == 2, status
        logs = "".join(repo.dvc("queue", "logs", f"queued-{n}", check=False).stdout for n in (6, 7))
        assert "database is locked" not in logs and "Traceback" not in logs, logs

        client = MlflowClient(f"sqlite:///{repo.path / 'mlflow.db'}")
        experiment = client.get_experiment_by_name("mnist-xai")
        reports = client.search_runs([experiment.experiment_id], "tags.dvc_stage = 'report'")
        names = {run.data.tags.get("dvc_exp_name") for run in reports}
        assert {"ws-samples", "temp-samples", "queued-6", "queued-7"} <= names, names
        assert all(run.info.status == "FINISHED" for run in reports)
        assert not list((repo.path / ".dvc/tmp").rglob("mlflow.db")), "a run wrote to a store of its own"

        shown = json.loads(repo.dvc("exp", "show", "--json").stdout)
        assert "queued-6" in json.dumps(shown) and "metrics/evaluate.json" in json.dumps(shown)
        params_diff = repo.dvc("params", "diff").stdout
        assert "report.n_samples" in params_diff
        metrics_diff = repo.dvc("metrics", "diff", "--all").stdout
        assert "metrics/evaluate.json" in metrics_diff and "accuracy" in metrics_diff
        print(f"queue of 2 experiments, -j 2: {queue_seconds:.1f} s")
    finally:
        (repo.path / "params.yaml").write_text(original)
        repo.dvc("repro")  # the run cache restores the outputs of the original params
