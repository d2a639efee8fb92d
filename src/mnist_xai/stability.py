"""The stability study: does a re-run with another seed give the same verdicts, inside the same intervals?

S full default runs that differ only in `base.seed` (the trained model re-trained too), queued as DVC experiments
(`dvc exp run --queue`, DVC's cache shared, as the grid is), then per method: how often the reported verdict agrees
across the seeds, whether two disjoint halves of the seeds report the same verdicts, whether the controls get their
known answers in every seed, which methods that differ were flagged as shaky in every seed (the user re-running
is told the verdict may move), and the leave-one-seed-out coverage of the intervals: the share of one seed's point
estimates that fall inside another seed's 95 % interval, over every ordered pair of seeds.
Not part of `dvc repro`: `mnist-xai stability` runs it.
"""

from __future__ import annotations

import io
import json
import logging
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mnist_xai.errors import UserError

log = logging.getLogger(__name__)

COVERED = ("gt_pointing", "gt_mass", "deletion_auc", "insertion_auc")
"""The statistics whose intervals the study checks against the other seeds' estimates."""
EXPECTED = {"oracle": "trust", "random": "do not trust", "edge": "do not trust", "brightness": "do not trust"}
PREFIX = "seed-"
RERUN_BINS = ((0.0, 0.8), (0.8, 0.95), (0.95, 0.99), (0.99, 1.01))
"""Bands of predicted re-run agreement, each compared with how often the other seeds agreed."""


def experiment_name(seed: int) -> str:
    return f"{PREFIX}{seed}"


def reported(row: dict) -> str:
    """The verdict the user is told, "unstable" included (without its support k/R)."""
    return row["verdict"]


def flagged(row: dict) -> bool:
    """Whether a run told its reader that this verdict may not hold (Verdict.flagged); for runs of code before the
    re-run agreement: "unstable", a support below all of its replicates ("trust (3/5)"), or threshold-sensitive."""
    if "flagged" in row:
        return bool(row["flagged"])
    support = re.search(r"\((\d+)/(\d+)\)", row.get("reported", ""))
    return (row["verdict"] == "unstable" or bool(row.get("threshold_sensitive"))
            or (support is not None and support[1] != support[2]))


def run_seeds(root: Path, seeds: list[int], jobs: int) -> None:
    """Queue one full run per seed not already done (`dvc exp run --queue -n seed-S -S base.seed=S`), run the queue
    `jobs` at a time and wait for it (grid.run_queue, the grid's local engine)."""
    from mnist_xai.grid import run_queue

    run_queue(root, {experiment_name(seed): [f"base.seed={seed}"] for seed in seeds}, jobs, desc="stability runs")


def collect(root: Path, seeds: list[int], decide_again: bool = False) -> dict[int, dict]:
    """Each seed's metrics/quality.json, read from its DVC experiment; a missing or failed one is named. With
    `decide_again`, each seed's verdicts are decided again from its stored scores by this code (redecide)."""
    from mnist_xai.study import list_experiments

    by_name = {e["name"]: e for e in list_experiments(root)}
    runs, missing = {}, []
    for seed in seeds:
        experiment = by_name.get(experiment_name(seed))
        quality = (experiment or {}).get("metrics", {}).get("metrics/quality.json") if experiment else None
        if experiment is None or experiment.get("error") or not quality:
            missing.append(experiment_name(seed))
            continue
        runs[seed] = quality
        if decide_again:
            from dvc.api import DVCFileSystem

            fs = DVCFileSystem(str(root), rev=experiment["rev"])
            runs[seed] = redecide(quality, fs.read_bytes, experiment["params"])
    if missing:
        raise UserError(f"no finished results for {', '.join(missing)} in {root}: run `mnist-xai stability` "
                        "without --no-run, or see `dvc queue logs <name>`")
    return runs


def redecide(quality: dict, read: Callable[[str], bytes], params: dict) -> dict:
    """A run's metrics/quality.json with every verdict decided again by this code's rule from the run's stored
    per-image scores (`read(path)` gives a file of the run; `params` its params.yaml): the verdicts stage's own
    judge on the same arrays, so a change of the rule can be checked over a stored study without re-running it."""
    from mnist_xai.quality.verdict import judge_scores

    def scores(method: str) -> dict[str, np.ndarray]:
        with np.load(io.BytesIO(read(f"quality/scores/{method}.npz")), allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}

    methods = quality["methods"]
    fit = json.loads(read("metrics/train_random_labels.json"))["train_accuracy_on_permuted_labels"]
    judge = judge_scores({m: scores(m) for m in methods}, constant_share={m: methods[m]["constant_share"]
                                                                         for m in methods},
                         random_label_fit=fit, resamples=params["quality"]["bootstrap_resamples"],
                         seed=params["base"]["seed"])
    decided = {v.method: v for v in judge.verdicts()}
    return {**quality, "methods": {m: {**row, **decided[m].summary()} for m, row in methods.items()}}


def analyse(runs: dict[int, dict]) -> dict[str, Any]:
    """Agreement, disjoint halves, controls and coverage over the runs {seed: metrics/quality.json}."""
    seeds = sorted(runs)
    methods = [m for m in runs[seeds[0]]["methods"] if all(m in runs[s]["methods"] for s in seeds)]
    compared = [m for m in methods if m not in EXPECTED]
    rows = []
    for method in compared:
        told = [reported(runs[s]["methods"][method]) for s in seeds]
        modal, count = Counter(told).most_common(1)[0]
        flags = {str(s): flagged(runs[s]["methods"][method]) for s in seeds}
        rows.append({"method": method, "reported": dict(zip(map(str, seeds), told, strict=True)),
                     "identical": len(set(told)) == 1, "modal": modal, "agreement": count / len(seeds),
                     "unstable": told.count("unstable"), "flagged": flags,
                     # the mission's bar: the same verdict, or every run told its reader the verdict is shaky
                     "same_or_flagged": len(set(told)) == 1 or all(flags.values())})
    controls = {method: {str(s): runs[s]["methods"][method]["verdict"] for s in seeds}
                for method in EXPECTED if method in methods}
    controls_hold = all(v == EXPECTED[m] for m, by_seed in controls.items() for v in by_seed.values())

    halves = None
    if len(seeds) >= 2:
        first, second = seeds[:len(seeds) // 2], seeds[len(seeds) // 2:]

        def modal(method: str, group: list[int]) -> str:
            return Counter(reported(runs[s]["methods"][method]) for s in group).most_common(1)[0][0]

        same = [m for m in compared if modal(m, first) == modal(m, second)]
        halves = {"first": first, "second": second, "same": len(same), "of": len(compared),
                  "differ": {m: [modal(m, first), modal(m, second)] for m in compared if m not in same}}

    # the re-run agreement each run predicted for its verdicts, against how often another seed's verdict agreed
    pairs = [(runs[a]["methods"][m]["rerun_agreement"],
              reported(runs[a]["methods"][m]) == reported(runs[b]["methods"][m]))
             for m in compared for a in seeds for b in seeds
             if a != b and runs[a]["methods"][m].get("rerun_agreement") is not None]
    rerun = None
    if pairs:
        predicted, agreed = np.array(pairs, dtype=np.float64).T
        rerun = {"predicted": float(predicted.mean()), "observed": float(agreed.mean()), "pairs": len(pairs),
                 "bins": [{"from": low, "to": high, "pairs": int(band.sum()),
                           "predicted": float(predicted[band].mean()), "observed": float(agreed[band].mean())}
                          for low, high in RERUN_BINS if (band := (predicted >= low) & (predicted < high)).any()]}

    inside = total = 0
    per_key = {}
    for key in COVERED:
        hits = count = 0
        for method in methods:
            for left_out in seeds:
                value = runs[left_out]["methods"][method].get(key, {}).get("value")
                for other in seeds:
                    if other == left_out or value is None:
                        continue
                    entry = runs[other]["methods"][method].get(key, {})
                    if entry.get("low") is None:
                        continue
                    count += 1
                    hits += entry["low"] - 1e-9 <= value <= entry["high"] + 1e-9
        per_key[key] = {"inside": hits, "of": count, "share": hits / count if count else None}
        inside, total = inside + hits, total + count
    return {"seeds": seeds, "methods": rows,
            "identical": sum(row["identical"] for row in rows), "of": len(rows),
            "same_or_flagged": sum(row["same_or_flagged"] for row in rows),
            "unstable_per_seed": {str(s): sum(reported(runs[s]["methods"][m]) == "unstable" for m in compared)
                                  for s in seeds},
            "halves": halves, "controls": controls, "controls_hold": controls_hold, "rerun": rerun,
            "coverage": {"inside": inside, "of": total, "share": inside / total if total else None,
                         "per_key": per_key}}


def summary_lines(result: dict[str, Any]) -> list[str]:
    """The study in a few lines for the terminal."""
    lines = [f"{'method':<22} " + " ".join(f"{s:>16}" for s in result["seeds"]) + "  identical"]
    for row in result["methods"]:
        lines.append(f"{row['method']:<22} " + " ".join(f"{v:>16}" for v in row["reported"].values())
                     + f"  {'yes' if row['identical'] else 'no'}")
    lines.append(f"identical in every seed: {result['identical']} of {result['of']} methods")
    lines.append(f"the same verdict, or flagged in every seed (unstable, support below all replicates, "
                 f"threshold-sensitive or a re-run agreement below 95 %): "
                 f"{result['same_or_flagged']} of {result['of']}")
    if result["halves"]:
        h = result["halves"]
        lines.append(f"seeds {h['first']} against {h['second']}: the same modal verdict for {h['same']} of {h['of']}"
                     + (f" (differ: {', '.join(f'{m} {a} / {b}' for m, (a, b) in h['differ'].items())})"
                        if h["differ"] else ""))
    lines.append("controls give their known answers in every seed: " + ("yes" if result["controls_hold"] else "NO"))
    if result.get("rerun"):
        r = result["rerun"]
        lines.append(f"re-run agreement each run predicted {100 * r['predicted']:.1f} %, seen between seeds "
                     f"{100 * r['observed']:.1f} % ({r['pairs']} method x ordered seed pairs); by band: " + ", ".join(
                         f"{b['from']:.2f}-{min(b['to'], 1):.2f}: {100 * b['predicted']:.0f} against "
                         f"{100 * b['observed']:.0f} % ({b['pairs']})" for b in r["bins"]))
    c = result["coverage"]
    lines.append(f"coverage (one seed's estimate inside another seed's 95 % interval): {c['inside']} of {c['of']} "
                 f"({100 * c['share']:.0f} %); " + ", ".join(
                     f"{key} {100 * v['share']:.0f} %" for key, v in c["per_key"].items() if v["share"] is not None))
    return lines
