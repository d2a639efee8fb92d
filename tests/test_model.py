import io
import os
import pickle

import pytest
import torch
from torch import nn

from mnist_xai.errors import ParamError
from mnist_xai.model import MnistCNN, MnistResNet, ModelError, ResidualBlock, build_model, load_model, save_model
from tests.helpers import Exploit


def test_architecture_two_conv_two_pool_two_fc_relu_modules():
    model = MnistCNN()
    kinds = [type(m).__name__ for m in model.children()]
    assert kinds.count("Conv2d") == 2 and kinds.count("MaxPool2d") == 2 and kinds.count("Linear") == 2
    assert kinds.count("ReLU") == 3  # modules, so Guided Backprop can find them
    assert model(torch.zeros(5, 1, 28, 28)).shape == (5, 10)
    assert model.cam_layer in dict(model.named_modules())


def test_cam_layer_is_the_second_conv_blocks_relu_before_pooling():
    model = MnistCNN()
    shapes = {}
    model.get_submodule(model.cam_layer).register_forward_hook(lambda m, i, o: shapes.update(cam=o.shape))
    model(torch.zeros(1, 1, 28, 28))
    assert shapes["cam"] == (1, 64, 11, 11)


def test_load_model_round_trip(tmp_path):
    model = MnistCNN(16, 32, 64).eval()
    torch.save(model.state_dict(), tmp_path / "m.pt")
    loaded = load_model(tmp_path / "m.pt")
    assert not loaded.training
    x = torch.randn(3, 1, 28, 28)
    assert torch.allclose(loaded(x), model(x), atol=1e-5)


def test_missing_model_file(tmp_path):
    with pytest.raises(ModelError, match="model file .*missing.pt is missing: run the train stage"):
        load_model(tmp_path / "missing.pt")


def test_malicious_pickle_is_refused(tmp_path):
    """weights_only=True: a file that would run code on unpickling is rejected, and the code never runs."""
    path = tmp_path / "model.pt"
    buffer = io.BytesIO()
    torch.save({"conv1.weight": Exploit()}, buffer, pickle_module=pickle)
    path.write_bytes(buffer.getvalue())
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        with pytest.raises(ModelError, match="not a loadable weights-only state_dict"):
            load_model(path)
    finally:
        os.chdir(cwd)
    assert not (tmp_path / "pwned").exists()


def test_model_of_another_architecture_is_refused(tmp_path):
    other = torch.nn.Sequential(torch.nn.Linear(784, 10))
    torch.save(other.state_dict(), tmp_path / "other.pt")
    with pytest.raises(ModelError, match=r"does not match the MnistCNN architecture \(no conv1.weight\) nor the "
                                         r"MnistResNet one \(no stem.conv.weight\); re-run the train stage$"):
        load_model(tmp_path / "other.pt")


def test_a_model_too_large_for_memory_is_one_clear_error():
    """train.hidden = 10^8 would need hundreds of GB: refused before any allocation, with the estimate."""
    train = {"channels1": 32, "channels2": 64, "hidden": 100_000_000, "dropout": 0.25, "batch_size": 128}
    with pytest.raises(ParamError, match=r"training a CNN with .*hidden=100000000.* needs about [0-9.]+ TB of memory, "
                                         r"more than the .* this machine can spare"):
        build_model(train)
    assert isinstance(build_model({**train, "hidden": 128}), MnistCNN)


RESNET = {"arch": "resnet", "channels1": 16, "channels2": 32, "blocks": 2, "hidden": 128, "dropout": 0.25,
          "batch_size": 128}


def test_resnet_stem_residual_blocks_gap_and_one_linear():
    model = build_model(RESNET)
    assert isinstance(model, MnistResNet)
    stem = [type(m).__name__ for m in model.stem]
    assert stem == ["Conv2d", "BatchNorm2d", "ReLU"]
    blocks = [*model.stage1, *model.stage2]
    assert len(model.stage1) == len(model.stage2) == 2 and all(isinstance(b, ResidualBlock) for b in blocks)
    for block in blocks:
        assert isinstance(block.bn1, nn.BatchNorm2d) and isinstance(block.bn2, nn.BatchNorm2d)
    # identity shortcuts where width and resolution stay; one 1x1 conv (stride 2) + BN between the stages
    assert [b.shortcut is None for b in blocks] == [True, True, False, True]
    projection = model.stage2[0].shortcut
    assert projection.conv.kernel_size == (1, 1) and projection.conv.stride == (2, 2)
    assert isinstance(projection.bn, nn.BatchNorm2d)
    assert isinstance(model.pool, nn.AdaptiveAvgPool2d)
    assert [name for name, m in model.named_modules() if isinstance(m, nn.Linear)] == ["fc"]
    assert model(torch.zeros(5, 1, 28, 28)).shape == (5, 10)


def test_resnet_uses_a_distinct_relu_module_for_every_non_linearity():
    """Guided Backprop hooks ReLU modules: each must be an nn.ReLU, not in place, and run exactly once per
    forward pass (a shared module would be hooked twice; F.relu would not be hooked at all)."""
    model = build_model(RESNET).eval()
    relus = [m for m in model.modules() if isinstance(m, nn.ReLU)]
    assert len(relus) == 1 + 2 * 4 and not any(m.inplace for m in relus)
    calls = []
    for relu in relus:
        relu.register_forward_hook(lambda m, i, o: calls.append(m))
    model(torch.zeros(1, 1, 28, 28))
    assert len(calls) == len(relus) and len(set(map(id, calls))) == len(relus)


def test_resnet_cam_layer_is_the_last_blocks_output_after_the_addition():
    model = build_model(RESNET).eval()
    assert model.cam_layer == "stage2.1.out_relu"
    outputs = {}
    model.get_submodule(model.cam_layer).register_forward_hook(lambda m, i, o: outputs.update(cam=o))
    model.stage2[1].register_forward_hook(lambda m, i, o: outputs.update(block=o))
    model(torch.randn(2, 1, 28, 28))
    assert outputs["cam"].shape == (2, 32, 7, 7) and outputs["cam"] is outputs["block"]


def test_resnet_load_model_round_trip_detects_the_architecture(tmp_path):
    torch.manual_seed(0)
    model = MnistResNet(8, 24, 3).train()
    model(torch.randn(16, 1, 28, 28))  # BatchNorm's running statistics move away from their defaults
    save_model(model.eval(), tmp_path / "m.pt")
    loaded = load_model(tmp_path / "m.pt")
    assert isinstance(loaded, MnistResNet) and not loaded.training
    assert (len(loaded.stage1), loaded.stage2[0].conv1.out_channels, loaded.cam_layer) == (3, 24, "stage2.2.out_relu")
    x = torch.randn(3, 1, 28, 28)
    torch.testing.assert_close(loaded(x), model(x), rtol=1e-5, atol=1e-5)
    save_model(MnistCNN(8, 16, 32), tmp_path / "cnn.pt")
    assert isinstance(load_model(tmp_path / "cnn.pt"), MnistCNN)


def test_a_resnet_file_that_does_not_fit_is_refused_in_one_line(tmp_path):
    state = MnistResNet(8, 16, 1).state_dict()
    del state["stage2.0.shortcut.conv.weight"]
    torch.save(state, tmp_path / "m.pt")
    with pytest.raises(ModelError, match=r"does not match the MnistResNet architecture \(.*stage2.0.shortcut.conv."
                                         r"weight.*\); re-run the train stage$"):
        load_model(tmp_path / "m.pt")


def test_a_resnet_too_large_for_memory_is_one_clear_error():
    with pytest.raises(ParamError, match=r"training a ResNet with channels1=16, channels2=100000, blocks=2 and "
                                         r"batch_size=128 needs about [0-9.]+ TB of memory, more than the .* this "
                                         r"machine can spare"):
        build_model({**RESNET, "channels2": 100_000})
