"""Sanity checks: do the maps change when the model's parameters, or the labels it learned from, are
randomised? An explanation that survives randomisation explains the input, not the model.

- Model-parameter randomisation, MPRT (Adebayo et al. 2018): layers re-initialised from the top (output)
  down, cumulatively; Spearman rho of |map| against the trained model's maps after each step.
- Its repairs (Hedström et al. 2023, "Sanity Checks Revisited"): Smooth MPRT compares maps denoised by
  averaging over noisy copies of the input; Efficient MPRT scores the relative rise in the entropy of the
  map's histogram from the trained to the fully randomised model, with no similarity measure at all.
- Controls: an edge map of the input (Sobel), which ignores the model, says how much similarity the input's
  structure alone gives (Adebayo et al. 2018 compared with an edge detector for this reason; Binder et al.
  2023 show that randomised networks keep the input's structure); rho over the digit's pixels only removes
  the black background that every map shares.
- Data randomisation (Adebayo et al. 2018): rho of |map| between a model trained on permuted labels and the
  real one.

Layers are re-initialised as Quantus 0.6 does it (each with torch.manual_seed(seed + 1), then the layer's
own reset_parameters), so that given the same seed both randomise to the same network.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from mnist_xai.attribution import attribute
from mnist_xai.quality.complexity import histogram_entropy
from mnist_xai.quality.stats import constant_rows, spearman_rows


@dataclass
class RandomisationCurve:
    layers: list[str]  # layers randomised so far, top first: [] (trained), [fc2], [fc2, fc1], ...
    correlation: np.ndarray  # [steps + 1] mean Spearman rho of |map| against the trained maps
    constant_fraction: np.ndarray  # [steps + 1] share of maps that collapsed to a constant
    examples: np.ndarray  # [steps + 1, k, H, W] maps of the first k images at each step
    final_maps: np.ndarray  # [n, H, W] maps of the fully randomised model


def parameter_layers(model: nn.Module) -> list[str]:
    """Names of the layers that hold parameters, top (output) first: the cascading order."""
    return [name for name, module in reversed(list(model.named_modules()))
            if name and any(True for _ in module.parameters(recurse=False))]


def randomise_layer(module: nn.Module, seed: int) -> None:
    """Re-draw a layer's parameters from its own default initialisation, as Quantus does (seed + 1)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        module.reset_parameters()


def cascade(model: nn.Module, seed: int) -> Iterator[tuple[list[str], nn.Module]]:
    """A copy of the model with its parameter layers randomised one more at a time, from the top."""
    randomised = copy.deepcopy(model)
    layers = parameter_layers(randomised)
    for step, name in enumerate(layers):
        randomise_layer(randomised.get_submodule(name), seed)
        yield layers[:step + 1], randomised


def fully_randomised(model: nn.Module, seed: int) -> nn.Module:
    """A copy of the model with every parameter layer randomised (the cascade's last step)."""
    return list(cascade(model, seed))[-1][1]


def redrawn(method: str, params: dict, step: int) -> dict:
    """The `random` control is redrawn for every model (or perturbed input), so it scores chance agreement
    (rho ~ 0) rather than the trivial 1 of reusing one draw; every other method keeps its seed, so only the
    model (or the input) changes."""
    return {**params, "seed": params["seed"] + 1 + step} if method == "random" else params


def cascading_randomisation(model: nn.Module, method: str, params: dict, x: torch.Tensor, targets: torch.Tensor,
                            trained_maps: np.ndarray, seed: int, n_examples: int = 4) -> RandomisationCurve:
    """Randomise parameter layers from the top down, cumulatively, recomputing the maps after each step."""
    correlation = [1.0]
    constant = [float(constant_rows(trained_maps).mean())]
    examples = [trained_maps[:n_examples]]
    maps = trained_maps
    for step, (_, randomised) in enumerate(cascade(model, seed)):
        maps = attribute(method, randomised, x, targets, **redrawn(method, params, step)).cpu().numpy()
        correlation.append(float(spearman_rows(np.abs(maps), np.abs(trained_maps)).mean()))
        constant.append(float(constant_rows(maps).mean()))
        examples.append(maps[:n_examples])
    return RandomisationCurve(layers=parameter_layers(model), correlation=np.array(correlation),
                              constant_fraction=np.array(constant), examples=np.stack(examples), final_maps=maps)


def sobel_edges(x: torch.Tensor) -> np.ndarray:
    """Gradient magnitude of each image (Sobel, zero padding), summed over channels: [N, H, W]. It depends on
    the input alone: the control for how much of a map's structure the input explains."""
    kernel = torch.tensor([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]], dtype=x.dtype, device=x.device)
    flat = x.detach().reshape(-1, 1, *x.shape[2:])
    gx = torch.nn.functional.conv2d(flat, kernel.view(1, 1, 3, 3), padding=1)
    gy = torch.nn.functional.conv2d(flat, kernel.t().reshape(1, 1, 3, 3), padding=1)
    magnitude = (gx.pow(2) + gy.pow(2)).sqrt().view(x.shape[0], x.shape[1], *x.shape[2:]).sum(dim=1)
    return magnitude.cpu().numpy()


def masked_spearman(a: np.ndarray, b: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Spearman rho of matching rows of a and b over the pixels where `masks` is true (0 where either is
    constant there, or fewer than 3 pixels are selected)."""
    flat_a, flat_b, flat_m = (v.reshape(len(v), -1) for v in (a, b, masks))
    return np.array([spearman_rows(row_a[row_m][None], row_b[row_m][None])[0] if row_m.sum() >= 3 else 0.0
                     for row_a, row_b, row_m in zip(flat_a, flat_b, flat_m, strict=True)])


def entropy_rise(trained_maps: np.ndarray, randomised_maps: np.ndarray, bins: int = 100) -> np.ndarray:
    """Efficient MPRT (Hedström et al. 2023): (H(randomised) - H(trained)) / H(trained) per image, H the
    entropy of the raw map's histogram (Quantus' discrete_entropy, 100 bins over each map's range). A positive
    rise means randomising the model made the explanation more disordered, as it should. A trained map with
    entropy 0 (constant) scores 0 here rather than Quantus' division by zero."""
    trained = histogram_entropy(trained_maps, bins)
    randomised = histogram_entropy(randomised_maps, bins)
    return np.divide(randomised - trained, trained, out=np.zeros(len(trained)), where=trained > 0)


def smooth_maps(model: nn.Module, method: str, params: dict, x: torch.Tensor, targets: torch.Tensor, *,
                n_samples: int, noise_magnitude: float, rng: np.random.RandomState, draw: int = 0) -> np.ndarray:
    """The Smooth MPRT denoising (Hedström et al. 2023; Quantus' SmoothMPRT): the mean of the maps of
    `n_samples` copies of x, all but the last with Gaussian noise of std noise_magnitude x (max - min) of each
    image, the last clean. The noise is drawn from `rng` with NumPy, in Quantus' order and precision. `draw`
    offsets the `random` control's seeds, so that two calls give it independent maps."""
    inputs = x.detach().cpu().numpy()
    std = noise_magnitude * (inputs.max(axis=(1, 2, 3), keepdims=True) - inputs.min(axis=(1, 2, 3), keepdims=True))
    total = None
    for sample in range(n_samples):
        noisy = inputs if sample == n_samples - 1 else inputs + rng.randn(*inputs.shape) * std
        noisy_x = torch.as_tensor(noisy, dtype=x.dtype, device=x.device)
        maps = attribute(method, model, noisy_x, targets, **redrawn(method, params, draw + sample)).cpu().numpy()
        total = maps / n_samples if total is None else total + maps / n_samples
    return total


def data_randomisation_maps(random_label_model: nn.Module, method: str, params: dict, x: torch.Tensor,
                            targets: torch.Tensor) -> np.ndarray:
    """The maps of a model trained on permuted labels, for the same images and classes."""
    return attribute(method, random_label_model, x, targets, **redrawn(method, params, 0)).cpu().numpy()
