"""The planted ground truth's parts, on cases whose answer is known: the two cue codes, the twins' training sets,
and the dominance test that decides which images the cue provably decides."""

from __future__ import annotations

import numpy as np
import pytest

from mnist_xai import decoy
from mnist_xai.quality.localisation import pointing_chance, pointing_distance, pointing_game


def test_the_pattern_code_is_intensity_neutral_and_every_pair_of_labels_differs_in_half_the_patch():
    patches = decoy.cue_patches(np.arange(10), "pattern").astype(float)
    assert set(np.unique(patches)) == {0.0, 255.0}
    assert np.all(patches.mean(axis=(1, 2)) == 127.5)  # the same mean for every label
    assert np.all((patches ** 2).sum(axis=(1, 2)) == 8 * 255.0 ** 2)  # and the same energy
    flat = decoy.PATTERNS.reshape(10, -1)
    distances = (flat[:, None] != flat[None]).sum(axis=2)
    assert distances[~np.eye(10, dtype=bool)].min() == 8
    assert len({patch.tobytes() for patch in patches}) == 10


def test_the_grey_code_is_ross_et_al_s_level_and_each_image_gets_its_own_cue_type():
    grey = decoy.cue_patches(np.array([0, 9]), "grey")
    assert grey[0].min() == grey[0].max() == 255 and grey[1].min() == grey[1].max() == 30
    images = np.zeros((3, 28, 28), dtype=np.uint8)
    cued = decoy.with_cue(images, np.array([0, 3, 1]), np.array([9, 0, 4]), np.array(["grey", "pattern", "grey"]))
    assert np.all(cued[0, :4, :4] == 30) and cued[0, 4:].sum() == 0
    assert np.array_equal(cued[1, 24:, 24:], decoy.cue_patches(np.array([0]), "pattern")[0])
    assert np.all(cued[2, :4, 24:] == 155)
    assert np.array_equal(decoy.with_cue(cued, np.array([0, 3, 1]), None), images)  # removing it: black again
    with pytest.raises(ValueError, match="unknown cue type 'blue'"):
        decoy.cue_patches(np.array([1]), "blue")


def test_the_twins_see_the_same_images_labels_and_corners_and_differ_only_in_what_the_cue_codes():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(2000, 28, 28)).astype(np.uint8)
    images[:, :4, :4] = images[:, :4, 24:] = images[:, 24:, :4] = images[:, 24:, 24:] = 0
    labels = rng.integers(0, 10, size=2000)
    relies = decoy.twin_training_set(images, labels, seed=3, uninformative_share=0.4, relies=True)
    ignores = decoy.twin_training_set(images, labels, seed=3, uninformative_share=0.4, relies=False)
    assert np.array_equal(relies.labels, ignores.labels) and np.array_equal(relies.uninformative, ignores.uninformative)
    assert 0.36 < relies.uninformative.mean() < 0.44
    assert np.mean(relies.labels[relies.uninformative] == labels[relies.uninformative]) < 0.15  # redrawn at random
    assert np.array_equal(relies.labels[~relies.uninformative], labels[~relies.uninformative])
    corner_pixels = decoy.cue_masks(np.zeros(1, dtype=int))[0] | decoy.cue_masks(np.full(1, 3))[0]
    corner_pixels |= decoy.cue_masks(np.full(1, 1))[0] | decoy.cue_masks(np.full(1, 2))[0]
    assert np.array_equal(relies.images[:, ~corner_pixels], ignores.images[:, ~corner_pixels])
    differs = np.any(relies.images != ignores.images, axis=(1, 2))
    assert 0.8 < differs.mean() < 0.95  # a random label equals the true one a tenth of the time


def test_the_cue_dominates_only_when_no_window_that_misses_it_drops_the_score_as_much():
    positions = 25
    drops = np.zeros((4, positions, positions))
    corners = np.array([0, 3, 1, 2])
    for i, corner in enumerate(corners):
        drops[(i, *decoy.cue_window(corner, positions))] = 1.0
    drops[1, 10, 10] = 2.0  # a digit window beats the cue
    drops[2, 0, positions - 2] = 5.0  # a window overlapping the cue is not a rival: removing it removes cue
    drops[3] = 0.0  # the cue changes nothing
    dominated, margin = decoy.dominates(drops, corners)
    assert dominated.tolist() == [True, False, True, False]
    assert margin[0] == pytest.approx(1.0) and margin[1] == pytest.approx(-1.0)


def test_the_ground_truth_keeps_dominated_images_stratified_by_class():
    """A model that relies on the cue for even labels only: the ground truth holds those, balanced."""
    from mnist_xai.data import stratified_indices

    labels = np.repeat(np.arange(10), 30)
    images = np.zeros((300, 28, 28), dtype=np.uint8)
    pool = stratified_indices(labels, 100, 0)  # the pool ground_truth() sweeps, in its order

    def drops(cued):
        out = np.zeros((len(cued), 25, 25))
        out[:, 12, 12] = 0.5  # a digit window
        for i, label in enumerate(labels[pool]):
            corner = [cued[i, r:r + 4, c:c + 4].any() for r, c in ((0, 0), (0, 24), (24, 0), (24, 24))].index(True)
            out[(i, *decoy.cue_window(corner, 25))] = 1.0 if label % 2 == 0 else 0.1
        return out

    truth = decoy.ground_truth(drops, images, labels, "pattern", n_pool=100, n=20, seed=0)
    assert len(truth.pool) == 100 and truth.dominated.sum() == 50
    chosen_labels = labels[truth.pool[truth.chosen]]
    assert len(chosen_labels) == 20 and set(chosen_labels) == {0, 2, 4, 6, 8}
    assert np.all(np.bincount(chosen_labels, minlength=10)[::2] == 4)  # balanced over the classes that qualify


def test_pointing_counts_a_hit_within_the_tolerance_and_a_constant_map_scores_chance():
    masks = decoy.cue_masks(np.zeros(3, dtype=int))  # top-left 4x4
    maps = np.zeros((3, 28, 28))
    maps[0, 1, 1] = 1  # inside
    maps[1, 1, 5] = 1  # 2 pixels right of the patch
    maps[2, 5, 5] = 1  # sqrt(8) = 2.83 pixels from the corner (3, 3), diagonally
    distances = pointing_distance(maps, masks, seed=0)
    assert distances.tolist() == pytest.approx([0.0, 2.0, np.sqrt(8)])
    assert pointing_game(maps, masks, seed=0).tolist() == [1.0, 0.0, 0.0]
    assert pointing_game(maps, masks, seed=0, tolerance=2).tolist() == [1.0, 1.0, 0.0]
    constant = np.ones((4000, 28, 28))
    corners = decoy.random_corners(4000, np.random.default_rng(1))
    hits = pointing_game(constant, decoy.cue_masks(corners), seed=0, tolerance=2).mean()
    assert hits == pytest.approx(pointing_chance(2), abs=0.01)
    assert pointing_chance(0) == pytest.approx(16 / 784)
