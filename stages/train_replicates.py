"""train_replicates: the trained model drawn again, quality.replicates - 1 times: the training of stage train (its
params, data and schedule) with each replicate's own seed (replicates.py). The faithfulness checks score every
method on each of them, so their intervals cover the draw of the model too, not only the images; replicate 0 is
stage train's model. models/replicates/ holds model_<r>.pt for r = 1, 2, ..."""

import logging
from pathlib import Path

from mnist_xai import data, params, stage, tracking
from mnist_xai.files import atomic_write_json

log = logging.getLogger("train_replicates")

METRICS = Path("metrics/train_replicates.json")
TIMING = Path("metrics/timing/train_replicates.json")


def main() -> None:
    p = params.load("base", "train", "quality", "tracking")
    # imported after the params are checked, so a bad value fails in a fraction of a second
    import numpy as np
    import torch

    from mnist_xai import replicates
    from mnist_xai.model import build_model, save_model
    from mnist_xai.training import resolve_device, train

    device = resolve_device(p.base.device)
    data_dir = Path("data") / p.base.dataset
    images, labels = data.load_split(data_dir, "train")
    test_images, test_labels = data.load_split(data_dir, "test")

    def replicate(r: int, on_epoch=None) -> tuple[torch.nn.Module, dict, float]:
        """Stage train's training with replicate r's seed: its own subset (train.n_images), initialisation and
        order."""
        seed = replicates.seed(p.base.seed, "model", r)
        train_images, train_labels = images, labels
        if p.train.n_images and p.train.n_images < len(images):
            subset = np.sort(np.random.default_rng(seed).choice(len(images), p.train.n_images, replace=False))
            train_images, train_labels = images[subset], labels[subset]
        torch.manual_seed(seed)
        model = build_model(vars(p.train))
        result = train(model, train_images, train_labels, test_images, test_labels, epochs=p.train.epochs,
                       batch_size=p.train.batch_size, lr=p.train.lr, weight_decay=p.train.weight_decay, seed=seed,
                       device=device, on_epoch=on_epoch)
        final = result.history[-1]
        return model, {"replicate": r, "seed": seed, "test_accuracy": final["test_accuracy"]}, result.train_seconds

    count = p.quality.replicates
    folder = replicates.RETRAINED_MODELS
    with tracking.stage_run("train_replicates", p.tracking.experiment,
                            params={"quality.replicates": count, "train": vars(p.train)},
                            tags={"data_md5": tracking.dir_md5(data_dir)}) as run:
        with stage.work():
            drawn = [replicate(r, on_epoch=run.log_epoch if r == 1 else None) for r in range(1, count)]
        folder.mkdir(parents=True, exist_ok=True)
        saved = {replicates.trained_model(one["replicate"]) for _, one, _ in drawn}
        for model, one, _ in drawn:
            save_model(model, replicates.trained_model(one["replicate"]))
        for stale in set(folder.glob("*.pt")) - saved:  # a smaller quality.replicates leaves none of the last run's
            stale.unlink()
        rows = [one for _, one, _ in drawn]
        atomic_write_json(METRICS, {"replicates": rows,
                                    "test_accuracy": [one["test_accuracy"] for one in rows]})
        # wall-clock time apart, as stage train keeps it: the metrics stay byte-identical between reruns
        atomic_write_json(TIMING, {"train_seconds": [round(seconds, 3) for _, _, seconds in drawn]})
        if rows:
            run.log_metrics({"min_test_accuracy": min(one["test_accuracy"] for one in rows)})
        run.set_tags({"output_md5": tracking.file_md5(METRICS)})
    log.info("%d more draws of the trained model%s", len(rows),
             ": test accuracy " + ", ".join(f"{one['test_accuracy']:.4f}" for one in rows) if rows else "")


if __name__ == "__main__":
    stage.run(main)
