"""Each quality metric against its definition, on hand-made inputs and on the real trained model."""

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from mnist_xai.attribution import attribute
from mnist_xai.quality.complexity import gini_sparseness
from mnist_xai.quality.faithfulness import auc, deletion_insertion, relevance_order
from mnist_xai.quality.randomisation import cascading_randomisation, parameter_layers
from mnist_xai.quality.robustness import max_sensitivity
from mnist_xai.quality.stats import average_ranks, spearman_rows


def test_spearman_matches_scipy_with_ties():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 5, size=(6, 50)).astype(float)  # many ties
    b = a + rng.normal(size=a.shape)
    ours = spearman_rows(a, b)
    assert np.allclose(ours, [spearmanr(x, y).statistic for x, y in zip(a, b, strict=True)])
    assert np.array_equal(average_ranks(np.array([[3.0, 1.0, 3.0, 2.0]])), [[3.5, 1.0, 3.5, 2.0]])


def test_constant_map_scores_zero_not_nan():
    assert spearman_rows(np.zeros((1, 10)), np.arange(10.0)[None]).tolist() == [0.0]


def test_gini_sparseness_extremes():
    one_hot = np.zeros((1, 28, 28))
    one_hot[0, 3, 4] = 5.0
    assert gini_sparseness(np.ones((1, 28, 28)))[0] == pytest.approx(0.0)
    assert gini_sparseness(one_hot)[0] == pytest.approx(1 - 1 / 784)
    assert gini_sparseness(np.zeros((1, 28, 28)))[0] == 0.0
    assert gini_sparseness(-one_hot)[0] == gini_sparseness(one_hot)[0]  # of |map|


def test_auc_is_the_normalised_trapezoid():
    fractions = np.linspace(0, 1, 5)
    assert auc(fractions, np.ones((1, 5)))[0] == pytest.approx(1.0)
    assert auc(fractions, fractions[None])[0] == pytest.approx(0.5)


def test_relevance_order_breaks_ties_randomly_but_reproducibly():
    maps = np.zeros((2, 4, 4))
    maps[:, 0, 0] = 1.0
    first, again = relevance_order(maps, seed=3), relevance_order(maps, seed=3)
    assert np.array_equal(first, again)
    assert (first[:, 0] == 0).all()  # the one relevant pixel leads
    assert not np.array_equal(first[:, 1:], np.arange(1, 16)[None].repeat(2, 0))  # not row-major
    assert not np.array_equal(first[0], relevance_order(maps, seed=4)[0])


def test_deletion_of_relevant_pixels_hurts_more_than_of_random_ones(trained_model, explain_inputs):
    x, labels = explain_inputs
    with torch.no_grad():
        predicted = trained_model(x).argmax(1)
    occlusion = attribute("occlusion", trained_model, x, predicted).numpy()
    noise = attribute("random", trained_model, x, predicted).numpy()
    settings = {"step": 28, "insertion_start": "blur", "blur_sigma": 5.0, "seed": 0}
    good = deletion_insertion(trained_model, x, occlusion, predicted, **settings)
    bad = deletion_insertion(trained_model, x, noise, predicted, **settings)
    assert good.deletion.shape == (len(x), 29) and good.fractions[[0, -1]].tolist() == [0.0, 1.0]
    with torch.no_grad():
        clean = trained_model(x).softmax(1).gather(1, predicted[:, None]).squeeze(1).numpy()
    assert np.allclose(good.deletion[:, 0], clean, atol=1e-5)  # nothing removed yet
    assert np.allclose(good.insertion[:, -1], clean, atol=1e-5)  # everything inserted
    assert good.deletion_auc.mean() < bad.deletion_auc.mean() - 0.1
    assert good.insertion_auc.mean() > bad.insertion_auc.mean() + 0.1


def test_cascading_randomisation_goes_top_down_and_leaves_the_model_alone(trained_model, explain_inputs):
    x, labels = explain_inputs
    x, targets = x[:16], torch.as_tensor(labels[:16])
    before = {k: v.clone() for k, v in trained_model.state_dict().items()}
    maps = attribute("saliency", trained_model, x, targets).numpy()
    curve = cascading_randomisation(trained_model, "saliency", {}, x, targets, maps, seed=0)
    assert curve.final_maps.shape == (16, 28, 28)
    assert parameter_layers(trained_model) == ["fc2", "fc1", "conv2", "conv1"]
    assert curve.layers == ["fc2", "fc1", "conv2", "conv1"] and curve.correlation[0] == 1.0
    assert curve.correlation.shape == (5,) and curve.examples.shape == (5, 4, 28, 28)
    assert curve.correlation[-1] < 0.9
    assert all(torch.equal(before[k], v) for k, v in trained_model.state_dict().items())
    again = cascading_randomisation(trained_model, "saliency", {}, x, targets, maps, seed=0)
    assert np.array_equal(curve.correlation, again.correlation)  # seeded


def test_random_control_is_redrawn_so_it_scores_chance(trained_model, explain_inputs):
    x, labels = explain_inputs
    x, targets = x[:16], torch.as_tensor(labels[:16])
    maps = attribute("random", trained_model, x, targets, seed=0).numpy()
    curve = cascading_randomisation(trained_model, "random", {"seed": 0, "batch_size": 128}, x, targets, maps, seed=0)
    assert abs(curve.correlation[1:]).max() < 0.1


def test_max_sensitivity_is_zero_without_noise_and_scale_free(trained_model, explain_inputs):
    x, labels = explain_inputs
    x, targets = x[:8], torch.as_tensor(labels[:8])
    maps = attribute("gradcam", trained_model, x, targets).numpy()
    still = max_sensitivity(trained_model, "gradcam", {}, x, targets, maps, n_perturbations=2, radius=0.0, seed=0)
    assert np.allclose(still, 0, atol=1e-5)
    shaken = max_sensitivity(trained_model, "gradcam", {}, x, targets, maps, n_perturbations=3, radius=0.1, seed=0)
    scaled = max_sensitivity(trained_model, "gradcam", {}, x, targets, maps * 7, n_perturbations=3, radius=0.1,
                             seed=0)
    assert (shaken > 0).all() and np.allclose(shaken, scaled, atol=1e-5)


def test_road_infidelity_and_completeness_tell_the_oracle_from_noise(trained_model, explain_inputs):
    """On the fixture model: removing (imputing) the oracle's most relevant pixels changes the decision far more
    often than removing random ones, its sums predict the drops better (infidelity), and Integrated Gradients is
    nearly complete while a map on another scale is not."""
    from mnist_xai.quality.faithfulness import completeness_gap, infidelity, road, road_percentages

    x, _ = explain_inputs
    x = x[:32]
    with torch.no_grad():
        predicted = trained_model(x).argmax(1)
    targets = predicted.numpy()
    oracle = attribute("oracle", trained_model, x, predicted).numpy()
    noise = attribute("random", trained_model, x, predicted, seed=0).numpy()
    settings = {"percentages": road_percentages(5), "noise": 0.01, "seed": 0}
    assert road(trained_model, x, oracle, targets, **settings).mean() < \
        road(trained_model, x, noise, targets, **settings).mean() - 0.3
    assert infidelity(trained_model, x, oracle, targets, samples=16, seed=0).mean() < \
        0.6 * infidelity(trained_model, x, noise, targets, samples=16, seed=0).mean()
    scaled = infidelity(trained_model, x, oracle * 7, targets, samples=16, seed=0)
    assert np.allclose(scaled, infidelity(trained_model, x, oracle, targets, samples=16, seed=0))  # scale-free
    ig = attribute("integrated_gradients", trained_model, x, predicted).numpy()
    assert np.median(completeness_gap(trained_model, x, ig, targets)) < 0.05
    assert np.median(completeness_gap(trained_model, x, noise, targets)) > 1
