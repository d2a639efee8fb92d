"""Every quality metric of one method, per image, so that each number can carry an interval and two methods can
be compared image by image. The metrics are defined in metrics.py."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from mnist_xai.quality.complexity import gini_sparseness
from mnist_xai.quality.faithfulness import Curves, deletion_insertion
from mnist_xai.quality.localisation import (
    POINTING_TOLERANCE,
    pointing_distance,
    relevance_mass_accuracy,
    relevance_rank_accuracy,
)
from mnist_xai.quality.metrics import CUE_PREFIX, DEGENERATE_SHARE, METRICS, estimate
from mnist_xai.quality.randomisation import (
    RandomisationCurve,
    cascading_randomisation,
    data_randomisation,
    digit_pixels,
    entropy_rise,
    fully_randomised,
    rank_similarity,
    smooth_maps,
)
from mnist_xai.quality.robustness import max_sensitivity
from mnist_xai.quality.stats import constant_maps, rounded

EXAMPLES = 4  # images whose maps the report shows
METRIC_KEYS = tuple(metric.key for metric in METRICS)


@dataclass(frozen=True)
class QualitySettings:
    n_images: int  # explained images for deletion/insertion and sparseness
    n_randomisation: int  # images for MPRT, Efficient MPRT and data randomisation
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
class CueSet:
    """Test images carrying one cue type, on which the cue provably dominates the decoy twin's decision."""

    x: torch.Tensor  # normalised images with the cue [g, 1, H, W]
    masks: np.ndarray  # bool [g, H, W]: the cue
    decoy_targets: torch.Tensor  # the class the decoy twin predicts (and its maps explain)
    twin_targets: torch.Tensor  # the class the no-reliance twin predicts on the same images


@dataclass
class Models:
    trained: nn.Module
    decoy: nn.Module  # relies on the planted cue
    no_reliance: nn.Module  # saw the cue in training, coding a random label: never uses it
    random_labels: nn.Module  # trained on permuted labels
    true_labels: nn.Module  # its matched control: the same training on the true labels


@dataclass
class MethodScores:
    method: str
    values: dict[str, np.ndarray]  # metric key (and pointing distances) -> per-image values
    curves: Curves
    randomisation: RandomisationCurve
    constant_share: float  # share of the explained maps that are constant
    ground_truth_examples: dict[str, np.ndarray]  # "<cue>_decoy" / "<cue>_twin" -> maps [k, H, W] of the first k
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def degenerate(self) -> bool:
        return self.constant_share >= DEGENERATE_SHARE

    def summary(self, resamples: int, seed: int) -> dict:
        """Each metric's value with the 95 % interval that fits it (metrics.py), rounded so reruns give equal
        files; n counts the images behind it (collapsed maps left out)."""
        metrics = {}
        for key in METRIC_KEYS:
            value, low, high = estimate(self.values, key, resamples, seed)
            n = int(np.sum(~np.isnan(np.asarray(self.values[key], dtype=np.float64))))
            metrics[key] = {"value": rounded(value), "low": rounded(low), "high": rounded(high), "n": n}
        return {"metrics": metrics, "constant_share": round(self.constant_share, 6), "degenerate": self.degenerate,
                "mprt_curve": [rounded(v) for v in self.randomisation.correlation],
                "mprt_layers": self.randomisation.layers}


def score_ground_truth(models: Models, method: str, params: dict, sets: dict[str, CueSet], seed: int
                       ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per cue type, the decoy twin's and the no-reliance twin's maps of the same cued images, scored against the
    cue: pointing (the distance, and hits within the tolerance and exactly), mass and rank; and the first maps."""
    from mnist_xai.attribution import attribute

    values, examples = {}, {}
    for cue, g in sets.items():
        p = CUE_PREFIX[cue]
        decoy_maps = attribute(method, models.decoy, g.x, g.decoy_targets, **params).cpu().numpy()
        twin_maps = attribute(method, models.no_reliance, g.x, g.twin_targets, **params).cpu().numpy()
        values[f"{p}gt_distance"] = pointing_distance(decoy_maps, g.masks, seed)
        values[f"{p}fam_distance"] = pointing_distance(twin_maps, g.masks, seed)
        values[f"{p}gt_pointing"] = (values[f"{p}gt_distance"] <= POINTING_TOLERANCE).astype(np.float64)
        values[f"{p}gt_pointing_exact"] = (values[f"{p}gt_distance"] == 0).astype(np.float64)
        values[f"{p}fam_pointing"] = (values[f"{p}fam_distance"] <= POINTING_TOLERANCE).astype(np.float64)
        values[f"{p}gt_reliance"] = values[f"{p}gt_pointing"] - values[f"{p}fam_pointing"]
        values[f"{p}gt_mass"] = relevance_mass_accuracy(decoy_maps, g.masks)
        values[f"{p}gt_rank"] = relevance_rank_accuracy(decoy_maps, g.masks, seed)
        values[f"{p}fam_mass"] = relevance_mass_accuracy(twin_maps, g.masks)
        examples[f"{cue}_decoy"], examples[f"{cue}_twin"] = decoy_maps[:EXAMPLES], twin_maps[:EXAMPLES]
    return values, examples


def score_method(models: Models, method: str, params: dict, x: torch.Tensor, targets: torch.Tensor,
                 predictions: torch.Tensor, maps: np.ndarray, ground_truth: dict[str, CueSet],
                 settings: QualitySettings) -> MethodScores:
    """All metrics of one method. `x`, `targets`, `predictions` and `maps` describe the same explained images,
    in the same order; `params` are the method's attribute() params. Each metric uses the first n of them."""
    s = settings
    n, r, m = (min(len(x), k) for k in (s.n_images, s.n_randomisation, s.n_sensitivity))
    smooth = min(r, s.n_smooth)
    seconds: dict[str, float] = {}

    def timed(part: str, started: float) -> None:
        seconds[part] = seconds.get(part, 0.0) + time.perf_counter() - started

    started = time.perf_counter()
    values, examples = score_ground_truth(models, method, params, ground_truth, s.seed)
    timed("ground_truth", started)

    started = time.perf_counter()
    curves = deletion_insertion(models.trained, x[:n], maps[:n], predictions[:n], step=s.deletion_step,
                                insertion_start=s.insertion_start, blur_sigma=s.blur_sigma, seed=s.seed)
    values["deletion_auc"], values["insertion_auc"] = curves.deletion_auc, curves.insertion_auc
    timed("faithfulness", started)

    started = time.perf_counter()
    cascade = cascading_randomisation(models.trained, method, params, x[:r], targets[:r], maps[:r], seed=s.seed)
    digit = digit_pixels(x[:r])
    values["mprt_rho"] = rank_similarity(cascade.final_maps, maps[:r])
    values["mprt_collapsed"] = constant_maps(cascade.final_maps).astype(np.float64)
    values["mprt_digit_rho"] = rank_similarity(cascade.final_maps, maps[:r], digit)
    values["emprt_rise"] = entropy_rise(maps[:r], cascade.final_maps, s.entropy_bins)
    timed("model_randomisation", started)

    started = time.perf_counter()
    randomised = fully_randomised(models.trained, s.seed)
    # the same noisy copies for both models (a fresh stream each): only the model differs between the two maps
    smooth_args = {"n_samples": s.smooth_samples, "noise_magnitude": s.smooth_noise}
    smooth_trained = smooth_maps(models.trained, method, params, x[:smooth], targets[:smooth],
                                 rng=np.random.RandomState(s.seed), **smooth_args)
    smooth_random = smooth_maps(randomised, method, params, x[:smooth], targets[:smooth],
                                rng=np.random.RandomState(s.seed), draw=s.smooth_samples, **smooth_args)
    values["smprt_rho"] = rank_similarity(smooth_random, smooth_trained, digit[:smooth])
    timed("smooth_mprt", started)

    started = time.perf_counter()
    values["data_rho"] = data_randomisation(models.random_labels, models.true_labels, method, params, x[:r],
                                            targets[:r])
    timed("data_randomisation", started)

    started = time.perf_counter()
    values["max_sensitivity"] = max_sensitivity(models.trained, method, params, x[:m], targets[:m], maps[:m],
                                                n_perturbations=s.sensitivity_samples, radius=s.sensitivity_radius,
                                                seed=s.seed)
    values["sparseness"] = gini_sparseness(maps[:n])
    timed("robustness", started)
    return MethodScores(method=method, values=values, curves=curves, randomisation=cascade,
                        constant_share=float(constant_maps(maps).mean()), ground_truth_examples=examples,
                        seconds=seconds)
