"""Speed and memory of every attribution method against its best-configured peer.

    python bench/attribution.py                    # all methods, 512 images, 3 repeats, CPU
    python bench/attribution.py --methods gradcam occlusion --repeats 5
    python bench/attribution.py --device cuda      # on a GPU machine

Same model (models/model.pt if it exists, else a model trained here for one epoch and kept in
bench/results/) and the same 512 stratified test images for everyone, torch threads = 2 (CPU). The peer is tried in
several configurations (its own batching knobs, and chunks of images fed by this harness) and the fastest is its
"best".

- **Speed and memory alone**: each (method, implementation, configuration) runs in its own subprocess: one warm-up
  on 64 images, then the median of `--repeats` timed runs on all images (more, up to 50, until 2 s are timed).
  Peak RSS added is the process's high-water mark minus its RSS before the warm-up. `--rounds` such subprocesses,
  interleaved; the median round counts.
- **The ratio, raced**: separate processes move by 10-40 % from one to the next on a shared machine, so the ratio
  comes from races instead: one subprocess holds ours and the peer's contending configurations (those within 15 %
  of the fastest alone), each with its own copy of the model, and runs them in turn, cycle after cycle (at least
  `--repeats`, more until each has `--race-seconds` timed); a race's ratio for a configuration is the median over
  cycles of its time over ours. Races are added until the geometric mean's 95 % interval over races (Student's t
  on the log ratios) is within `--precision` (default ±0.05) of it, at least 3 and at most `--max-rounds`; the
  table prints the interval and the count, so a ratio that did not settle says so.

The practical bound is the number of forward and forward+backward passes a method needs per image, divided by the
best measured rate of the bare network.

Prints a table and writes bench/results/attribution.json. Not a test: it prints numbers.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
SIGMA, N_SAMPLES, STEPS, WINDOW, STRIDE = 0.15, 50, 50, 4, 2

# (peer name, list of configurations); "chunk" = images per call made by this harness
PEERS = {
    "saliency": ("captum Saliency", [{"chunk": 512}, {"chunk": 128}, {"chunk": 64}]),
    "input_x_gradient": ("captum InputXGradient", [{"chunk": 512}, {"chunk": 128}, {"chunk": 64}]),
    "guided_backprop": ("captum GuidedBackprop", [{"chunk": 512}, {"chunk": 128}, {"chunk": 64}]),
    "guided_gradcam": ("captum GuidedGradCam", [{"chunk": 512}, {"chunk": 128}, {"chunk": 64}]),
    "smoothgrad": ("captum NoiseTunnel(Saliency)", [
        {"chunk": 512, "nt_samples_batch_size": 1}, {"chunk": 64, "nt_samples_batch_size": 1},
        {"chunk": 2, "nt_samples_batch_size": None}]),
    "integrated_gradients": ("captum IntegratedGradients", [
        {"chunk": 512, "internal_batch_size": 512}, {"chunk": 64, "internal_batch_size": 64},
        {"chunk": 2, "internal_batch_size": None}]),
    "occlusion": ("captum Occlusion", [
        {"chunk": 512, "perturbations_per_eval": 1}, {"chunk": 64, "perturbations_per_eval": 2},
        {"chunk": 1, "perturbations_per_eval": 128}]),
    "gradcam": ("pytorch-grad-cam GradCAM / Captum LayerGradCam", [
        {"chunk": 512}, {"chunk": 128}, {"chunk": 64},
        {"chunk": 512, "peer": "captum"}, {"chunk": 128, "peer": "captum"}, {"chunk": 64, "peer": "captum"}]),
    "gradcam_pp": ("pytorch-grad-cam GradCAMPlusPlus", [{"chunk": 512}, {"chunk": 128}, {"chunk": 64}]),
    "layercam": ("pytorch-grad-cam LayerCAM", [{"chunk": 512}, {"chunk": 128}, {"chunk": 64}]),
    "scorecam": ("pytorch-grad-cam ScoreCAM", [{"chunk": 512, "batch_size": 16}, {"chunk": 512, "batch_size": 64},
                                               {"chunk": 512, "batch_size": 128}]),
    "ablationcam": ("pytorch-grad-cam AblationCAM", [{"chunk": 512, "batch_size": 32},
                                                     {"chunk": 512, "batch_size": 64},
                                                     {"chunk": 512, "batch_size": 128}]),
    "deconvolution": ("captum Deconvolution", [{"chunk": 512}, {"chunk": 128}, {"chunk": 64}]),
    "deeplift": ("captum DeepLift", [{"chunk": 512}, {"chunk": 128}, {"chunk": 64}]),
    "expected_gradients": ("captum GradientShap(stdevs=0)", [{"chunk": 512}, {"chunk": 64}, {"chunk": 8}]),
    "gradient_shap": ("captum GradientShap", [{"chunk": 512}, {"chunk": 64}, {"chunk": 8}]),
    "deeplift_shap": ("captum DeepLiftShap", [{"chunk": 64}, {"chunk": 16}, {"chunk": 4}]),
    # the superpixel methods: the peer is given our superpixels (their SLIC time counted in both); Captum fits
    # KernelShap and Lime one image at a time
    "shapley_sampling": ("captum ShapleyValueSampling", [{"chunk": 64, "perturbations_per_eval": 64},
                                                         {"chunk": 16, "perturbations_per_eval": 256},
                                                         {"chunk": 1, "perturbations_per_eval": 512}]),
    "kernel_shap": ("captum KernelShap", [{"chunk": 1, "perturbations_per_eval": 256},
                                          {"chunk": 1, "perturbations_per_eval": 64}]),
    "lime": ("captum Lime (lime's kernel, Ridge)", [{"chunk": 1, "perturbations_per_eval": 256},
                                                    {"chunk": 1, "perturbations_per_eval": 64}]),
}
for _name in ("lrp_epsilon", "lrp_gamma", "lrp_alpha1_beta0", "lrp_epsilon_plus_flat", "lrp_epsilon_gamma_box"):
    PEERS[_name] = ("zennit Gradient attributor, used directly", [{"chunk": 512}, {"chunk": 128}, {"chunk": 64}])
for _name, _class in (("hirescam", "HiResCAM"), ("xgradcam", "XGradCAM"), ("eigencam", "EigenCAM"),
                      ("fullgrad", "FullGrad")):
    PEERS[_name] = (f"pytorch-grad-cam {_class}", [{"chunk": 512}, {"chunk": 128}, {"chunk": 64}])
CAM_CLASSES = {"gradcam": "GradCAM", "gradcam_pp": "GradCAMPlusPlus", "layercam": "LayerCAM", "scorecam": "ScoreCAM",
               "ablationcam": "AblationCAM", "hirescam": "HiResCAM", "xgradcam": "XGradCAM", "eigencam": "EigenCAM",
               "fullgrad": "FullGrad"}
SMOOTHGRAD_TYPES = {"smoothgrad": "smoothgrad", "smoothgrad_sq": "smoothgrad_sq", "vargrad": "vargrad"}
for _name in ("smoothgrad_sq", "vargrad"):
    PEERS[_name] = (f"captum NoiseTunnel({_name})", PEERS["smoothgrad"][1])
OUR_PARAMS = {"smoothgrad": {"n_samples": N_SAMPLES, "sigma": SIGMA}, "integrated_gradients": {"steps": STEPS},
              "scorecam": {"variant": "pytorch_grad_cam"}, "occlusion": {"window": WINDOW, "stride": STRIDE}}
OUR_PARAMS["smoothgrad_sq"] = OUR_PARAMS["vargrad"] = OUR_PARAMS["smoothgrad"]


def passes(method: str) -> dict[str, int]:
    """Forward ('f') and forward+backward ('fb') passes per image, as the method's registry entry declares
    them: a new method brings its own."""
    from mnist_xai.attribution import REGISTRY

    spec = REGISTRY[method]
    return spec.passes(spec.resolve(OUR_PARAMS.get(method, {})))


# ----------------------------------------------------------------------------- worker side

def _rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _load(model_path: Path, n_images: int, device: torch.device):
    from mnist_xai import data
    from mnist_xai.model import load_model

    model = load_model(model_path, device)
    data_dir = RESULTS / "data" / "mnist"
    if not data_dir.is_dir():
        data.download("mnist", data_dir)
    images, labels = data.load_split(data_dir, "test")
    indices = data.stratified_indices(labels, n_images, seed=0)
    x = data.normalize(images[indices]).to(device).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        targets = model(x).argmax(1)
    return model, x, targets


@functools.lru_cache(maxsize=2)
def _background(device) -> torch.Tensor:
    """64 training images (seed 0): the baseline distribution of the SHAP methods, ours and Captum's alike."""
    from mnist_xai import data

    images, _ = data.load_split(RESULTS / "data" / "mnist", "train")
    return data.background_images(images, 64, seed=0).to(device)


def _ours(method: str, model, x, targets, config: dict):
    from mnist_xai.attribution import REGISTRY, attribute

    background = {"background": _background(x.device)} if REGISTRY[method].background else {}
    return attribute(method, model, x, targets, **background, **{**OUR_PARAMS.get(method, {}), **config})


def _peer(method: str, model, x, targets, config: dict):
    """The peer's attribution of x, fed in chunks of config['chunk'] images."""
    chunk = config["chunk"]
    outputs = []
    for start in range(0, len(x), chunk):
        xs, ts = x[start:start + chunk], targets[start:start + chunk]
        outputs.append(_peer_call(method, model, xs, ts, config))
    return torch.cat([torch.as_tensor(o) for o in outputs])


def _peer_call(method, model, x, t, config):
    import captum.attr as ca

    if method == "saliency":
        return ca.Saliency(model).attribute(x, target=t, abs=True)
    if method == "input_x_gradient":
        return ca.InputXGradient(model).attribute(x, target=t)
    if method == "guided_backprop":
        return ca.GuidedBackprop(model).attribute(x, target=t)
    if method == "deconvolution":
        return ca.Deconvolution(model).attribute(x, target=t)
    if method.startswith("lrp_"):  # Zennit on its own (its composites; the CNN needs no canonizer)
        return _zennit(method, model, x, t)
    if method in ("expected_gradients", "gradient_shap"):  # 50 samples, as ours; noise as gradient_shap's sigma
        spread = float((x.flatten(1).amax(1) - x.flatten(1).amin(1)).max())
        stdevs = SIGMA * spread if method == "gradient_shap" else 0.0
        return ca.GradientShap(model).attribute(x, baselines=_background(x.device), n_samples=N_SAMPLES,
                                                stdevs=stdevs, target=t)
    if method == "deeplift_shap":  # against each of 16 background images, as ours
        return ca.DeepLiftShap(model).attribute(x, baselines=_background(x.device)[:16], target=t)
    if method == "deeplift":  # the same work as ours (x and the black reference in one batch); see test_oracles
        from mnist_xai.data import BLACK

        return ca.DeepLift(model).attribute(x, baselines=torch.full_like(x, BLACK), target=t)
    layer = model.get_submodule(model.cam_layer)
    if method == "guided_gradcam":
        return ca.GuidedGradCam(model, layer).attribute(x, target=t, interpolate_mode="bilinear")
    if method == "gradcam" and config.get("peer") == "captum":  # the same maps: ReLU'd, upsampled bilinearly
        maps = ca.LayerGradCam(model, layer).attribute(x, target=t, relu_attributions=True)
        return ca.LayerAttribution.interpolate(maps, tuple(x.shape[2:]), interpolate_mode="bilinear")[:, 0]
    if method in SMOOTHGRAD_TYPES:
        spread = float((x.flatten(1).amax(1) - x.flatten(1).amin(1)).max())
        return ca.NoiseTunnel(ca.Saliency(model)).attribute(
            x, nt_type=SMOOTHGRAD_TYPES[method], nt_samples=N_SAMPLES, stdevs=SIGMA * spread, target=t, abs=False,
            nt_samples_batch_size=config["nt_samples_batch_size"])
    if method == "integrated_gradients":
        from mnist_xai.data import BLACK

        return ca.IntegratedGradients(model).attribute(x, baselines=torch.full_like(x, BLACK), target=t,
                                                       n_steps=STEPS, method="riemann_right",
                                                       internal_batch_size=config["internal_batch_size"])
    if method in ("shapley_sampling", "kernel_shap", "lime"):
        return _captum_segments(method, model, x, t, config)
    if method == "occlusion":
        with torch.no_grad():
            return ca.Occlusion(model).attribute(x, target=t, sliding_window_shapes=(1, WINDOW, WINDOW),
                                                 strides=(1, STRIDE, STRIDE), baselines=0.0,
                                                 perturbations_per_eval=config["perturbations_per_eval"])
    import pytorch_grad_cam as gc
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    cam_class = getattr(gc, CAM_CLASSES[method])
    with cam_class(model=model, target_layers=[] if method == "fullgrad" else [layer]) as cam:
        if "batch_size" in config:
            cam.batch_size = config["batch_size"]
        return cam(input_tensor=x, targets=[ClassifierOutputTarget(int(c)) for c in t])


def _captum_segments(method, model, x, t, config):
    """Captum on our superpixels (default params: 25 orders, 256 coalitions); a pixel that is no feature of ours
    joins feature 1 (it equals the baseline, so it changes nothing)."""
    import captum.attr as ca
    from captum._utils.models.linear_model import SkLearnRidge

    from mnist_xai.attribution import REGISTRY
    from mnist_xai.attribution import segments as S

    params = REGISTRY[method].defaults()
    fill = S.fill_value(params["baseline"])
    masks = []
    for labels in S.superpixels(x, fill, params["n_segments"], params["compactness"]):
        mask = torch.as_tensor(labels)
        mask[mask == 0] = 1
        masks.append(mask - 1)
    mask = torch.stack(masks)[:, None].to(x.device)
    kwargs = {"baselines": fill, "target": t, "feature_mask": mask, "n_samples": params["n_samples"],
              "perturbations_per_eval": config["perturbations_per_eval"]}
    with torch.no_grad():
        if method == "shapley_sampling":
            return ca.ShapleyValueSampling(model).attribute(x, **kwargs)
        if method == "kernel_shap":
            return ca.KernelShap(model).attribute(x, **kwargs)
        width = params["kernel_width"]
        return ca.Lime(model, interpretable_model=SkLearnRidge(alpha=params["alpha"]),
                       similarity_func=lambda _x, _p, z, **_: float(S.lime_weights(z.bool(), width)[0])
                       ).attribute(x, **kwargs)


def _zennit(method, model, x, t):
    from zennit import composites, rules, types
    from zennit.attribution import Gradient

    from mnist_xai.data import BLACK, MEAN, STD

    layer_rule = {"lrp_epsilon": rules.Epsilon, "lrp_gamma": rules.Gamma,
                  "lrp_alpha1_beta0": lambda: rules.AlphaBeta(alpha=1.0, beta=0.0)}.get(method)
    if layer_rule is not None:
        composite = composites.LayerMapComposite(layer_map=[*composites.layer_map_base(), (types.Linear, layer_rule())])
    elif method == "lrp_epsilon_plus_flat":
        composite = composites.EpsilonPlusFlat()
    else:
        composite = composites.EpsilonGammaBox(low=BLACK, high=(1.0 - MEAN) / STD)
    with torch.no_grad():
        logits = model(x)
    start = torch.zeros_like(logits).scatter_(1, t[:, None], logits.gather(1, t[:, None]))
    with Gradient(model=model, composite=composite) as attributor:
        _, relevance = attributor(x, start)
    return relevance[:, 0]


def _bare_rates(model, x, device) -> dict:
    """Best images/s of the bare network over batch sizes: forward only, and forward+input-gradient."""
    def timed(fn, batch):
        fn(batch)
        _sync(device)
        started, count = time.perf_counter(), 0
        while time.perf_counter() - started < 1.0:
            fn(batch)
            count += len(batch)
        _sync(device)
        return count / (time.perf_counter() - started)

    def forward(batch):
        with torch.inference_mode():
            model(batch)

    def forward_backward(batch):
        batch = batch.detach().requires_grad_(True)
        torch.autograd.grad(model(batch)[:, 0].sum(), batch)

    rates = {"forward": {}, "forward_backward": {}}
    for size in (32, 64, 128, 256, 512):
        batch = x[:size].contiguous(memory_format=torch.channels_last)
        rates["forward"][size] = timed(forward, batch)
        rates["forward_backward"][size] = timed(forward_backward, batch)
    return {"forward": max(rates["forward"].values()), "forward_backward": max(rates["forward_backward"].values()),
            "by_batch": rates}


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def _warm_up_config(config: dict) -> dict:
    """The configuration for the 64-image warm-up: a chunk no larger than the warm-up."""
    return {**config, "chunk": min(config["chunk"], 64)} if "chunk" in config else config


def _timed(device, run, *args):
    """What one call of run(*args) returns, and the seconds it took, the device synchronised on both sides."""
    _sync(device)
    started = time.perf_counter()
    result = run(*args)
    _sync(device)
    return result, time.perf_counter() - started


def worker(args) -> None:
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(2)
    model, x, targets = _load(Path(args.model), args.n_images, device)
    if args.worker == "bound":
        print(json.dumps(_bare_rates(model, x, device)))
        return
    config = json.loads(args.config)
    run = _ours if args.worker == "ours" else _peer
    baseline_rss = _rss_bytes()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    run(args.method, model, x[:64], targets[:64], _warm_up_config(config))
    times = []
    while len(times) < args.repeats or (sum(times) < 2.0 and len(times) < 50):  # fast methods: more repeats
        maps, seconds = _timed(device, run, args.method, model, x, targets, config)
        times.append(seconds)
    peak_added = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - baseline_rss
    result = {"seconds": statistics.median(times), "times": times, "peak_rss_added_mb": peak_added / 2**20,
              "images_per_second": len(x) / statistics.median(times), "shape": list(maps.shape)}
    if device.type == "cuda":
        result["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    print(json.dumps(result))


def race(args) -> None:
    """Ours and each contending peer configuration in turn, cycle after cycle, in this one process: each cycle's
    ratio is the peer's time over ours, measured back to back, so the machine's state is the same for both."""
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(2)
    model, x, targets = _load(Path(args.model), args.n_images, device)
    contenders = [(_ours, model, {})] + [(_peer, copy.deepcopy(model), config) for config in json.loads(args.config)]
    for run, own_model, config in contenders:
        run(args.method, own_model, x[:64], targets[:64], _warm_up_config(config))
    times = [[] for _ in contenders]
    while len(times[0]) < args.repeats or (min(map(sum, times)) < args.race_seconds and len(times[0]) < 50):
        for (run, own_model, config), timed in zip(contenders, times, strict=True):
            timed.append(_timed(device, run, args.method, own_model, x, targets, config)[1])
    print(json.dumps({"ratios": [statistics.median(peer / mine for mine, peer in zip(times[0], timed, strict=True))
                                 for timed in times[1:]], "cycles": len(times[0])}))


# ----------------------------------------------------------------------------- driver side

def _spawn(args, kind: str, method: str = "", config: dict | list | None = None) -> dict:
    command = [sys.executable, __file__, "--worker", kind, "--method", method, "--config", json.dumps(config or {}),
               "--model", str(args.model), "--n-images", str(args.n_images), "--repeats", str(args.repeats),
               "--race-seconds", str(args.race_seconds), "--device", args.device]
    env = {**os.environ, "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2", "MLFLOW_DISABLE_TELEMETRY": "true"}
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _ensure_model(args) -> Path:
    default = ROOT / "models" / "model.pt"
    if args.model:
        return Path(args.model)
    if default.is_file():
        return default
    path = RESULTS / "model.pt"
    if not path.is_file():
        print("no models/model.pt: training one epoch on 6,000 images for the benchmark", flush=True)
        from mnist_xai import data
        from mnist_xai.model import MnistCNN, save_model
        from mnist_xai.training import train

        data_dir = RESULTS / "data" / "mnist"
        data.download("mnist", data_dir)
        images, labels = data.load_split(data_dir, "train")
        test_images, test_labels = data.load_split(data_dir, "test")
        subset = np.random.default_rng(0).choice(len(images), 6000, replace=False)
        torch.manual_seed(0)
        model = MnistCNN()
        train(model, images[subset], labels[subset], test_images[:1000], test_labels[:1000], epochs=1,
              batch_size=64, lr=0.003, weight_decay=1e-4, seed=0, device=torch.device("cpu"))
        RESULTS.mkdir(parents=True, exist_ok=True)
        save_model(model, path)
    return path


def _median_round(rounds: list[dict]) -> dict:
    """The round with the median speed: the same statistic for ours and for every peer configuration, so
    trying more peer configurations does not by itself favour the peer."""
    valid = sorted((run for run in rounds if "error" not in run), key=lambda run: run["images_per_second"])
    return valid[len(valid) // 2] if valid else rounds[0]


def ratio_interval(ratios: list[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """The geometric mean of the races' ratios and its Student's t interval on the log scale (infinite below two
    races)."""
    logs = [math.log(ratio) for ratio in ratios]
    middle = statistics.fmean(logs)
    if len(logs) < 2:
        return math.exp(middle), 0.0, math.inf
    from scipy import stats

    reach = stats.t.ppf((1 + confidence) / 2, len(logs) - 1) * statistics.stdev(logs) / math.sqrt(len(logs))
    return math.exp(middle), math.exp(middle - reach), math.exp(middle + reach)


def _settled(ratios: list[float], precision: float) -> bool:
    middle, low, high = ratio_interval(ratios)
    return len(ratios) >= 3 and max(middle - low, high - middle) <= precision


def _race(args, method: str, contenders: list[dict]) -> tuple[dict, list[float]]:
    """Races of ours against the contending configurations until the best one's ratio settles: that
    configuration and its ratio in each race."""
    per_config: list[list[float]] = [[] for _ in contenders]
    best = 0
    while len(per_config[0]) < args.max_rounds:
        result = _spawn(args, "race", method, contenders)
        if "error" in result:
            break
        for ratios, ratio in zip(per_config, result["ratios"], strict=True):
            ratios.append(ratio)
        best = min(range(len(contenders)), key=lambda i: ratio_interval(per_config[i])[0])  # the fastest peer
        if _settled(per_config[best], args.precision):
            break
    return contenders[best], per_config[best]


def _bound(passes: dict, rates: dict) -> float | None:
    seconds = passes.get("f", 0) / rates["forward"] + passes.get("fb", 0) / rates["forward_backward"]
    return 1 / seconds if seconds else None


def driver(args) -> None:
    from mnist_xai.attribution import METHODS

    args.model = _ensure_model(args)
    methods = args.methods or list(METHODS)
    print(f"device {args.device}, {args.n_images} images; alone: median of {args.rounds} round(s) of a median of "
          f"{args.repeats}+ runs; ratio: races until its 95 % interval is within ±{args.precision} (3 to "
          f"{args.max_rounds}); model {args.model}", flush=True)
    rates = _spawn(args, "bound")
    print(f"bare network: forward {rates['forward']:.0f} img/s, forward+backward {rates['forward_backward']:.0f} "
          "img/s (best batch size)", flush=True)
    rows = []
    header = (f"{'method':22} {'ours alone':>11} {'peer alone':>11} {'ratio':>6} {'95% interval':>13} {'n':>3} "
              f"{'bound':>9} "
              f"{'of bound':>8} "
              f"{'ours MB':>8} {'peer MB':>8}  peer (best configuration)")
    print(header, flush=True)
    for method in methods:
        peer_name, configs = PEERS.get(method, (None, []))
        ours_rounds, peer_rounds = [], [[] for _ in configs]
        for _ in range(args.rounds):  # interleaved, so a slow spell hits both sides
            ours_rounds.append(_spawn(args, "ours", method))
            for runs, config in zip(peer_rounds, configs, strict=True):
                runs.append(_spawn(args, "peer", method, config))
        ours = _median_round(ours_rounds)
        peer_runs = [{**_median_round(runs), "config": config}
                     for runs, config in zip(peer_rounds, configs, strict=True)]
        valid = [run for run in peer_runs if "error" not in run]
        fastest = max((run["images_per_second"] for run in valid), default=0)
        bound = _bound(passes(method), rates)
        row = {"method": method, "ours": ours, "peer": peer_name, "peer_best": None, "peer_runs": peer_runs,
               "bound_images_per_second": bound}
        if "error" not in ours and valid:  # the configurations that could be the fastest race against ours
            contenders = [run["config"] for run in valid if run["images_per_second"] >= 0.85 * fastest]
            config, ratios = _race(args, method, contenders)
            row["peer_best"] = next(run for run in valid if run["config"] == config)
            if ratios:
                middle, low, high = ratio_interval(ratios)
                row |= {"ratio": middle, "ratio_interval": [low, high], "ratio_races": ratios}
        if "error" not in ours:
            row["fraction_of_bound"] = ours["images_per_second"] / bound if bound else None
        rows.append(row)
        print(_format_row(row), flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = Path(args.out)
    out.write_text(json.dumps({"device": args.device, "n_images": args.n_images, "repeats": args.repeats,
                               "torch": torch.__version__, "bare_rates": rates, "methods": rows}, indent=2) + "\n")
    print(f"wrote {out}")


def _format_row(row) -> str:
    ours, best = row["ours"], row["peer_best"]
    if "error" in ours:
        return f"{row['method']:22} error: {ours['error']}"
    def num(value, spec):
        return format(value, spec) if value is not None else "-"
    races, interval = row.get("ratio_races") or [], row.get("ratio_interval")
    spread = f"{interval[0]:.2f}-{interval[1]:.2f}" if interval and math.isfinite(interval[1]) else "-"
    return (f"{row['method']:22} {ours['images_per_second']:11.0f} "
            f"{num(best and best['images_per_second'], '11.0f')} {num(row.get('ratio'), '6.2f')} {spread:>13} "
            f"{len(races):3d} "
            f"{num(row['bound_images_per_second'], '9.0f')} {num(row.get('fraction_of_bound'), '8.2f')} "
            f"{ours['peak_rss_added_mb']:8.0f} {num(best and best['peak_rss_added_mb'], '8.0f')}  "
            f"{row['peer'] or '(no peer)'} {json.dumps(best['config']) if best else ''}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", nargs="*", help="default: all")
    parser.add_argument("--n-images", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=1, help="separate subprocesses per configuration for its "
                        "speed and memory alone, interleaved; the median round counts")
    parser.add_argument("--precision", type=float, default=0.05, help="races are added until the ratio's 95 %% "
                        "interval is within this of it (default 0.05)")
    parser.add_argument("--max-rounds", type=int, default=6, help="at most this many races (default 6)")
    parser.add_argument("--race-seconds", type=float, default=1.0, help="cycles of a race go on until each "
                        "contender has this many seconds timed (at least --repeats cycles; default 1)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--model", default="", help="state_dict to use (default: models/model.pt)")
    parser.add_argument("--out", default=str(RESULTS / "attribution.json"))
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--method", help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == "race":
        race(args)
    elif args.worker:
        worker(args)
    else:
        driver(args)


if __name__ == "__main__":
    main()
