"""Rank statistics shared by the quality metrics."""

from __future__ import annotations

import functools
from statistics import NormalDist

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


def constant_maps(maps: np.ndarray) -> np.ndarray:
    """Maps that are constant, or constant up to float rounding (spread below 1e-6 of their largest |value|)."""
    flat = np.asarray(maps, dtype=np.float64).reshape(len(maps), -1)
    spread = flat.max(axis=1) - flat.min(axis=1)
    return constant_rows(flat) | (spread <= 1e-6 * np.abs(flat).max(axis=1))


def rounded(value) -> float | None:
    """Six places, so reruns give equal files; None (JSON null) for a value that does not exist (NaN)."""
    return None if value is None or np.isnan(value) else round(float(value), 6)


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


_NORMAL = NormalDist()


def z_score(confidence: float) -> float:
    """The two-sided normal quantile of a confidence level: 1.96 at 0.95."""
    return _NORMAL.inv_cdf((1 + confidence) / 2)


Z = z_score(CONFIDENCE)


def interval(values: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0,
             confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """The mean of per-image values and its BCa bootstrap interval, 95 % unless `confidence` says otherwise (Efron
    1987: the percentile interval corrected for the bootstrap distribution's bias and skew, which matters at the
    small n of the randomisation checks). NaN values (a map that collapsed, say) are left out; none left gives
    NaN. A sample whose values are all equal has a zero-width interval: nothing in it varies."""
    values = np.asarray(values, dtype=np.float64)
    values = values[~np.isnan(values)]
    if values.size == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(values.mean())
    deviations = values - mean
    spread = float((deviations ** 2).sum())
    if spread <= 1e-24 * max(1.0, mean * mean) * len(values):
        return mean, mean, mean
    means = np.sort(bootstrap_means(values, resamples, seed))
    below = (np.count_nonzero(means < mean) + 0.5 * np.count_nonzero(means == mean)) / len(means)
    bias = _NORMAL.inv_cdf(min(max(below, 0.5 / len(means)), 1 - 0.5 / len(means)))
    acceleration = float((deviations ** 3).sum()) / (6.0 * spread ** 1.5)
    bounds = []
    z_high = z_score(confidence)
    for z in (-z_high, z_high):
        shifted = bias + z
        bounds.append(_NORMAL.cdf(bias + shifted / (1 - acceleration * shifted)))
    low, high = np.quantile(means, bounds)
    return mean, float(min(low, mean)), float(max(high, mean))


def proportion_interval(hits: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """The share of hits (bool or 0/1 per image) and its Wilson score interval (Wilson 1927; 95 % by default): it stays
    inside [0, 1] and does not collapse to [0, 0] or [1, 1] at the edges, where a percentile bootstrap does."""
    hits = np.asarray(hits, dtype=np.float64)
    hits = hits[~np.isnan(hits)]
    return wilson(float(hits.sum()), len(hits), confidence)


def wilson(successes: float, n: int, confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    if n == 0:
        return float("nan"), float("nan"), float("nan")
    p = successes / n
    z = z_score(confidence)
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return p, float(max(0.0, min(p, centre - half))), float(min(1.0, max(p, centre + half)))


def paired_proportion_difference(a: np.ndarray, b: np.ndarray, confidence: float = CONFIDENCE
                                 ) -> tuple[float, float, float]:
    """share(a) - share(b) for paired hits on the same images, with Newcombe's (1998, method 10) interval (95 % by
    default): Wilson intervals of both shares, combined with their correlation. Exact 0 with a narrow interval when
    a and b agree on every image; it stays inside [-1, 1]."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    n = len(a)
    if n == 0:
        return float("nan"), float("nan"), float("nan")
    both, only_a, only_b = np.sum(a & b), np.sum(a & ~b), np.sum(~a & b)
    neither = n - both - only_a - only_b
    p1, l1, u1 = wilson(float(both + only_a), n, confidence)
    p2, l2, u2 = wilson(float(both + only_b), n, confidence)
    product = float((both + only_a) * (only_b + neither) * (both + only_b) * (only_a + neither))
    phi = float(both * neither - only_a * only_b) / np.sqrt(product) if product > 0 else 0.0
    below = np.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    above = np.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    difference = p1 - p2
    return difference, float(max(-1.0, difference - below)), float(min(1.0, difference + above))


def paired_interval(a: np.ndarray, b: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0
                    ) -> tuple[float, float, float]:
    """Mean of a - b over the same images, with its 95 % paired-bootstrap interval (both resampled together)."""
    return interval(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64), resamples, seed)


def hierarchical_means(values: np.ndarray, replicates: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES,
                       seed: int = 0) -> np.ndarray:
    """Two-stage bootstrap means [resamples]: draw the replicates with replacement, then the images within each
    drawn replicate with replacement (Davison & Hinkley 1997, sec. 3.8), so that the spread covers the random
    draw of the replicates (their models, networks, image subsets) as well as of the images. NaN values left out."""
    values = np.asarray(values, dtype=np.float64)
    keep = ~np.isnan(values)
    values, replicates = values[keep], np.asarray(replicates)[keep]
    groups = [values[replicates == r] for r in np.unique(replicates)]
    sizes = np.array([len(g) for g in groups], dtype=np.float64)
    rng = np.random.default_rng(seed)
    # row r: `resamples` image-bootstrap means of replicate r; stage one picks a replicate and one of its rows
    within = np.stack([g[rng.integers(0, len(g), size=(resamples, len(g)))].mean(axis=1) for g in groups])
    chosen = rng.integers(0, len(groups), size=(resamples, len(groups)))
    column = rng.integers(0, resamples, size=(resamples, len(groups)))
    weights = sizes[chosen]
    return (within[chosen, column] * weights).sum(axis=1) / weights.sum(axis=1)


def hierarchical_interval(values: np.ndarray, replicates: np.ndarray, exact: tuple[float, float, float],
                          resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0, confidence: float = CONFIDENCE
                          ) -> tuple[float, float, float]:
    """The pooled mean with an interval (95 % by default) that covers both random sources: the two-stage bootstrap
    percentile interval, widened where needed to the interval of the pooled images alone (`exact`: Wilson, Newcombe
    or BCa as the statistic calls for, at the same level), which stays honest at the edges where a percentile
    bootstrap collapses (a pointing game of 1.0 in every replicate). One replicate: `exact` as it is."""
    values = np.asarray(values, dtype=np.float64)
    present = np.unique(np.asarray(replicates)[~np.isnan(values)])
    if len(present) < 2 or np.isnan(exact[0]):
        return exact
    low, high = np.quantile(hierarchical_means(values, replicates, resamples, seed), [(1 - confidence) / 2,
                                                                                     (1 + confidence) / 2])
    value = exact[0]
    return value, float(min(low, exact[1], value)), float(max(high, exact[2], value))
