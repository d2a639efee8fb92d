"""Perturbation methods on image segments: Shapley value sampling, KernelSHAP and LIME.

The features are superpixels: SLIC (Achanta et al. 2012, scikit-image) of the pixels that differ from the baseline.
A pixel equal to the baseline cannot be removed, so it is no feature and gets 0, as SHAP's KernelExplainer gives 0
to a feature that does not vary. With the black baseline on MNIST that leaves the background out; the strokes (and a
planted cue) are cut by their content. A regular grid would not do: the decoy cue sits on a 4-pixel grid, and SLIC's
own grid start on a blank 28 x 28 background is that grid at n_segments = 50 (its corner segment is the cue's 4 x 4).

A coalition keeps the pixels of its features and sets the rest to the baseline; the explained score of every
coalition is one forward pass. Each feature's value is written on all of its pixels (Captum's convention).

- Shapley value sampling (Castro et al. 2009; Captum ShapleyValueSampling): n_samples random orders; each feature's
  value is the mean change of the score when it is added to the features before it.
- KernelSHAP (Lundberg & Lee 2017; Captum KernelShap): n_samples coalitions, the size k drawn with probability
  proportional to (M - 1) / (k (M - k)) and then k features at random; a least-squares fit with the paper's two
  constraints (the empty coalition scores f(baseline), the full one f(x)), so the values sum to f(x) - f(baseline).
- LIME (Ribeiro et al. 2016, as the `lime` package explains images): n_samples coalitions, each feature kept with
  probability 1/2, the first the whole image; weights sqrt(exp(-d^2 / w^2)) of the cosine distance d to the whole
  image; ridge regression (alpha, intercept).

Every draw comes from one generator seeded with `seed`, image by image in order, so a map does not depend on the
batch size; `coalitions()` and `orders()` make them, so that a test can hand the same draws to Captum.
"""

from __future__ import annotations

import warnings
from functools import partial

import numpy as np
import torch

from mnist_xai.attribution.core import chunks, image_chunks, target_scores
from mnist_xai.data import BLACK


def fill_value(baseline: str) -> float:
    """The baseline pixel value in the model's input space: black (pixel 0) or zero (the data mean)."""
    return BLACK if baseline == "black" else 0.0


def superpixels(x: torch.Tensor, fill: float, n_segments: int, compactness: float) -> list[np.ndarray]:
    """Per image, int64 [H, W]: 0 where every channel equals `fill` (no feature), else its superpixel 1..M.

    SLIC on the image scaled to [0, 1] (so that `compactness` means the same on any normalisation), restricted to
    the pixels that differ from the baseline; scikit-image seeds its k-means start with a fixed seed."""
    from skimage.segmentation import slic

    images = x.detach().cpu().double()
    varying = (images != fill).any(dim=1).numpy()
    low = images.flatten(1).amin(1).view(-1, 1, 1, 1)
    high = images.flatten(1).amax(1).view(-1, 1, 1, 1)
    scaled = ((images - low) / (high - low).clamp_min(1e-12)).permute(0, 2, 3, 1).numpy()
    labels = []
    for image, mask in zip(scaled, varying, strict=True):
        if not mask.any():
            labels.append(np.zeros(mask.shape, dtype=np.int64))
            continue
        with warnings.catch_warnings():  # SLIC's k-means start warns when a cluster comes out empty
            warnings.simplefilter("ignore", UserWarning)
            segments = slic(image, n_segments=n_segments, compactness=compactness, channel_axis=-1, start_label=1,
                            mask=mask)
        _, dense = np.unique(segments, return_inverse=True)  # 0 stays 0 (outside the mask); features 1..M
        labels.append(dense.reshape(mask.shape).astype(np.int64) + (0 if (segments == 0).any() else 1))
    return labels


def feature_counts(labels: list[np.ndarray]) -> list[int]:
    """The number of features M of each image."""
    return [int(segments.max()) for segments in labels]


def orders(counts: list[int], n_samples: int, seed: int) -> list[torch.Tensor]:
    """Shapley value sampling's draws: per image, n_samples random orders of its features (int64 [n, M])."""
    generator = torch.Generator().manual_seed(seed)
    return [torch.rand(n_samples, m, generator=generator).argsort(dim=1) for m in counts]


def coalitions(counts: list[int], n_samples: int, seed: int, kind: str) -> list[torch.Tensor]:
    """KernelSHAP's or LIME's draws: per image, n_samples coalitions (bool [n, M], a row the features kept).

    kernel_shap: the full and the empty coalition first, then sizes k ~ (M - 1) / (k (M - k)) and k features at
    random. lime: the full image first, then each feature kept with probability 1/2."""
    generator = torch.Generator().manual_seed(seed)
    drawn = []
    for m in counts:
        rows = torch.zeros(n_samples, m, dtype=torch.bool)
        rows[0] = True
        if kind == "lime":
            rows[1:] = torch.rand(n_samples - 1, m, generator=generator) < 0.5
        elif m > 1 and n_samples > 2:
            sizes = torch.arange(1, m, dtype=torch.float64)
            size = torch.multinomial((m - 1) / (sizes * (m - sizes)), n_samples - 2, replacement=True,
                                     generator=generator) + 1
            order = torch.rand(n_samples - 2, m, generator=generator).argsort(dim=1)  # k features at random: the
            rows[2:].scatter_(1, order, torch.arange(m)[None, :] < size[:, None])  # first k of a random order
        drawn.append(rows)
    return drawn


def coalition_scores(model, x, targets, labels, kept: list[torch.Tensor], *, fill, score, batch_size):
    """The explained score of every coalition: per image, float64 [rows] for kept[i] (bool [rows, M_i])."""
    inputs, owners, sizes = [], [], []
    for i, (segments, rows) in enumerate(zip(labels, kept, strict=True)):
        members = torch.as_tensor(segments).flatten()
        onehot = members[None, :] == torch.arange(1, rows.shape[1] + 1)[:, None]  # [M, H*W]
        keep = (rows.double() @ onehot.double()).bool().view(len(rows), 1, *x.shape[2:]).to(x.device)
        inputs.append(torch.where(keep, x[i], torch.full_like(x[i], fill)))
        owners.append(torch.full((len(rows),), i, dtype=torch.long))
        sizes.append(len(rows))
    inputs, owners = torch.cat(inputs), torch.cat(owners).to(x.device)
    out = torch.empty(len(inputs), dtype=torch.float64, device=x.device)
    with torch.inference_mode():
        for part in chunks(len(inputs), batch_size):
            out[part] = target_scores(model(inputs[part]), targets[owners[part]], score).double()
    return list(out.cpu().split(sizes))


def paint(labels: np.ndarray, values: torch.Tensor) -> torch.Tensor:
    """The map [H, W]: each feature's value on its pixels, 0 on the pixels that are no feature."""
    table = torch.cat([torch.zeros(1, dtype=torch.float64), values.double()])
    return table[torch.as_tensor(labels)].float()


def _segment_method(model, x, targets, *, n_segments, compactness, baseline, score, batch_size, draw, fit):
    """The common loop: superpixels, the draws (counts -> per image coalitions), the scores of the coalitions a few
    images at a time, and one fit per image (coalitions, scores -> feature values)."""
    fill = fill_value(baseline)
    maps = torch.zeros(x.shape[0], *x.shape[2:])
    labels = superpixels(x, fill, n_segments, compactness)
    counts = feature_counts(labels)
    drawn = draw(counts)
    for rows in image_chunks(len(x), max(1, batch_size // 16)):
        images = range(rows.start, rows.stop)
        scores = coalition_scores(model, x[rows], targets[rows], labels[rows], drawn[rows], fill=fill, score=score,
                                  batch_size=batch_size)
        for i, image_scores in zip(images, scores, strict=True):
            if counts[i]:
                maps[i] = paint(labels[i], fit(drawn[i], image_scores))
    return maps.to(x.device)


def shapley_from_orders(kept: torch.Tensor, scores: torch.Tensor, *, n_samples: int) -> torch.Tensor:
    """Mean marginal contribution: `kept` holds, per order, the coalitions after adding each feature in turn
    (rows order-major, the empty coalition first), so consecutive scores differ by one feature."""
    m = kept.shape[1]
    empty, steps = scores[0], scores[1:].view(n_samples, m)
    previous = torch.cat([empty.expand(n_samples, 1), steps[:, :-1]], dim=1)
    added = (kept[1:].view(n_samples, m, m).int().diff(dim=1, prepend=torch.zeros(n_samples, 1, m, dtype=torch.int))
             .argmax(dim=2))  # the feature each step adds
    values = torch.zeros(m, dtype=torch.float64)
    values.index_add_(0, added.flatten(), (steps - previous).flatten())
    return values / n_samples


def _order_coalitions(order: torch.Tensor) -> torch.Tensor:
    """bool [n * M + 1, M]: the empty coalition, then for each order the features kept after each step."""
    n, m = order.shape
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(m).expand(n, m))
    steps = torch.arange(1, m + 1)
    kept = rank[:, None, :] < steps[None, :, None]  # [n, steps, M]
    return torch.cat([torch.zeros(1, m, dtype=torch.bool), kept.reshape(n * m, m)])


def shapley_sampling(model, x, targets, *, n_segments, compactness, baseline, n_samples, seed, score, batch_size):
    """Shapley value sampling on superpixels (Castro et al. 2009; Captum ShapleyValueSampling given the same
    orders): n_samples random orders, each feature's mean marginal contribution."""
    return _segment_method(model, x, targets, n_segments=n_segments, compactness=compactness, baseline=baseline,
                           score=score, batch_size=batch_size, fit=partial(shapley_from_orders, n_samples=n_samples),
                           draw=lambda counts: [_order_coalitions(o) for o in orders(counts, n_samples, seed)])


def kernel_shap_fit(kept: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """Least squares over the sampled coalitions (rows 2..), subject to the paper's constraints: the empty
    coalition (row 1) scores phi_0 and the values sum to f(x) - f(empty) (row 0 is the full coalition). One value is
    eliminated by the sum; a rank-deficient system takes the least-norm solution."""
    m = kept.shape[1]
    total = scores[0] - scores[1]
    if m == 1 or len(kept) <= 2:
        return torch.full((m,), float(total) / m, dtype=torch.float64)
    z = kept[2:].double()
    y = scores[2:] - scores[1] - z[:, -1] * total
    design = z[:, :-1] - z[:, -1:]
    head = torch.linalg.lstsq(design, y[:, None], driver="gelsd").solution[:, 0]
    return torch.cat([head, (total - head.sum()).view(1)])


def kernel_shap(model, x, targets, *, n_segments, compactness, baseline, n_samples, seed, score, batch_size):
    """KernelSHAP on superpixels (Lundberg & Lee 2017; Captum KernelShap given the same coalitions, where the
    constraints are a weight of 10^6 instead of exact)."""
    return _segment_method(model, x, targets, n_segments=n_segments, compactness=compactness, baseline=baseline,
                           score=score, batch_size=batch_size, fit=kernel_shap_fit,
                           draw=lambda counts: coalitions(counts, n_samples, seed, "kernel_shap"))


def lime_weights(kept: torch.Tensor, kernel_width: float) -> torch.Tensor:
    """lime's image kernel: sqrt(exp(-d^2 / w^2)), d the cosine distance of each coalition to the whole image (1 for
    the empty coalition, as scikit-learn's cosine distance has it)."""
    z = kept.double()
    norms = z.norm(dim=1) * kept.shape[1] ** 0.5
    similarity = torch.where(norms > 0, z.sum(dim=1) / norms.clamp_min(1e-300), torch.zeros_like(norms))
    distance = 1 - similarity
    return torch.sqrt(torch.exp(-distance ** 2 / kernel_width ** 2))


def lime_fit(kept: torch.Tensor, scores: torch.Tensor, *, kernel_width: float, alpha: float) -> torch.Tensor:
    """Weighted ridge regression with an intercept (scikit-learn's Ridge with sample weights, as lime fits it)."""
    z, w = kept.double(), lime_weights(kept, kernel_width)
    z_mean = (w[:, None] * z).sum(0) / w.sum()
    y_mean = (w * scores).sum() / w.sum()
    zc, yc = (z - z_mean) * w.sqrt()[:, None], (scores - y_mean) * w.sqrt()
    gram = zc.T @ zc + alpha * torch.eye(z.shape[1], dtype=torch.float64)
    return torch.linalg.solve(gram, zc.T @ yc)


def lime(model, x, targets, *, n_segments, compactness, baseline, n_samples, kernel_width, alpha, seed, score,
         batch_size):
    """LIME on superpixels (Ribeiro et al. 2016, the `lime` package's image explainer; Captum Lime given the same
    coalitions, kernel and ridge model)."""
    return _segment_method(model, x, targets, n_segments=n_segments, compactness=compactness, baseline=baseline,
                           score=score, batch_size=batch_size,
                           fit=partial(lime_fit, kernel_width=kernel_width, alpha=alpha),
                           draw=lambda counts: coalitions(counts, n_samples, seed, "lime"))
