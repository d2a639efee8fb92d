import torch
from torch import nn

from mnist_xai.attribution.core import input_gradients
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
