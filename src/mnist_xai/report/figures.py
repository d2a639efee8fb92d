"""Pictures for the report and MLflow: heatmap overlays as small PNGs, and matplotlib charts.

Overlay convention (stated in the report): the digit is drawn dimmed in grey;
the attribution is laid over it in colour with opacity growing with |value|.
Signed methods use blue (negative) to red (positive) on a scale symmetric
around 0; non-negative methods use one sequential colour map from 0. Within a
method every map shares one scale: +-L, where L is the 99th percentile of
|attribution| over the maps shown.
"""

from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")  # no display; must precede pyplot
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

SIGNED_CMAP = "bwr"
UNSIGNED_CMAP = "inferno"


def scale_limit(maps: np.ndarray) -> float:
    """L: the 99th percentile of |map| over all given maps (>0 so that flat maps still draw)."""
    limit = float(np.percentile(np.abs(maps), 99)) if maps.size else 0.0
    return limit if limit > 0 else float(np.abs(maps).max() or 1.0)


def overlay_rgb(image: np.ndarray, attribution: np.ndarray, limit: float, signed: bool) -> np.ndarray:
    """uint8 RGB [H, W, 3]: the dimmed digit with the attribution blended over it."""
    base = np.repeat((image.astype(np.float32) / 255.0 * 0.55)[..., None], 3, axis=2)
    if signed:
        normed = np.clip(attribution / limit, -1, 1)
        colour = matplotlib.colormaps[SIGNED_CMAP]((normed + 1) / 2)[..., :3]
        alpha = np.abs(normed)[..., None]
    else:
        normed = np.clip(attribution / limit, 0, 1)
        colour = matplotlib.colormaps[UNSIGNED_CMAP](0.25 + 0.75 * normed)[..., :3]
        alpha = normed[..., None]
    return (255 * ((1 - alpha) * base + alpha * colour)).round().astype(np.uint8)


def png_bytes(rgb: np.ndarray) -> bytes:
    """A PNG at the array's own size: maps are embedded at 28 px, and the page scales them up
    (image-rendering: pixelated)."""
    out = io.BytesIO()
    Image.fromarray(rgb).save(out, format="PNG")
    return out.getvalue()


def data_uri(png: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(png).decode('ascii')}"


def digit_png(image: np.ndarray) -> bytes:
    return png_bytes(np.repeat(image[..., None], 3, axis=2))


def colour_bar_png(signed: bool, width: int = 160, height: int = 12) -> bytes:
    """The colour scale as a horizontal bar, left = -L (signed) or 0, right = +L."""
    ramp = np.linspace(-1 if signed else 0, 1, width)
    if signed:
        colours = matplotlib.colormaps[SIGNED_CMAP]((ramp + 1) / 2)[:, :3]
    else:
        colours = matplotlib.colormaps[UNSIGNED_CMAP](0.25 + 0.75 * ramp)[:, :3]
    rgb = (255 * np.repeat(colours[None], height, axis=0)).round().astype(np.uint8)
    return png_bytes(rgb)


def figure_png(figure) -> bytes:
    out = io.BytesIO()
    figure.savefig(out, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    return out.getvalue()


def training_curves(history: list[dict]):
    """Loss and accuracy per epoch, train and test."""
    epochs = [row["epoch"] for row in history]
    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(8, 3))
    for split, style in (("train", "-o"), ("test", "--s")):
        loss_axis.plot(epochs, [row[f"{split}_loss"] for row in history], style, label=split)
        accuracy_axis.plot(epochs, [100 * row[f"{split}_accuracy"] for row in history], style, label=split)
    loss_axis.set(xlabel="epoch", ylabel="cross-entropy", title="Loss")
    accuracy_axis.set(xlabel="epoch", ylabel="accuracy (%)", title="Accuracy")
    for axis in (loss_axis, accuracy_axis):
        axis.grid(alpha=0.3)
        axis.legend()
        axis.xaxis.get_major_locator().set_params(integer=True)
    figure.tight_layout()
    return figure


def confusion_figure(confusion: np.ndarray, class_names: list[str]):
    """Counts of (true, predicted) test images; the diagonal dimmed so the errors stand out."""
    size = max(4.5, 0.45 * len(class_names) + 2)
    figure, axis = plt.subplots(figsize=(size, size * 0.9))
    off_diagonal = confusion.astype(float).copy()
    np.fill_diagonal(off_diagonal, np.nan)
    axis.imshow(off_diagonal, cmap="Reds")
    for (row, column), count in np.ndenumerate(confusion):
        axis.text(column, row, str(count), ha="center", va="center", fontsize=7,
                  color="#555" if row == column else "black")
    ticks = range(len(class_names))
    axis.set_xticks(ticks, class_names, rotation=45, ha="right", fontsize=8)
    axis.set_yticks(ticks, class_names, fontsize=8)
    axis.set(xlabel="predicted", ylabel="true", title="Confusion matrix (test set)")
    figure.tight_layout()
    return figure


def method_grid(explanation, images: np.ndarray, count: int = 16, columns: int = 8, zoom: int = 4) -> np.ndarray:
    """The first `count` maps of one method overlaid on their digits, on one shared scale, as one RGB image
    (for MLflow): a grid of `columns`, each map enlarged `zoom` times, 2 px apart. No matplotlib: it is
    drawn in milliseconds."""
    from mnist_xai.attribution import is_signed

    signed = is_signed(explanation.method)
    shown = min(count, len(explanation.maps))
    limit = scale_limit(explanation.maps[:shown])
    rows = (shown + columns - 1) // columns
    size = 28 * zoom
    grid = np.full((rows * (size + 2), min(columns, shown) * (size + 2), 3), 255, dtype=np.uint8)
    for i in range(shown):
        tile = overlay_rgb(images[explanation.indices[i]], explanation.maps[i], limit, signed)
        row, column = divmod(i, columns)
        grid[row * (size + 2):row * (size + 2) + size, column * (size + 2):column * (size + 2) + size] = \
            tile.repeat(zoom, axis=0).repeat(zoom, axis=1)
    return grid


def _method_colours(methods: list[str]) -> dict[str, tuple]:
    palette = matplotlib.colormaps["tab20"]
    colours, index = {}, 0
    for method in methods:
        if method == "random":
            colours[method] = (0, 0, 0, 1)
        else:
            colours[method] = palette(index % 20)
            index += 1
    return colours


def faithfulness_figure(curves: list[dict]):
    """Deletion and insertion curves: mean probability of the predicted class per method, with a band of
    one standard deviation for the random control."""
    methods = list(dict.fromkeys(row["method"] for row in curves))
    colours = _method_colours(methods)
    figure, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
    for axis, name in zip(axes, ("deletion", "insertion"), strict=True):
        for method in methods:
            rows = [row for row in curves if row["method"] == method and row["curve"] == name]
            x = [row["fraction"] for row in rows]
            y = np.array([row["mean"] for row in rows])
            control = method == "random"
            axis.plot(x, y, "--" if control else "-", color=colours[method], lw=2 if control else 1.3, label=method)
            if control:
                spread = np.array([row["std"] for row in rows])
                axis.fill_between(x, y - spread, y + spread, color="0.5", alpha=0.15, lw=0)
        axis.set(xlabel=f"fraction of pixels {'removed' if name == 'deletion' else 'inserted'}",
                 title=f"{name.capitalize()} ({'lower' if name == 'deletion' else 'higher'} area is better)")
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("probability of the predicted class")
    axes[1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False)
    figure.tight_layout()
    return figure


def randomisation_figure(records: list[dict]):
    """Spearman rho of |map| against the trained model's as layers are randomised from the top (original MPRT)."""
    methods = list(dict.fromkeys(row["method"] for row in records))
    colours = _method_colours(methods)
    figure, axis = plt.subplots(figsize=(7.5, 3.6))
    labels = []
    for method in methods:
        rows = sorted((row for row in records if row["method"] == method), key=lambda row: row["step"])
        labels = [row["randomised"].split("+")[-1] if row["step"] else "none" for row in rows]
        control = method == "random"
        rho = [np.nan if row["rho"] is None else row["rho"] for row in rows]  # None: every map collapsed
        axis.plot(range(len(rows)), rho, "--o" if control else "-o", ms=3, color=colours[method],
                  lw=2 if control else 1.3, label=method)
    axis.set_xticks(range(len(labels)), ["trained"] + [f"+{name}" for name in labels[1:]])
    axis.set(xlabel="layers re-initialised (cascading, from the top)", ylabel="Spearman rho of |map|",
             title="Model-parameter randomisation (original MPRT)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False)
    figure.tight_layout()
    return figure


def agreement_figure(methods: list[str], matrix: np.ndarray):
    """Mean Spearman rho of |map| between every pair of methods."""
    size = 0.42 * len(methods) + 2.2
    figure, axis = plt.subplots(figsize=(size + 1, size))
    image = axis.imshow(matrix, cmap="viridis", vmin=min(0.0, float(matrix.min())), vmax=1)
    for (row, column), value in np.ndenumerate(matrix):
        axis.text(column, row, f"{value:.2f}", ha="center", va="center", fontsize=6,
                  color="white" if value < 0.6 else "black")
    axis.set_xticks(range(len(methods)), methods, rotation=60, ha="right", fontsize=7)
    axis.set_yticks(range(len(methods)), methods, fontsize=7)
    axis.set_title("Method agreement (mean Spearman rho of |map|)", fontsize=9)
    figure.colorbar(image, ax=axis, fraction=0.046, pad=0.04)
    figure.tight_layout()
    return figure
