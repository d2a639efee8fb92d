import pytest

from mnist_xai import params
from mnist_xai.errors import ParamError
from tests.conftest import ROOT


def write(tmp_path, text):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


def test_the_committed_params_are_valid():
    loaded = params.load(*params.SECTIONS, path=ROOT / "params.yaml")
    assert loaded.base.dataset == "mnist" and loaded.train.epochs > 0
    for method in params.configured_methods(ROOT / "params.yaml"):
        params.method_params(method, ROOT / "params.yaml")


@pytest.mark.parametrize("key, value, message", [
    ("epochs", "0", "train.epochs=0 is not allowed: it must be greater than 0"),
    ("epochs", "-3", "train.epochs=-3 is not allowed: it must be greater than 0"),
    ("epochs", "five", "train.epochs='five' is not allowed: expected a whole number"),
    ("epochs", "2.5", "train.epochs=2.5 is not allowed: expected a whole number"),
    ("lr", "0", "train.lr=0 is not allowed: it must be greater than 0"),
    ("lr", ".nan", "train.lr=nan is not allowed: expected a finite number"),
    ("batch_size", "-1", "train.batch_size=-1 is not allowed: it must be greater than 0"),
    ("epoch", "3", "unknown key train.epoch in params.yaml (a typo?): did you mean train.epochs?"),
])
def test_bad_train_values(tmp_path, key, value, message):
    path = write(tmp_path, f"train:\n  {key}: {value}\n")
    with pytest.raises(ParamError) as error:
        params.load("train", path=path)
    assert message in str(error.value)


def test_yaml_syntax_error_names_the_position(tmp_path):
    path = write(tmp_path, "train:\n  epochs: [1,\n")
    with pytest.raises(ParamError, match=r"is not valid YAML at line 3, column 1"):
        params.load("train", path=path)


def test_method_params_are_checked_against_the_method(tmp_path):
    path = write(tmp_path, "explain:\n  methods:\n    smoothgrad: {sigma: -0.1}\n    gradcam: {layr: relu2}\n")
    with pytest.raises(ParamError, match=r"explain.methods.smoothgrad.sigma=-0.1 is not allowed"):
        params.method_params("smoothgrad", path)
    with pytest.raises(ParamError, match=r"unknown parameter explain.methods.gradcam.'layr'.*did you mean 'layer'"):
        params.method_params("gradcam", path)


def test_empty_methods(tmp_path):
    with pytest.raises(ParamError, match="explain.methods in params.yaml is empty"):
        params.configured_methods(write(tmp_path, "explain:\n  methods: {}\n"))


def test_unknown_dataset_value(tmp_path):
    with pytest.raises(ParamError, match="base.dataset='cifar10' is not allowed: choose one of mnist, fashion-mnist"):
        params.load("base", path=write(tmp_path, "base:\n  dataset: cifar10\n"))
