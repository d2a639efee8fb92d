"""Ground truth: does the map point at the region the model provably relies on? Per image, given a mask.

- relevance mass accuracy (Arras, Osman & Samek 2022, CLEVR-XAI): positive attribution inside the mask over
  all positive attribution. Quantus' RelevanceMassAccuracy sums the raw map instead (negatives included,
  unless abs=True); for a non-negative map the two agree.
- relevance rank accuracy (Arras et al. 2022): the share of the k largest values, k = the mask's area, that
  fall inside the mask. Equal values are taken in a seeded random order (Quantus: whatever argsort gives).
- pointing game (Zhang et al. 2018): whether the largest value lies inside the mask. A tie for the largest is
  broken by the same seeded order, so a constant map scores chance (Quantus counts a hit if any tied pixel is
  inside, so a constant map always hits).

An all-zero map has no positive mass: its mass accuracy is 0, not NaN.
"""

from __future__ import annotations

import numpy as np

from mnist_xai.quality.faithfulness import relevance_order


def relevance_mass_accuracy(maps: np.ndarray, masks: np.ndarray) -> np.ndarray:
    flat = np.clip(np.asarray(maps, dtype=np.float64).reshape(len(maps), -1), 0, None)
    inside = (flat * masks.reshape(len(masks), -1)).sum(axis=1)
    total = flat.sum(axis=1)
    return np.divide(inside, total, out=np.zeros(len(flat)), where=total > 0)


def relevance_rank_accuracy(maps: np.ndarray, masks: np.ndarray, seed: int) -> np.ndarray:
    order = relevance_order(maps, seed)  # most relevant first, ties in a seeded random order
    flat_masks = masks.reshape(len(masks), -1)
    k = flat_masks.sum(axis=1)
    ranked = np.take_along_axis(flat_masks, order, axis=1)
    hits = np.array([row[:size].sum() for row, size in zip(ranked, k, strict=True)], dtype=np.float64)
    return np.divide(hits, k, out=np.zeros(len(k)), where=k > 0)


def pointing_game(maps: np.ndarray, masks: np.ndarray, seed: int) -> np.ndarray:
    first = relevance_order(maps, seed)[:, 0]
    return masks.reshape(len(masks), -1)[np.arange(len(masks)), first].astype(np.float64)


def chance_level(masks: np.ndarray) -> float:
    """What a map with no information scores on mass, rank and pointing: the mask's share of the image."""
    return float(masks.reshape(len(masks), -1).mean())
