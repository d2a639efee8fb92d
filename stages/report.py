"""report: one self-contained reports/report.html comparing every configured method."""

import logging
import time
from pathlib import Path

import numpy as np

from mnist_xai import data, params, stage, tracking
from mnist_xai.errors import UserError
from mnist_xai.explanation import Explanation
from mnist_xai.io import atomic_write_text
from mnist_xai.report import ReportInputs, build_report
from mnist_xai.report.builder import read_history, read_json

log = logging.getLogger("report")

REPORT = Path("reports/report.html")


def main() -> None:
    p = params.load("base", "train", "explain", "quality", "report", "tracking")
    methods = params.configured_methods()
    dataset = data.get_dataset(p.base.dataset)
    images, labels = data.load_split(Path("data") / p.base.dataset, "test")
    explanations = {}
    for method in methods:
        path = Path("explanations") / f"{method}.npz"
        if not path.is_file():
            raise UserError(f"{path} is missing: run its stage first (dvc repro explain@{method})")
        explanations[method] = Explanation.load(path, method)
    confusion_rows = read_json("plots/evaluate/confusion.json")
    index = {name: i for i, name in enumerate(dataset.class_names)}
    predictions = np.array([index[row["predicted"]] for row in confusion_rows], dtype=np.int64)

    started = time.perf_counter()
    with tracking.stage_run("report", p.tracking.experiment, tags={"model_md5": tracking.file_md5("models/model.pt")}
                            ) as run:
        inputs = ReportInputs(
            dataset=p.base.dataset, class_names=list(dataset.class_names), test_images=images, test_labels=labels,
            train_metrics=read_json("metrics/train.json"), train_timing=read_json("metrics/timing/train.json"),
            history=read_history(Path("plots/train/history.csv")), evaluate_metrics=read_json("metrics/evaluate.json"),
            predictions=predictions, explanations=explanations,
            explain_timing={m: read_json(Path("metrics/timing/explain") / f"{m}.json") for m in methods},
            params={"base": vars(p.base), "train": vars(p.train), "explain": vars(p.explain), "methods": methods,
                    "quality": vars(p.quality)},
            git=tracking.git_state(), n_samples=p.report.n_samples, n_misclassified=p.report.n_misclassified,
            quality=read_json("metrics/quality.json"), quality_curves=read_json("plots/quality/curves.json"),
            quality_randomisation=read_json("plots/quality/randomisation.json"),
            quality_agreement=read_json("plots/quality/agreement.json"),
            quality_examples=dict(np.load("quality/randomisation_examples.npz", allow_pickle=False)),
            quality_timing=read_json("metrics/timing/quality.json"),
            random_label_metrics=read_json("metrics/train_random_labels.json"),
        )
        html = build_report(inputs)
        atomic_write_text(REPORT, html)
        seconds = time.perf_counter() - started
        run.log_metrics({"report_bytes": len(html.encode()), "report_seconds": seconds})
        run.log_artifact(REPORT)
    log.info("wrote %s (%.1f kB) in %.1f s", REPORT, len(html.encode()) / 1024, seconds)


if __name__ == "__main__":
    stage.run(main)
