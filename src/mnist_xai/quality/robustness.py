"""Robustness: max-sensitivity (Yeh et al. 2019)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from mnist_xai.attribution import attribute
from mnist_xai.quality.randomisation import redrawn


def max_sensitivity(model: nn.Module, method: str, params: dict, x: torch.Tensor, targets: torch.Tensor,
                    maps: np.ndarray, *, n_perturbations: int, radius: float, seed: int) -> np.ndarray:
    """max over n uniform perturbations |delta_i| <= radius x (max - min of the image) of
    ||m(x + delta) - m(x)||_F / ||m(x)||_F, where m is the map divided by its largest |value|, per image:
    Quantus' MaxSensitivity with normalise=True and its normalisation per image, Frobenius norms (Quantus 0.6
    defaults to normalise=False, and its normalise_by_max divides a whole batch by one maximum; a test pins the
    match given the same noise).

    Scale-free, so methods compare, and stable for maps that are nearly zero. Stochastic methods keep their
    seed, so only the input changes; the `random` control is redrawn per perturbation, so it scores the
    chance level of two independent maps."""
    generator = torch.Generator(device=x.device).manual_seed(seed)
    spread = (x.flatten(1).amax(1) - x.flatten(1).amin(1)).view(-1, *(1,) * (x.dim() - 1))
    reference = _normalise(torch.as_tensor(maps, device=x.device).flatten(1))
    norms = reference.norm(dim=1)
    worst = torch.zeros(len(x), device=x.device)
    for i in range(n_perturbations):
        noise = (torch.rand(x.shape, generator=generator, device=x.device) * 2 - 1) * radius * spread
        perturbed = _normalise(attribute(method, model, x + noise, targets, **redrawn(method, params, i)).flatten(1))
        change = (perturbed - reference).norm(dim=1) / torch.where(norms > 0, norms, torch.ones_like(norms))
        worst = torch.maximum(worst, change)
    return worst.cpu().numpy()


def _normalise(maps: torch.Tensor) -> torch.Tensor:
    """Each row divided by its largest |value| (all-zero rows stay zero)."""
    peak = maps.abs().amax(dim=1, keepdim=True)
    return maps / torch.where(peak > 0, peak, torch.ones_like(peak))
