"""One grid through each engine on this machine: wall time per engine and Ray's throughput against DVC's queue.

    python bench/grid_engines.py                       # the 4-cell default grid, HEAD, local then ray
    python bench/grid_engines.py --rev 1a2b3c4 --engines ray --set quality.replicates=2 --set train.epochs=1

For each engine, from a fresh clone of REV with its own bare git remote, a local folder as DVC remote and an
`mlflow server` (SQLite) as the team's server: `mnist-xai grid -S ... --engine local --jobs 2` or `--engine ray
--cpus-per-cell 1` (a cluster of this machine alone), timed from its start to the study page. The engines share the
same cores, so run nothing else meanwhile. `--set` adds a fixed setting to every cell (a smaller grid).

Not a test: it prints numbers (and writes bench/results/grid-engines-<rev>.json).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
GRID = ["base.dataset=mnist,fashion-mnist", "train.arch=cnn,resnet"]


def run(command: list[str], cwd: Path, env: dict) -> str:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{(result.stdout + result.stderr)[-3000:]}")
    return result.stdout


def mlflow_server(folder: Path, env: dict) -> tuple[subprocess.Popen, str]:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = open(folder / "mlflow-server.log", "w")  # noqa: SIM115 - open while the server runs
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
                               f"sqlite:///{folder}/mlflow.db", "--artifacts-destination", str(folder / "artifacts"),
                               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                              cwd=folder, env={**env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
                              stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    import urllib.request

    for _ in range(120):
        try:
            urllib.request.urlopen(f"{uri}/health", timeout=2)
            return server, uri
        except OSError:
            time.sleep(1)
    server.kill()
    raise SystemExit("the MLflow server did not start: see mlflow-server.log")


def one_engine(engine: str, rev: str, settings: list[str], workdir: Path) -> dict:
    """A fresh clone of `rev` with its own remotes and server, then the grid through `engine`, timed."""
    folder = workdir / engine
    folder.mkdir()
    repo, remote = folder / "repo", folder / "remote.git"
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "RAY_USAGE_STATS_ENABLED": "0",
           "PYTHONPATH": str(repo / "src"), "PYTHONUNBUFFERED": "1"}  # the stages import the clone's code
    env.pop("OMP_NUM_THREADS", None)
    run(["git", "clone", "-q", str(ROOT), str(repo)], folder, env)
    run(["git", "checkout", "-q", "-B", "main", rev], repo, env)
    run(["git", "init", "-q", "--bare", str(remote)], folder, env)
    run(["git", "remote", "set-url", "origin", str(remote)], repo, env)
    run([sys.executable, "-m", "dvc", "remote", "add", "-d", "bench", str(folder / "dvc-remote")], repo, env)
    run(["git", "commit", "-qam", "bench: a DVC remote"], repo, env)
    run(["git", "push", "-q", "-u", "origin", "main"], repo, env)
    server, uri = mlflow_server(folder, env)
    env["MLFLOW_TRACKING_URI"] = uri
    grid = [str(Path(sys.executable).parent / "mnist-xai"), "grid", "--root", str(repo)]
    for setting in [*GRID, *settings]:
        grid += ["-S", setting]
    grid += ["--engine", "local", "--jobs", "2"] if engine == "local" else ["--engine", "ray", "--cpus-per-cell", "1"]
    try:
        started = time.perf_counter()
        result = subprocess.run(grid, cwd=repo, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - started
    finally:
        server.terminate()
        server.wait(timeout=30)
    (folder / "grid.log").write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        raise SystemExit(f"the {engine} grid failed (see {folder / 'grid.log'}):\n{result.stderr[-3000:]}")
    cells = [line for line in result.stdout.splitlines() if line.startswith("cell ")]
    print(f"{engine}: {wall:.1f} s", *cells, sep="\n  ", flush=True)
    return {"wall": wall, "cells": cells}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rev", default="HEAD")
    parser.add_argument("--engines", nargs="+", choices=("local", "ray"), default=["local", "ray"])
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                        help="a fixed setting for every cell (repeatable)")
    args = parser.parse_args()
    rev = run(["git", "rev-parse", args.rev], ROOT, dict(os.environ)).strip()
    machine = run(["sh", "-c", "lscpu | sed -n 's/^Model name: *//p'; nproc"], ROOT, dict(os.environ)).split("\n")
    result = {"rev": rev, "grid": GRID, "settings": args.settings, "machine": f"{machine[0]}, {machine[1]} cores",
              "engines": {}}
    workdir = Path(tempfile.mkdtemp(prefix="grid-engines-"))  # kept when an engine fails: its logs are there
    for engine in args.engines:
        result["engines"][engine] = one_engine(engine, rev, args.settings, workdir)
    shutil.rmtree(workdir, ignore_errors=True)
    walls = {engine: value["wall"] for engine, value in result["engines"].items()}
    if len(walls) == 2:
        result["ray_throughput_vs_local"] = walls["local"] / walls["ray"]
        print(f"Ray's throughput against the local queue: {result['ray_throughput_vs_local']:.2f}x")
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"grid-engines-{rev[:7]}-{'-'.join(args.engines)}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
