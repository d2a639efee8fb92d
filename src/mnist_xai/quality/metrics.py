"""The one table of quality metrics: key, label, which way is better, group, definition and the interval that fits
the statistic. The scoring, the verdict, the report's table and its definitions all read it; nothing else
describes a metric."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    better: str  # "higher" | "lower" | "" (descriptive, neither)
    group: str
    definition: str
    kind: str = "mean"  # mean: BCa bootstrap | proportion: Wilson | difference: Newcombe, of `parts`
    parts: tuple[str, str] = ("", "")  # for a difference: the two paired proportions, first minus second
    digits: int = 3


GROUND_TRUTH = "Ground truth (planted cue)"
FAITHFULNESS = "Faithfulness"
SANITY = "Sanity checks"
ROBUSTNESS = "Robustness and complexity"

CUE_PREFIX = {"pattern": "", "grey": "grey_"}
"""Ground-truth keys per cue type: the intensity-neutral pattern cue is the main one (gt_pointing, ...); the grey
cue's keys carry a prefix (grey_gt_pointing, ...)."""

_CUE_WORDS = {"pattern": "the intensity-neutral pattern cue", "grey": "Ross et al.'s grey-level cue"}


def _ground_truth_metrics(cue: str) -> tuple[Metric, ...]:
    p, words, tag = CUE_PREFIX[cue], _CUE_WORDS[cue], "" if cue == "pattern" else " (grey cue)"
    return (
        Metric(f"{p}gt_reliance", f"Points at the cue the model uses{tag}", "higher", GROUND_TRUTH,
               f"With {words}, on the test images where the cue provably dominates the decoy model's decision "
               "(removing it lowers the explained logit more than removing any other 4×4 window): the pointing "
               "game on the decoy model minus the pointing game on the no-reliance twin (which saw the cue in "
               "training but never used it), same images. It credits pointing at the cue because the model uses "
               "it; an explainer that ignores the model scores exactly 0.", kind="difference",
               parts=(f"{p}gt_pointing", f"{p}fam_pointing")),
        Metric(f"{p}gt_pointing", f"Pointing game{tag}", "higher", GROUND_TRUTH,
               f"With {words}, decoy model: the share of images whose largest attribution lies within 2 pixels of "
               "the cue (Zhang et al. 2018's tolerance, 15 px at 224 px, scaled to 28 px). Ties for the largest "
               "are broken in a seeded random order, so a constant map scores chance.", kind="proportion"),
        Metric(f"{p}gt_pointing_exact", f"Pointing game, exact{tag}", "higher", GROUND_TRUTH,
               "The same with no tolerance: the largest attribution inside the 4×4 patch itself.",
               kind="proportion"),
        Metric(f"{p}gt_mass", f"Relevance mass accuracy{tag}", "higher", GROUND_TRUTH,
               "Same images, decoy model: positive attribution inside the patch divided by all positive "
               "attribution (Arras et al. 2022). Chance, a map with no information, is the patch's share of the "
               "image (16/784 = 0.020)."),
        Metric(f"{p}gt_rank", f"Relevance rank accuracy{tag}", "higher", GROUND_TRUTH,
               "Same images, decoy model: the share of the 16 largest attributions (the patch's area) that lie "
               "inside the patch (Arras et al. 2022); ties in a seeded random order. With k = 16, the patch's area, "
               "it is also Top-K intersection (Theiner et al. 2021; Quantus' TopKIntersection, k = 16): a test "
               "shows the two equal, so it is not listed twice."),
        Metric(f"{p}gt_auc", f"Localisation AUC{tag}", "higher", GROUND_TRUTH,
               "Same images, decoy model: the area under the ROC curve of the map read as a detector of the patch's "
               "pixels (Fawcett 2006; Quantus' AUC): the chance that a random patch pixel has a larger attribution "
               "than a random pixel outside it, ties counted half. Chance, a map with no information (a constant "
               "one included), is 0.5. It reads the whole ranking, where rank accuracy reads the top 16 only."),
        Metric(f"{p}fam_pointing", f"False alarm, pointing{tag}", "lower", GROUND_TRUTH,
               "The no-reliance twin explaining the same images: the share whose largest attribution lies within "
               "2 pixels of a cue that model does not use.", kind="proportion"),
        Metric(f"{p}fam_mass", f"False alarm, mass{tag}", "lower", GROUND_TRUTH,
               "The no-reliance twin explaining the same images: positive attribution inside the patch over all "
               "positive attribution (the false-alarm measure of Adebayo et al. 2022). A method that follows the "
               "model puts little there."),
    )


METRICS: tuple[Metric, ...] = (
    *_ground_truth_metrics("pattern"),
    *_ground_truth_metrics("grey"),
    Metric("deletion_auc", "Deletion AUC", "lower", FAITHFULNESS,
           "Pixels ranked by attribution (ties in a seeded random order) are set to black, a fixed number per "
           "step; the area under the probability of the class predicted on the clean image (Petsiuk et al. 2018). "
           "Scored on every draw of the trained model (quality.replicates), each on its own share of the images, "
           "so its interval covers the training's randomness too."),
    Metric("insertion_auc", "Insertion AUC", "higher", FAITHFULNESS,
           "The same order, inserting pixels into a blurred (or black) start image; the area under the "
           "probability (Petsiuk et al. 2018)."),
    Metric("faithfulness_correlation", "Faithfulness correlation", "higher", FAITHFULNESS,
           "Bhatt et al. 2020, as Quantus 0.6 computes it: per image, 100 random subsets of 28 pixels are set to "
           "black; the Pearson correlation, over the subsets, between the attribution summed over the subset and "
           "the drop of the explained logit. Shown and meta-evaluated; no verdict line reads it."),
    Metric("road_morf", "ROAD, most relevant first", "lower", FAITHFULNESS,
           "Remove and Debias (Rong et al. 2022, as Quantus 0.6): at 10, 20, ..., 90 % of the pixels, the most "
           "relevant ones (ties in a seeded random order) are replaced by the weighted mean of their neighbours "
           "(noisy linear imputation: one linear system, plus Gaussian noise of std 0.01) instead of black, so a "
           "removal leaves no shape the model can read; the share of those steps at which the model still predicts "
           "the explained class. Low: removing what the map calls relevant changes the decision. Shown and "
           "meta-evaluated; no verdict line reads it."),
    Metric("road_lerf", "ROAD, least relevant first", "higher", FAITHFULNESS,
           "The same, removing the least relevant pixels first: high when what the map calls irrelevant is."),
    Metric("infidelity", "Infidelity", "lower", FAITHFULNESS,
           "Yeh et al. 2019, with their square removal, as Captum computes it (normalize=True): per image, 32 "
           "squares of 4×4 pixels at random positions set to black one at a time; the mean squared difference "
           "between the attribution summed over the square, times the scale β that fits the map best, and the drop "
           "of the explained logit (logit²). Quantus' Infidelity blackens the 4×4 grid cumulatively in a fixed "
           "order and multiplies the map by the change of the input instead; a test pins its formula. Shown and "
           "meta-evaluated; no verdict line reads it."),
    Metric("completeness_gap", "Completeness gap", "lower", FAITHFULNESS,
           "Completeness (Sundararajan et al. 2017; Quantus' Completeness asks it as yes or no, sum == change "
           "exactly, which no float map passes): |sum of the map − (f(x) − f(black))| / |f(x) − f(black)|, f the "
           "explained logit, black the all-black image. 0 for a map that adds up to the output's change from the "
           "baseline, as Integrated Gradients, DeepLIFT and the Shapley methods promise; for a map on another "
           "scale (a gradient, a CAM, a control) it measures the scale, not the ranking. Shown and "
           "meta-evaluated; no verdict line reads it."),
    Metric("mprt_rho", "MPRT ρ, all pixels", "lower", SANITY,
           "Model-parameter randomisation (Adebayo et al. 2018): Spearman ρ of |map| between the trained model "
           "and the model with every parameter layer re-initialised from the top down, over all pixels, as Quantus "
           "computes it. Images whose randomised map collapsed to a constant are left out (it has no ranking; "
           "ρ = 0 would pass). Shown, not used by the verdict: on MNIST's black background a map that is exactly 0 "
           "wherever the input is black shares that block of ties with any model."),
    Metric("mprt_collapsed", "MPRT: collapsed maps", "", SANITY,
           "The share of images whose map on the fully randomised model is constant. Above one half, the "
           "randomisation checks cannot be read for that method.", kind="proportion"),
    Metric("mprt_digit_rho", "MPRT ρ", "lower", SANITY,
           "The same ρ over the digit's pixels only (input above black), so that the black background every map "
           "shares on MNIST does not count as agreement (Binder et al. 2023): the verdict's MPRT line."),
    Metric("smprt_rho", "Smooth MPRT ρ", "lower", SANITY,
           "Smooth MPRT (Hedström et al. 2023): ρ of |map| over the digit's pixels between the trained and the "
           "fully randomised model, each map first averaged over the same noisy copies of the input (the last copy "
           "clean), which removes the gradient noise that makes the original test unstable."),
    Metric("emprt_rise", "Efficient MPRT entropy rise", "higher", SANITY,
           "Efficient MPRT (Hedström et al. 2023): the relative rise (H_random − H_trained) / H_trained of the "
           "entropy of the map's histogram (100 bins) when every layer is randomised. Above 0: the explanation "
           "grows more disordered when the model is destroyed, as it should. Shown and meta-evaluated; no verdict line "
           "reads it: its controls did not validate a line in every seed, and a map that changes into a simpler one "
           "fails it as a map that does not change at all would."),
    Metric("random_logit", "Random Logit SSIM", "lower", SANITY,
           "Random Logit (Sixt et al. 2020, as Quantus 0.6 draws it): the SSIM between the map of the explained "
           "class and the map of another class drawn at random, each divided by its largest |value|. Near 1: the "
           "map is the same whatever class it explains, so it cannot say why the model chose this one (the "
           "model-free controls and EigenCAM, which never looks at the class). SSIM as scikit-image computes it, "
           "over the 2-D map (Quantus flattens the map to one row first). Shown and meta-evaluated; no verdict "
           "line reads it."),
    Metric("data_rho", "Data randomisation ρ", "lower", SANITY,
           "Spearman ρ of |map| over the digit's pixels between a network trained on permuted labels and its "
           "matched control, the same network trained on the same images for the same steps with the true labels "
           "(Adebayo et al. 2018). Low: the explanation depends on what the model learned."),
    Metric("max_sensitivity", "Max-sensitivity", "lower", ROBUSTNESS,
           "Yeh et al. 2019, as Quantus: the largest relative change ‖m(x + δ) − m(x)‖ / ‖m(x)‖ under uniform noise "
           "|δ| ≤ a fraction of the image's range, m the map divided by its largest |value|."),
    Metric("ris", "Relative input stability (log₁₀)", "lower", ROBUSTNESS,
           "Agarwal et al. 2022, as Quantus 0.6 computes it on the raw map, from max-sensitivity's perturbations: "
           "the largest ‖(m(x) − m(x′)) / m(x)‖ / ‖(x − x′) / x‖ (element-wise relative changes, 0 guarded by 1e-6), "
           "over the perturbations that leave the predicted class unchanged, as log₁₀ (floored at −6): the map's "
           "relative change per relative change of the input. Quantus drops an image if any perturbation changed "
           "the class; a test pins that. Shown and meta-evaluated; no verdict line reads it."),
    Metric("ros", "Relative output stability (log₁₀)", "lower", ROBUSTNESS,
           "The same with the change of the model's logits ‖h(x) − h(x′)‖ in the denominator (Agarwal et al. "
           "2022): the map's relative change per change of what the model computes."),
    Metric("sparseness", "Sparseness (Gini)", "", ROBUSTNESS,
           "The Gini index of |map| (Chalasani et al. 2020): 0 when every pixel carries the same attribution, "
           "towards 1 when a few carry it all. Descriptive: neither end is better."),
)

BY_KEY = {metric.key: metric for metric in METRICS}
DEGENERATE_SHARE = 0.5
"""A method whose maps are constant for at least this share of the explained images is degenerate: never trusted,
whatever its other scores (a constant map carries no ranking for any check to read). Here, where both the scoring
and the verdict read it, so that a change to the rule in verdict.py re-scores no method."""
KEY_SCORES = ("gt_reliance", "gt_pointing", "fam_mass", "deletion_auc", "insertion_auc")
"""The scores shown beside a verdict where there is room for a few only (the explain page, the study)."""


def replicate_key(key: str) -> str:
    """The per-image replicate ids of a metric's values (which decoy twin, randomised network, permuted-label network
    or image subset each value came from); absent for a metric with one draw (the trained model's)."""
    return f"{key}_replicate"


def estimate(values: dict[str, np.ndarray], key: str, resamples: int, seed: int, confidence: float | None = None
             ) -> tuple[float, float, float]:
    """A metric's value and interval (95 % unless `confidence` says otherwise) from per-image values, with the
    interval its kind calls for; where the values come from several replicates, the hierarchical interval that
    covers them too (stats.py)."""
    from mnist_xai.quality.stats import (
        CONFIDENCE,
        hierarchical_interval,
        interval,
        paired_proportion_difference,
        proportion_interval,
    )

    confidence = CONFIDENCE if confidence is None else confidence
    metric = BY_KEY[key]
    if metric.kind == "proportion":
        exact = proportion_interval(values[key], confidence)
    elif metric.kind == "difference":
        first, second = (np.asarray(values[part], dtype=bool) for part in metric.parts)
        exact = paired_proportion_difference(first, second, confidence)
    else:
        exact = interval(values[key], resamples, seed, confidence)
    replicates = values.get(replicate_key(key))
    if replicates is None:
        return exact
    return hierarchical_interval(values[key], replicates, exact, resamples, seed, confidence)

