"""report: one self-contained reports/report.html comparing every configured method."""

import logging
import time
from pathlib import Path

from mnist_xai import data, params, stage, tracking
from mnist_xai.errors import UserError
from mnist_xai.files import atomic_write_text, read_json, read_npz

log = logging.getLogger("report")

REPORT = Path("reports/report.html")


def main() -> None:
    p = params.load("base", "train", "explain", "quality", "decoy", "report", "tracking")
    methods = params.configured_methods()
    # imported after the params are checked, so a bad value fails in a fraction of a second
    import numpy as np

    from mnist_xai.explanation import load_explanations
    from mnist_xai.report import ReportInputs, build_report
    from mnist_xai.report.builder import read_history

    dataset = data.get_dataset(p.base.dataset)
    images, labels = data.load_split(Path("data") / p.base.dataset, "test")
    explanations = load_explanations("explanations", methods)
    baseline = _baseline(p.report.baseline)
    confusion_rows = read_json("plots/evaluate/confusion.json", "evaluate")
    index = {name: i for i, name in enumerate(dataset.class_names)}
    try:
        predictions = np.array([index[row["predicted"]] for row in confusion_rows], dtype=np.int64)
    except (KeyError, TypeError):
        raise UserError("plots/evaluate/confusion.json does not hold this dataset's predictions; re-make it with "
                        "`dvc repro -f evaluate`") from None

    started = time.perf_counter()
    model_md5 = tracking.file_md5("models/model.pt")
    data_md5 = tracking.dir_md5(Path("data") / p.base.dataset)
    with tracking.stage_run("report", p.tracking.experiment, tags={"model_md5": model_md5, "data_md5": data_md5}
                            ) as run:
        provenance = _provenance(run, methods)
        inputs = ReportInputs(
            dataset=p.base.dataset, class_names=list(dataset.class_names), test_images=images, test_labels=labels,
            train_metrics=read_json("metrics/train.json", "train"),
            train_timing=read_json("metrics/timing/train.json", "train"),
            history=read_history(Path("plots/train/history.csv")),
            evaluate_metrics=read_json("metrics/evaluate.json", "evaluate"),
            predictions=predictions, explanations=explanations,
            explain_timing={m: read_json(Path("metrics/timing/explain") / f"{m}.json", f"explain@{m}")
                            for m in methods},
            params={"base": vars(p.base), "train": vars(p.train), "explain": vars(p.explain), "methods": methods,
                    "quality": vars(p.quality), "decoy": vars(p.decoy)},
            git=tracking.git_state(), n_samples=p.report.n_samples, n_misclassified=p.report.n_misclassified,
            quality=read_json("metrics/quality.json", "verdicts"),
            verdicts=read_json("quality/verdicts.json", "verdicts"),
            decoy=read_json("metrics/decoy.json", "train_decoy"),
            ground_truth=read_npz("ground_truth/decoy.npz", "train_decoy"),
            scores={m: read_npz(Path("quality/scores") / f"{m}.npz", f"quality@{m}") for m in methods},
            quality_curves=read_json("plots/quality/curves.json", "verdicts"),
            quality_randomisation=read_json("plots/quality/randomisation.json", "verdicts"),
            quality_agreement=read_json("plots/quality/agreement.json", "verdicts"),
            quality_timing={m: read_json(Path("metrics/timing/quality") / f"{m}.json", f"quality@{m}")
                            for m in methods},
            random_label_metrics=read_json("metrics/train_random_labels.json", "train_random_labels"),
            retrained_metrics=read_json("metrics/train_replicates.json", "train_replicates"),
            provenance={"model_md5": model_md5, "data_md5": data_md5, "tracking_uri": tracking.display_uri(),
                        "experiment": p.tracking.experiment, "report_run_id": run.run_id, "runs": provenance},
            baseline=baseline,
        )
        with stage.work():
            html = build_report(inputs)
        atomic_write_text(REPORT, html)
        seconds = time.perf_counter() - started
        run.log_metrics({"report_bytes": len(html.encode()), "report_seconds": seconds})
        run.log_artifact(REPORT)
    log.info("wrote %s (%.1f kB) in %.1f s", REPORT, len(html.encode()) / 1024, seconds)


def _baseline(rev: str) -> dict | None:
    """The metrics of git revision (or DVC experiment) `rev`, read through DVC from its cache."""
    if rev == "none":
        return None
    import dvc.api

    try:
        return {"rev": rev, "evaluate": dvc.api.metrics_show("metrics/evaluate.json", rev=rev),
                "quality": dvc.api.metrics_show("metrics/quality.json", rev=rev)}
    except Exception as error:  # noqa: BLE001 - DVC raises many kinds; all mean "cannot read that baseline"
        detail = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        raise UserError(f"report.baseline={rev!r}: cannot read its metrics ({detail}); give a commit, tag, branch "
                        "or experiment whose outputs are in the DVC cache (dvc fetch), or none") from None


def _provenance(run, methods) -> list[dict]:
    """For each file the report shows, the MLflow run that wrote it (matched by the file's MD5)."""
    from mnist_xai import replicates

    outputs = [("train", "models/model.pt"), ("evaluate", "metrics/evaluate.json"),
               *[(f"explain@{m}", f"explanations/{m}.npz") for m in methods],
               ("train_random_labels", str(replicates.permuted_label_model(0))),
               ("train_replicates", "metrics/train_replicates.json"),
               ("train_decoy", str(replicates.decoy_model(0))),
               *[(f"quality@{m}", f"metrics/quality/{m}.json") for m in methods],
               ("verdicts", "metrics/quality.json")]
    rows = []
    for stage_name, path in outputs:
        md5 = tracking.file_md5(path)
        found = run.find_runs(f"tags.output_md5 = '{md5}' and attributes.status = 'FINISHED'", max_results=1)
        rows.append({"stage": stage_name, "file": path, "md5": md5, "run_id": found[0].info.run_id if found else None})
    return rows


if __name__ == "__main__":
    stage.run(main)
