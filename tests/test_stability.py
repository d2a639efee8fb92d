"""The stability study's arithmetic on runs whose answers are known, and its command line's refusals."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from mnist_xai.cli import seed_list
from mnist_xai.stability import analyse, redecide


def run(verdicts: dict[str, str], estimates: dict[str, tuple[float, float, float]], unstable=()) -> dict:
    """One seed's metrics/quality.json: every method with its verdict and the same estimate for each key."""
    controls = {"oracle": "trust", "random": "do not trust", "edge": "do not trust", "brightness": "do not trust"}
    methods = {}
    for method, verdict in {**verdicts, **controls}.items():
        value, low, high = estimates.get(method, (0.5, 0.4, 0.6))
        methods[method] = {key: {"value": value, "low": low, "high": high}
                           for key in ("gt_pointing", "gt_mass", "deletion_auc", "insertion_auc")}
        methods[method] |= {"verdict": "unstable" if method in unstable else verdict,
                            "stable": int(method not in unstable)}
    return {"methods": methods}


def test_agreement_halves_controls_and_coverage_are_counted_as_defined():
    runs = {
        0: run({"a": "trust", "b": "trust"}, {"a": (0.9, 0.85, 0.95)}),
        1: run({"a": "trust", "b": "use with care"}, {"a": (0.9, 0.85, 0.95)}),
        2: run({"a": "trust", "b": "trust"}, {"a": (0.7, 0.65, 0.75)}, unstable={"a"}),
        3: run({"a": "trust", "b": "trust"}, {"a": (0.9, 0.85, 0.95)}),
    }
    result = analyse(runs)
    rows = {row["method"]: row for row in result["methods"]}
    assert rows["a"]["reported"]["2"] == "unstable" and not rows["a"]["identical"]  # unstable counts as a verdict
    assert not rows["b"]["identical"] and rows["b"]["modal"] == "trust" and rows["b"]["agreement"] == 0.75
    assert result["identical"] == 0 and result["of"] == 2
    assert result["unstable_per_seed"] == {"0": 0, "1": 0, "2": 1, "3": 0}
    # halves [0, 1] and [2, 3]: b's modal verdicts tie in the first half (Counter keeps the first seen: trust)
    assert result["halves"]["first"] == [0, 1] and result["halves"]["same"] == 1
    assert result["controls_hold"]
    # coverage: 6 methods x 4 keys x 12 ordered pairs; a's estimates at seed 2 fall outside the others' and back
    coverage = result["coverage"]
    assert coverage["of"] == 6 * 4 * 12
    assert coverage["of"] - coverage["inside"] == 4 * 6  # seed 2 against 3 others, both ways, 4 keys
    runs[1]["methods"]["oracle"]["verdict"] = "use with care"
    assert not analyse(runs)["controls_hold"]


def test_an_unstable_verdict_in_every_seed_counts_as_identical():
    runs = {s: run({"a": "trust"}, {}, unstable={"a"}) for s in range(3)}
    result = analyse(runs)
    assert result["identical"] == 1 and result["methods"][0]["modal"] == "unstable"


def test_a_verdict_that_moves_counts_as_told_only_if_every_seed_flagged_it():
    runs = {s: run({"a": "trust", "b": "trust", "c": "trust"}, {}) for s in range(3)}
    runs[1]["methods"]["a"]["verdict"] = runs[1]["methods"]["b"]["verdict"] = "too weak to call"
    for seed in range(3):  # a: flagged in every seed, by its support or by a neighbouring line
        runs[seed]["methods"]["a"] |= {"reported": "trust (3/5)", "threshold_sensitive": int(seed == 1)}
        runs[seed]["methods"]["c"]["reported"] = "trust (5/5)"
    runs[1]["methods"]["a"]["reported"] = "too weak to call (5/5)"
    runs[1]["methods"]["b"]["reported"] = "too weak to call (4/5)"  # b: flagged only where it moved
    result = analyse(runs)
    rows = {row["method"]: row for row in result["methods"]}
    assert rows["a"]["flagged"] == {"0": True, "1": True, "2": True} and rows["a"]["same_or_flagged"]
    assert rows["b"]["flagged"] == {"0": False, "1": True, "2": False} and not rows["b"]["same_or_flagged"]
    assert rows["c"]["identical"] and not any(rows["c"]["flagged"].values()) and rows["c"]["same_or_flagged"]
    assert result["identical"] == 1 and result["same_or_flagged"] == 2
    assert result["rerun"] is None  # runs of code before the re-run agreement
    for seed in range(3):
        for method, agreement in {"a": 0.6, "b": 0.9, "c": 1.0}.items():
            runs[seed]["methods"][method]["rerun_agreement"] = agreement
    rerun = analyse(runs)["rerun"]
    # 3 methods x 6 ordered seed pairs; a and b agree in 2 of 6 (seeds 0 and 2), c in all 6
    assert rerun["pairs"] == 18 and abs(rerun["observed"] - 10 / 18) < 1e-12
    assert abs(rerun["predicted"] - 2.5 / 3) < 1e-12
    assert [(b["pairs"], b["observed"]) for b in rerun["bins"]] == [(6, 2 / 6), (6, 2 / 6), (6, 1.0)]


@pytest.mark.parametrize(("text", "seeds"), [("0-4", [0, 1, 2, 3, 4]), ("3,1", [1, 3]), ("0-2,7", [0, 1, 2, 7])])
def test_seed_lists(text, seeds):
    assert seed_list(text) == seeds


def test_bad_seed_lists_are_one_line_errors(tmp_path):
    for bad in ("0", "a-b", "-1,2"):
        result = subprocess.run([sys.executable, "-m", "mnist_xai.cli", "stability", "--seeds", bad,
                                 "--root", str(tmp_path)], capture_output=True, text=True)
        assert result.returncode == 2 and "--seeds" in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) <= 3  # argparse's usage line, and the one message


def test_no_run_without_results_names_what_is_missing(pipeline):
    result = subprocess.run([sys.executable, "-m", "mnist_xai.cli", "stability", "--no-run", "--seeds", "0,1",
                             "--root", str(pipeline.path)], capture_output=True, text=True, env=pipeline.env)
    assert result.returncode == 2
    assert result.stderr.strip() == (f"error: no finished results for seed-0, seed-1 in {pipeline.path}: run "
                                     "`mnist-xai stability` without --no-run, or see `dvc queue logs <name>`")


def test_verdicts_decided_again_from_a_runs_stored_scores_are_what_its_verdicts_stage_wrote(pipeline):
    """`--redecide` runs the verdicts stage's own judge on a run's stored scores: on a run made by this code it gives
    back exactly what the stage wrote, whatever verdicts the file it is handed says."""
    quality = json.loads((pipeline.path / "metrics/quality.json").read_text())
    params = yaml.safe_load((pipeline.path / "params.yaml").read_text())
    tampered = {**quality, "methods": {m: {**row, "verdict": "unstable", "reported": "unstable", "support": 0}
                                       for m, row in quality["methods"].items()}}
    again = redecide(tampered, lambda path: (pipeline.path / path).read_bytes(), params)
    assert again == quality
    assert {row["verdict"] for row in again["methods"].values()} != {"unstable"}
