"""Perturbation methods: Occlusion, and the seeded random map used as a control."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mnist_xai.attribution.core import chunks, image_chunks, images_per_chunk, target_scores
from mnist_xai.data import BLACK
from mnist_xai.errors import ParamError
from mnist_xai.model import is_plain_sequential


def window_starts(size: int, window: int, stride: int) -> list[int]:
    """Window offsets along one axis, as Captum places them: every `stride`, the last one may hang over."""
    return [k * stride for k in range(math.ceil((size - window) / stride) + 1)]


@torch.inference_mode()
def occlusion(model, x, targets, *, window, stride, baseline, score, batch_size):
    """Score drop when a window x window patch (all channels) is set to the baseline, averaged over the
    patches that cover each pixel (Zeiler & Fergus 2014); Captum Occlusion with the same window, stride
    and baseline.

    For a Sequential model that starts with Conv2d/ReLU/MaxPool2d layers, a patch changes only a
    small region of each feature map, so only that region is recomputed (LocalRecompute); other models
    get one full forward pass per patch.
    """
    height, width = x.shape[2:]
    if window > min(height, width):
        raise ParamError(f"occlusion window={window} is not allowed: it is larger than the {height}x{width} input")
    fill = BLACK if baseline == "black" else 0.0
    patches = [(r, c) for r in window_starts(height, window, stride) for c in window_starts(width, window, stride)]
    coverage = torch.zeros(height, width, device=x.device)
    for r, c in patches:
        coverage[r:r + window, c:c + window] += 1
    local = LocalRecompute.for_model(model)
    maps = torch.zeros(x.shape[0], height, width, device=x.device)
    per_chunk = batch_size if local else images_per_chunk(batch_size, len(patches))
    for rows in image_chunks(len(x), per_chunk):
        images, image_targets = x[rows], targets[rows]
        if local:
            clean, drops = local.occlusion_scores(images, image_targets, patches, window, fill, score)
        else:
            clean, drops = _full_forward_scores(model, images, image_targets, patches, window, fill, score,
                                                batch_size)
        drops = clean[:, None] - drops
        for p, (r, c) in enumerate(patches):
            maps[rows, r:r + window, c:c + window] += drops[:, p, None, None]
    return maps / coverage


@torch.inference_mode()
def window_drops(model, x, targets, *, window, stride, fill, score, batch_size=128) -> torch.Tensor:
    """The drop of the explained score when each window x window patch (all channels) is set to `fill`, for every
    patch position inside the image on a `stride` grid: [N, rows, cols]. A patch whose pixels already all equal
    the fill changes nothing, so its drop is 0 and is not computed (MNIST's background, when the fill is black).
    Sequential CNNs recompute only what a patch reaches (LocalRecompute)."""
    height, width = x.shape[2:]
    if window > min(height, width):
        raise ParamError(f"window={window} is not allowed: it is larger than the {height}x{width} input")
    row_starts, col_starts = range(0, height - window + 1, stride), range(0, width - window + 1, stride)
    drops = torch.zeros(len(x), len(row_starts), len(col_starts), device=x.device)
    local = LocalRecompute.for_model(model)
    changed_pixels = (x != fill).any(dim=1)  # [N, H, W]
    for rows in image_chunks(len(x), batch_size):
        changes = changed_pixels[rows]
        patches = [(r, c) for r in row_starts for c in col_starts if changes[:, r:r + window, c:c + window].any()]
        if not patches:
            continue
        if local:
            clean, scores = local.occlusion_scores(x[rows], targets[rows], patches, window, fill, score)
        else:
            clean, scores = _full_forward_scores(model, x[rows], targets[rows], patches, window, fill, score,
                                                 batch_size)
        for p, (r, c) in enumerate(patches):
            drops[rows, r // stride, c // stride] = clean - scores[:, p]
    return drops


@torch.inference_mode()
def intervention_map(model, x, targets, *, window, score, batch_size):
    """The oracle: each pixel gets the score drop of removing (setting to black) the window x window block of a
    grid of disjoint blocks that holds it. On an image where a cue that fills one block dominates the decision,
    the largest value lies on the cue by construction; on any other model it is that model's own intervention."""
    height, width = x.shape[2:]
    if height % window or width % window:
        raise ParamError(f"oracle window={window} is not allowed: it must divide the {height}x{width} input into "
                         "whole blocks")
    drops = window_drops(model, x, targets, window=window, stride=window, fill=BLACK, score=score,
                         batch_size=batch_size)
    return drops.repeat_interleave(window, dim=1).repeat_interleave(window, dim=2)


def _full_forward_scores(model, images, targets, patches, window, fill, score, batch_size):
    """Clean scores [n] and occluded scores [n, P], one forward pass per occluded image."""
    clean = target_scores(model(images), targets, score)
    occluded = images.unsqueeze(1).repeat(1, len(patches), 1, 1, 1)  # [n, P, C, H, W]
    for p, (r, c) in enumerate(patches):
        occluded[:, p, :, r:r + window, c:c + window] = fill
    occluded = occluded.flatten(0, 1)
    patch_targets = targets.repeat_interleave(len(patches))
    scores = torch.empty(len(occluded), device=images.device)
    for part in chunks(len(occluded), batch_size):
        scores[part] = target_scores(model(occluded[part]), patch_targets[part], score)
    return clean, scores.view(len(images), len(patches))


class LocalRecompute:
    """Re-evaluates a Sequential CNN after a rectangular change of its input, recomputing each spatial
    layer only where the change reaches, then running the remaining (dense) layers in full."""

    def __init__(self, spatial: list[nn.Module], rest: nn.Module):
        self.spatial = spatial
        self.rest = rest

    @classmethod
    def for_model(cls, model: nn.Module) -> LocalRecompute | None:
        if not is_plain_sequential(model):
            return None
        spatial = []
        for module in model:
            if isinstance(module, nn.ReLU) or (isinstance(module, nn.Conv2d) and _plain_conv(module)) or (
                    isinstance(module, nn.MaxPool2d) and _plain_pool(module)):
                spatial.append(module)
            else:
                break
        if not any(isinstance(m, (nn.Conv2d, nn.MaxPool2d)) for m in spatial):
            return None
        return cls(spatial, nn.Sequential(*list(model)[len(spatial):]))

    def occlusion_scores(self, images, targets, patches, window, fill, score):
        """Clean scores [n] and the scores with each patch set to `fill` [n, P]."""
        activations = [images]
        for module in self.spatial:
            activations.append(module(activations[-1]))
        clean = target_scores(self.rest(activations[-1]), targets, score)
        height, width = images.shape[2:]
        scores = torch.empty(len(images), len(patches), device=images.device)
        for p, (r, c) in enumerate(patches):
            rows, cols = (r, min(r + window, height)), (c, min(c + window, width))
            values = torch.full((len(images), images.shape[1], rows[1] - rows[0], cols[1] - cols[0]), fill,
                                device=images.device, dtype=images.dtype)
            change = (rows, cols, values)
            for module, before in zip(self.spatial, activations, strict=False):
                change = _propagate(module, before, *change)
                if change is None:
                    break
            if change is None:  # the patch cannot reach the output
                scores[:, p] = clean
                continue
            rows, cols, values = change
            last = activations[-1].clone()
            last[:, :, rows[0]:rows[1], cols[0]:cols[1]] = values
            scores[:, p] = target_scores(self.rest(last), targets, score)
        return clean, scores


def _plain_conv(conv: nn.Conv2d) -> bool:
    return conv.padding_mode == "zeros" and not isinstance(conv.padding, str) and conv.dilation == (1, 1)


def _plain_pool(pool: nn.MaxPool2d) -> bool:
    return pool.padding in (0, (0, 0)) and pool.dilation in (1, (1, 1)) and not pool.ceil_mode


def _pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


def _affected(interval, kernel, stride, padding, size_in):
    """Output interval touched by a change to input `interval`, and the input interval it reads."""
    start, stop = interval
    size_out = (size_in + 2 * padding - kernel) // stride + 1
    first = max(0, math.ceil((start + padding - kernel + 1) / stride))
    last = min(size_out - 1, (stop - 1 + padding) // stride)
    return (first, last + 1), (first * stride - padding, last * stride - padding + kernel)


def _propagate(module, before, rows, cols, values):
    """The layer's output on the region a change reaches: (rows, cols, values) in, the same out, or None
    when the change reaches no output (a border row that a floor-mode pooling drops).

    `before` is the layer's unchanged input; `values` the changed input on rows x cols."""
    if isinstance(module, nn.ReLU):
        return rows, cols, values.clamp_min(0)
    kernel, stride = _pair(module.kernel_size), _pair(module.stride)
    padding = _pair(module.padding) if isinstance(module, nn.Conv2d) else (0, 0)
    height, width = before.shape[2:]
    out_rows, in_rows = _affected(rows, kernel[0], stride[0], padding[0], height)
    out_cols, in_cols = _affected(cols, kernel[1], stride[1], padding[1], width)
    if out_rows[0] >= out_rows[1] or out_cols[0] >= out_cols[1]:
        return None
    # what the affected outputs read: the unchanged input, zero padding beyond the border, then the change
    region = before[:, :, max(0, in_rows[0]):min(height, in_rows[1]), max(0, in_cols[0]):min(width, in_cols[1])]
    pads = (max(0, -in_cols[0]), max(0, in_cols[1] - width), max(0, -in_rows[0]), max(0, in_rows[1] - height))
    region = F.pad(region, pads) if any(pads) else region.clone()
    r0, r1 = max(rows[0], in_rows[0]), min(rows[1], in_rows[1])  # the part of the change that is read
    c0, c1 = max(cols[0], in_cols[0]), min(cols[1], in_cols[1])
    region[:, :, r0 - in_rows[0]:r1 - in_rows[0], c0 - in_cols[0]:c1 - in_cols[0]] = \
        values[:, :, r0 - rows[0]:r1 - rows[0], c0 - cols[0]:c1 - cols[0]]
    if isinstance(module, nn.Conv2d):
        out = F.conv2d(region, module.weight, module.bias, stride=stride, groups=module.groups)
    else:
        out = F.max_pool2d(region, kernel, stride)
    return out_rows, out_cols, out


def random_map(model, x, targets, *, seed, batch_size):
    """Uniform noise in [0, 1), seeded: the control that every real method must beat."""
    generator = torch.Generator(device=x.device).manual_seed(seed)
    return torch.rand((x.shape[0], *x.shape[2:]), generator=generator, device=x.device)
