"""The networks: the CNN (two conv layers, two max-pools, two fully connected layers; the default) and a
small ResNet (a stem conv, two stages of residual blocks with BatchNorm, global average pooling, one linear).

Every non-linearity is an `nn.ReLU` module (never `F.relu`, never in place, never used twice in one forward),
so methods that rewrite the ReLU backward pass (Guided Backprop) can find each one, and every layer has a
stable name that CAM methods and the randomisation check refer to.
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


class ResidualBlock(nn.Module):
    """conv3x3 BN ReLU conv3x3 BN, plus the shortcut, then ReLU (He et al. 2016, the basic block). The shortcut
    is the identity, or a 1x1 conv with BN where the block changes the width or the resolution."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        # no nn.Identity module for the identity: its output would be its input tensor, and a hook on it would
        # see only the gradient through the shortcut, not the tensor's whole gradient
        self.shortcut = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(OrderedDict([
                ("conv", nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)),
                ("bn", nn.BatchNorm2d(out_channels)),
            ]))
        self.out_relu = nn.ReLU()  # the block's output after the addition: what CAM methods hook

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.out_relu(out + (x if self.shortcut is None else self.shortcut(x)))


class MnistResNet(nn.Module):
    """stem: conv(1->c1, 3x3, stride 2) BN ReLU (28x28 -> 14x14); stage1: `blocks` residual blocks at c1, 14x14,
    identity shortcuts; stage2: a block with a stride-2 1x1-conv shortcut to c2, 7x7, then `blocks` - 1 with
    identity shortcuts; global average pooling; fc(c2 -> 10)."""

    def __init__(self, channels1: int = 32, channels2: int = 64, blocks: int = 2, n_classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(OrderedDict([
            ("conv", nn.Conv2d(1, channels1, 3, stride=2, padding=1, bias=False)),
            ("bn", nn.BatchNorm2d(channels1)),
            ("relu", nn.ReLU()),
        ]))
        self.stage1 = nn.Sequential(*[ResidualBlock(channels1, channels1) for _ in range(blocks)])
        self.stage2 = nn.Sequential(ResidualBlock(channels1, channels2, stride=2),
                                    *[ResidualBlock(channels2, channels2) for _ in range(blocks - 1)])
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(channels2, n_classes)
        self.cam_layer = f"stage2.{blocks - 1}.out_relu"
        """The default CAM layer: the last residual block's output, after the addition and its ReLU (c2 x 7 x 7)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.pool(self.stage2(self.stage1(self.stem(x))))))


ARCHITECTURES = {"cnn": MnistCNN, "resnet": MnistResNet}


def build_model(train: dict) -> nn.Module:
    """A fresh network as params.yaml's train section describes it (`arch`: cnn, the default, or resnet), after
    checking that training it fits in memory (a too large layer is one line, not a crash)."""
    from mnist_xai.memory import require

    advice = "make the train section's layers or batch smaller"
    if train.get("arch", "cnn") == "resnet":
        sizes = {"channels1": train["channels1"], "channels2": train["channels2"], "blocks": train["blocks"]}
        require(resnet_training_bytes(**sizes, batch_size=train["batch_size"]),
                f"training a ResNet with channels1={sizes['channels1']}, channels2={sizes['channels2']}, "
                f"blocks={sizes['blocks']} and batch_size={train['batch_size']}", advice)
        return MnistResNet(**sizes)
    needed = training_bytes(train["channels1"], train["channels2"], train["hidden"], train["batch_size"])
    require(needed, f"training a CNN with channels1={train['channels1']}, channels2={train['channels2']}, "
            f"hidden={train['hidden']} and batch_size={train['batch_size']}", advice)
    return MnistCNN(train["channels1"], train["channels2"], train["hidden"], train["dropout"])


def architecture_of(state_dict: dict[str, torch.Tensor]) -> str | None:
    """'cnn' or 'resnet', told by the name of the state_dict's first layer; None for neither."""
    return "resnet" if "stem.conv.weight" in state_dict else "cnn" if "conv1.weight" in state_dict else None


def architecture(state_dict: dict[str, torch.Tensor]) -> dict[str, int]:
    """The constructor arguments that a state_dict was saved from (KeyError names a missing key)."""
    if architecture_of(state_dict) == "resnet":
        blocks = sum(1 for key in state_dict if key.startswith("stage2.") and key.endswith(".conv1.weight"))
        if not blocks:
            raise KeyError("stage2.0.conv1.weight")
        return {
            "channels1": state_dict["stem.conv.weight"].shape[0],
            "channels2": state_dict["fc.weight"].shape[1],
            "blocks": blocks,
            "n_classes": state_dict["fc.weight"].shape[0],
        }
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
    """Load a saved state_dict into a fresh network of the architecture its keys name (MnistCNN or
    MnistResNet), in eval mode, channels_last.

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
    arch = architecture_of(state_dict)
    if arch is None:
        raise ModelError(f"{path} does not match the MnistCNN architecture (no conv1.weight) nor the MnistResNet "
                         "one (no stem.conv.weight); re-run the train stage")
    try:
        model = ARCHITECTURES[arch](**architecture(state_dict))
        model.load_state_dict(state_dict)
    except (KeyError, IndexError, RuntimeError) as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()] or [type(error).__name__]
        if lines[0].startswith("Error(s) in loading state_dict") and len(lines) > 1:
            lines = lines[1:]  # that first line is only a heading: the next one says what is wrong
        detail = f"no {error.args[0]}" if isinstance(error, KeyError) else lines[0][:200]
        raise ModelError(f"{path} does not match the {ARCHITECTURES[arch].__name__} architecture ({detail}); "
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


def resnet_training_bytes(channels1: int, channels2: int, blocks: int, batch_size: int, eval_batch: int = 1000
                          ) -> int:
    """About how much memory training MnistResNet takes: weights, gradients and AdamW's two moments (4 copies of
    every parameter, counted on the meta device, so nothing is allocated), plus every layer's output for one
    training batch (all kept for the backward pass, and about as much again in gradients) or for one
    evaluation batch, whichever is larger; float32 throughout."""
    with torch.device("meta"):
        parameters = sum(p.numel() for p in MnistResNet(channels1, channels2, blocks).parameters())
    # outputs per image: the stem's conv, BN and ReLU at 14x14; per block conv, BN, ReLU, conv, BN, sum, ReLU;
    # the downsampling block's shortcut conv and BN; then the pooled vector and the logits
    per_image = (3 + 7 * blocks) * channels1 * 14 * 14 + (7 * blocks + 2) * channels2 * 7 * 7 + channels2 + 10
    return 4 * (4 * parameters + per_image * max(2 * batch_size, eval_batch))
