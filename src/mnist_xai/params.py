"""params.yaml: loading, and typed validation before any work starts.

Each stage reads only its own sections. A bad value stops the stage with one
line that names the key, the value and what is allowed; an unknown key is
reported as a typo, with the closest valid key.
"""

from __future__ import annotations

import difflib
import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from mnist_xai.errors import ParamError
from mnist_xai.schema import Param, seed_param

PARAMS_FILE = Path("params.yaml")


SECTIONS: dict[str, dict[str, Param]] = {
    "base": {
        "seed": seed_param("seed for data order, initialisation and sampling"),
        "device": Param("auto", "where to compute; auto = cuda when available", choices=("auto", "cpu", "cuda")),
        "dataset": Param("mnist", "which dataset", choices=("mnist", "fashion-mnist")),
    },
    "train": {
        "epochs": Param(5, "passes over the training images", positive=True),
        "batch_size": Param(128, "images per optimisation step", positive=True),
        "lr": Param(0.003, "peak learning rate of the one-cycle schedule", positive=True),
        "weight_decay": Param(0.0001, "AdamW weight decay", minimum=0),
        "n_images": Param(0, "train on a seeded random subset of this many images; 0 = all", minimum=0),
        "arch": Param("cnn", "the network: cnn (two conv layers, two fully connected) or resnet (a small residual "
                      "network)", choices=("cnn", "resnet")),
        "channels1": Param(32, "filters of the first conv layer (resnet: of the stem and the first stage)",
                           positive=True),
        "channels2": Param(64, "filters of the second conv layer (resnet: of the second stage)", positive=True),
        "hidden": Param(128, "units of the first fully connected layer (cnn only)", positive=True),
        "dropout": Param(0.25, "dropout before the last layer (cnn only)", minimum=0, maximum=0.9),
        "blocks": Param(2, "residual blocks per stage (resnet only)", positive=True),
    },
    "explain": {
        "n_images": Param(1000, "test images to explain, stratified by class, misclassified ones first",
                          positive=True),
        "target": Param("predicted", "the class explained: the predicted one or the true label",
                        choices=("predicted", "label")),
    },
    "quality": {
        "replicates": Param(5, "independent draws of every random source of the checks (the decoy twins, the "
                            "ground-truth images, the permuted-label networks, the randomised networks and their "
                            "images, and for deletion/insertion the trained model itself): every interval covers "
                            "them, and each verdict is also decided per replicate, for its support",
                            positive=True, maximum=20),
        "n_images": Param(200, "explained images scored for deletion/insertion, faithfulness correlation, the "
                          "completeness gap and sparseness", positive=True),
        "n_randomisation": Param(15, "images per replicate for the randomisation checks (original MPRT, Efficient "
                                 "MPRT, data randomisation), each replicate its own", positive=True),
        "n_smooth": Param(4, "of those, images per replicate for Smooth MPRT (each costs smooth_samples maps on two "
                          "models)", positive=True),
        "smooth_samples": Param(10, "noisy copies averaged per Smooth MPRT map (the last one clean)", positive=True,
                                minimum=2),
        "smooth_noise": Param(0.1, "Smooth MPRT noise std as a fraction of the image's range (Quantus' default)",
                              positive=True),
        "entropy_bins": Param(100, "histogram bins of Efficient MPRT (Quantus' default)", minimum=2),
        "n_sensitivity": Param(24, "images for max-sensitivity and the relative input and output stability",
                               positive=True),
        "n_random_logit": Param(48, "images for Random Logit (each explained once more, for another class)",
                                positive=True),
        "deletion_step": Param(28, "pixels removed or inserted per step of the deletion/insertion curves",
                               positive=True, maximum=784),
        "faithfulness_runs": Param(100, "random pixel subsets per image for faithfulness correlation (Quantus' "
                                   "default)", positive=True, minimum=2),
        "faithfulness_subset": Param(28, "pixels per subset, set to black (Quantus' 224 is for 224 x 224 images; "
                                     "here 28 of 784, 3.6 %)", positive=True, maximum=784),
        "n_road": Param(48, "images for ROAD (each image's pixels removed at road_steps shares, most and least "
                        "relevant first: 2 x road_steps forward passes and imputations)", positive=True),
        "road_steps": Param(9, "ROAD: shares of the image removed, evenly spaced (9: 10, 20, ..., 90 %; Quantus' "
                            "default is 50: 1, 3, ..., 99 %)", positive=True, maximum=99),
        "road_noise": Param(0.01, "ROAD: std of the Gaussian noise added to the imputed pixels, in normalised input "
                            "units (Quantus' default)", minimum=0),
        "n_infidelity": Param(64, "images for infidelity", positive=True),
        "infidelity_samples": Param(32, "random 4 x 4 squares removed, one at a time, per infidelity image (Captum's "
                                    "default is 10)", positive=True, minimum=2),
        "insertion_start": Param("blur", "the image pixels are inserted into", choices=("blur", "black")),
        "blur_sigma": Param(5.0, "std in pixels of the blurred insertion start", positive=True),
        "sensitivity_samples": Param(8, "perturbations per image for max-sensitivity", positive=True),
        "sensitivity_radius": Param(0.05, "max-sensitivity noise bound, as a fraction of the image's range",
                                    positive=True),
        "random_label_images": Param(500, "training images of the data-randomisation model", positive=True),
        "random_label_epochs": Param(30, "epochs of the data-randomisation model: enough to memorise its permuted "
                                     "labels", positive=True),
        "bootstrap_resamples": Param(2000, "bootstrap resamples behind every 95 % interval", minimum=200,
                                     maximum=100000),
    },
    "decoy": {
        "epochs": Param(1, "epochs of each twin (the same architecture, trained on the cued images)", positive=True),
        "lr": Param(0.01, "their peak learning rate", positive=True),
        "batch_size": Param(64, "their images per optimisation step", positive=True),
        "n_images": Param(20000, "train the twins on a seeded random subset of this many images; 0 = all",
                          minimum=0),
        "uninformative_share": Param(0.4, "share of the twins' training images whose label is drawn at random, "
                                     "independent of the digit: only the cue can fit them, so the decoy twin must "
                                     "learn it", minimum=0, maximum=0.9),
        "n_pool": Param(50, "test images swept per cue type and replicate (every 4x4 window removed in turn) for "
                        "those on which the cue dominates the decoy model's decision", positive=True),
        "n_ground_truth": Param(20, "of those, the images with the pattern cue (the verdict's main line) on which "
                                "each method is scored", positive=True),
        "n_ground_truth_grey": Param(10, "the same for the grey cue (a caution line)", positive=True),
    },
    "report": {
        "n_samples": Param(8, "sample images in the method gallery", positive=True, maximum=100),
        "n_misclassified": Param(6, "misclassified images explained by every method", minimum=0, maximum=100),
        "baseline": Param("none", "a git revision (commit, tag, branch, experiment) whose metrics the report "
                          "compares with; none for no comparison"),
    },
    "tracking": {
        "experiment": Param("mnist-xai", "MLflow experiment name"),
        "register_model": Param(True, "register each trained model as a new version in the MLflow model registry"),
        "model_name": Param("mnist-xai-cnn", "registered model name"),
    },
}
NESTED = {"explain": "methods"}  # section -> key holding a mapping validated elsewhere


def read_yaml(path: Path = PARAMS_FILE) -> dict[str, Any]:
    """The parsed params file, read as DVC reads it: YAML 1.2 (`1e-3` is a number) with ruamel.yaml, a
    duplicate key refused. A syntax error becomes one line with its position."""
    from ruamel.yaml import YAML
    from ruamel.yaml.constructor import DuplicateKeyError
    from ruamel.yaml.error import MarkedYAMLError, YAMLError

    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise ParamError(f"{path} is missing: run from the repository root, where params.yaml lives") from None
    try:
        data = YAML(typ="safe", pure=True).load(text)
    except DuplicateKeyError as error:
        first, again = error.context_mark, error.problem_mark
        key = str(error.problem).split('"')[1] if '"' in str(error.problem) else "?"
        raise ParamError(f"{path} has the key {key!r} twice (lines {first.line + 1} and {again.line + 1}): "
                         "keep one; DVC refuses such a file too") from None
    except YAMLError as error:
        mark = getattr(error, "problem_mark", None) if isinstance(error, MarkedYAMLError) else None
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ParamError(f"{path} is not valid YAML{where}: {problem}; fix the syntax and re-run") from None
    if not isinstance(data, dict):
        raise ParamError(f"{path} must be a mapping of sections (base, train, ...), got {type(data).__name__}")
    return data


def _unknown_key(key: str, allowed: list[str], where: str) -> ParamError:
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f"did you mean {where}{close[0]}? " if close else ""
    return ParamError(f"unknown key {where}{key} in params.yaml (a typo?): {hint}allowed are {', '.join(allowed)}")


def section(data: dict[str, Any], name: str) -> SimpleNamespace:
    """One validated section, defaults filled in."""
    schema = SECTIONS[name]
    raw = data.get(name) or {}
    if not isinstance(raw, dict):
        raise ParamError(f"params.yaml section {name!r} must be a mapping, got {raw!r}")
    allowed = list(schema) + ([NESTED[name]] if name in NESTED else [])
    values = {}
    for key, value in raw.items():
        if key not in allowed:
            raise _unknown_key(str(key), allowed, f"{name}.")
        if key in schema:
            values[key] = schema[key].check(f"{name}.{key}", value)
    return SimpleNamespace(**{**{key: param.default for key, param in schema.items()}, **values})


def validate(data: dict[str, Any]) -> dict[str, SimpleNamespace]:
    """Every section and every method's params checked: a typo anywhere stops whichever stage runs first."""
    for name in data:
        if name not in SECTIONS:
            raise _unknown_key(str(name), list(SECTIONS), "")
    sections = {name: section(data, name) for name in SECTIONS}
    methods = _methods(data)
    for method, raw in methods.items():
        _resolve_method(method, raw)
    from mnist_xai.attribution.registry import CONTROLS  # torch-free

    missing = [control for control in CONTROLS if control not in methods]
    if missing:
        raise ParamError(f"explain.methods must include the control{'s' * (len(missing) > 1)} "
                         f"{', '.join(missing)} ({': {}, '.join(missing)}: {{}}): every verdict is calibrated by "
                         "the controls " + ", ".join(CONTROLS))
    return sections


def load(*names: str, path: Path = PARAMS_FILE) -> SimpleNamespace:
    """The validated sections `names` of params.yaml, e.g. load("base", "train").train.epochs. The whole
    file is checked first, so a bad value in any section fails here, before any work."""
    sections = validate(read_yaml(path))
    return SimpleNamespace(**{name: sections[name] for name in names})


def _methods(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    methods = (data.get("explain") or {}).get("methods")
    if not methods or not isinstance(methods, dict):
        raise ParamError("explain.methods in params.yaml is empty: list at least one method, "
                         "e.g. `saliency: {}` (see README for the names)")
    for name, value in methods.items():
        if value is not None and not isinstance(value, dict):
            raise ParamError(f"explain.methods.{name} must be a mapping of parameters (or {{}}), got {value!r}")
    return {str(name): dict(value or {}) for name, value in methods.items()}


def _resolve_method(method: str, raw: dict[str, Any]) -> dict[str, Any]:
    from mnist_xai.attribution.registry import get_method  # torch-free

    return get_method(method).resolve(raw, prefix=f"explain.methods.{method}.")


def configured_methods(path: Path = PARAMS_FILE) -> dict[str, dict[str, Any]]:
    """explain.methods as {method: raw params}; an empty or malformed mapping is an error."""
    return _methods(read_yaml(path))


def method_params(method: str, path: Path = PARAMS_FILE) -> dict[str, Any]:
    """explain.methods.<method>, validated against the method's own parameters, defaults filled in."""
    methods = configured_methods(path)
    if method not in methods:
        raise ParamError(f"method {method!r} is not configured under explain.methods in params.yaml")
    return _resolve_method(method, methods[method])


def clamp(key: str, value: int, limit: int, what: str) -> int:
    """`value`, or `limit` when it asks for more than there is, said in one warning line; record what this
    returns, not what was asked."""
    if value <= limit:
        return value
    logging.getLogger("params").warning("%s=%d asks for more than %s: using %d", key, value, what, limit)
    return limit
