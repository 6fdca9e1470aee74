"""Small matplotlib helpers the lessons reuse: attention heatmaps and images.

Every helper draws a title and labelled axes (or, for pictures, hides the pixel axes), returns
the ``Axes`` or ``Figure`` it drew on, and never calls ``plt.show()``: Jupyter shows the figure
at the end of the cell, and tests can inspect it.

Used from notebooks/01_attention_in_numpy.ipynb onwards.
"""

import math
import textwrap
from typing import Any, Optional, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from crossmodal_edu._checks import fmt_shape
from crossmodal_edu.compare import to_numpy

__all__ = ["plot_attention", "show_attention_on_image", "show_images"]

_DPI = 100


def _new_axes(ax: Optional[Axes], figsize: tuple[float, float]) -> Axes:
    if ax is not None:
        return ax
    _, ax = plt.subplots(figsize=figsize, dpi=_DPI)
    return ax


def _require_image(name: str, image: np.ndarray) -> None:
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"{name} must have shape (H, W, 3): {name} has shape {fmt_shape(image.shape)}")


def plot_attention(
    weights: Any,
    query_labels: Optional[Sequence[str]] = None,
    key_labels: Optional[Sequence[str]] = None,
    ax: Optional[Axes] = None,
    title: str = "Attention weights",
    cmap: str = "viridis",
    xlabel: str = "key",
    ylabel: str = "query",
    value_label: str = "weight",
) -> Axes:
    """Heatmap of one attention matrix: row ``i`` is how query ``i`` spreads over the keys.

    Shapes: weights ``(Lq, Lk)`` (pick one batch element and head first, e.g. ``weights[0, 0]``);
    query_labels ``Lq`` strings; key_labels ``Lk`` strings. Queries (modality A) run down the
    y axis, keys (modality B) along the x axis; name them with ``ylabel`` and ``xlabel``
    (e.g. ``"word (asks)"``, ``"patch (answers)"``). The colour scale starts at 0 unless some
    value is negative (any score matrix works, not only weights; ``value_label`` names it).
    Returns the Axes.
    """
    weights = to_numpy(weights)
    if weights.ndim != 2:
        raise ValueError(
            f"weights must have shape (Lq, Lk): weights has shape {fmt_shape(weights.shape)}; "
            f"pick one batch element and head first, e.g. weights[0, 0]"
        )
    Lq, Lk = weights.shape
    checks = (("query_labels", query_labels, Lq, "Lq"), ("key_labels", key_labels, Lk, "Lk"))
    for name, labels, n, axis in checks:
        if labels is not None and len(labels) != n:
            raise ValueError(
                f"{name} must have one label per row of weights ({axis} = {n}): got {len(labels)} "
                f"labels for weights of shape {fmt_shape(weights.shape)}"
            )
    ax = _new_axes(ax, figsize=(max(3.0, 0.4 * Lk + 1.5), max(2.5, 0.4 * Lq + 1.0)))
    vmin = min(0.0, float(np.nanmin(weights))) if weights.size else 0.0
    image = ax.imshow(weights, cmap=cmap, vmin=vmin, aspect="auto", interpolation="nearest")
    ax.figure.colorbar(image, ax=ax, label=value_label)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if query_labels is not None:
        ax.set_yticks(range(Lq), [str(label) for label in query_labels])
    if key_labels is not None:
        ax.set_xticks(range(Lk), [str(label) for label in key_labels], rotation=90)
    return ax


def show_attention_on_image(
    image: Any,
    patch_weights: Any,
    grid: tuple[int, int],
    ax: Optional[Axes] = None,
    title: Optional[str] = None,
    alpha: float = 0.6,
    vmax: Optional[float] = None,
    colorbar: bool = True,
) -> Axes:
    """Overlay one query's attention over image patches on the image itself.

    Shapes: image ``(H, W, 3)``; patch_weights ``(grid_h, grid_w)`` or flat ``(grid_h * grid_w,)``
    (row-major, as patches are numbered); grid ``(grid_h, grid_w)`` with ``H`` divisible by
    ``grid_h`` and ``W`` by ``grid_w``. Each weight is repeated over its patch's pixels (nearest
    upsampling: the patch is the unit attention chooses, so the map stays blocky on purpose).
    The colour scale runs from 0 to ``vmax`` (default: this map's largest weight); pass one
    ``vmax`` to several panels to make their brightness comparable (and ``colorbar=False`` to
    draw one colour bar for all of them, as :func:`show_word_maps` does).
    Returns the Axes; its second image holds the upsampled ``(H, W)`` map.
    """
    image = to_numpy(image)
    patch_weights = to_numpy(patch_weights)
    _require_image("image", image)
    grid_h, grid_w = (int(n) for n in grid)
    H, W = image.shape[:2]
    if patch_weights.shape not in ((grid_h, grid_w), (grid_h * grid_w,)):
        raise ValueError(
            f"patch_weights must have shape ({grid_h}, {grid_w}) or ({grid_h * grid_w},) for grid "
            f"({grid_h}, {grid_w}): patch_weights has shape {fmt_shape(patch_weights.shape)}"
        )
    if grid_h < 1 or grid_w < 1 or H % grid_h or W % grid_w:
        raise ValueError(
            f"image of shape {fmt_shape(image.shape)} cannot be cut into a ({grid_h}, {grid_w}) grid "
            f"of equal patches: H = {H} must be divisible by grid_h = {grid_h} "
            f"and W = {W} by grid_w = {grid_w}"
        )
    patch_weights = patch_weights.reshape(grid_h, grid_w)  # (grid_h, grid_w)
    heat = np.repeat(np.repeat(patch_weights, H // grid_h, axis=0), W // grid_w, axis=1)  # (H, W)

    ax = _new_axes(ax, figsize=(4.0, 4.0))
    ax.imshow(image)
    overlay = ax.imshow(heat, cmap="magma", alpha=alpha, vmin=0.0, vmax=vmax, interpolation="nearest")
    if colorbar:
        ax.figure.colorbar(overlay, ax=ax, label="weight", fraction=0.046, pad=0.04)
    ax.set_title(title if title is not None else "Attention over image patches")
    ax.set_axis_off()
    return ax


def show_word_maps(image: Any, word_maps: Any, words: Sequence[str], axes: Optional[Sequence[Axes]] = None,
                   size: float = 1.7) -> Figure:
    """One panel per caption word: where in ``image`` that word was read, on one colour scale.

    Shapes: image ``(H, W, 3)``; word_maps ``(L, h, w)`` with ``L >= len(words)`` (padding rows
    beyond the words are ignored), e.g. one caption of ``Generation.word_maps``. ``axes``: one
    per word (default: a new row of them). Returns the Figure, with a single colour bar.
    """
    word_maps = to_numpy(word_maps)
    if word_maps.ndim != 3 or word_maps.shape[0] < len(words):
        raise ValueError(
            f"word_maps must have shape (L, h, w) with L >= {len(words)} (one map per word), "
            f"but word_maps has shape {fmt_shape(word_maps.shape)}"
        )
    if axes is None:
        fig, axes = plt.subplots(1, len(words), figsize=(size * len(words), size + 0.5), dpi=_DPI, squeeze=False)
        axes = axes[0]
    vmax = float(word_maps[: len(words)].max())
    for j, (word, ax) in enumerate(zip(words, axes)):
        show_attention_on_image(image, word_maps[j], word_maps.shape[1:], ax=ax, title=f"'{word}'",
                                vmax=vmax, colorbar=False)
    fig = axes[0].figure
    fig.colorbar(axes[0].images[-1], ax=list(axes), label="weight", fraction=0.02, pad=0.01)
    return fig


def show_images(
    images: Any,
    titles: Optional[Sequence[str]] = None,
    ncols: int = 4,
    size: float = 2.0,
    suptitle: Optional[str] = None,
) -> Figure:
    """A grid of images with titles and no pixel axes.

    Shapes: images ``(B, H, W, 3)`` or a list of ``(H, W, 3)`` arrays; titles ``B`` strings.
    ``ncols`` images per row, each ``size`` inches wide. Returns the Figure.
    """
    images = [to_numpy(image) for image in images]
    if not images:
        raise ValueError("images is empty: expected at least one (H, W, 3) image")
    for i, image in enumerate(images):
        _require_image(f"images[{i}]", image)
    if titles is not None and len(titles) != len(images):
        raise ValueError(
            f"titles must have one entry per image: got {len(titles)} titles for {len(images)} images"
        )
    ncols = max(1, min(ncols, len(images)))
    nrows = math.ceil(len(images) / ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(size * ncols, size * nrows + 0.4), dpi=_DPI, squeeze=False
    )
    for i, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if i < len(images):
            ax.imshow(images[i])
            if titles is not None:
                # Wrap long captions so neighbouring titles never run into each other.
                ax.set_title(textwrap.fill(str(titles[i]), width=max(12, int(size * 11))), fontsize=9)
    if suptitle is not None:
        fig.suptitle(suptitle)
    return fig
