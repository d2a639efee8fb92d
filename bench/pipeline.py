"""Where `dvc repro`'s time goes, per stage and per scenario, in a temporary clone of this repository.

    python bench/pipeline.py                  # 3 runs of each scenario, HEAD
    python bench/pipeline.py --runs 1 --rev c0fd206
    python bench/pipeline.py --runs 1 --scenarios full one-method --set quality.n_images=100   # another profile

Scenarios (default params, this machine):
  full        `dvc repro` from scratch, as in a fresh clone (no outputs, no run cache, no MLflow store; the
              stage server stopped first)
  no-op       `dvc repro` with nothing to do
  one-method  after a change of explain.methods.smoothgrad.sigma (a new value each run)
  quality     after a change of quality.sensitivity_samples (a new value each run)

Per stage: wall time (between DVC's "Running stage" lines), own work (what the stage logs as its work:
training, attributing, scoring, building the page), fixed cost = wall - work, and where the fixed cost went:
the stage process's start-up and imports, MLflow, the rest of the process (loading data and models), and
DVC itself (hashing, caching, the lock file, launching the command). Medians of the runs.

Not a test: it prints numbers (and writes bench/results/pipeline.json).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


def run_repro(repo: Path, env: dict, *args: str) -> tuple[float, list[tuple[str, float]], str]:
    """`dvc repro`: its wall time, and each stage with the time its "Running stage" line appeared."""
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "dvc", "repro", *args], cwd=repo, env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    stages, output = [], []
    for line in process.stdout:
        output.append(line)
        if line.startswith("Running stage '"):
            stages.append((line.split("'")[1], time.perf_counter() - started))
    process.wait()
    total = time.perf_counter() - started
    if process.returncode != 0:
        raise SystemExit(f"dvc repro failed in {repo}:\n{''.join(output)[-3000:]}")
    return total, stages, "".join(output)


def stage_walls(stages: list[tuple[str, float]], total: float) -> dict[str, float]:
    if not stages:
        return {}
    ends = [t for _, t in stages[1:]] + [total]
    return {name: end - start for (name, start), end in zip(stages, ends, strict=True)}


def read_timing(log: Path) -> dict[str, dict]:
    records = {}
    if log.exists():
        for line in log.read_text().splitlines():
            record = json.loads(line)
            records[record["stage"]] = record
    log.unlink(missing_ok=True)
    return records


def stop_servers() -> None:
    """The stage server of this environment: a full run from scratch starts without one, as in a fresh clone."""
    result = subprocess.run(["pgrep", "-f", "mnist_xai.server"], capture_output=True, text=True)
    for pid in result.stdout.split():
        os.kill(int(pid), signal.SIGTERM)
    time.sleep(0.5)


def set_param(repo: Path, path: list[str], value) -> None:
    from ruamel.yaml import YAML

    yaml = YAML()  # round-trip: comments kept
    params = yaml.load((repo / "params.yaml").read_text())
    node = params
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with open(repo / "params.yaml", "w") as handle:
        yaml.dump(params, handle)


def scenario(name: str, repo: Path, env: dict, log: Path, runs: int, before_each=None) -> list[dict]:
    results = []
    for run in range(runs):
        if before_each:
            before_each(run)
        total, stages, output = run_repro(repo, env)
        timing = read_timing(log)
        walls = stage_walls(stages, total)
        rows = {stage: {"wall": wall, **timing.get(stage, {})} for stage, wall in walls.items()}
        results.append({"total": total, "stages": rows, "ran": [s for s, _ in stages]})
        print(f"  {name} run {run + 1}: {total:.1f} s, {len(stages)} stages", flush=True)
    return results


def summarise(results: list[dict]) -> dict:
    total = statistics.median(r["total"] for r in results)
    stages = {}
    for stage in {stage: None for r in results for stage in r["stages"]}:
        rows = [r["stages"][stage] for r in results if stage in r["stages"]]

        def median(key, rows=rows):
            values = [row[key] for row in rows if key in row]
            return statistics.median(values) if values else None

        wall, work = median("wall"), median("work")
        startup, main, tracking = median("startup"), median("main"), median("tracking")
        process = (startup or 0) + (main or 0) if main is not None else None
        stages[stage] = {
            "wall": wall, "work": work, "fixed": wall - work if work is not None else None,
            "imports_startup": startup, "tracking": tracking,
            "process_other": main - work - tracking if main is not None and tracking is not None else None,
            "dvc_and_launch": wall - process if process is not None else None,
            "served": any(row.get("server") for row in rows)}
    return {"total": total, "runs": [r["total"] for r in results], "ran": results[0]["ran"], "stages": stages}


def print_scenario(name: str, summary: dict) -> None:
    runs = ", ".join(f"{t:.1f}" for t in summary["runs"])
    print(f"\n{name}: median {summary['total']:.1f} s (runs: {runs}); {len(summary['ran'])} stages ran")
    if not summary["stages"]:
        return
    print(f"  {'stage':26s} {'wall':>6s} {'work':>6s} {'fixed':>6s} {'start':>6s} {'mlflow':>6s} {'other':>6s} "
          f"{'dvc':>6s}")

    def cell(value):
        return f"{value:6.2f}" if value is not None else "     –"

    for stage, row in summary["stages"].items():
        print(f"  {stage:26s} {cell(row['wall'])} {cell(row['work'])} {cell(row['fixed'])} "
              f"{cell(row['imports_startup'])} {cell(row['tracking'])} {cell(row['process_other'])} "
              f"{cell(row['dvc_and_launch'])}{'' if row['served'] else '  (own process)'}")
    fixed = [row["fixed"] for row in summary["stages"].values() if row["fixed"] is not None]
    if fixed:
        print(f"  fixed cost per stage: median {statistics.median(fixed):.2f} s, max {max(fixed):.2f} s, "
              f"sum {sum(fixed):.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rev", default="HEAD", help="the revision to clone (committed work only)")
    parser.add_argument("--scenarios", nargs="+", default=["full", "no-op", "one-method", "quality"])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a param of params.yaml to change in the clone before the scenarios (repeatable), "
                        "e.g. quality.n_images=100: what a cheaper profile costs")
    parser.add_argument("--keep", action="store_true", help="keep the temporary clone")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    repo = workdir / "repo"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(repo)], check=True)
    subprocess.run(["git", "-C", str(repo), "checkout", "-q", args.rev], check=True)
    from ruamel.yaml import YAML

    for setting in args.set:  # the value parsed as YAML: 100 is a number, cpu a string
        key, _, value = setting.partition("=")
        set_param(repo, key.split("."), YAML(typ="safe").load(value))
    log = workdir / "timing.jsonl"
    # PYTHONPATH: the clone's own library, not the one this environment has installed in editable mode (the
    # working tree's), so that --rev measures that revision's code, not its stage scripts on today's library
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": str(repo / "src"), "MLFLOW_DISABLE_TELEMETRY": "true", "MNIST_XAI_TIMING_LOG": str(log)}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("MNIST_XAI_MIRRORS", None)
    commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    print(f"benchmarking {commit} in {repo} ({args.runs} runs per scenario, {os.cpu_count()} CPUs)"
          f"{' with ' + ' '.join(args.set) if args.set else ''}", flush=True)

    def from_scratch(_run):
        """As in a fresh clone: no outputs, no DVC cache, no MLflow store (creating one costs about 0.7 s)."""
        stop_servers()
        for folder in ("data", "models", "metrics", "plots", "predictions", "explanations", "quality", "reports",
                       "ground_truth", "fingerprints", ".dvc/cache", ".dvc/tmp", "mlruns", "mlartifacts"):
            subprocess.run(["rm", "-rf", str(repo / folder)], check=True)
        for store in repo.glob("mlflow.db*"):
            store.unlink()

    setups = {
        "full": from_scratch,
        "no-op": None,
        "one-method": lambda run: set_param(repo, ["explain", "methods", "smoothgrad", "sigma"],
                                            round(0.16 + 0.01 * run, 2)),
        "quality": lambda run: set_param(repo, ["quality", "sensitivity_samples"], 7 - run),
    }
    summaries = {}
    for name in [s for s in setups if s in args.scenarios]:
        summaries[name] = summarise(scenario(name, repo, env, log, args.runs, setups[name]))
        print_scenario(name, summaries[name])
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"pipeline-{commit}{'-set' if args.set else ''}.json"
    out.write_text(json.dumps({"commit": commit, "runs": args.runs, "set": args.set, "scenarios": summaries},
                              indent=2))
    print(f"\nwrote {out}")
    if not args.keep:
        subprocess.run(["rm", "-rf", str(workdir)], check=True)


if __name__ == "__main__":
    main()
