"""Every quality metric of one method, per image, so that each number can carry an interval and two methods can
be compared image by image. The metrics are defined in metrics.py."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from mnist_xai.quality.complexity import gini_sparseness
from mnist_xai.quality.faithfulness import (
    Curves,
    completeness_gap,
    deletion_insertion,
    faithfulness_correlation,
    infidelity,
    road,
    road_percentages,
)
from mnist_xai.quality.localisation import (
    POINTING_TOLERANCE,
    localisation_auc,
    pointing_distance,
    relevance_mass_accuracy,
    relevance_rank_accuracy,
)
from mnist_xai.quality.metrics import CUE_PREFIX, DEGENERATE_SHARE, METRICS, estimate, replicate_key
from mnist_xai.quality.randomisation import (
    RandomisationCurve,
    cascading_randomisation,
    data_randomisation,
    digit_pixels,
    entropy_rise,
    fully_randomised,
    random_logit,
    rank_similarity,
    smooth_maps,
)
from mnist_xai.quality.robustness import stability
from mnist_xai.quality.stats import constant_maps, rounded

EXAMPLES = 4  # images whose maps the report shows
METRIC_KEYS = tuple(metric.key for metric in METRICS)


@dataclass(frozen=True)
class QualitySettings:
    n_images: int  # explained images for deletion/insertion, faithfulness correlation, completeness, sparseness
    n_randomisation: int  # images per replicate for MPRT, Efficient MPRT and data randomisation
    n_smooth: int  # images per replicate for Smooth MPRT
    smooth_samples: int  # noisy copies averaged per Smooth MPRT map
    smooth_noise: float  # their noise std, as a fraction of the image's range
    entropy_bins: int  # histogram bins of Efficient MPRT
    n_sensitivity: int
    n_random_logit: int  # images for Random Logit
    sensitivity_samples: int
    sensitivity_radius: float
    deletion_step: int
    faithfulness_runs: int  # random pixel subsets per image for faithfulness correlation
    faithfulness_subset: int  # pixels per subset
    n_road: int  # images for ROAD (MoRF and LeRF)
    n_infidelity: int  # images for infidelity
    infidelity_samples: int  # random squares removed per image
    road_steps: int  # shares of the image removed: 10, 20, ..., 90 % for 9
    road_noise: float  # std of the noise added to the imputed pixels, in normalised input units
    insertion_start: str
    blur_sigma: float
    seed: int
    replicates: int = 1
    target: str = "predicted"  # explain.target: what the retrained models' maps explain (their prediction or the label)
    randomisation_seeds: tuple[int, ...] = ()  # per replicate: the randomised networks' seed (default: seed)


@dataclass
class CueSet:
    """Test images carrying one cue type, on which the cue provably dominates the decoy twin's decision (one
    replicate's twins and images)."""

    x: torch.Tensor  # normalised images with the cue [g, 1, H, W]
    masks: np.ndarray  # bool [g, H, W]: the cue
    decoy_targets: torch.Tensor  # the class the decoy twin predicts (and its maps explain)
    twin_targets: torch.Tensor  # the class the no-reliance twin predicts on the same images


@dataclass
class Models:
    """The trained model, and per replicate (replicates.py) the auxiliary networks of the checks."""

    trained: nn.Module
    decoy: list[nn.Module]  # relies on the planted cue
    no_reliance: list[nn.Module]  # saw the cue in training, coding a random label: never uses it
    random_labels: list[nn.Module]  # trained on permuted labels
    true_labels: list[nn.Module]  # their matched controls: the same training on the true labels
    retrained: list[nn.Module] = field(default_factory=list)  # the trained model drawn again (replicates 1, 2, ...)


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


def score_ground_truth(models: Models, method: str, params: dict, sets: dict[str, list[CueSet]], seed: int
                       ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Per cue type and replicate, the decoy twin's and the no-reliance twin's maps of the same cued images, scored
    against the cue: pointing (the distance, and hits within the tolerance and exactly), mass, rank and ROC AUC,
    each image with its replicate; and the first replicate's first maps."""
    from mnist_xai.attribution import attribute

    values: dict[str, list[np.ndarray]] = {}
    examples = {}
    for cue, replicate_sets in sets.items():
        p = CUE_PREFIX[cue]
        for r, g in enumerate(replicate_sets):
            decoy_maps = attribute(method, models.decoy[r], g.x, g.decoy_targets, **params).cpu().numpy()
            twin_maps = attribute(method, models.no_reliance[r], g.x, g.twin_targets, **params).cpu().numpy()
            one = {f"{p}gt_distance": pointing_distance(decoy_maps, g.masks, seed),
                   f"{p}fam_distance": pointing_distance(twin_maps, g.masks, seed)}
            one[f"{p}gt_pointing"] = (one[f"{p}gt_distance"] <= POINTING_TOLERANCE).astype(np.float64)
            one[f"{p}gt_pointing_exact"] = (one[f"{p}gt_distance"] == 0).astype(np.float64)
            one[f"{p}fam_pointing"] = (one[f"{p}fam_distance"] <= POINTING_TOLERANCE).astype(np.float64)
            one[f"{p}gt_reliance"] = one[f"{p}gt_pointing"] - one[f"{p}fam_pointing"]
            one[f"{p}gt_mass"] = relevance_mass_accuracy(decoy_maps, g.masks)
            one[f"{p}gt_rank"] = relevance_rank_accuracy(decoy_maps, g.masks, seed)
            one[f"{p}gt_auc"] = localisation_auc(decoy_maps, g.masks)
            one[f"{p}fam_mass"] = relevance_mass_accuracy(twin_maps, g.masks)
            for key in [k for k in one if not k.endswith("_distance")]:
                one[replicate_key(key)] = np.full(len(g.masks), r, dtype=np.int16)
            for key, array in one.items():
                values.setdefault(key, []).append(array)
            if r == 0:
                examples[f"{cue}_decoy"], examples[f"{cue}_twin"] = decoy_maps[:EXAMPLES], twin_maps[:EXAMPLES]
    return {key: np.concatenate(parts) for key, parts in values.items()}, examples


def score_method(models: Models, method: str, params: dict, x: torch.Tensor, targets: torch.Tensor,
                 predictions: torch.Tensor, maps: np.ndarray, ground_truth: dict[str, CueSet],
                 settings: QualitySettings) -> MethodScores:
    """All metrics of one method. `x`, `targets`, `predictions` and `maps` describe the same explained images,
    in the same order; `params` are the method's attribute() params. Each metric uses the first n of them."""
    s = settings
    n, m = (min(len(x), k) for k in (s.n_images, s.n_sensitivity))
    r = min(len(x) // s.replicates, s.n_randomisation)  # images per replicate, each replicate its own
    smooth = min(r, s.n_smooth)
    seconds: dict[str, float] = {}

    def timed(part: str, started: float) -> None:
        seconds[part] = seconds.get(part, 0.0) + time.perf_counter() - started

    started = time.perf_counter()
    values, examples = score_ground_truth(models, method, params, ground_truth, s.seed)
    timed("ground_truth", started)

    started = time.perf_counter()
    curves = faithfulness_curves(models, method, params, x[:n], targets[:n], predictions[:n], maps[:n], s, values)
    timed("faithfulness", started)
    started = time.perf_counter()
    values["faithfulness_correlation"] = faithfulness_correlation(
        models.trained, x[:n], maps[:n], targets[:n].cpu().numpy(), runs=s.faithfulness_runs,
        subset=s.faithfulness_subset, seed=s.seed)
    timed("faithfulness", started)

    started = time.perf_counter()
    values["completeness_gap"] = completeness_gap(models.trained, x[:n], maps[:n], targets[:n].cpu().numpy())
    timed("completeness", started)

    started = time.perf_counter()
    k = min(len(x), s.n_road)
    for key, first in (("road_morf", True), ("road_lerf", False)):
        values[key] = road(models.trained, x[:k], maps[:k], targets[:k].cpu().numpy(),
                           percentages=road_percentages(s.road_steps), noise=s.road_noise, seed=s.seed,
                           most_relevant_first=first).mean(axis=1)
    timed("road", started)

    started = time.perf_counter()
    k = min(len(x), s.n_infidelity)
    values["infidelity"] = infidelity(models.trained, x[:k], maps[:k], targets[:k].cpu().numpy(),
                                      samples=s.infidelity_samples, seed=s.seed)
    timed("infidelity", started)

    # the randomisation checks, per replicate: its own randomised networks, permuted-label pair and images
    parts: dict[str, list[np.ndarray]] = {}
    cascades = []
    for rep in range(s.replicates):
        images = slice(rep * r, (rep + 1) * r)
        xr, tr, mr = x[images], targets[images], maps[images]
        network_seed = s.randomisation_seeds[rep] if s.randomisation_seeds else s.seed
        started = time.perf_counter()
        cascade = cascading_randomisation(models.trained, method, params, xr, tr, mr, seed=network_seed)
        cascades.append(cascade)
        digit = digit_pixels(xr)
        one = {"mprt_rho": rank_similarity(cascade.final_maps, mr),
               "mprt_collapsed": constant_maps(cascade.final_maps).astype(np.float64),
               "mprt_digit_rho": rank_similarity(cascade.final_maps, mr, digit),
               "emprt_rise": entropy_rise(mr, cascade.final_maps, s.entropy_bins)}
        timed("model_randomisation", started)

        started = time.perf_counter()
        randomised = fully_randomised(models.trained, network_seed)
        # the same noisy copies for both models (a fresh stream each): only the model differs between the two maps
        smooth_args = {"n_samples": s.smooth_samples, "noise_magnitude": s.smooth_noise}
        smooth_trained = smooth_maps(models.trained, method, params, xr[:smooth], tr[:smooth],
                                     rng=np.random.RandomState(network_seed), **smooth_args)
        smooth_random = smooth_maps(randomised, method, params, xr[:smooth], tr[:smooth],
                                    rng=np.random.RandomState(network_seed), draw=s.smooth_samples, **smooth_args)
        one["smprt_rho"] = rank_similarity(smooth_random, smooth_trained, digit[:smooth])
        timed("smooth_mprt", started)

        started = time.perf_counter()
        one["data_rho"] = data_randomisation(models.random_labels[rep], models.true_labels[rep], method, params, xr,
                                             tr)
        timed("data_randomisation", started)
        for key in list(one):
            one[replicate_key(key)] = np.full(len(one[key]), rep, dtype=np.int16)
        for key, array in one.items():
            parts.setdefault(key, []).append(array)
    values |= {key: np.concatenate(arrays) for key, arrays in parts.items()}
    cascade = combined(cascades)

    started = time.perf_counter()
    stable = stability(models.trained, method, params, x[:m], targets[:m], maps[:m],
                       n_perturbations=s.sensitivity_samples, radius=s.sensitivity_radius, seed=s.seed)
    values["max_sensitivity"], values["ris"], values["ros"] = stable["max_sensitivity"], stable["ris"], stable["ros"]
    values["sparseness"] = gini_sparseness(maps[:n])
    timed("robustness", started)

    started = time.perf_counter()
    k = min(len(x), s.n_random_logit)
    values["random_logit"], _ = random_logit(models.trained, method, params, x[:k], targets[:k], maps[:k], s.seed)
    timed("random_logit", started)
    return MethodScores(method=method, values=values, curves=curves, randomisation=cascade,
                        constant_share=float(constant_maps(maps).mean()), ground_truth_examples=examples,
                        seconds=seconds)


def faithfulness_curves(models: Models, method: str, params: dict, x: torch.Tensor, targets: torch.Tensor,
                        predictions: torch.Tensor, maps: np.ndarray, s: QualitySettings,
                        values: dict[str, np.ndarray]) -> Curves:
    """Deletion and insertion on every draw of the trained model, each on its own share of the images: the
    pipeline's model on the first share with its own maps, retrained model r on share r with maps made for it
    (explaining its own prediction where explain.target is predicted). Adds deletion_auc and insertion_auc to
    `values`, with their replicate ids when there is more than one draw, and returns every image's curves."""
    from mnist_xai.attribution import attribute

    draws = [models.trained, *models.retrained]
    share = len(x) // len(draws)
    parts = []
    for r, model in enumerate(draws):
        rows = slice(r * share, (r + 1) * share) if len(draws) > 1 else slice(None)
        xr, classes, mr = x[rows], predictions[rows], maps[rows]
        if r:  # another model: its own prediction, and its own maps of it
            with torch.no_grad():
                classes = model(xr).argmax(dim=1)
            explained = classes if s.target == "predicted" else targets[rows]
            mr = attribute(method, model, xr, explained, **params).cpu().numpy()
        parts.append(deletion_insertion(model, xr, mr, classes, step=s.deletion_step,
                                        insertion_start=s.insertion_start, blur_sigma=s.blur_sigma, seed=s.seed))
    curves = Curves(fractions=parts[0].fractions, deletion=np.concatenate([c.deletion for c in parts]),
                    insertion=np.concatenate([c.insertion for c in parts]))
    values["deletion_auc"], values["insertion_auc"] = curves.deletion_auc, curves.insertion_auc
    if len(draws) > 1:
        ids = np.repeat(np.arange(len(draws), dtype=np.int16), [len(c.deletion) for c in parts])
        values[replicate_key("deletion_auc")] = values[replicate_key("insertion_auc")] = ids
    return curves


def combined(cascades: list[RandomisationCurve]) -> RandomisationCurve:
    """The replicates' cascades as one curve: each step's mean rho and collapsed share over every image (weighted by
    the replicate's images); the examples and layers of the first replicate."""
    first = cascades[0]
    sizes = np.array([len(c.final_maps) for c in cascades], dtype=np.float64)

    def pooled(curves: list[np.ndarray]) -> np.ndarray:
        stacked = np.stack(curves)
        weights = np.where(np.isnan(stacked), 0.0, sizes[:, None])
        total = weights.sum(axis=0)
        return np.divide((np.nan_to_num(stacked) * weights).sum(axis=0), total, out=np.full(total.shape, np.nan),
                         where=total > 0)

    return RandomisationCurve(layers=first.layers, correlation=pooled([c.correlation for c in cascades]),
                              constant_fraction=pooled([c.constant_fraction for c in cascades]),
                              examples=first.examples, final_maps=np.concatenate([c.final_maps for c in cascades]))
