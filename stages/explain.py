"""explain@<method>: attribution maps for explain.n_images test images (stratified by class, all
misclassified ones first) with one method; timing as a metric; a figure and the maps in MLflow."""

import logging
import sys
from pathlib import Path

from mnist_xai import data, params, stage, tracking
from mnist_xai.errors import UserError
from mnist_xai.files import atomic_write_json, read_json

log = logging.getLogger("explain")

MODEL = Path("models/model.pt")
MISCLASSIFIED = Path("predictions/misclassified.json")


def main() -> None:
    if len(sys.argv) != 2:
        raise UserError("usage: python stages/explain.py <method> (one of the names under explain.methods)")
    method = sys.argv[1]
    p = params.load("base", "explain", "tracking")
    method_params = params.method_params(method)
    # imported after the params are checked, so a bad value fails in a fraction of a second
    from mnist_xai.explanation import background_for, explain
    from mnist_xai.model import load_model
    from mnist_xai.report.figures import method_grid
    from mnist_xai.training import resolve_device

    device = resolve_device(p.base.device)
    data_dir = Path("data") / p.base.dataset
    images, labels = data.load_split(data_dir, "test")
    model = load_model(MODEL, device)
    misclassified = read_json(MISCLASSIFIED, "evaluate")
    if not isinstance(misclassified, dict) or not isinstance(misclassified.get("indices"), list):
        raise UserError(f"{MISCLASSIFIED} lacks its list of indices: re-make it with `dvc repro -f evaluate`")
    n_images = params.clamp("explain.n_images", p.explain.n_images, len(labels), f"the {len(labels)} test images")
    indices = data.stratified_indices(labels, n_images, p.base.seed, always=misclassified["indices"])

    out = Path("explanations") / f"{method}.npz"
    timing = Path("metrics/timing/explain") / f"{method}.json"
    with tracking.stage_run(f"explain@{method}", p.tracking.experiment,
                            params={"method": method, **method_params, "n_images": n_images,
                                    "n_images_requested": p.explain.n_images, "target": p.explain.target},
                            tags={"method": method, "model_md5": tracking.file_md5(MODEL),
                                  "data_md5": tracking.dir_md5(data_dir)}) as run:
        with stage.work():
            background = background_for(method, method_params, lambda: data.load_split(data_dir, "train")[0],
                                        p.base.seed)
            result = explain(model, method, images, labels, indices, {**method_params, **background},
                             p.explain.target, device)
        result.save(out)
        speed = {"seconds_per_image": round(result.seconds / len(indices), 6),
                 "images_per_second": round(result.images_per_second, 2), "seconds": round(result.seconds, 3),
                 "n_images": len(indices)}
        atomic_write_json(timing, speed)
        run.log_metrics(speed)
        run.set_tags({"output_md5": tracking.file_md5(out)})
        run.log_artifact(out, "maps")
        run.log_image(method_grid(result, images), f"{method}.png")
    log.info("%s: %d images in %.2f s (%.1f images/s)", method, len(indices), result.seconds,
             result.images_per_second)


if __name__ == "__main__":
    stage.run(main)
