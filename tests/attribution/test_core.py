import torch
from torch import nn

from mnist_xai.attribution import attribute
from mnist_xai.attribution.core import input_gradients
from mnist_xai.attribution.perturbation import LocalRecompute, window_starts
from mnist_xai.model import MnistCNN, commuted


def test_commuted_relu_and_pool_give_identical_outputs_and_gradients(trained_model, explain_inputs):
    x, _ = explain_inputs
    fast = commuted(trained_model)
    assert [name for name, _ in fast.named_children()][:6] == ["conv1", "pool1", "relu1", "conv2", "pool2", "relu2"]
    assert fast.relu1 is trained_model.relu1  # shared modules: hooks still apply
    with torch.no_grad():
        assert torch.equal(fast(x), trained_model(x))
    targets = torch.arange(len(x)) % 10
    assert torch.equal(input_gradients(fast, x, targets, "logit"), input_gradients(trained_model, x, targets, "logit"))


def test_commuted_keeps_a_cam_layer_and_leaves_custom_forwards_alone():
    model = MnistCNN()
    kept = commuted(model, keep="relu2")
    assert [name for name, _ in kept.named_children()][:6] == ["conv1", "pool1", "relu1", "conv2", "relu2", "pool2"]

    class Custom(nn.Sequential):
        def forward(self, x):
            return super().forward(x) * 2

    custom = Custom(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2))
    assert commuted(custom) is custom


def test_commuted_leaves_the_resnet_alone(trained_resnet):
    """Its ReLUs feed additions and convolutions, never a max-pool, and its forward is its own: nothing to
    reorder, and the very same module comes back (so hooks and CAM layer names still apply)."""
    assert commuted(trained_resnet) is trained_resnet
    assert commuted(trained_resnet, keep=trained_resnet.cam_layer) is trained_resnet


def test_occlusion_on_the_resnet_is_brute_force_full_forward_occlusion(trained_resnet, explain_inputs):
    """LocalRecompute assumes a chain of layers; on the ResNet it steps aside, and the map equals one full
    forward pass per occluded image, computed here patch by patch."""
    x, _ = explain_inputs
    x = x[:6].contiguous(memory_format=torch.channels_last)
    assert LocalRecompute.for_model(trained_resnet) is None
    targets = torch.arange(len(x)) % 10
    window, stride = 5, 3
    ours = attribute("occlusion", trained_resnet, x, targets, window=window, stride=stride, baseline="zero")

    total, coverage = torch.zeros(len(x), 28, 28), torch.zeros(28, 28)
    with torch.no_grad():
        clean = trained_resnet(x).gather(1, targets[:, None])[:, 0]
        starts = window_starts(28, window, stride)
        for r in starts:
            for c in starts:
                occluded = x.clone()
                occluded[:, :, r:r + window, c:c + window] = 0.0
                drop = clean - trained_resnet(occluded).gather(1, targets[:, None])[:, 0]
                total[:, r:r + window, c:c + window] += drop[:, None, None]
                coverage[r:r + window, c:c + window] += 1
    expected = total / coverage
    assert expected.abs().max() > 0.1  # the patches matter: a map of zeros could not pass by accident
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())


def test_local_recompute_still_serves_the_cnn(trained_model):
    assert LocalRecompute.for_model(trained_model) is not None


def test_commuting_is_each_methods_own_property(trained_model, explain_inputs, monkeypatch):
    """A rule that reads the activations between ReLU and max-pool (LRP, DeepLIFT) sets `commutes` False and
    gets the network as built: pool1 then sees the ReLU's output, never a negative value."""
    import dataclasses

    from mnist_xai.attribution import registry

    x, _ = explain_inputs
    smallest = []
    handle = trained_model.pool1.register_forward_pre_hook(
        lambda _module, args: smallest.append(float(args[0].detach().min())))
    try:
        attribute("saliency", trained_model, x[:8])
        assert registry.get_method("saliency").commutes and min(smallest) < 0  # commuted: pool before ReLU
        monkeypatch.setitem(registry.REGISTRY, "saliency",
                            dataclasses.replace(registry.get_method("saliency"), commutes=False))
        smallest.clear()
        attribute("saliency", trained_model, x[:8])
        assert min(smallest) >= 0
    finally:
        handle.remove()


def test_every_method_declares_the_passes_it_needs():
    """The benchmark's bound reads each method's `passes`; a new method without one gets the default, never a
    KeyError."""
    from mnist_xai.attribution.registry import METHODS, get_method

    for name in METHODS:
        spec = get_method(name)
        passes = spec.passes(spec.resolve({}))
        assert set(passes) <= {"f", "fb"} and all(isinstance(n, int) and n >= 0 for n in passes.values()), name
