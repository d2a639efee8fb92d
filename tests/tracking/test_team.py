"""A team's setup, for real: `mlflow server` on 127.0.0.1 backed by SQLite and by PostgreSQL, the
pipeline run against it from scratch. The two runs also show that outputs are byte-identical between
runs from scratch, and the SQLite-server run is guarded so that it may use loopback only."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import quick_params
from tests.helpers import PipelineRepo
from tests.servers import mlflow_server, postgres_cluster

METHODS = ["saliency", "random", "edge", "brightness", "oracle"]  # the controls are required
GUARD = Path(__file__).resolve().parents[1] / "network_guard"
pytestmark = pytest.mark.xdist_group("team")  # one worker builds both runs, which the determinism test compares
STAGES = ["train", "evaluate", "train_random_labels", "train_replicates", "train_decoy", "verdicts", "report"] + [
    f"{kind}@{m}" for kind in ("explain", "quality") for m in METHODS]


def run_against(tmp: Path, uri: str, guard_log: Path | None = None) -> PipelineRepo:
    env = {"MLFLOW_TRACKING_URI": uri}
    if guard_log is not None:
        env |= {"PYTHONPATH": str(GUARD), "MNIST_XAI_NETWORK_LOG": str(guard_log)}
    repo = PipelineRepo.create(tmp / "repo", quick_params(METHODS), env=env)
    repo.first_repro = repo.dvc("repro")
    return repo


@pytest.fixture(scope="module")
def sqlite_server_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sqlite-server")
    guard_log = tmp / "network.log"
    with mlflow_server(f"sqlite:///{tmp / 'server.db'}", tmp / "artifacts", tmp / "server.log") as uri:
        repo = run_against(tmp, uri, guard_log)
        yield repo, uri, guard_log


@pytest.fixture(scope="module")
def postgres_server_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("postgres-server")
    with postgres_cluster(tmp / "pg") as database, \
            mlflow_server(database, tmp / "artifacts", tmp / "server.log") as uri:
        yield run_against(tmp, uri), uri


def check_server_has_every_stage(repo: PipelineRepo, uri: str, tmp_path: Path) -> None:
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("mnist-xai")
    runs = client.search_runs([experiment.experiment_id])
    by_stage = {run.data.tags["dvc_stage"]: run for run in runs}
    assert set(STAGES) <= set(by_stage), set(by_stage)
    assert all(run.info.status == "FINISHED" for run in runs)
    for method in METHODS:  # artifacts go up and come back identical
        run = by_stage[f"explain@{method}"]
        local = client.download_artifacts(run.info.run_id, f"maps/{method}.npz", str(tmp_path))
        assert Path(local).read_bytes() == (repo.path / f"explanations/{method}.npz").read_bytes()
    html = client.download_artifacts(by_stage["report"].info.run_id, "report.html", str(tmp_path))
    assert Path(html).read_bytes() == (repo.path / "reports/report.html").read_bytes()
    assert client.search_model_versions("name = 'mnist-xai-cnn'")
    assert not (repo.path / "mlflow.db").exists() and not (repo.path / "mlruns").exists()


def test_pipeline_against_an_mlflow_server_on_sqlite(sqlite_server_run, tmp_path):
    repo, uri, _ = sqlite_server_run
    check_server_has_every_stage(repo, uri, tmp_path)


def test_pipeline_against_an_mlflow_server_on_postgresql(postgres_server_run, tmp_path):
    repo, uri = postgres_server_run
    check_server_has_every_stage(repo, uri, tmp_path)


def test_a_full_run_connects_to_nothing_but_loopback(sqlite_server_run):
    """Every Python process of the run (dvc and each stage) had its socket layer guarded."""
    repo, _, guard_log = sqlite_server_run
    assert (repo.path / "reports/report.html").is_file()
    attempts = guard_log.read_text() if guard_log.exists() else ""
    assert attempts == "", f"connections beyond loopback were attempted:\n{attempts}"


DETERMINISTIC = ["models/model.pt", "models/random_labels/permuted_0.pt", "models/random_labels/true_0.pt",
                 "models/decoy/no_reliance_0.pt", "metrics/train.json", "metrics/evaluate.json",
                 "metrics/quality.json", "metrics/train_random_labels.json", "metrics/train_replicates.json",
                 "plots/train/history.csv",
                 "plots/evaluate/confusion.json", "predictions/misclassified.json", "plots/quality/curves.json",
                 "plots/quality/randomisation.json", "plots/quality/agreement.json", "quality/verdicts.json",
                 "models/decoy/decoy_0.pt", "metrics/decoy.json", "ground_truth/decoy.npz"] + [
    f"{folder}/{m}.{ext}" for m in METHODS
    for folder, ext in (("explanations", "npz"), ("quality/scores", "npz"), ("metrics/quality", "json"))]


def test_two_runs_from_scratch_are_byte_identical(sqlite_server_run, postgres_server_run):
    first, second = sqlite_server_run[0], postgres_server_run[0]
    differing = [name for name in DETERMINISTIC
                 if (first.path / name).read_bytes() != (second.path / name).read_bytes()]
    assert not differing, differing
