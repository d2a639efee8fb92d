"""Rank statistics shared by the quality metrics."""

from __future__ import annotations

import functools

import numpy as np


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n of each row, ties sharing their average rank (what Spearman's rho needs); vectorised over
    rows: each run of equal sorted values gets the mean of its first and last position."""
    values = np.asarray(values, dtype=np.float64)
    n = values.shape[1]
    order = np.argsort(values, axis=1, kind="stable")
    ordered = np.take_along_axis(values, order, axis=1)
    starts = np.ones(values.shape, dtype=bool)
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    ends = np.ones(values.shape, dtype=bool)
    ends[:, :-1] = starts[:, 1:]
    position = np.arange(n)
    first = np.maximum.accumulate(np.where(starts, position, 0), axis=1)
    last = np.minimum.accumulate(np.where(ends, position, n)[:, ::-1], axis=1)[:, ::-1]
    ranks = np.empty_like(values)
    np.put_along_axis(ranks, order, (first + last) / 2.0 + 1.0, axis=1)
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


@functools.lru_cache(maxsize=32)
def _draw_counts(n: int, resamples: int, seed: int) -> np.ndarray:
    """How often each of n images is drawn in each of `resamples` seeded resamples, [n, resamples] float64: a
    resample's mean is then one dot product. The same (n, resamples, seed) always gives the same draws, which
    is what pairs two metrics of the same images; cached, since a verdict asks for them hundreds of times."""
    draws = np.random.default_rng(seed).integers(0, n, size=(resamples, n))
    counts = np.empty((n, resamples), dtype=np.float64, order="F")  # column r: resample r's counts, contiguous
    for resample, drawn in enumerate(draws):  # one small bincount per resample stays in cache: 10x faster
        counts[:, resample] = np.bincount(drawn, minlength=n)  # than one over all resamples at n = 10,000
    counts.flags.writeable = False
    return counts


def bootstrap_means(values: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> np.ndarray:
    """Means of `resamples` bootstrap resamples (images drawn with replacement) of each row of values [k, n]
    (or of values [n]); one seeded set of draws serves every row, so rows stay paired: [k, resamples]."""
    values = np.asarray(values, dtype=np.float64)
    rows = values.reshape(-1, values.shape[-1])
    n = rows.shape[1]
    means = rows @ _draw_counts(n, resamples, seed) / n
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
