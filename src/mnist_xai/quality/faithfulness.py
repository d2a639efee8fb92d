"""Faithfulness: deletion and insertion curves (Petsiuk et al. 2018, RISE), faithfulness correlation (Bhatt et
al. 2020) and the completeness gap (Sundararajan et al. 2017)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from mnist_xai.attribution.gradients import gaussian_blur
from mnist_xai.data import BLACK
from mnist_xai.model import commuted


@dataclass
class Curves:
    fractions: np.ndarray  # [K] fraction of pixels removed / inserted, 0..1
    deletion: np.ndarray  # [n, K] probability of the clean prediction as pixels are removed
    insertion: np.ndarray  # [n, K] ... as pixels are inserted into the start image

    @property
    def deletion_auc(self) -> np.ndarray:
        return auc(self.fractions, self.deletion)

    @property
    def insertion_auc(self) -> np.ndarray:
        return auc(self.fractions, self.insertion)


def auc(fractions: np.ndarray, curves: np.ndarray) -> np.ndarray:
    """Trapezoid rule over [0, 1]; scores are probabilities, so the area is in [0, 1]."""
    return ((curves[:, 1:] + curves[:, :-1]) / 2 * np.diff(fractions)).sum(axis=1)


def relevance_order(maps: np.ndarray, seed: int) -> np.ndarray:
    """Pixel indices of each map, most relevant (largest attribution) first; equal values in a seeded random
    order, so the all-zero background of a CAM or saliency map is not removed top-left first."""
    rng = np.random.default_rng(seed)
    flat = maps.reshape(len(maps), -1)
    tiebreak = np.stack([rng.permutation(flat.shape[1]) for _ in range(len(flat))])
    return np.stack([np.lexsort((tie, -row)) for row, tie in zip(flat, tiebreak, strict=True)])


@torch.inference_mode()
def deletion_insertion(model: nn.Module, x: torch.Tensor, maps: np.ndarray, classes: torch.Tensor, *, step: int,
                       insertion_start: str, blur_sigma: float, seed: int, batch_size: int = 256) -> Curves:
    """Remove (deletion: set to black, the normalised pixel 0) or insert (into a blurred or black start image)
    `step` pixels at a time in relevance order, scoring the softmax probability of `classes` (the class
    predicted on the clean image) after each step."""
    model = commuted(model)
    n, pixels = len(x), x.shape[-1] * x.shape[-2]
    steps = int(np.ceil(pixels / step))
    counts = torch.tensor([min(k * step, pixels) for k in range(steps + 1)], device=x.device)
    order = torch.as_tensor(relevance_order(maps, seed), device=x.device)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(pixels, device=x.device).expand(n, -1))  # rank[i, p]: p's position
    flat = x.reshape(n, -1)
    start = (gaussian_blur(x, blur_sigma) if insertion_start == "blur" else torch.full_like(x, BLACK)).reshape(n, -1)
    images_per_pass = max(1, batch_size // (steps + 1))  # each image is scored at every step in one pass
    curves = {}
    for name in ("deletion", "insertion"):
        scores = torch.empty(n, steps + 1, device=x.device)
        for first in range(0, n, images_per_pass):
            rows = slice(first, min(n, first + images_per_pass))
            changed = rank[rows, None, :] < counts[None, :, None]  # [r, K, pixels]: touched by step k
            if name == "deletion":
                images = torch.where(changed, torch.tensor(BLACK, device=x.device), flat[rows, None, :])
            else:
                images = torch.where(changed, flat[rows, None, :], start[rows, None, :])
            logits = model(images.reshape(-1, *x.shape[1:]))
            probabilities = logits.softmax(dim=1).view(-1, steps + 1, logits.shape[1])
            scores[rows] = probabilities.gather(2, classes[rows, None, None].expand(-1, steps + 1, 1)).squeeze(2)
        curves[name] = scores.cpu().numpy()
    return Curves(fractions=(counts.float() / pixels).cpu().numpy(), **curves)


@torch.inference_mode()
def faithfulness_correlation(model: nn.Module, x: torch.Tensor, maps: np.ndarray, targets: np.ndarray, *,
                             runs: int, subset: int, seed: int, score: str = "logit",
                             batch_size: int = 512) -> np.ndarray:
    """Faithfulness correlation (Bhatt et al. 2020; Quantus FaithfulnessCorrelation): per image, `runs` random
    subsets of `subset` pixels are set to black; the Pearson correlation, over the runs, between the attribution
    summed over the subset and the drop of the explained score (the target's logit) it causes. Subsets drawn as
    Quantus draws them (np.random.choice without replacement, run by run, image by image) from a RandomState seeded
    with `seed`. NaN where either side is constant (a constant map: every subset sums alike)."""
    from mnist_xai.attribution.core import target_scores
    from mnist_xai.quality.stats import constant_rows

    model = commuted(model)
    n, features = len(x), int(np.prod(x.shape[1:]))
    rng = np.random.RandomState(seed)
    subsets = np.stack([np.stack([rng.choice(features, subset, replace=False) for _ in range(n)])
                        for _ in range(runs)], axis=1)  # [n, runs, subset]
    flat_maps = np.asarray(maps, dtype=np.float64).reshape(n, -1)
    sums = flat_maps[np.arange(n)[:, None, None], subsets].sum(axis=2)
    target = torch.as_tensor(targets, device=x.device)
    clean = target_scores(model(x), target, score).double().cpu().numpy()
    drops = np.empty((n, runs))
    rows = torch.arange(n * runs, device=x.device)
    for part in range(0, n * runs, batch_size):
        chunk = rows[part:part + batch_size]
        image, run = chunk // runs, chunk % runs
        perturbed = x[image].flatten(1).clone()
        cells = torch.as_tensor(subsets[image.cpu().numpy(), run.cpu().numpy()], device=x.device)
        perturbed.scatter_(1, cells, BLACK)
        scores = target_scores(model(perturbed.view(-1, *x.shape[1:])), target[image], score).double().cpu().numpy()
        drops.reshape(-1)[part:part + len(chunk)] = clean[image.cpu().numpy()] - scores
    centred_sums = sums - sums.mean(axis=1, keepdims=True)
    centred_drops = drops - drops.mean(axis=1, keepdims=True)
    denominator = np.sqrt((centred_sums ** 2).sum(axis=1) * (centred_drops ** 2).sum(axis=1))
    correlation = np.divide((centred_sums * centred_drops).sum(axis=1), denominator, out=np.full(n, np.nan),
                            where=denominator > 0)
    correlation[constant_rows(sums) | constant_rows(drops)] = np.nan
    return correlation


@torch.inference_mode()
def completeness_gap(model: nn.Module, x: torch.Tensor, maps: np.ndarray, targets: np.ndarray, *,
                     score: str = "logit") -> np.ndarray:
    """Completeness (Sundararajan et al. 2017; Quantus Completeness), as a continuous gap: per image,
    |sum of the map - (f(x) - f(black))| / |f(x) - f(black)|, f the explained target's logit and black the all-black
    image (the normalised pixel value 0). 0: the map adds up to the change of the output from the baseline, as
    Integrated Gradients, DeepLIFT and the Shapley methods promise. NaN where the output does not change."""
    from mnist_xai.attribution.core import target_scores

    model = commuted(model)
    target = torch.as_tensor(targets, device=x.device)
    clean = target_scores(model(x), target, score).double().cpu().numpy()
    black = target_scores(model(torch.full_like(x, BLACK)), target, score).double().cpu().numpy()
    change = clean - black
    sums = np.asarray(maps, dtype=np.float64).reshape(len(maps), -1).sum(axis=1)
    magnitude = np.abs(change)
    return np.divide(np.abs(sums - change), magnitude, out=np.full(len(change), np.nan), where=magnitude > 0)


_NEIGHBOURS = ((1, 1, 1 / 12), (0, 1, 1 / 6), (-1, 1, 1 / 12), (1, -1, 1 / 12), (0, -1, 1 / 6), (-1, -1, 1 / 12),
               (1, 0, 1 / 6), (-1, 0, 1 / 6))
"""Rong et al. 2022's imputation weights: 1/6 for the four direct neighbours, 1/12 for the four diagonal ones."""


def linear_imputation(images: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """Rong et al. 2022's linear imputation, noise-free: every removed pixel takes the weighted mean of its (up to 8)
    neighbours inside the image, removed neighbours being unknowns too; one sparse linear system for all images.
    `images` [n, H, W], `removed` [n, k] flat pixel indices; returns the imputed values [n, k], in that order."""
    from scipy.sparse import csc_matrix
    from scipy.sparse.linalg import spsolve

    n, height, width = images.shape
    k = removed.shape[1]
    if k == 0:
        return np.zeros((n, 0))
    flat = images.reshape(n, -1).astype(np.float64)
    variable = np.full((n, height * width), -1)
    variable[np.arange(n)[:, None], removed] = np.arange(n * k).reshape(n, k)
    rows, cols = np.divmod(removed, width)
    own = variable[np.arange(n)[:, None], removed]
    entries_i, entries_j, entries_w = [], [], []
    diagonal = np.zeros((n, k))
    right = np.zeros((n, k))
    for dr, dc, weight in _NEIGHBOURS:
        r, c = rows + dr, cols + dc
        inside = (r >= 0) & (r < height) & (c >= 0) & (c < width)
        neighbour = np.where(inside, r * width + c, 0)
        other = np.take_along_axis(variable, neighbour, axis=1)
        diagonal += weight * inside
        known = inside & (other < 0)
        right += np.where(known, weight * np.take_along_axis(flat, neighbour, axis=1), 0.0)
        unknown = inside & (other >= 0)
        entries_i.append(own[unknown])
        entries_j.append(other[unknown])
        entries_w.append(np.full(int(unknown.sum()), -weight))
    entries_i.append(own.ravel())
    entries_j.append(own.ravel())
    entries_w.append(diagonal.ravel())
    system = csc_matrix((np.concatenate(entries_w), (np.concatenate(entries_i), np.concatenate(entries_j))),
                        shape=(n * k, n * k))
    return np.asarray(spsolve(system, right.ravel())).reshape(n, k)


def road_percentages(steps: int) -> list[int]:
    """The shares of the image removed, in per cent: `steps` evenly spaced inside (0, 100) (9: 10, 20, ..., 90)."""
    return [int(round(100 * (s + 1) / (steps + 1))) for s in range(steps)]


@torch.inference_mode()
def road(model: nn.Module, x: torch.Tensor, maps: np.ndarray, targets: np.ndarray, *, percentages: list[int],
         noise: float, seed: int, most_relevant_first: bool = True) -> np.ndarray:
    """ROAD (Rong et al. 2022; Quantus ROAD), per image: at each share p of the pixels, the int(784 p / 100) most
    (MoRF) or least (LeRF) relevant pixels are removed and imputed from their neighbours (linear_imputation) plus
    Gaussian noise of std `noise` (in normalised input units), so that a removal is not a black hole the model can
    see; 1 where the model still predicts the explained class. Returns [n, len(percentages)]. Order: ours (ties in a
    seeded random order); noise drawn as Quantus draws it, share by share and image by image, np.random.randn(1, k),
    here from a RandomState seeded with `seed`."""
    model = commuted(model)
    n = len(x)
    order = relevance_order(maps, seed)
    if not most_relevant_first:
        order = order[:, ::-1]
    images = x.reshape(n, *x.shape[-2:]).double().cpu().numpy()
    pixels = images.shape[1] * images.shape[2]
    rng = np.random.RandomState(seed)
    target = torch.as_tensor(targets, device=x.device)
    kept = np.empty((n, len(percentages)))
    for column, p in enumerate(percentages):
        k = int(pixels * p / 100)
        removed = np.ascontiguousarray(order[:, :k])
        values = linear_imputation(images, removed) + noise * np.stack([rng.randn(1, k)[0] for _ in range(n)])
        perturbed = x.reshape(n, -1).clone()
        perturbed.scatter_(1, torch.as_tensor(removed, device=x.device),
                           torch.as_tensor(values, dtype=x.dtype, device=x.device))
        kept[:, column] = (model(perturbed.view(x.shape)).argmax(dim=1) == target).cpu().numpy()
    return kept


INFIDELITY_SQUARE = 4
"""Side of the squares infidelity removes: the planted cue's size, and Quantus' default patch."""


def square_masks(n: int, samples: int, size: int, side: int, rng: np.random.RandomState) -> np.ndarray:
    """Per image, `samples` squares of side `side` at uniformly drawn positions inside a size x size image, image by
    image, each square's row then column: bool [n, samples, size, size]."""
    corners = rng.randint(0, size - side + 1, size=(n, samples, 2))
    rows = np.arange(size)[None, None, :, None]
    cols = np.arange(size)[None, None, None, :]
    top, left = corners[..., 0, None, None], corners[..., 1, None, None]
    return (rows >= top) & (rows < top + side) & (cols >= left) & (cols < left + side)


@torch.inference_mode()
def infidelity_of(model: nn.Module, x: torch.Tensor, maps: np.ndarray, targets: np.ndarray, perturbed: torch.Tensor,
                  weights: np.ndarray, *, normalize: bool = True, batch_size: int = 512) -> np.ndarray:
    """Infidelity (Yeh et al. 2019) given the perturbations: per image, the mean over its S perturbations of
    (β Σ map · I - (f(x) - f(x̃)))², f the explained logit, x̃ the perturbed input [n, S, *x.shape[1:]] and I its
    weights [n, S, H, W]; β = Σ s d / Σ s² (0 when every s is 0), the scale that fits the map best (Captum's
    normalize=True, the paper's own code), or 1 with normalize=False (Quantus)."""
    from mnist_xai.attribution.core import target_scores

    model = commuted(model)
    n, samples = perturbed.shape[:2]
    target = torch.as_tensor(targets, device=x.device)
    clean = target_scores(model(x), target, "logit").double().cpu().numpy()
    flat = perturbed.reshape(n * samples, *x.shape[1:])
    repeated = target.repeat_interleave(samples)
    scores = np.concatenate([target_scores(model(flat[i:i + batch_size]), repeated[i:i + batch_size], "logit")
                             .double().cpu().numpy() for i in range(0, n * samples, batch_size)])
    drops = clean[:, None] - scores.reshape(n, samples)
    sums = (np.asarray(weights, dtype=np.float64).reshape(n, samples, -1)
            * np.asarray(maps, dtype=np.float64).reshape(n, 1, -1)).sum(axis=2)
    if normalize:
        squares = (sums ** 2).sum(axis=1)
        beta = np.divide((sums * drops).sum(axis=1), squares, out=np.zeros(n), where=squares > 0)
    else:
        beta = np.ones(n)
    return ((beta[:, None] * sums - drops) ** 2).mean(axis=1)


def infidelity(model: nn.Module, x: torch.Tensor, maps: np.ndarray, targets: np.ndarray, *, samples: int,
               seed: int) -> np.ndarray:
    """Infidelity (Yeh et al. 2019; Quantus Infidelity, Captum infidelity) with their square-removal perturbation:
    per image, `samples` squares of INFIDELITY_SQUARE pixels at random positions (a RandomState seeded with `seed`)
    set to black, one at a time; I is the square (binary: the attribution summed over the removed pixels, as for
    faithfulness correlation, since the maps here attribute contributions), and the map is fitted by its best
    scale β, so the score does not depend on the map's units. In logit²; 0: the map's sums predict every drop."""
    n, size = len(x), x.shape[-1]
    masks = square_masks(n, samples, size, INFIDELITY_SQUARE, np.random.RandomState(seed))
    cells = torch.as_tensor(masks, device=x.device)[:, :, None]
    perturbed = torch.where(cells, torch.tensor(BLACK, dtype=x.dtype, device=x.device), x[:, None])
    return infidelity_of(model, x, maps, targets, perturbed, masks.astype(np.float64))
