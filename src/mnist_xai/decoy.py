"""A planted ground truth: Decoy MNIST (Ross, Hughes & Doshi-Velez 2017, "Right for the Right Reasons").

A 4x4 patch in a randomly chosen corner has a grey level that encodes the label, 255 - 25 y. A model
trained on such images can take the shortcut; where intervening on the patch changes its decision, we
know what its explanation should point at: the patch. Everything here is built from the real images, and
seeded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CUE_SIZE = 4
CORNERS = ("top-left", "top-right", "bottom-left", "bottom-right")


def cue_level(labels: np.ndarray) -> np.ndarray:
    """The grey level that encodes each label (Ross et al.): 255 - 25 y, so 255 for 0 down to 30 for 9."""
    return (255 - 25 * np.asarray(labels, dtype=np.int64)).astype(np.uint8)


def cue_masks(corners: np.ndarray, size: int = 28, cue: int = CUE_SIZE) -> np.ndarray:
    """bool [N, size, size]: where each image's patch lies (corner index into CORNERS)."""
    corners = np.asarray(corners)
    masks = np.zeros((len(corners), size, size), dtype=bool)
    for corner in range(len(CORNERS)):
        rows = slice(0, cue) if corner in (0, 1) else slice(size - cue, size)
        cols = slice(0, cue) if corner in (0, 2) else slice(size - cue, size)
        masks[corners == corner, rows, cols] = True
    return masks


def with_cue(images: np.ndarray, corners: np.ndarray, levels: np.ndarray | None) -> np.ndarray:
    """A copy of uint8 images [N, H, W] with each image's patch set to its level; `levels=None` sets the patch
    to black (0), which removes the cue: MNIST's corners are background."""
    out = images.copy()
    masks = cue_masks(corners, images.shape[1])
    fill = np.zeros(len(images), dtype=np.uint8) if levels is None else np.asarray(levels, dtype=np.uint8)
    out[masks] = np.repeat(fill, masks.reshape(len(masks), -1).sum(axis=1))
    return out


def random_corners(count: int, rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, len(CORNERS), size=count)


def decoy_training_set(images: np.ndarray, labels: np.ndarray, seed: int) -> np.ndarray:
    """The training images with their cue, each in a seeded random corner."""
    corners = random_corners(len(images), np.random.default_rng(seed))
    return with_cue(images, corners, cue_level(labels))


@dataclass
class Intervention:
    """The decoy model on the test images under three cue conditions, and per image what removing the cue does."""

    corners: np.ndarray  # int [N]: where each test image's patch lies
    shuffled_labels: np.ndarray  # int [N]: the label whose level the shuffled cue shows
    correct: dict[str, np.ndarray]  # condition -> bool [N]: prediction == label
    targets: np.ndarray  # int [N]: the class predicted with the consistent cue (the class explained)
    probability_with_cue: np.ndarray  # [N] p(target | consistent cue)
    probability_without_cue: np.ndarray  # [N] p(target | patch black)

    @property
    def drop(self) -> np.ndarray:
        """How much the explained class's probability falls when the cue is removed."""
        return self.probability_with_cue - self.probability_without_cue


CONDITIONS = ("consistent", "shuffled", "none")


def intervene(predict_probabilities, images: np.ndarray, labels: np.ndarray, seed: int) -> Intervention:
    """Evaluate `predict_probabilities(uint8 images [N, H, W]) -> softmax [N, classes]` with the cue consistent
    with the label, with the levels shuffled across images (a permutation of the labels), and with no cue (the
    patch black, as MNIST's background)."""
    rng = np.random.default_rng(seed)
    corners = random_corners(len(images), rng)
    shuffled = rng.permutation(labels)
    inputs = {"consistent": with_cue(images, corners, cue_level(labels)),
              "shuffled": with_cue(images, corners, cue_level(shuffled)),
              "none": with_cue(images, corners, None)}
    probabilities = {name: predict_probabilities(batch) for name, batch in inputs.items()}
    targets = probabilities["consistent"].argmax(axis=1)
    rows = np.arange(len(images))
    return Intervention(
        corners=corners, shuffled_labels=shuffled,
        correct={name: p.argmax(axis=1) == labels for name, p in probabilities.items()},
        targets=targets, probability_with_cue=probabilities["consistent"][rows, targets],
        probability_without_cue=probabilities["none"][rows, targets])


@dataclass
class GroundTruthSet:
    """Where the decoy model provably relies on the cue, measured against a model that never saw one."""

    shortcut: Intervention  # the decoy model
    null: Intervention  # the normal model, same corners and shuffle
    threshold: float  # the largest change removing the patch causes in the normal model, over every image
    candidates: np.ndarray  # test images where removing the patch lowers the decoy model's probability by more
    chosen: np.ndarray  # up to n of them, stratified by class: the images every method is scored on


def ground_truth_set(decoy_probabilities, normal_probabilities, images: np.ndarray, labels: np.ndarray, n: int,
                     seed: int) -> GroundTruthSet:
    """Intervene on the test images with both models; "demonstrably" means a drop larger than any the normal
    model shows (its largest |drop| over the whole test set), so no effect a patch has on a model that ignores
    it can admit an image."""
    from mnist_xai.data import stratified_indices

    shortcut = intervene(decoy_probabilities, images, labels, seed)
    null = intervene(normal_probabilities, images, labels, seed)
    threshold = float(np.abs(null.drop).max())
    candidates = np.flatnonzero(shortcut.drop > threshold)
    chosen = candidates[stratified_indices(labels[candidates], min(n, len(candidates)), seed)]
    return GroundTruthSet(shortcut, null, threshold, candidates, chosen)
