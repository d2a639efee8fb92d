"""How far to trust each explanation: faithfulness, sanity checks, robustness, complexity, agreement.

`score_methods` computes every metric for every method on (subsets of) the explained images and
returns plain numbers; `rank_methods` turns them into a ranked, reasoned recommendation. Definitions
(also stated in the report):

- deletion / insertion AUC (Petsiuk et al. 2018): see faithfulness.py. Lower deletion, higher insertion
  is better.
- model randomisation (Adebayo et al. 2018, cascading): Spearman rho of |map| between the trained model
  and the model with its top 1, 2, ... parameter layers re-initialised; the summary is rho after all
  layers. Passes when below `threshold`.
- data randomisation (Adebayo et al. 2018): rho of |map| between the model and one trained on permuted
  labels. Passes when below `threshold`.
- max-sensitivity (Yeh et al. 2019): see robustness.py. Lower is more robust.
- sparseness: Gini index of |map| (complexity.py). Higher is more concentrated.
- agreement: mean rho of |map| between two methods over the same images.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from mnist_xai.quality.complexity import gini_sparseness
from mnist_xai.quality.faithfulness import Curves, deletion_insertion
from mnist_xai.quality.randomisation import RandomisationCurve, cascading_randomisation, data_randomisation
from mnist_xai.quality.robustness import max_sensitivity
from mnist_xai.quality.stats import centred_ranks, rank_correlation

log = logging.getLogger(__name__)

CONTROL = "random"


@dataclass
class QualitySettings:
    n_images: int = 200  # images for deletion/insertion, sparseness and agreement
    n_randomisation: int = 64  # images for the two randomisation checks
    n_sensitivity: int = 24  # images for max-sensitivity
    deletion_step: int = 28  # pixels removed or inserted per step
    insertion_start: str = "blur"  # blur | black
    blur_sigma: float = 5.0
    threshold: float = 0.5  # a randomisation rho below this passes
    sensitivity_samples: int = 8
    sensitivity_radius: float = 0.05  # fraction of the image's range
    seed: int = 0


@dataclass
class MethodQuality:
    method: str
    curves: Curves
    model_randomisation: RandomisationCurve
    data_randomisation: float
    max_sensitivity: np.ndarray  # per image
    sparseness: np.ndarray  # per image
    threshold: float

    def summary(self) -> dict[str, float]:
        """The method's metrics, rounded so that reruns give identical files."""
        final = float(self.model_randomisation.correlation[-1])
        values = {
            "deletion_auc": float(self.curves.deletion_auc.mean()),
            "insertion_auc": float(self.curves.insertion_auc.mean()),
            "model_randomisation_rho": final,
            "model_randomisation_constant_maps": float(self.model_randomisation.constant_fraction[-1]),
            "data_randomisation_rho": self.data_randomisation,
            "max_sensitivity": float(self.max_sensitivity.mean()),
            "sparseness": float(self.sparseness.mean()),
        }
        values["faithfulness_gap"] = values["insertion_auc"] - values["deletion_auc"]
        values["model_randomisation_pass"] = int(final < self.threshold)
        values["data_randomisation_pass"] = int(self.data_randomisation < self.threshold)
        return {key: round(value, 6) if isinstance(value, float) else value for key, value in values.items()}


@dataclass
class QualityReport:
    methods: dict[str, MethodQuality]
    agreement: np.ndarray  # [m, m] mean rho of |map| between methods
    seconds: dict[str, float] = field(default_factory=dict)  # time per part


def score_methods(model: nn.Module, random_label_model: nn.Module, x: torch.Tensor, targets: torch.Tensor,
                  predictions: torch.Tensor, maps: dict[str, np.ndarray], params: dict[str, dict],
                  settings: QualitySettings) -> QualityReport:
    """All metrics for every method. `x`, `targets`, `predictions` and each `maps[method]` describe the same
    explained images, in the same order; `params[method]` are the method's attribute() params."""
    seconds = dict.fromkeys(("faithfulness", "model_randomisation", "data_randomisation", "max_sensitivity",
                             "sparseness_agreement"), 0.0)
    n, r, s = (min(len(x), k) for k in (settings.n_images, settings.n_randomisation, settings.n_sensitivity))
    results = {}
    for method in tqdm(maps, desc="quality", unit="method"):
        method_maps, method_params = maps[method], params[method]
        started = time.perf_counter()
        curves = deletion_insertion(model, x[:n], method_maps[:n], predictions[:n], step=settings.deletion_step,
                                    insertion_start=settings.insertion_start, blur_sigma=settings.blur_sigma,
                                    seed=settings.seed)
        seconds["faithfulness"] += _lap(started)
        started = time.perf_counter()
        cascade = cascading_randomisation(model, method, method_params, x[:r], targets[:r], method_maps[:r],
                                          seed=settings.seed)
        seconds["model_randomisation"] += _lap(started)
        started = time.perf_counter()
        data_rho = data_randomisation(random_label_model, method, method_params, x[:r], targets[:r], method_maps[:r])
        seconds["data_randomisation"] += _lap(started)
        started = time.perf_counter()
        sensitivity = max_sensitivity(model, method, method_params, x[:s], targets[:s], method_maps[:s],
                                      n_perturbations=settings.sensitivity_samples,
                                      radius=settings.sensitivity_radius, seed=settings.seed)
        seconds["max_sensitivity"] += _lap(started)
        started = time.perf_counter()
        results[method] = MethodQuality(method, curves, cascade, data_rho, sensitivity,
                                        gini_sparseness(method_maps[:n]), settings.threshold)
        seconds["sparseness_agreement"] += _lap(started)
    started = time.perf_counter()
    names = list(maps)
    ranks = {method: centred_ranks(np.abs(maps[method][:n])) for method in names}  # once per method, not per pair
    agreement = np.eye(len(names))
    for i, first in enumerate(names):
        for j in range(i + 1, len(names)):
            rho = rank_correlation(ranks[first], ranks[names[j]]).mean()
            agreement[i, j] = agreement[j, i] = round(float(rho), 6)
    seconds["sparseness_agreement"] += _lap(started)
    return QualityReport(methods=results, agreement=agreement, seconds=seconds)


def _lap(started: float) -> float:
    return time.perf_counter() - started


def rank_methods(summaries: dict[str, dict[str, float]], threshold: float) -> list[dict]:
    """Which explanation to trust for this model, best first, with the reasoning.

    Four checks per method: both randomisation tests (rho < threshold), and both faithfulness curves
    better than the random control's. Methods are ranked by checks passed, then by the faithfulness gap
    (insertion AUC - deletion AUC). The control itself is listed last, as the reference."""
    control = summaries.get(CONTROL)
    ranked = []
    for method, values in summaries.items():
        if method == CONTROL:
            continue
        checks = [
            ("model randomisation", values["model_randomisation_rho"] < threshold,
             f"rho after randomising every layer {values['model_randomisation_rho']:.2f} "
             f"{'<' if values['model_randomisation_rho'] < threshold else '>='} {threshold:g}"),
            ("data randomisation", values["data_randomisation_rho"] < threshold,
             f"rho against a random-label model {values['data_randomisation_rho']:.2f} "
             f"{'<' if values['data_randomisation_rho'] < threshold else '>='} {threshold:g}"),
        ]
        if control:
            checks += [
                ("deletion", values["deletion_auc"] < control["deletion_auc"],
                 f"deletion AUC {values['deletion_auc']:.3f} vs random {control['deletion_auc']:.3f} "
                 "(lower is better)"),
                ("insertion", values["insertion_auc"] > control["insertion_auc"],
                 f"insertion AUC {values['insertion_auc']:.3f} vs random {control['insertion_auc']:.3f} "
                 "(higher is better)"),
            ]
        passed = sum(ok for _, ok, _ in checks)
        ranked.append({"method": method, "passed": passed, "checks": len(checks),
                       "faithfulness_gap": values["faithfulness_gap"],
                       "reasons": [{"check": name, "ok": ok, "detail": detail} for name, ok, detail in checks]})
    ranked.sort(key=lambda row: (-row["passed"], -row["faithfulness_gap"], row["method"]))
    for position, row in enumerate(ranked, 1):
        row["rank"] = position
        row["verdict"] = ("trust" if row["passed"] == row["checks"] else
                          "use with care" if row["passed"] >= row["checks"] - 1 else "do not trust")
    return ranked
