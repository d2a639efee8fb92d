"""Quality on the real pipeline's outputs: intervals, the planted ground truth, the verdicts, and the published
findings they test."""

import json
from pathlib import Path

import numpy as np
import torch

from tests.conftest import CONTROLS, PIPELINE_METHODS, SMALL_PARAMS
from tests.helpers import ran_stages

GRADIENT_AND_CAM = ["saliency", "smoothgrad", "gradcam", "scorecam", "guided_backprop"]


def read(pipeline, name: str):
    return json.loads((pipeline.path / name).read_text())


def quality(pipeline) -> dict:
    return read(pipeline, "metrics/quality.json")["methods"]


def test_every_method_has_every_metric_with_an_interval_including_the_controls(pipeline):
    from mnist_xai.quality.metrics import METRICS

    methods = quality(pipeline)
    assert set(methods) == set(PIPELINE_METHODS)
    for method, values in methods.items():
        for metric in METRICS:
            value = values[metric.key]
            if value["value"] is not None:  # None: every map collapsed, so the statistic does not exist
                assert value["low"] <= value["value"] <= value["high"], (method, metric.key, value)
        assert 0 <= values["deletion_auc"]["value"] <= 1 and 0 <= values["gt_mass"]["value"] <= 1
        assert values["verdict"] in ("trust", "use with care", "too weak to call", "do not trust")
        assert values["control"] == (method in CONTROLS)
    shown = pipeline.dvc("metrics", "show", "--json").stdout
    assert "mprt_rho" in shown and "guided_backprop" in shown and "gt_reliance" in shown


def test_the_decoy_twin_relies_on_both_cues_and_the_no_reliance_twin_on_neither(pipeline):
    """Margins set from this pipeline over base.seed 0-4 (tests' params, three replicates, a 2-core x86 machine;
    `python bench/seed_study.py small` at 028e864): the decoy twins' reliance (consistent minus shuffled accuracy,
    2,000 test images per replicate, hierarchical interval) on the pattern cue had interval lows of 36.1-48.1 points,
    on the grey cue 17.2-34.0; the no-reliance twins' intervals stayed within 0.3 points of 0; the cue dominated
    48-60 % (pattern) and 33-43 % (grey) of the 180 images swept, which gave 48 pattern and 48 grey ground-truth
    images in every seed. Asserted: lows above 25 and 15 points, the twin within 2 points of 0."""
    decoy = read(pipeline, "metrics/decoy.json")
    pattern, grey = decoy["cues"]["pattern"], decoy["cues"]["grey"]
    assert pattern["reliance"]["decoy"]["low"] > 0.25, pattern["reliance"]
    assert grey["reliance"]["decoy"]["low"] > 0.15, grey["reliance"]
    for cue in (pattern, grey):
        twin = cue["reliance"]["no_reliance"]
        assert -0.02 < twin["low"] <= twin["value"] <= twin["high"] < 0.02, twin
        assert cue["n_pool"] == SMALL_PARAMS["decoy"]["n_pool"] * SMALL_PARAMS["quality"]["replicates"]
    assert pattern["dominated"]["value"] > 0.3 and grey["dominated"]["value"] > 0.2
    wanted = SMALL_PARAMS["decoy"]["n_ground_truth"] * SMALL_PARAMS["quality"]["replicates"]
    assert pattern["n_ground_truth"] == wanted and grey["n_ground_truth"] >= wanted * 0.6
    assert len(decoy["replicates"]) == SMALL_PARAMS["quality"]["replicates"]
    assert decoy["chance"] == 16 / 784 and decoy["pointing_tolerance"] == 2


def test_every_random_source_of_the_checks_is_drawn_once_per_replicate(pipeline):
    """Three replicates: their own twins, ground-truth images, permuted-label networks, randomisation images and
    draws of the trained model; each metric that depends on them carries its replicate (deletion and insertion the
    model draw's), the metrics measured on the pipeline's model alone carry none, and every verdict is also reached
    leaving each replicate out, its support counted."""
    from mnist_xai import replicates

    count = SMALL_PARAMS["quality"]["replicates"]
    root = pipeline.path
    for path in (replicates.decoy_model, replicates.trained_model):
        weights = [torch.load(root / path(r), weights_only=True)["conv1.weight"] for r in range(count)]
        assert not any(torch.equal(weights[0], w) for w in weights[1:])
    assert replicates.trained_model(0) == Path("models/model.pt")
    for r in range(count):
        assert (root / replicates.no_reliance_model(r)).is_file()
        assert (root / replicates.permuted_label_model(r)).is_file()
        assert (root / replicates.true_label_model(r)).is_file()
    with np.load(root / "ground_truth/decoy.npz") as truth:
        ids = truth["pattern_replicate"]
        assert sorted(set(ids.tolist())) == list(range(count))
        assert all(np.sum(ids == r) == SMALL_PARAMS["decoy"]["n_ground_truth"] for r in range(count))
        first = {int(i) for i in truth["pattern_indices"][ids == 0]}
        assert first != {int(i) for i in truth["pattern_indices"][ids == 1]}  # each replicate its own images
    with np.load(root / "quality/scores/saliency.npz") as scores:
        assert len(scores["gt_pointing"]) == len(scores["gt_pointing_replicate"])
        per_image = SMALL_PARAMS["quality"]["n_randomisation"]
        assert np.bincount(scores["mprt_digit_rho_replicate"]).tolist() == [per_image] * count
        share = SMALL_PARAMS["quality"]["n_images"] // count
        for key in ("deletion_auc", "insertion_auc"):  # each draw of the trained model scores its own share
            assert np.bincount(scores[f"{key}_replicate"]).tolist() == [share] * count
            assert len(scores[key]) == share * count
        assert "faithfulness_correlation_replicate" not in scores.files
    verdicts = read(pipeline, "quality/verdicts.json")
    assert verdicts["replicates"] == count
    for v in verdicts["verdicts"]:
        assert len(v["leave_one_out"]) == count
        if v["stable"]:
            assert v["support"] == v["leave_one_out"].count(v["verdict"]) > count / 2
            assert v["reported"] == f"{v['verdict']} ({v['support']}/{count})"
        else:
            assert v["verdict"] == "unstable" and v["reported"].startswith("unstable (")
    for control in CONTROLS:  # the controls get their known answers without any one replicate too
        expected = "trust" if control == "oracle" else "do not trust"
        verdict = next(v for v in verdicts["verdicts"] if v["method"] == control)
        assert verdict["leave_one_out"] == [expected] * count, verdict


def test_the_random_control_scores_chance_on_the_ground_truth(pipeline):
    random = quality(pipeline)["random"]
    chance = read(pipeline, "metrics/quality.json")["chance"]
    assert random["gt_mass"]["low"] <= chance <= random["gt_mass"]["high"]
    assert random["fam_mass"]["low"] <= chance <= random["fam_mass"]["high"]
    assert random["gt_reliance"]["low"] <= 0 <= random["gt_reliance"]["high"]


def test_the_controls_get_their_known_answers(pipeline):
    """The rule must distrust every model-free explainer and trust the oracle: held on each of base.seed 0-4 of
    this pipeline, and in the default run (see the closing note of the calibration issue); again with the lines
    decided at 99.375 % (`bench/seed_study.py small` at 1ab97d8: the ground-truth and MPRT lines validated in every
    seed). A rule change that breaks it fails here, on real scores, as well as in tests/quality/test_verdict.py."""
    verdicts = {v["method"]: v for v in read(pipeline, "quality/verdicts.json")["verdicts"]}
    assert verdicts["oracle"]["verdict"] == "trust", verdicts["oracle"]
    for model_free in ("random", "edge", "brightness"):
        assert verdicts[model_free]["verdict"] == "do not trust", verdicts[model_free]
    for input_only in ("edge", "brightness"):  # the same map on both twins: no credit for pointing at the cue
        assert quality(pipeline)[input_only]["gt_reliance"]["value"] == 0.0
    calibration = {row["key"]: row for row in read(pipeline, "quality/verdicts.json")["calibration"]}
    assert calibration["gt_reliance"]["validated"] and calibration["mprt_digit_rho"]["validated"]


def test_every_verdict_gives_its_evidence_and_the_findings_are_called(pipeline):
    verdicts = read(pipeline, "quality/verdicts.json")
    assert {v["method"] for v in verdicts["verdicts"]} == set(PIPELINE_METHODS)
    for verdict in verdicts["verdicts"]:
        checks = [e["check"] for e in verdict["evidence"]]
        assert checks[:4] == ["ground truth", "ground truth, grey cue", "false alarms", "faithfulness"], checks
        assert all("needs" in e["detail"] or e["outcome"] in ("not run", "inconclusive") for e in verdict["evidence"])
    findings = {f["finding"].split(":")[0]: f["outcome"] for f in verdicts["findings"]}
    assert set(findings) == {"Adebayo et al. 2018", "Adebayo et al. 2022"}
    assert {row["key"] for row in verdicts["meta_evaluation"]} >= {"deletion_auc", "smprt_rho", "mprt_digit_rho"}
    assert set(verdicts["per_label"]) == {"pattern", "grey"}


def test_adebayo_guided_backprop_survives_randomisation_more_than_saliency_and_gradcam(pipeline):
    """Adebayo et al. 2018: after randomising every layer, Guided Backprop's maps stay correlated with the
    trained model's (it recovers the input, not the model); Saliency's and GradCAM's do not as much.
    Measured on this pipeline over base.seed 0-4 (`bench/seed_study.py small` at 028e864; rho over all pixels,
    collapsed maps left out; three replicates of the randomised network, each layer from its own seed): Guided
    Backprop 0.77-0.80, Saliency 0.63-0.67, GradCAM 0.04-0.40; the differences at least 0.122 and 0.402."""
    methods = quality(pipeline)
    rho = {m: methods[m]["mprt_rho"]["value"] for m in ("guided_backprop", "saliency", "gradcam")}
    assert rho["guided_backprop"] > rho["saliency"] + 0.07, rho
    assert rho["guided_backprop"] > rho["gradcam"] + 0.25, rho
    assert abs(methods["random"]["mprt_rho"]["value"]) < 0.1  # the control sits at chance
    finding = next(f for f in read(pipeline, "quality/verdicts.json")["findings"]
                   if f["finding"].startswith("Adebayo et al. 2018"))
    assert finding["outcome"] == "reproduces", finding


def test_every_gradient_and_cam_method_beats_random_on_deletion(pipeline):
    """Measured over base.seed 0-4 (`bench/seed_study.py small` at 028e864): the closest is GradCAM, 0.025-0.152
    below random's deletion AUC; every other method at least 0.30 below. GradCAM is asserted below random, the
    others 0.2 below."""
    methods = quality(pipeline)
    control = methods["random"]["deletion_auc"]["value"]
    for method in GRADIENT_AND_CAM:
        margin = 0.0 if method == "gradcam" else 0.2
        assert methods[method]["deletion_auc"]["value"] < control - margin, (method, methods[method], control)


def test_randomisation_curves_and_constant_maps_are_recorded(pipeline):
    records = read(pipeline, "plots/quality/randomisation.json")
    gradcam = sorted((r for r in records if r["method"] == "gradcam"), key=lambda r: r["step"])
    assert [r["randomised"] for r in gradcam] == ["none", "fc2", "fc2+fc1", "fc2+fc1+conv2", "fc2+fc1+conv2+conv1"]
    assert gradcam[0]["rho"] == 1.0
    assert all(0 <= r["constant_maps"] <= 1 for r in records)


def test_report_shows_quality_sections(pipeline):
    html = (pipeline.path / "reports/report.html").read_text()
    for section in ("trust", "calibration", "findings", "ground-truth", "quality", "meta", "faithfulness", "sanity",
                    "agreement"):
        assert f'<section id="{section}">' in html
    assert 'id="quality-table"' in html and "a constant map has no ranking" in html and 'id="ground-truth-grid"' in html
    assert 'id="controls-table"' in html and "WRONG" not in html and 'id="per-label-pattern"' in html


def test_changing_a_quality_param_rescores_every_method_and_recomputes_no_attribution(pipeline):
    original = (pipeline.path / "params.yaml").read_text()
    rescored = [f"quality@{m}" for m in PIPELINE_METHODS] + ["verdicts", "report"]
    try:
        pipeline.update_params({"quality": {"sensitivity_samples": 4}})
        status = json.loads(pipeline.dvc("status", "--json").stdout)
        assert set(status) == set(rescored) - {"verdicts"}  # it reads no such param; the new scores re-run it
        assert ran_stages(pipeline.dvc("repro").stdout) == rescored
    finally:
        (pipeline.path / "params.yaml").write_text(original)
        pipeline.dvc("repro")


def test_a_degenerate_method_is_flagged_and_never_trusted(pipeline):
    """VarGrad with one sample has zero variance: every map is constant, so both randomisation tests would read
    rho = 0 as a pass. It is flagged degenerate in the metrics and the report, and not trusted."""
    original = (pipeline.path / "params.yaml").read_text()
    try:
        pipeline.update_params({"explain": {"methods": {"vargrad": {"n_samples": 1}}}})
        ran = ran_stages(pipeline.dvc("repro").stdout)
        assert ran == ["explain@vargrad", "quality@vargrad", "verdicts", "report"]
        vargrad = quality(pipeline)["vargrad"]
        html = (pipeline.path / "reports/report.html").read_text()
    finally:
        (pipeline.path / "params.yaml").write_text(original)
        for orphan in ("explanations/vargrad.npz", "quality/scores/vargrad.npz", "metrics/quality/vargrad.json",
                       "metrics/timing/quality/vargrad.json", "metrics/timing/explain/vargrad.json"):
            (pipeline.path / orphan).unlink(missing_ok=True)  # outputs of stages that no longer exist
        pipeline.dvc("repro")
    assert vargrad["degenerate"] == 1 and vargrad["constant_share"] == 1.0
    assert vargrad["verdict"] == "do not trust"
    assert "degenerate: 100 % of its maps are constant" in html
