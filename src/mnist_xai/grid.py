"""Grids of experiments beyond one machine: the cell command any scheduler can run, and `mnist-xai grid`.

A *cell* is one DVC experiment: the pipeline at one commit with some params set (`-S key=value`). DVC cannot run
experiments on other machines, but it shares them: `cell()` clones the repository at the commit, runs the
experiment there (`dvc exp run --pull`: stages already run anywhere come from the DVC remote's run-cache), and
pushes it (`dvc exp push --run-cache`: the git ref to the git remote, the outputs and run-cache to the DVC remote).
Stages log to whatever MLFLOW_TRACKING_URI the machine sets: the team's server. A cell whose
experiment is already on the git remote is skipped, so re-running a cell after its machine died completes it and
pushes it once.

`grid()` expands `-S key=a,b -S other=c,d` into cells and runs them with an engine: `local` queues them in this
repository (`dvc exp run --queue`, `dvc queue start -j N`); `ray` submits one Ray task per cell, each running the
cell command on whichever node Ray picks with that cell's CPUs, retried when its node dies, then pulls the results
(`dvc exp pull`). Either way the study page is built from them.

Credentials never travel in a task's arguments: each node reads the DVC remote's and MLflow's from its own
environment.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mnist_xai.errors import UserError
from mnist_xai.params import read_yaml

log = logging.getLogger(__name__)

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")  # a git ref component DVC accepts as an experiment name


class GridError(UserError):
    """A cell or a grid that cannot run as asked (a name, a setting, a remote, a failed command)."""


def _run(command: list[str], cwd: Path | None = None, env: dict | None = None, what: str | None = None,
         capture: bool = True) -> subprocess.CompletedProcess:
    """Run a command; a failure is one GridError line with the command's last line of output."""
    result = subprocess.run(command, cwd=cwd, env=env, text=True, capture_output=capture)
    if result.returncode != 0:
        output = ((result.stderr or "") + (result.stdout or "")).strip().splitlines()
        detail = output[-1] if output else f"exit status {result.returncode}"
        raise GridError(f"`{what or ' '.join(command[:4])}` failed: {detail}")
    return result


def _dvc(*args: str) -> list[str]:
    return [sys.executable, "-m", "dvc", *args]


def check_settings(settings: list[str]) -> None:
    for setting in settings:
        if "=" not in setting or not setting.split("=", 1)[0].strip():
            raise GridError(f"-S {setting!r}: give key=value, e.g. -S base.seed=1")


def experiment_on_remote(repo_url: str, name: str) -> bool:
    """Whether the git remote holds an experiment of that name (DVC keeps them as refs/exps/../<name>)."""
    refs = _run(["git", "ls-remote", repo_url, "refs/exps/*"], what=f"git ls-remote {repo_url}").stdout
    return any(line.split("\t", 1)[-1].rsplit("/", 1)[-1] == name for line in refs.splitlines())


def cell(repo_url: str, rev: str, name: str, settings: list[str], *, cpus: int | None = None,
         workdir: Path | None = None, die_with_parent: bool = False) -> str:
    """Run one cell: clone `repo_url` at `rev`, `dvc exp run --pull -n name -S ...`, and push the
    experiment with its outputs and run-cache. Returns "pushed (clone s, run s, push s; threads)", or "skipped"
    when the git remote already holds it.
    `cpus` sets the torch threads (OMP_NUM_THREADS) of its stages. `die_with_parent`: when the process that started
    this one dies (a Ray worker whose node died), kill this cell's whole process group, so that the retry elsewhere
    is the only run of it that can push."""
    if die_with_parent:
        _die_with_parent()
    if not NAME.match(name):
        raise GridError(f"--name {name!r}: use letters, digits, '-', '_' and '.', starting with a letter or digit")
    check_settings(settings)
    if experiment_on_remote(repo_url, name):
        log.info("cell %s: already on %s, skipped", name, repo_url)
        return "skipped"
    if not os.environ.get("MLFLOW_TRACKING_URI", "").startswith(("http://", "https://")):
        log.warning("cell %s: MLFLOW_TRACKING_URI names no tracking server, so its MLflow runs stay in a temporary "
                    "clone and are lost; set it to the team's server", name)
    env = {**os.environ, **({"OMP_NUM_THREADS": str(cpus)} if cpus else {})}
    seconds = {}
    with tempfile.TemporaryDirectory(prefix=f"mnist-xai-cell-{name}-", dir=workdir) as folder:
        clone = Path(folder) / "repo"
        started = time.monotonic()
        _run(["git", "clone", "--quiet", repo_url, str(clone)], what=f"git clone {repo_url}")
        _run(["git", "checkout", "--quiet", "--detach", rev], cwd=clone, what=f"git checkout {rev}")
        if not _run(_dvc("remote", "default"), cwd=clone, env=env, what="dvc remote default").stdout.strip():
            raise GridError(f"the repository at {rev} has no default DVC remote to share results through: add one "
                            "(dvc remote add -d team <url>), commit .dvc/config, and push")
        seconds["clone"], started = time.monotonic() - started, time.monotonic()
        log.info("cell %s: running at %s with %s", name, rev, " ".join(settings) or "the default params")
        # no --allow-missing: it skips a stage whose committed outputs never reached the DVC remote, and the next
        # stage then fails to check them out ("Checkout failed", measured with the committed dvc.lock's train)
        _run(_dvc("exp", "run", "--pull", "-n", name,
                  *(arg for setting in settings for arg in ("-S", setting))),
             cwd=clone, env=env, what=f"dvc exp run -n {name}", capture=False)
        seconds["run"], started = time.monotonic() - started, time.monotonic()
        _run(_dvc("exp", "push", "--run-cache", "origin", name), cwd=clone, env=env, what=f"dvc exp push {name}")
        seconds["push"] = time.monotonic() - started
    # what the cell command adds to the experiment itself, for sizing a grid on N machines; and its threads, which
    # decide the float rounding (shared: each stage takes cores // stages running, see mnist_xai.stage)
    threads = f"{env['OMP_NUM_THREADS']} threads" if env.get("OMP_NUM_THREADS") else "threads shared"
    return "pushed (" + ", ".join(f"{step} {value:.1f} s" for step, value in seconds.items()) + f"; {threads})"


def _die_with_parent() -> None:
    """Watch the parent process; once it is gone, SIGKILL this process group (this process leads it: the Ray task
    starts it in a session of its own), dvc and the stages included."""
    import signal
    import threading

    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        os.killpg(os.getpgrp(), signal.SIGKILL)

    threading.Thread(target=watch, name="die-with-parent", daemon=True).start()


def expand(settings: list[str], prefix: str = "cell") -> dict[str, list[str]]:
    """`-S key=a,b -S other=c` -> {name: [key=a, other=c], ...}, one cell per combination; each name joins the
    prefix and the values that vary (cell-mnist-cnn-0)."""
    check_settings(settings)
    axes = []
    for setting in settings:
        key, values = setting.split("=", 1)
        choices = [value.strip() for value in values.split(",")]
        if any(not value for value in choices):
            raise GridError(f"-S {setting!r}: an empty value; give key=a,b,c")
        axes.append([(key.strip(), value) for value in choices])
    cells = {}
    for combination in itertools.product(*axes):
        varying = [value for (key, value), axis in zip(combination, axes, strict=True) if len(axis) > 1]
        name = "-".join([prefix, *(re.sub(r"[^A-Za-z0-9_.-]", "_", value) for value in varying)])
        cells[name] = [f"{key}={value}" for key, value in combination]
    return cells


# What makes a cell long, most first: a ResNet cell ran 2.6x a CNN cell's time (bench/grid_engines.py, docs/study.md;
# its passes cost 2x, and its cascading randomisation re-explains 21 layers to the CNN's 4); then the draws, epochs
# and images
COST_ORDER = (("train.arch", {"resnet": 1.0, "cnn": 0.0}.get), ("quality.replicates", float),
              ("train.epochs", float), ("explain.n_images", float),
              ("train.n_images", lambda n: float(n) or float("inf")))  # 0: all of them


def longest_first(cells: dict[str, list[str]], params: dict) -> list[str]:
    """The cells' names in the order to start them: the longest first (a ResNet before a CNN, then more replicates,
    epochs, images; the grid's own order between equals), each value from the cell's settings or else `params`
    (params.yaml). Two slots that start with the short cells end with one long cell alone, and a slot idle."""
    def cost(name: str) -> tuple:
        values = dict(setting.split("=", 1) for setting in cells[name])
        key = []
        for param, rank in COST_ORDER:
            section, field = param.split(".")
            try:
                key.append(rank(values.get(param, params.get(section, {}).get(field))) or 0.0)
            except (TypeError, ValueError):  # not a number: the stage's own check will say so
                key.append(0.0)
        return tuple(key)

    return sorted(cells, key=cost, reverse=True)  # sorted() is stable: equals keep the grid's order


def run_queue(root: Path, cells: dict[str, list[str]], jobs: int, desc: str = "experiments",
              timeout: float = 12 * 3600) -> list[str]:
    """The local engine: queue every cell not already done here (`dvc exp run --queue -n NAME -S ...`), the
    longest first, run the queue `jobs` at a time and wait for it. Returns the names queued."""
    from mnist_xai.study import list_experiments

    done = {e["name"] for e in list_experiments(root) if not e.get("error")}
    queued = [name for name in longest_first(cells, read_yaml(root / "params.yaml")) if name not in done]
    for name in queued:
        _run(_dvc("exp", "run", "--queue", "-n", name, *(a for s in cells[name] for a in ("-S", s))), cwd=root)
    if not queued:
        return queued
    log.info("queued %d experiments; running %d at a time", len(queued), jobs)
    _run(_dvc("queue", "start", "-j", str(jobs)), cwd=root)
    from tqdm.auto import tqdm

    started = time.monotonic()
    with tqdm(total=len(queued), desc=desc, unit="run") as bar:
        while time.monotonic() - started < timeout:
            status = _run(_dvc("queue", "status"), cwd=root).stdout
            finished = sum(status.count(word) for word in ("Success", "Failed"))
            bar.update(max(0, min(finished, len(queued)) - bar.n))
            if "Queued" not in status and "Running" not in status:
                return queued
            time.sleep(5)
    raise GridError(f"the {desc} did not finish in {timeout / 3600:.0f} h: see `dvc queue status`")


def pushed_commit(root: Path) -> tuple[str, str]:
    """(the git remote's URL, this repository's HEAD commit), which the git remote must already hold: the cells run
    on other machines, which clone it from there."""
    url = _run(["git", "remote", "get-url", "origin"], cwd=root, what="git remote get-url origin").stdout.strip()
    head = _run(["git", "rev-parse", "HEAD"], cwd=root).stdout.strip()
    if _run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root).stdout.strip():
        raise GridError("the working tree has uncommitted changes, which the cells (clones of a commit) would not "
                        "see: commit them and push")
    if not _run(["git", "branch", "-r", "--contains", head], cwd=root).stdout.strip():
        raise GridError(f"commit {head[:10]} is not on the git remote origin ({url}): push it first (git push)")
    return url, head


def run_ray(root: Path, cells: dict[str, list[str]], address: str | None, cpus_per_cell: int,
            retries: int = 3, fixed_threads: bool = False) -> dict[str, str]:
    """The Ray engine: one task per cell, the longest first, each the cell command with `cpus_per_cell` CPUs
    reserved, retried (up to `retries` times) when its worker or node dies; then the experiments pulled into this
    repository. The CPUs reserved decide how many cells a node runs at once; their stages share the node's cores
    as the local queue's do (a cell alone on a node uses every core: a grid's last cell does not leave the rest
    idle), unless `fixed_threads`: then exactly `cpus_per_cell` torch threads each, for outputs that repeat byte
    for byte, or a node shared with other work."""
    url, head = pushed_commit(root)
    # Ray reads these when it is imported: set them first
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # Ray reports usage to its makers unless told not to
    if not address:  # a cluster of this machine alone, on loopback, token-authenticated, with no dashboard
        os.environ.setdefault("RAY_AUTH_MODE", "token")
        if not (os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")):
            import secrets  # a token for this cluster's life, held in this process's environment only (Ray 2.60's
            os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)  # GCS aborts in token mode when it has none)
    try:
        import ray
    except ImportError:
        raise GridError("the Ray engine needs Ray: pip install -e '.[ray]' (or use --engine local)") from None
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(_node_ip_address="127.0.0.1", include_dashboard=False, log_to_driver=False)
    task = ray.remote(num_cpus=cpus_per_cell, max_retries=retries)(_cell_task)
    pending = {task.remote(url, head, name, cells[name], cpus_per_cell if fixed_threads else None): name
               for name in longest_first(cells, read_yaml(root / "params.yaml"))}
    outcome = {}
    from tqdm.auto import tqdm

    try:
        with tqdm(total=len(pending), desc="cells", unit="cell") as bar:
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                name = pending.pop(ready[0])
                try:
                    outcome[name] = ray.get(ready[0])
                except Exception as error:  # noqa: BLE001 - a failed cell is reported, the others go on
                    outcome[name] = f"failed: {str(error).strip().splitlines()[-1]}"
                    log.warning("cell %s %s", name, outcome[name])
                bar.update(1)
    finally:
        ray.shutdown()
    for name, result in outcome.items():
        if not result.startswith("failed"):
            _run(_dvc("exp", "pull", "--run-cache", "origin", name), cwd=root, what=f"dvc exp pull origin {name}")
    return outcome


def cell_invocation(url: str, rev: str, name: str, settings: list[str], threads: int | None,
                    environment: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """The cell command a Ray task runs, and its environment: `threads` torch threads, or (None) the stages share
    the node's cores. Ray sets OMP_NUM_THREADS to the task's CPUs in its workers, which would fix them: dropped."""
    command = [sys.executable, "-m", "mnist_xai.cli", "cell", "--repo", url, "--rev", rev, "--name", name,
               *(["--cpus", str(threads)] if threads else []), "--die-with-parent",
               *(arg for setting in settings for arg in ("-S", setting))]
    env = {key: value for key, value in environment.items() if threads or key != "OMP_NUM_THREADS"}
    return command, env


def _cell_task(url: str, rev: str, name: str, settings: list[str], threads: int | None) -> str:
    """One Ray task: the cell command in a process of its own, as any scheduler runs it."""
    command, env = cell_invocation(url, rev, name, settings, threads, dict(os.environ))
    result = subprocess.run(command, capture_output=True, text=True, start_new_session=True, env=env)
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines()
        errors = [line for line in lines if line.startswith(("ERROR", "error"))]  # the stage's own line first
        raise RuntimeError(" | ".join(errors[:3]) if errors else lines[-1] if lines else
                           f"exit status {result.returncode}")
    last = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else "pushed"
    return last.removeprefix(f"cell {name}: ")
