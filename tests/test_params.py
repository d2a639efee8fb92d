import pytest

from mnist_xai import params
from mnist_xai.errors import ParamError
from tests.conftest import ROOT

CONTROLS = "    random: {}\n    edge: {}\n    brightness: {}\n    oracle: {}\n"  # explain.methods must hold them


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
    ("arch", "vgg", "train.arch='vgg' is not allowed: choose one of cnn, resnet"),
    ("blocks", "0", "train.blocks=0 is not allowed: it must be greater than 0"),
    ("blocks", "1.5", "train.blocks=1.5 is not allowed: expected a whole number"),
])
def test_bad_train_values(tmp_path, key, value, message):
    path = write(tmp_path, f"train:\n  {key}: {value}\nexplain:\n  methods:\n" + CONTROLS)
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
        params.load("base", path=write(tmp_path, "base:\n  dataset: cifar10\nexplain:\n  methods:\n" + CONTROLS))


def test_numbers_are_read_as_dvc_reads_them(tmp_path):
    """YAML 1.2, as DVC's ruamel.yaml reads params.yaml: 1e-3 is a number (PyYAML's YAML 1.1 made it the
    string '1e-3', and the stage failed with a misleading 'expected a finite number')."""
    path = write(tmp_path, "train:\n  lr: 1e-3\n  weight_decay: 5E-4\nexplain:\n  methods:\n" + CONTROLS)
    loaded = params.load("train", path=path)
    assert loaded.train.lr == 0.001 and loaded.train.weight_decay == 0.0005


@pytest.mark.parametrize("text, message", [
    ("train:\n  epochs: 2\n  epochs: 3\n", r"params.yaml has the key 'epochs' twice \(lines 2 and 3\): keep one"),
    ("train:\n  epochs: 2\nbase:\n  seed: 1\ntrain:\n  lr: 0.1\n",
     r"params.yaml has the key 'train' twice \(lines 1 and 5\): keep one"),
])
def test_a_duplicate_key_or_section_is_one_clear_error(tmp_path, text, message):
    """Before, the last `train:` silently won and reset the other train keys to their defaults."""
    with pytest.raises(ParamError, match=message):
        params.load("base", path=write(tmp_path, text))


def test_every_stage_checks_the_whole_file(tmp_path):
    """A typo in quality.* stops a stage that reads only `base`: the first stage to run fails, not the one
    after training."""
    path = write(tmp_path, "quality:\n  n_imagez: 3\nexplain:\n  methods:\n" + CONTROLS)
    with pytest.raises(ParamError, match=r"unknown key quality.n_imagez in params.yaml \(a typo\?\): did you mean "
                                         r"quality.n_images\?"):
        params.load("base", path=path)
    with pytest.raises(ParamError, match=r"unknown key explan in params.yaml \(a typo\?\): did you mean explain\?"):
        params.load("base", path=write(tmp_path, "explan:\n  n_images: 3\n"))
    with pytest.raises(ParamError, match=r"explain.methods.gradcam.layer=3 is not allowed: expected a non-empty name"):
        params.load("base", path=write(tmp_path, "explain:\n  methods:\n" + CONTROLS + "    gradcam: {layer: 3}\n"))


@pytest.mark.parametrize("value, message", [
    ("1180591620717411303424", "base.seed=1180591620717411303424 is not allowed: it must be at most 2147483647"),
    ("-1", "base.seed=-1 is not allowed: it must be at least 0"),
    (".inf", "base.seed=inf is not allowed: expected a whole number"),
])
def test_seeds_beyond_what_the_generators_take_are_refused(tmp_path, value, message):
    """2**70 was an overflow traceback deep in torch."""
    with pytest.raises(ParamError, match=message):
        params.load("base", path=write(tmp_path, f"base:\n  seed: {value}\n"))


def test_the_controls_are_required(tmp_path):
    with pytest.raises(ParamError, match=r"explain.methods must include the controls edge, oracle \(edge: \{\}, "
                                         r"oracle: \{\}\): every verdict is calibrated by the controls random, edge, "
                                         r"brightness, oracle"):
        params.load("base", path=write(tmp_path, "explain:\n  methods:\n    saliency: {}\n    random: {}\n"
                                                 "    brightness: {}\n"))


def test_clamping_says_so_in_one_warning_and_returns_what_is_used(caplog):
    import logging

    with caplog.at_level(logging.WARNING):
        assert params.clamp("explain.n_images", 20000, 10000, "the 10000 test images") == 10000
        assert params.clamp("explain.n_images", 50, 10000, "the 10000 test images") == 50
    assert [r.getMessage() for r in caplog.records] == [
        "explain.n_images=20000 asks for more than the 10000 test images: using 10000"]


def test_checking_every_param_imports_no_torch(tmp_path):
    """Every stage checks the whole file, method params included, before it imports torch: the circular
    params -> attribution -> registry -> params import is gone (schema.py), so a typo fails in a fraction of a
    second."""
    import subprocess
    import sys

    code = ("import sys; from mnist_xai import params; "
            "params.load('base', 'train', 'explain', 'quality', 'decoy', path=sys.argv[1]); "
            "from mnist_xai.attribution import registry; registry.get_method('gradcam').resolve({}); "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    result = subprocess.run([sys.executable, "-c", code, str(ROOT / "params.yaml")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]


def test_dvc_refuses_a_duplicate_key_before_any_stage_runs(tmp_path):
    """Under `dvc repro` DVC reads params.yaml itself (ruamel, YAML 1.2) and stops on a duplicate key, naming
    the file and both lines, before any stage runs: nothing is deleted."""
    from tests.helpers import PipelineRepo

    repo = PipelineRepo.create(tmp_path / "repo")
    text = (repo.path / "params.yaml").read_text()
    (repo.path / "params.yaml").write_text(text.replace("base:\n", "base:\n  seed: 1\n", 1))
    result = repo.dvc("repro", "download", check=False)
    assert result.returncode != 0
    assert 'found duplicate key "seed"' in result.stdout + result.stderr
    assert "Running stage" not in result.stdout and not (repo.path / "data").exists()
