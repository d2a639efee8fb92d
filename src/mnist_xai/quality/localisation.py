"""Ground truth: does the map point at the region the model provably relies on? Per image, given a mask.

- relevance mass accuracy (Arras, Osman & Samek 2022, CLEVR-XAI): positive attribution inside the mask over
  all positive attribution. Quantus' RelevanceMassAccuracy sums the raw map instead (negatives included,
  unless abs=True); for a non-negative map the two agree.
- relevance rank accuracy (Arras et al. 2022): the share of the k largest values, k = the mask's area, that
  fall inside the mask. Equal values are taken in a seeded random order (Quantus: whatever argsort gives).
- localisation AUC (Fawcett 2006; Quantus' AUC): the area under the ROC curve of the map as a score for "this
  pixel is in the mask", i.e. the chance that a random mask pixel outranks a random pixel outside it, ties counted
  half (the Mann-Whitney statistic): 0.5 for a map with no information, a constant map included.
- pointing game (Zhang et al. 2018): whether the largest value lies inside the mask, or within a tolerance of it
  (theirs: 15 px at 224 px, 2 px here). A tie for the largest is broken by the same seeded order, so a constant
  map scores chance (Quantus counts a hit if any tied pixel is inside, so a constant map always hits).

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


def localisation_auc(maps: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Per image, the ROC AUC of the raw map against the mask (Fawcett 2006), from average ranks: (sum of the mask
    pixels' ranks - k(k+1)/2) / (k (n - k)), k the mask's pixels. NaN where the mask is empty or the whole image."""
    from mnist_xai.quality.stats import average_ranks

    flat_masks = masks.reshape(len(masks), -1).astype(bool)
    ranks = average_ranks(np.asarray(maps, dtype=np.float64).reshape(len(maps), -1))
    k = flat_masks.sum(axis=1).astype(np.float64)
    pairs = k * (flat_masks.shape[1] - k)
    wins = (ranks * flat_masks).sum(axis=1) - k * (k + 1) / 2
    return np.divide(wins, pairs, out=np.full(len(k), np.nan), where=pairs > 0)


POINTING_TOLERANCE = 2
"""Zhang et al. 2018 count a hit within 15 pixels of the object on images about 224 pixels wide: 15 x 28 / 224 =
1.9, so 2 pixels at MNIST's 28. A 3x3 convolution reads a patch's edge from the pixels bordering it, so maps that
follow the model light up there; with no tolerance, the game hinges on one pixel."""


def pointing_distance(maps: np.ndarray, masks: np.ndarray, seed: int) -> np.ndarray:
    """Per image, the Euclidean distance in pixels from the map's largest value to the nearest mask pixel (0
    inside the mask); a tie for the largest is broken in a seeded random order, so a constant map scores chance."""
    first = relevance_order(maps, seed)[:, 0]
    width = masks.shape[-1]
    rows, cols = np.divmod(first, width)
    distances = np.empty(len(masks))
    for i, mask in enumerate(masks):
        mask_rows, mask_cols = np.nonzero(mask)
        distances[i] = np.sqrt(((mask_rows - rows[i]) ** 2 + (mask_cols - cols[i]) ** 2).min()) if len(mask_rows) \
            else np.inf
    return distances


def pointing_game(maps: np.ndarray, masks: np.ndarray, seed: int, tolerance: float = 0) -> np.ndarray:
    """1 where the map's largest value lies within `tolerance` pixels of the mask (Zhang et al. 2018), else 0."""
    return (pointing_distance(maps, masks, seed) <= tolerance).astype(np.float64)


def chance_level(masks: np.ndarray) -> float:
    """What a map with no information scores on mass, rank and pointing: the mask's share of the image."""
    return float(masks.reshape(len(masks), -1).mean())


def pointing_chance(tolerance: float, size: int = 28) -> float:
    """The pointing game's chance level: the share of the image within `tolerance` pixels of a corner cue (what
    a map's largest value hits when it falls anywhere at random). The same for every corner."""
    from mnist_xai.decoy import cue_masks

    mask_rows, mask_cols = np.nonzero(cue_masks(np.zeros(1, dtype=int), size)[0])
    rows, cols = np.mgrid[0:size, 0:size]
    distance = np.sqrt((rows[..., None] - mask_rows) ** 2 + (cols[..., None] - mask_cols) ** 2).min(axis=-1)
    return float((distance <= tolerance).mean())
