"""evaluate: accuracy and per-class precision/recall on the test split, the confusion matrix,
and the indices of the misclassified test images (which the explain stages always include)."""

import logging
from pathlib import Path

from mnist_xai import data, params, stage, tracking
from mnist_xai.files import atomic_write_json

log = logging.getLogger("evaluate")

MODEL = Path("models/model.pt")
METRICS = Path("metrics/evaluate.json")
CONFUSION = Path("plots/evaluate/confusion.json")
MISCLASSIFIED = Path("predictions/misclassified.json")


def main() -> None:
    p = params.load("base", "tracking")
    # imported after the params are checked, so a bad value fails in a fraction of a second
    import numpy as np

    from mnist_xai.evaluation import classification_metrics, predict
    from mnist_xai.model import load_model
    from mnist_xai.training import resolve_device

    device = resolve_device(p.base.device)
    dataset = data.get_dataset(p.base.dataset)
    data_dir = Path("data") / p.base.dataset
    images, labels = data.load_split(data_dir, "test")
    model = load_model(MODEL, device)
    with tracking.stage_run("evaluate", p.tracking.experiment, params={"base": vars(p.base)},
                            tags={"data_md5": tracking.dir_md5(data_dir), "model_md5": tracking.file_md5(MODEL)}
                            ) as run:
        with stage.work():
            predictions = predict(model, images, device)
        metrics = classification_metrics(labels, predictions, len(dataset.class_names))
        wrong = np.flatnonzero(predictions != labels)
        atomic_write_json(METRICS, metrics)
        # DVC's confusion template wants one record per test image
        atomic_write_json(CONFUSION, [{"actual": dataset.class_names[a], "predicted": dataset.class_names[b]}
                                      for a, b in zip(labels.tolist(), predictions.tolist(), strict=True)])
        atomic_write_json(MISCLASSIFIED, {"indices": wrong.tolist(), "labels": labels[wrong].tolist(),
                                          "predictions": predictions[wrong].tolist()})
        run.log_metrics({"test_accuracy": metrics["accuracy"], "n_misclassified": metrics["n_misclassified"],
                         **{f"precision_{c}": v["precision"] for c, v in metrics["per_class"].items()},
                         **{f"recall_{c}": v["recall"] for c, v in metrics["per_class"].items()}})
        run.set_tags({"output_md5": tracking.file_md5(METRICS)})
    log.info("test accuracy %.4f, %d misclassified", metrics["accuracy"], len(wrong))


if __name__ == "__main__":
    stage.run(main)
