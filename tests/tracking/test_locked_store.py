"""A locked embedded store gives a clear error: it does not hang, and it corrupts nothing."""

from __future__ import annotations

import fcntl
import sqlite3
import time

from mlflow.tracking import MlflowClient

from tests.robustness.test_bad_inputs import assert_one_line_failure


def test_store_held_by_another_writer_fails_after_the_timeout(pipeline):
    lock_file = pipeline.path / "mlflow.db.lock"
    before = (pipeline.path / "metrics/evaluate.json").read_bytes()
    with open(lock_file, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # as another stage mid-write would
        started = time.monotonic()
        result = pipeline.stage("evaluate", env={"MNIST_XAI_STORE_LOCK_TIMEOUT": "2"})
        elapsed = time.monotonic() - started
    assert_one_line_failure(result, "has been locked by another process for 2 s")
    assert elapsed < 15
    assert (pipeline.path / "metrics/evaluate.json").read_bytes() == before


def test_store_locked_by_a_foreign_sqlite_transaction_fails_cleanly(pipeline):
    before = (pipeline.path / "metrics/evaluate.json").read_bytes()
    foreign = sqlite3.connect(pipeline.path / "mlflow.db", timeout=0)
    try:
        foreign.execute("BEGIN EXCLUSIVE")  # e.g. a sqlite3 shell left open mid-transaction
        started = time.monotonic()
        result = pipeline.stage("evaluate")
        elapsed = time.monotonic() - started
    finally:
        foreign.rollback()
        foreign.close()
    assert_one_line_failure(result, "cannot write to the MLflow store")
    assert "locked" in result.stderr and elapsed < 60
    assert (pipeline.path / "metrics/evaluate.json").read_bytes() == before
    client = MlflowClient(f"sqlite:///{pipeline.path / 'mlflow.db'}")  # still readable, nothing corrupt
    assert client.get_experiment_by_name("mnist-xai") is not None
    assert sqlite3.connect(pipeline.path / "mlflow.db").execute("PRAGMA integrity_check").fetchone() == ("ok",)
