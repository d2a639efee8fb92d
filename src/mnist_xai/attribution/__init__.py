"""Attribution methods for image classifiers, batched, one verb for all:

    maps = attribute("gradcam", model, inputs, targets, layer="relu2")   # float32 [N, H, W]

`METHODS` lists the names; `REGISTRY[name]` says what each implements, which peer it
matches, its conventions, its params and its properties. Importing this package loads no
torch; `attribute` (in core.py) is loaded on first use.
"""

from mnist_xai.attribution.registry import METHODS, REGISTRY, Method, get_method, is_signed

__all__ = ["METHODS", "REGISTRY", "Method", "attribute", "get_method", "is_signed"]


def __getattr__(name: str):
    if name == "attribute":  # PEP 562: torch is imported only by those who attribute
        from mnist_xai.attribution.core import attribute

        return attribute
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
