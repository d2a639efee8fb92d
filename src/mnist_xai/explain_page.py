"""The page `mnist-xai explain` writes: a user's own images, what the model predicts, every method's map.

One self-contained HTML file: Jinja2 with autoescaping and StrictUndefined, every picture a data: URI,
no script, no request to anywhere. The maps follow the report's colour conventions (report/figures.py).
It lives outside report/, which dvc.yaml lists as a dependency of the report stage: editing this page
must not re-run that stage.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from mnist_xai.attribution import REGISTRY, is_signed
from mnist_xai.report import figures
from mnist_xai.report.builder import render_template
from mnist_xai.user_image import OodScore, Prepared

TEMPLATE = Path(__file__).parent / "explain_page.html.j2"
LOW_CONFIDENCE = 0.7
"""Below this top probability the page warns that the model is unsure."""
UNUSUAL_PERCENTILE = 95.0
"""At or above this OOD percentile the page warns that the image looks unlike the training data."""
ORIGINAL_SIDE = 320  # the original is shown at most this many pixels on its longer side


@dataclass
class ImageResult:
    """One explained image."""

    name: str  # the path as the user gave it
    prepared: Prepared
    probabilities: np.ndarray  # float [n_classes], softmax of the model's output
    maps: dict[str, np.ndarray]  # method -> float32 [28, 28], explaining the predicted class
    seconds: dict[str, float]  # method -> wall time of its attribution
    ood: OodScore | None = None
    nearest_image: np.ndarray | None = None  # uint8 [28, 28]: the nearest training image
    nearest_label: int | None = None

    @property
    def predicted(self) -> int:
        return int(np.argmax(self.probabilities))


@dataclass
class PageInputs:
    results: list[ImageResult]
    class_names: list[str]
    dataset: str
    model_path: str
    model_md5: str
    method_params: dict[str, dict[str, Any]]  # method -> the params it ran with
    params_source: str  # where the params came from, in words
    verdicts: dict[str, dict] | None = None  # method -> {"verdict", "scores": {label: (value, low, high)}}
    verdicts_source: str = ""  # e.g. "metrics/quality.json of the last pipeline run"
    verdicts_model_md5: str | None = None  # the md5 of the model the pipeline scored (or why it is unknown)
    ood_note: str = ""  # why there is no OOD score, when there is none
    extra_warnings: list[str] = field(default_factory=list)


def warnings_for(result: ImageResult) -> list[str]:
    """What the reader must know before trusting this image's explanation."""
    found = []
    if result.prepared.blank:
        found.append("No ink found: the image is blank (or has almost no contrast), so the model sees an "
                     "empty black square.")
    top = float(result.probabilities.max())
    if top < LOW_CONFIDENCE:
        found.append(f"The model is unsure: its top probability is {100 * top:.0f} % (below "
                     f"{100 * LOW_CONFIDENCE:.0f} %), so every map explains a weak decision.")
    if result.ood is not None and result.ood.percentile >= UNUSUAL_PERCENTILE:
        found.append(f"The image looks unlike the training data: it is further from its nearest training image "
                     f"than {result.ood.percentile:.0f} % of real test images are (warning at "
                     f"{UNUSUAL_PERCENTILE:.0f} %).")
    return found


def _original_png(prepared: Prepared) -> bytes:
    image = prepared.original.copy()
    image.thumbnail((ORIGINAL_SIDE, ORIGINAL_SIDE), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _image_context(index: int, result: ImageResult, inputs: PageInputs) -> dict[str, Any]:
    names = inputs.class_names
    prepared, predicted = result.prepared, result.predicted
    top = float(result.probabilities[predicted])
    probabilities = [{"name": name, "percent": 100 * float(p), "top": c == predicted}
                     for c, (name, p) in enumerate(zip(names, result.probabilities, strict=True))]
    maps = []
    for method, attribution in result.maps.items():
        signed = is_signed(method)
        limit = figures.scale_limit(attribution)
        rgb = figures.overlay_rgb(prepared.image, attribution, limit, signed)
        verdict = (inputs.verdicts or {}).get(method)
        maps.append({
            "method": method, "signed": signed, "limit": limit,
            "src": figures.data_uri(figures.png_bytes(rgb)),
            "alt": f"{method} attribution for {result.name}, explaining class {names[predicted]}",
            "colour_bar": figures.data_uri(figures.colour_bar_png(signed)),
            "conventions": REGISTRY[method].conventions if method in REGISTRY else "",
            "params": inputs.method_params.get(method, {}),
            "milliseconds": 1000 * result.seconds.get(method, float("nan")),
            "verdict": verdict["verdict"] if verdict else None,
            "reported": verdict.get("reported", verdict["verdict"]) if verdict else None,
            "scores": [{"label": label, "value": value, "low": low, "high": high}
                       for label, (value, low, high) in verdict["scores"].items()] if verdict else [],
        })
    ood = None
    if result.ood is not None:
        ood = {"percentile": result.ood.percentile, "distance": result.ood.distance,
               "median": result.ood.reference_median, "n_reference": result.ood.n_reference,
               "n_train": result.ood.n_train, "nearest_index": result.ood.nearest,
               "nearest_label": names[result.nearest_label] if result.nearest_label is not None else "?",
               "nearest_src": figures.data_uri(figures.digit_png(result.nearest_image))
               if result.nearest_image is not None else None}
    left, top_edge, right, bottom = prepared.ink_box
    return {
        "anchor": f"image-{index}",
        "name": result.name,
        "original": figures.data_uri(_original_png(prepared)),
        "prepared": figures.data_uri(figures.digit_png(prepared.image)),
        "width": prepared.size[0], "height": prepared.size[1], "mode": prepared.mode, "format": prepared.format,
        "inverted": prepared.inverted, "blank": prepared.blank,
        "ink_box": f"{right - left} × {bottom - top_edge} px" if not prepared.blank else "none",
        "predicted": names[predicted], "top_percent": 100 * top,
        "probabilities": probabilities,
        "maps": maps,
        "ood": ood,
        "warnings": warnings_for(result),
    }


def build_context(inputs: PageInputs) -> dict[str, Any]:
    images = [_image_context(i, result, inputs) for i, result in enumerate(inputs.results, 1)]
    stale = inputs.verdicts is not None and inputs.verdicts_model_md5 != inputs.model_md5
    return {
        "images": images,
        "dataset": inputs.dataset,
        "model_path": inputs.model_path,
        "model_md5": inputs.model_md5,
        "methods": list(inputs.method_params),
        "params_source": inputs.params_source,
        "verdicts": inputs.verdicts is not None,
        "verdicts_source": inputs.verdicts_source,
        "verdicts_model_md5": inputs.verdicts_model_md5,
        "verdicts_stale": stale,
        "ood_note": inputs.ood_note,
        "extra_warnings": inputs.extra_warnings,
        "low_confidence": 100 * LOW_CONFIDENCE,
        "unusual_percentile": UNUSUAL_PERCENTILE,
    }


def render(context: dict[str, Any]) -> str:
    return render_template(TEMPLATE, context)


def build_page(inputs: PageInputs) -> str:
    return render(build_context(inputs))
