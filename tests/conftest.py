"""Shared fixtures: real MNIST from the archives the repository commits, a small trained model, and a real
`dvc repro` of the whole pipeline in a temporary git repository. Nothing outside the repository is read."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
ARCHIVES = ROOT / "archives"

os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:  # share the cores between the workers: oversubscribed
    # OpenMP threads spin and made the suite twice as slow. Set before torch is imported; stages inherit it.
    workers = int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
    os.environ["OMP_NUM_THREADS"] = str(max(1, len(os.sched_getaffinity(0)) // workers))
# the pipelines under test run in temporary repositories that hold no archives: point them at this checkout's
os.environ["MNIST_XAI_MIRRORS"] = str(ARCHIVES / "{dataset}")

from tests.helpers import PipelineRepo  # noqa: E402


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups
def pytest_collection_modifyitems(items):
    """Under pytest-xdist, session fixtures are built once per worker: keep every test of the shared
    pipeline on one worker. (Modules with costly module fixtures set their own xdist_group.)"""
    for item in items:
        if "pipeline" in item.fixturenames:
            item.add_marker(pytest.mark.xdist_group("pipeline"))


@pytest.fixture(scope="session")
def mnist_dir(tmp_path_factory) -> Path:
    from mnist_xai import data

    out = tmp_path_factory.mktemp("data") / "mnist"
    data.download("mnist", out)
    return out


@pytest.fixture(scope="session")
def test_split(mnist_dir):
    from mnist_xai import data

    return data.load_split(mnist_dir, "test")


@pytest.fixture(scope="session")
def trained_model(mnist_dir, test_split):
    """A CNN trained for one epoch on 6,000 real images (~96 % accuracy), channels_last, eval mode."""
    import torch

    from mnist_xai import data
    from mnist_xai.model import MnistCNN
    from mnist_xai.training import train

    images, labels = data.load_split(mnist_dir, "train")
    subset = np.random.default_rng(0).choice(len(images), 6000, replace=False)
    torch.manual_seed(0)
    model = MnistCNN()
    test_images, test_labels = test_split
    train(model, images[subset], labels[subset], test_images[:1000], test_labels[:1000], epochs=1,
          batch_size=64, lr=0.003, weight_decay=1e-4, seed=0, device=torch.device("cpu"))
    torch.use_deterministic_algorithms(False)
    return model.eval()


@pytest.fixture(scope="session")
def trained_resnet(mnist_dir, test_split):
    """A small MnistResNet (widths 16 and 32, two blocks per stage: identity and 1x1 shortcuts) trained like
    trained_model, for one epoch on the same 6,000 images (~95 % accuracy, ~3 s), channels_last, eval mode."""
    import torch

    from mnist_xai import data
    from mnist_xai.model import MnistResNet
    from mnist_xai.training import train

    images, labels = data.load_split(mnist_dir, "train")
    subset = np.random.default_rng(0).choice(len(images), 6000, replace=False)
    torch.manual_seed(0)
    model = MnistResNet(16, 32, blocks=2)
    test_images, test_labels = test_split
    train(model, images[subset], labels[subset], test_images[:1000], test_labels[:1000], epochs=1,
          batch_size=64, lr=0.003, weight_decay=1e-4, seed=0, device=torch.device("cpu"))
    torch.use_deterministic_algorithms(False)
    return model.eval()


@pytest.fixture(scope="session", params=["cnn", "resnet"])
def any_model(request):
    """Each architecture's trained model in turn: trained_model, then trained_resnet."""
    return request.getfixturevalue({"cnn": "trained_model", "resnet": "trained_resnet"}[request.param])


@pytest.fixture(scope="session")
def explain_inputs(test_split):
    """64 real test images (normalised) and their labels."""
    from mnist_xai import data

    images, labels = test_split
    indices = data.stratified_indices(labels, 64, seed=0)
    return data.normalize(images[indices]), labels[indices]


CONTROLS = ["random", "edge", "brightness", "oracle"]  # every pipeline needs them: they calibrate the verdicts
PIPELINE_METHODS = ["saliency", "smoothgrad", "gradcam", "scorecam", "guided_backprop", *CONTROLS]
SMALL_PARAMS = {
    "train": {"n_images": 6000, "epochs": 1},
    "explain": {"n_images": 24},
    "quality": {"replicates": 3, "n_images": 20, "n_randomisation": 8, "n_smooth": 3, "smooth_samples": 4,
                "n_sensitivity": 8, "n_random_logit": 8, "n_road": 8, "n_infidelity": 8, "sensitivity_samples": 5,
                "random_label_images": 500, "random_label_epochs": 30,
                "bootstrap_resamples": 500},
    "decoy": {"n_images": 6000, "epochs": 3, "n_pool": 60, "n_ground_truth": 16, "n_ground_truth_grey": 16},
}


def small_params(methods=PIPELINE_METHODS) -> dict:
    """Params for a quick but real run: 6,000 training images for 1 epoch (~95 % accuracy), 24 explained
    images, small quality subsets, the default 3 replicates,
    and `methods` (the controls always added) with their default params from
    params.yaml."""
    import yaml

    configured = yaml.safe_load((ROOT / "params.yaml").read_text())["explain"]["methods"]
    params = {key: dict(value) for key, value in SMALL_PARAMS.items()}
    chosen = list(dict.fromkeys([*methods, *CONTROLS]))
    params["explain"] = {**params["explain"], "methods": {m: configured[m] for m in chosen}}
    return params


def quick_params(methods) -> dict:
    """Smaller than small_params, for runs whose checks are about the plumbing (a queue, a store, a server),
    not the verdicts: the trainings see fewer images (the twins as many as in small_params, so that they still
    learn their cue), with half the channels, one residual block per stage and one replicate."""
    params = small_params(methods)
    params["train"] |= {"n_images": 3000, "channels1": 16, "channels2": 32, "blocks": 1}
    params["decoy"] |= {"n_pool": 80, "n_ground_truth": 16, "n_ground_truth_grey": 16}
    params["quality"] |= {"replicates": 1, "random_label_images": 200, "random_label_epochs": 10,
                          "n_randomisation": 10}
    return params


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory) -> PipelineRepo:
    """The real pipeline, run once with `dvc repro` on a small subset (see small_params): the seed's four
    methods plus guided_backprop and the random control, which the sanity-check test needs."""
    imports = tmp_path_factory.mktemp("imports") / "imports.jsonl"
    repo = PipelineRepo.create(tmp_path_factory.mktemp("pipeline"), small_params(),
                               env={"MNIST_XAI_IMPORT_LOG": str(imports)})
    repo.first_repro = repo.dvc("repro")
    repo.import_log = imports
    del repo.env["MNIST_XAI_IMPORT_LOG"]  # later runs of single stages by other tests are not the pipeline's
    return repo


@pytest.fixture(scope="session")
def browser():
    """One headless Chromium for the session (see tests/browser.py)."""
    from tests import browser

    if not Path(browser.CHROMIUM).is_file():
        message = "Chromium is not installed (apt-get install chromium; ./dev.sh test does it as root)"
        if os.environ.get(browser.SKIP_BROWSER) == "1":
            pytest.skip(message)
        pytest.fail(f"{message}; set {browser.SKIP_BROWSER}=1 to skip the browser tests knowingly")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=browser.CHROMIUM, args=browser.ARGS)
        yield launched
        launched.close()
