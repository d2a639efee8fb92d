"""Gradient methods: Saliency, SmoothGrad (and its squared and variance forms), Integrated
Gradients, Input x Gradient, Guided Backprop, Deconvolution, DeepLIFT.

Each takes the model, inputs [N, C, H, W], targets [N] and returns maps [N, H, W].
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mnist_xai.attribution.core import (
    chunks,
    image_chunks,
    images_per_chunk,
    input_gradients,
    reduce_channels,
    target_scores,
)
from mnist_xai.data import BLACK


def saliency(model, x, targets, *, score, batch_size):
    """|d score / d x|, the maximum over channels (Simonyan et al. 2014); Captum Saliency(abs=True)."""
    maps = torch.empty(x.shape[0], *x.shape[2:], device=x.device)
    for rows in image_chunks(len(x), batch_size):
        maps[rows] = input_gradients(model, x[rows], targets[rows], score).abs().amax(dim=1)
    return maps


def _noisy_gradient_moments(model, x, targets, *, n_samples, sigma, seed, score, batch_size):
    """Mean and mean square of the input gradient over `n_samples` noisy copies of each image.

    Noise: N(0, s_i^2) per pixel with s_i = sigma * (max(x_i) - min(x_i)), the
    paper's noise level relative to each image's range (Smilkov et al. 2017).
    Drawn from one generator seeded with `seed`, image by image, sample by
    sample in Captum NoiseTunnel's layout (x.repeat_interleave(n)), so that with
    the same seed and stdev the noise is bit-identical to Captum's. The noisy rows
    are drawn and differentiated `batch_size` at a time, so memory stays bounded
    however large n is (on the CPU, successive draws of whole 28x28 images continue
    one stream: the noise does not depend on batch_size).
    """
    generator = torch.Generator(device=x.device).manual_seed(seed)
    mean = torch.empty_like(x)
    mean_square = torch.empty_like(x)
    for rows in image_chunks(len(x), images_per_chunk(batch_size, n_samples)):
        images, image_targets = x[rows], targets[rows]
        spread = images.flatten(1).amax(1) - images.flatten(1).amin(1)
        total = torch.zeros_like(images)
        total_square = torch.zeros_like(images)
        for part in chunks(len(images) * n_samples, batch_size):
            owner = torch.arange(part.start, part.stop, device=x.device) // n_samples  # image of each noisy row
            # drawn exactly as Captum draws it: std = sigma x spread rounded once from float64 to float32, then
            # torch.normal(0, std) in float32 (torch's default dtype, whatever x's). The same kernel then rounds
            # std x z the same way on every CPU; one ulp of difference in the noise can flip a ReLU or a max-pool
            stdev = (sigma * spread[owner].double()).float().view(-1, *(1,) * (x.dim() - 1))
            stdev = stdev.expand(len(owner), *x.shape[1:])
            noise = torch.normal(0.0, stdev, generator=generator)
            noisy = images[owner] + noise.to(x.dtype)
            grads = input_gradients(model, noisy, image_targets[owner], score)
            if len(owner) == len(images) * n_samples:  # the whole chunk in one pass: reduce as Captum does
                total += grads.view(len(images), n_samples, *x.shape[1:]).sum(dim=1)
                total_square += grads.pow(2).view(len(images), n_samples, *x.shape[1:]).sum(dim=1)
            else:
                total.index_add_(0, owner, grads)
                total_square.index_add_(0, owner, grads.pow(2))
        mean[rows] = total / n_samples
        mean_square[rows] = total_square / n_samples
    return mean, mean_square


def smoothgrad(model, x, targets, *, n_samples, sigma, seed, score, batch_size):
    """Mean gradient over noisy copies (Smilkov et al. 2017); Captum NoiseTunnel(Saliency(abs=False))."""
    mean, _ = _noisy_gradient_moments(model, x, targets, n_samples=n_samples, sigma=sigma, seed=seed,
                                      score=score, batch_size=batch_size)
    return reduce_channels(mean)


def smoothgrad_sq(model, x, targets, *, n_samples, sigma, seed, score, batch_size):
    """Mean squared gradient over noisy copies (Hooker et al. 2019); Captum nt_type='smoothgrad_sq'."""
    _, mean_square = _noisy_gradient_moments(model, x, targets, n_samples=n_samples, sigma=sigma, seed=seed,
                                             score=score, batch_size=batch_size)
    return reduce_channels(mean_square)


def vargrad(model, x, targets, *, n_samples, sigma, seed, score, batch_size):
    """Variance of the gradient over noisy copies (Adebayo et al. 2018); Captum nt_type='vargrad'."""
    mean, mean_square = _noisy_gradient_moments(model, x, targets, n_samples=n_samples, sigma=sigma, seed=seed,
                                                score=score, batch_size=batch_size)
    return reduce_channels((mean_square - mean * mean).clamp_min(0))


def quadrature(rule: str, steps: int) -> tuple[list[float], list[float]]:
    """(step sizes, alphas) for the path integral; the same numbers as Captum's approximation_methods."""
    if rule == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(steps)
        return (0.5 * weights).tolist(), (0.5 * (1 + nodes)).tolist()
    sizes = [1 / steps] * steps
    if rule == "riemann_trapezoid":
        sizes[0] /= 2
        sizes[-1] /= 2
        return sizes, torch.linspace(0, 1, steps).tolist()
    start, end = {
        "riemann_left": (0, 1 - 1 / steps),
        "riemann_right": (1 / steps, 1),
        "riemann_middle": (1 / (2 * steps), 1 - 1 / (2 * steps)),
    }[rule]
    return sizes, torch.linspace(start, end, steps).tolist()


def baseline_for(x: torch.Tensor, baseline: str, blur_sigma: float) -> torch.Tensor:
    """The IG reference input: 'zero' (the data mean), 'black' (pixel value 0) or 'blur' (Gaussian-blurred x)."""
    if baseline == "zero":
        return torch.zeros_like(x)
    if baseline == "black":
        return torch.full_like(x, BLACK)
    return gaussian_blur(x, blur_sigma)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of [N, C, H, W], kernel radius 3 sigma (capped by the image), reflect padding."""
    radius = max(1, min(int(np.ceil(3 * sigma)), min(x.shape[2:]) - 1))
    offsets = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    channels = x.shape[1]
    horizontal = kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1)
    vertical = kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1)
    x = F.conv2d(F.pad(x.contiguous(), (radius, radius, 0, 0), mode="reflect"), horizontal, groups=channels)
    return F.conv2d(F.pad(x, (0, 0, radius, radius), mode="reflect"), vertical, groups=channels)


def integrated_gradients(model, x, targets, *, steps, rule, baseline, blur_sigma, score, batch_size):
    """(x - x') * integral of the gradient along the straight path x' -> x (Sundararajan et al. 2017).
    The path points are differentiated `batch_size` rows at a time, so memory stays bounded for any `steps`."""
    sizes, alphas = quadrature(rule, steps)
    step_sizes = torch.tensor(sizes, dtype=x.dtype, device=x.device)
    alpha = torch.tensor(alphas, dtype=x.dtype, device=x.device)
    reference = baseline_for(x, baseline, blur_sigma)
    maps = torch.empty(x.shape[0], *x.shape[2:], device=x.device)
    ones = (1,) * (x.dim() - 1)
    for rows in image_chunks(len(x), images_per_chunk(batch_size, steps)):
        images, base = x[rows], reference[rows]
        total = torch.zeros_like(images)
        for part in chunks(steps, max(1, batch_size // len(images))):  # step-major, like Captum
            a = alpha[part].view(-1, 1, *ones)
            path = (base.unsqueeze(0) + a * (images - base).unsqueeze(0)).flatten(0, 1)
            grads = input_gradients(model, path, targets[rows].repeat(len(a)), score)
            total += (grads.view(len(a), len(images), *x.shape[1:]) * step_sizes[part].view(-1, 1, *ones)).sum(dim=0)
        maps[rows] = reduce_channels(total * (images - base))
    return maps


def input_x_gradient(model, x, targets, *, score, batch_size):
    """x * d score / d x (Shrikumar et al. 2016); Captum InputXGradient."""
    maps = torch.empty(x.shape[0], *x.shape[2:], device=x.device)
    for rows in image_chunks(len(x), batch_size):
        maps[rows] = reduce_channels(x[rows] * input_gradients(model, x[rows], targets[rows], score))
    return maps


class _SwitchableReLU(torch.autograd.Function):
    """ReLU whose backward is chosen when the backward runs: the ordinary one, the guided one, which
    passes only positive gradients through positive inputs (Springenberg et al. 2015), or the deconvnet's,
    which passes positive gradients whatever the input (Zeiler & Fergus 2014). One forward pass can then
    serve an ordinary and a guided backward pass (Guided GradCAM)."""

    @staticmethod
    def forward(ctx, inputs, mode):
        ctx.save_for_backward(inputs)
        ctx.mode = mode
        return inputs.clamp_min(0)

    @staticmethod
    def backward(ctx, grad_output):
        (inputs,) = ctx.saved_tensors
        if ctx.mode.get("deconvolution"):
            return grad_output.clamp_min(0), None
        if ctx.mode["guided"]:
            grad_output = grad_output.clamp_min(0)
        return grad_output * (inputs > 0), None


@contextmanager
def guided_relus(model: nn.Module, mode: dict | None = None):
    """Route every nn.ReLU module through _SwitchableReLU while the context is open. `mode["guided"]`
    selects the backward rule at backward time (default: always guided)."""
    mode = {"guided": True} if mode is None else mode

    def hook(_module, inputs, _output):
        return _SwitchableReLU.apply(inputs[0], mode)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.ReLU)]
    try:
        yield mode
    finally:
        for handle in handles:
            handle.remove()


def deconvolution(model, x, targets, *, score, batch_size):
    """The deconvnet's backward pass (Zeiler & Fergus 2014): every ReLU passes the positive part of the
    gradient, whatever its input was; Captum Deconvolution. Max-pools route it as the forward pass chose, so
    this must run on the network as trained, not the commuted one (registry: commutes=False)."""
    maps = torch.empty(x.shape[0], *x.shape[2:], device=x.device)
    with guided_relus(model, {"guided": True, "deconvolution": True}):
        for rows in image_chunks(len(x), batch_size):
            maps[rows] = reduce_channels(input_gradients(model, x[rows], targets[rows], score))
    return maps


def guided_backprop(model, x, targets, *, score, batch_size):
    """The gradient with guided ReLUs (Springenberg et al. 2015); Captum GuidedBackprop."""
    maps = torch.empty(x.shape[0], *x.shape[2:], device=x.device)
    with guided_relus(model):
        for rows in image_chunks(len(x), batch_size):
            maps[rows] = reduce_channels(input_gradients(model, x[rows], targets[rows], score))
    return maps


# DeepLIFT's Rescale rule (Shrikumar et al. 2017) as modified backward passes, the way Captum runs it: the input x
# and its reference x' go through the network as one batch [x; x'], so that each non-linearity sees both and can
# pass back a multiplier (delta out / delta in) instead of its gradient. Both halves' scores are summed, so both
# halves carry the same gradient down (as in Captum's DeepLift).
_RESCALE_EPS = 1e-10  # Captum's: below it, delta in counts as 0 and the ordinary gradient is used


def _halves_delta(values: torch.Tensor) -> torch.Tensor:
    """[x-part; reference part] -> their difference, repeated for both halves."""
    actual, reference = values.chunk(2)
    return torch.cat([actual - reference] * 2)


class _RescaleReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, inputs):
        outputs = inputs.clamp_min(0)
        ctx.save_for_backward(inputs, outputs)
        return outputs

    @staticmethod
    def backward(ctx, grad_output):
        inputs, outputs = ctx.saved_tensors
        delta_in = _halves_delta(inputs)
        rescaled = grad_output * _halves_delta(outputs) / torch.where(delta_in == 0, 1.0, delta_in)
        return torch.where(delta_in.abs() < _RESCALE_EPS, grad_output * (inputs > 0), rescaled)


class _RescaleMaxPool(torch.autograd.Function):
    """Captum's max-pool rule: the output difference max(y, y') - y' goes back to x's largest input, and
    y - max(y, y') to x''s; each input's multiplier is what it received over its own delta in."""

    @staticmethod
    def forward(ctx, inputs, pool):
        outputs, indices = F.max_pool2d(inputs, pool.kernel_size, pool.stride, pool.padding, pool.dilation,
                                        pool.ceil_mode, return_indices=True)
        ctx.save_for_backward(inputs, outputs, indices)
        ctx.pool = pool
        return outputs

    @staticmethod
    def backward(ctx, grad_output):
        inputs, outputs, indices = ctx.saved_tensors
        pool = ctx.pool

        def unpool(values):
            return F.max_unpool2d(values, indices, pool.kernel_size, pool.stride, pool.padding, list(inputs.shape))

        actual, reference = outputs.chunk(2)
        larger = torch.max(actual, reference)
        received = unpool(grad_output * torch.cat([larger - reference, actual - larger]))
        received = torch.cat([sum(received.chunk(2))] * 2)
        delta_in = _halves_delta(inputs)
        rescaled = received / torch.where(delta_in == 0, 1.0, delta_in)
        return torch.where(delta_in.abs() < _RESCALE_EPS, unpool(grad_output), rescaled), None


@contextmanager
def rescale_rules(model: nn.Module):
    """Every nn.ReLU and nn.MaxPool2d module of `model` runs DeepLIFT's Rescale backward while open."""
    def relu(_module, inputs, _output):
        return _RescaleReLU.apply(inputs[0])

    def max_pool(module, inputs, _output):
        return _RescaleMaxPool.apply(inputs[0], module)

    handles = [m.register_forward_hook(relu) for m in model.modules() if isinstance(m, nn.ReLU)]
    handles += [m.register_forward_hook(max_pool) for m in model.modules() if isinstance(m, nn.MaxPool2d)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def deeplift_against(model, x, reference, targets, *, score, batch_size):
    """DeepLIFT maps of each row of x against its own row of `reference` (no progress bar: callers count images)."""
    maps = torch.empty(x.shape[0], *x.shape[2:], device=x.device)
    with rescale_rules(model):
        for rows in chunks(len(x), max(1, batch_size // 2)):
            images = x[rows].detach().requires_grad_(True)
            with torch.enable_grad():
                outputs = model(torch.cat([images, reference[rows]]))
                scores = target_scores(outputs, targets[rows].repeat(2), score)
                (grads,) = torch.autograd.grad(scores.sum(), images)
            maps[rows] = reduce_channels((images.detach() - reference[rows]) * grads)
    return maps


def deeplift(model, x, targets, *, baseline, blur_sigma, score, batch_size):
    """DeepLIFT with the Rescale rule (Shrikumar et al. 2017): (x - x') times the multipliers, which sum to
    score(x) - score(x') (summation-to-delta); Captum DeepLift(multiply_by_inputs=True) with the same reference.
    Reads the activations between each ReLU and max-pool, so it runs on the network as trained."""
    reference = baseline_for(x, baseline, blur_sigma)
    maps = torch.empty(x.shape[0], *x.shape[2:], device=x.device)
    for rows in image_chunks(len(x), batch_size):
        maps[rows] = deeplift_against(model, x[rows], reference[rows], targets[rows], score=score,
                                      batch_size=batch_size)
    return maps
