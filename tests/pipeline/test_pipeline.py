"""The real pipeline: `dvc repro` in a temporary git repository on a small subset of real MNIST."""

import json
import re

import numpy as np
import pytest
import torch

from mnist_xai.explanation import Explanation
from mnist_xai.model import load_model
from tests.conftest import PIPELINE_METHODS, SMALL_PARAMS
from tests.helpers import ran_stages

REPLICATES = SMALL_PARAMS["quality"]["replicates"]

SEED_METHODS = ["saliency", "smoothgrad", "gradcam", "scorecam"]


def test_first_repro_runs_every_stage(pipeline):
    ran = ran_stages(pipeline.first_repro.stdout)
    assert ran[0] == "fingerprints" and ran[-1] == "report"
    assert sorted(ran) == sorted(["fingerprints", "download", "train", "evaluate", "train_random_labels",
                                  "train_replicates", "train_decoy", "verdicts", "report"]
                                 + [f"explain@{m}" for m in PIPELINE_METHODS]
                                 + [f"quality@{m}" for m in PIPELINE_METHODS])


def test_every_output_exists(pipeline):
    root = pipeline.path
    expected = ["data/mnist/train-images-idx3-ubyte", "data/mnist/t10k-labels-idx1-ubyte", "models/model.pt",
                "metrics/train.json", "metrics/timing/train.json", "plots/train/history.csv",
                "metrics/evaluate.json", "plots/evaluate/confusion.json", "predictions/misclassified.json",
                "reports/report.html", "dvc.lock"]
    expected += [f"explanations/{m}.npz" for m in PIPELINE_METHODS]
    expected += [f"metrics/timing/explain/{m}.json" for m in PIPELINE_METHODS]
    expected += [f"models/random_labels/{name}_{r}.pt" for name in ("permuted", "true") for r in range(REPLICATES)]
    expected += [f"models/decoy/{name}_{r}.pt" for name in ("decoy", "no_reliance") for r in range(REPLICATES)]
    expected += [f"models/replicates/model_{r}.pt" for r in range(1, REPLICATES)] + ["metrics/train_replicates.json",
                                                                                   "metrics/timing/train_replicates.json"]
    expected += ["ground_truth/decoy.npz",
                 "metrics/decoy.json", "metrics/quality.json", "quality/verdicts.json", "plots/quality/curves.json",
                 "plots/quality/randomisation.json", "plots/quality/agreement.json"]
    expected += [f"quality/scores/{m}.npz" for m in PIPELINE_METHODS]
    expected += [f"metrics/quality/{m}.json" for m in PIPELINE_METHODS]
    expected += [f"metrics/timing/quality/{m}.json" for m in PIPELINE_METHODS]
    missing = [name for name in expected if not (root / name).is_file()]
    assert not missing
    assert not list(root.rglob("*.tmp")), "an atomic write left a temporary file behind"


def test_outputs_hold_what_they_promise(pipeline):
    root = pipeline.path
    model = load_model(root / "models/model.pt")
    assert isinstance(model, torch.nn.Module) and not model.training
    evaluate = json.loads((root / "metrics/evaluate.json").read_text())
    assert 0.5 < evaluate["accuracy"] <= 1 and set(evaluate["per_class"]) == {str(c) for c in range(10)}
    assert {"precision", "recall"} <= set(evaluate["per_class"]["3"])
    confusion = json.loads((root / "plots/evaluate/confusion.json").read_text())
    assert len(confusion) == 10000 and set(confusion[0]) == {"actual", "predicted"}
    wrong = json.loads((root / "predictions/misclassified.json").read_text())
    assert len(wrong["indices"]) == evaluate["n_misclassified"]
    history = (root / "plots/train/history.csv").read_text().splitlines()
    assert history[0] == "epoch,train_loss,train_accuracy,test_loss,test_accuracy" and len(history) == 2
    for method in SEED_METHODS:
        explanation = Explanation.load(root / f"explanations/{method}.npz")
        explained = SMALL_PARAMS["explain"]["n_images"]
        assert explanation.maps.shape == (explained, 28, 28) and explanation.maps.dtype == np.float32
        assert np.isfinite(explanation.maps).all()
        assert np.array_equal(explanation.targets, explanation.predictions)  # explain.target: predicted
        timing = json.loads((root / f"metrics/timing/explain/{method}.json").read_text())
        assert timing["images_per_second"] > 0 and timing["seconds_per_image"] > 0
    # misclassified images are always explained (up to half the budget)
    explained = Explanation.load(root / "explanations/saliency.npz")
    half = SMALL_PARAMS["explain"]["n_images"] // 2
    assert np.isin(wrong["indices"], explained.indices).sum() == min(half, len(wrong["indices"]))
    assert np.bincount(explained.labels, minlength=10).min() >= 1  # stratified


def test_report_holds_one_image_per_method_and_sample(pipeline):
    html = (pipeline.path / "reports/report.html").read_text()
    gallery = html[html.index('id="gallery-grid"'):]
    gallery = gallery[:gallery.index("</table>")]
    maps = re.findall(r'<img class="map" data-method="([^"]+)" data-sample="(\d+)"', gallery)
    samples = sorted({sample for _, sample in maps})
    assert len(samples) == pipeline.params["report"]["n_samples"] == 8
    assert sorted(maps) == sorted((m, s) for m in PIPELINE_METHODS for s in samples)
    assert "http://" not in html and "https://" not in html and "<script src" not in html
    for section in ("summary", "training", "evaluation", "gallery", "misclassified", "timing"):
        assert f'<section id="{section}">' in html


def test_second_repro_runs_nothing(pipeline):
    result = pipeline.dvc("repro")
    assert ran_stages(result.stdout) == []
    assert "Data and pipelines are up to date" in result.stdout


def test_smoothgrad_param_change_reruns_only_its_explain_stage_and_what_reads_it(pipeline):
    original = (pipeline.path / "params.yaml").read_text()
    try:
        pipeline.update_params({"explain": {"methods": {"smoothgrad": {"n_samples": 10}}}})
        status = json.loads(pipeline.dvc("status", "--json").stdout)
        one_method = ["explain@smoothgrad", "quality@smoothgrad", "verdicts", "report"]  # scoring follows its maps
        assert set(status) == set(one_method)
        result = pipeline.dvc("repro")
        assert ran_stages(result.stdout) == one_method
    finally:
        (pipeline.path / "params.yaml").write_text(original)
        restored = pipeline.dvc("repro")  # the run cache brings the previous outputs back
        assert ran_stages(restored.stdout) == [] or "cached" in restored.stdout


@pytest.mark.parametrize("stage", ["train", "explain@saliency"])
def test_each_stage_declares_only_the_params_it_reads(pipeline, stage):
    lock = pipeline.path / "dvc.lock"
    import yaml

    declared = yaml.safe_load(lock.read_text())["stages"][stage]["params"]["params.yaml"]
    if stage == "train":
        assert set(declared) == {"base.seed", "base.device", "base.dataset", "train"}
    else:
        assert set(declared) == {"base.seed", "base.device", "base.dataset", "explain.n_images", "explain.target",
                                 "explain.methods.saliency"}
