"""The report builder on hand-made inputs: escaping of everything that comes from outside, and the
self-contained, offline page."""

from __future__ import annotations

import re

import numpy as np

from mnist_xai.explanation import Explanation
from mnist_xai.report import ReportInputs, build_report

EVIL = '<script>window.pwned = 1; alert("x")</script>'


def quality_inputs(methods: list[str], n: int) -> dict:
    """What the quality stages would write, from the verdict rule run on synthetic per-image scores (the controls
    included, as every pipeline has them)."""
    from mnist_xai.quality.metrics import METRICS, estimate
    from mnist_xai.quality.verdict import Judge, findings
    from tests.quality.test_verdict import synthetic

    real = [m for m in methods if m not in ("random", "edge", "brightness", "oracle")]
    values = synthetic(**{m: 0.9 - 0.3 * i for i, m in enumerate(real)})
    judge = Judge(values, constant_share=dict.fromkeys(values, 0.0), random_label_fit=0.97, resamples=300, seed=0)
    ranked = judge.verdicts()
    verdicts = [{"method": v.method, "verdict": v.verdict, "reason": v.reason, "rank": r, "control": v.control,
                 "threshold_sensitive": v.sensitive_to, "evidence": [vars(e) for e in v.evidence]}
                for r, v in enumerate(ranked, 1)]
    by_method = {v["method"]: v for v in verdicts}
    summary = {m: {**{metric.key: dict(zip(("value", "low", "high"), estimate(values[m], metric.key, 300, 0),
                                           strict=True)) for metric in METRICS},
                   "constant_share": 0.0, "degenerate": 0, "verdict": by_method[m]["verdict"],
                   "control": int(by_method[m]["control"])} for m in values}
    share = {"value": 0.9, "low": 0.89, "high": 0.91}
    cue = {"accuracy": {twin: dict.fromkeys(("consistent", "shuffled", "none"), share)
                        for twin in ("decoy", "no_reliance")},
           "reliance": {"decoy": {"value": 0.5, "low": 0.45, "high": 0.55}, "no_reliance": share},
           "dominated": share, "dominated_per_label": {"0": share, "1": share}, "n_pool": 40, "n_dominated": 36,
           "n_ground_truth": 4, "ground_truth_labels": {"0": 2, "1": 2}}
    decoy = {"cues": {"pattern": cue, "grey": cue}, "chance": 16 / 784, "pointing_tolerance": 2,
             "pointing_chance": 0.042, "epochs": 2, "n_train_images": 100, "uninformative_share": 0.4,
             "n_intervention": n}
    rng = np.random.default_rng(1)
    scores = {m: {**{f"gt_examples_{c}_{twin}": rng.normal(size=(4, 28, 28)) for c in ("pattern", "grey")
                     for twin in ("decoy", "twin")},
                  "examples": rng.normal(size=(3, 4, 28, 28)), "example_indices": np.arange(4),
                  "mprt_layers": np.array(["fc2", "fc1"])} for m in values}
    labels = {cue: np.arange(120) % 10 for cue in ("pattern", "grey")}
    return dict(
        quality={"chance": 16 / 784, "pointing_chance": 0.042, "methods": summary},
        verdicts={"verdicts": verdicts, "calibration": judge.calibration(), "neighbours": judge.neighbours(ranked),
                  "meta_evaluation": judge.meta_evaluation(permutations=200), "findings": findings(judge, ranked),
                  "per_label": judge.per_label(labels), "random_label_fit": 0.97, "chance": 16 / 784,
                  "pointing_chance": 0.042, "pointing_tolerance": 2},
        decoy=decoy,
        ground_truth={f"{c}_{key}": value for c in ("pattern", "grey") for key, value in
                      (("indices", np.arange(4)), ("corners", np.arange(4) % 4), ("labels", np.arange(4)))},
        scores=scores,
        quality_curves=[{"method": m, "curve": c, "fraction": f, "mean": 1 - f, "std": 0.1}
                        for m in values for c in ("deletion", "insertion") for f in (0.0, 0.5, 1.0)],
        quality_randomisation=[{"method": m, "step": k, "randomised": "+".join(["fc2", "fc1"][:k]) or "none",
                                "rho": 1 - 0.3 * k, "constant_maps": 0.0} for m in values for k in range(3)],
        quality_agreement=[{"a": a, "b": b, "rho": 1.0 if a == b else 0.3} for a in values for b in values],
        quality_timing={m: {"faithfulness": 0.1} for m in values},
        random_label_metrics={"n_images": 500, "epochs": 30, "train_accuracy_on_permuted_labels": 0.97,
                              "control_test_accuracy": 0.9},
    )


def make_inputs(**overrides) -> ReportInputs:
    rng = np.random.default_rng(0)
    n = 30
    labels = np.arange(n) % 10
    predictions = labels.copy()
    predictions[:5] = (predictions[:5] + 1) % 10
    explanations = {m: Explanation(method=m, maps=rng.normal(size=(n, 28, 28)).astype(np.float32),
                                   indices=np.arange(n), labels=labels, predictions=predictions,
                                   targets=predictions, seconds=0.1)
                    for m in ("saliency", "gradcam", "random", "edge", "brightness", "oracle")}
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
                "explain": {"target": "predicted"}, "methods": {"saliency": {}, "gradcam": {}},
                "quality": {"bootstrap_resamples": 300}},
        **quality_inputs(list(explanations), n),
    )
    inputs.update(overrides)
    return ReportInputs(**inputs)


def test_outside_strings_are_escaped_everywhere():
    inputs = make_inputs(
        class_names=[f"{EVIL}{c}" for c in range(10)],  # labels
        params={"base": {"dataset": EVIL}, "train": {"epochs": 1, "batch_size": 8, "lr": EVIL},
                "explain": {"target": "predicted"}, "methods": {"saliency": {"note": EVIL}, "gradcam": {}},
                "quality": {"bootstrap_resamples": 300}},
        git={"git_commit": EVIL, "git_dirty": "true", "git_dirty_files": EVIL},
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


def test_every_id_is_unique_and_every_link_lands():
    """Two elements shared id="per-class" (the section and the evaluation table), so the nav link landed on the
    wrong one."""
    html = build_report(make_inputs())
    ids = re.findall(r'\sid="([^"]+)"', html)
    assert len(ids) == len(set(ids)), sorted({i for i in ids if ids.count(i) > 1})
    targets = re.findall(r'href="#([^"]+)"', html)
    assert targets and set(targets) <= set(ids), set(targets) - set(ids)
    for section in ("trust", "calibration", "findings", "ground-truth", "quality", "meta", "sanity"):
        assert f'<section id="{section}">' in html


def test_the_commit_says_what_is_dirty():
    html = build_report(make_inputs(git={"git_commit": "abc123", "git_dirty": "true",
                                         "git_dirty_files": "params.yaml"}))
    assert "(changed: params.yaml)" in html
    assert "(changed" not in build_report(make_inputs(git={"git_commit": "abc123", "git_dirty": "false"}))


def test_the_faithfulness_section_names_the_draws_of_the_trained_model():
    """With retrained draws, the report says deletion and insertion were scored on each, with their accuracies;
    without them (one replicate), it says nothing of the kind."""
    html = build_report(make_inputs(retrained_metrics={"test_accuracy": [0.9941, 0.9933]}))
    assert "scored on 3 draws of the trained model" in html and "99.41 %, 99.33 %" in html
    assert "draws of the trained model" not in build_report(make_inputs())
