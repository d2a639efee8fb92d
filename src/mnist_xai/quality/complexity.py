"""Complexity: how concentrated an explanation is."""

from __future__ import annotations

import numpy as np


def gini_sparseness(maps: np.ndarray) -> np.ndarray:
    """Gini index of |map| per map (Chalasani et al. 2020, as in Quantus' Sparseness): 0 when every pixel
    carries the same attribution, towards 1 when one pixel carries it all. An all-zero map scores 0."""
    values = np.sort(np.abs(maps.reshape(len(maps), -1)).astype(np.float64), axis=1)
    n = values.shape[1]
    weights = 2 * np.arange(1, n + 1) - n - 1
    totals = values.sum(axis=1)
    return np.divide((values * weights).sum(axis=1), n * totals, out=np.zeros(len(values)), where=totals > 0)


def histogram_entropy(maps: np.ndarray, bins: int = 100) -> np.ndarray:
    """Shannon entropy (nats) of each map's histogram: `bins` equal bins over the map's own range, as Quantus'
    discrete_entropy computes it (np.histogram, then scipy.stats.entropy of the counts). A constant map puts
    everything in one bin: entropy 0."""
    entropies = np.empty(len(maps))
    for i, values in enumerate(np.asarray(maps).reshape(len(maps), -1)):
        counts, _ = np.histogram(values, bins=bins)
        p = counts[counts > 0] / counts.sum()
        entropies[i] = float(-(p * np.log(p)).sum())
    return entropies
