"""Pieces every attribution method shares: the explained score, input gradients, chunking, layers."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch
import torch.nn.functional as F
from torch import nn

from mnist_xai.errors import ParamError


def target_scores(logits: torch.Tensor, targets: torch.Tensor, score: str) -> torch.Tensor:
    """The explained score per row: the target's logit, or its softmax probability."""
    if score == "softmax":
        logits = logits.softmax(dim=1)
    return logits.gather(1, targets[:, None]).squeeze(1)


def input_gradients(model: nn.Module, x: torch.Tensor, targets: torch.Tensor, score: str) -> torch.Tensor:
    """d score / d x for every row of x (rows are independent in eval mode, so one backward of the sum)."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        scores = target_scores(model(x), targets, score)
        (grads,) = torch.autograd.grad(scores.sum(), x)
    return grads


_progress: ContextVar = ContextVar("attribution_progress", default=None)


def chunks(total: int, size: int) -> Iterator[slice]:
    """Row slices of at most `size`."""
    for start in range(0, total, size):
        yield slice(start, min(start + size, total))


def image_chunks(total: int, size: int) -> Iterator[slice]:
    """Like chunks(), over the images being explained: advances the progress bar, if one is shown."""
    bar = _progress.get()
    for rows in chunks(total, size):
        yield rows
        if bar is not None:
            bar.update(rows.stop - rows.start)


@contextmanager
def progress_bar(total: int, description: str, enabled: bool):
    """A tqdm bar over images that image_chunks() advances."""
    if not enabled:
        yield
        return
    from tqdm.auto import tqdm

    with tqdm(total=total, desc=description, unit="img", mininterval=1.0) as bar:
        token = _progress.set(bar)
        try:
            yield
        finally:
            _progress.reset(token)


def images_per_chunk(batch_size: int, passes_per_image: int) -> int:
    """Images per chunk so that one forward pass holds about `batch_size` rows."""
    return max(1, batch_size // passes_per_image)


def upsample(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear, half-pixel centres (align_corners=False): what cv2.resize and pytorch-grad-cam do."""
    return F.interpolate(maps, size=size, mode="bilinear", align_corners=False)


@contextmanager
def explaining(model: nn.Module):
    """Eval mode and frozen parameters for the duration, restored afterwards.

    Frozen parameters mean autograd records only what the input (or a hooked
    activation) needs: no weight gradients, and no graph at all below a CAM layer.
    """
    was_training = model.training
    frozen = [p for p in model.parameters() if p.requires_grad]
    model.eval()
    for p in frozen:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in frozen:
            p.requires_grad_(True)
        model.train(was_training)


def uses_channels_last(model: nn.Module) -> bool:
    return any(
        isinstance(m, nn.Conv2d) and m.weight.is_contiguous(memory_format=torch.channels_last)
        and not m.weight.is_contiguous()
        for m in model.modules()
    )


def default_cam_layer(model: nn.Module) -> str:
    """The last Conv2d's output, taken after its ReLU when a ReLU module follows it."""
    names = [(name, module) for name, module in model.named_modules() if name]
    last_conv = max((i for i, (_, m) in enumerate(names) if isinstance(m, nn.Conv2d)), default=None)
    if last_conv is None:
        raise ParamError("the model has no Conv2d layer for a CAM method: pass layer=<module name>")
    following = names[last_conv + 1][1] if last_conv + 1 < len(names) else None
    return names[last_conv + 1][0] if isinstance(following, nn.ReLU) else names[last_conv][0]


def layer_name(model: nn.Module, layer: str) -> str:
    """`layer` checked against the model's module names ('auto': see default_cam_layer); a clear error
    lists the valid names."""
    if layer == "auto":
        return default_cam_layer(model)
    names = [name for name, _ in model.named_modules() if name]
    if layer not in names:
        raise ParamError(f"unknown layer {layer!r} for a CAM method: choose one of {', '.join(names)}")
    return layer


def resolve_layer(model: nn.Module, layer: str) -> nn.Module:
    """The module named `layer` (see layer_name)."""
    return model.get_submodule(layer_name(model, layer))


@contextmanager
def capture_output(module: nn.Module, requires_grad: bool, detach: bool = True):
    """Record `module`'s output during a forward pass. By default as a fresh leaf we can take gradients
    to (and nothing below it is recorded); with detach=False as it is, inside the whole graph."""
    captured: dict[str, torch.Tensor] = {}

    def hook(_module, _inputs, output):
        if detach:
            output = output.detach().requires_grad_(requires_grad)
        captured["activation"] = output
        return output

    handle = module.register_forward_hook(hook)
    try:
        yield captured
    finally:
        handle.remove()


def reduce_channels(maps: torch.Tensor) -> torch.Tensor:
    """[N, C, H, W] -> [N, H, W] by summing channels (a no-op squeeze for greyscale)."""
    return maps.sum(dim=1)
