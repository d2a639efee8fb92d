"""Properties every method must have: shape, finiteness, sign, determinism, batching independence."""

import pytest
import torch

from mnist_xai.attribution import METHODS, REGISTRY, attribute
from mnist_xai.errors import ParamError

FAST = {"smoothgrad": {"n_samples": 8}, "smoothgrad_sq": {"n_samples": 8}, "vargrad": {"n_samples": 8},
        "integrated_gradients": {"steps": 16}}


@pytest.fixture(scope="module")
def batch(explain_inputs):
    x, labels = explain_inputs
    return x[:16], torch.as_tensor(labels[:16])


@pytest.mark.parametrize("method", METHODS)
def test_shape_dtype_finite_and_sign(method, trained_model, batch):
    x, labels = batch
    maps = attribute(method, trained_model, x, labels, **FAST.get(method, {}))
    assert maps.shape == (16, 28, 28) and maps.dtype == torch.float32 and maps.device == x.device
    assert torch.isfinite(maps).all()
    if not REGISTRY[method].signed:
        assert (maps >= 0).all(), f"{method} is documented as non-negative"
    assert maps.abs().sum() > 0


@pytest.mark.parametrize("method", METHODS)
def test_deterministic_and_independent_of_batch_size(method, trained_model, batch):
    x, labels = batch
    params = FAST.get(method, {})
    first = attribute(method, trained_model, x, labels, **params)
    again = attribute(method, trained_model, x, labels, **params)
    assert torch.equal(first, again)
    rebatched = attribute(method, trained_model, x, labels, batch_size=24, **params)
    torch.testing.assert_close(rebatched, first, rtol=1e-4, atol=1e-4 * first.abs().max().item())


@pytest.mark.parametrize("method", [m for m in METHODS if "seed" in REGISTRY[m].params])
def test_seed_changes_stochastic_methods(method, trained_model, batch):
    x, labels = batch
    params = FAST.get(method, {})
    assert not torch.equal(attribute(method, trained_model, x, labels, seed=1, **params),
                           attribute(method, trained_model, x, labels, seed=2, **params))


def test_targets_default_to_the_predicted_class(trained_model, batch):
    x, _ = batch
    predicted = trained_model(x).argmax(1)
    assert torch.equal(attribute("saliency", trained_model, x), attribute("saliency", trained_model, x, predicted))


def test_model_state_is_restored(trained_model, batch):
    x, labels = batch
    trained_model.train()
    attribute("gradcam", trained_model, x, labels)
    assert trained_model.training and all(p.requires_grad for p in trained_model.parameters())
    trained_model.eval()


def test_unknown_method_lists_the_valid_names(trained_model, batch):
    with pytest.raises(ParamError, match=r"unknown attribution method 'gradcm' \(did you mean 'gradcam'\?\): "
                                         r"choose from saliency, smoothgrad"):
        attribute("gradcm", trained_model, *batch)


def test_unknown_layer_lists_the_valid_names(trained_model, batch):
    with pytest.raises(ParamError, match=r"unknown layer 'relu9' for a CAM method: choose one of conv1, relu1, "
                                         r"pool1, conv2, relu2"):
        attribute("gradcam", trained_model, *batch, layer="relu9")


def test_bad_param_value(trained_model, batch):
    with pytest.raises(ParamError, match=r"sigma=0 is not allowed: it must be greater than 0"):
        attribute("smoothgrad", trained_model, *batch, sigma=0)
    with pytest.raises(ParamError, match=r"unknown parameter 'sigam' for method 'smoothgrad' \(did you mean 'sigma'"):
        attribute("smoothgrad", trained_model, *batch, sigam=0.1)


def test_auto_layer_is_the_last_conv_relu(trained_model, batch):
    assert torch.equal(attribute("gradcam", trained_model, *batch),
                       attribute("gradcam", trained_model, *batch, layer="relu2"))


def test_integrated_gradients_completeness(trained_model, batch):
    """Sum of IG equals score(x) - score(baseline), up to the quadrature error."""
    x, labels = batch
    maps = attribute("integrated_gradients", trained_model, x, labels, steps=128, rule="gausslegendre",
                     baseline="black")
    with torch.no_grad():
        from mnist_xai.data import BLACK

        gap = trained_model(x).gather(1, labels[:, None]).squeeze(1) - \
            trained_model(torch.full_like(x, BLACK)).gather(1, labels[:, None]).squeeze(1)
    torch.testing.assert_close(maps.sum(dim=(1, 2)), gap, rtol=1e-2, atol=1e-2)
