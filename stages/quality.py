"""quality@<method>: every quality metric of one method's explanations, per image and as means with 95 %
bootstrap intervals: ground truth on the decoy model, false alarms, faithfulness, the original and repaired
randomisation tests with their controls, robustness, complexity. One stage per method, so changing one
method's params re-scores that method alone; changing a quality param re-scores every method but never
recomputes an attribution."""

import logging
import sys
from pathlib import Path

from mnist_xai import data, params, stage, tracking
from mnist_xai.errors import UserError
from mnist_xai.files import atomic_write_json, atomic_write_npz, read_npz

log = logging.getLogger("quality")

MODEL = Path("models/model.pt")
GROUND_TRUTH = Path("ground_truth/decoy.npz")


def main() -> None:
    if len(sys.argv) != 2:
        raise UserError("usage: python stages/quality.py <method> (one of the names under explain.methods)")
    method = sys.argv[1]
    p = params.load("base", "explain", "quality", "tracking")
    method_params = params.method_params(method)
    # imported after the params are checked, so a bad value fails in a fraction of a second
    import torch

    from mnist_xai import decoy, replicates
    from mnist_xai.explanation import Explanation, background_for
    from mnist_xai.model import load_model
    from mnist_xai.quality.scoring import CueSet, Models, QualitySettings, score_method
    from mnist_xai.training import resolve_device

    device = resolve_device(p.base.device)
    explanation = Explanation.load(Path("explanations") / f"{method}.npz", method)
    images, _ = data.load_split(Path("data") / p.base.dataset, "test")
    fields = ("indices", "corners", "labels", "decoy_targets", "twin_targets", "replicate")
    truth = read_npz(GROUND_TRUTH, "train_decoy", keys=tuple(f"{cue}_{f}" for cue in decoy.CUE_TYPES for f in fields))
    q = p.quality
    explained = len(explanation.maps)
    count = q.replicates
    settings = QualitySettings(
        n_images=params.clamp("quality.n_images", q.n_images, explained, f"the {explained} explained images"),
        n_randomisation=params.clamp("quality.n_randomisation", q.n_randomisation, explained // count,
                                     f"the {explained} explained images shared by {count} replicates"),
        n_smooth=params.clamp("quality.n_smooth", q.n_smooth, min(explained, q.n_randomisation),
                              "the images of the randomisation checks"),
        smooth_samples=q.smooth_samples, smooth_noise=q.smooth_noise, entropy_bins=q.entropy_bins,
        n_sensitivity=params.clamp("quality.n_sensitivity", q.n_sensitivity, explained,
                                   f"the {explained} explained images"),
        n_random_logit=params.clamp("quality.n_random_logit", q.n_random_logit, explained,
                                    f"the {explained} explained images"),
        n_road=params.clamp("quality.n_road", q.n_road, explained, f"the {explained} explained images"),
        road_steps=q.road_steps, road_noise=q.road_noise,
        n_infidelity=params.clamp("quality.n_infidelity", q.n_infidelity, explained,
                                  f"the {explained} explained images"),
        infidelity_samples=q.infidelity_samples,
        sensitivity_samples=q.sensitivity_samples, sensitivity_radius=q.sensitivity_radius,
        deletion_step=q.deletion_step, faithfulness_runs=q.faithfulness_runs,
        faithfulness_subset=q.faithfulness_subset, insertion_start=q.insertion_start, blur_sigma=q.blur_sigma,
        seed=p.base.seed, replicates=count, target=p.explain.target,
        randomisation_seeds=tuple(replicates.seed(p.base.seed, "randomisation", r) for r in range(count)))
    models = Models(trained=load_model(MODEL, device),
                    decoy=[load_model(replicates.decoy_model(r), device) for r in range(count)],
                    no_reliance=[load_model(replicates.no_reliance_model(r), device) for r in range(count)],
                    random_labels=[load_model(replicates.permuted_label_model(r), device) for r in range(count)],
                    true_labels=[load_model(replicates.true_label_model(r), device) for r in range(count)],
                    retrained=[load_model(replicates.trained_model(r), device) for r in range(1, count)])

    def cue_set(cue: str, r: int) -> CueSet:
        rows = truth[f"{cue}_replicate"] == r
        corners = truth[f"{cue}_corners"][rows]
        return CueSet(x=data.normalize(decoy.with_cue(images[truth[f"{cue}_indices"][rows]], corners,
                                                      truth[f"{cue}_labels"][rows], cue)).to(device),
                      masks=decoy.cue_masks(corners),
                      decoy_targets=torch.as_tensor(truth[f"{cue}_decoy_targets"][rows], device=device),
                      twin_targets=torch.as_tensor(truth[f"{cue}_twin_targets"][rows], device=device))

    ground_truth = {cue: [cue_set(cue, r) for r in range(count)] for cue in decoy.CUE_TYPES}
    x = data.normalize(images[explanation.indices]).to(device)

    with tracking.stage_run(f"quality@{method}", p.tracking.experiment,
                            params={"method": method, **vars(settings)},
                            tags={"method": method, "model_md5": tracking.file_md5(MODEL)}) as run:
        with stage.work():
            background = background_for(method, method_params,
                                        lambda: data.load_split(Path("data") / p.base.dataset, "train")[0],
                                        p.base.seed)
            scores = score_method(models, method, {**method_params, **background}, x,
                                  torch.as_tensor(explanation.targets, device=device),
                                  torch.as_tensor(explanation.predictions, device=device), explanation.maps,
                                  ground_truth, settings)
        summary = {"method": method, **scores.summary(q.bootstrap_resamples, p.base.seed)}
        curve = scores.randomisation
        atomic_write_npz(Path("quality/scores") / f"{method}.npz", **scores.values,
                         curve_fractions=scores.curves.fractions, curve_deletion=scores.curves.deletion,
                         curve_insertion=scores.curves.insertion, mprt_curve=curve.correlation,
                         mprt_constant=curve.constant_fraction, mprt_layers=curve.layers, examples=curve.examples,
                         example_indices=explanation.indices[:len(curve.examples[0])],
                         **{f"gt_examples_{name}": maps for name, maps in scores.ground_truth_examples.items()})
        atomic_write_json(Path("metrics/quality") / f"{method}.json", summary)
        atomic_write_json(Path("metrics/timing/quality") / f"{method}.json",
                          {part: round(seconds, 3) for part, seconds in scores.seconds.items()})
        known = {key: value for key, value in summary["metrics"].items() if value["value"] is not None}
        run.log_metrics({key: value["value"] for key, value in known.items()}
                        | {f"{key}.low": value["low"] for key, value in known.items()}
                        | {f"{key}.high": value["high"] for key, value in known.items()}
                        | {"constant_share": summary["constant_share"]}
                        | {f"seconds.{part}": seconds for part, seconds in scores.seconds.items()})
        run.set_tags({"output_md5": tracking.file_md5(Path("metrics/quality") / f"{method}.json"),
                      "degenerate": str(scores.degenerate).lower()})
    log.info("scored %s in %.1f s%s", method, sum(scores.seconds.values()),
             " (degenerate: its maps are mostly constant)" if scores.degenerate else "")


if __name__ == "__main__":
    stage.run(main)
