import io
import os
import pickle

import pytest
import torch

from mnist_xai.errors import ParamError
from mnist_xai.model import MnistCNN, ModelError, build_model, load_model
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
    with pytest.raises(ModelError, match="does not match the MnistCNN architecture"):
        load_model(tmp_path / "other.pt")


def test_a_model_too_large_for_memory_is_one_clear_error():
    """train.hidden = 10^8 would need hundreds of GB: refused before any allocation, with the estimate."""
    train = {"channels1": 32, "channels2": 64, "hidden": 100_000_000, "dropout": 0.25, "batch_size": 128}
    with pytest.raises(ParamError, match=r"training a CNN with .*hidden=100000000.* needs about [0-9.]+ TB of memory, "
                                         r"more than the .* this machine can spare"):
        build_model(train)
    assert isinstance(build_model({**train, "hidden": 128}), MnistCNN)
