"""The pipeline's stages, in dvc.yaml's order, on this machine's GPU (base.device: auto), outside DVC (which
could not be carried to the device machine), then every output's shape and keys against a CPU run's
(manifest.json). Run from the repository root; writes $OUT/pipeline.json."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from ruamel.yaml import YAML

WORK = Path("/tmp/pipe")
MANIFEST = Path(__file__).with_name("manifest.json")


def shape(path: Path):
    """What the manifest records of a file: array shapes, JSON key paths (list lengths), or just 'file'."""
    if path.suffix == ".npz":
        with np.load(path) as archive:
            return {key: list(archive[key].shape) for key in archive.files}
    if path.suffix == ".json":
        data = json.loads(path.read_text())
        return sorted(key_paths(data)) if isinstance(data, dict) else [f"list[{len(data)}]"]
    return "file"


def key_paths(value, prefix: str = "") -> list[str]:
    if isinstance(value, dict):
        return [path for key, item in value.items() for path in key_paths(item, f"{prefix}.{key}" if prefix else key)]
    if isinstance(value, list):
        return [f"{prefix}[{len(value)}]"]
    return [prefix]


def main() -> None:
    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir()
    for name in ("params.yaml", "dvc.yaml", "stages", "src", "archives"):
        (shutil.copytree if Path(name).is_dir() else shutil.copy2)(name, WORK / name)
    params = YAML().load((WORK / "params.yaml").read_text())
    assert params["base"]["device"] == "auto"
    methods = list(params["explain"]["methods"])
    order = ["download", "train", "evaluate", *[f"explain {m}" for m in methods], "train_random_labels",
             "train_decoy", *[f"quality {m}" for m in methods], "verdicts", "report"]
    timings = {}
    for stage in order:
        name, *args = stage.split()
        started = time.perf_counter()
        result = subprocess.run([sys.executable, f"stages/{name}.py", *args], cwd=WORK, capture_output=True,
                                text=True)
        timings[stage] = round(time.perf_counter() - started, 2)
        work = [line.split(": ", 1)[-1] for line in result.stderr.splitlines() if "of work" in line]
        print(f"{stage:30s} {timings[stage]:7.2f} s  {work[-1] if work else ''}", flush=True)
        if result.returncode != 0:
            print(result.stderr[-3000:])
            sys.exit(1)
    manifest = json.loads(MANIFEST.read_text())
    differ = []
    for relative, expected in manifest.items():
        path = WORK / relative
        got = shape(path) if path.is_file() else "missing"
        if got != expected:
            differ.append(f"{relative}: {str(got)[:200]} != {str(expected)[:200]}")
    print(f"outputs compared with the CPU run's: {len(manifest)} files, {len(differ)} differ in shape or keys")
    for line in differ:
        print("  ", line)
    verdicts = json.loads((WORK / "quality/verdicts.json").read_text())["verdicts"]
    summary = {"timings": timings, "total": round(sum(timings.values()), 1), "differ": differ,
               "accuracy": json.loads((WORK / "metrics/evaluate.json").read_text())["accuracy"],
               "train_seconds": json.loads((WORK / "metrics/timing/train.json").read_text())["train_seconds"],
               "verdicts": {v["method"]: v["verdict"] for v in verdicts}}
    Path(os.environ.get("OUT", "/tmp"), "pipeline.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps({key: summary[key] for key in ("total", "accuracy", "train_seconds", "verdicts")}))
    shutil.copy2(WORK / "models/model.pt", "/tmp/gpu_model.pt")


if __name__ == "__main__":
    main()
