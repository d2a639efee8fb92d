"""Class activation maps: GradCAM, GradCAM++, HiResCAM, XGradCAM, LayerCAM, ScoreCAM, AblationCAM, EigenCAM,
FullGrad and Guided GradCAM.

A small skeleton (after pytorch-grad-cam): one forward with the layer's output
captured, one backward to that output only, then a per-method rule that turns
activations A [N, K, h, w] and gradients G into a map. Maps are ReLU'd at the
layer's resolution and upsampled bilinearly (half-pixel centres) to the input
size; they are returned unnormalised, since min-max scaling is a display choice.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from mnist_xai.attribution.core import (
    capture_output,
    chunks,
    image_chunks,
    images_per_chunk,
    target_scores,
    upsample,
)
from mnist_xai.attribution.gradients import guided_relus
from mnist_xai.errors import ParamError


def activations_and_gradients(model, x, targets, *, layer, score):
    """The layer's output A and d score / d A for a batch."""
    with capture_output(model.get_submodule(layer), requires_grad=True) as captured, torch.enable_grad():
        scores = target_scores(model(x), targets, score)
        activation = captured["activation"]
        (grads,) = torch.autograd.grad(scores.sum(), activation)
    return activation.detach(), grads


# One weights function per CAM: activations A and gradients G [N, K, h, w] -> weights that broadcast against A.
# The map is then ReLU(sum_k weights_k * A_k), upsampled. A new gradient CAM is one such function, one
# `gradient_cam(...)` line below and one registry entry.

def gradcam_weights(activation, grads):
    """alpha_k = mean of dy/dA_k over space (Selvaraju et al. 2017)."""
    return grads.mean(dim=(2, 3), keepdim=True)


def gradcam_pp_weights(activation, grads):
    """Chattopadhyay et al. 2018, eq. 19 with the exponential-score simplification, as pytorch-grad-cam
    computes it (including its eps=1e-6 and zeroing where the gradient is 0)."""
    grads_2 = grads.pow(2)
    grads_3 = grads_2 * grads
    sum_activation = activation.sum(dim=(2, 3), keepdim=True)
    alpha = grads_2 / (2 * grads_2 + sum_activation * grads_3 + 1e-6)
    alpha = torch.where(grads != 0, alpha, torch.zeros_like(alpha))
    return (grads.clamp_min(0) * alpha).sum(dim=(2, 3), keepdim=True)


def layercam_weights(activation, grads):
    """Element-wise positive gradients (Jiang et al. 2021)."""
    return grads.clamp_min(0)


def hirescam_weights(activation, grads):
    """Element-wise gradients (Draelos & Carin 2020): the map is sum_k dy/dA_k * A_k, so that, unlike GradCAM's
    spatially averaged gradient, it shows only where the layer's features actually raised the score."""
    return grads


def xgradcam_weights(activation, grads):
    """alpha_k = sum(dy/dA_k * A_k) / sum(A_k) (Fu et al. 2020, XGrad-CAM), with pytorch-grad-cam's eps 1e-7."""
    return (grads * activation).sum(dim=(2, 3), keepdim=True) / (activation.sum(dim=(2, 3), keepdim=True) + 1e-7)


def gradient_cam(weights):
    """The skeleton every gradient CAM shares (after pytorch-grad-cam's BaseCAM): one forward pass with the
    layer's output captured, one backward pass to that output only, `weights`, ReLU, bilinear upsampling."""

    def method(model, x, targets, *, layer, score, batch_size):
        maps = torch.empty(x.shape[0], *x.shape[2:], device=x.device)
        for rows in image_chunks(len(x), batch_size):
            activation, grads = activations_and_gradients(model, x[rows], targets[rows], layer=layer, score=score)
            cam = (weights(activation, grads) * activation).sum(dim=1, keepdim=True).clamp_min(0)
            maps[rows] = upsample(cam, x.shape[2:])[:, 0]
        return maps

    method.__doc__ = weights.__doc__
    return method


gradcam = gradient_cam(gradcam_weights)  # pytorch-grad-cam GradCAM
gradcam_pp = gradient_cam(gradcam_pp_weights)  # pytorch-grad-cam GradCAMPlusPlus
layercam = gradient_cam(layercam_weights)  # pytorch-grad-cam LayerCAM
hirescam = gradient_cam(hirescam_weights)  # pytorch-grad-cam HiResCAM
xgradcam = gradient_cam(xgradcam_weights)  # pytorch-grad-cam XGradCAM


def guided_gradcam(model, x, targets, *, layer, score, batch_size):
    """Guided Backprop x GradCAM upsampled bilinearly (Selvaraju et al. 2017);
    Captum GuidedGradCam(interpolate_mode='bilinear').

    One forward pass serves both: an ordinary backward pass to the CAM layer (GradCAM's weights), then a
    guided one to the input; the ReLUs choose their backward rule when it runs."""
    module = model.get_submodule(layer)
    maps = torch.empty(x.shape[0], *x.shape[2:], device=x.device)
    for rows in image_chunks(len(x), batch_size):
        images = x[rows].detach().requires_grad_(True)
        with guided_relus(model, {"guided": False}) as mode, \
                capture_output(module, requires_grad=True, detach=False) as captured, torch.enable_grad():
            total = target_scores(model(images), targets[rows], score).sum()
            activation = captured["activation"]
            (layer_grads,) = torch.autograd.grad(total, activation, retain_graph=True)
            mode["guided"] = True
            (guided,) = torch.autograd.grad(total, images)
        cam = (gradcam_weights(activation, layer_grads) * activation.detach()).sum(1, keepdim=True)
        maps[rows] = (guided * upsample(cam.clamp_min(0), x.shape[2:])).sum(dim=1)
    return maps


@torch.inference_mode()
def _layer_activations(model, x, layer):
    with capture_output(model.get_submodule(layer), requires_grad=False) as captured:
        model(x)
    return captured["activation"]


@torch.inference_mode()
def scorecam(model, x, targets, *, layer, variant, score, batch_size):
    """Score-CAM (Wang et al. 2020): each channel's activation, upsampled and min-max scaled, masks the
    input; the model's score on the masked input weights that channel. Two published variants:

    - 'authors' (the paper and its authors' code, haofanwang/Score-CAM): weight = softmax probability of
      the target on the masked input; masks upsampled with align_corners=False; constant channels skipped;
      the map is ReLU(sum_k weight_k * upsampled A_k) at input resolution.
    - 'pytorch_grad_cam' (jacobgil/pytorch-grad-cam 1.5.7): weight = softmax over channels of the target's
      `score` (logit by default) on the masked input; masks upsampled with align_corners=True and scaled
      with a 1e-8 guard; the map is ReLU(sum_k weight_k A_k) at layer resolution, then upsampled.
    """
    size = x.shape[2:]
    maps = torch.empty(x.shape[0], *size, device=x.device)
    for outer in image_chunks(len(x), batch_size):
        activations = _layer_activations(model, x[outer], layer)
        channels = activations.shape[1]
        for inner in chunks(len(activations), images_per_chunk(batch_size, channels)):
            rows = slice(outer.start + inner.start, outer.start + inner.stop)
            maps[rows] = _scorecam_maps(model, x[rows], targets[rows], activations[inner], variant, score, batch_size)
    return maps


def _scorecam_maps(model, images, targets, activation, variant, score, batch_size):
    count, channels = activation.shape[:2]
    size = images.shape[2:]
    upsampled = torch.nn.functional.interpolate(activation, size=size, mode="bilinear",
                                                align_corners=(variant == "pytorch_grad_cam"))
    low = upsampled.amin(dim=(2, 3), keepdim=True)
    high = upsampled.amax(dim=(2, 3), keepdim=True)
    if variant == "pytorch_grad_cam":
        masks = (upsampled - low) / (high - low + 1e-8)
    else:
        masks = (upsampled - low) / torch.where(high > low, high - low, torch.ones_like(high))
    # every image under each of its K masks: [count * K, C, H, W], scored in passes of ~batch_size rows
    masked = (images.unsqueeze(1) * masks.unsqueeze(2)).flatten(0, 1)
    mask_targets = targets.repeat_interleave(channels)
    weights = torch.empty(len(masked), device=images.device)
    for part in chunks(len(masked), batch_size):
        weights[part] = target_scores(model(masked[part]), mask_targets[part],
                                      "softmax" if variant == "authors" else score)
    weights = weights.view(count, channels)
    if variant == "pytorch_grad_cam":
        cam = (weights.softmax(dim=1)[:, :, None, None] * activation).sum(dim=1, keepdim=True)
        return upsample(cam.clamp_min(0), size)[:, 0]
    weights = torch.where((high > low).view(count, channels), weights, torch.zeros_like(weights))
    return (weights[:, :, None, None] * upsampled).sum(dim=1).clamp_min(0)


@contextmanager
def replaced_output(module, replacement):
    """`module`'s output replaced by `replacement` during a forward pass (the rows must match)."""
    handle = module.register_forward_hook(lambda _m, _i, _o: replacement)
    try:
        yield
    finally:
        handle.remove()


@torch.inference_mode()
def ablationcam(model, x, targets, *, layer, score, batch_size):
    """Ablation-CAM (Desai & Ramaswamy 2020): channel k's weight is the relative drop of the score when its
    activation map is set to zero, (y - y_k) / y; the map is ReLU(sum_k weight_k A_k), upsampled. Gradient-free;
    one forward pass per channel and image. pytorch-grad-cam AblationCAM: it sets the ablated channel to zero
    too wherever the layer's output has a zero (every ReLU output, so every default layer here); for a layer with
    no zero it uses min - 1e7 instead, where this follows the paper."""
    module = model.get_submodule(layer)
    maps = torch.empty(x.shape[0], *x.shape[2:], device=x.device)
    for outer in image_chunks(len(x), batch_size):
        with capture_output(module, requires_grad=False) as captured:
            original = target_scores(model(x[outer]), targets[outer], score)
        activations = captured["activation"]
        channels = activations.shape[1]
        for inner in chunks(len(activations), images_per_chunk(batch_size, channels)):
            count = inner.stop - inner.start
            rows = slice(outer.start + inner.start, outer.start + inner.stop)
            # every image once per channel, that channel zeroed: [count * K, K, h, w]
            ablated = activations[inner].repeat_interleave(channels, dim=0)
            ablated.view(count, channels, channels, -1)[:, torch.arange(channels), torch.arange(channels)] = 0
            images = x[rows].repeat_interleave(channels, dim=0)
            ablated_targets = targets[rows].repeat_interleave(channels)
            dropped = torch.empty(len(ablated), device=x.device)
            for part in chunks(len(ablated), batch_size):
                with replaced_output(module, ablated[part]):
                    dropped[part] = target_scores(model(images[part]), ablated_targets[part], score)
            base = original[inner][:, None]
            weights = (base - dropped.view(count, channels)) / base
            cam = (weights[:, :, None, None] * activations[inner]).sum(dim=1, keepdim=True).clamp_min(0)
            maps[rows] = upsample(cam, x.shape[2:])[:, 0]
    return maps


def principal_projection(activation: torch.Tensor) -> torch.Tensor:
    """Each image's activations [N, K, h, w] projected on their first principal component over positions
    [N, h, w] (Muhammad & Yeasin 2020), in float64 so that any CPU's LAPACK finds the same component. An SVD's
    sign is arbitrary; it is fixed as Seg-Eigen-CAM does (Chung & Ying 2025, eq. 13; pytorch-grad-cam's
    get_2d_projection_with_sign_correction): flipped where |min| > |max|, so the salient region is positive."""
    positions = activation.double().flatten(2).transpose(1, 2)  # [N, h*w, K]
    centred = positions - positions.mean(dim=1, keepdim=True)
    _, _, vh = torch.linalg.svd(centred, full_matrices=False)
    projection = (centred @ vh[:, 0, :, None])[..., 0]
    flip = projection.amin(dim=1).abs() > projection.amax(dim=1).abs()
    projection = torch.where(flip[:, None], -projection, projection)
    return projection.view(activation.shape[0], *activation.shape[2:])


@torch.inference_mode()
def eigencam(model, x, targets, *, layer, score, batch_size):
    """Eigen-CAM (Muhammad & Yeasin 2020): ReLU of the layer's first principal component, upsampled. It ignores
    the target class and the score: the same map for every class, which the Random Logit check must catch.
    pytorch-grad-cam EigenCAM leaves the SVD's sign to LAPACK (on some images the map is the negated one);
    here it is fixed (see principal_projection)."""
    maps = torch.empty(x.shape[0], *x.shape[2:], device=x.device)
    for rows in image_chunks(len(x), batch_size):
        projection = principal_projection(_layer_activations(model, x[rows], layer))
        maps[rows] = upsample(projection[:, None].float().clamp_min(0), x.shape[2:])[:, 0]
    return maps


def bias_layers(model) -> list[torch.nn.Module]:
    """The Conv2d and BatchNorm2d layers with a bias: where FullGrad reads bias-gradients (pytorch-grad-cam's
    choice; a linear layer's bias has no position, so it adds a constant and is left out)."""
    return [m for m in model.modules()
            if type(m) in (torch.nn.Conv2d, torch.nn.BatchNorm2d) and m.bias is not None]


def effective_bias(layer) -> torch.Tensor:
    """A conv's bias; a BatchNorm's in eval mode: beta - running_mean * gamma / sqrt(running_var + eps)."""
    if isinstance(layer, torch.nn.BatchNorm2d):
        return layer.bias - layer.running_mean * layer.weight / torch.sqrt(layer.running_var + layer.eps)
    return layer.bias


def _scaled(maps: torch.Tensor, size) -> torch.Tensor:
    """psi of FullGrad, as pytorch-grad-cam computes it: each [N, K] map shifted to 0, divided by (1e-7 + its
    max), then upsampled; summed over K."""
    shifted = maps - maps.amin(dim=(2, 3), keepdim=True)
    scaled = shifted / (1e-7 + shifted.amax(dim=(2, 3), keepdim=True))
    if scaled.shape[2:] != size:
        scaled = upsample(scaled, size)
    return scaled.sum(dim=1)


def fullgrad(model, x, targets, *, score, batch_size):
    """FullGrad (Srinivas & Fleuret 2019): psi(|x * dy/dx|) plus, for every conv and BatchNorm layer, the sum
    over channels of psi(|b * dy/dz|), z the layer's output and b its bias; psi scales each map to [0, 1] and
    upsamples it. pytorch-grad-cam FullGrad (the same layers, psi and eps)."""
    layers = bias_layers(model)
    if not layers:
        raise ParamError("fullgrad needs a Conv2d or BatchNorm2d layer with a bias; this model has none")
    biases = [effective_bias(layer).detach()[None, :, None, None] for layer in layers]
    size = x.shape[2:]
    maps = torch.empty(x.shape[0], *size, device=x.device)
    outputs: dict[int, torch.Tensor] = {}
    handles = [layer.register_forward_hook(lambda _m, _i, output, key=i: outputs.__setitem__(key, output))
               for i, layer in enumerate(layers)]
    try:
        for rows in image_chunks(len(x), batch_size):
            images = x[rows].detach().requires_grad_(True)
            with torch.enable_grad():
                total = target_scores(model(images), targets[rows], score).sum()
                grads = torch.autograd.grad(total, [images, *(outputs[i] for i in range(len(layers)))])
            total_map = _scaled((grads[0] * images.detach()).abs(), size)
            for bias, grad in zip(biases, grads[1:], strict=True):
                total_map += _scaled((bias * grad).abs(), size)
            maps[rows] = total_map
    finally:
        for handle in handles:
            handle.remove()
    return maps
