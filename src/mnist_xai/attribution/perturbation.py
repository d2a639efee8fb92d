"""Perturbation methods: Occlusion, and the seeded random map used as a control."""

from __future__ import annotations

import math

import torch

from mnist_xai.attribution.core import chunks, image_chunks, images_per_chunk, target_scores
from mnist_xai.data import BLACK


def window_starts(size: int, window: int, stride: int) -> list[int]:
    """Window offsets along one axis, as Captum places them: every `stride`, the last one may hang over."""
    return [k * stride for k in range(math.ceil((size - window) / stride) + 1)]


@torch.inference_mode()
def occlusion(model, x, targets, *, window, stride, baseline, score, batch_size):
    """Score drop when a window x window patch (all channels) is set to the baseline, averaged over the
    patches that cover each pixel (Zeiler & Fergus 2014); Captum Occlusion with the same window, stride
    and baseline."""
    height, width = x.shape[2:]
    if window > min(height, width):
        raise ValueError(f"occlusion window {window} is larger than the {height}x{width} input")
    fill = BLACK if baseline == "black" else 0.0
    patches = [(r, c) for r in window_starts(height, window, stride) for c in window_starts(width, window, stride)]
    coverage = torch.zeros(height, width, device=x.device)
    for r, c in patches:
        coverage[r:r + window, c:c + window] += 1
    maps = torch.zeros(x.shape[0], height, width, device=x.device)
    for rows in image_chunks(len(x), images_per_chunk(batch_size, len(patches))):
        images, image_targets = x[rows], targets[rows]
        clean = target_scores(model(images), image_targets, score)
        occluded = images.unsqueeze(1).repeat(1, len(patches), 1, 1, 1)  # [n, P, C, H, W]
        for p, (r, c) in enumerate(patches):
            occluded[:, p, :, r:r + window, c:c + window] = fill
        occluded = occluded.flatten(0, 1)
        patch_targets = image_targets.repeat_interleave(len(patches))
        drops = torch.empty(len(occluded), device=x.device)
        for part in chunks(len(occluded), batch_size):
            drops[part] = target_scores(model(occluded[part]), patch_targets[part], score)
        drops = clean[:, None] - drops.view(len(images), len(patches))
        for p, (r, c) in enumerate(patches):
            maps[rows, r:r + window, c:c + window] += drops[:, p, None, None]
    return maps / coverage


def random_map(model, x, targets, *, seed, batch_size):
    """Uniform noise in [0, 1), seeded: the control that every real method must beat."""
    generator = torch.Generator(device=x.device).manual_seed(seed)
    return torch.rand((x.shape[0], *x.shape[2:]), generator=generator, device=x.device)
