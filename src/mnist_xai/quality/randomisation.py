"""Sanity checks (Adebayo et al. 2018): do the maps change when the model's parameters, or the labels it
learned from, are randomised? An explanation that survives randomisation explains the input, not the model."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from mnist_xai.attribution import attribute
from mnist_xai.quality.stats import constant_rows, spearman_rows


@dataclass
class RandomisationCurve:
    layers: list[str]  # layers randomised so far, top first: [] (trained), [fc2], [fc2, fc1], ...
    correlation: np.ndarray  # [steps + 1] mean Spearman rho of |map| against the trained maps
    constant_fraction: np.ndarray  # [steps + 1] share of maps that collapsed to a constant
    examples: np.ndarray  # [steps + 1, k, H, W] maps of the first k images at each step


def parameter_layers(model: nn.Module) -> list[str]:
    """Names of the layers that hold parameters, top (output) first: the cascading order."""
    return [name for name, module in reversed(list(model.named_modules()))
            if name and any(True for _ in module.parameters(recurse=False))]


def randomise_layer(module: nn.Module, seed: int) -> None:
    """Re-draw a layer's parameters from its own default initialisation, seeded."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        module.reset_parameters()


def redrawn(method: str, params: dict, step: int) -> dict:
    """The `random` control is redrawn for every model (or perturbed input), so it scores chance agreement
    (rho ~ 0) rather than the trivial 1 of reusing one draw; every other method keeps its seed, so only the
    model (or the input) changes."""
    return {**params, "seed": params["seed"] + 1 + step} if method == "random" else params


def cascading_randomisation(model: nn.Module, method: str, params: dict, x: torch.Tensor, targets: torch.Tensor,
                            trained_maps: np.ndarray, seed: int, n_examples: int = 4) -> RandomisationCurve:
    """Randomise parameter layers from the top down, cumulatively, recomputing the maps after each step."""
    randomised = copy.deepcopy(model)
    layers = parameter_layers(randomised)
    correlation = [1.0]
    constant = [float(constant_rows(trained_maps).mean())]
    examples = [trained_maps[:n_examples]]
    for step, name in enumerate(layers):
        randomise_layer(randomised.get_submodule(name), seed + step)
        maps = attribute(method, randomised, x, targets, **redrawn(method, params, step)).cpu().numpy()
        correlation.append(float(spearman_rows(np.abs(maps), np.abs(trained_maps)).mean()))
        constant.append(float(constant_rows(maps).mean()))
        examples.append(maps[:n_examples])
    return RandomisationCurve(layers=layers, correlation=np.array(correlation),
                              constant_fraction=np.array(constant), examples=np.stack(examples))


def data_randomisation(random_label_model: nn.Module, method: str, params: dict, x: torch.Tensor,
                       targets: torch.Tensor, trained_maps: np.ndarray) -> float:
    """Mean Spearman rho of |map| between a model trained on permuted labels and the real one."""
    maps = attribute(method, random_label_model, x, targets, **redrawn(method, params, 0)).cpu().numpy()
    return float(spearman_rows(np.abs(maps), np.abs(trained_maps)).mean())
