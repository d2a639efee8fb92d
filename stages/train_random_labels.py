"""train_random_labels: the same CNN trained on permuted labels, for the data-randomisation sanity
check (Adebayo et al. 2018). Small and short by design (quality.random_label_*): it only has to be a
model that learned from labels carrying no information."""

import logging
from pathlib import Path

from mnist_xai import data, params, stage, tracking
from mnist_xai.io import atomic_write_json

log = logging.getLogger("train_random_labels")

MODEL = Path("models/model_random_labels.pt")
METRICS = Path("metrics/train_random_labels.json")


def main() -> None:
    p = params.load("base", "train", "quality", "tracking")
    # imported after the params are checked, so a bad value fails in a fraction of a second
    import numpy as np
    import torch

    from mnist_xai.model import MnistCNN, save_model
    from mnist_xai.training import resolve_device, train

    device = resolve_device(p.base.device)
    data_dir = Path("data") / p.base.dataset
    images, labels = data.load_split(data_dir, "train")
    test_images, test_labels = data.load_split(data_dir, "test")
    rng = np.random.default_rng(p.base.seed + 1)
    subset = np.sort(rng.choice(len(images), min(p.quality.random_label_images, len(images)), replace=False))
    permuted = rng.permutation(labels[subset])  # the labels no longer say anything about the images

    torch.manual_seed(p.base.seed + 1)
    model = MnistCNN(p.train.channels1, p.train.channels2, p.train.hidden, p.train.dropout)
    with tracking.stage_run("train_random_labels", p.tracking.experiment,
                            params={"quality.random_label_images": p.quality.random_label_images,
                                    "quality.random_label_epochs": p.quality.random_label_epochs},
                            tags={"data_md5": tracking.dir_md5(data_dir)}) as run:
        result = train(model, images[subset], permuted, test_images[:1000], test_labels[:1000],  # a glance is enough
                       epochs=p.quality.random_label_epochs, batch_size=p.train.batch_size, lr=p.train.lr,
                       weight_decay=p.train.weight_decay, seed=p.base.seed + 1, device=device,
                       on_epoch=run.log_epoch)
        save_model(model, MODEL)
        final = result.history[-1]
        atomic_write_json(METRICS, {"train_accuracy_on_permuted_labels": final["train_accuracy"],
                                    "test_accuracy": final["test_accuracy"], "n_images": int(len(subset)),
                                    "epochs": p.quality.random_label_epochs})
        run.set_tags({"output_md5": tracking.file_md5(MODEL)})
    log.info("random-label model: %.1f %% of its permuted training labels fitted, %.1f %% test accuracy",
             100 * final["train_accuracy"], 100 * final["test_accuracy"])


if __name__ == "__main__":
    stage.run(main)
