"""Attribution methods for image classifiers, batched, one verb for all:

    maps = attribute("gradcam", model, inputs, targets, layer="relu2")   # float32 [N, H, W]

`METHODS` lists the names; `REGISTRY[name]` says what each implements, which peer it
matches, its conventions and its params.
"""

from mnist_xai.attribution.registry import METHODS, REGISTRY, Method, Param, attribute, get_method, is_signed

__all__ = ["METHODS", "REGISTRY", "Method", "Param", "attribute", "get_method", "is_signed"]
