"""Intervals, ground-truth scores and the verdict rule, on cases whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mnist_xai import decoy
from mnist_xai.attribution import attribute
from mnist_xai.quality.localisation import (
    chance_level,
    pointing_game,
    relevance_mass_accuracy,
    relevance_rank_accuracy,
)
from mnist_xai.quality.metrics import METRICS
from mnist_xai.quality.scoring import constant_maps
from mnist_xai.quality.stats import interval, paired_interval
from mnist_xai.quality.verdict import Judge

CHANCE = 16 / 784


def test_bootstrap_interval_of_a_bernoulli_mean_is_the_known_one_and_covers_95_percent():
    """For the mean of n Bernoulli(p) draws the interval is about p +- 1.96 sqrt(p (1 - p) / n); over many
    independent samples it must contain the true p about 95 % of the time."""
    rng = np.random.default_rng(0)
    draws = (rng.random(1000) < 0.3).astype(float)
    mean, low, high = interval(draws, resamples=4000, seed=1)
    half = 1.96 * np.sqrt(mean * (1 - mean) / len(draws))
    assert mean == draws.mean() and low == pytest.approx(mean - half, abs=0.004)
    assert high == pytest.approx(mean + half, abs=0.004)
    covered = 0
    for trial in range(300):
        sample = (rng.random(200) < 0.3).astype(float)
        _, lo, hi = interval(sample, resamples=1000, seed=trial)
        covered += lo <= 0.3 <= hi
    assert 0.91 <= covered / 300 <= 0.98, covered / 300
    assert interval(draws, seed=1) == interval(draws, seed=1)  # seeded


def test_a_paired_difference_is_indistinguishable_from_zero_only_when_its_interval_covers_it():
    rng = np.random.default_rng(0)
    a = rng.normal(size=300)
    same = a + rng.normal(scale=0.01, size=300)
    shifted = a + 0.1 + rng.normal(scale=0.01, size=300)
    _, low, high = paired_interval(same, a)
    assert low <= 0 <= high
    _, low, high = paired_interval(shifted, a)
    assert low > 0.09 and high < 0.11  # pairing removes the images' own spread (unpaired it would be +-0.16)


def test_the_oracle_explanation_the_cue_itself_scores_one_everywhere():
    corners = np.arange(40) % 4
    masks = decoy.cue_masks(corners)
    oracle = masks.astype(np.float32)
    assert relevance_mass_accuracy(oracle, masks).tolist() == [1.0] * 40
    assert relevance_rank_accuracy(oracle, masks, seed=0).tolist() == [1.0] * 40
    assert pointing_game(oracle, masks, seed=0).tolist() == [1.0] * 40
    assert chance_level(masks) == pytest.approx(CHANCE)


def test_the_random_control_lies_within_its_interval_of_chance(trained_model):
    """The `random` method's maps score chance (16/784) on mass, rank and pointing, and their 95 % intervals
    contain it as often as a 95 % interval should: in at least 16 of 20 independent draws of 200 images each
    (a biased metric, or an interval too narrow, fails this)."""
    covered = {"mass": 0, "rank": 0, "pointing": 0}
    for draw in range(20):
        masks = decoy.cue_masks(decoy.random_corners(200, np.random.default_rng(draw)))
        maps = attribute("random", trained_model, torch.zeros(200, 1, 28, 28), torch.zeros(200, dtype=torch.long),
                         seed=draw).numpy()
        for name, values in (("mass", relevance_mass_accuracy(maps, masks)),
                             ("rank", relevance_rank_accuracy(maps, masks, seed=draw)),
                             ("pointing", pointing_game(maps, masks, seed=draw))):
            _, low, high = interval(values, resamples=1000, seed=draw)
            covered[name] += low <= CHANCE <= high
    assert all(count >= 16 for count in covered.values()), covered


def test_constant_and_nearly_constant_maps_are_found():
    maps = np.zeros((4, 28, 28), dtype=np.float32)
    maps[1] = 3.0
    maps[2] = 3.0
    maps[2, 0, 0] = 3.000001  # float rounding on a constant map: a spread of 1e-6 against values of 3
    maps[3] = np.random.default_rng(0).random((28, 28))
    assert constant_maps(maps).tolist() == [True, True, True, False]


def judge(values: dict, *, degenerate=(), fit=0.99, seed=0) -> Judge:
    return Judge(values, constant_share={m: 0.9 if m in degenerate else 0.0 for m in values},
                 degenerate={m: m in degenerate for m in values}, chance=CHANCE, random_label_fit=fit,
                 resamples=1000, seed=seed)


def synthetic(n: int = 120, seed: int = 0, **quality) -> dict:
    """Per-image values of every metric for methods whose quality is given as a number in [0, 1] (1 = finds the
    cue, faithful, model-sensitive), plus the random control at chance."""
    rng = np.random.default_rng(seed)
    values = {}
    for method, q in {"random": None, **quality}.items():
        level = 0.0 if q is None else q
        row = {}
        pointing = rng.random(n) < (CHANCE if q is None else level)
        row["gt_pointing"] = pointing.astype(float)
        row["gt_mass"] = np.clip((CHANCE if q is None else 0.6 * level) + rng.normal(0, 0.05, n), 0, 1)
        row["gt_rank"] = row["gt_mass"]
        row["fam_mass"] = np.clip((CHANCE if q is None else 0.005) + rng.normal(0, 0.003, n), 0, 1)
        row["deletion_auc"] = 0.5 - 0.4 * level + rng.normal(0, 0.05, n)
        row["insertion_auc"] = 0.5 + 0.4 * level + rng.normal(0, 0.05, n)
        for key in ("mprt_rho", "mprt_digit_rho", "smprt_rho", "data_rho"):
            row[key] = 0.8 - 0.6 * level + rng.normal(0, 0.05, n)
        row["edge_rho"] = 0.5 + rng.normal(0, 0.05, n)
        row["smprt_vs_edge"] = row["smprt_rho"] - row["edge_rho"]
        row["data_vs_edge"] = row["data_rho"] - row["edge_rho"]
        row["emprt_rise"] = level - 0.3 + rng.normal(0, 0.05, n)
        row["max_sensitivity"] = 1 - level + rng.normal(0, 0.05, n)
        row["sparseness"] = rng.random(n)
        values[method] = row
    assert set(values["random"]) == {metric.key for metric in METRICS}
    return values


def test_the_verdict_follows_the_ground_truth_and_the_controls():
    values = synthetic(finds=0.95, also_finds=0.9, misses=0.05, unsure=0.5, flat=0.95)
    j = judge(values, degenerate={"flat"})
    verdicts = {v.method: v for v in j.verdicts()}
    assert verdicts["finds"].verdict == verdicts["also_finds"].verdict == "trust"
    assert verdicts["misses"].verdict == "do not trust" and "misses the planted cue" in verdicts["misses"].reason
    assert verdicts["flat"].verdict == "do not trust" and "degenerate" in verdicts["flat"].reason
    assert verdicts["unsure"].verdict in ("too weak to call", "use with care")
    assert [v.method for v in j.verdicts()][:2] == ["finds", "also_finds"]  # by ground-truth mass
    assert "random" not in verdicts


def test_a_sanity_check_counts_only_where_it_agrees_with_the_ground_truth():
    """Here Smooth MPRT is made to rank the methods against the ground truth: it is reported, not counted."""
    values = synthetic(a=0.95, b=0.9, c=0.7, d=0.6, e=0.3)
    for method, row in values.items():
        if method != "random":
            row["smprt_vs_edge"] = -row["smprt_vs_edge"]
    j = judge(values)
    meta = {row["key"]: row["outcome"] for row in j.meta}
    assert meta["smprt_vs_edge"] == "disagrees" and meta["deletion_auc"] == "agrees"
    assert j.validated == {"Smooth MPRT": False, "Efficient MPRT": True, "data randomisation": True}
    line = next(e for e in j.evidence("a") if e.check == "Smooth MPRT")
    assert line.outcome == "fail" and not line.counted and "not counted" in line.detail
    assert j.verdict("a").verdict == "trust"


def test_an_under_trained_random_label_model_is_not_used():
    values = synthetic(a=0.95, b=0.5, c=0.2)
    line = next(e for e in judge(values, fit=0.34).evidence("a") if e.check == "data randomisation")
    assert line.outcome == "not run" and "fitted only 34 %" in line.detail and not line.counted


def test_neighbours_say_indistinguishable_when_the_interval_covers_zero():
    values = synthetic(a=0.95, b=0.95, c=0.2, seed=3)
    values["b"] = {k: v.copy() for k, v in values["a"].items()}
    values["b"]["gt_mass"] = values["a"]["gt_mass"] + 1e-4 * np.random.default_rng(1).normal(size=120)
    j = judge(values)
    rows = j.neighbours(j.verdicts())
    pair = next(row for row in rows if {row["a"], row["b"]} == {"a", "b"})
    assert pair["indistinguishable"]
    other = next(row for row in rows if row["b"] == "c")
    assert not other["indistinguishable"]
