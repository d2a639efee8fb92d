"""Test-set evaluation: accuracy, per-class precision and recall, the confusion matrix."""

from __future__ import annotations

import numpy as np

from mnist_xai.data import normalize


def logits(model, images: np.ndarray, device, batch_size: int = 1000):
    """The model's outputs [N, classes] for every uint8 image [N, 28, 28], as a CPU tensor (torch is imported
    here, so that the metrics below can be used without it)."""
    import torch

    from mnist_xai.model import commuted

    model.eval()
    fast = commuted(model)
    out = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            x = normalize(images[start:start + batch_size]).to(device).contiguous(memory_format=torch.channels_last)
            out.append(fast(x).cpu())
    return torch.cat(out)


def predict(model, images: np.ndarray, device, batch_size: int = 1000) -> np.ndarray:
    """Predicted class of every uint8 image [N, 28, 28]."""
    return logits(model, images, device, batch_size).argmax(dim=1).numpy().astype(np.int64)


def predict_probabilities(model, images: np.ndarray, device, batch_size: int = 1000) -> np.ndarray:
    """Softmax probabilities [N, classes] of every uint8 image [N, 28, 28]."""
    return logits(model, images, device, batch_size).softmax(dim=1).numpy()


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, n_classes: int) -> np.ndarray:
    """counts[true, predicted]."""
    return np.bincount(labels * n_classes + predictions, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def classification_metrics(labels: np.ndarray, predictions: np.ndarray, n_classes: int) -> dict:
    """Accuracy and per-class precision/recall, rounded to 6 places so the JSON is stable."""
    confusion = confusion_matrix(labels, predictions, n_classes)
    true_positives = np.diag(confusion).astype(float)
    predicted = confusion.sum(axis=0)
    actual = confusion.sum(axis=1)
    per_class = {
        str(c): {
            "precision": round(true_positives[c] / predicted[c], 6) if predicted[c] else 0.0,
            "recall": round(true_positives[c] / actual[c], 6) if actual[c] else 0.0,
            "support": int(actual[c]),
        }
        for c in range(n_classes)
    }
    return {
        "accuracy": round(float(true_positives.sum() / len(labels)), 6),
        "n_test": int(len(labels)),
        "n_misclassified": int(len(labels) - true_positives.sum()),
        "per_class": per_class,
    }
