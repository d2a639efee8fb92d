"""Shapley-value estimates that take a baseline distribution (a sample of training images, `background`) instead
of one reference image: Expected Gradients, GradientShap and DeepLiftShap.

- Expected Gradients (Erion et al. 2021) and GradientShap (Lundberg & Lee 2017, as Captum implements it): per image,
  n samples, each a background image b drawn at random, a point b + alpha (x' - b) with alpha ~ U(0, 1) on the path
  to the input x' (x itself, or x plus Gaussian noise for GradientShap), and (x' - b) times the gradient there;
  the map is their mean. With no noise the two are the same estimator.
- DeepLiftShap (Lundberg & Lee 2017): DeepLIFT's Rescale rule against every background image, averaged.

Every draw comes from one generator seeded with `seed`, so the maps are deterministic; `draws()` makes them, so that
a test can hand the same draws to Captum.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mnist_xai.attribution.core import chunks, image_chunks, images_per_chunk, input_gradients, reduce_channels
from mnist_xai.attribution.gradients import deeplift_against


@dataclass
class Draws:
    """Per image and sample (image-major, Captum's x.repeat_interleave(n) layout): which background image, where on
    the path, and the input noise."""

    background: torch.Tensor  # int64 [N * n]
    alpha: torch.Tensor  # [N * n]
    noise: torch.Tensor  # [N * n, C, H, W]


def draws(x: torch.Tensor, n_samples: int, n_background: int, sigma: float, seed: int) -> Draws:
    """The random numbers of Expected Gradients / GradientShap for inputs x; noise std = sigma x each image's range
    (max - min), as SmoothGrad's."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    rows = len(x) * n_samples
    background = torch.randint(n_background, (rows,), generator=generator)
    alpha = torch.rand(rows, generator=generator, dtype=torch.float64).to(x.dtype)
    spread = (x.flatten(1).amax(1) - x.flatten(1).amin(1)).repeat_interleave(n_samples).cpu()
    noise = torch.randn((rows, *x.shape[1:]), generator=generator) * (sigma * spread).view(-1, *(1,) * (x.dim() - 1))
    return Draws(background.to(x.device), alpha.to(x.device), noise.to(x.device, x.dtype))


def gradient_shap_with(model, x, targets, background, given: Draws, *, n_samples, score, batch_size):
    """The estimator given its draws: mean over samples of (x' - b) * d score / d x at b + alpha (x' - b)."""
    maps = torch.empty(x.shape[0], *x.shape[2:], device=x.device)
    ones = (1,) * (x.dim() - 1)
    for rows in image_chunks(len(x), images_per_chunk(batch_size, n_samples)):
        total = torch.zeros_like(x[rows])
        for part in chunks((rows.stop - rows.start) * n_samples, batch_size):
            sample = slice(rows.start * n_samples + part.start, rows.start * n_samples + part.stop)
            owner = torch.arange(part.start, part.stop, device=x.device) // n_samples  # image within the chunk
            noisy = x[rows][owner] + given.noise[sample]
            base = background[given.background[sample]]
            point = base + given.alpha[sample].view(-1, *ones) * (noisy - base)
            grads = input_gradients(model, point, targets[rows][owner], score)
            total.index_add_(0, owner, (noisy - base) * grads)
        maps[rows] = reduce_channels(total / n_samples)
    return maps


def expected_gradients(model, x, targets, *, background, n_samples, seed, score, batch_size):
    """Expected Gradients (Erion et al. 2021): Integrated Gradients with the baseline drawn from the background and
    one random point per sample on its path; Captum GradientShap with stdevs=0 given the same draws."""
    given = draws(x, n_samples, len(background), 0.0, seed)
    return gradient_shap_with(model, x, targets, background, given, n_samples=n_samples, score=score,
                              batch_size=batch_size)


def gradient_shap(model, x, targets, *, background, n_samples, sigma, seed, score, batch_size):
    """GradientShap (Lundberg & Lee 2017; Captum GradientShap): Expected Gradients at noisy copies of the input
    (SmoothGrad's noise, sigma x the image's range)."""
    given = draws(x, n_samples, len(background), sigma, seed)
    return gradient_shap_with(model, x, targets, background, given, n_samples=n_samples, score=score,
                              batch_size=batch_size)


def deeplift_shap(model, x, targets, *, background, score, batch_size):
    """DeepLiftShap (Lundberg & Lee 2017; Captum DeepLiftShap): the mean of DeepLIFT's Rescale maps against each
    background image."""
    count = len(background)
    maps = torch.empty(x.shape[0], *x.shape[2:], device=x.device)
    for rows in image_chunks(len(x), images_per_chunk(batch_size, 2 * count)):
        images = x[rows].repeat_interleave(count, dim=0)
        references = background.repeat(rows.stop - rows.start, *(1,) * (x.dim() - 1))
        each = deeplift_against(model, images, references, targets[rows].repeat_interleave(count), score=score,
                                batch_size=batch_size)
        maps[rows] = each.view(-1, count, *x.shape[2:]).mean(dim=1)
    return maps
