"""A planted ground truth: Decoy MNIST (Ross, Hughes & Doshi-Velez 2017, "Right for the Right Reasons"), made
strong enough not to depend on float rounding, and with a twin that saw the cue but never used it.

A 4x4 patch in a randomly chosen corner codes the label, in one of two ways (each training image carries one):

- `pattern`, intensity-neutral: 8 of the 16 pixels white, in a blocky pattern that codes the label, so every
  label's patch has the same mean and energy. A method that multiplies by the input sees every label's cue alike.
- `grey`, Ross et al.'s code: the whole patch at grey level 255 - 25 y. Dark levels (grey 30 for label 9 is
  fainter than MNIST's black background after normalisation) cap any method that multiplies by the input, and
  removing a dark patch barely changes the image; scored separately, and per label, so this shows.

The decoy twin must use the cue: in a share of its training images (`uninformative_share`) the label is drawn
at random, independent of the digit, and the cue codes that label. Only the cue can fit those images, so every
seed learns it (a model trained on the consistent cue alone may ignore it: 0.3-0.5 points of reliance in our
runs). The no-reliance twin is trained on the same images, labels, corners and cue types, but its cue codes a
random label: it sees the cue and learns that it means nothing. It is the false-alarm control.

The ground truth is the set of test images on which the cue *dominates* the decoy twin's decision: removing it
(the patch set to black, MNIST's background) lowers the explained score (the logit of the class it predicts)
more than removing any other 4x4 window that does not overlap it, over every window position (stride 1). That is
an intervention on the model, not an assumption, and it is the same test for every image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CUE_SIZE = 4
CORNERS = ("top-left", "top-right", "bottom-left", "bottom-right")
CUE_TYPES = ("pattern", "grey")
N_CLASSES = 10


def cue_patterns() -> np.ndarray:
    """bool [10, 4, 4]: the intensity-neutral code, one pattern per label. Each has 8 of 16 pixels on, in 2-pixel
    blocks (a 3x3 convolution and a 2x2 pooling read them as easily as one another): two of the four rows, two
    of the four columns, or two diagonal quadrants. Any two differ in at least 8 pixels."""
    rows = []
    for pair in ((0, 1), (2, 3), (1, 2), (0, 3)):
        pattern = np.zeros((CUE_SIZE, CUE_SIZE), dtype=bool)
        pattern[list(pair)] = True
        rows.append(pattern)
    columns = [pattern.T for pattern in rows]
    quadrants = np.zeros((CUE_SIZE, CUE_SIZE), dtype=bool)
    quadrants[:2, :2] = quadrants[2:, 2:] = True
    return np.stack(rows + columns + [quadrants, ~quadrants])


PATTERNS = cue_patterns()


def cue_level(labels: np.ndarray) -> np.ndarray:
    """The grey level that codes each label (Ross et al.): 255 - 25 y, so 255 for 0 down to 30 for 9."""
    return (255 - 25 * np.asarray(labels, dtype=np.int64)).astype(np.uint8)


def cue_patches(labels: np.ndarray, cue_types) -> np.ndarray:
    """uint8 [N, 4, 4]: each label's patch in its cue type (one name for all, or one per label)."""
    labels = np.asarray(labels, dtype=np.int64)
    types = np.broadcast_to(np.asarray(cue_types), labels.shape)
    unknown = set(np.unique(types)) - set(CUE_TYPES)
    if unknown:
        raise ValueError(f"unknown cue type {str(sorted(unknown)[0])!r}: choose from {', '.join(CUE_TYPES)}")
    grey = np.broadcast_to(cue_level(labels)[:, None, None], (len(labels), CUE_SIZE, CUE_SIZE))
    pattern = np.where(PATTERNS[labels], 255, 0).astype(np.uint8)
    return np.where((types == "grey")[:, None, None], grey, pattern).astype(np.uint8)


def cue_masks(corners: np.ndarray, size: int = 28, cue: int = CUE_SIZE) -> np.ndarray:
    """bool [N, size, size]: where each image's patch lies (corner index into CORNERS)."""
    corners = np.asarray(corners)
    masks = np.zeros((len(corners), size, size), dtype=bool)
    for corner in range(len(CORNERS)):
        rows = slice(0, cue) if corner in (0, 1) else slice(size - cue, size)
        cols = slice(0, cue) if corner in (0, 2) else slice(size - cue, size)
        masks[corners == corner, rows, cols] = True
    return masks


def with_cue(images: np.ndarray, corners: np.ndarray, labels: np.ndarray | None, cue_types="pattern") -> np.ndarray:
    """A copy of uint8 images [N, H, W] with each image's patch coding `labels` in `cue_types` (one name, or one
    per image); `labels=None` sets the patch to black (0), which removes the cue: MNIST's corners are
    background."""
    out = images.copy()
    masks = cue_masks(corners, images.shape[1])
    if labels is None:
        out[masks] = 0
    else:
        out[masks] = cue_patches(labels, cue_types).reshape(-1)  # a mask's pixels in row-major order, as a patch's
    return out


def random_corners(count: int, rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, len(CORNERS), size=count)


@dataclass
class TrainingSet:
    images: np.ndarray  # uint8 [N, 28, 28], each with its cue
    labels: np.ndarray  # int [N]: what the model is trained to predict
    uninformative: np.ndarray  # bool [N]: the label was drawn at random, independent of the digit


def twin_training_set(images: np.ndarray, labels: np.ndarray, *, seed: int, uninformative_share: float,
                      relies: bool) -> TrainingSet:
    """The training images of a twin. Both twins get the same labels, corners and cue types from one seed; the
    decoy twin's cue codes its label (`relies=True`), the no-reliance twin's codes a random label."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels, dtype=np.int64).copy()
    uninformative = rng.random(len(labels)) < uninformative_share
    labels[uninformative] = rng.integers(0, N_CLASSES, size=int(uninformative.sum()))
    corners = random_corners(len(labels), rng)
    types = np.asarray(CUE_TYPES)[rng.integers(0, len(CUE_TYPES), size=len(labels))]
    noise = rng.integers(0, N_CLASSES, size=len(labels))  # drawn for both twins, so their other draws match
    coded = labels if relies else noise
    return TrainingSet(with_cue(images, corners, coded, types), labels, uninformative)


CONDITIONS = ("consistent", "shuffled", "none")


@dataclass
class Intervention:
    """A model on the test images under three cue conditions, for one cue type."""

    cue_type: str
    correct: dict[str, np.ndarray]  # condition -> bool [N]: prediction == label

    def reliance(self) -> np.ndarray:
        """Per image, consistent minus shuffled correctness: its mean is how much the model relies on the cue."""
        return self.correct["consistent"].astype(float) - self.correct["shuffled"].astype(float)


def intervene(predict, images: np.ndarray, labels: np.ndarray, seed: int) -> dict[str, Intervention]:
    """Per cue type, evaluate `predict(uint8 images [N, H, W]) -> classes [N]` with the cue consistent with the
    label, with the cue coding a shuffled label (a permutation of the labels), and with no cue (the patch black:
    the same images for both cue types, so predicted once)."""
    rng = np.random.default_rng(seed)
    corners = random_corners(len(images), rng)
    shuffled = rng.permutation(labels)
    removed = predict(with_cue(images, corners, None)) == labels
    return {cue: Intervention(cue, {"consistent": predict(with_cue(images, corners, labels, cue)) == labels,
                                    "shuffled": predict(with_cue(images, corners, shuffled, cue)) == labels,
                                    "none": removed})
            for cue in CUE_TYPES}


def cue_window(corner: int, positions: int) -> tuple[int, int]:
    """(row, col) of the cue's window among `positions` x `positions` stride-1 window positions."""
    last = positions - 1
    return (0 if corner in (0, 1) else last, 0 if corner in (0, 2) else last)


def dominates(drops: np.ndarray, corners: np.ndarray, cue: int = CUE_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Whether the cue dominates each image, from the score drops [N, P, P] of every stride-1 window: the cue's
    window drops the score by more than 0 and by more than every window that does not overlap it. Also returns
    the margin: the cue's drop minus the largest other drop."""
    drops = np.asarray(drops, dtype=np.float64)
    n, positions = drops.shape[0], drops.shape[1]
    cue_drop = np.empty(n)
    others = drops.copy()
    for i, corner in enumerate(corners):
        row, col = cue_window(int(corner), positions)
        cue_drop[i] = drops[i, row, col]
        # windows overlapping the cue start less than `cue` positions from it
        others[i, max(0, row - cue + 1):row + cue, max(0, col - cue + 1):col + cue] = -np.inf
    margin = cue_drop - others.reshape(n, -1).max(axis=1)
    return (cue_drop > 0) & (margin > 0), margin


@dataclass
class GroundTruth:
    """Per cue type, the test images on which the cue provably dominates the decoy twin's decision."""

    cue_type: str
    pool: np.ndarray  # test indices swept (stratified by class)
    corners: np.ndarray  # [len(pool)] each pool image's corner
    dominated: np.ndarray  # bool [len(pool)]
    margin: np.ndarray  # [len(pool)] cue drop minus the largest drop of any window not overlapping it
    chosen: np.ndarray  # positions in `pool` of the images every method is scored on, stratified by class


def ground_truth(window_drops, images: np.ndarray, labels: np.ndarray, cue_type: str, *, n_pool: int, n: int,
                 seed: int) -> GroundTruth:
    """Sweep a class-stratified pool of `n_pool` test images with the cue consistent: `window_drops(uint8 images)
    -> [N, P, P]` is the decoy twin's score drop for each 4x4 window set to black. Keep where the cue dominates,
    and choose up to `n` of them, stratified by class."""
    from mnist_xai.data import stratified_indices

    pool = stratified_indices(labels, min(n_pool, len(labels)), seed)
    corners = random_corners(len(pool), np.random.default_rng(seed + 1))
    cued = with_cue(images[pool], corners, labels[pool], cue_type)
    dominated, margin = dominates(window_drops(cued), corners)
    candidates = np.flatnonzero(dominated)
    chosen = candidates[stratified_indices(labels[pool][candidates], min(n, len(candidates)), seed + 2)]
    return GroundTruth(cue_type, pool, corners, dominated, margin, np.sort(chosen))
