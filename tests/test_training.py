import numpy as np
import torch

from mnist_xai import data
from mnist_xai.model import MnistCNN, save_model
from mnist_xai.training import train


def _train_bytes(images, labels, test_images, test_labels, path) -> tuple[bytes, list]:
    torch.manual_seed(0)
    model = MnistCNN()
    result = train(model, images, labels, test_images, test_labels, epochs=2, batch_size=64, lr=0.003,
                   weight_decay=1e-4, seed=0, device=torch.device("cpu"))
    save_model(model, path)
    return path.read_bytes(), result.history


def test_training_is_deterministic_and_learns(mnist_dir, tmp_path):
    images, labels = data.load_split(mnist_dir, "train")
    test_images, test_labels = data.load_split(mnist_dir, "test")
    subset = np.arange(1000)
    first, history = _train_bytes(images[subset], labels[subset], test_images[:500], test_labels[:500],
                                  tmp_path / "first.pt")
    second, _ = _train_bytes(images[subset], labels[subset], test_images[:500], test_labels[:500],
                             tmp_path / "second.pt")
    assert first == second  # byte-identical state_dict
    assert [row["epoch"] for row in history] == [1, 2]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert history[-1]["test_accuracy"] > 0.7
