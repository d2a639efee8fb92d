"""The report builder on hand-made inputs: escaping of everything that comes from outside, and the
self-contained, offline page."""

from __future__ import annotations

import re

import numpy as np

from mnist_xai.explanation import Explanation
from mnist_xai.report import ReportInputs, build_report

EVIL = '<script>window.pwned = 1; alert("x")</script>'


def make_inputs(**overrides) -> ReportInputs:
    rng = np.random.default_rng(0)
    n = 30
    labels = np.arange(n) % 10
    predictions = labels.copy()
    predictions[:5] = (predictions[:5] + 1) % 10
    explanations = {m: Explanation(method=m, maps=rng.normal(size=(n, 28, 28)).astype(np.float32),
                                   indices=np.arange(n), labels=labels, predictions=predictions,
                                   targets=predictions, seconds=0.1) for m in ("saliency", "gradcam")}
    inputs = dict(
        dataset="mnist", class_names=[str(c) for c in range(10)],
        test_images=rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8), test_labels=labels,
        train_metrics={"test_accuracy": 0.9, "n_train_images": 100}, train_timing={"train_seconds": 1.0},
        history=[{"epoch": 1, "train_loss": 1.0, "train_accuracy": 0.5, "test_loss": 0.8, "test_accuracy": 0.9}],
        evaluate_metrics={"accuracy": 0.83, "per_class": {str(c): {"precision": 1.0, "recall": 1.0, "support": 3}
                                                         for c in range(10)}},
        predictions=predictions, explanations=explanations,
        explain_timing={m: {"seconds_per_image": 0.01, "images_per_second": 100, "seconds": 0.3}
                        for m in explanations},
        params={"base": {"dataset": "mnist"}, "train": {"epochs": 1, "batch_size": 8, "lr": 0.1},
                "explain": {"target": "predicted"}, "methods": {"saliency": {}, "gradcam": {}}},
    )
    inputs.update(overrides)
    return ReportInputs(**inputs)


def test_outside_strings_are_escaped_everywhere():
    inputs = make_inputs(
        class_names=[f"{EVIL}{c}" for c in range(10)],  # labels
        params={"base": {"dataset": EVIL}, "train": {"epochs": 1, "batch_size": 8, "lr": EVIL},
                "explain": {"target": "predicted"}, "methods": {"saliency": {"note": EVIL}, "gradcam": {}}},
        git={"git_commit": EVIL, "git_dirty": "true"},
        provenance={"model_md5": EVIL, "data_md5": "d", "tracking_uri": EVIL, "experiment": EVIL,
                    "report_run_id": EVIL, "runs": [{"stage": EVIL, "file": EVIL, "md5": "0" * 32, "run_id": EVIL}]},
    )
    html = build_report(inputs)
    assert html.count("<script") == 1  # ours, the table sorter; every injected one is text
    assert "window.pwned" in html and "&lt;script&gt;" in html
    assert "<script>window.pwned" not in html


def test_page_is_self_contained():
    html = build_report(make_inputs())
    sources = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert sources and all(s.startswith(("data:image/png;base64,", "#")) for s in sources), \
        [s[:40] for s in sources if not s.startswith(("data:", "#"))]
    assert "@import" not in html and "url(" not in html


def test_every_image_has_alt_text():
    html = build_report(make_inputs())
    images = re.findall(r"<img [^>]*>", html)
    assert images and all(re.search(r'alt="[^"]+"', tag) for tag in images)


def test_fashion_mnist_class_names_are_used():
    names = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
    html = build_report(make_inputs(dataset="fashion-mnist", class_names=names))
    assert "Ankle boot" in html and "T-shirt/top" in html
