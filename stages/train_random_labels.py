"""train_random_labels: the same network trained on permuted labels, for the data-randomisation sanity
check (Adebayo et al. 2018), and its matched control: the same network, images, steps and seed on the true
labels. The check compares the two, so that it measures what was learned, not how long (the main model trains
about 20 times as many steps). Adebayo et al. trained the permuted-label network until it fitted its random
labels: one that has not memorised them is merely under-trained, and the check would test nothing. Small by
design (quality.random_label_*), long enough to memorise; the fit is recorded, and the verdict does not use the
check when it falls short of 95 %. Drawn quality.replicates times with independent seeds (replicates.py):
models/random_labels/ holds each replicate's pair."""

import logging
from pathlib import Path

from mnist_xai import data, params, stage, tracking
from mnist_xai.files import atomic_write_json

log = logging.getLogger("train_random_labels")

METRICS = Path("metrics/train_random_labels.json")


def main() -> None:
    p = params.load("base", "train", "quality", "tracking")
    # imported after the params are checked, so a bad value fails in a fraction of a second
    import numpy as np
    import torch

    from mnist_xai import replicates
    from mnist_xai.evaluation import predict
    from mnist_xai.model import build_model, save_model
    from mnist_xai.training import resolve_device, train

    device = resolve_device(p.base.device)
    data_dir = Path("data") / p.base.dataset
    images, labels = data.load_split(data_dir, "train")
    test_images, test_labels = data.load_split(data_dir, "test")

    def replicate(r: int, on_epoch=None) -> dict:
        """One permuted-label network and its matched control, on their own seeded subset and permutation."""
        seed = replicates.seed(p.base.seed, "random_labels", r)
        rng = np.random.default_rng(seed)
        subset = np.sort(rng.choice(len(images), min(p.quality.random_label_images, len(images)), replace=False))
        permuted = rng.permutation(labels[subset])  # the labels no longer say anything about the images

        def fit(labels_used, on_epoch=None):
            torch.manual_seed(seed)
            model = build_model(vars(p.train))
            train(model, images[subset], labels_used, test_images[:200], test_labels[:200],  # a glance per epoch
                  epochs=p.quality.random_label_epochs, batch_size=p.train.batch_size, lr=p.train.lr,
                  weight_decay=p.train.weight_decay, seed=seed, device=device, on_epoch=on_epoch)
            test_accuracy = round(float((predict(model, test_images[:1000], device) == test_labels[:1000]).mean()), 6)
            return model, test_accuracy, memorised(model, images[subset], labels_used, device)

        model, test_accuracy, fit_share = fit(permuted, on_epoch=on_epoch)
        control, control_test_accuracy, control_fit = fit(labels[subset])
        return {"model": model, "control": control, "train_accuracy_on_permuted_labels": fit_share,
                "test_accuracy": test_accuracy, "control_train_accuracy": control_fit,
                "control_test_accuracy": control_test_accuracy, "n_images": int(len(subset))}

    count = p.quality.replicates
    with tracking.stage_run("train_random_labels", p.tracking.experiment,
                            params={"quality.random_label_images": p.quality.random_label_images,
                                    "quality.random_label_epochs": p.quality.random_label_epochs,
                                    "quality.replicates": count},
                            tags={"data_md5": tracking.dir_md5(data_dir)}) as run:
        with stage.work():
            drawn = [replicate(r, on_epoch=run.log_epoch if r == 0 else None) for r in range(count)]
        for r, one in enumerate(drawn):
            save_model(one.pop("model"), replicates.permuted_label_model(r))
            save_model(one.pop("control"), replicates.true_label_model(r))
        # the check is read only if every permuted-label network memorised its labels: the worst one is the fit
        fit_share = min(one["train_accuracy_on_permuted_labels"] for one in drawn)
        test_accuracy = round(float(np.mean([one["test_accuracy"] for one in drawn])), 6)
        control_test_accuracy = round(float(np.mean([one["control_test_accuracy"] for one in drawn])), 6)
        atomic_write_json(METRICS, {"train_accuracy_on_permuted_labels": fit_share, "test_accuracy": test_accuracy,
                                    "control_train_accuracy": min(one["control_train_accuracy"] for one in drawn),
                                    "control_test_accuracy": control_test_accuracy,
                                    "n_images": drawn[0]["n_images"], "epochs": p.quality.random_label_epochs,
                                    "replicates": drawn})
        run.log_metrics({"permuted_labels_fitted": fit_share, "control_test_accuracy": control_test_accuracy})
        run.set_tags({"output_md5": tracking.file_md5(replicates.permuted_label_model(0))})
    log.info("random-label models (%d replicates): at least %.1f %% of their permuted training labels fitted%s, %.1f "
             "%% test accuracy; their matched controls on the true labels: %.1f %% test accuracy", count,
             100 * fit_share, "" if fit_share >= 0.95 else " (short of the 95 % a data-randomisation check needs: "
             "raise quality.random_label_epochs)", 100 * test_accuracy, 100 * control_test_accuracy)


def memorised(model, images, labels, device) -> float:
    """The share of its (permuted) training labels the trained model reproduces, in eval mode (no dropout): the
    fit the check relies on. The running training accuracy, taken with dropout while the weights moved, would
    understate it."""
    from mnist_xai.evaluation import predict

    return round(float((predict(model, images, device) == labels).mean()), 6)


if __name__ == "__main__":
    stage.run(main)
