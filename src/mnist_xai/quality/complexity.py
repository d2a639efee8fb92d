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
