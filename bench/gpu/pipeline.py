"""The pipeline's stages, in dvc.yaml's order, on this machine's GPU (base.device: auto), outside DVC (which
could not be carried here), then the outputs' shapes against a CPU run's."""
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path.cwd() / "src"))
from ruamel.yaml import YAML

work = Path("/tmp/pipe")
shutil.rmtree(work, ignore_errors=True)
work.mkdir()
for name in ("params.yaml", "dvc.yaml", "stages", "src", "archives"):
    (shutil.copytree if Path(name).is_dir() else shutil.copy2)(name, work / name)
yaml = YAML()
params = yaml.load((work / "params.yaml").read_text())
assert params["base"]["device"] == "auto"
methods = list(params["explain"]["methods"])
order = ["download", "train", "evaluate", *[f"explain {m}" for m in methods], "train_random_labels", "train_decoy",
         *[f"quality {m}" for m in methods], "verdicts", "report"]
timings = {}
for stage in order:
    name, *args = stage.split()
    started = time.perf_counter()
    result = subprocess.run([sys.executable, f"stages/{name}.py", *args], cwd=work, capture_output=True, text=True)
    timings[stage] = round(time.perf_counter() - started, 2)
    work_line = [l for l in result.stderr.splitlines() if "of work" in l]
    print(f"{stage:30s} {timings[stage]:7.2f} s  {work_line[-1].split(': ', 1)[-1] if work_line else ''}", flush=True)
    if result.returncode != 0:
        print(result.stderr[-3000:]); sys.exit(1)
def keys(obj, prefix=""):
    if isinstance(obj, dict):
        out = []
        for k, v in obj.items(): out += keys(v, f"{prefix}.{k}" if prefix else k)
        return out
    if isinstance(obj, list): return [f"{prefix}[{len(obj)}]"]
    return [prefix]
manifest = json.loads(Path("bench/gpu/manifest.json").read_text())
differ = []
for rel, expected in manifest.items():
    p = work / rel
    if not p.is_file():
        differ.append(f"{rel}: missing"); continue
    if p.suffix == ".npz":
        with np.load(p) as a: got = {k: list(a[k].shape) for k in a.files}
    elif p.suffix == ".json":
        d = json.loads(p.read_text()); got = sorted(keys(d)) if isinstance(d, dict) else [f"list[{len(d)}]"]
    else:
        got = "file"
    if got != expected: differ.append(f"{rel}: {str(got)[:200]} != {str(expected)[:200]}")
print(f"outputs compared with the CPU run's: {len(manifest)} files, {len(differ)} differ in shape or keys")
for line in differ: print("  ", line)
evaluate = json.loads((work / "metrics/evaluate.json").read_text())
train = json.loads((work / "metrics/timing/train.json").read_text())
verdicts = json.loads((work / "quality/verdicts.json").read_text())
summary = {"timings": timings, "total": round(sum(timings.values()), 1), "accuracy": evaluate["accuracy"],
           "train_seconds": train["train_seconds"], "differ": differ,
           "verdicts": {v["method"]: v["verdict"] for v in verdicts["verdicts"]}}
out = Path(os.environ.get("OUT", "/tmp"))
(out / "pipeline.json").write_text(json.dumps(summary, indent=1))
print(json.dumps({k: summary[k] for k in ("total", "accuracy", "train_seconds", "verdicts")}))
shutil.copy2(work / "models/model.pt", "/tmp/gpu_model.pt")
