"""Explaining a set of test images with one method, timed, and the file format that holds the result.
Reading explanations needs no torch (the verdicts and report stages do it)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mnist_xai.errors import UserError
from mnist_xai.files import atomic_write_npz, read_npz

FIELDS = ("maps", "indices", "labels", "predictions", "targets")


@dataclass
class Explanation:
    method: str
    maps: np.ndarray  # float32 [N, 28, 28]
    indices: np.ndarray  # int64 [N]: positions in the test split
    labels: np.ndarray  # int64 [N]
    predictions: np.ndarray  # int64 [N]
    targets: np.ndarray  # int64 [N]: the class each map explains
    seconds: float = float("nan")  # wall time of the attribution alone

    @property
    def images_per_second(self) -> float:
        return len(self.maps) / self.seconds

    def save(self, path: str | Path) -> None:
        atomic_write_npz(path, maps=self.maps, indices=self.indices, labels=self.labels,
                         predictions=self.predictions, targets=self.targets)

    @classmethod
    def load(cls, path: str | Path, method: str | None = None) -> Explanation:
        """The saved maps; a missing or corrupt file is one line naming the stage that re-makes it."""
        method = method or Path(path).stem
        arrays = read_npz(path, f"explain@{method}", keys=FIELDS)
        return cls(method=method, **{key: arrays[key] for key in FIELDS})


def background_for(method: str, params: dict, train_images: Callable[[], np.ndarray], seed: int) -> dict:
    """{"background": ...} for a method that takes a baseline distribution (n_background training images drawn
    with `seed`), else {}: merged into the params given to attribute(). `train_images` is called only then, so the
    other methods' stages never read the training split."""
    from mnist_xai.attribution.registry import get_method
    from mnist_xai.data import background_images

    spec = get_method(method)
    if not spec.background:
        return {}
    return {"background": background_images(train_images(), spec.resolve(params)["n_background"], seed)}


def explain(model, method: str, images: np.ndarray, labels: np.ndarray, indices: np.ndarray,
            params: dict, target: str, device, show_progress: bool = True) -> Explanation:
    """Attribution maps for test images `images[indices]`, explaining the predicted class or the label."""
    import torch

    from mnist_xai.attribution import attribute
    from mnist_xai.data import normalize
    from mnist_xai.evaluation import predict

    x = normalize(images[indices]).to(device)
    predictions = predict(model, images[indices], device)
    targets = predictions if target == "predicted" else labels[indices]
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    maps = attribute(method, model, x, torch.as_tensor(targets, device=device), show_progress=show_progress, **params)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    return Explanation(method=method, maps=maps.cpu().numpy(), indices=indices.astype(np.int64),
                       labels=labels[indices].astype(np.int64), predictions=predictions,
                       targets=np.asarray(targets, dtype=np.int64), seconds=seconds)


def load_explanations(folder: str | Path, methods: list[str]) -> dict[str, Explanation]:
    """`<folder>/<method>.npz` for every method, checked to explain the same images in the same order."""
    explanations = {}
    for method in methods:
        path = Path(folder) / f"{method}.npz"
        explanations[method] = Explanation.load(path, method)
    reference = next(iter(explanations.values()), None)
    if reference is not None and any(not np.array_equal(e.indices, reference.indices)
                                     for e in explanations.values()):
        raise UserError("the explanations were made for different images: re-run them together (dvc repro)")
    return explanations
