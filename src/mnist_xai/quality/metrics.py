"""The one table of quality metrics: key, label, which way is better, group and definition. The scoring, the
verdict, the report's table and its definitions all read it; nothing else describes a metric."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    better: str  # "higher" | "lower" | "" (descriptive, neither)
    group: str
    definition: str
    digits: int = 3


GROUND_TRUTH = "Ground truth (planted cue)"
FAITHFULNESS = "Faithfulness"
SANITY = "Sanity checks"
ROBUSTNESS = "Robustness and complexity"

METRICS: tuple[Metric, ...] = (
    Metric("gt_pointing", "Pointing game", "higher", GROUND_TRUTH,
           "On the decoy model (Decoy MNIST, Ross et al. 2017), over the test images where removing the planted "
           "patch provably changes its decision: the share whose largest attribution lies inside the patch "
           "(Zhang et al. 2018). Ties for the largest value are broken in a seeded random order, so a constant map "
           "scores chance."),
    Metric("gt_mass", "Relevance mass accuracy", "higher", GROUND_TRUTH,
           "Same images: positive attribution inside the patch divided by all positive attribution (Arras et al. "
           "2022). Chance, a map with no information, is the patch's share of the image (16/784 = 0.020)."),
    Metric("gt_rank", "Relevance rank accuracy", "higher", GROUND_TRUTH,
           "Same images: the share of the 16 largest attributions (the patch's area) that lie inside the patch "
           "(Arras et al. 2022); ties in a seeded random order."),
    Metric("fam_mass", "False alarm (mass on an unused cue)", "lower", GROUND_TRUTH,
           "The normal model, which never saw the cue, explaining the same images with the patch in place: "
           "positive attribution inside the patch over all positive attribution (the false-alarm measure of "
           "Adebayo et al. 2022). A good method puts no more there than chance."),
    Metric("deletion_auc", "Deletion AUC", "lower", FAITHFULNESS,
           "Pixels ranked by attribution (ties in a seeded random order) are set to black, a fixed number per "
           "step; the area under the probability of the class predicted on the clean image (Petsiuk et al. 2018)."),
    Metric("insertion_auc", "Insertion AUC", "higher", FAITHFULNESS,
           "The same order, inserting pixels into a blurred (or black) start image; the area under the "
           "probability (Petsiuk et al. 2018)."),
    Metric("mprt_rho", "MPRT ρ (original)", "lower", SANITY,
           "Model-parameter randomisation (Adebayo et al. 2018): Spearman ρ of |map| between the trained model "
           "and the model with every parameter layer re-initialised from the top down, over all pixels. A constant "
           "map has no ranking and scores ρ = 0. Shown for comparison: it is contested (Binder et al. 2023)."),
    Metric("mprt_digit_rho", "MPRT ρ, digit pixels", "lower", SANITY,
           "The same ρ over the digit's pixels only (input above black), so that the black background every map "
           "shares on MNIST does not count as agreement."),
    Metric("edge_rho", "Edge-map ρ (control)", "", SANITY,
           "Spearman ρ of |map| from the trained model against the Sobel edge map of the input, which ignores the "
           "model: how much similarity the input's structure alone explains (the control of Adebayo et al. 2018)."),
    Metric("smprt_rho", "Smooth MPRT ρ", "lower", SANITY,
           "Smooth MPRT (Hedström et al. 2023): ρ of |map| between the trained and the fully randomised model, "
           "each map first averaged over noisy copies of the input (the last copy clean), which removes the "
           "gradient noise that makes the original test unstable."),
    Metric("smprt_vs_edge", "Smooth MPRT ρ − edge ρ", "lower", SANITY,
           "Smooth MPRT ρ minus the edge-map ρ on the same image: below 0 means the randomised model's maps "
           "resemble the trained model's less than a model-free edge detector does, so the maps depend on what "
           "the model learned."),
    Metric("emprt_rise", "Efficient MPRT entropy rise", "higher", SANITY,
           "Efficient MPRT (Hedström et al. 2023): the relative rise (H_random − H_trained) / H_trained of the "
           "entropy of the map's histogram (100 bins) when every layer is randomised. Above 0: the explanation "
           "grows more disordered when the model is destroyed, as it should."),
    Metric("data_rho", "Data randomisation ρ", "lower", SANITY,
           "Spearman ρ of |map| between the model and the same network trained on permuted labels (Adebayo et "
           "al. 2018); only meaningful when that model has memorised its labels."),
    Metric("data_vs_edge", "Data randomisation ρ − edge ρ", "lower", SANITY,
           "Data-randomisation ρ minus the edge-map ρ on the same image: below 0 means the permuted-label model's "
           "maps share less with the real model's than the input's edges do."),
    Metric("max_sensitivity", "Max-sensitivity", "lower", ROBUSTNESS,
           "Yeh et al. 2019, as Quantus: the largest relative change ‖m(x + δ) − m(x)‖ / ‖m(x)‖ under uniform noise "
           "|δ| ≤ a fraction of the image's range, m the map divided by its largest |value|."),
    Metric("sparseness", "Sparseness (Gini)", "", ROBUSTNESS,
           "The Gini index of |map| (Chalasani et al. 2020): 0 when every pixel carries the same attribution, "
           "towards 1 when a few carry it all. Descriptive: neither end is better."),
)

BY_KEY = {metric.key: metric for metric in METRICS}
KEY_SCORES = ("gt_pointing", "gt_mass", "fam_mass", "deletion_auc", "insertion_auc")
"""The scores shown beside a verdict where there is room for a few only (the explain page, the study)."""
