"""Where a no-op `dvc repro` spends its time, in a repository whose pipeline is up to date.

    python bench/pipeline.py --runs 1 --scenarios full --keep    # prints the clone's path
    python bench/dvc_noop.py /tmp/bench-pipeline-XXXX/repo        # 5 runs, medians

Each run is a fresh `dvc repro` process with timers around the DVC functions that do the work (DVC's
internals: this reads DVC 3.67, pinned in constraints.txt). Nothing of this project runs in a no-op, so the
split shows what the pipeline's shape costs DVC: its number of stages, deps, outs and params.

Not a test: it prints numbers.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

# (label, module, attribute): timed around every call (none of them calls another)
TIMED = [
    ("load dvc.yaml + dvc.lock (index)", "dvc.repo.index", "Index.from_repo"),
    ("load dvc.yaml + dvc.lock (stages to run)", "dvc.repo.reproduce", "collect_stages"),
    ("stage graph (networkx)", "dvc.repo.graph", "build_graph"),
    ("params.yaml, read once per stage", "dvc.dependency.param", "read_param_file"),
    ("deps and outs: hashes checked", "dvc.output", "Output.status"),
]
RWLOCK = "rwlock file edits (8 per stage)"  # a context manager, timed apart


def child() -> None:
    import contextlib
    import functools
    import importlib

    from dvc.cli import main

    seconds: dict[str, float] = {}
    calls: dict[str, int] = {}

    def timed(label, function):
        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            begin = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                seconds[label] = seconds.get(label, 0.0) + time.perf_counter() - begin
                calls[label] = calls.get(label, 0) + 1
        return wrapper

    for label, module_name, attribute in TIMED:
        module = importlib.import_module(module_name)
        owner_name, _, name = attribute.rpartition(".")
        owner = getattr(module, owner_name) if owner_name else module
        function = owner.__dict__[name]
        if isinstance(function, classmethod):
            setattr(owner, name, classmethod(timed(label, function.__func__)))
        else:
            setattr(owner, name, timed(label, function))

    import dvc.rwlock

    edit = dvc.rwlock._edit_rwlock

    @contextlib.contextmanager
    def timed_edit(*args, **kwargs):
        begin = time.perf_counter()
        with edit(*args, **kwargs) as lock:
            yield lock
        seconds[RWLOCK] = seconds.get(RWLOCK, 0.0) + time.perf_counter() - begin
        calls[RWLOCK] = calls.get(RWLOCK, 0) + 1

    dvc.rwlock._edit_rwlock = timed_edit
    begin = time.perf_counter()
    code = main(["repro", "-q"])
    ran = time.perf_counter() - begin
    print(json.dumps({"code": code, "repro": ran, "seconds": seconds, "calls": calls}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("repo", type=Path, help="a repository whose pipeline is up to date")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child()
        return

    if subprocess.run(["dvc", "status", "-q"], cwd=args.repo).returncode != 0:
        raise SystemExit(f"the pipeline in {args.repo} is not up to date (dvc status): run dvc repro there first")
    walls, child_walls, results = [], [], []
    for _ in range(args.runs):
        begin = time.perf_counter()
        subprocess.run(["dvc", "repro", "-q"], cwd=args.repo, check=True)  # plain, for the wall time
        walls.append(time.perf_counter() - begin)
        begin = time.perf_counter()
        out = subprocess.run([sys.executable, __file__, str(args.repo), "--child"], cwd=args.repo, check=True,
                             capture_output=True, text=True).stdout
        child_walls.append(time.perf_counter() - begin)
        results.append(json.loads(out.strip().splitlines()[-1]))
    if any(r["code"] for r in results):
        raise SystemExit("dvc repro failed")

    def median(key):
        return statistics.median(r["seconds"].get(key, 0.0) for r in results)

    print(f"no-op `dvc repro` in {args.repo}: median {statistics.median(walls):.2f} s "
          f"(runs: {', '.join(f'{w:.2f}' for w in walls)})")
    repro = statistics.median(r["repro"] for r in results)
    print(f"  instrumented: {statistics.median(child_walls):.2f} s, of which")
    print(f"    {'Python start-up, DVC imported':45s} {statistics.median(child_walls) - repro:5.2f} s")
    print(f"    {'dvc repro itself':45s} {repro:5.2f} s, of which")
    labels = [label for label, *_ in TIMED] + [RWLOCK]
    for label in labels:
        print(f"      {label:43s} {median(label):5.2f} s over {results[0]['calls'].get(label, 0)} calls")
    rest = statistics.median(r["repro"] - sum(r["seconds"].get(label, 0.0) for label in labels) for r in results)
    print(f"      {'the rest (its CLI, repo, git, imports on use)':43s} {rest:5.2f} s")


if __name__ == "__main__":
    main()
