"""The controls that calibrate every verdict: the model-free explainers really ignore the model, and the oracle is
the model's own intervention map, checked against brute force and against Captum's Occlusion."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from captum.attr import Occlusion

from mnist_xai import data, decoy
from mnist_xai.attribution import attribute
from mnist_xai.attribution.core import target_scores
from mnist_xai.attribution.perturbation import window_drops
from mnist_xai.model import commuted
from mnist_xai.quality.localisation import pointing_game


@pytest.fixture(scope="module")
def inputs(explain_inputs):
    x, labels = explain_inputs
    return x[:24], torch.as_tensor(labels[:24])


@pytest.mark.parametrize("method", ["edge", "brightness"])
def test_a_model_free_explainer_gives_the_same_map_whatever_the_model(method, trained_model, trained_resnet, inputs):
    x, labels = inputs
    assert torch.equal(attribute(method, trained_model, x, labels), attribute(method, trained_resnet, x, labels))


def test_edges_have_no_false_border_and_brightness_is_the_input_magnitude(trained_model, inputs):
    """Zero padding in normalised space, where black is -0.42, drew an edge around every image; padding with the
    border pixels draws none on a black image, and a bright square gets its edges."""
    black = data.normalize(np.zeros((1, 28, 28), dtype=np.uint8))
    assert attribute("edge", trained_model, black, 0).abs().max() == 0
    square = np.zeros((1, 28, 28), dtype=np.uint8)
    square[0, 10:18, 10:18] = 255
    edges = attribute("edge", trained_model, data.normalize(square), 0)[0]
    assert edges[9:19, 9:19].sum() > 0 and edges[:8].sum() == 0 and edges[20:].sum() == 0
    x, labels = inputs
    assert torch.equal(attribute("brightness", trained_model, x, labels), x.abs().sum(dim=1))


def test_window_drops_match_brute_force_on_both_architectures(any_model, inputs):
    """Every 4x4 window set to black, one full forward pass each, against the local recompute (the CNN) and the
    skipping of windows that are black already."""
    x, labels = inputs[0][:6], inputs[1][:6]
    network = commuted(any_model)
    fast = window_drops(network, x, labels, window=4, stride=1, fill=data.BLACK, score="logit")
    with torch.no_grad():
        clean = target_scores(any_model(x), labels, "logit")
        slow = torch.zeros(6, 25, 25)
        for r in range(25):
            for c in range(25):
                occluded = x.clone()
                occluded[:, :, r:r + 4, c:c + 4] = data.BLACK
                slow[:, r, c] = clean - target_scores(any_model(occluded), labels, "logit")
    torch.testing.assert_close(fast, slow, rtol=1e-4, atol=1e-4 * slow.abs().max().item())
    assert (fast[:, 0, 0] == 0).all()  # MNIST's corners are black: nothing to remove


def test_the_oracle_is_captum_occlusion_on_a_grid_of_disjoint_blocks(any_model, inputs):
    """With the stride equal to the window, each pixel lies in one block, so Captum's average over the covering
    windows is that block's drop: the same map, to float rounding."""
    x, labels = inputs
    ours = attribute("oracle", any_model, x, labels)
    theirs = Occlusion(any_model.eval()).attribute(x, sliding_window_shapes=(1, 4, 4), strides=(1, 4, 4),
                                                   baselines=data.BLACK, target=labels)[:, 0]
    torch.testing.assert_close(ours, theirs.detach(), rtol=1e-4, atol=1e-5 * theirs.abs().max().item())


def test_the_oracle_points_at_a_cue_that_dominates_by_construction():
    """A model whose class-0 logit is the brightness of the top-left block, plus a little of everything else: the
    cue dominates, and the oracle's largest value lies on it."""
    class Cue(torch.nn.Module):
        def forward(self, x):
            logit = 10 * x[:, 0, :4, :4].sum(dim=(1, 2)) + 0.01 * x.sum(dim=(1, 2, 3))
            return torch.stack([logit] + [torch.zeros_like(logit)] * 9, dim=1)

    cued = decoy.with_cue(np.full((8, 28, 28), 40, dtype=np.uint8), np.zeros(8, dtype=int), np.arange(8), "pattern")
    maps = attribute("oracle", Cue(), data.normalize(cued), 0).numpy()
    assert pointing_game(maps, decoy.cue_masks(np.zeros(8, dtype=int)), seed=0).tolist() == [1.0] * 8
