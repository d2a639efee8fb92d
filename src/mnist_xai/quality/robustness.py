"""Robustness: max-sensitivity (Yeh et al. 2019) and relative input / output stability (Agarwal et al. 2022), from
the same perturbed explanations."""

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
    return stability(model, method, params, x, targets, maps, n_perturbations=n_perturbations, radius=radius,
                     seed=seed)["max_sensitivity"]


EPS_MIN = 1e-6
"""Agarwal et al.'s and Quantus' guard against division by 0 in the relative stabilities."""


def stability(model: nn.Module, method: str, params: dict, x: torch.Tensor, targets: torch.Tensor, maps: np.ndarray,
              *, n_perturbations: int, radius: float, seed: int) -> dict[str, np.ndarray]:
    """From the same perturbed inputs and their maps (see max_sensitivity): max-sensitivity, and log10 of the
    relative input and output stability (Agarwal et al. 2022, as Quantus' RelativeInputStability and
    RelativeOutputStability compute them on the raw maps):

        RIS = max ||(e - e') / e|| / max(||(x - x') / x||, eps),   ROS = max ||(e - e') / e|| / max(||h - h'||, eps)

    e, e' the maps of x and x', h, h' the model's logits, element-wise divisions with 0 replaced by eps = 1e-6,
    Frobenius norms; the max over the perturbations that leave the predicted class unchanged (NaN if none does).
    Log10, since the element-wise relative change spans orders of magnitude wherever a map is nearly 0; floored
    at -6, where a map that no perturbation changes would give -inf."""
    from mnist_xai.model import commuted

    forward = commuted(model)
    generator = torch.Generator(device=x.device).manual_seed(seed)
    spread = (x.flatten(1).amax(1) - x.flatten(1).amin(1)).view(-1, *(1,) * (x.dim() - 1))
    raw = torch.as_tensor(maps, device=x.device).flatten(1)
    reference = _normalise(raw)
    norms = reference.norm(dim=1)
    worst = torch.zeros(len(x), device=x.device)
    e = raw.double()
    e_guarded = e + (e == 0) * EPS_MIN
    flat_x = x.flatten(1).double()
    x_guarded = flat_x + (flat_x == 0) * EPS_MIN
    with torch.inference_mode():
        logits = forward(x).double()
    predicted = logits.argmax(dim=1)
    ris = torch.full((n_perturbations, len(x)), float("nan"), dtype=torch.float64, device=x.device)
    ros = ris.clone()
    for i in range(n_perturbations):
        noise = (torch.rand(x.shape, generator=generator, device=x.device) * 2 - 1) * radius * spread
        shifted = x + noise
        perturbed_raw = attribute(method, model, shifted, targets, **redrawn(method, params, i)).flatten(1)
        perturbed = _normalise(perturbed_raw)
        change = (perturbed - reference).norm(dim=1) / torch.where(norms > 0, norms, torch.ones_like(norms))
        worst = torch.maximum(worst, change)
        with torch.inference_mode():
            shifted_logits = forward(shifted).double()
        explanation = ((e - perturbed_raw.double()) / e_guarded).norm(dim=1)
        inputs = ((flat_x - shifted.flatten(1).double()) / x_guarded).norm(dim=1)
        outputs = (logits - shifted_logits).norm(dim=1)
        kept = shifted_logits.argmax(dim=1) == predicted
        ris[i] = torch.where(kept, explanation / (inputs + (inputs == 0) * EPS_MIN), torch.nan)
        ros[i] = torch.where(kept, explanation / (outputs + (outputs == 0) * EPS_MIN), torch.nan)
    return {"max_sensitivity": worst.cpu().numpy(), "ris": _log10(_nanmax(ris)), "ros": _log10(_nanmax(ros))}


def _log10(values: np.ndarray) -> np.ndarray:
    """log10, floored at log10(EPS_MIN) = -6 (a map that no perturbation changes scores that, not -inf)."""
    return np.log10(np.maximum(values, EPS_MIN), where=~np.isnan(values), out=np.full(len(values), np.nan))


def _nanmax(values: torch.Tensor) -> np.ndarray:
    """The max over the first axis, ignoring NaN; NaN where every value is NaN."""
    array = values.cpu().numpy()
    out = np.full(array.shape[1], np.nan)
    some = ~np.isnan(array).all(axis=0)
    out[some] = np.nanmax(array[:, some], axis=0)
    return out


def _normalise(maps: torch.Tensor) -> torch.Tensor:
    """Each row divided by its largest |value| (all-zero rows stay zero)."""
    peak = maps.abs().amax(dim=1, keepdim=True)
    return maps / torch.where(peak > 0, peak, torch.ones_like(peak))
