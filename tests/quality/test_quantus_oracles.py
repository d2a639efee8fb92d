"""Our quality metrics against Quantus 0.6, the independent oracle, on a trained model and real test images
carrying the planted cue. Where the definitions agree they must match to 1e-6; where we differ on purpose, a
test pins the difference and says why."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import quantus
import torch

from mnist_xai import data, decoy
from mnist_xai.attribution import attribute
from mnist_xai.quality.localisation import pointing_game, relevance_mass_accuracy, relevance_rank_accuracy
from mnist_xai.quality.randomisation import entropy_rise, fully_randomised, smooth_maps
from mnist_xai.quality.stats import spearman_rows

TOLERANCE = 1e-6


@pytest.fixture(scope="module")
def cued(trained_model, test_split):
    """32 test images with the cue in a random corner, the cue masks, and the model's predictions."""
    images, labels = test_split
    indices = data.stratified_indices(labels, 32, seed=3)
    corners = decoy.random_corners(len(indices), np.random.default_rng(3))
    x = data.normalize(decoy.with_cue(images[indices], corners, labels[indices], "grey"))
    with torch.no_grad():
        targets = trained_model(x).argmax(1)
    return trained_model.eval(), x, targets, decoy.cue_masks(corners)


def explain_with(method):
    """Quantus' explain_func protocol, backed by our attribute()."""

    def explain(model, inputs, targets, **_):
        maps = attribute(method, model, torch.as_tensor(inputs, dtype=torch.float32), torch.as_tensor(targets))
        return maps.numpy()[:, None]

    return explain


def quantus_call(metric, model, x, targets, maps, masks=None, method="saliency", **extra):
    return np.asarray(metric(model=model, x_batch=x.numpy(), y_batch=targets.numpy(),
                             a_batch=None if maps is None else maps[:, None],
                             s_batch=None if masks is None else masks[:, None], explain_func=explain_with(method),
                             channel_first=True, device="cpu", **extra), dtype=np.float64)


# --- ground truth ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["saliency", "gradcam", "smoothgrad_sq"])
def test_mass_accuracy_matches_quantus_on_non_negative_maps(cued, method):
    model, x, t, masks = cued
    maps = attribute(method, model, x, t, **({"n_samples": 8} if method == "smoothgrad_sq" else {})).numpy()
    theirs = quantus_call(quantus.RelevanceMassAccuracy(disable_warnings=True), model, x, t, maps, masks)
    assert np.abs(relevance_mass_accuracy(maps, masks) - theirs).max() <= TOLERANCE


def test_mass_accuracy_counts_positive_attribution_only_where_quantus_sums_the_raw_map(cued):
    """Pinned difference: Arras et al. define mass accuracy on positive relevance; Quantus (abs=False) sums the
    raw map, negatives included, so a signed map's ratio can leave [0, 1]. Ours equals Quantus run on the
    map's positive part."""
    model, x, t, masks = cued
    maps = attribute("input_x_gradient", model, x, t).numpy()
    assert (maps < 0).any()
    ours = relevance_mass_accuracy(maps, masks)
    positive = quantus_call(quantus.RelevanceMassAccuracy(disable_warnings=True), model, x, t,
                            np.clip(maps, 0, None), masks)
    raw = quantus_call(quantus.RelevanceMassAccuracy(disable_warnings=True), model, x, t, maps, masks)
    assert np.abs(ours - positive).max() <= TOLERANCE
    assert np.abs(ours - raw).max() > 1e-3


def test_rank_accuracy_and_pointing_game_match_quantus_when_there_are_no_ties(cued):
    model, x, t, masks = cued
    maps = attribute("saliency", model, x, t).numpy()
    flat = np.sort(maps.reshape(len(maps), -1), axis=1)[:, ::-1]
    assert (flat[:, 15] > flat[:, 16]).all() and (flat[:, 0] > flat[:, 1]).all()  # no tie decides anything
    rank = quantus_call(quantus.RelevanceRankAccuracy(disable_warnings=True), model, x, t, maps, masks)
    hits = quantus_call(quantus.PointingGame(disable_warnings=True), model, x, t, maps, masks)
    assert np.abs(relevance_rank_accuracy(maps, masks, seed=0) - rank).max() <= TOLERANCE
    assert np.array_equal(pointing_game(maps, masks, seed=0), hits)


@pytest.mark.parametrize("method", ["saliency", "gradcam", "integrated_gradients", "edge"])
def test_localisation_auc_matches_quantus(cued, method):
    """Quantus' AUC (scikit-learn's roc_curve and auc over the flattened map, mask as the label) on the raw map
    (normalise=False: scaling by the largest value could round two values into a tie). Ties count half in both,
    so signed maps, GradCAM's zeros and a model-free control all agree."""
    from mnist_xai.quality.localisation import localisation_auc

    model, x, t, masks = cued
    maps = attribute(method, model, x, t).numpy()
    theirs = quantus_call(quantus.AUC(normalise=False, disable_warnings=True), model, x, t, maps, masks,
                          method=method)
    ours = localisation_auc(maps, masks)
    assert np.ptp(ours) > 0.05
    assert np.abs(ours - theirs).max() <= TOLERANCE


def test_localisation_auc_of_a_map_with_no_information_is_one_half():
    from mnist_xai.quality.localisation import localisation_auc

    masks = decoy.cue_masks(np.arange(8) % 4)
    assert np.allclose(localisation_auc(np.ones((8, 28, 28)), masks), 0.5)
    assert np.allclose(localisation_auc(masks.astype(float), masks), 1.0)
    assert np.allclose(localisation_auc(-masks.astype(float), masks), 0.0)


def test_rank_accuracy_is_top_k_intersection_with_k_the_cue_area(cued):
    """Theiner et al.'s Top-K intersection (Quantus' TopKIntersection) with k = 16, the cue's area, is relevance
    rank accuracy: the share of the 16 largest values inside the 16-pixel cue. Without ties, ours equals both."""
    model, x, t, masks = cued
    assert (masks.reshape(len(masks), -1).sum(axis=1) == 16).all()
    saliency = attribute("saliency", model, x, t).numpy().astype(np.float64)  # with exact ties: jitter them apart
    rng = np.random.default_rng(0)
    top = saliency.max(axis=(1, 2), keepdims=True)
    # this model ignores the cue: lift it, more or less, so that the share inside varies from image to image
    maps = saliency + masks * rng.uniform(0, 1, (len(x), 1, 1)) * top + rng.uniform(0, 1e-6, saliency.shape) * top
    flat = np.sort(maps.reshape(len(maps), -1), axis=1)[:, ::-1]
    assert (flat[:, 15] > flat[:, 16]).all()
    theirs = quantus_call(quantus.TopKIntersection(k=16, normalise=False, disable_warnings=True), model, x, t,
                          maps, masks)
    ours = relevance_rank_accuracy(maps, masks, seed=0)
    assert np.ptp(ours) > 0.05
    assert np.abs(ours - theirs).max() <= TOLERANCE


def test_ties_are_broken_at_random_where_quantus_favours_the_cue():
    """Pinned difference: a map that says nothing (constant) must score chance. Quantus' pointing game counts
    a hit when any tied maximum lies in the mask, so a constant map always hits; its rank accuracy takes the
    first pixels argsort returns, so a top-left cue is found far above chance. Ours takes ties in a seeded
    random order: chance, 16/784. (Quantus refuses a constant batch at its front door, so its per-batch rule
    is called directly.)"""
    masks = decoy.cue_masks(np.zeros(1000, dtype=int))  # every cue top-left
    constant = np.ones((1000, 28, 28), dtype=np.float32)
    hits = np.asarray(quantus.PointingGame(disable_warnings=True).evaluate_batch(
        a_batch=constant[:, None], s_batch=masks[:, None]), dtype=float)
    rank = np.asarray(quantus.RelevanceRankAccuracy(disable_warnings=True).evaluate_batch(
        a_batch=constant[:, None], s_batch=masks[:, None]), dtype=float)
    assert hits.mean() == 1.0 and rank.mean() > 0.2
    chance = 16 / 784
    assert abs(pointing_game(constant, masks, seed=0).mean() - chance) < 0.015
    assert abs(relevance_rank_accuracy(constant, masks, seed=0).mean() - chance) < 0.01


# --- randomisation -----------------------------------------------------------------------------------------

def test_mprt_after_full_randomisation_matches_quantus(cued):
    """Quantus MPRT, cascading from the top as Adebayo et al., re-initialising each layer after
    torch.manual_seed(seed + 1) as we do: the same network, the same maps, the same Spearman rho."""
    model, x, t, _ = cued
    maps = attribute("saliency", model, x, t).numpy()
    theirs = quantus_call(quantus.MPRT(layer_order="top_down", seed=5, return_last_correlation=True,
                                       disable_warnings=True, display_progressbar=False), model, x, t, maps)
    randomised = fully_randomised(model, seed=5, independent=False)
    ours = spearman_rows(np.abs(attribute("saliency", randomised, x, t).numpy()), np.abs(maps))
    assert np.ptp(theirs) > 0.05  # per-image values that vary: a real comparison
    assert np.abs(ours - theirs).max() <= TOLERANCE


def test_randomised_layers_are_independent_where_quantus_ties_them():
    """Where we depart from Quantus on purpose: Quantus seeds every layer with the same torch.manual_seed(seed + 1), so
    two layers of one shape come out identical; ours draws each layer from its own seed."""
    from torch import nn

    twins = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8))
    quantus_like = fully_randomised(twins, seed=5, independent=False)
    assert torch.equal(quantus_like[0].weight, quantus_like[2].weight)
    ours = fully_randomised(twins, seed=5)
    assert not torch.equal(ours[0].weight, ours[2].weight)
    assert torch.equal(ours[0].weight, fully_randomised(twins, seed=5)[0].weight)  # still seeded
    assert not torch.equal(ours[0].weight, twins[0].weight)


def test_efficient_mprt_matches_quantus(cued):
    model, x, t, _ = cued
    maps = attribute("saliency", model, x, t).numpy()
    theirs = quantus_call(quantus.EfficientMPRT(layer_order="top_down", seed=5, complexity_func_kwargs={"n_bins": 100},
                                                disable_warnings=True, display_progressbar=False),
                          model, x, t, maps)
    randomised = fully_randomised(model, seed=5, independent=False)
    ours = entropy_rise(maps, attribute("saliency", randomised, x, t).numpy(), bins=100)
    assert np.ptp(theirs) > 0.05
    assert np.abs(ours - theirs).max() <= TOLERANCE


class SmoothMPRTWithOurMaps(quantus.SmoothMPRT):
    """Quantus' SmoothMPRT calls quantus.explain (Captum) for the noisy copies, not the given explain_func;
    this routes them to ours, keeping Quantus' own noise, order and averaging."""

    def explain_smooth_batch_numpy(self, model, x_batch, y_batch, std, **kwargs):
        total = None
        for n in range(self.nr_samples):
            epsilon = np.zeros_like(x_batch) if n == self.nr_samples - 1 else np.random.randn(*x_batch.shape) * std
            maps = self.explain_func(model=model, inputs=x_batch + epsilon, targets=y_batch, **kwargs)
            total = maps / self.nr_samples if total is None else total + maps / self.nr_samples
        return total


def test_smooth_mprt_matches_quantus_given_its_noise(cued):
    """Same NumPy noise stream: Quantus draws it for the reference maps, once more for the trained model's
    'original' score, then for the randomised model; we draw ours from the same seeded stream in that order."""
    model, x, t, _ = cued
    x, t = x[:8], t[:8]
    np.random.seed(11)
    theirs = quantus_call(SmoothMPRTWithOurMaps(nr_samples=4, noise_magnitude=0.1, layer_order="top_down", seed=5,
                                                skip_layers=True, return_last_correlation=True,
                                                disable_warnings=True, display_progressbar=False),
                          copy.deepcopy(model), x, t, None)
    rng = np.random.RandomState(11)
    arguments = {"n_samples": 4, "noise_magnitude": 0.1, "rng": rng}
    reference = smooth_maps(model, "saliency", {}, x, t, **arguments)
    smooth_maps(model, "saliency", {}, x, t, **arguments)  # Quantus' "original" score consumes these draws
    randomised = smooth_maps(fully_randomised(model, seed=5, independent=False), "saliency", {}, x, t, **arguments)
    ours = spearman_rows(np.abs(randomised), np.abs(reference))
    assert np.ptp(theirs) > 0.05
    assert np.abs(ours - theirs).max() <= TOLERANCE



def test_our_smooth_mprt_draws_the_same_noise_for_both_models_where_quantus_draws_anew(cued):
    """A deliberate difference. Quantus draws fresh noise for each model's smoothed maps, so even an explainer
    that ignores the model scores rho < 1 between them; we give both models the same noisy copies, so only the
    model differs, and the edge map scores exactly 1, as a model-free control must."""
    model, x, t, _ = cued
    x, t = x[:8], t[:8]
    randomised = fully_randomised(model, seed=5, independent=False)
    arguments = {"n_samples": 4, "noise_magnitude": 0.1}
    ours = [smooth_maps(m, "edge", {}, x, t, rng=np.random.RandomState(11), **arguments) for m in (model, randomised)]
    assert np.all(spearman_rows(np.abs(ours[1]), np.abs(ours[0])) == 1.0)
    stream = np.random.RandomState(11)  # Quantus' way: one stream, consumed model after model
    theirs = [smooth_maps(m, "edge", {}, x, t, rng=stream, **arguments) for m in (model, randomised)]
    assert np.all(spearman_rows(np.abs(theirs[1]), np.abs(theirs[0])) < 0.999)


def test_the_pointing_tolerance_counts_hits_next_to_the_cue_that_quantus_does_not(cued):
    """Zhang et al.'s tolerance (2 px here): a map peaking on the pixel just outside the patch misses in Quantus'
    PointingGame (and in ours with no tolerance) and hits within it."""
    model, x, t, masks = cued
    maps = np.zeros(masks.shape, dtype=np.float32)
    for i, mask in enumerate(masks):
        rows, cols = np.nonzero(mask)
        maps[i, rows.max() + 1 if rows.max() < 27 else rows.min() - 1, cols[0]] = 1.0  # one pixel off the patch
    theirs = quantus_call(quantus.PointingGame(disable_warnings=True), model, x, t, maps, masks)
    assert theirs.tolist() == [0.0] * len(masks)
    assert pointing_game(maps, masks, seed=0).tolist() == [0.0] * len(masks)
    assert pointing_game(maps, masks, seed=0, tolerance=2).tolist() == [1.0] * len(masks)


# --- Random Logit -------------------------------------------------------------------------------------------

def _two_d_ssim(a, b, batched=False, **kwargs):
    """Quantus' own SSIM, given each map back as a 28 x 28 image (Quantus flattens it to one row)."""
    return quantus.similarity_func.ssim(a.reshape(-1, 28, 28), b.reshape(-1, 28, 28), batched=True)


@pytest.mark.parametrize("method", ["saliency", "gradcam", "eigencam"])
def test_random_logit_matches_quantus_with_a_two_d_ssim_and_maps_scaled_one_by_one(cued, method):
    """Quantus draws the other class the same way (the same seed gives the same classes); with its SSIM applied to
    the 2-D maps and normalise_by_max per image instead of over the whole batch, it is ours."""
    from mnist_xai.quality.randomisation import random_logit

    model, x, t, _ = cued
    maps = attribute(method, model, x, t).numpy()
    ours, _ = random_logit(model, method, {}, x, t, maps, seed=5)
    metric = quantus.RandomLogit(num_classes=10, seed=5, similarity_func=_two_d_ssim, disable_warnings=True,
                                 normalise_func_kwargs={"normalise_axes": (1, 2, 3)})
    theirs = quantus_call(metric, model, x, t, maps, method=method, batch_size=len(x))
    keep = ~np.isnan(ours)
    assert keep.sum() >= len(x) // 2
    assert np.abs(ours[keep] - theirs[keep]).max() <= TOLERANCE


def test_random_logit_catches_a_map_that_ignores_the_class(cued):
    """EigenCAM never looks at the class: its two maps are the same (SSIM 1). GradCAM's differ. Quantus' 1-D
    SSIM of the flattened maps, its default, is another number: the difference is pinned."""
    from mnist_xai.quality.randomisation import random_logit

    model, x, t, _ = cued
    eigen, _ = random_logit(model, "eigencam", {}, x, t, attribute("eigencam", model, x, t).numpy(), seed=5)
    grad, _ = random_logit(model, "gradcam", {}, x, t, attribute("gradcam", model, x, t).numpy(), seed=5)
    assert np.nanmin(eigen) > 1 - 1e-9
    assert np.nanmean(grad) < 0.9
    flat = quantus_call(quantus.RandomLogit(num_classes=10, seed=5, disable_warnings=True), model, x, t,
                        attribute("gradcam", model, x, t).numpy(), method="gradcam", batch_size=len(x))
    assert np.nanmax(np.abs(flat - grad)) > 0.01


# --- robustness and complexity -------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["saliency", "gradcam", "integrated_gradients"])
def test_sparseness_matches_quantus_up_to_its_offset(cued, method):
    """Quantus' Sparseness (abs, normalise by max, Gini) adds 1e-7 to every value before sorting; on maps scaled to
    a largest value of 1 that moves the index by at most ~1e-5 (most of MNIST's map is near 0)."""
    from mnist_xai.quality.complexity import gini_sparseness

    model, x, t, _ = cued
    maps = attribute(method, model, x, t).numpy()
    metric = quantus.Sparseness(disable_warnings=True, normalise_func_kwargs={"normalise_axes": (1, 2, 3)})
    theirs = quantus_call(metric, model, x, t, maps, method=method, batch_size=len(x))
    assert np.abs(gini_sparseness(maps) - theirs).max() <= 1e-4


@pytest.mark.parametrize("method", ["saliency", "gradcam"])
def test_max_sensitivity_matches_quantus_given_its_noise(cued, method):
    """Quantus' MaxSensitivity with each map scaled by its own largest |value| (normalise=True, per image: Quantus
    0.6 defaults to normalise=False, and its normalise_by_max to one maximum for the whole batch), Frobenius norms,
    and the same uniform noise (fed to it as its perturb_func): ours. One pinned difference: where a perturbed map
    vanishes (GradCAM's ReLU can zero it all, on a knife edge of float rounding that some CPUs and thread counts
    reach), ours counts the change as 1 (the whole map is gone) and Quantus divides 0 by 0 and skips that
    perturbation (np.nanmax)."""
    from mnist_xai.quality.robustness import max_sensitivity

    model, x, t, _ = cued
    maps = attribute(method, model, x, t).numpy()
    samples, radius, seed = 5, 0.05, 3
    ours = max_sensitivity(model, method, {}, x, t, maps, n_perturbations=samples, radius=radius, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    spread = (x.flatten(1).amax(1) - x.flatten(1).amin(1)).view(-1, 1, 1, 1)
    noises = [((torch.rand(x.shape, generator=generator) * 2 - 1) * radius * spread).numpy() for _ in range(samples)]
    vanished = np.any([(attribute(method, model, x + torch.as_tensor(noise), t).flatten(1) == 0).all(dim=1).numpy()
                       for noise in noises], axis=0)
    draws = iter(noises)

    def perturb(arr, indices, **_):
        return arr + next(draws).reshape(arr.shape)

    metric = quantus.MaxSensitivity(nr_samples=samples, perturb_func=perturb, normalise=True,
                                    normalise_func_kwargs={"normalise_axes": (1, 2, 3)},
                                    return_nan_when_prediction_changes=False, disable_warnings=True)
    theirs = quantus_call(metric, model, x, t, maps, method=method, batch_size=len(x))
    assert np.abs(ours - theirs)[~vanished].max() <= 1e-5
    assert (ours[vanished] >= 1.0 - 1e-6).all() and (theirs[vanished] <= ours[vanished] + 1e-5).all()



# --- faithfulness correlation -------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["saliency", "integrated_gradients"])
def test_faithfulness_correlation_matches_quantus_given_its_subsets(cued, method):
    """Quantus draws the pixel subsets from NumPy's global generator, run by run and image by image; seeded the same,
    it draws ours. Black is the normalised pixel value 0 (Quantus' "black" is each image's minimum: the same on
    MNIST, where nearly every image has a black pixel; given here as the value)."""
    from mnist_xai.data import BLACK
    from mnist_xai.quality.faithfulness import faithfulness_correlation

    model, x, t, _ = cued
    maps = attribute(method, model, x, t).numpy()
    ours = faithfulness_correlation(model, x, maps, t.numpy(), runs=20, subset=28, seed=4)
    np.random.seed(4)
    metric = quantus.FaithfulnessCorrelation(nr_runs=20, subset_size=28, perturb_baseline=BLACK, normalise=False,
                                             return_aggregate=False, disable_warnings=True)
    theirs = quantus_call(metric, model, x, t, maps, method=method, batch_size=len(x))
    assert np.abs(ours - theirs).max() <= 1e-4


# --- deletion and insertion ---------------------------------------------------------------------------------

def _ranked(maps, seed):
    """The map replaced by its relevance order (ours: ties in a seeded random order) as strictly decreasing values,
    so that Quantus' argsort of it visits the pixels in exactly our order."""
    from mnist_xai.quality.faithfulness import relevance_order

    order = relevance_order(maps, seed)
    ranked = np.empty(order.shape, dtype=np.float32)
    np.put_along_axis(ranked, order, -np.arange(order.shape[1], dtype=np.float32)[None], axis=1)
    return ranked.reshape(maps.shape)


def _insert_clean(arr, indices, clean, **_):
    """Quantus' perturbation protocol run backwards: put the clean image's pixels back at `indices`."""
    inserted = arr.copy()
    rows = np.arange(len(arr))[:, None]
    inserted[rows, indices] = clean.reshape(len(arr), -1)[rows, indices]
    return inserted


@pytest.mark.parametrize("method", ["saliency", "gradcam"])
def test_deletion_and_insertion_curves_match_quantus_pixel_flipping(cued, method):
    """Deletion is Quantus' PixelFlipping (Bach et al. 2015) with 28 pixels a step, black as the baseline, raw maps
    (normalise=False) and softmax scores of the class predicted on the clean image. Insertion is the same engine
    started on the blurred image with a perturbation that puts the clean pixels back. Given our order (ties in a
    seeded random order, baked into the map), every point of both curves matches.

    Pinned difference, the area: Quantus' curve starts after the first step (not at the clean image) and its AUC
    is np.trapz with dx = 1 over those 28 points (and return_auc_per_sample fails under NumPy 2, which has no
    np.trapz); ours includes the clean (deletion) or start (insertion) point and is normalised to [0, 1] fractions:
    ours = trapezoid([start, *theirs]) / 28."""
    from mnist_xai.attribution.gradients import gaussian_blur
    from mnist_xai.data import BLACK
    from mnist_xai.quality.faithfulness import auc, deletion_insertion

    model, x, _, _ = cued
    with torch.no_grad():
        predicted = model(x).argmax(1)
    maps = attribute(method, model, x, predicted).numpy()
    ours = deletion_insertion(model, x, maps, predicted, step=28, insertion_start="blur", blur_sigma=5.0, seed=2)
    ranked = _ranked(maps, seed=2)
    common = {"features_in_step": 28, "normalise": False, "disable_warnings": True}
    deletion = quantus_call(quantus.PixelFlipping(perturb_baseline=BLACK, **common), model, x, predicted, ranked,
                            method=method, batch_size=len(x), softmax=True)
    start = gaussian_blur(x, 5.0)
    insertion = quantus_call(quantus.PixelFlipping(perturb_func=_insert_clean, perturb_func_kwargs={"clean": x.numpy()},
                                                   **common), model, start, predicted, ranked, method=method,
                             batch_size=len(x), softmax=True)
    assert deletion.shape == insertion.shape == (len(x), 28)
    assert np.abs(ours.deletion[:, 1:] - deletion).max() <= 1e-5
    assert np.abs(ours.insertion[:, 1:] - insertion).max() <= 1e-5
    with_start = np.concatenate([ours.deletion[:, :1], deletion], axis=1)
    assert np.abs(ours.deletion_auc - np.trapezoid(with_start, axis=1) / 28).max() <= 1e-5
    assert np.abs(ours.deletion_auc - auc(ours.fractions, with_start)).max() <= 1e-5


def test_deletion_breaks_ties_at_random_where_quantus_takes_argsort_order(cued):
    """Pinned difference: GradCAM's map is 0 on much of the image; Quantus removes those tied pixels in whatever
    order argsort gives (top-left first), ours in a seeded random order, so the curves part once the ties are
    reached."""
    from mnist_xai.data import BLACK
    from mnist_xai.quality.faithfulness import deletion_insertion

    model, x, _, _ = cued
    with torch.no_grad():
        predicted = model(x).argmax(1)
    maps = attribute("gradcam", model, x, predicted).numpy()
    assert ((maps.reshape(len(maps), -1) == 0).sum(axis=1) > 100).any()
    ours = deletion_insertion(model, x, maps, predicted, step=28, insertion_start="blur", blur_sigma=5.0, seed=2)
    raw = quantus_call(quantus.PixelFlipping(features_in_step=28, perturb_baseline=BLACK, normalise=False,
                                             disable_warnings=True), model, x, predicted, maps, method="gradcam",
                       batch_size=len(x), softmax=True)
    assert np.abs(ours.deletion[:, 1:] - raw).max() > 1e-3


# --- completeness -------------------------------------------------------------------------------------------

def _completeness(model, x, t, maps, method):
    """Quantus' Completeness from a black baseline on the raw map, and the output change it compares with (caught
    through its output_func)."""
    from mnist_xai.data import BLACK

    changes = []

    def catch(change):
        changes.append(np.asarray(change, dtype=np.float64))
        return change

    metric = quantus.Completeness(perturb_baseline=BLACK, normalise=False, output_func=catch, disable_warnings=True)
    holds = quantus_call(metric, model, x, t, maps, method=method, batch_size=len(x))
    return holds.astype(bool), np.concatenate(changes)


@pytest.mark.parametrize("method", ["integrated_gradients", "saliency"])
def test_completeness_gap_matches_quantus(cued, method):
    """The same output change f(x) - f(black) of the explained logit as Quantus' Completeness, so the same gap; and
    the same answer to Quantus' yes/no question at its tolerance, which is none (it tests sum == change exactly):
    no real map passes it, a map built to carry exactly the change does, and ours scores that map 0 (to float32
    rounding of the sum). Pinned difference: ours is the continuous gap, relative to |change|, so that an interval
    can say how far from complete a method is (Integrated Gradients with a finite path: a few per cent)."""
    from mnist_xai.quality.faithfulness import completeness_gap

    model, x, t, _ = cued
    maps = attribute(method, model, x, t).numpy()
    holds, change = _completeness(model, x, t, maps, method)
    ours = completeness_gap(model, x, maps, t.numpy())
    from_quantus = np.abs(maps.reshape(len(maps), -1).astype(np.float64).sum(axis=1) - change) / np.abs(change)
    assert np.abs(ours - from_quantus).max() <= 1e-5 * max(1.0, np.abs(from_quantus).max())
    assert not holds.any() and (ours > 1e-6).all()
    exact = np.zeros_like(maps)
    exact[:, 0, 0] = change.astype(np.float32)
    holds, _ = _completeness(model, x, t, exact, method)
    assert holds.all()
    assert (completeness_gap(model, x, exact, t.numpy()) <= 1e-6).all()


# --- ROAD ---------------------------------------------------------------------------------------------------

def test_linear_imputation_matches_quantus_noisy_linear_imputation_without_noise(cued):
    from quantus.functions.perturb_func import noisy_linear_imputation

    from mnist_xai.quality.faithfulness import linear_imputation, relevance_order

    _, x, _, _ = cued
    images = x[:6, 0].numpy()
    order = relevance_order(np.random.default_rng(0).random(images.shape), seed=0)
    for k in (1, 78, 400, 776):
        ours = linear_imputation(images, order[:, :k])
        for i, image in enumerate(images):
            theirs = noisy_linear_imputation(image[None], order[i, :k], noise=0.0)[0].reshape(-1)[order[i, :k]]
            assert np.abs(ours[i] - theirs).max() <= 1e-5


@pytest.mark.parametrize("method", ["saliency", "gradcam"])
def test_road_matches_quantus_given_its_noise(cued, method):
    """Quantus' ROAD (noisy linear imputation, noise 0.01, the explained class still predicted?) with our pixel order
    (baked into the map; LeRF as Quantus' MoRF of the negated map) and its NumPy noise seeded as ours: the same
    per-image answers at every share removed. Quantus returns only their mean over the images of its first batch
    (custom_postprocess reads evaluation_scores[0]), so the whole set is given as one batch and its
    evaluate_batch is read too."""
    from mnist_xai.quality.faithfulness import road

    model, x, t, _ = cued
    maps = attribute(method, model, x, t).numpy()
    ranked = _ranked(maps, seed=2)
    percentages = [10, 30, 50, 70, 90]
    for most_relevant_first, quantus_map in ((True, ranked), (False, -ranked)):
        ours = road(model, x, maps, t.numpy(), percentages=percentages, noise=0.01, seed=2,
                    most_relevant_first=most_relevant_first)
        metric = quantus.ROAD(percentages=percentages, noise=0.01, normalise=False, disable_warnings=True)
        np.random.seed(2)
        curve = metric(model=model, x_batch=x.numpy(), y_batch=t.numpy(), a_batch=quantus_map[:, None],
                       channel_first=True, device="cpu", batch_size=len(x))
        np.random.seed(2)
        model_interface = quantus.helpers.model.pytorch_model.PyTorchModel(model, channel_first=True, softmax=True,
                                                                          device="cpu")
        per_image = metric.evaluate_batch(model=model_interface, x_batch=x.numpy(), y_batch=t.numpy(),
                                          a_batch=quantus_map[:, None])[0]
        assert np.array_equal(ours, per_image)
        assert np.abs(ours.mean(axis=0) - np.array([curve[p] for p in percentages])).max() <= 1e-12
    assert ours.mean() > 0.3  # LeRF: the least relevant pixels removed, the class mostly kept


# --- infidelity ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["saliency", "integrated_gradients", "edge"])
def test_infidelity_matches_captum_given_our_squares(cued, method):
    """Captum's infidelity with normalize=True (the best scale β, as Yeh et al.'s own code) and our perturbations:
    the same random squares set to black, the square itself as I (binary, Captum's multiply_by_inputs convention
    for maps of contributions), handed over image by image in Captum's repeat_interleave order."""
    from captum.metrics import infidelity as captum_infidelity

    from mnist_xai.data import BLACK
    from mnist_xai.quality.faithfulness import INFIDELITY_SQUARE, infidelity, square_masks

    model, x, t, _ = cued
    maps = attribute(method, model, x, t).numpy()
    samples, seed = 12, 7
    ours = infidelity(model, x, maps, t.numpy(), samples=samples, seed=seed)
    masks = torch.as_tensor(square_masks(len(x), samples, 28, INFIDELITY_SQUARE, np.random.RandomState(seed)))
    masks = masks.reshape(len(x) * samples, 1, 28, 28)

    def perturb(inputs):
        return masks.float(), torch.where(masks, torch.tensor(BLACK), inputs)

    theirs = captum_infidelity(model, perturb, x, torch.as_tensor(maps)[:, None], target=t,
                               n_perturb_samples=samples, normalize=True).double().numpy()
    assert np.ptp(ours) > 0.01
    assert np.abs(ours - theirs).max() <= 1e-5 * max(1.0, np.abs(theirs).max())


def test_infidelity_formula_matches_quantus_given_its_perturbations(cued):
    """Quantus' Infidelity (default: 4 x 4 blocks set to black one after another, cumulatively, in raster order,
    the same 49 steps in each of its n_perturb_samples repeats; I = x - x̃, the map multiplied by the change; no
    scale fitted): given the perturbed inputs it produced (caught from its perturb_func), our formula with its
    conventions (normalize=False, I = x - x̃) gives its numbers. Pinned differences, as in the score's definition:
    ours draws squares at random and removes one at a time (Yeh et al.'s square removal), reads I as the binary
    square and fits the map's scale."""
    from quantus.functions.perturb_func import batch_baseline_replacement_by_indices

    from mnist_xai.data import BLACK
    from mnist_xai.quality.faithfulness import infidelity_of

    model, x, t, _ = cued
    maps = attribute("saliency", model, x, t).numpy()
    seen = []

    def perturb(arr, indices, **kwargs):
        out = batch_baseline_replacement_by_indices(arr, indices, **kwargs)
        seen.append(out.copy())
        return out

    metric = quantus.Infidelity(perturb_func=perturb, perturb_baseline=BLACK, n_perturb_samples=1,
                                disable_warnings=True)
    theirs = quantus_call(metric, model, x, t, maps, batch_size=len(x))
    assert len(seen) == 49
    perturbed = torch.as_tensor(np.stack(seen, axis=1)).reshape(len(x), 49, 1, 28, 28)
    weights = (x[:, None] - perturbed).numpy()
    ours = infidelity_of(model, x, maps, t.numpy(), perturbed, weights, normalize=False)
    assert np.abs(ours - theirs).max() <= 1e-5 * max(1.0, np.abs(theirs).max())


# --- relative stability -------------------------------------------------------------------------------------

def _our_noise(x, samples, radius, seed):
    """The uniform noise stability() draws, as a Quantus perturb_func that hands it out sample by sample."""
    generator = torch.Generator().manual_seed(seed)
    spread = (x.flatten(1).amax(1) - x.flatten(1).amin(1)).view(-1, 1, 1, 1)
    draws = iter([((torch.rand(x.shape, generator=generator) * 2 - 1) * radius * spread).numpy()
                  for _ in range(samples)])

    def perturb(arr, indices, **_):
        return arr + next(draws).reshape(arr.shape)

    return perturb


def _relative_stability(model, x, t, maps, method, samples, radius, seed):
    theirs = {}
    for key, metric in (("ris", quantus.RelativeInputStability), ("ros", quantus.RelativeOutputStability)):
        theirs[key] = quantus_call(metric(nr_samples=samples, perturb_func=_our_noise(x, samples, radius, seed),
                                          disable_warnings=True), model, x, t, maps, method=method,
                                   batch_size=len(x))
    return theirs


@pytest.mark.parametrize("method", ["saliency", "integrated_gradients"])
def test_relative_stability_matches_quantus_given_its_noise(cued, method):
    """Quantus' RelativeInputStability and RelativeOutputStability on the raw maps (their defaults: no abs, no
    normalisation, eps 1e-6), fed our noise as their perturb_func: log10 of theirs is ours, on every image whose
    prediction no perturbation changed."""
    from mnist_xai.quality.robustness import stability

    model, x, t, _ = cued
    maps = attribute(method, model, x, t).numpy()
    samples, radius, seed = 4, 0.05, 3
    ours = stability(model, method, {}, x, t, maps, n_perturbations=samples, radius=radius, seed=seed)
    theirs = _relative_stability(model, x, t, maps, method, samples, radius, seed)
    for key in ("ris", "ros"):
        keep = ~np.isnan(theirs[key])
        assert keep.sum() >= len(x) - 2
        assert np.abs(ours[key][keep] - np.log10(theirs[key][keep])).max() <= 1e-5
        assert np.ptp(ours[key]) > 0.1


def test_relative_stability_keeps_the_perturbations_that_keep_the_class_where_quantus_drops_the_image(cued):
    """Pinned difference: Agarwal et al. take the max over perturbations that leave the prediction unchanged. Quantus
    sets a changed one to NaN and then takes np.max, so one changed perturbation out of its 200 loses the whole
    image; ours takes the max over the others (NaN only when every perturbation changed the class)."""
    from mnist_xai.quality.robustness import stability

    model, x, t, _ = cued
    maps = attribute("saliency", model, x, t).numpy()
    samples, radius, seed = 4, 0.6, 3
    ours = stability(model, "saliency", {}, x, t, maps, n_perturbations=samples, radius=radius, seed=seed)
    theirs = _relative_stability(model, x, t, maps, "saliency", samples, radius, seed)
    partly = np.isnan(theirs["ris"]) & ~np.isnan(ours["ris"])
    assert partly.any()
    agree = ~np.isnan(theirs["ris"])
    assert np.abs(ours["ris"][agree] - np.log10(theirs["ris"][agree])).max() <= 1e-5
