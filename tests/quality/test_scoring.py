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


def test_faithfulness_is_scored_on_every_draw_of_the_trained_model(trained_model, test_split):
    """Deletion and insertion split the images between the pipeline's model and its retrained draws: draw r scores its
    own share, with maps made for it and its own prediction, and every value carries its draw's id, so the interval
    resamples the models too (replicates.py). A model-free check would not tell the draws apart; an untrained draw
    does."""
    from mnist_xai.attribution import attribute
    from mnist_xai.model import MnistCNN
    from mnist_xai.quality.faithfulness import deletion_insertion
    from mnist_xai.quality.metrics import replicate_key
    from mnist_xai.quality.scoring import faithfulness_curves

    images, labels = test_split
    torch.manual_seed(3)
    untrained = MnistCNN().eval()
    x = data.normalize(images[data.stratified_indices(labels, 12, seed=5)])
    with torch.no_grad():
        predicted = trained_model(x).argmax(1)
    maps = attribute("saliency", trained_model, x, predicted).numpy()
    settings = QualitySettings(n_images=12, n_randomisation=4, n_smooth=2, smooth_samples=2, smooth_noise=0.1,
                               entropy_bins=100, n_sensitivity=4, n_random_logit=4, sensitivity_samples=2,
                               sensitivity_radius=0.05, deletion_step=28, faithfulness_runs=10, faithfulness_subset=28,
                               n_road=6, road_steps=3, road_noise=0.01, n_infidelity=5, infidelity_samples=4,
                               insertion_start="blur", blur_sigma=5.0, seed=0, replicates=3)
    models = Models(trained=trained_model, decoy=[], no_reliance=[], random_labels=[], true_labels=[],
                    retrained=[untrained, trained_model])
    values = {}
    curves = faithfulness_curves(models, "saliency", {}, x, predicted, predicted, maps, settings, values)

    assert values[replicate_key("deletion_auc")].tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert values[replicate_key("insertion_auc")].tolist() == values[replicate_key("deletion_auc")].tolist()
    assert curves.deletion.shape[0] == len(values["deletion_auc"]) == 12

    def alone(model, rows, own_maps=None):
        with torch.no_grad():
            classes = model(x[rows]).argmax(1)
        own = attribute("saliency", model, x[rows], classes).numpy() if own_maps is None else own_maps
        return deletion_insertion(model, x[rows], own, classes, step=28, insertion_start="blur", blur_sigma=5.0,
                                  seed=0).deletion_auc

    np.testing.assert_allclose(values["deletion_auc"][:4], alone(trained_model, slice(0, 4), maps[:4]))
    np.testing.assert_allclose(values["deletion_auc"][4:8], alone(untrained, slice(4, 8)), rtol=1e-5)
    np.testing.assert_allclose(values["deletion_auc"][8:], alone(trained_model, slice(8, 12)), rtol=1e-5)
    # the untrained draw's share is not the trained model's
    assert not np.allclose(values["deletion_auc"][4:8], alone(trained_model, slice(4, 8)))
