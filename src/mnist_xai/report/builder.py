"""Builds the one self-contained HTML report from the pipeline's outputs.

Everything goes through Jinja2 with autoescaping on; pictures are embedded
as data: URIs, so the file opens from disk with no network.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import numpy as np

from mnist_xai.attribution import REGISTRY, is_signed
from mnist_xai.attribution.registry import CONTROLS
from mnist_xai.evaluation import confusion_matrix
from mnist_xai.explanation import Explanation
from mnist_xai.quality.metrics import GROUND_TRUTH, KEY_SCORES, METRICS
from mnist_xai.quality.verdict import RERUN_DRAWS, RERUN_FLAG
from mnist_xai.report import figures

log = logging.getLogger(__name__)

TEMPLATE_DIR = Path(__file__).parent


@dataclass
class ReportInputs:
    """What the report shows; the report stage fills it from the pipeline's files."""

    dataset: str
    class_names: list[str]
    test_images: np.ndarray  # uint8 [N, 28, 28]
    test_labels: np.ndarray
    train_metrics: dict
    train_timing: dict
    history: list[dict]
    evaluate_metrics: dict
    predictions: np.ndarray  # every test image's predicted class
    explanations: dict[str, Explanation]  # method -> maps, in the configured order
    explain_timing: dict[str, dict]
    params: dict[str, Any]
    git: dict[str, str] = field(default_factory=dict)
    n_samples: int = 8
    n_misclassified: int = 6
    quality: dict | None = None  # metrics/quality.json: {"chance", "methods": {method: {metric: {value, low, high}}}}
    verdicts: dict | None = None  # quality/verdicts.json: verdicts, neighbours, meta_evaluation, findings
    decoy: dict = field(default_factory=dict)  # metrics/decoy.json
    ground_truth: dict[str, np.ndarray] = field(default_factory=dict)  # ground_truth/decoy.npz
    scores: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # quality/scores/<method>.npz
    quality_curves: list[dict] = field(default_factory=list)  # plots/quality/curves.json
    quality_randomisation: list[dict] = field(default_factory=list)  # plots/quality/randomisation.json
    quality_agreement: list[dict] = field(default_factory=list)  # plots/quality/agreement.json
    quality_timing: dict[str, dict] = field(default_factory=dict)  # method -> seconds per part
    random_label_metrics: dict = field(default_factory=dict)
    retrained_metrics: dict = field(default_factory=dict)  # metrics/train_replicates.json: the model drawn again
    provenance: dict = field(default_factory=dict)  # hashes, tracking URI, the MLflow run behind each file
    baseline: dict | None = None  # {"rev", "evaluate": metrics, "quality": metrics}


def read_history(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return [{key: (int(value) if key == "epoch" else float(value)) for key, value in row.items()}
                for row in csv.DictReader(handle)]


def pick_samples(explanation: Explanation, count: int, correct: bool) -> list[int]:
    """Rows of the explanation to show: one per class in turn, correctly or wrongly classified."""
    hits = (explanation.predictions == explanation.labels) == correct
    by_class: dict[int, list[int]] = {}
    for row in np.flatnonzero(hits):
        by_class.setdefault(int(explanation.labels[row]), []).append(int(row))
    chosen: list[int] = []
    while len(chosen) < count and any(by_class.values()):
        for label in sorted(by_class):
            if by_class[label] and len(chosen) < count:
                chosen.append(by_class[label].pop(0))
    return chosen


def _map_cells(inputs: ReportInputs, rows: list[int]) -> tuple[list[dict], list[dict]]:
    """The digit column and, per method, one overlay per row, all on the method's shared scale."""
    reference = next(iter(inputs.explanations.values()))
    names = inputs.class_names
    samples = []
    for row in rows:
        index = int(reference.indices[row])
        label, predicted = int(reference.labels[row]), int(reference.predictions[row])
        samples.append({
            "index": index, "label": names[label], "predicted": names[predicted],
            "src": figures.data_uri(figures.digit_png(inputs.test_images[index])),
            "alt": f"Test image #{index}: true class {names[label]}, predicted {names[predicted]}",
        })
    methods = []
    for method, explanation in inputs.explanations.items():
        signed = is_signed(method)
        maps = explanation.maps[rows]
        limit = figures.scale_limit(maps)
        cells = []
        for row, sample in zip(rows, samples, strict=True):
            rgb = figures.overlay_rgb(inputs.test_images[sample["index"]], explanation.maps[row], limit, signed)
            target = names[int(explanation.targets[row])]
            cells.append({
                "src": figures.data_uri(figures.png_bytes(rgb)),
                "alt": f"{method} attribution for test image #{sample['index']} (true {sample['label']}, "
                       f"predicted {sample['predicted']}), explaining class {target}",
                "sample": sample["index"],
            })
        methods.append({"name": method, "cells": cells, "limit": limit, "signed": signed,
                        "colour_bar": figures.data_uri(figures.colour_bar_png(signed))})
    return samples, methods


VERDICT_CLASS = {"trust": "trust", "use with care": "care", "too weak to call": "weak", "do not trust": "no",
                 "unstable": "unstable", "control": "control"}


def _quality_context(inputs: ReportInputs) -> dict[str, Any]:
    """The quality sections: verdicts and controls, calibration, findings, ground truth, the table, meta-evaluation,
    curves, agreement."""
    if not inputs.quality or not inputs.verdicts:
        return {"quality": None}
    summaries = inputs.quality["methods"]
    verdicts = inputs.verdicts["verdicts"]
    by_method = {v["method"]: v for v in verdicts}
    neighbours = {row["a"]: row for row in inputs.verdicts["neighbours"]}
    order = [v["method"] for v in verdicts]  # best first, controls last
    table = [{"method": method, "values": summaries[method], "verdict": summaries[method]["verdict"],
              "control": bool(summaries[method].get("control")), "rank": by_method.get(method, {}).get("rank"),
              "seconds_per_image": inputs.explain_timing.get(method, {}).get("seconds_per_image")}
             for method in sorted(summaries, key=lambda m: order.index(m) if m in order else len(order))]
    names = list(dict.fromkeys(row["a"] for row in inputs.quality_agreement))
    matrix = np.array([[row["rho"] for row in inputs.quality_agreement if row["a"] == a] for a in names])
    per_label = inputs.verdicts["per_label"]
    return {
        "quality": True,
        "chance": inputs.quality["chance"],
        "pointing_chance": inputs.verdicts["pointing_chance"],
        "pointing_tolerance": inputs.verdicts["pointing_tolerance"],
        "replicates": inputs.verdicts.get("replicates", 1),
        "decision_confidence": 100 * inputs.verdicts.get("decision_confidence", 0.95),
        "rerun_flag": RERUN_FLAG, "rerun_draws": RERUN_DRAWS,
        "metrics": METRICS,
        "table_metrics": [m for m in METRICS if m.group != GROUND_TRUTH or m.key in KEY_SCORES],
        "ground_truth_metrics": [m for m in METRICS if m.group == GROUND_TRUTH],
        "metric_groups": list(dict.fromkeys(metric.group for metric in METRICS)),
        "quality_table": table,
        "verdicts": verdicts,
        "verdict_class": VERDICT_CLASS,
        "neighbours": neighbours,
        "calibration": inputs.verdicts["calibration"],
        "meta_evaluation": inputs.verdicts["meta_evaluation"],
        "findings": inputs.verdicts["findings"],
        "per_label": per_label,
        "per_label_columns": {cue: sorted(next(iter(table.values())), key=int) for cue, table in per_label.items()},
        "random_label_fit": inputs.verdicts["random_label_fit"],
        "decoy": inputs.decoy,
        "ground_truth_examples": _ground_truth_examples(inputs),
        "faithfulness_figure": figures.data_uri(figures.figure_png(figures.faithfulness_figure(inputs.quality_curves))),
        "randomisation_figure": figures.data_uri(figures.figure_png(
            figures.randomisation_figure(inputs.quality_randomisation))),
        "agreement_figure": figures.data_uri(figures.figure_png(figures.agreement_figure(names, matrix)))
        if names else None,
        "randomisation_examples": _randomisation_examples(inputs),
        "quality_timing": [{"method": m, "seconds": sum(parts.values()), **parts}
                           for m, parts in inputs.quality_timing.items()],
        "random_label_metrics": inputs.random_label_metrics,
        "retrained_accuracy": inputs.retrained_metrics.get("test_accuracy", []),
    }


def _ground_truth_examples(inputs: ReportInputs, cue: str = "pattern") -> dict[str, Any] | None:
    """The first ground-truth images with the cue, and each method's map on the decoy twin (which uses the cue) and
    on the no-reliance twin (which does not), on one scale per method."""
    from mnist_xai.decoy import with_cue

    truth = inputs.ground_truth
    if not truth or not inputs.scores or f"{cue}_indices" not in truth:
        return None
    indices, corners, labels = truth[f"{cue}_indices"], truth[f"{cue}_corners"], truth[f"{cue}_labels"]
    count = min(len(indices), *(len(s[f"gt_examples_{cue}_decoy"]) for s in inputs.scores.values()))
    images = with_cue(inputs.test_images[indices[:count]], corners[:count], labels[:count], cue)
    names = inputs.class_names
    samples = [{"src": figures.data_uri(figures.digit_png(image)),
                "alt": f"Test image #{int(index)} with the {cue} cue (true class {names[int(label)]})",
                "label": names[int(label)]}
               for image, index, label in zip(images, indices[:count], labels[:count], strict=True)]
    rows = []
    for method, scores in inputs.scores.items():
        decoy_maps, twin_maps = scores[f"gt_examples_{cue}_decoy"][:count], scores[f"gt_examples_{cue}_twin"][:count]
        signed = is_signed(method)
        limit = figures.scale_limit(np.concatenate([decoy_maps, twin_maps]))
        cells = []
        for model, maps in (("decoy", decoy_maps), ("no-reliance", twin_maps)):
            for image, sample, attribution in zip(images, samples, maps, strict=True):
                cells.append({"src": figures.data_uri(figures.png_bytes(
                    figures.overlay_rgb(image, attribution, limit, signed))),
                    "alt": f"{method} map of the {model} twin for {sample['alt'][0].lower()}{sample['alt'][1:]}"})
        rows.append({"name": method, "cells": cells, "limit": limit, "signed": signed,
                     "colour_bar": figures.data_uri(figures.colour_bar_png(signed))})
    return {"samples": samples, "rows": rows}


def _randomisation_examples(inputs: ReportInputs) -> dict[str, Any] | None:
    """Maps of one test image as the model's layers are randomised: a row per method, a column per step."""
    if not inputs.scores:
        return None
    first = next(iter(inputs.scores.values()))
    index = int(first["example_indices"][0])
    image = inputs.test_images[index]
    layers = [str(layer) for layer in first["mprt_layers"]]
    steps = ["trained"] + [f"+{layer}" for layer in layers]
    rows = []
    for method, scores in inputs.scores.items():
        maps = scores["examples"][:, 0]  # [steps, H, W] for the first example image
        signed = is_signed(method)
        limit = figures.scale_limit(maps)
        cells = [{"src": figures.data_uri(figures.png_bytes(figures.overlay_rgb(image, step_map, limit, signed))),
                  "alt": f"{method} map of test image #{index} with {step} randomised"}
                 for step_map, step in zip(maps, steps, strict=True)]
        rows.append({"method": method, "cells": cells})
    return {"index": index, "steps": steps, "rows": rows,
            "digit": figures.data_uri(figures.digit_png(image)),
            "label": inputs.class_names[int(inputs.test_labels[index])]}


def _class_means(inputs: ReportInputs) -> dict[str, Any]:
    """Per method, the mean map of the correctly classified explained images of each class."""
    reference = next(iter(inputs.explanations.values()))
    correct = reference.predictions == reference.labels
    classes = [c for c in range(len(inputs.class_names)) if (correct & (reference.labels == c)).any()]
    rows = []
    for method, explanation in inputs.explanations.items():
        means = np.stack([explanation.maps[correct & (explanation.labels == c)].mean(axis=0) for c in classes])
        signed = is_signed(method)
        limit = figures.scale_limit(means)
        blank = np.zeros(means.shape[1:], dtype=np.uint8)  # means are drawn on black: no one digit to show
        cells = [{"src": figures.data_uri(figures.png_bytes(figures.overlay_rgb(blank, mean, limit, signed))),
                  "alt": f"mean {method} attribution over the correctly classified {inputs.class_names[c]} images"}
                 for c, mean in zip(classes, means, strict=True)]
        rows.append({"name": method, "cells": cells, "limit": limit, "signed": signed,
                     "colour_bar": figures.data_uri(figures.colour_bar_png(signed))})
    return {"class_columns": [inputs.class_names[c] for c in classes], "class_rows": rows}


BASELINE_METRICS = [("gt_reliance", "higher"), ("gt_pointing", "higher"), ("gt_mass", "higher"),
                    ("deletion_auc", "lower"), ("insertion_auc", "higher"), ("smprt_rho", "lower"),
                    ("emprt_rise", "higher")]


def _baseline_rows(inputs: ReportInputs) -> list[dict]:
    """Current against baseline metrics, for the keys both have."""
    if not inputs.baseline:
        return []
    rows = []
    before = inputs.baseline.get("evaluate", {}).get("accuracy")
    if before is not None:
        rows.append({"metric": "test accuracy", "better": "higher", "baseline": before,
                     "current": inputs.evaluate_metrics["accuracy"]})
    old = inputs.baseline.get("quality", {}).get("methods", {})
    new = (inputs.quality or {}).get("methods", {})
    for method in [m for m in new if m in old]:
        for key, better in BASELINE_METRICS:
            if (isinstance(old[method].get(key), dict) and key in new[method]
                    and None not in (old[method][key].get("value"), new[method][key]["value"])):
                rows.append({"metric": f"{method}: {key}", "better": better, "baseline": old[method][key]["value"],
                             "current": new[method][key]["value"]})
    for row in rows:
        row["delta"] = row["current"] - row["baseline"]
        row["improved"] = (row["delta"] > 0) == (row["better"] == "higher") if row["delta"] else None
    return rows


def build_context(inputs: ReportInputs) -> dict[str, Any]:
    if not inputs.explanations:
        raise ValueError("the report needs at least one explanation")
    reference = next(iter(inputs.explanations.values()))
    gallery_rows = pick_samples(reference, inputs.n_samples, correct=True)
    wrong_rows = pick_samples(reference, inputs.n_misclassified, correct=False)
    gallery_samples, gallery = _map_cells(inputs, gallery_rows)
    wrong_samples, wrong = _map_cells(inputs, wrong_rows) if wrong_rows else ([], [])
    confusion = confusion_matrix(inputs.test_labels, inputs.predictions, len(inputs.class_names))
    timing = [{
        "method": method,
        "seconds_per_image": inputs.explain_timing.get(method, {}).get("seconds_per_image"),
        "images_per_second": inputs.explain_timing.get(method, {}).get("images_per_second"),
        "n_images": len(explanation.maps),
    } for method, explanation in inputs.explanations.items()]
    method_info = [{
        "name": method, "reference": REGISTRY[method].reference, "oracle": REGISTRY[method].oracle,
        "conventions": REGISTRY[method].conventions,
        "params": inputs.params.get("methods", {}).get(method, {}),
    } for method in inputs.explanations if method in REGISTRY]
    return {
        "dataset": inputs.dataset,
        "class_names": inputs.class_names,
        "accuracy": inputs.evaluate_metrics["accuracy"],
        "n_test": len(inputs.test_labels),
        "n_misclassified_total": int((inputs.predictions != inputs.test_labels).sum()),
        "n_explained": len(reference.maps),
        "methods": list(inputs.explanations),
        "controls": [m for m in inputs.explanations if m in CONTROLS],
        "n_methods": sum(m not in CONTROLS for m in inputs.explanations),
        "train_metrics": inputs.train_metrics,
        "train_timing": inputs.train_timing,
        "git": inputs.git,
        "params": inputs.params,
        "training_curves": figures.data_uri(figures.figure_png(figures.training_curves(inputs.history))),
        "confusion": figures.data_uri(figures.figure_png(figures.confusion_figure(confusion, inputs.class_names))),
        "per_class": [{"name": inputs.class_names[int(c)], **v}
                      for c, v in inputs.evaluate_metrics["per_class"].items()],
        "gallery_samples": gallery_samples,
        "gallery": gallery,
        "wrong_samples": wrong_samples,
        "wrong": wrong,
        "timing": timing,
        "method_info": method_info,
        "provenance": inputs.provenance,
        "baseline": inputs.baseline,
        "baseline_rows": _baseline_rows(inputs),
        "compute_seconds": (inputs.train_timing.get("train_seconds", 0)
                            + sum(t.get("seconds", 0) for t in inputs.explain_timing.values())
                            + sum(sum(parts.values()) for parts in inputs.quality_timing.values())),
        **_class_means(inputs),
        **_quality_context(inputs),
    }


def render_template(template: Path, context: dict[str, Any]) -> str:
    """A page from its Jinja template (the report, the explain page, the study), everything escaped."""
    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(template.parent), autoescape=True,
                                     undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    environment.filters["fmt"] = format_number
    return environment.get_template(template.name).render(**context)


def render(context: dict[str, Any]) -> str:
    return render_template(TEMPLATE_DIR / "report.html.j2", context)


def format_number(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e-3 or abs(value) >= 1e4 else f"{value:.{digits}f}"
    return str(value)


def build_report(inputs: ReportInputs) -> str:
    return render(build_context(inputs))
