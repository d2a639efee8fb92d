"""Sanity checks: do the maps change when the model's parameters, or the labels it learned from, are
randomised? An explanation that survives randomisation explains the input, not the model.

- Model-parameter randomisation, MPRT (Adebayo et al. 2018): layers re-initialised from the top (output)
  down, cumulatively; Spearman rho of |map| against the trained model's maps after each step.
- Its repairs (Hedström et al. 2023, "Sanity Checks Revisited"): Smooth MPRT compares maps denoised by
  averaging over noisy copies of the input; Efficient MPRT scores the relative rise in the entropy of the
  map's histogram from the trained to the fully randomised model, with no similarity measure at all.
- Controls: the model-free explainers (edges, brightness) are scored by the same checks and must fail them,
  and the oracle must pass (see verdict.py); rho over the digit's pixels only is shown beside the plain rho,
  since the black background every map shares on MNIST inflates it (Binder et al. 2023).
- Collapsed maps: a randomised network whose map is constant (a CAM whose ReLU kills everything) has no ranking;
  its rho is left out (NaN) and the share of such maps recorded, rather than scored rho = 0, which would pass.
- Random Logit (Sixt et al. 2020): the map of the explained class against the map of a randomly drawn other
  class, by SSIM: an explanation that looks the same whatever class it explains does not explain the class.
- Data randomisation (Adebayo et al. 2018): rho of |map| between a model trained on permuted labels and a
  matched control, the same network trained the same way (images, steps, seed) on the true labels, so that
  the check compares what was learned, not how long.

Layers are re-initialised with the layer's own reset_parameters, as Quantus 0.6 does, but each layer from its own
seed (layer_seed): Quantus seeds every layer with torch.manual_seed(seed + 1), so layers of the same shape get
identical weights (the ResNet's blocks), which ties them together in a way no trained or freshly initialised network
is. `independent=False` reproduces Quantus' network exactly, for the oracle tests.
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
from mnist_xai.quality.stats import constant_maps, constant_rows, spearman_rows


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
    """Re-draw a layer's parameters from its own default initialisation, with torch.manual_seed(seed + 1) (Quantus'
    offset)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        module.reset_parameters()


def layer_seed(seed: int, step: int) -> int:
    """The seed of the step-th layer randomised (top first): an independent stream per layer."""
    return int(np.random.SeedSequence([seed, step]).generate_state(1)[0] >> 1)


def cascade(model: nn.Module, seed: int, independent: bool = True) -> Iterator[tuple[list[str], nn.Module]]:
    """A copy of the model with its parameter layers randomised one more at a time, from the top; each layer from
    its own seed, or (independent=False) all from the same one, as Quantus does."""
    randomised = copy.deepcopy(model)
    layers = parameter_layers(randomised)
    for step, name in enumerate(layers):
        randomise_layer(randomised.get_submodule(name), layer_seed(seed, step) if independent else seed)
        yield layers[:step + 1], randomised


def fully_randomised(model: nn.Module, seed: int, independent: bool = True) -> nn.Module:
    """A copy of the model with every parameter layer randomised (the cascade's last step)."""
    return list(cascade(model, seed, independent))[-1][1]


def redrawn(method: str, params: dict, step: int) -> dict:
    """The `random` control is redrawn for every model (or perturbed input), so it scores chance agreement
    (rho ~ 0) rather than the trivial 1 of reusing one draw; every other method keeps its seed, so only the
    model (or the input) changes."""
    return {**params, "seed": params["seed"] + 1 + step} if method == "random" else params


def rank_similarity(maps: np.ndarray, reference: np.ndarray, pixels: np.ndarray | None = None) -> np.ndarray:
    """Spearman rho of |map| against |reference| per image, over every pixel or only where `pixels` (bool [N, H,
    W]) is true; NaN where either map is constant there (up to float rounding): a collapsed map has no ranking to
    compare, and rho = 0 would read as passing a randomisation check."""
    maps, reference = np.abs(maps), np.abs(reference)
    if pixels is None:
        rho = spearman_rows(maps, reference)
        return np.where(constant_maps(maps) | constant_maps(reference), np.nan, rho)
    rho = np.full(len(maps), np.nan)
    for i, (a, b, keep) in enumerate(zip(maps, reference, pixels, strict=True)):
        a, b = a[keep][None], b[keep][None]
        if a.size >= 3 and not (constant_maps(a)[0] or constant_maps(b)[0]):
            rho[i] = spearman_rows(a, b)[0]
    return rho


def cascading_randomisation(model: nn.Module, method: str, params: dict, x: torch.Tensor, targets: torch.Tensor,
                            trained_maps: np.ndarray, seed: int, n_examples: int = 4) -> RandomisationCurve:
    """Randomise parameter layers from the top down, cumulatively, recomputing the maps after each step. The
    curve is the mean rho over the maps that did not collapse (NaN when all did)."""
    correlation = [1.0]
    constant = [float(constant_rows(trained_maps).mean())]
    examples = [trained_maps[:n_examples]]
    maps = trained_maps
    for step, (_, randomised) in enumerate(cascade(model, seed)):
        maps = attribute(method, randomised, x, targets, **redrawn(method, params, step)).cpu().numpy()
        rho = rank_similarity(maps, trained_maps)
        correlation.append(float(np.nanmean(rho)) if not np.isnan(rho).all() else float("nan"))
        constant.append(float(constant_rows(maps).mean()))
        examples.append(maps[:n_examples])
    return RandomisationCurve(layers=parameter_layers(model), correlation=np.array(correlation),
                              constant_fraction=np.array(constant), examples=np.stack(examples), final_maps=maps)


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


def digit_pixels(x: torch.Tensor) -> np.ndarray:
    """bool [N, H, W]: the pixels above black in any channel. The randomisation checks that decide a verdict
    compare maps there only: on MNIST's black background, a method whose map is exactly 0 wherever the input is
    (Integrated Gradients from a black baseline, the oracle) shares that block of ties with any model, which
    inflates rho for reasons that have nothing to do with the model (Binder et al. 2023)."""
    from mnist_xai.data import BLACK

    return (x > BLACK).any(dim=1).cpu().numpy()


def data_randomisation(random_label_model: nn.Module, true_label_model: nn.Module, method: str, params: dict,
                       x: torch.Tensor, targets: torch.Tensor) -> np.ndarray:
    """Per image, rho between the maps of a model trained on permuted labels and of its matched control (the same
    network, images, steps and seed, on the true labels), for the same images and classes, over the digit's
    pixels; NaN where a map is constant there."""
    permuted = attribute(method, random_label_model, x, targets, **redrawn(method, params, 0)).cpu().numpy()
    true = attribute(method, true_label_model, x, targets, **redrawn(method, params, 1)).cpu().numpy()
    return rank_similarity(permuted, true, digit_pixels(x))


def other_classes(targets: np.ndarray, n_classes: int, seed: int) -> np.ndarray:
    """One class per image, uniformly among the classes other than its target: Quantus RandomLogit's draw
    (np.random.seed(seed), then randint(0, n_classes - 1) indexes the other classes in order)."""
    targets = np.asarray(targets)
    offsets = np.random.RandomState(seed).randint(0, n_classes - 1, len(targets))
    return np.where(offsets >= targets, offsets + 1, offsets)


def ssim(first: np.ndarray, second: np.ndarray, window: int = 7) -> np.ndarray:
    """Structural similarity of each pair of 2-D maps [n, H, W] (Wang et al. 2004) as scikit-image's
    structural_similarity computes it with its defaults: a uniform window x window filter, sample covariances,
    K1 = 0.01, K2 = 0.03, the mean over the positions where the window fits; the data range of each pair as Quantus
    sets it (its largest minus its smallest value). NaN where a pair has no range (both constant and equal)."""
    from numpy.lib.stride_tricks import sliding_window_view

    a, b = (np.asarray(m, dtype=np.float64) for m in (first, second))
    both = np.concatenate([a.reshape(len(a), -1), b.reshape(len(b), -1)], axis=1)
    data_range = both.max(axis=1) - both.min(axis=1)

    def local_mean(values):
        return sliding_window_view(values, (window, window), axis=(1, 2)).mean(axis=(3, 4))

    count = window * window
    mean_a, mean_b = local_mean(a), local_mean(b)
    scale = count / (count - 1)
    var_a = scale * (local_mean(a * a) - mean_a ** 2)
    var_b = scale * (local_mean(b * b) - mean_b ** 2)
    cov = scale * (local_mean(a * b) - mean_a * mean_b)
    c1 = ((0.01 * data_range) ** 2)[:, None, None]
    c2 = ((0.03 * data_range) ** 2)[:, None, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        index = (((2 * mean_a * mean_b + c1) * (2 * cov + c2))
                 / ((mean_a ** 2 + mean_b ** 2 + c1) * (var_a + var_b + c2)))
    return np.where(data_range > 0, index.mean(axis=(1, 2)), np.nan)


def scaled_by_max(maps: np.ndarray) -> np.ndarray:
    """Each map divided by its largest |value| (Quantus' normalise_by_max, per image); an all-zero map stays 0."""
    maps = np.asarray(maps, dtype=np.float64)
    peak = np.abs(maps).reshape(len(maps), -1).max(axis=1).reshape(-1, *(1,) * (maps.ndim - 1))
    return np.divide(maps, peak, out=np.zeros_like(maps), where=peak > 0)


def random_logit(model: nn.Module, method: str, params: dict, x: torch.Tensor, targets: torch.Tensor,
                 maps: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random Logit (Sixt et al. 2020; Quantus RandomLogit): per image, SSIM between the map of its target and
    the map of another class drawn at random (other_classes), each divided by its largest |value|. Near 1: the
    map does not depend on the class it explains. Quantus differs in two ways, on purpose: it compares the maps
    flattened to one row of pixels (a 1-D SSIM, blind to the image's structure) and divides by the largest value
    of the whole batch; here each map is a 2-D image scaled on its own. Returns (SSIM, the other classes); NaN
    where either map is constant (no structure to compare)."""
    with torch.inference_mode():
        n_classes = int(model(x[:1]).shape[1])
    others = other_classes(targets.cpu().numpy(), n_classes, seed)
    other_maps = attribute(method, model, x, torch.as_tensor(others, device=x.device), **params).cpu().numpy()
    similarity = ssim(scaled_by_max(maps), scaled_by_max(other_maps))
    similarity[constant_maps(maps) | constant_maps(other_maps)] = np.nan
    return similarity, others
