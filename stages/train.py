"""train: fit the CNN on the training split; write the state_dict, metrics and per-epoch curves."""

import csv
import io
import logging
from pathlib import Path

from mnist_xai import data, params, stage, tracking
from mnist_xai.files import atomic_write_json, atomic_write_text

log = logging.getLogger("train")

MODEL = Path("models/model.pt")
METRICS = Path("metrics/train.json")
TIMING = Path("metrics/timing/train.json")
HISTORY = Path("plots/train/history.csv")


def main() -> None:
    p = params.load("base", "train", "tracking")
    # imported after the params are checked, so a bad value fails in a fraction of a second
    import numpy as np
    import torch

    from mnist_xai.model import build_model, save_model
    from mnist_xai.training import resolve_device, train

    device = resolve_device(p.base.device)
    data_dir = Path("data") / p.base.dataset
    train_images, train_labels = data.load_split(data_dir, "train")
    test_images, test_labels = data.load_split(data_dir, "test")
    if p.train.n_images and p.train.n_images < len(train_images):
        subset = np.sort(np.random.default_rng(p.base.seed).choice(len(train_images), p.train.n_images, replace=False))
        train_images, train_labels = train_images[subset], train_labels[subset]

    torch.manual_seed(p.base.seed)
    model = build_model(vars(p.train))
    with tracking.stage_run("train", p.tracking.experiment, params={"base": vars(p.base), "train": vars(p.train)},
                            tags={"data_md5": tracking.dir_md5(data_dir), "dataset": p.base.dataset}) as run:
        with stage.work():
            result = train(model, train_images, train_labels, test_images, test_labels,
                           epochs=p.train.epochs, batch_size=p.train.batch_size, lr=p.train.lr,
                           weight_decay=p.train.weight_decay, seed=p.base.seed, device=device,
                           on_epoch=run.log_epoch)
        final = result.history[-1]
        save_model(model, MODEL)
        atomic_write_json(METRICS, {
            "test_accuracy": final["test_accuracy"], "test_loss": final["test_loss"],
            "train_accuracy": final["train_accuracy"], "train_loss": final["train_loss"],
            "epochs": p.train.epochs, "n_train_images": int(len(train_images)),
        })
        atomic_write_json(TIMING, {"train_seconds": round(result.train_seconds, 3),
                                   "seconds_per_epoch": round(result.train_seconds / p.train.epochs, 3)})
        atomic_write_text(HISTORY, _csv(result.history))
        run.log_metrics({"final_test_accuracy": final["test_accuracy"], "train_seconds": result.train_seconds})
        run.set_tags({"model_md5": tracking.file_md5(MODEL), "output_md5": tracking.file_md5(MODEL)})
        run.log_model(model.cpu().eval(), registered_model_name=p.tracking.model_name if p.tracking.register_model
                      else None)
    log.info("test accuracy %.4f after %.1f s of training", final["test_accuracy"], result.train_seconds)


def _csv(rows: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


if __name__ == "__main__":
    stage.run(main)
