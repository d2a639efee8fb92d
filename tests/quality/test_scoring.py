"""score_method end to end on the fixture model (standing in for every auxiliary network): every metric of the table
is scored and summarised, without running the pipeline."""

import numpy as np
import torch

from mnist_xai import data, decoy
from mnist_xai.quality.metrics import METRICS
from mnist_xai.quality.scoring import CueSet, Models, QualitySettings, score_method


def test_every_metric_is_scored_and_summarised(trained_model, test_split):
    images, labels = test_split
    model = trained_model
    indices = data.stratified_indices(labels, 16, seed=5)
    x = data.normalize(images[indices])
    with torch.no_grad():
        predicted = model(x).argmax(1)
    corners = decoy.random_corners(8, np.random.default_rng(5))
    sets = {}
    for cue in decoy.CUE_TYPES:
        cued = data.normalize(decoy.with_cue(images[indices[:8]], corners, labels[indices[:8]], cue))
        with torch.no_grad():
            targets = model(cued).argmax(1)
        sets[cue] = [CueSet(x=cued, masks=decoy.cue_masks(corners), decoy_targets=targets, twin_targets=targets)]
    from mnist_xai.attribution import attribute

    maps = attribute("saliency", model, x, predicted).numpy()
    settings = QualitySettings(n_images=16, n_randomisation=8, n_smooth=2, smooth_samples=2, smooth_noise=0.1,
                               entropy_bins=100, n_sensitivity=4, n_random_logit=4, sensitivity_samples=2,
                               sensitivity_radius=0.05, deletion_step=28, faithfulness_runs=10, faithfulness_subset=28,
                               n_road=6, road_steps=3, road_noise=0.01,
                               n_infidelity=5, infidelity_samples=4, insertion_start="blur", blur_sigma=5.0,
                               seed=0)
    models = Models(trained=model, decoy=[model], no_reliance=[model], random_labels=[model], true_labels=[model])
    scores = score_method(models, "saliency", {}, x, predicted, predicted, maps, sets, settings)
    assert {metric.key for metric in METRICS} <= set(scores.values)
    assert len(scores.values["road_morf"]) == 6 and len(scores.values["completeness_gap"]) == 16
    assert len(scores.values["gt_auc"]) == len(scores.values["grey_gt_auc"]) == 8
    summary = scores.summary(resamples=200, seed=0)["metrics"]
    new = ("gt_auc", "road_morf", "road_lerf", "completeness_gap", "infidelity", "ris", "ros")
    assert all(np.isfinite(summary[key]["value"]) for key in new)
    assert {"road", "completeness", "infidelity"} <= set(scores.seconds)
