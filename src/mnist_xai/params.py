"""params.yaml: loading, and typed validation before any work starts.

Each stage reads only its own sections. A bad value stops the stage with one
line that names the key, the value and what is allowed; an unknown key is
reported as a typo, with the closest valid key.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import yaml

from mnist_xai.errors import ParamError

PARAMS_FILE = Path("params.yaml")


@dataclass(frozen=True)
class Param:
    """One parameter: its default and what values are allowed."""

    default: Any
    doc: str
    choices: tuple[str, ...] = ()
    minimum: float | None = None  # inclusive lower bound
    positive: bool = False  # strictly greater than zero
    maximum: float | None = None  # inclusive upper bound

    def check(self, key: str, value: Any) -> Any:
        """The value, converted to the default's type; ParamError names the key, the value and what is allowed."""
        kind = type(self.default)
        if self.choices:
            if value not in self.choices:
                raise ParamError(f"{key}={value!r} is not allowed: choose one of {', '.join(self.choices)}")
            return value
        if kind is str:
            if not isinstance(value, str) or not value:
                raise ParamError(f"{key}={value!r} is not allowed: expected a non-empty name")
            return value
        if kind is bool:
            if not isinstance(value, bool):
                raise ParamError(f"{key}={value!r} is not allowed: expected true or false")
            return value
        number_ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if kind is int and not (number_ok and float(value).is_integer()):
            raise ParamError(f"{key}={value!r} is not allowed: expected a whole number")
        if kind is float and not (number_ok and math.isfinite(value)):
            raise ParamError(f"{key}={value!r} is not allowed: expected a finite number")
        converted = kind(value)
        if self.positive and converted <= 0:
            raise ParamError(f"{key}={value!r} is not allowed: it must be greater than 0")
        if self.minimum is not None and converted < self.minimum:
            raise ParamError(f"{key}={value!r} is not allowed: it must be at least {self.minimum:g}")
        if self.maximum is not None and converted > self.maximum:
            raise ParamError(f"{key}={value!r} is not allowed: it must be at most {self.maximum:g}")
        return converted


SECTIONS: dict[str, dict[str, Param]] = {
    "base": {
        "seed": Param(0, "seed for data order, initialisation and sampling", minimum=0),
        "device": Param("auto", "where to compute; auto = cuda when available", choices=("auto", "cpu", "cuda")),
        "dataset": Param("mnist", "which dataset", choices=("mnist", "fashion-mnist")),
    },
    "train": {
        "epochs": Param(5, "passes over the training images", positive=True),
        "batch_size": Param(128, "images per optimisation step", positive=True),
        "lr": Param(0.003, "peak learning rate of the one-cycle schedule", positive=True),
        "weight_decay": Param(0.0001, "AdamW weight decay", minimum=0),
        "n_images": Param(0, "train on a seeded random subset of this many images; 0 = all", minimum=0),
        "channels1": Param(32, "filters of the first conv layer", positive=True),
        "channels2": Param(64, "filters of the second conv layer", positive=True),
        "hidden": Param(128, "units of the first fully connected layer", positive=True),
        "dropout": Param(0.25, "dropout before the last layer", minimum=0, maximum=0.9),
    },
    "explain": {
        "n_images": Param(1000, "test images to explain, stratified by class, misclassified ones first",
                          positive=True),
        "target": Param("predicted", "the class explained: the predicted one or the true label",
                        choices=("predicted", "label")),
    },
    "quality": {
        "n_images": Param(200, "explained images scored for deletion/insertion, sparseness and agreement",
                          positive=True),
        "n_randomisation": Param(64, "images for the model- and data-randomisation checks", positive=True),
        "n_sensitivity": Param(24, "images for max-sensitivity", positive=True),
        "deletion_step": Param(28, "pixels removed or inserted per step of the deletion/insertion curves",
                               positive=True, maximum=784),
        "insertion_start": Param("blur", "the image pixels are inserted into", choices=("blur", "black")),
        "blur_sigma": Param(5.0, "std in pixels of the blurred insertion start", positive=True),
        "threshold": Param(0.5, "a randomisation check passes when Spearman rho is below this", positive=True,
                           maximum=1),
        "sensitivity_samples": Param(8, "perturbations per image for max-sensitivity", positive=True),
        "sensitivity_radius": Param(0.05, "max-sensitivity noise bound, as a fraction of the image's range",
                                    positive=True),
        "random_label_images": Param(2000, "training images of the data-randomisation model", positive=True),
        "random_label_epochs": Param(12, "epochs of the data-randomisation model", positive=True),
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
    """The parsed params file; a syntax error becomes one line with its position."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise ParamError(f"{path} is missing: run from the repository root, where params.yaml lives") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
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


def load(*names: str, path: Path = PARAMS_FILE) -> SimpleNamespace:
    """The validated sections `names` of params.yaml, e.g. load("base", "train").train.epochs."""
    data = read_yaml(path)
    return SimpleNamespace(**{name: section(data, name) for name in names})


def configured_methods(path: Path = PARAMS_FILE) -> dict[str, dict[str, Any]]:
    """explain.methods as {method: raw params}; an empty or malformed mapping is an error."""
    methods = (read_yaml(path).get("explain") or {}).get("methods")
    if not methods or not isinstance(methods, dict):
        raise ParamError("explain.methods in params.yaml is empty: list at least one method, "
                         "e.g. `saliency: {}` (see README for the names)")
    for name, value in methods.items():
        if value is not None and not isinstance(value, dict):
            raise ParamError(f"explain.methods.{name} must be a mapping of parameters (or {{}}), got {value!r}")
    return {name: dict(value or {}) for name, value in methods.items()}


def method_params(method: str, path: Path = PARAMS_FILE) -> dict[str, Any]:
    """explain.methods.<method>, validated against the method's own parameters, defaults filled in."""
    from mnist_xai.attribution import get_method  # the registry itself imports Param from here

    methods = configured_methods(path)
    if method not in methods:
        raise ParamError(f"method {method!r} is not configured under explain.methods in params.yaml")
    return get_method(method).resolve(methods[method], prefix=f"explain.methods.{method}.")
