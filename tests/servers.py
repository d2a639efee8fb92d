"""Real servers for tests: an MLflow tracking server, and a private PostgreSQL cluster on loopback."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

SKIP_POSTGRES = "MNIST_XAI_SKIP_POSTGRES"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(url: str, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


@contextmanager
def mlflow_server(backend_store_uri: str, artifacts: Path, log: Path, extra: list[str] = (), env: dict | None = None,
                  workers: int = 1):
    """`mlflow server` on 127.0.0.1 with served artifacts (and `extra` arguments); yields its tracking URI."""
    port = free_port()
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend_store_uri,
               "--artifacts-destination", str(artifacts), "--host", "127.0.0.1", "--port", str(port),
               "--workers", str(workers), *extra]
    # no server-side job workers: the tests start no jobs, and six idle consumers poll for them at 7 % CPU each
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
           **(env or {})}
    with open(log, "w") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=env, cwd=log.parent,
                                   start_new_session=True)  # in its own folder: basic-auth writes basic_auth.db there
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{uri}/health", process)
        yield uri
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


def postgres_binaries() -> Path | None:
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "initdb").is_file():
            return candidate
    found = shutil.which("initdb")
    return Path(found).parent if found else None


@contextmanager
def postgres_cluster(workdir: Path):
    """A throwaway PostgreSQL cluster listening on 127.0.0.1 only; yields a URL for a new database.

    Started here rather than as a system service, so it needs no prior state; .ci/run (dev.sh) installs
    Debian's postgresql. When the binaries are missing the test fails, saying so, unless
    MNIST_XAI_SKIP_POSTGRES=1 asks to skip it."""
    binaries = postgres_binaries()
    if binaries is None:
        message = ("PostgreSQL is not installed (apt-get install postgresql; ./dev.sh test does it as root), "
                   "so the team-server test cannot run against it")
        if os.environ.get(SKIP_POSTGRES) == "1":
            pytest.skip(message)
        pytest.fail(message + f"; set {SKIP_POSTGRES}=1 to skip it knowingly")
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root: use the postgres account the package creates,
        as_user = ["runuser", "-u", "postgres", "--"]  # in a folder it can reach (pytest's are root-only)
        workdir = Path(tempfile.mkdtemp(prefix="mnist-xai-pg-"))
        os.chmod(workdir, 0o755)
        shutil.chown(workdir, "postgres")
    data, sockets = workdir / "pgdata", workdir / "pgsock"
    sockets.mkdir(parents=True, exist_ok=True)
    if as_user:
        shutil.chown(sockets, "postgres")
    port = free_port()
    subprocess.run([*as_user, str(binaries / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                    "-E", "UTF8"], check=True, capture_output=True, timeout=120)
    subprocess.run([*as_user, str(binaries / "pg_ctl"), "-D", str(data), "-l", str(workdir / "postgres.log"),
                    "-o", f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1", "-w", "start"],
                   check=True, capture_output=True, timeout=120)
    try:
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres",
                             autocommit=True) as connection:
            connection.execute("CREATE DATABASE mlflow")
        yield f"postgresql://postgres@127.0.0.1:{port}/mlflow"
    finally:
        subprocess.run([*as_user, str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True, timeout=60)
        if as_user:
            shutil.rmtree(workdir, ignore_errors=True)
