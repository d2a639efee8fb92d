"""Properties every method must have, on each architecture (the CNN and the ResNet): shape, finiteness, sign,
determinism, batching independence, the model left as it was."""

import pytest
import torch

from mnist_xai.attribution import METHODS, REGISTRY, attribute
from mnist_xai.errors import ParamError
from mnist_xai.model import MnistResNet

FAST = {"smoothgrad": {"n_samples": 8}, "smoothgrad_sq": {"n_samples": 8}, "vargrad": {"n_samples": 8},
        "integrated_gradients": {"steps": 16}, "shapley_sampling": {"n_samples": 4}, "kernel_shap": {"n_samples": 32},
        "lime": {"n_samples": 32}}


@pytest.fixture(scope="module", autouse=True)
def backgrounds(explain_inputs):
    """The methods that take a baseline distribution get 16 other test images as theirs (and few samples)."""
    x, _ = explain_inputs
    for method in METHODS:
        if REGISTRY[method].background:
            fewer = {"n_samples": 8} if "n_samples" in REGISTRY[method].params else {}
            FAST[method] = {"background": x[32:48], "n_background": 4 if method == "deeplift_shap" else 16, **fewer}


@pytest.fixture(scope="module")
def batch(explain_inputs):
    x, labels = explain_inputs
    return x[:16], torch.as_tensor(labels[:16])


@pytest.mark.parametrize("method", METHODS)
def test_shape_dtype_finite_and_sign(method, any_model, batch):
    x, labels = batch
    maps = attribute(method, any_model, x, labels, **FAST.get(method, {}))
    assert maps.shape == (16, 28, 28) and maps.dtype == torch.float32 and maps.device == x.device
    assert torch.isfinite(maps).all()
    if not REGISTRY[method].signed:
        assert (maps >= 0).all(), f"{method} is documented as non-negative"
    assert maps.abs().sum() > 0


@pytest.mark.parametrize("method", METHODS)
def test_deterministic_and_independent_of_batch_size(method, any_model, batch):
    x, labels = batch
    params = FAST.get(method, {})
    first = attribute(method, any_model, x, labels, **params)
    again = attribute(method, any_model, x, labels, **params)
    assert torch.equal(first, again)
    rebatched = attribute(method, any_model, x, labels, batch_size=24, **params)
    torch.testing.assert_close(rebatched, first, rtol=1e-4, atol=1e-4 * first.abs().max().item())


@pytest.mark.parametrize("method", [m for m in METHODS if "seed" in REGISTRY[m].params])
def test_seed_changes_stochastic_methods(method, any_model, batch):
    x, labels = batch
    params = FAST.get(method, {})
    assert not torch.equal(attribute(method, any_model, x, labels, seed=1, **params),
                           attribute(method, any_model, x, labels, seed=2, **params))


def test_targets_default_to_the_predicted_class(trained_model, batch):
    x, _ = batch
    predicted = trained_model(x).argmax(1)
    assert torch.equal(attribute("saliency", trained_model, x), attribute("saliency", trained_model, x, predicted))


@pytest.mark.parametrize("method", METHODS)
def test_model_state_is_restored(method, any_model, batch):
    """A model in training mode is explained in eval mode and handed back as it came: still training, every
    parameter trainable, and BatchNorm's running statistics untouched (a forward pass in training mode would
    move them, and change every later prediction)."""
    x, labels = batch
    state = {name: value.clone() for name, value in any_model.state_dict().items()}
    any_model.train()
    try:
        attribute(method, any_model, x, labels, **FAST.get(method, {}))
        assert any_model.training and all(m.training for m in any_model.modules())
        assert all(p.requires_grad for p in any_model.parameters())
    finally:
        any_model.eval()
    assert all(torch.equal(value, state[name]) for name, value in any_model.state_dict().items())


def test_unknown_method_lists_the_valid_names(trained_model, batch):
    with pytest.raises(ParamError, match=r"unknown attribution method 'gradcm' \(did you mean 'gradcam'\?\): "
                                         r"choose from saliency, smoothgrad"):
        attribute("gradcm", trained_model, *batch)


def test_unknown_layer_lists_the_valid_names(trained_model, batch):
    with pytest.raises(ParamError, match=r"layer 'relu9' is unknown for a CAM method: choose one of conv1, relu1, "
                                         r"pool1, conv2, relu2, pool2$"):
        attribute("gradcam", trained_model, *batch, layer="relu9")


CAM_METHODS = [m for m in METHODS if "layer" in REGISTRY[m].params]


@pytest.mark.parametrize("method", CAM_METHODS)
@pytest.mark.parametrize("layer", ["flatten", "fc1", "relu3", "dropout", "fc2"])
def test_a_layer_without_a_spatial_output_is_refused_by_every_cam_method(trained_model, batch, method, layer):
    """These layers' outputs are vectors: there is no map to weight. Refused with one line (an IndexError
    traceback before), and the list offered holds only layers that work."""
    with pytest.raises(ParamError, match=rf"layer '{layer}' is not a spatial layer .* for a CAM method: choose one "
                                         r"of conv1, relu1, pool1, conv2, relu2, pool2$"):
        attribute(method, trained_model, *batch, layer=layer)


@pytest.mark.parametrize("method", CAM_METHODS)
@pytest.mark.parametrize("layer", ["conv1", "relu1", "pool1", "conv2", "pool2"])
def test_every_listed_spatial_layer_works_for_every_cam_method(trained_model, batch, method, layer):
    maps = attribute(method, trained_model, *batch, layer=layer)
    assert maps.shape == (16, 28, 28) and torch.isfinite(maps).all()


def test_bad_param_value(trained_model, batch):
    with pytest.raises(ParamError, match=r"sigma=0 is not allowed: it must be greater than 0"):
        attribute("smoothgrad", trained_model, *batch, sigma=0)
    with pytest.raises(ParamError, match=r"unknown parameter 'sigam' for method 'smoothgrad' \(did you mean 'sigma'"):
        attribute("smoothgrad", trained_model, *batch, sigam=0.1)


def test_auto_layer_is_the_last_conv_relu(trained_model, batch):
    assert torch.equal(attribute("gradcam", trained_model, *batch),
                       attribute("gradcam", trained_model, *batch, layer="relu2"))


def test_integrated_gradients_completeness(any_model, batch):
    """Sum of IG equals score(x) - score(baseline), up to the quadrature error (through the ResNet's residual
    additions and BatchNorm too). The ResNet's path crosses more ReLU kinks, and its error falls only as
    1/steps (measured 0.034 at 128 steps, 0.010 at 512, 0.0033 at 2048): it gets 1024."""
    x, labels = batch
    steps = 1024 if isinstance(any_model, MnistResNet) else 128
    maps = attribute("integrated_gradients", any_model, x, labels, steps=steps, rule="gausslegendre",
                     baseline="black", batch_size=512)
    with torch.no_grad():
        from mnist_xai.data import BLACK

        gap = any_model(x).gather(1, labels[:, None]).squeeze(1) - \
            any_model(torch.full_like(x, BLACK)).gather(1, labels[:, None]).squeeze(1)
    torch.testing.assert_close(maps.sum(dim=(1, 2)), gap, rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("stride", [5, 30])
def test_an_occlusion_stride_larger_than_its_window_is_refused(trained_model, batch, stride):
    """With stride 5 and window 4 a third of the pixels are covered by no patch (NaN maps before); stride 30
    was a traceback."""
    with pytest.raises(ParamError, match=rf"stride={stride} is not allowed with window=4: a stride larger than "
                                         r"the window leaves pixels that no patch covers"):
        attribute("occlusion", trained_model, *batch, stride=stride)


def test_a_non_finite_map_is_an_error_naming_the_method_and_its_params(trained_model, batch):
    """No map may hold NaN or inf: an input that makes the gradient infinite is caught at the source."""
    from mnist_xai.attribution.core import AttributionError

    x, labels = batch
    broken = x.clone()
    broken[0, 0, 0, 0] = float("nan")
    with pytest.raises(AttributionError, match=r"input_x_gradient gave NaN or inf in 1 of 16 maps with params "
                                               r"\{'score': 'logit'\}"):
        attribute("input_x_gradient", trained_model, broken, labels)


@pytest.mark.parametrize("method, params", [("smoothgrad", {"n_samples": 300, "batch_size": 64}),
                                            ("integrated_gradients", {"steps": 300, "batch_size": 64})])
def test_many_samples_are_chunked_to_the_batch_size_with_the_same_maps(trained_model, batch, method, params):
    """n_samples (or steps) far above batch_size no longer materialise every noisy copy at once (10 GB of RSS
    and a crash for n_samples = 10^6): they are differentiated batch_size rows at a time, and on the CPU the
    maps equal the unchunked computation's up to float32 summation order."""
    x, labels = batch
    chunked = attribute(method, trained_model, x[:2], labels[:2], **params)
    whole = attribute(method, trained_model, x[:2], labels[:2], **{**params, "batch_size": 600})
    torch.testing.assert_close(chunked, whole, rtol=1e-4, atol=1e-5 * whole.abs().max().item())


# --- the ResNet's CAM layers ---------------------------------------------------------------------

RESNET_SPATIAL = ", ".join(["stem", "stem.conv", "stem.bn", "stem.relu", "stage1"]
                           + [f"stage1.{b}{part}" for b in (0, 1) for part in
                              ("", ".conv1", ".bn1", ".relu1", ".conv2", ".bn2", ".out_relu")]
                           + ["stage2", "stage2.0", "stage2.0.conv1", "stage2.0.bn1", "stage2.0.relu1",
                              "stage2.0.conv2", "stage2.0.bn2", "stage2.0.shortcut", "stage2.0.shortcut.conv",
                              "stage2.0.shortcut.bn", "stage2.0.out_relu"]
                           + [f"stage2.1{part}" for part in
                              ("", ".conv1", ".bn1", ".relu1", ".conv2", ".bn2", ".out_relu")])


@pytest.mark.parametrize("method", CAM_METHODS)
@pytest.mark.parametrize("layer, kind", [("flatten", "not a spatial layer .*"), ("fc", "not a spatial layer .*"),
                                         ("pool", r"a 1 x 1 feature map \(a CAM there is constant\)"),
                                         ("stage3", "unknown")])
def test_the_resnet_offers_only_its_spatial_layers(trained_resnet, batch, method, layer, kind):
    """Blocks and stages count (their outputs are feature maps); the pooled 1 x 1 output and the vectors after
    it do not."""
    with pytest.raises(ParamError, match=rf"^layer '{layer}' is {kind} for a CAM method: choose one of "
                                         rf"{RESNET_SPATIAL}$"):
        attribute(method, trained_resnet, *batch, layer=layer)


@pytest.mark.parametrize("method", CAM_METHODS)
def test_the_resnets_default_cam_layer_is_its_last_block(trained_resnet, batch, method):
    """'auto' is the last block's post-addition ReLU; the block itself (and its stage) output the same tensor,
    so a CAM there is the same map."""
    auto = attribute(method, trained_resnet, *batch)
    assert torch.equal(auto, attribute(method, trained_resnet, *batch, layer="stage2.1.out_relu"))
    assert torch.equal(auto, attribute(method, trained_resnet, *batch, layer="stage2.1"))
    assert torch.equal(auto, attribute(method, trained_resnet, *batch, layer="stage2"))
    assert not torch.equal(auto, attribute(method, trained_resnet, *batch, layer="stage2.0"))


@pytest.mark.parametrize("method", CAM_METHODS)
@pytest.mark.parametrize("layer", ["stem", "stage1.0", "stage1.1.bn2", "stage2.0.relu1", "stage2.0.shortcut"])
def test_listed_resnet_layers_work_for_every_cam_method(trained_resnet, batch, method, layer):
    maps = attribute(method, trained_resnet, *batch, layer=layer)
    assert maps.shape == (16, 28, 28) and torch.isfinite(maps).all() and maps.abs().sum() > 0
