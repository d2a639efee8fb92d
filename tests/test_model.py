import io
import os
import pickle

import pytest
import torch

from mnist_xai.model import CAM_LAYER, MnistCNN, ModelError, layer_names, load_model


def test_architecture_two_conv_two_pool_two_fc_relu_modules():
    model = MnistCNN()
    kinds = [type(m).__name__ for m in model.children()]
    assert kinds.count("Conv2d") == 2 and kinds.count("MaxPool2d") == 2 and kinds.count("Linear") == 2
    assert kinds.count("ReLU") == 3  # modules, so Guided Backprop can find them
    assert model(torch.zeros(5, 1, 28, 28)).shape == (5, 10)
    assert CAM_LAYER in layer_names(model)


def test_cam_layer_is_the_second_conv_blocks_relu_before_pooling():
    model = MnistCNN()
    shapes = {}
    model.get_submodule(CAM_LAYER).register_forward_hook(lambda m, i, o: shapes.update(cam=o.shape))
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


class Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


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
