"""The embedded store in every DVC mode: workspace, -S and --temp here; a queue run two at a time in
tests/test_study.py (the grid)."""

import json

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

        client = MlflowClient(f"sqlite:///{repo.path / 'mlflow.db'}")
        experiment = client.get_experiment_by_name("mnist-xai")
        reports = client.search_runs([experiment.experiment_id], "tags.dvc_stage = 'report'")
        names = {run.data.tags.get("dvc_exp_name") for run in reports}
        assert {"ws-samples", "temp-samples"} <= names, names
        assert all(run.info.status == "FINISHED" for run in reports)
        assert not list((repo.path / ".dvc/tmp").rglob("mlflow.db")), "a run wrote to a store of its own"

        shown = json.loads(repo.dvc("exp", "show", "--json").stdout)
        assert "temp-samples" in json.dumps(shown) and "metrics/evaluate.json" in json.dumps(shown)
        params_diff = repo.dvc("params", "diff").stdout
        assert "report.n_samples" in params_diff
        metrics_diff = repo.dvc("metrics", "diff", "--all").stdout
        assert "metrics/evaluate.json" in metrics_diff and "accuracy" in metrics_diff
    finally:
        (repo.path / "params.yaml").write_text(original)
        repo.dvc("repro")  # the run cache restores the outputs of the original params
