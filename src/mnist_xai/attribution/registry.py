"""The method registry: every method's params (with defaults and checks), provenance and properties.

It imports no torch: params.yaml is checked against it in a fraction of a second. Each method's
implementation is named as "module:function" inside this package and imported on first use.
"""

from __future__ import annotations

import difflib
import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mnist_xai.errors import ParamError
from mnist_xai.schema import Param, seed_param

SCORE = Param("logit", "the explained score: the target class's logit, or its softmax probability",
              choices=("logit", "softmax"))
BATCH_SIZE = Param(128, "rows per forward pass (CPU throughput peaks at 64-256)", positive=True)
SEED = seed_param("seed of the method's random numbers")
LAYER = Param("auto", "CAM layer by module name (a layer with a spatial [N, K, h, w] output); 'auto' = the "
                      "model's default CAM layer, the last conv block's output")
NOISE = {
    "n_samples": Param(50, "noisy copies per image (the paper's n)", positive=True, minimum=1),
    "sigma": Param(0.15, "noise std as a fraction of each image's range (max - min); the paper's 15%",
                   positive=True),
    "seed": SEED,
}


def _one_backward(_params: dict) -> dict[str, int]:
    return {"fb": 1}


@dataclass(frozen=True)
class Method:
    name: str
    implementation: str  # "module:function" in mnist_xai.attribution, imported on first use
    family: str  # gradient | cam | lrp | perturbation | control
    reference: str  # the paper it implements
    oracle: str  # the peer implementation it matches
    conventions: str  # what a reader must know to interpret the map
    params: dict[str, Param] = field(default_factory=dict)
    signed: bool = False  # whether maps can be negative
    passes: Callable[[dict], dict[str, int]] = _one_backward
    """Forward ('f') and forward+backward ('fb') passes per 28x28 image, given the resolved params: the
    benchmark's practical speed bound."""
    background: bool = False
    """Takes a baseline distribution, a sample of training images: attribute(..., background=[M, C, H, W]). The
    pipeline draws `n_background` of them from the training split with base.seed (data.background_images)."""
    commutes: bool = True
    """Exact when every ReLU that feeds a max-pool is moved after it (see model.commuted): true of methods
    built from ordinary forward passes and autograd gradients (max and ReLU commute, and so do their
    gradients), which attribute() then runs on the cheaper commuted network. A rule that reads the
    activations between the two (LRP, DeepLIFT) must set it False."""

    @property
    def function(self) -> Callable:
        module, name = self.implementation.split(":")
        return getattr(importlib.import_module(f"mnist_xai.attribution.{module}"), name)

    @property
    def all_params(self) -> dict[str, Param]:
        common = {"batch_size": BATCH_SIZE}
        if self.family != "control":
            common["score"] = SCORE
        return {**self.params, **common}

    def defaults(self) -> dict[str, Any]:
        return {name: param.default for name, param in self.all_params.items()}

    def resolve(self, params: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        """Defaults overlaid with `params`, every value checked; an unknown name is called a typo."""
        allowed = self.all_params
        resolved = {}
        for key, value in params.items():
            if key not in allowed:
                close = difflib.get_close_matches(str(key), allowed, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ParamError(f"unknown parameter {prefix}{key!r} for method {self.name!r}{hint}: "
                                 f"allowed are {', '.join(sorted(allowed))}")
            resolved[key] = allowed[key].check(f"{prefix}{key}", value)
        resolved = {**self.defaults(), **resolved}
        if self.name == "occlusion" and resolved["stride"] > resolved["window"]:
            raise ParamError(f"{prefix}stride={resolved['stride']} is not allowed with window={resolved['window']}: "
                             "a stride larger than the window leaves pixels that no patch covers; "
                             "use stride <= window")
        return resolved


_SIMONYAN = "Simonyan, Vedaldi & Zisserman 2014, Deep Inside Convolutional Networks"
_SMILKOV = "Smilkov et al. 2017, SmoothGrad: removing noise by adding noise"
_SELVARAJU = "Selvaraju et al. 2017, Grad-CAM"


def _noise_passes(params: dict) -> dict[str, int]:
    return {"fb": params["n_samples"]}


def _occlusion_passes(params: dict, size: int = 28) -> dict[str, int]:
    per_axis = math.ceil((size - params["window"]) / params["stride"]) + 1
    return {"f": 1 + per_axis ** 2}


_BACH = "Bach et al. 2015, On Pixel-Wise Explanations by Layer-Wise Relevance Propagation"
_MONTAVON = "Montavon et al. 2019, Layer-Wise Relevance Propagation: An Overview"
_EPSILON = Param(1e-6, "the epsilon rule's stabiliser, added with the sign of the denominator (Zennit's default)",
                 positive=True)
_GAMMA = Param(0.25, "the gamma rule's weight on positive contributions (Zennit's default)", positive=True)
_LRP_CONVENTIONS = ("relevance of the explained score through every conv and linear layer by the rule named, "
                    "ReLUs passing it on, max-pools to their largest input; BatchNorm merged into its convolution "
                    "and residual additions split in proportion (the ResNet); signed")


def _lrp_methods() -> list[Method]:
    """The LRP rules and composites, each its own method (attribution/lrp.py): Zennit is their implementation."""
    entries = [
        ("lrp_epsilon", f"{_BACH} (epsilon rule)", "Zennit Epsilon on every layer; a transcription of the paper",
         "epsilon rule on every layer", {"epsilon": _EPSILON}),
        ("lrp_gamma", f"{_MONTAVON} (gamma rule)", "Zennit Gamma (generalised for negative inputs) on every layer",
         "gamma rule on every layer", {"gamma": _GAMMA}),
        ("lrp_alpha1_beta0", f"{_BACH} (alpha1-beta0 rule)", "Zennit AlphaBeta(1, 0) on every layer; a "
         "transcription of the paper", "alpha1-beta0 (z+) rule on every layer", {}),
        ("lrp_epsilon_plus_flat", f"{_MONTAVON} (composite)", "Zennit EpsilonPlusFlat",
         "flat rule on the first layer, z+ on the other convolutions, epsilon on the linear layers",
         {"epsilon": _EPSILON}),
        ("lrp_epsilon_gamma_box", f"{_MONTAVON} (composite)", "Zennit EpsilonGammaBox",
         "z-box rule on the first layer (the input's black-to-white range), gamma on the other convolutions, "
         "epsilon on the linear layers", {"epsilon": _EPSILON, "gamma": _GAMMA}),
    ]
    return [Method(name, f"lrp:{name}", "lrp", reference, oracle, f"{rule}; {_LRP_CONVENTIONS}", params,
                   signed=True, commutes=False) for name, reference, oracle, rule, params in entries]


_SEGMENT_CONVENTIONS = ("features are SLIC superpixels of the pixels that differ from the baseline (a pixel equal to "
                        "it cannot be removed: 0); a coalition sets the other features to the baseline; each "
                        "feature's value on all its pixels; signed")


def _segments(n_samples: int, doc: str, **extra: Param) -> dict[str, Param]:
    return {
        "n_samples": Param(n_samples, doc, positive=True, minimum=3),
        "n_segments": Param(25, "SLIC's target number of superpixels (about 23 on an MNIST digit: 6 pixels each)",
                            positive=True, minimum=1),
        "compactness": Param(0.3, "SLIC's balance of space against intensity (the image scaled to [0, 1]): "
                             "larger gives rounder superpixels", positive=True),
        "baseline": Param("black", "what a removed feature is set to: black (pixel 0, MNIST's background) or zero "
                          "(the data mean, a grey patch)", choices=("black", "zero")),
        **extra,
        "seed": SEED,
    }


def _segment_methods() -> list[Method]:
    return [
        Method("shapley_sampling", "segments:shapley_sampling", "perturbation",
               "Castro, Gomez & Tejada 2009, Polynomial calculation of the Shapley value based on sampling",
               "Captum ShapleyValueSampling given the same superpixels and orders",
               "each superpixel's mean change of the score when it is added, over n_samples random orders; sums "
               f"to score(x) - score(baseline); {_SEGMENT_CONVENTIONS}",
               _segments(25, "random orders of the superpixels (Captum's default 25)"), signed=True,
               passes=lambda p: {"f": 1 + p["n_samples"] * p["n_segments"]}),
        Method("kernel_shap", "segments:kernel_shap", "perturbation",
               "Lundberg & Lee 2017, A Unified Approach to Interpreting Model Predictions (Kernel SHAP)",
               "Captum KernelShap given the same superpixels and coalitions",
               "least squares over n_samples coalitions drawn by the Shapley kernel, the empty and the full one "
               f"fitted exactly (Captum weights them 10^6); sums to score(x) - score(baseline); {_SEGMENT_CONVENTIONS}",
               _segments(256, "coalitions: the full one, the empty one and n_samples - 2 drawn"), signed=True,
               passes=lambda p: {"f": p["n_samples"]}),
        Method("lime", "segments:lime", "perturbation",
               "Ribeiro, Singh & Guestrin 2016, \"Why Should I Trust You?\" (LIME, as the lime package explains "
               "images)", "Captum Lime given the same superpixels, coalitions, kernel and Ridge model",
               "weighted ridge regression over n_samples coalitions (each superpixel kept with probability 1/2, the "
               "first the whole image), weights sqrt(exp(-d^2 / w^2)) of the cosine distance d to the whole image; "
               f"Captum's defaults differ (Lasso, distance in pixel space); {_SEGMENT_CONVENTIONS}",
               _segments(256, "coalitions: the whole image and n_samples - 1 drawn",
                         kernel_width=Param(0.25, "the kernel width w (lime's image default)", positive=True),
                         alpha=Param(1.0, "the ridge penalty (lime's default Ridge(alpha=1))", minimum=0.0)),
               signed=True, passes=lambda p: {"f": p["n_samples"]}),
    ]


_METHODS = [
    Method("saliency", "gradients:saliency", "gradient", _SIMONYAN, "Captum Saliency(abs=True)",
           "|d score/d x|; max over channels; non-negative"),
    Method("smoothgrad", "gradients:smoothgrad", "gradient", _SMILKOV,
           "Captum NoiseTunnel(Saliency), nt_type='smoothgrad', abs=False, given identical noise",
           "signed mean gradient over n noisy copies; noise std = sigma x (max - min) of each image "
           "(the paper's 15%, not Captum's absolute 1.0)", NOISE, signed=True, passes=_noise_passes),
    Method("smoothgrad_sq", "gradients:smoothgrad_sq", "gradient",
           "Hooker et al. 2019, A Benchmark for Interpretability Methods (SmoothGrad-Squared)",
           "Captum NoiseTunnel(Saliency), nt_type='smoothgrad_sq'",
           "mean of the squared gradient over n noisy copies; non-negative", NOISE, passes=_noise_passes),
    Method("vargrad", "gradients:vargrad", "gradient", "Adebayo et al. 2018, Local explanation methods "
           "for deep neural networks lack sensitivity to parameter values (VarGrad)",
           "Captum NoiseTunnel(Saliency, abs=False), nt_type='vargrad'",
           "variance of the gradient over n noisy copies; non-negative", NOISE, passes=_noise_passes),
    Method("integrated_gradients", "gradients:integrated_gradients", "gradient",
           "Sundararajan, Taly & Yan 2017, Axiomatic Attribution for Deep Networks",
           "Captum IntegratedGradients with the same steps, rule and baseline",
           "(x - baseline) x path integral of the gradient; signed; sums to score(x) - score(baseline)",
           {
               "steps": Param(50, "points on the path", positive=True, minimum=2),
               "rule": Param("riemann_right", "quadrature rule; the paper's eq. 3 is a right Riemann sum "
                             "(Captum defaults to gausslegendre)",
                             choices=("riemann_right", "riemann_left", "riemann_middle", "riemann_trapezoid",
                                      "gausslegendre")),
               "baseline": Param("black", "the reference input: black (pixel 0, the paper's choice for "
                                 "images), zero (the data mean) or blur (Gaussian-blurred input)",
                                 choices=("black", "zero", "blur")),
               "blur_sigma": Param(5.0, "std in pixels of the blur baseline", positive=True),
           }, signed=True, passes=lambda p: {"fb": p["steps"]}),
    Method("deeplift", "gradients:deeplift", "gradient",
           "Shrikumar, Greenside & Kundaje 2017, Learning Important Features Through Propagating Activation "
           "Differences (Rescale rule)", "Captum DeepLift with the same reference",
           "(x - reference) x multipliers delta out / delta in through every ReLU and max-pool; signed; sums to "
           "score(x) - score(reference)", {
               "baseline": Param("black", "the reference input: black (pixel value 0), zero (the data mean) or "
                                 "blur (Gaussian-blurred input)", choices=("black", "zero", "blur")),
               "blur_sigma": Param(5.0, "std in pixels of the blur baseline", positive=True),
           }, signed=True, commutes=False, passes=lambda p: {"fb": 2}),
    Method("expected_gradients", "shapley:expected_gradients", "gradient",
           "Erion et al. 2021, Improving performance of deep learning models with axiomatic attribution priors and "
           "expected gradients", "Captum GradientShap(stdevs=0) given the same draws",
           "mean over n samples of (x - b) x gradient at b + alpha (x - b), b a training image drawn at random, "
           "alpha ~ U(0, 1); signed", {
               "n_samples": Param(50, "samples per image (background image and point on its path)", positive=True),
               "n_background": Param(64, "training images the baselines are drawn from", positive=True),
               "seed": SEED,
           }, signed=True, background=True, passes=lambda p: {"fb": p["n_samples"]}),
    Method("gradient_shap", "shapley:gradient_shap", "gradient",
           "Lundberg & Lee 2017, A Unified Approach to Interpreting Model Predictions (GradientShap as Captum "
           "implements it)", "Captum GradientShap given the same draws",
           "Expected Gradients at noisy copies of the input (noise std sigma x the image's range, SmoothGrad's; "
           "Captum's default is no noise, which is expected_gradients); signed", {
               "n_samples": Param(50, "samples per image (background image, point on its path, noise)",
                                  positive=True),
               "n_background": Param(64, "training images the baselines are drawn from", positive=True),
               "sigma": Param(0.15, "input noise std as a fraction of each image's range", minimum=0.0),
               "seed": SEED,
           }, signed=True, background=True, passes=lambda p: {"fb": p["n_samples"]}),
    Method("deeplift_shap", "shapley:deeplift_shap", "gradient",
           "Lundberg & Lee 2017, A Unified Approach to Interpreting Model Predictions (DeepLiftShap)",
           "Captum DeepLiftShap with the same background",
           "the mean of DeepLIFT's Rescale maps against each of n_background training images; signed", {
               "n_background": Param(16, "training images, each a DeepLIFT reference (the cost grows with it)",
                                     positive=True),
           }, signed=True, background=True, commutes=False, passes=lambda p: {"fb": 2 * p["n_background"]}),
    Method("input_x_gradient", "gradients:input_x_gradient", "gradient",
           "Shrikumar et al. 2016, Not Just a Black Box", "Captum InputXGradient",
           "x x d score/d x, summed over channels; signed", signed=True),
    Method("guided_backprop", "gradients:guided_backprop", "gradient",
           "Springenberg et al. 2015, Striving for Simplicity", "Captum GuidedBackprop",
           "gradient with every ReLU passing only positive gradients of positive inputs; signed", signed=True),
    *_lrp_methods(),
    Method("occlusion", "perturbation:occlusion", "perturbation",
           "Zeiler & Fergus 2014, Visualizing and Understanding Convolutional Networks",
           "Captum Occlusion with the same window, stride and baseline",
           "score drop when a square patch is set to the baseline, averaged over the patches covering "
           "each pixel; signed", {
               "window": Param(4, "patch side in pixels", positive=True),
               "stride": Param(2, "patch step in pixels, at most the window (every pixel must be covered)",
                               positive=True),
               "baseline": Param("zero", "patch fill: zero (the data mean, the paper's grey square) or black",
                                 choices=("zero", "black")),
           }, signed=True, passes=_occlusion_passes),
    *_segment_methods(),
    Method("gradcam", "cam:gradcam", "cam", _SELVARAJU, "pytorch-grad-cam GradCAM; Captum LayerGradCam("
           "relu_attributions=True) upsampled bilinearly",
           "ReLU(sum_k mean(dy/dA_k) A_k) at the layer, bilinear upsampling; non-negative. Captum's "
           "LayerGradCam differs: no ReLU and nearest upsampling by default", {"layer": LAYER}),
    Method("gradcam_pp", "cam:gradcam_pp", "cam", "Chattopadhyay et al. 2018, Grad-CAM++",
           "pytorch-grad-cam GradCAMPlusPlus", "eq. 19 weights (pytorch-grad-cam's eps 1e-6); non-negative",
           {"layer": LAYER}),
    Method("scorecam", "cam:scorecam", "cam", "Wang et al. 2020, Score-CAM",
           "pytorch-grad-cam ScoreCAM (variant pytorch_grad_cam)",
           "variant 'authors': softmax probability of the masked input as weight (the authors' code); "
           "variant 'pytorch_grad_cam': softmax over channels of the logit; non-negative", {
               "layer": LAYER,
               "variant": Param("authors", "authors (paper and official code) or pytorch_grad_cam",
                                choices=("authors", "pytorch_grad_cam")),
           }, passes=lambda p: {"f": 1 + 64}),
    Method("layercam", "cam:layercam", "cam", "Jiang et al. 2021, LayerCAM", "pytorch-grad-cam LayerCAM",
           "ReLU(sum_k ReLU(dy/dA_k) * A_k); non-negative", {"layer": LAYER}),
    Method("hirescam", "cam:hirescam", "cam", "Draelos & Carin 2020, Use HiResCAM instead of Grad-CAM for "
           "faithful explanations of convolutional neural networks", "pytorch-grad-cam HiResCAM",
           "ReLU(sum_k dy/dA_k * A_k): GradCAM without averaging the gradient over space; non-negative",
           {"layer": LAYER}),
    Method("xgradcam", "cam:xgradcam", "cam", "Fu et al. 2020, Axiom-based Grad-CAM (XGrad-CAM)",
           "pytorch-grad-cam XGradCAM", "weights sum(dy/dA_k * A_k) / sum(A_k); non-negative", {"layer": LAYER}),
    Method("ablationcam", "cam:ablationcam", "cam", "Desai & Ramaswamy 2020, Ablation-CAM",
           "pytorch-grad-cam AblationCAM", "weights (y - y_k) / y, y_k the score with channel k zeroed; "
           "gradient-free; non-negative", {"layer": LAYER}, passes=lambda p: {"f": 1 + 64}),
    Method("eigencam", "cam:eigencam", "cam", "Muhammad & Yeasin 2020, Eigen-CAM; sign as Chung & Ying 2025",
           "pytorch-grad-cam EigenCAM, up to the SVD's sign (fixed here as its sign-corrected projection does)",
           "ReLU of the layer's first principal component; ignores the class (the same map for every class) "
           "and the score; non-negative", {"layer": LAYER}, passes=lambda p: {"f": 1}),
    Method("fullgrad", "cam:fullgrad", "cam", "Srinivas & Fleuret 2019, Full-Gradient Representation for "
           "Neural Network Visualization", "pytorch-grad-cam FullGrad",
           "psi(|x * dy/dx|) + sum over conv/BatchNorm layers and channels of psi(|b * dy/dz|), psi = scale to "
           "[0, 1] and upsample; non-negative"),
    Method("deconvolution", "gradients:deconvolution", "gradient",
           "Zeiler & Fergus 2014, Visualizing and Understanding Convolutional Networks (deconvnet)",
           "Captum Deconvolution", "gradient with every ReLU passing the positive part of the gradient, whatever "
           "its input; signed", signed=True, commutes=False),
    Method("guided_gradcam", "cam:guided_gradcam", "cam", _SELVARAJU,
           "Captum GuidedGradCam(interpolate_mode='bilinear')",
           "Guided Backprop x bilinearly upsampled GradCAM; signed", {"layer": LAYER}, signed=True,
           passes=lambda p: {"fb": 2}),
    Method("random", "perturbation:random_map", "control", "a control, not an explanation",
           "none", "uniform noise in [0, 1), seeded: every real method must beat it", {"seed": SEED},
           passes=lambda p: {}),
    Method("edge", "controls:edge", "control", "a control: Adebayo et al. 2018's edge detector, model-free",
           "none", "Sobel gradient magnitude of the input, border padded with its own edge pixels (the "
           "background); ignores the model, so every verdict must distrust it", passes=lambda p: {}),
    Method("brightness", "controls:brightness", "control", "a control: |input|, model-free", "none",
           "|x| of the model's input; ignores the model, so every verdict must distrust it", passes=lambda p: {}),
    Method("oracle", "perturbation:intervention_map", "control",
           "a control: the model's own intervention map, which the ground truth must trust", "none",
           "score drop when each pixel's block of a grid of disjoint window x window blocks is set to black; on the "
           "decoy model, where the cue (one block) provably dominates, its largest value lies on the cue", {
               "window": Param(4, "block side in pixels (the cue's size); must divide the image", positive=True),
               "score": SCORE,
           }, signed=True, passes=lambda p: {"f": 1 + (28 // p["window"]) ** 2}),
]

CONTROLS = ("random", "edge", "brightness", "oracle")
"""The explainers with known answers that calibrate every verdict: model-free ones (random noise, edges,
brightness) must be distrusted, the oracle trusted."""

REGISTRY: dict[str, Method] = {method.name: method for method in _METHODS}
METHODS: tuple[str, ...] = tuple(REGISTRY)


def get_method(name: str) -> Method:
    try:
        return REGISTRY[name]
    except KeyError:
        close = difflib.get_close_matches(str(name), METHODS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ParamError(f"unknown attribution method {name!r}{hint}: choose from {', '.join(METHODS)}") from None


def is_signed(method: str) -> bool:
    """Whether `method`'s maps can be negative (a name outside the registry is assumed signed)."""
    return REGISTRY[method].signed if method in REGISTRY else True
