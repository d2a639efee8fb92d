"""A locked embedded store gives a clear error: it does not hang, it corrupts nothing, and the next run
works. The repository has only been through download, train and evaluate (stage scripts run directly),
so these tests need not wait for the shared pipeline."""

from __future__ import annotations

import fcntl
import sqlite3
import time

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import small_params
from tests.helpers import PipelineRepo
from tests.robustness.test_bad_inputs import assert_one_line_failure

pytestmark = pytest.mark.xdist_group("locked_store")
OUTPUTS = ["metrics/evaluate.json", "predictions/misclassified.json"]


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> PipelineRepo:
    repo = PipelineRepo.create(tmp_path_factory.mktemp("locked-store"), small_params(["saliency", "random"]))
    for stage in ("download", "train", "evaluate"):
        repo.stage(stage, check=True)
    return repo


def outputs(repo: PipelineRepo) -> dict[str, bytes]:
    return {name: (repo.path / name).read_bytes() for name in OUTPUTS}


def test_store_held_by_another_writer_fails_after_the_timeout(repo):
    before = outputs(repo)
    with open(repo.path / "mlflow.db.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # as another stage mid-write would
        started = time.monotonic()
        result = repo.stage("evaluate", env={"MNIST_XAI_STORE_LOCK_TIMEOUT": "2"})
        elapsed = time.monotonic() - started
    assert_one_line_failure(result, "has been locked by another process for 2 s")
    assert elapsed < 15
    assert outputs(repo) == before


def test_store_locked_by_a_foreign_sqlite_transaction_fails_cleanly(repo):
    before = outputs(repo)
    foreign = sqlite3.connect(repo.path / "mlflow.db", timeout=0)
    try:
        foreign.execute("BEGIN EXCLUSIVE")  # e.g. a sqlite3 shell left open mid-transaction
        started = time.monotonic()
        result = repo.stage("evaluate", env={"MNIST_XAI_STORE_LOCK_TIMEOUT": "2"})
        elapsed = time.monotonic() - started
    finally:
        foreign.rollback()
        foreign.close()
    # the same timeout as for our own stages, not MLflow's fixed 20 s
    assert_one_line_failure(result, "another program has held it locked for 2 s")
    assert 2 <= elapsed < 15
    assert outputs(repo) == before
    assert sqlite3.connect(repo.path / "mlflow.db").execute("PRAGMA integrity_check").fetchone() == ("ok",)
    repo.stage("evaluate", check=True)  # once the lock is gone, the same stage runs and is recorded
    assert outputs(repo) == before
    client = MlflowClient(f"sqlite:///{repo.path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("mnist-xai")
    runs = client.search_runs([experiment.experiment_id], "tags.dvc_stage = 'evaluate'")
    assert [run.info.status for run in runs].count("FINISHED") == 2, [run.info.status for run in runs]
