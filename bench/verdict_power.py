"""How much would more replicates, or more images, steady the verdicts between seeds? A power analysis by
resampling the per-image scores of seeds already run (`mnist-xai stability`'s experiments seed-S).

    python bench/verdict_power.py REPO --seeds 0-4 --replicates 3 --scale 1     # the default as it was
    python bench/verdict_power.py REPO --seeds 0-4 --replicates 5 --scale 1     # five replicates, same images
    python bench/verdict_power.py REPO --seeds 0-4 --replicates 3 --gt-scale 2 --scale 2

Every replicate of every seed is one unit (its decoy twins with their ground-truth images; its randomised and
permuted-label networks with their images; its draw of the trained model with its deletion/insertion images). A
simulated run draws R distinct units per check and, within each, `scale` x (stored R / R) x the stored images per
replicate with replacement (the same images for every method, so that methods and controls stay paired), and is
decided by the pipeline's own Judge. Five simulated runs make one simulated stability study; it prints how many of
the issue's 13 methods report the same verdict in all five, over `--trials` studies (about 8 s a study).

Approximate: the images are resampled from the stored ones rather than drawn new, and simulated runs may share
units (15 units for five seeds of three replicates), which shares their between-replicate draws and makes
agreement look higher the more units a run takes. Not a test: it prints one line per study, then the summary.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from mnist_xai.cli import seed_list  # noqa: E402
from mnist_xai.stability import EXPECTED  # noqa: E402

ISSUE13 = ("saliency", "smoothgrad", "smoothgrad_sq", "vargrad", "integrated_gradients", "input_x_gradient",
           "guided_backprop", "occlusion", "gradcam", "gradcam_pp", "scorecam", "layercam", "guided_gradcam")
# each check's keys, by the key whose replicate ids they share; ground truth and its grey cue come from one twin pair
GROUPS = {
    "gt": ("gt_reliance", lambda k: k.startswith(("gt_", "fam_"))),
    "grey": ("grey_gt_reliance", lambda k: k.startswith("grey_")),
    "draw": ("deletion_auc", lambda k: k in ("deletion_auc", "insertion_auc")),
    "randomisation": ("mprt_rho", lambda k: k in ("mprt_rho", "mprt_collapsed", "mprt_digit_rho", "emprt_rise",
                                                  "data_rho")),
    "smooth": ("smprt_rho", lambda k: k == "smprt_rho"),
}


def load(repo: str, seeds: list[int], rev: str) -> tuple[dict, dict]:
    """{seed: {method: {key: values}}} and {seed: {method: constant share}} from each seed's experiment."""
    from dvc.api import DVCFileSystem

    from mnist_xai.quality.metrics import CUE_PREFIX, METRICS, replicate_key

    keys = tuple(m.key for m in METRICS) + tuple(f"{p}{n}_distance" for p in CUE_PREFIX.values()
                                                 for n in ("gt", "fam"))
    scores, constant = {}, {}
    for seed in seeds:
        fs = DVCFileSystem(repo, rev=rev.format(seed=seed))
        methods = json.loads(fs.read_text("metrics/quality.json"))["methods"]
        constant[seed] = {m: methods[m]["constant_share"] for m in methods}
        scores[seed] = {}
        for method in methods:
            with np.load(io.BytesIO(fs.read_bytes(f"quality/scores/{method}.npz"))) as z:
                scores[seed][method] = {k: z[k] for k in keys + tuple(replicate_key(k) for k in keys)
                                        if k in z.files}
    return scores, constant


def group_of(key: str, sample: dict) -> str | None:
    """The check whose images a stored key belongs to; None for one drawn on the pipeline's model alone."""
    from mnist_xai.quality.metrics import replicate_key

    base = key.removesuffix("_replicate")
    if replicate_key(base) not in sample and not base.endswith("_distance"):
        return None
    for group, (anchor, member) in GROUPS.items():
        if member(base) and len(sample[base]) == len(sample[anchor]):
            return group
    return None


def layout(scores: dict) -> tuple[dict, dict]:
    """Once for all simulations: each stored key's check, and each check's units [(seed, replicate)]."""
    from mnist_xai.quality.metrics import replicate_key

    seeds = list(scores)
    first = next(iter(scores[seeds[0]].values()))
    units = {group: [(s, r) for s in seeds for r in np.unique(next(iter(scores[s].values()))[replicate_key(anchor)])]
             for group, (anchor, _) in GROUPS.items()}
    return {key: group_of(key, first) for key in first}, units


def simulate(scores: dict, constant: dict, groups: dict, units: dict, replicates: int, scales: dict,
             rng: np.random.Generator) -> dict:
    """One simulated run's reported verdicts."""
    from mnist_xai.quality.metrics import replicate_key
    from mnist_xai.quality.verdict import Judge

    seeds = list(scores)
    methods = list(scores[seeds[0]])
    base_seed = seeds[rng.integers(len(seeds))]
    twins = rng.choice(len(units["gt"]), replicates, replace=False)  # ground truth and grey cue share their twins
    picks = {}
    for group, (anchor, _) in GROUPS.items():
        chosen = twins if group in ("gt", "grey") else rng.choice(len(units[group]), replicates, replace=False)
        stored = len(units[group]) / len(seeds)  # the stored runs' replicates
        picks[group] = []
        for new_id, unit in enumerate(chosen):
            seed, replicate = units[group][unit]
            where = np.flatnonzero(scores[seed][methods[0]][replicate_key(anchor)] == replicate)
            count = max(1, round(len(where) * stored / replicates * scales[group]))
            picks[group].append((seed, rng.choice(where, count, replace=True), new_id))
    values = {}
    for method in methods:
        drawn = {}
        for key, stored in scores[base_seed][method].items():
            group = groups.get(key)
            if group is None:
                drawn[key] = stored
            elif key.endswith("_replicate"):
                drawn[key] = np.concatenate([np.full(len(i), n, dtype=np.int16) for _, i, n in picks[group]])
            else:
                drawn[key] = np.concatenate([scores[s][method][key][i] for s, i, _ in picks[group]])
        values[method] = drawn
    judge = Judge(values, constant_share=constant[base_seed], random_label_fit=1.0, resamples=1000,
                  seed=int(rng.integers(1 << 30)))
    return {v.method: v.settled for v in judge.verdicts()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("repo", help="the repository whose seed-S experiments hold the stored scores")
    parser.add_argument("--seeds", type=seed_list, default=seed_list("0-4"), help="seeds to pool, e.g. 0-4 or 0,2,3")
    parser.add_argument("--rev", default="seed-{seed}", help="each seed's git revision (default: its experiment)")
    parser.add_argument("--replicates", type=int, default=3, help="R of a simulated run")
    parser.add_argument("--scale", type=float, default=1.0, help="images per run, against the stored runs' total")
    parser.add_argument("--gt-scale", type=float, help="the same for the ground-truth images (default: --scale)")
    parser.add_argument("--trials", type=int, default=10, help="simulated five-seed studies")
    args = parser.parse_args()
    scores, constant = load(args.repo, args.seeds, args.rev)
    groups, units = layout(scores)
    gt_scale = args.scale if args.gt_scale is None else args.gt_scale
    scales = {group: gt_scale if group in ("gt", "grey") else args.scale for group in GROUPS}
    rng = np.random.default_rng(12345)
    agree, flips, started = [], Counter(), time.monotonic()
    for trial in range(args.trials):
        runs = [simulate(scores, constant, groups, units, args.replicates, scales, rng) for _ in range(5)]
        same = [m for m in ISSUE13 if len({run[m] for run in runs}) == 1]
        agree.append(len(same))
        flips.update(m for m in ISSUE13 if m not in same)
        controls = all(run[c] == want for run in runs for c, want in EXPECTED.items())
        unstable = max(sum(v == "unstable" for v in run.values()) for run in runs)
        print(f"study {trial}: {len(same)}/13 identical, controls {'hold' if controls else 'FAIL'}, "
              f"at most {unstable} unstable in a run", flush=True)
    print(f"R={args.replicates} gt_scale={gt_scale} scale={args.scale}: identical of 13 over {args.trials} studies: "
          f"mean {np.mean(agree):.2f}, >= 12 in {np.mean(np.array(agree) >= 12):.0%}, "
          f"{sorted(Counter(agree).items())}; {time.monotonic() - started:.0f} s")
    print("flips (studies):", ", ".join(f"{m} {n}" for m, n in flips.most_common()))


if __name__ == "__main__":
    main()
