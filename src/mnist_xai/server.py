"""The stage server: torch, MLflow and matplotlib imported once, each stage run in a fork of it.

Every stage used to pay about 3.5 s before doing any work: 1.2-1.6 s importing torch, 1.1-1.4 s importing
MLflow, 0.4 s matplotlib, 0.6 s opening the MLflow store. The server is a process of this environment that has
imported them (nothing of mnist_xai: every stage imports the project's code fresh from disk) and keeps the
embedded stores it has opened; a stage script hands its argv, working directory, environment and standard
streams to it over a Unix socket, the server forks, and the fork runs the script as `python` would, writing to
the caller's own stdout and stderr. The caller waits for the exit status and forwards SIGINT, SIGTERM and
SIGHUP; if the caller dies (SIGKILL), the fork kills itself. Outputs are the same bytes either way: each fork
starts from the same pristine state, seeds what it uses, and sets torch's threads from its own environment.

The first stage finds no server: it starts one in the background and runs in its own process. The server
exits after MNIST_XAI_SERVER_IDLE seconds (default 600) without a stage. MNIST_XAI_SERVER=0 turns it off.
The socket lives in a folder only this user can enter, and its name is keyed by the Python environment, its
PYTHONPATH and this file, so an upgraded environment, another import path or a changed server starts a new one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

log = logging.getLogger(__name__)

ENABLE_ENV = "MNIST_XAI_SERVER"
IDLE_ENV = "MNIST_XAI_SERVER_IDLE"
SERVED_ENV = "MNIST_XAI_SERVED"  # set in a fork that runs a stage
# torch._dynamo: torch's optimizers import it on their first construction, only to mark their __init__ as
# not to be compiled (0.9 s in every stage that trains: train_random_labels and train_decoy)
PRELOAD = ("torch", "torch._dynamo", "numpy", "matplotlib", "matplotlib.pyplot", "PIL.Image", "jinja2", "mlflow",
           "mlflow.tracking", "mlflow.entities", "mlflow.store.tracking.sqlalchemy_store", "tqdm.auto")


def available() -> bool:
    return (os.environ.get(ENABLE_ENV, "1") != "0" and os.environ.get(SERVED_ENV) != "1"
            and hasattr(os, "fork") and hasattr(socket, "send_fds"))


def socket_path() -> Path:
    """One server per Python environment, import path and version of this file: an upgraded environment, another
    PYTHONPATH, or a changed server, starts a new one (the old one idles out). A fork imports the project's code
    through the server's import path and runs with what the server imported at start (a sitecustomize, for one), so
    a client whose PYTHONPATH differs must not be served by it."""
    key = "|".join([sys.executable, sys.version, str(_mtime(Path(__file__))), os.environ.get("PYTHONPATH", ""),
                    *(f"{p}:{_mtime(Path(p))}" for p in sys.path if p.endswith("site-packages"))])
    folder = Path(os.environ.get("XDG_RUNTIME_DIR") or "/tmp") / f"mnist-xai-{os.getuid()}"
    return folder / f"stage-{hashlib.sha256(key.encode()).hexdigest()[:16]}.sock"


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


def _private_folder(folder: Path) -> None:
    """The socket's folder, created 0700; refused if another user owns it or it is a link."""
    folder.mkdir(mode=0o700, exist_ok=True)
    info = os.lstat(folder)
    if info.st_uid != os.getuid() or not os.path.isdir(folder) or os.path.islink(folder) or info.st_mode & 0o077:
        raise OSError(f"{folder} is not a private folder of this user")


# --- the caller's side -------------------------------------------------------------------------------------

def delegate() -> int | None:
    """Run this process's stage in the server and return its exit status; None when there is no server to run
    it (one is then started for the next stage, and the caller runs this one itself)."""
    if not available():
        return None
    path = socket_path()
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        connection.connect(str(path))
    except OSError:
        connection.close()
        _start_server(path)
        return None
    with connection:
        request = json.dumps({"argv": sys.argv, "cwd": os.getcwd(), "env": dict(os.environ)}).encode()
        streams = [fd for fd in (0, 1, 2) if _is_open(fd)]
        header = json.dumps({"size": len(request), "streams": streams}).encode()
        socket.send_fds(connection, [len(header).to_bytes(4, "big") + header], streams)
        connection.sendall(request)
        reader = connection.makefile("rb")
        started = reader.readline()
        if not started:
            return None  # the server went away before forking: run here
        child = json.loads(started)["pid"]

        def forward(signum, _frame):
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signum)

        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, forward)
        finished = reader.readline()
        return int(finished) if finished.strip() else 1  # no status: the fork died without reporting


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False


def _start_server(path: Path) -> None:
    """Start a server in the background, in a session of its own (if another is starting, the newcomer sees
    its lock and leaves)."""
    try:
        _private_folder(path.parent)
    except OSError:
        return
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}
    with open(path.with_suffix(".log"), "ab") as server_log:
        subprocess.Popen([sys.executable, "-m", "mnist_xai.server", str(path)], stdin=subprocess.DEVNULL,
                         stdout=server_log, stderr=server_log, start_new_session=True, env=env)


# --- the server's side -------------------------------------------------------------------------------------

def serve(path: Path) -> None:
    import fcntl

    lock = open(path.with_suffix(".lock"), "a")  # noqa: SIM115 - held for the server's lifetime
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return  # a server for this environment is already starting or running
    for module in PRELOAD:
        __import__(module)
    import matplotlib

    matplotlib.use("Agg")
    idle = float(os.environ.get(IDLE_ENV, "600"))
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.unlink(missing_ok=True)
    listener.bind(str(temporary))
    os.chmod(temporary, 0o600)
    listener.listen(16)
    os.replace(temporary, path)
    _server_files.extend([listener.fileno(), lock.fileno()])
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # forks are reaped by the kernel
    log.info("stage server %d listening on %s", os.getpid(), path)
    last = time.monotonic()
    while True:
        ready, _, _ = select.select([listener], [], [], 5.0)
        if not ready:
            if time.monotonic() - last > idle:
                break
            continue
        connection, _ = listener.accept()
        last = time.monotonic()
        try:
            header, streams = _receive_header(connection)
            request = json.loads(_receive_exactly(connection, header["size"]))
        except (OSError, ValueError, KeyError):
            connection.close()
            continue
        _prepare_stores(request["env"], request["cwd"])
        if os.fork() == 0:
            _run_stage(connection, request, dict(zip(header["streams"], streams, strict=True)))  # never returns
        for fd in streams:
            os.close(fd)
        connection.close()
    with contextlib.suppress(OSError):
        if os.stat(path).st_ino == os.fstat(listener.fileno()).st_ino:
            path.unlink()
    log.info("stage server %d idle for %.0f s: exiting", os.getpid(), idle)


def _receive_header(connection: socket.socket) -> tuple[dict, list[int]]:
    """The caller's first message: its standard streams (as file descriptors), and the header's length."""
    start, streams, _, _ = socket.recv_fds(connection, 4, 3)
    size = int.from_bytes(start + _receive_exactly(connection, 4 - len(start)), "big")
    return json.loads(_receive_exactly(connection, size)), list(streams)


def _receive_exactly(connection: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = connection.recv(size - len(data))
        if not chunk:
            raise OSError("the caller closed the connection")
        data.extend(chunk)
    return bytes(data)


_server_files: list[int] = []  # the listening socket and the lock: a fork closes them
_warm: dict[str, tuple[object, tuple[int, int]]] = {}  # uri -> (store, the database file's device and inode)


def _prepare_stores(env: dict, cwd: str) -> None:
    """Open the embedded MLflow store the stage will use, once per store, so that forks inherit it (0.6 s each
    otherwise); its connections are closed before forking, and each fork opens its own."""
    uri = env.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(env.get('DVC_ROOT') or cwd).resolve() / 'mlflow.db'}"
    database = Path(uri.removeprefix("sqlite:///"))
    if not uri.startswith("sqlite:///") or not database.is_file() or uri in _warm:
        return
    try:
        with store_locked(database) as locked:
            if not locked:  # another process has held the store for long: the stage opens it itself
                return
            from mlflow.tracking._tracking_service.utils import _get_store

            store = _get_store(uri)
            store.engine.dispose()
        info = database.stat()
        _warm[uri] = (store, (info.st_dev, info.st_ino))
    except Exception:  # noqa: BLE001 - a store that cannot open here is opened (and reported) by the stage
        log.warning("could not open %s in the server", uri, exc_info=True)


@contextlib.contextmanager
def store_locked(database: Path, timeout: float = 30.0):
    """The embedded MLflow store's inter-process lock, a flock on `<database>.lock`, waited for up to `timeout`
    seconds; yields whether it was taken. tracking.store_lock takes it for every write; the server takes it to open
    a store, since opening creates or migrates its tables and a stage of another experiment may be doing just that
    on a database it has only just created (two queued experiments starting at once met "table
    _alembic_tmp_experiments already exists"). Here, not in tracking.py, because the server imports nothing else of
    mnist_xai."""
    import fcntl

    with open(database.with_name(database.name + ".lock"), "a") as handle:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    yield False
                    return
                time.sleep(0.05)
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _reopen_stores() -> None:
    """In a fork: SQLAlchemy's rule for forked processes, drop the inherited connection pools without closing
    the server's connections. A database file replaced since the server opened it (deleted, re-created) gets a
    store opened afresh, which creates its tables."""
    replaced = False
    for uri, (store, identity) in _warm.items():
        store.engine.dispose(close=False)
        try:
            info = Path(uri.removeprefix("sqlite:///")).stat()
            replaced |= (info.st_dev, info.st_ino) != identity
        except OSError:
            replaced = True
    if replaced:
        from mlflow.tracking._tracking_service.utils import _tracking_store_registry

        _tracking_store_registry._get_store_with_resolved_uri.cache_clear()


def _run_stage(connection: socket.socket, request: dict, streams: dict[int, int]) -> None:
    """In the fork: become the stage process the caller would have been, run the script, report its status."""
    code = 1
    try:
        for fd in _server_files:
            os.close(fd)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the stage's own subprocesses (git) must be waitable
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        for target in (0, 1, 2):
            source = streams.get(target)
            if source is None:
                source = os.open(os.devnull, os.O_RDWR)
            os.dup2(source, target)
            os.close(source)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        os.environ[SERVED_ENV] = "1"
        sys.stdout.reconfigure(line_buffering=os.isatty(1))
        for handler in list(logging.root.handlers):  # the stage configures its own logging, as in a new process
            logging.root.removeHandler(handler)
        for name in [name for name in sys.modules if name == "mnist_xai" or name.startswith("mnist_xai.")]:
            del sys.modules[name]  # the project's code is imported fresh by each stage
        _match_threads()
        _reopen_stores()
        connection.sendall(json.dumps({"pid": os.getpid()}).encode() + b"\n")
        threading.Thread(target=_die_with_the_caller, args=(connection,), daemon=True).start()
        script = request["argv"][0]
        sys.argv = list(request["argv"])
        sys.path[0] = str(Path(script).resolve().parent)
        import runpy

        try:
            runpy.run_path(script, run_name="__main__")
            code = 0
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
            if isinstance(exit_.code, str):
                print(exit_.code, file=sys.stderr)
    except BaseException:  # noqa: BLE001 - report anything, as python itself would
        import traceback

        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        with contextlib.suppress(OSError):
            connection.sendall(f"{code}\n".encode())
        os._exit(code)


def _match_threads() -> None:
    """OpenMP read OMP_NUM_THREADS when the server imported torch: follow the stage's own setting instead."""
    import torch

    threads = os.environ.get("OMP_NUM_THREADS", "")
    torch.set_num_threads(int(threads) if threads.isdigit() and int(threads) > 0 else _default_threads())


def _default_threads() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def _die_with_the_caller(connection: socket.socket) -> None:
    """The caller never sends again: an end of stream means it is gone (SIGKILL, a crash), and so must we be."""
    with contextlib.suppress(OSError):
        while connection.recv(1024):
            pass
    os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    serve(Path(sys.argv[1]))
