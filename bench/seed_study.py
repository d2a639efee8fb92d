"""Over several base.seed values: how strong the planted ground truth is, and whether the controls get their
known answers. The figures behind the decoy margins in tests/pipeline/test_quality.py and the closing note of the
calibration issue.

    python bench/seed_study.py decoy            # the default train_decoy stage alone, seeds 0-4 (~30 s a seed)
    python bench/seed_study.py small            # the suite's small pipeline, dvc repro, seeds 0-4 (~80 s a seed)
    python bench/seed_study.py small --seeds 5,6

Not a test: it prints one JSON line per seed (reliance of each twin on each cue, with its interval; how many
images the cue dominates; for `small`, every verdict and which lines were not validated), then the range.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("MNIST_XAI_MIRRORS", str(ROOT / "archives" / "{dataset}"))
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"


def decoy_only(folder: Path, seed: int) -> dict:
    """The default params' train_decoy stage, run directly: it reads nothing but the data."""
    from mnist_xai import data

    shutil.copytree(ROOT / "stages", folder / "stages")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["base"]["seed"] = seed
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    data.download(params["base"]["dataset"], folder / "data" / params["base"]["dataset"])
    subprocess.run([sys.executable, "stages/train_decoy.py"], cwd=folder, check=True, capture_output=True,
                   env={**os.environ, "MNIST_XAI_SERVER": "0"})
    return {"decoy": json.loads((folder / "metrics/decoy.json").read_text())}


def small_pipeline(folder: Path, seed: int) -> dict:
    """The suite's small pipeline (tests.conftest.small_params), a real dvc repro."""
    from tests.conftest import small_params
    from tests.helpers import PipelineRepo

    params = small_params()
    params["base"] = {"seed": seed}
    repo = PipelineRepo.create(folder, params)
    repo.dvc("repro", timeout=1800)
    return {"decoy": json.loads((folder / "metrics/decoy.json").read_text()),
            "verdicts": json.loads((folder / "quality/verdicts.json").read_text()),
            "quality": json.loads((folder / "metrics/quality.json").read_text())}


def row(seed: int, found: dict) -> dict:
    cues = found["decoy"]["cues"]
    out = {"seed": seed,
           "reliance": {cue: cues[cue]["reliance"]["decoy"] for cue in cues},
           "no_reliance": {cue: cues[cue]["reliance"]["no_reliance"] for cue in cues},
           "dominated": {cue: [cues[cue]["n_dominated"], cues[cue]["n_pool"]] for cue in cues},
           "ground_truth": {cue: cues[cue]["n_ground_truth"] for cue in cues}}
    if "verdicts" in found:
        verdicts = found["verdicts"]
        out["verdicts"] = {v["method"]: v.get("reported", v["verdict"]) for v in verdicts["verdicts"]}
        out["threshold_sensitive"] = sorted(v["method"] for v in verdicts["verdicts"] if v["threshold_sensitive"])
        out["not_validated"] = sorted({r["key"] for r in verdicts["calibration"] if not r["validated"]})
    if "quality" in found:
        methods = found["quality"]["methods"]
        out["mprt_rho"] = {m: methods[m]["mprt_rho"]["value"] for m in methods}
        out["deletion_auc"] = {m: methods[m]["deletion_auc"]["value"] for m in methods}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("decoy", "small"))
    parser.add_argument("--seeds", default="0,1,2,3,4")
    args = parser.parse_args()
    run = decoy_only if args.what == "decoy" else small_pipeline
    rows = []
    with tempfile.TemporaryDirectory(prefix="seed-study-") as work:
        for seed in (int(s) for s in args.seeds.split(",")):
            rows.append(row(seed, run(Path(work) / f"seed{seed}", seed)))
            print(json.dumps(rows[-1]), flush=True)
    for cue in rows[0]["reliance"]:
        lows = [100 * r["reliance"][cue]["low"] for r in rows]
        twin = max(100 * max(abs(r["no_reliance"][cue]["low"]), abs(r["no_reliance"][cue]["high"])) for r in rows)
        print(f"{cue} cue: reliance interval lows {min(lows):.1f}-{max(lows):.1f} points; the no-reliance twin "
              f"within {twin:.1f} points of 0")
    if "verdicts" in rows[0]:
        wrong = [(r["seed"], m) for r in rows for m, v in r["verdicts"].items()
                 if (m == "oracle" and v.split(" (")[0] != "trust")
                 or (m in ("random", "edge", "brightness") and v.split(" (")[0] != "do not trust")]
        print("the controls got their answers in every seed" if not wrong else f"WRONG control verdicts: {wrong}")


if __name__ == "__main__":
    main()
