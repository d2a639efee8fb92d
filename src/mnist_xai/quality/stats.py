"""Rank statistics shared by the quality metrics."""

from __future__ import annotations

import numpy as np


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n of each row, ties sharing their average rank (what Spearman's rho needs)."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, axis=1, kind="stable")
    ranks = np.empty_like(values)
    for row, (row_values, row_order) in enumerate(zip(values, order, strict=True)):
        sorted_values = row_values[row_order]
        starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
        stops = np.r_[starts[1:], len(sorted_values)]
        average = (starts + stops + 1) / 2.0  # ranks start..stop-1 (1-based) share their mean
        ranks[row, row_order] = np.repeat(average, stops - starts)
    return ranks


def spearman_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman's rho between matching rows of a and b [n, d].

    A constant row has no ranking, so it shares none with the other: rho = 0 (not NaN). A CAM method
    whose maps collapse to all zeros on a randomised model therefore counts as uncorrelated.
    """
    return rank_correlation(centred_ranks(a), centred_ranks(b))


def centred_ranks(a: np.ndarray) -> np.ndarray:
    """Average ranks of each row of a [n, ...], minus the row's mean rank: Spearman's rho of two rows is the
    cosine of their centred ranks. Worth keeping when one set of rows is compared with many."""
    ranks = average_ranks(a.reshape(len(a), -1))
    return ranks - ranks.mean(axis=1, keepdims=True)


def rank_correlation(ranks_a: np.ndarray, ranks_b: np.ndarray) -> np.ndarray:
    """Spearman's rho of matching rows, from centred_ranks(); 0 where a row is constant."""
    denominator = np.sqrt((ranks_a ** 2).sum(axis=1) * (ranks_b ** 2).sum(axis=1))
    numerator = (ranks_a * ranks_b).sum(axis=1)
    return np.divide(numerator, denominator, out=np.zeros(len(ranks_a)), where=denominator > 0)


def constant_rows(a: np.ndarray) -> np.ndarray:
    flat = a.reshape(len(a), -1)
    return flat.max(axis=1) == flat.min(axis=1)


BOOTSTRAP_RESAMPLES = 2000
CONFIDENCE = 0.95


def bootstrap_means(values: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> np.ndarray:
    """Means of `resamples` bootstrap resamples (images drawn with replacement) of each row of values [k, n]
    (or of values [n]); one seeded set of draws serves every row, so rows stay paired: [k, resamples]."""
    values = np.asarray(values, dtype=np.float64)
    rows = values.reshape(-1, values.shape[-1])
    n = rows.shape[1]
    draws = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    # a resample's mean is (how often each image was drawn) . values / n: one matrix product for all rows
    counts = np.bincount((np.arange(resamples)[:, None] * n + draws).ravel(), minlength=resamples * n)
    means = rows @ counts.reshape(resamples, n).T.astype(np.float64) / n
    return means.reshape(*values.shape[:-1], resamples)


def interval(values: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> tuple[float, float, float]:
    """The mean of per-image values and its 95 % percentile-bootstrap interval."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return float("nan"), float("nan"), float("nan")
    means = bootstrap_means(values, resamples, seed)
    low, high = np.quantile(means, [(1 - CONFIDENCE) / 2, (1 + CONFIDENCE) / 2])
    return float(values.mean()), float(low), float(high)


def paired_interval(a: np.ndarray, b: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0
                    ) -> tuple[float, float, float]:
    """Mean of a - b over the same images, with its 95 % paired-bootstrap interval (both resampled together)."""
    return interval(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64), resamples, seed)
