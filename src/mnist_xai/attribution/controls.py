"""Model-free explainers: controls with a known answer. They ignore the model, so any check that a model's
explanation must pass (does it change when the model is randomised? does it point at what the model uses?) must
fail them. A verdict rule that trusts one of them is wrong."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def edge(model, x, targets, *, batch_size):
    """Sobel gradient magnitude of the input, summed over channels (Adebayo et al. 2018's edge detector). The
    border is padded by repeating the edge pixels, MNIST's background: zero padding in normalised space, where
    black is -0.42, would draw a strong false edge around every image. Computed as differences of shifted copies,
    not a convolution, so that a flat region is exactly 0 rather than float noise that would rank at random."""
    padded = F.pad(x.detach(), (1, 1, 1, 1), mode="replicate")
    height, width = x.shape[2:]

    def shifted(dr: int, dc: int) -> torch.Tensor:
        return padded[:, :, 1 + dr:1 + dr + height, 1 + dc:1 + dc + width]

    gx = (shifted(-1, 1) + 2 * shifted(0, 1) + shifted(1, 1)) - (shifted(-1, -1) + 2 * shifted(0, -1) + shifted(1, -1))
    gy = (shifted(1, -1) + 2 * shifted(1, 0) + shifted(1, 1)) - (shifted(-1, -1) + 2 * shifted(-1, 0) + shifted(-1, 1))
    return (gx.pow(2) + gy.pow(2)).sqrt().sum(dim=1)


def brightness(model, x, targets, *, batch_size):
    """|x| of the model's input, summed over channels: what any method that multiplies by the input inherits."""
    return x.detach().abs().sum(dim=1)
