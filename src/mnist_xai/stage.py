"""What every stage script shares: logging set-up and the one-line error contract."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

from mnist_xai.errors import UserError


class Terminated(KeyboardInterrupt):
    """SIGTERM (a CI cancel, `timeout`, `kill`), handled like Ctrl-C: outputs stay as they were, the MLflow
    run is marked KILLED."""


def _terminate(signum, _frame):
    raise Terminated(signal.Signals(signum).name)


_seconds = {"work": 0.0, "tracking": 0.0}


@contextmanager
def work():
    """Time the stage's own work (what it is for: training, attributing, scoring, building the page), as
    distinct from its fixed cost (start-up, imports, loading, tracking). bench/pipeline.py reads it."""
    started = time.perf_counter()
    try:
        yield
    finally:
        _seconds["work"] += time.perf_counter() - started


def add_tracking_seconds(seconds: float) -> None:
    _seconds["tracking"] += seconds


def run(main: Callable[[], None]) -> None:
    """Run a stage's main(). A UserError, or a file the system cannot read or write (disk full, permissions),
    becomes one line on stderr and exit status 2; SIGINT and SIGTERM one line and 130 / 143."""
    if os.environ.get("MNIST_XAI_SERVED") != "1":
        from mnist_xai import server

        code = server.delegate()  # run in the stage server, which has torch and MLflow imported already
        if code is not None:
            sys.exit(code)
    startup = _process_age()
    started = time.perf_counter()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)  # MLflow's schema migrations are noise
    _share_cores()
    signal.signal(signal.SIGTERM, _terminate)
    try:
        main()
        _record_imports()
        _record_timing(startup, time.perf_counter() - started)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except OSError as error:  # the environment, not the code: say which file and why, in one line
        where = f" {error.filename}" if error.filename else ""
        print(f"error: cannot access{where}: {error.strerror or error}; free disk space or fix permissions, "
              "then re-run (the previous outputs are intact: they are replaced only when complete)", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt as interrupt:
        terminated = isinstance(interrupt, Terminated)
        print(f"error: {'terminated' if terminated else 'interrupted'}; outputs are unchanged (they are written "
              "atomically)", file=sys.stderr)
        sys.exit(143 if terminated else 130)


IMPORT_LOG = "MNIST_XAI_IMPORT_LOG"
"""When set, each stage appends the files of the mnist_xai modules it loaded to this file (one JSON line): the
test that every stage's dvc.yaml deps cover its code reads it."""


def _record_imports() -> None:
    log_file = os.environ.get(IMPORT_LOG)
    if not log_file:
        return
    files = sorted({module.__file__ for name, module in list(sys.modules.items())
                    if (name == "mnist_xai" or name.startswith("mnist_xai.")) and getattr(module, "__file__", None)
                    and name != "mnist_xai.server"})  # the launcher that started the stage computes nothing in it
    record = {"stage": os.environ.get("DVC_STAGE") or os.path.basename(sys.argv[0]), "script": sys.argv[0],
              "modules": files}
    with open(log_file, "a") as handle:
        handle.write(json.dumps(record) + "\n")


TIMING_LOG = "MNIST_XAI_TIMING_LOG"
"""When set, each stage appends where its time went to this file (one JSON line): bench/pipeline.py reads it."""


def process_start(pid: int) -> str:
    """A process's start time in clock ticks since boot (field 22 of /proc/<pid>/stat); '' when unknown."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def _process_age() -> float:
    """Seconds since this process started (interpreter start-up and the script's imports so far)."""
    try:
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - int(process_start(os.getpid())) / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError):
        return 0.0


def _record_timing(startup: float, main: float) -> None:
    log_file = os.environ.get(TIMING_LOG)
    work = _seconds["work"]
    logging.getLogger("stage").info("%.2f s of work, %.2f s of fixed cost in the stage (start-up %.2f s, tracking "
                                    "%.2f s)", work, startup + main - work, startup, _seconds["tracking"])
    if not log_file:
        return
    record = {"stage": os.environ.get("DVC_STAGE") or os.path.basename(sys.argv[0]), "startup": round(startup, 3),
              "main": round(main, 3), "work": round(work, 3), "tracking": round(_seconds["tracking"], 3),
              "server": os.environ.get("MNIST_XAI_SERVED") == "1"}
    with open(log_file, "a") as handle:
        handle.write(json.dumps(record) + "\n")


def _running_folder() -> Path:
    return Path(os.environ.get("XDG_RUNTIME_DIR") or "/tmp") / f"mnist-xai-{os.getuid()}" / "running"


_sharing: dict = {}  # set by _share_cores when this stage shares the cores: its folder, cores, threads, last count


def _running_stages(folder: Path) -> int:
    """How many stages are running now (this one included); forgets those that are gone."""
    running = 0
    for entry in folder.iterdir():
        pid, _, start = entry.name.partition("-")
        if pid.isdigit() and process_start(int(pid)) == start:
            running += 1
        else:
            entry.unlink(missing_ok=True)
    return max(1, running)


def _share_cores() -> None:
    """Stages running at once (`dvc queue start -j 2`, or two pipelines) share the cores instead of
    oversubscribing them: two 2-thread OpenMP processes on 2 cores ran SmoothGrad at 8 images/s instead of 126.
    Each stage registers itself and takes cores // (stages running) threads, and follows that number while it
    runs (follow_running_stages). OMP_NUM_THREADS, when set, wins."""
    if os.environ.get("OMP_NUM_THREADS") and os.environ.get("MNIST_XAI_THREADS_SHARED") != "1":
        return
    folder = _running_folder()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        me = folder / f"{os.getpid()}-{process_start(os.getpid())}"
        me.touch()
        running = _running_stages(folder)
    except OSError:
        return
    import atexit

    atexit.register(me.unlink, missing_ok=True)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    threads = max(1, cores // running)
    os.environ["OMP_NUM_THREADS"] = str(threads)  # read when torch starts its thread pool
    os.environ["MNIST_XAI_THREADS_SHARED"] = "1"
    if "torch" in sys.modules:  # the stage server imported it already
        sys.modules["torch"].set_num_threads(threads)
    _sharing.update(folder=folder, cores=cores, threads=threads, checked=time.monotonic())
    if running > 1:
        logging.getLogger("stage").info("%d stages running at once: %d of %d cores' threads for this one", running,
                                        threads, cores)


def follow_running_stages(every: float = 2.0, settle: float = 6.0) -> None:
    """Called from long loops (training batches, attribution chunks): at most every `every` seconds, count the
    stages running now and resize torch's thread pool to cores // running. A stage that started alone, with
    every core, gives one back as soon as another starts; it takes it back once it has been alone for `settle`
    seconds (a queued experiment is alone for a moment between two of its stages, while DVC itself works).
    In a `-j 2` queue one stage often starts while the other is between stages: it took 2 threads, the other 1,
    and 3 threads on 2 cores trained a ResNet 3x slower. A no-op outside a stage, or when OMP_NUM_THREADS was
    set."""
    now = time.monotonic()
    if not _sharing or now - _sharing["checked"] < every:
        return
    _sharing["checked"] = now
    try:
        threads = max(1, _sharing["cores"] // _running_stages(_sharing["folder"]))
    except OSError:
        return
    if threads <= _sharing["threads"]:
        _sharing["more_since"] = None
    elif _sharing.get("more_since") is None:
        _sharing["more_since"] = now
    if threads != _sharing["threads"] and "torch" in sys.modules and (
            threads < _sharing["threads"] or now - _sharing["more_since"] >= settle):
        sys.modules["torch"].set_num_threads(threads)
        logging.getLogger("stage").info("stages running changed: now %d of %d cores' threads for this one",
                                        threads, _sharing["cores"])
        _sharing["threads"] = threads
        _sharing["more_since"] = None
