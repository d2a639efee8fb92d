"""The CNN: two conv layers, two max-pools, two fully connected layers.

Every non-linearity is an `nn.ReLU` module (never `F.relu`), so methods that
rewrite the ReLU backward pass (Guided Backprop) can find them, and every layer
has a stable name that CAM methods and the randomisation check refer to.
"""

from __future__ import annotations

import pickle
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

from mnist_xai.errors import UserError


class ModelError(UserError):
    """A model file is missing or does not fit the architecture."""


class MnistCNN(nn.Sequential):
    """conv(1->c1, 3x3) relu pool2 -> conv(c1->c2, 3x3) relu pool2 -> fc(c2*5*5 -> hidden) relu dropout fc(->10)."""

    cam_layer = "relu2"
    """The default CAM layer: the second conv block's ReLU output, before pooling (c2 x 11 x 11)."""

    def __init__(self, channels1: int = 32, channels2: int = 64, hidden: int = 128, dropout: float = 0.25,
                 n_classes: int = 10):
        super().__init__(OrderedDict([
            ("conv1", nn.Conv2d(1, channels1, 3)),
            ("relu1", nn.ReLU()),
            ("pool1", nn.MaxPool2d(2)),
            ("conv2", nn.Conv2d(channels1, channels2, 3)),
            ("relu2", nn.ReLU()),
            ("pool2", nn.MaxPool2d(2)),
            ("flatten", nn.Flatten()),
            ("fc1", nn.Linear(channels2 * 5 * 5, hidden)),
            ("relu3", nn.ReLU()),
            ("dropout", nn.Dropout(dropout)),
            ("fc2", nn.Linear(hidden, n_classes)),
        ]))


def build_model(train: dict) -> nn.Module:
    """A fresh network as params.yaml's train section describes it, after checking that training it fits in
    memory (a too large layer is one line, not a crash)."""
    from mnist_xai.memory import require

    needed = training_bytes(train["channels1"], train["channels2"], train["hidden"], train["batch_size"])
    require(needed, f"training a CNN with channels1={train['channels1']}, channels2={train['channels2']}, "
            f"hidden={train['hidden']} and batch_size={train['batch_size']}", "make the train section's layers "
            "or batch smaller")
    return MnistCNN(train["channels1"], train["channels2"], train["hidden"], train["dropout"])


def architecture(state_dict: dict[str, torch.Tensor]) -> dict[str, int]:
    """The constructor arguments that a state_dict was saved from."""
    return {
        "channels1": state_dict["conv1.weight"].shape[0],
        "channels2": state_dict["conv2.weight"].shape[0],
        "hidden": state_dict["fc1.weight"].shape[0],
        "n_classes": state_dict["fc2.weight"].shape[0],
    }


def save_model(model: nn.Module, path: str | Path) -> None:
    """The state_dict as CPU, contiguous tensors (the same bytes whatever the device or memory format),
    written atomically."""
    import io

    from mnist_xai.files import atomic_write_bytes

    buffer = io.BytesIO()
    torch.save({name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()}, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_model(path: str | Path, device: str | torch.device = "cpu") -> nn.Module:
    """Load a saved state_dict into a fresh MnistCNN, in eval mode, channels_last.

    Loads with `weights_only=True`: a file holding anything but tensors is refused.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model file {path} is missing: run the train stage (dvc repro train)")
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # weights_only refused an object: nothing of it was executed
        raise ModelError(f"{path} is not a loadable weights-only state_dict: it holds objects other than tensors, "
                         "which are refused unrun; re-run the train stage") from None
    except Exception as error:  # noqa: BLE001 - torch raises many kinds; all mean "not a state_dict file"
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelError(f"{path} is not a loadable weights-only state_dict ({first_line[:200]})") from None
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise ModelError(f"{path} does not hold a state_dict of tensors: re-run the train stage")
    try:
        model = MnistCNN(**architecture(state_dict))
        model.load_state_dict(state_dict)
    except (KeyError, IndexError, RuntimeError) as error:
        detail = f"no {error.args[0]}" if isinstance(error, KeyError) else str(error).strip().splitlines()[0][:200]
        raise ModelError(f"{path} does not match the MnistCNN architecture ({detail}); "
                         "re-run the train stage") from None
    # channels_last: ~2.8x faster convolutions on CPU; the numbers are the same
    return model.to(device=device, memory_format=torch.channels_last).eval()


def is_plain_sequential(model: nn.Module) -> bool:
    """An nn.Sequential (or subclass) whose forward is Sequential's own: its children are the whole story."""
    return isinstance(model, nn.Sequential) and type(model).forward is nn.Sequential.forward


def commuted(model: nn.Module, keep: str | None = None) -> nn.Module:
    """The same network with every ReLU that directly precedes a MaxPool2d moved after it.

    Max and ReLU commute (both are monotone), so the outputs are bit-identical and the input
    gradients equal (where a max is tied the ReLU zeroes the gradient either way); but the ReLU and
    its backward pass then touch a quarter of the values: 2-2.5x faster forward passes and ~20 % faster
    gradients on CPU (training included: parameter gradients are equal too). The
    modules are shared, not copied, so hooks on them (Guided Backprop) still apply. `keep` names a
    layer whose own output must stay as it is (a CAM layer).
    """
    if not is_plain_sequential(model):
        return model
    children = list(model.named_children())
    reordered, i = [], 0
    while i < len(children):
        (name, module), following = children[i], children[i + 1] if i + 1 < len(children) else None
        if (isinstance(module, nn.ReLU) and following is not None and isinstance(following[1], nn.MaxPool2d)
                and keep not in (name, following[0])):
            reordered += [following, (name, module)]
            i += 2
        else:
            reordered.append((name, module))
            i += 1
    return model if reordered == children else nn.Sequential(OrderedDict(reordered))


def training_bytes(channels1: int, channels2: int, hidden: int, batch_size: int, eval_batch: int = 1000) -> int:
    """About how much memory training MnistCNN takes: weights, gradients and AdamW's two moments (4 copies of
    every parameter), plus the activations of one training batch (kept for the backward pass, about 3 values
    each) or of one evaluation batch, whichever is larger; float32 throughout."""
    parameters = (9 * channels1 + channels1 + 9 * channels1 * channels2 + channels2 + 25 * channels2 * hidden
                  + hidden + 10 * hidden + 10)
    per_image = 26 * 26 * channels1 + 13 * 13 * channels1 + 11 * 11 * channels2 + 5 * 5 * channels2 + hidden + 10
    return 4 * (4 * parameters + per_image * max(3 * batch_size, eval_batch))
