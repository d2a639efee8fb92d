"""Pieces every attribution method shares: the explained score, input gradients, chunking, layers."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch
import torch.nn.functional as F
from torch import nn

from mnist_xai.errors import ParamError, UserError
from mnist_xai.stage import follow_running_stages


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
        follow_running_stages()  # in a stage, another stage may have started or ended
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


def output_shapes(model: nn.Module, example: torch.Tensor) -> dict[str, tuple[int, ...] | None]:
    """Every named module's output shape (None for an output that is not one tensor), found by one forward
    pass of `example` (one image), so any architecture works, blocks and containers included."""
    shapes: dict[str, tuple[int, ...] | None] = {}
    handles = [module.register_forward_hook(
        lambda _m, _i, output, name=name: shapes.__setitem__(name, tuple(output.shape) if torch.is_tensor(output)
                                                             else None))
        for name, module in model.named_modules() if name]
    try:
        with torch.inference_mode():
            model(example)
    finally:
        for handle in handles:
            handle.remove()
    return shapes


def is_feature_map(shape: tuple[int, ...] | None) -> bool:
    """[N, K, h, w] with more than one position: a 1 x 1 map (after global pooling) upsamples to a constant."""
    return shape is not None and len(shape) == 4 and shape[2] * shape[3] > 1


def spatial_layers(model: nn.Module, example: torch.Tensor) -> list[str]:
    """Names of the modules whose output is a feature map [N, K, h, w] (h x w > 1): the layers a CAM can use."""
    shapes = output_shapes(model, example)
    return [name for name, _ in model.named_modules() if is_feature_map(shapes.get(name))]


def default_cam_layer(model: nn.Module) -> str:
    """The model's own `cam_layer` when it names one (every architecture here does: the last conv block's
    output); otherwise the last Conv2d, taken after its ReLU when a ReLU module follows it."""
    if getattr(model, "cam_layer", None):
        return model.cam_layer
    names = [(name, module) for name, module in model.named_modules() if name]
    last_conv = max((i for i, (_, m) in enumerate(names) if isinstance(m, nn.Conv2d)), default=None)
    if last_conv is None:
        raise ParamError("the model has no Conv2d layer for a CAM method: pass layer=<module name>")
    following = names[last_conv + 1][1] if last_conv + 1 < len(names) else None
    return names[last_conv + 1][0] if isinstance(following, nn.ReLU) else names[last_conv][0]


def layer_name(model: nn.Module, layer: str, example: torch.Tensor) -> str:
    """`layer` checked against the model's spatial layers ('auto': see default_cam_layer); a clear error
    lists the valid names."""
    name = default_cam_layer(model) if layer == "auto" else layer
    shapes = output_shapes(model, example)
    valid = [module for module, _ in model.named_modules() if is_feature_map(shapes.get(module))]
    if name not in valid:
        shape = shapes.get(name)
        if name not in dict(model.named_modules()):
            kind = "unknown"
        elif shape is not None and len(shape) == 4:
            kind = "a 1 x 1 feature map (a CAM there is constant)"
        else:
            kind = "not a spatial layer (its output is not a [N, K, h, w] feature map)"
        raise ParamError(f"layer {name!r} is {kind} for a CAM method: choose one of {', '.join(valid)}")
    return name


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


def _background(method: str, background, count: int, inputs: torch.Tensor) -> torch.Tensor:
    """The first `count` background images, checked, on the inputs' device and dtype."""
    if background is None:
        raise ParamError(f"{method} takes a baseline distribution: pass background=<training images, float "
                         f"[M, {inputs.shape[1]}, {inputs.shape[2]}, {inputs.shape[3]}]> (e.g. "
                         "mnist_xai.data.background_images(train_images, n, seed))")
    background = torch.as_tensor(background)
    if background.dim() != 4 or tuple(background.shape[1:]) != tuple(inputs.shape[1:]):
        shape = ", ".join(map(str, inputs.shape[1:]))
        raise ParamError(f"background must be images shaped like the inputs [M, {shape}], got {list(background.shape)}")
    if len(background) < count:
        raise ParamError(f"n_background={count} is more than the {len(background)} background images given: pass "
                         f"more, or use n_background <= {len(background)}")
    return background[:count].to(inputs.device, inputs.dtype)


class AttributionError(UserError):
    """A method produced maps that cannot be used (NaN or inf)."""


def attribute(method: str, model: nn.Module, inputs: torch.Tensor, targets=None, *, show_progress: bool = False,
              background: torch.Tensor | None = None, **params) -> torch.Tensor:
    """Attribution maps float32 [N, H, W] for inputs [N, C, H, W], on the inputs' device.

    `targets`: class per input (a tensor, a sequence, or one int for all); None explains the
    predicted class. `params`: the method's parameters (see REGISTRY[method].all_params).
    `show_progress`: a tqdm bar over the images. `background`: for the methods that take a baseline distribution
    (REGISTRY[method].background), a sample of training images [M, C, H, W] in the model's input space (see
    mnist_xai.data.background_images); the first `n_background` of them are used.
    Stochastic methods are deterministic given `seed`. The model is put in eval mode with
    frozen parameters for the call and restored afterwards. Methods whose `commutes` property holds
    run on model.commuted(model): the same numbers, with fewer ReLU operations. A map holding NaN or
    inf is an error that names the method and its params.
    """
    from mnist_xai.attribution.registry import get_method
    from mnist_xai.model import commuted

    spec = get_method(method)
    resolved = spec.resolve(params)
    if not isinstance(inputs, torch.Tensor) or inputs.dim() != 4 or not inputs.is_floating_point():
        shape = list(inputs.shape) if isinstance(inputs, torch.Tensor) else type(inputs).__name__
        raise ParamError(f"inputs must be a float tensor [N, C, H, W], got {shape}")
    if inputs.is_inference():  # made under torch.inference_mode(): autograd cannot use it
        inputs = inputs.clone()
    if uses_channels_last(model):
        inputs = inputs.contiguous(memory_format=torch.channels_last)
    with explaining(model):
        if targets is None:
            with torch.inference_mode():
                predicted = torch.cat([model(inputs[i:i + 256]).argmax(1) for i in range(0, len(inputs), 256)])
            targets = predicted.clone()  # out of inference mode, so autograd may save it
        targets = torch.as_tensor(targets, device=inputs.device, dtype=torch.long)
        if targets.is_inference():
            targets = targets.clone()
        if targets.dim() == 0:
            targets = targets.expand(len(inputs))
        if targets.shape != (len(inputs),):
            raise ParamError(f"targets must hold one class per input ({len(inputs)}), got shape {list(targets.shape)}")
        if "layer" in resolved:
            resolved["layer"] = layer_name(model, resolved["layer"], inputs[:1])
        if spec.background:
            resolved["background"] = _background(method, background, resolved["n_background"], inputs)
            del resolved["n_background"]
        network = commuted(model, keep=resolved.get("layer")) if spec.commutes else model
        with progress_bar(len(inputs), method, show_progress):
            maps = spec.function(network, inputs, targets, **resolved)
    maps = maps.detach().float().contiguous()
    resolved.pop("background", None)
    bad = ~torch.isfinite(maps).flatten(1).all(dim=1)
    if bad.any():
        shown = {k: v for k, v in resolved.items() if k != "batch_size"}
        raise AttributionError(f"{method} gave NaN or inf in {int(bad.sum())} of {len(maps)} maps with params "
                               f"{shown}; change the params (or report a bug if they are the defaults)")
    return maps
