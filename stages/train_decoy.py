"""train_decoy: the planted ground truth. The same network trained on Decoy MNIST (a 4x4 patch in a random
corner whose grey level encodes the label; Ross et al. 2017), then proof by intervention, on the test images,
that it relies on the patch, and the set of test images on which the patch demonstrably decides.

"Demonstrably": removing the patch lowers the decoy model's probability of its predicted class by more than
the largest change that removing it causes in the normal model, which never saw a patch, over every test
image (the threshold is measured each run and written to metrics/decoy.json)."""

import logging
from pathlib import Path

from mnist_xai import data, params, stage, tracking
from mnist_xai.errors import UserError
from mnist_xai.files import atomic_write_json, atomic_write_npz

log = logging.getLogger("train_decoy")

MODEL = Path("models/model.pt")
DECOY_MODEL = Path("models/model_decoy.pt")
METRICS = Path("metrics/decoy.json")
GROUND_TRUTH = Path("ground_truth/decoy.npz")
MIN_GROUND_TRUTH = 10


def main() -> None:
    p = params.load("base", "train", "quality", "decoy", "tracking")
    # imported after the params are checked, so a bad value fails in a fraction of a second
    import numpy as np
    import torch

    from mnist_xai import decoy
    from mnist_xai.evaluation import predict_probabilities
    from mnist_xai.model import build_model, load_model, save_model
    from mnist_xai.quality.stats import interval
    from mnist_xai.training import resolve_device, train

    device = resolve_device(p.base.device)
    data_dir = Path("data") / p.base.dataset
    images, labels = data.load_split(data_dir, "train")
    test_images, test_labels = data.load_split(data_dir, "test")
    if p.decoy.n_images and p.decoy.n_images < len(images):
        subset = np.sort(np.random.default_rng(p.base.seed + 2).choice(len(images), p.decoy.n_images, replace=False))
        images, labels = images[subset], labels[subset]
    cued = decoy.decoy_training_set(images, labels, seed=p.base.seed + 2)
    normal = load_model(MODEL, device)

    torch.manual_seed(p.base.seed + 2)
    model = build_model({**vars(p.train), "batch_size": p.decoy.batch_size})
    with tracking.stage_run("train_decoy", p.tracking.experiment,
                            params={"decoy": vars(p.decoy), "train": vars(p.train)},
                            tags={"data_md5": tracking.dir_md5(data_dir), "model_md5": tracking.file_md5(MODEL)}
                            ) as run:
        check = decoy.with_cue(test_images[:1000], decoy.random_corners(1000, np.random.default_rng(0)),
                               decoy.cue_level(test_labels[:1000]))
        with stage.work():
            result = train(model, cued, labels, check, test_labels[:1000], epochs=p.decoy.epochs,
                           batch_size=p.decoy.batch_size, lr=p.decoy.lr, weight_decay=p.train.weight_decay,
                           seed=p.base.seed + 2, device=device, on_epoch=run.log_epoch)
            found = decoy.ground_truth_set(lambda batch: predict_probabilities(model, batch, device),
                                           lambda batch: predict_probabilities(normal, batch, device),
                                           test_images, test_labels, p.decoy.n_ground_truth, seed=p.base.seed + 3)
        if len(found.candidates) < MIN_GROUND_TRUTH:
            raise UserError(f"the decoy model relies on the cue for only {len(found.candidates)} test images (it "
                            f"must for at least {MIN_GROUND_TRUTH} to score the methods): train it longer "
                            "(decoy.epochs) or with a higher decoy.lr")
        shortcut, chosen = found.shortcut, found.chosen
        cued_test = decoy.with_cue(test_images[chosen], shortcut.corners[chosen], decoy.cue_level(test_labels[chosen]))
        normal_targets = predict_probabilities(normal, cued_test, device).argmax(axis=1)
        save_model(model, DECOY_MODEL)  # every output written only now, when all of them can be
        atomic_write_npz(GROUND_TRUTH, indices=chosen, corners=shortcut.corners[chosen], labels=test_labels[chosen],
                         decoy_targets=shortcut.targets[chosen], normal_targets=normal_targets,
                         drop=shortcut.drop[chosen])

        def summary(values):
            value, low, high = interval(values, p.quality.bootstrap_resamples, p.base.seed)
            return {"value": round(value, 6), "low": round(low, 6), "high": round(high, 6)}

        consistent = shortcut.correct["consistent"].astype(float)
        metrics = {
            "accuracy": {name: summary(correct.astype(float)) for name, correct in shortcut.correct.items()},
            "normal_model_accuracy": {name: summary(correct.astype(float))
                                      for name, correct in found.null.correct.items()},
            "consistent_minus_shuffled": summary(consistent - shortcut.correct["shuffled"]),
            "consistent_minus_none": summary(consistent - shortcut.correct["none"]),
            "drop": summary(shortcut.drop),
            "threshold": round(found.threshold, 6),
            "n_test": int(len(test_labels)),
            "n_candidates": int(len(found.candidates)),
            "n_ground_truth": int(len(chosen)),
            "chance": decoy.CUE_SIZE ** 2 / test_images[0].size,
            "train_accuracy": result.history[-1]["train_accuracy"],
            "epochs": p.decoy.epochs,
            "n_train_images": int(len(images)),
        }
        atomic_write_json(METRICS, metrics)
        run.log_metrics({f"accuracy_{name}": value["value"] for name, value in metrics["accuracy"].items()}
                        | {"threshold": found.threshold, "n_ground_truth": len(chosen),
                           "n_candidates": len(found.candidates)})
        run.set_tags({"output_md5": tracking.file_md5(DECOY_MODEL)})
    log.info("decoy model: %.1f %% accurate with the cue consistent, %.1f %% shuffled, %.1f %% without; the cue "
             "decides %d test images (drop > %.3f), %d scored", 100 * metrics["accuracy"]["consistent"]["value"],
             100 * metrics["accuracy"]["shuffled"]["value"], 100 * metrics["accuracy"]["none"]["value"],
             len(found.candidates), found.threshold, len(chosen))


if __name__ == "__main__":
    stage.run(main)
