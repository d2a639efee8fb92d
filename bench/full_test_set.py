"""Load: explain all 10,000 test images with every method configured in params.yaml, one method per
subprocess (as the explain stage runs it), and record each one's wall time and peak RSS.

    python bench/full_test_set.py                  # needs models/model.pt (dvc repro train)
    python bench/full_test_set.py --methods smoothgrad occlusion

The budget is 2 GB of peak RSS per process. Prints a table and writes bench/results/full_test_set.json.
Not a test: it prints numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
BUDGET_MB = 2048


def worker(method: str, model_path: str, n_images: int) -> None:
    import numpy as np
    import torch

    from mnist_xai import data, params
    from mnist_xai.explanation import explain
    from mnist_xai.model import load_model

    torch.set_num_threads(2)
    method_params = params.method_params(method, ROOT / "params.yaml")
    data_dir = RESULTS / "data" / "mnist"
    if not data_dir.is_dir():
        data.download("mnist", data_dir)
    images, labels = data.load_split(data_dir, "test")
    model = load_model(model_path)
    started = time.perf_counter()
    result = explain(model, method, images, labels, np.arange(min(n_images, len(images))), method_params,
                     "predicted", torch.device("cpu"), show_progress=False)
    seconds = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"method": method, "n_images": len(result.maps), "seconds": seconds,
                      "images_per_second": len(result.maps) / seconds, "peak_rss_mb": peak_mb,
                      "finite": bool(np.isfinite(result.maps).all())}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="*", help="default: every method in params.yaml")
    parser.add_argument("--model", default=str(ROOT / "models" / "model.pt"))
    parser.add_argument("--n-images", type=int, default=10000)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.model, args.n_images)
        return
    from mnist_xai import params

    if not Path(args.model).is_file():
        sys.exit(f"error: {args.model} is missing: run `dvc repro train` first (or pass --model)")
    methods = args.methods or list(params.configured_methods(ROOT / "params.yaml"))
    env = {**os.environ, "OMP_NUM_THREADS": "2", "MLFLOW_DISABLE_TELEMETRY": "true"}
    rows, total = [], 0.0
    print(f"{'method':22} {'images':>7} {'seconds':>8} {'img/s':>8} {'peak RSS MB':>12}", flush=True)
    for method in methods:
        done = subprocess.run([sys.executable, __file__, "--worker", method, "--model", args.model,
                               "--n-images", str(args.n_images)], capture_output=True, text=True, env=env)
        if done.returncode != 0:
            print(f"{method:22} failed: {done.stderr.strip().splitlines()[-1:]}", flush=True)
            rows.append({"method": method, "error": done.stderr[-2000:]})
            continue
        row = json.loads(done.stdout.strip().splitlines()[-1])
        rows.append(row)
        total += row["seconds"]
        print(f"{method:22} {row['n_images']:7d} {row['seconds']:8.1f} {row['images_per_second']:8.0f} "
              f"{row['peak_rss_mb']:12.0f}", flush=True)
    worst = max((row.get("peak_rss_mb", 0) for row in rows), default=0)
    print(f"total {total:.1f} s of attribution; worst peak RSS {worst:.0f} MB (budget {BUDGET_MB} MB): "
          f"{'within' if worst <= BUDGET_MB else 'OVER'} budget")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "full_test_set.json").write_text(json.dumps({"rows": rows, "total_seconds": total,
                                                             "worst_peak_rss_mb": worst}, indent=2) + "\n")


if __name__ == "__main__":
    main()
