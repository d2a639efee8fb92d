"""quality: score every configured method's explanations (faithfulness, sanity checks, robustness,
complexity, agreement). Its own stage, so changing a quality param never recomputes attributions."""

import logging
from pathlib import Path

from mnist_xai import data, params, stage, tracking
from mnist_xai.io import atomic_write_json, atomic_write_npz

log = logging.getLogger("quality")

MODEL = Path("models/model.pt")
RANDOM_MODEL = Path("models/model_random_labels.pt")
METRICS = Path("metrics/quality.json")
TIMING = Path("metrics/timing/quality.json")
CURVES = Path("plots/quality/curves.json")
RANDOMISATION = Path("plots/quality/randomisation.json")
AGREEMENT = Path("plots/quality/agreement.json")
EXAMPLES = Path("quality/randomisation_examples.npz")


def main() -> None:
    p = params.load("base", "explain", "quality", "tracking")
    methods = params.configured_methods()
    method_params = {method: params.method_params(method) for method in methods}
    # imported after the params are checked, so a bad value fails in a fraction of a second
    import numpy as np
    import torch

    from mnist_xai.explanation import load_explanations
    from mnist_xai.model import load_model
    from mnist_xai.quality import QualitySettings, score_methods
    from mnist_xai.training import resolve_device

    device = resolve_device(p.base.device)
    model = load_model(MODEL, device)
    random_model = load_model(RANDOM_MODEL, device)
    images, _ = data.load_split(Path("data") / p.base.dataset, "test")
    explanations = load_explanations("explanations", methods)
    reference = next(iter(explanations.values()))
    x = data.normalize(images[reference.indices]).to(device)
    settings = QualitySettings(**{k: v for k, v in vars(p.quality).items() if not k.startswith("random_label")},
                               seed=p.base.seed)
    with tracking.stage_run("quality", p.tracking.experiment, params={"quality": vars(p.quality)},
                            tags={"model_md5": tracking.file_md5(MODEL)}) as run:
        report = score_methods(model, random_model, x, torch.as_tensor(reference.targets, device=device),
                               torch.as_tensor(reference.predictions, device=device),
                               {m: e.maps for m, e in explanations.items()}, method_params, settings)
        summaries = {method: quality.summary() for method, quality in report.methods.items()}
        atomic_write_json(METRICS, {"threshold": settings.threshold, "methods": summaries})
        atomic_write_json(CURVES, [
            {"method": method, "curve": name, "fraction": round(float(f), 6), "mean": round(float(m), 6),
             "std": round(float(s), 6)}
            for method, quality in report.methods.items()
            for name, values in (("deletion", quality.curves.deletion), ("insertion", quality.curves.insertion))
            for f, m, s in zip(quality.curves.fractions, values.mean(0), values.std(0), strict=True)])
        atomic_write_json(RANDOMISATION, [
            {"method": method, "step": step, "randomised": "+".join(cascade.layers[:step]) or "none",
             "rho": round(float(rho), 6), "constant_maps": round(float(constant), 6)}
            for method, quality in report.methods.items()
            for cascade in [quality.model_randomisation]
            for step, (rho, constant) in enumerate(zip(cascade.correlation, cascade.constant_fraction, strict=True))])
        names = list(report.methods)
        atomic_write_json(AGREEMENT, [{"a": a, "b": b, "rho": float(report.agreement[i, j])}
                                      for i, a in enumerate(names) for j, b in enumerate(names)])
        atomic_write_npz(EXAMPLES, methods=np.array(names), indices=reference.indices[:4],
                         layers=np.array(next(iter(report.methods.values())).model_randomisation.layers),
                         **{f"maps_{m}": q.model_randomisation.examples for m, q in report.methods.items()})
        atomic_write_json(TIMING, {part: round(seconds, 3) for part, seconds in report.seconds.items()})
        run.log_metrics({f"{method}.{key}": value for method, values in summaries.items()
                         for key, value in values.items()})
        run.log_metrics({f"seconds.{part}": seconds for part, seconds in report.seconds.items()})
        run.set_tags({"output_md5": tracking.file_md5(METRICS)})
    log.info("scored %d methods in %.1f s", len(summaries), sum(report.seconds.values()))


if __name__ == "__main__":
    stage.run(main)
