"""MLflow tracking: one run per stage execution, in one store per repository.

The default store is SQLite at `<repository root>/mlflow.db` (artifacts in
`<root>/mlruns/`), where the root is `DVC_ROOT` when DVC sets it, so runs of
`dvc exp run --temp/--queue` (which execute in a copy under .dvc/tmp/exps) land
in the same store. `MLFLOW_TRACKING_URI` overrides it, e.g. a team server.

Writes to the SQLite store are serialised with a file lock and the database
runs in WAL mode, so parallel queued experiments never see "database is locked".
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mnist_xai.errors import UserError
from mnist_xai.files import repo_root
from mnist_xai.stage import add_tracking_seconds, process_start

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # before mlflow is imported anywhere
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")  # fail within seconds, not minutes
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")

log = logging.getLogger(__name__)

PREFLIGHT_TIMEOUT_S = 5
LOCK_TIMEOUT_ENV = "MNIST_XAI_STORE_LOCK_TIMEOUT"
STALE_ENV = "MNIST_XAI_RUN_STALE_AFTER"
STALE_AFTER_S = 600  # a RUNNING run of another host with no heartbeat for this long is taken as abandoned
HEARTBEAT_S = 60  # how often a stage's run says it is alive
HEARTBEAT_TAG = "mnist_xai.heartbeat"
"""Seconds to wait for another process's write to the embedded store (default 60): another stage's, or a
program's outside this project (a sqlite3 shell mid-transaction)."""


class TrackingError(UserError):
    """The tracking store cannot be reached or written."""


URI_SCHEMES = ("http", "https", "sqlite", "postgresql", "mysql", "mssql", "file", "databricks")


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI when set (checked: a scheme MLflow can use), else the embedded SQLite store."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        return f"sqlite:///{repo_root() / 'mlflow.db'}"
    scheme = uri.split("://", 1)[0].split("+", 1)[0].lower() if "://" in uri else ""
    if scheme not in URI_SCHEMES:
        raise TrackingError(f"MLFLOW_TRACKING_URI={_safe_uri(uri)!r} is not a tracking URI: give a server "
                            "(http://host:5000), a database (sqlite:////abs/path/mlflow.db, postgresql://...), "
                            "or unset it to use the embedded store")
    return uri


def _lock_timeout() -> float:
    value = os.environ.get(LOCK_TIMEOUT_ENV, "60")
    try:
        seconds = float(value)
    except ValueError:
        seconds = float("nan")
    if not seconds >= 0 or seconds == float("inf"):
        raise TrackingError(f"{LOCK_TIMEOUT_ENV}={value!r} is not allowed: give a number of seconds (default 60)")
    return seconds


def display_uri() -> str:
    """The tracking URI as it is safe to show (no password)."""
    return _safe_uri(tracking_uri())


def _sqlite_path(uri: str) -> Path | None:
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


@contextlib.contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """An exclusive inter-process lock for the SQLite store (a no-op for servers)."""
    db = _sqlite_path(uri)
    if db is None:
        yield
        return
    from mnist_xai.server import store_locked

    timeout = _lock_timeout()
    db.parent.mkdir(parents=True, exist_ok=True)
    with store_locked(db, timeout) as locked:
        if not locked:
            raise TrackingError(f"the MLflow store {db} has been locked by another process for {timeout:g} s; "
                                f"wait for it to finish, or raise {LOCK_TIMEOUT_ENV}")
        yield


def _preflight(uri: str) -> None:
    """Fail fast, with one line, when a configured tracking server does not answer."""
    if not uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=PREFLIGHT_TIMEOUT_S) as response:
            response.read()
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        raise TrackingError(f"MLflow tracking server {uri} is unreachable ({reason}); start it, fix "
                            "MLFLOW_TRACKING_URI, or unset it to use the embedded store") from None


DVC_OWN_FILES = ("dvc.lock", ".dvc/")
"""Files DVC itself rewrites during `dvc repro`: a changed dvc.lock does not make the code dirty."""


def git_state() -> dict[str, str]:
    """Commit of the working tree, whether tracked files differ from it (DVC's own files aside) and which
    (empty when not a git repository)."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                                timeout=10).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                                text=True, check=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    changed = [line[3:].strip() for line in status.splitlines() if line.strip()]
    dirty = [path for path in changed if not path.startswith(DVC_OWN_FILES)]
    state = {"git_commit": commit, "git_dirty": str(bool(dirty)).lower()}
    if dirty:
        state["git_dirty_files"] = ", ".join(dirty[:10]) + (f" and {len(dirty) - 10} more" if len(dirty) > 10 else "")
    return state


def file_md5(path: str | Path) -> str:
    """The MD5 of a file's bytes: what DVC 3 records for a file output."""
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def dir_md5(path: str | Path) -> str:
    """DVC 3's hash of a directory: the MD5 of its sorted JSON listing of (relpath, md5), plus '.dir'."""
    root = Path(path)
    entries = sorted(
        ({"md5": file_md5(p), "relpath": p.relative_to(root).as_posix()} for p in root.rglob("*") if p.is_file()),
        key=lambda entry: entry["relpath"],
    )
    return hashlib.md5(json.dumps(entries, sort_keys=True).encode()).hexdigest() + ".dir"


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> dict[str, Any]:
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), item, out)
    else:
        out[prefix] = value
    return out


class StageRun:
    """One MLflow run for one stage execution, written through one MlflowClient (no fluent API: its context
    providers re-read git, which we already tag). Every write takes the store lock, is batched, and is timed."""

    def __init__(self, client, uri: str, run_id: str, experiment_id: str, seconds: float):
        self._client = client
        self._uri = uri
        self.run_id = run_id
        self.experiment_id = experiment_id
        self.seconds = seconds  # time spent on MLflow so far (import and store start-up included)

    def _call(self, function, *args, **kwargs):
        started = time.perf_counter()
        try:
            with store_lock(self._uri):
                return function(*args, **kwargs)
        except UserError:
            raise
        except Exception as error:  # noqa: BLE001 - MLflow and SQLAlchemy raise many kinds
            raise _store_error(self._uri, error) from None
        finally:
            self.seconds += time.perf_counter() - started

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        """All values in one batch call."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(key, float(value), now, step or 0) for key, value in metrics.items()]
        self._call(self._client.log_batch, self.run_id, metrics=batch)

    def log_epoch(self, row: dict[str, float]) -> None:
        """One row of a training history, at step = its epoch."""
        self.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=row["epoch"])

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        batch = [Param(key, str(value)) for key, value in _flatten("", params, {}).items()]
        self._call(self._client.log_batch, self.run_id, params=batch)

    def set_tags(self, tags: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        self._call(self._client.log_batch, self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self._call(self._client.log_artifact, self.run_id, str(path), artifact_path)

    def log_image(self, image, name: str) -> None:
        """An RGB uint8 array as a PNG artifact."""
        self._call(self._client.log_image, self.run_id, image, artifact_file=name)

    def log_model(self, model, name: str = "model", registered_model_name: str | None = None):
        """The model in MLflow's "pt2" format (torch.export): loading it runs no pickle, and an input
        example of batch 2 makes the batch dimension dynamic, so it predicts any batch size. With
        `registered_model_name`, a new version of that registered model. (MLflow logs models to the active
        run only: this run is made active for the call, and handed back still RUNNING: stage_run ends it.)"""
        import mlflow
        import mlflow.pytorch
        import numpy as np
        import torch

        example = np.zeros((2, 1, 28, 28), dtype=np.float32)

        def log():
            mlflow.set_tracking_uri(self._uri)
            mlflow.start_run(run_id=self.run_id)
            try:
                return mlflow.pytorch.log_model(model, name=name, serialization_format="pt2", input_example=example,
                                                registered_model_name=registered_model_name,
                                                pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"])
            finally:
                mlflow.end_run(status="RUNNING")

        return self._call(log)

    def find_runs(self, filter_string: str, max_results: int = 1000) -> list:
        """Runs of this run's experiment matching an MLflow filter, newest first (at most `max_results`: each
        comes with all its params, metrics and tags)."""
        return self._call(self._client.search_runs, [self.experiment_id], filter_string,
                          max_results=max_results, order_by=["attributes.start_time DESC"])


@contextlib.contextmanager
def stage_run(stage: str, experiment: str, *, params: dict[str, Any] | None = None,
              tags: dict[str, Any] | None = None) -> Iterator[StageRun]:
    """Open the store (failing fast when it is unreachable), start a run tagged with the DVC stage,
    the git state and the given tags, and end it FINISHED, FAILED or KILLED."""
    uri = tracking_uri()
    started = time.perf_counter()
    _preflight(uri)
    from mlflow.tracking import MlflowClient  # ~1.1 s to import: only stages that track pay for it

    # MLflow logs every database error with a traceback before re-raising it; we report each as one line
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)
    all_tags = {
        "dvc_stage": os.environ.get("DVC_STAGE", stage),
        **git_state(),
        **({"dvc_exp_name": os.environ["DVC_EXP_NAME"]} if os.environ.get("DVC_EXP_NAME") else {}),
        **_process_tags(),
        **_pipeline_tags(),
        **{k: str(v) for k, v in (tags or {}).items()},
    }
    try:
        with store_lock(uri):
            _prepare_sqlite(uri)
            _wait_for_other_writers(uri)
            client = MlflowClient(uri)
            experiment_id = _experiment_id(client, experiment, uri)
            _sweep_abandoned_runs(client, experiment_id)
            run = client.create_run(experiment_id, run_name=all_tags["dvc_stage"], tags=all_tags)
    except UserError:
        raise
    except Exception as error:  # noqa: BLE001 - MLflow and SQLAlchemy raise many kinds
        raise _store_error(uri, error) from None
    stage_run_ = StageRun(client, uri, run.info.run_id, experiment_id, time.perf_counter() - started)
    heartbeat = Heartbeat(stage_run_)
    heartbeat.start()
    status = "FAILED"
    try:
        if params:
            stage_run_.log_params(params)
        yield stage_run_
        status = "FINISHED"
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM (stage.run turns it into KeyboardInterrupt)
        status = "KILLED"
        raise
    finally:
        heartbeat.stop()
        stage_run_._call(client.set_terminated, stage_run_.run_id, status=status)
        add_tracking_seconds(stage_run_.seconds)
        log.info("MLflow run %s (%s) in %s: %.2f s spent on tracking", stage_run_.run_id, status, _safe_uri(uri),
                 stage_run_.seconds)


def _pipeline_tags() -> dict[str, str]:
    """The dataset and architecture every run belongs to, so runs of a grid of experiments can be told apart
    (and a study page can link each cell to its runs)."""
    from mnist_xai import params

    if not params.PARAMS_FILE.is_file():
        return {}
    loaded = params.load("base", "train")
    return {"dataset": loaded.base.dataset, "arch": loaded.train.arch}


def _process_tags() -> dict[str, str]:
    """Which process runs the stage (host, pid and its start time, which a reused pid does not share), so that
    a later stage can tell a run whose process was killed (SIGKILL, a power cut) from one still running; and its
    first heartbeat, for stages on other hosts, which cannot see the process."""
    return {"mnist_xai.host": socket.gethostname(), "mnist_xai.pid": str(os.getpid()),
            "mnist_xai.pid_start": process_start(os.getpid()), HEARTBEAT_TAG: str(int(time.time()))}


class Heartbeat(threading.Thread):
    """Sets the run's heartbeat tag to the time every HEARTBEAT_S seconds while the stage runs: MLflow has no
    lease, so this is how a stage on another host tells a live run from one whose machine died."""

    def __init__(self, run: StageRun):
        super().__init__(name=f"mlflow-heartbeat-{run.run_id}", daemon=True)
        self._run = run
        self._stopped = threading.Event()

    def run(self) -> None:
        while not self._stopped.wait(HEARTBEAT_S):
            try:
                with store_lock(self._run._uri):
                    self._run._client.set_tag(self._run.run_id, HEARTBEAT_TAG, str(int(time.time())))
            except Exception as error:  # noqa: BLE001 - a missed beat only makes the run look older
                log.debug("heartbeat of MLflow run %s failed: %s", self._run.run_id, error)

    def stop(self) -> None:
        self._stopped.set()


def _stale_after() -> float:
    value = os.environ.get(STALE_ENV, str(STALE_AFTER_S))
    try:
        seconds = float(value)
    except ValueError:
        seconds = float("nan")
    if not seconds > 2 * HEARTBEAT_S:
        raise TrackingError(f"{STALE_ENV}={value!r} is not allowed: give a number of seconds above "
                            f"{2 * HEARTBEAT_S} (a run beats every {HEARTBEAT_S} s; default {STALE_AFTER_S})")
    return seconds


def _sweep_abandoned_runs(client, experiment_id: str) -> None:
    """Mark KILLED the RUNNING runs this project left behind: MLflow has no lease, so a killed stage would
    otherwise stay RUNNING forever. On this host a run is abandoned when its process is gone; on another host
    (a shared server), when its heartbeat is older than MNIST_XAI_RUN_STALE_AFTER seconds."""
    host, now, stale_after = socket.gethostname(), time.time(), _stale_after()
    for found in client.search_runs([experiment_id], "attributes.status = 'RUNNING'"):
        tags = found.data.tags
        owner = tags.get("mnist_xai.host")
        if owner is None:  # not a stage's run: someone else's, left alone
            continue
        if owner == host:
            pid = tags.get("mnist_xai.pid", "")
            if not (pid.isdigit() and process_start(int(pid)) != tags.get("mnist_xai.pid_start")):
                continue
            why = "by a process that is gone"
        else:
            try:
                beat = float(tags.get(HEARTBEAT_TAG) or found.info.start_time / 1000)
            except ValueError:
                beat = found.info.start_time / 1000
            if now - beat <= stale_after:
                continue
            why = f"on {owner}, silent for {now - beat:.0f} s"
        client.set_terminated(found.info.run_id, status="KILLED")
        log.warning("MLflow run %s (%s) was left RUNNING %s: marked KILLED", found.info.run_id,
                    tags.get("dvc_stage", "?"), why)


def _safe_uri(uri: str) -> str:
    """The URI without a password, for logs."""
    return re.sub(r"//([^:/@]+):[^@/]*@", r"//\1:***@", uri)


def _store_error(uri: str, error: BaseException) -> TrackingError:
    """One line that names the cause and the fix where the server said what it was: a host name it does not
    accept (MLflow 3's DNS-rebinding guard), a missing or refused login (its basic-auth app)."""
    text = str(error)
    server = _safe_uri(uri)
    host = urllib.parse.urlsplit(uri).netloc.rsplit("@", 1)[-1]  # the Host header the client sends
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    if "Invalid Host header" in text:
        return TrackingError(f"the MLflow server {server} refused the host name {host} (its guard against DNS "
                             f"rebinding): start the server with --allowed-hosts naming it, e.g. mlflow server ... "
                             f"--allowed-hosts {host} (or MLFLOW_SERVER_ALLOWED_HOSTS={host})")
    if "error code 401" in text:
        if not user:
            return TrackingError(f"the MLflow server {server} asks for a login: set MLFLOW_TRACKING_USERNAME and "
                                 "MLFLOW_TRACKING_PASSWORD (an account its admin created)")
        return TrackingError(f"the MLflow server {server} refused the login of {user!r}: check "
                             "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD")
    if "error code 403" in text and "Permission denied" in text:
        return TrackingError(f"the MLflow server {server} does not let {user!r} write here: its admin must grant "
                             "that account EDIT (or MANAGE) on the experiment, or make EDIT the default permission")
    return TrackingError(f"cannot write to the MLflow store {server}: {_one_line(error)}")


def _one_line(error: BaseException) -> str:
    """The most telling line of an error: the database driver's own message when one is in the chain
    ("database is locked"), else the first line."""
    seen, cause = set(), error
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        original = getattr(cause, "orig", None)  # SQLAlchemy keeps the driver's exception here
        if isinstance(original, BaseException):
            return f"{type(original).__name__}: {original}".splitlines()[0][:300]
        cause = cause.__cause__ or cause.__context__
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:300]


def _prepare_sqlite(uri: str) -> None:
    """WAL mode lets readers (mlflow ui) and one writer work at once; it persists in the file."""
    db = _sqlite_path(uri)
    if db is None or db.exists():
        return
    import sqlite3

    with contextlib.closing(sqlite3.connect(db)) as connection:
        connection.execute("PRAGMA journal_mode=WAL")


def _wait_for_other_writers(uri: str) -> None:
    """A program outside the store lock (a sqlite3 shell, another tool) may hold SQLite's write lock. Wait
    for it as long as for one of our own stages, not MLflow's fixed 20 s, and then say what holds it."""
    db = _sqlite_path(uri)
    if db is None:
        return
    import sqlite3

    timeout = _lock_timeout()
    with contextlib.closing(sqlite3.connect(db, timeout=timeout, isolation_level=None)) as connection:
        try:
            connection.execute("BEGIN IMMEDIATE")  # takes the write lock, or waits up to timeout for it
        except sqlite3.OperationalError as error:
            if "locked" not in str(error):
                raise
            raise TrackingError(f"cannot write to the MLflow store {db}: another program has held it locked for "
                                f"{timeout:g} s (a sqlite3 shell mid-transaction?); end its transaction, or "
                                f"raise {LOCK_TIMEOUT_ENV}") from None
        connection.execute("ROLLBACK")


def _experiment_id(client, name: str, uri: str) -> str:
    """The experiment's id, created on first use. In the embedded store its artifacts go to this repository's
    mlruns/, whatever location an earlier copy of the repository recorded (see _own_artifact_location)."""
    db = _sqlite_path(uri)
    artifacts = (repo_root() / "mlruns").as_uri() if db is not None else None  # MLflow's default is relative
    embedded = db is not None and db.parent == repo_root()
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        from mlflow.exceptions import MlflowException

        try:
            return client.create_experiment(name, artifact_location=artifacts)
        except MlflowException as error:  # on a shared server another worker may create it first
            if getattr(error, "error_code", None) != "RESOURCE_ALREADY_EXISTS":
                raise
            experiment = client.get_experiment_by_name(name)
    if embedded and experiment.artifact_location != artifacts:
        _own_artifact_location(db, experiment, artifacts)
    return experiment.experiment_id


def _own_artifact_location(db: Path, experiment, artifacts: str) -> None:
    """A copied or moved repository carries a store whose experiment points at the original's mlruns/ (MLflow
    records it as an absolute URI): new runs would write their artifacts into the original folder. Point it at
    this repository's own mlruns/ instead, and say so. MLflow has no API to move an experiment's artifact
    location, so the embedded store's row is updated directly."""
    import sqlite3

    log.warning("the MLflow store's artifact location %s is outside this repository (a copied or moved "
                "repository?); new runs write their artifacts to %s", experiment.artifact_location, artifacts)
    with contextlib.closing(sqlite3.connect(db)) as connection, connection:
        connection.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = ?",
                           (artifacts, experiment.experiment_id))
