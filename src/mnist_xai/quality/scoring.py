"""Every quality metric of one method, per image, so that each number can carry a bootstrap interval and two
methods can be compared image by image. The metrics are defined in metrics.py."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from mnist_xai.data import BLACK
from mnist_xai.quality.complexity import gini_sparseness
from mnist_xai.quality.faithfulness import Curves, deletion_insertion
from mnist_xai.quality.localisation import pointing_game, relevance_mass_accuracy, relevance_rank_accuracy
from mnist_xai.quality.randomisation import (
    RandomisationCurve,
    cascading_randomisation,
    data_randomisation_maps,
    entropy_rise,
    fully_randomised,
    masked_spearman,
    smooth_maps,
    sobel_edges,
)
from mnist_xai.quality.robustness import max_sensitivity
from mnist_xai.quality.stats import constant_rows, interval, spearman_rows

DEGENERATE_SHARE = 0.5
"""A method whose maps are constant for at least this share of the explained images is degenerate: it can
never be trusted, whatever its other scores (a constant map scores rho = 0 in every randomisation test)."""

EXAMPLES = 4  # images whose maps the report shows

@dataclass(frozen=True)
class QualitySettings:
    n_images: int  # explained images for deletion/insertion and sparseness
    n_randomisation: int  # images for MPRT, the edge control, Efficient MPRT and data randomisation
    n_smooth: int  # images for Smooth MPRT
    smooth_samples: int  # noisy copies averaged per Smooth MPRT map
    smooth_noise: float  # their noise std, as a fraction of the image's range
    entropy_bins: int  # histogram bins of Efficient MPRT
    n_sensitivity: int
    sensitivity_samples: int
    sensitivity_radius: float
    deletion_step: int
    insertion_start: str
    blur_sigma: float
    seed: int


@dataclass
class GroundTruth:
    """Test images carrying the planted cue, on which the decoy model provably relies on it."""

    x: torch.Tensor  # normalised images with the cue [g, 1, H, W]
    masks: np.ndarray  # bool [g, H, W]: the cue
    decoy_targets: torch.Tensor  # the class the decoy model predicts (and the maps explain)
    normal_targets: torch.Tensor  # the class the normal model predicts on the same images


@dataclass
class Models:
    trained: nn.Module
    random_labels: nn.Module
    decoy: nn.Module


@dataclass
class MethodScores:
    method: str
    values: dict[str, np.ndarray]  # metric key -> per-image values
    curves: Curves
    randomisation: RandomisationCurve
    constant_share: float  # share of the explained maps that are constant
    ground_truth_examples: dict[str, np.ndarray]  # "decoy" / "normal" -> maps [k, H, W] of the first k images
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def degenerate(self) -> bool:
        return self.constant_share >= DEGENERATE_SHARE

    def summary(self, resamples: int, seed: int) -> dict:
        """Each metric's mean with its 95 % bootstrap interval over images, rounded so reruns give equal files."""
        metrics = {}
        for key, values in self.values.items():
            mean, low, high = interval(values, resamples, seed)
            metrics[key] = {"value": round(mean, 6), "low": round(low, 6), "high": round(high, 6), "n": len(values)}
        return {"metrics": metrics, "constant_share": round(self.constant_share, 6), "degenerate": self.degenerate,
                "mprt_curve": [round(float(v), 6) for v in self.randomisation.correlation],
                "mprt_layers": self.randomisation.layers}


def constant_maps(maps: np.ndarray) -> np.ndarray:
    """Maps that are constant, or constant up to float rounding (spread below 1e-6 of their largest |value|)."""
    flat = np.asarray(maps, dtype=np.float64).reshape(len(maps), -1)
    spread = flat.max(axis=1) - flat.min(axis=1)
    return constant_rows(flat) | (spread <= 1e-6 * np.abs(flat).max(axis=1))


def score_method(models: Models, method: str, params: dict, x: torch.Tensor, targets: torch.Tensor,
                 predictions: torch.Tensor, maps: np.ndarray, ground_truth: GroundTruth,
                 settings: QualitySettings) -> MethodScores:
    """All metrics of one method. `x`, `targets`, `predictions` and `maps` describe the same explained images,
    in the same order; `params` are the method's attribute() params. Each metric uses the first n of them."""
    from mnist_xai.attribution import attribute

    s = settings
    n, r, m = (min(len(x), k) for k in (s.n_images, s.n_randomisation, s.n_sensitivity))
    smooth = min(r, s.n_smooth)
    seconds: dict[str, float] = {}
    values: dict[str, np.ndarray] = {}

    def timed(part: str, started: float) -> None:
        seconds[part] = seconds.get(part, 0.0) + time.perf_counter() - started

    started = time.perf_counter()
    g = ground_truth
    decoy_maps = attribute(method, models.decoy, g.x, g.decoy_targets, **params).cpu().numpy()
    normal_maps = attribute(method, models.trained, g.x, g.normal_targets, **params).cpu().numpy()
    values["gt_pointing"] = pointing_game(decoy_maps, g.masks, s.seed)
    values["gt_mass"] = relevance_mass_accuracy(decoy_maps, g.masks)
    values["gt_rank"] = relevance_rank_accuracy(decoy_maps, g.masks, s.seed)
    values["fam_mass"] = relevance_mass_accuracy(normal_maps, g.masks)
    timed("ground_truth", started)

    started = time.perf_counter()
    curves = deletion_insertion(models.trained, x[:n], maps[:n], predictions[:n], step=s.deletion_step,
                                insertion_start=s.insertion_start, blur_sigma=s.blur_sigma, seed=s.seed)
    values["deletion_auc"], values["insertion_auc"] = curves.deletion_auc, curves.insertion_auc
    timed("faithfulness", started)

    started = time.perf_counter()
    trained = np.abs(maps[:r])
    cascade = cascading_randomisation(models.trained, method, params, x[:r], targets[:r], maps[:r], seed=s.seed)
    digit = (x[:r, 0] > BLACK).cpu().numpy()
    edges = sobel_edges(x[:r])
    values["mprt_rho"] = spearman_rows(np.abs(cascade.final_maps), trained)
    values["mprt_digit_rho"] = masked_spearman(np.abs(cascade.final_maps), trained, digit)
    values["edge_rho"] = spearman_rows(trained, edges)
    values["emprt_rise"] = entropy_rise(maps[:r], cascade.final_maps, s.entropy_bins)
    timed("model_randomisation", started)

    started = time.perf_counter()
    randomised = fully_randomised(models.trained, s.seed)
    rng = np.random.RandomState(s.seed)
    smooth_args = {"n_samples": s.smooth_samples, "noise_magnitude": s.smooth_noise, "rng": rng}
    smooth_trained = smooth_maps(models.trained, method, params, x[:smooth], targets[:smooth], **smooth_args)
    smooth_random = smooth_maps(randomised, method, params, x[:smooth], targets[:smooth], **smooth_args,
                                draw=s.smooth_samples)
    values["smprt_rho"] = spearman_rows(np.abs(smooth_random), np.abs(smooth_trained))
    values["smprt_vs_edge"] = values["smprt_rho"] - values["edge_rho"][:smooth]
    timed("smooth_mprt", started)

    started = time.perf_counter()
    data_maps = data_randomisation_maps(models.random_labels, method, params, x[:r], targets[:r])
    values["data_rho"] = spearman_rows(np.abs(data_maps), trained)
    values["data_vs_edge"] = values["data_rho"] - values["edge_rho"]
    timed("data_randomisation", started)

    started = time.perf_counter()
    values["max_sensitivity"] = max_sensitivity(models.trained, method, params, x[:m], targets[:m], maps[:m],
                                                n_perturbations=s.sensitivity_samples, radius=s.sensitivity_radius,
                                                seed=s.seed)
    values["sparseness"] = gini_sparseness(maps[:n])
    timed("robustness", started)
    return MethodScores(method=method, values=values, curves=curves, randomisation=cascade,
                        constant_share=float(constant_maps(maps).mean()),
                        ground_truth_examples={"decoy": decoy_maps[:EXAMPLES], "normal": normal_maps[:EXAMPLES]},
                        seconds=seconds)
