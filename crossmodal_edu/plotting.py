"""Small matplotlib helpers the lessons reuse: attention heatmaps, images, token grids, and the
VQ-VAE diagram of lesson 05.

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
from matplotlib.lines import Line2D
from matplotlib.patches import FancyBboxPatch

from crossmodal_edu._checks import fmt_shape
from crossmodal_edu.compare import to_numpy

__all__ = ["plot_attention", "show_attention_on_image", "show_word_maps", "show_images", "token_colours",
           "show_token_grid", "draw_vq_vae"]

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


# --- image tokens as a grid of categories ------------------------------------------------------

#: The colour of the background code in :func:`show_token_grid`: a light grey, so that it recedes.
BACKGROUND_GREY = (0.86, 0.86, 0.86)


def _qualitative_colours() -> list[tuple[float, float, float]]:
    """matplotlib's tab20, tab20b and tab20c palettes without their greys: 54 distinct colours."""
    colours = []
    for name in ("tab20", "tab20b", "tab20c"):
        for rgba in plt.get_cmap(name).colors:
            r, g, b = (float(c) for c in rgba[:3])
            if max(r, g, b) - min(r, g, b) > 0.05:  # a grey has (almost) equal channels
                colours.append((r, g, b))
    return colours


def _luminance(rgb: Sequence[float]) -> float:
    """Relative brightness in [0, 1] (ITU-R BT.601 weights), to pick black or white text."""
    r, g, b = rgb[:3]
    return 0.299 * r + 0.587 * g + 0.114 * b


def token_colours(image_tokens: Any, background: Optional[int] = None) -> dict[int, tuple[float, float, float]]:
    """A categorical colour for every code that occurs in ``image_tokens`` (any shape of ints).

    Codes are categories, not quantities: code 41 is no more like code 42 than like code 200, so a
    colour *map* (viridis) would suggest an order that is not there. ``background`` (the code an
    empty image is made of) gets :data:`BACKGROUND_GREY`; the other codes, in increasing order,
    get the distinct colours of matplotlib's qualitative palettes (54 of them, then repeated).
    Pass the result to several :func:`show_token_grid` calls so that one code has one colour in all.
    """
    codes = np.unique(to_numpy(image_tokens).astype(np.int64))
    palette = _qualitative_colours()
    colours: dict[int, tuple[float, float, float]] = {}
    others = [int(code) for code in codes if background is None or code != background]
    for i, code in enumerate(others):
        colours[code] = palette[i % len(palette)]
    if background is not None:
        colours[int(background)] = BACKGROUND_GREY
    return colours


def show_token_grid(
    image_tokens: Any,
    ax: Optional[Axes] = None,
    background: Optional[int] = None,
    colours: Optional[dict] = None,
    title: str = "image_tokens",
    fontsize: float = 8.0,
) -> Axes:
    """One grid of image tokens: each cell in its code's colour, with the code's id written on it.

    Shapes: image_tokens ``(h, w)`` ints (one image; e.g. ``tokenizer.tokenize(images)[0]``).
    ``colours``: code -> RGB, as :func:`token_colours` makes (default: made from this grid and
    ``background``). Each id is written in black or white, whichever contrasts more with its cell;
    the background code's ids in a mid grey, so the object tokens stand out. Returns the Axes.
    """
    grid = to_numpy(image_tokens)
    if grid.ndim != 2:
        raise ValueError(
            f"image_tokens must have shape (h, w), one image: image_tokens has shape {fmt_shape(grid.shape)}; "
            f"pick one image first, e.g. image_tokens[0]"
        )
    grid = grid.astype(np.int64)
    colours = token_colours(grid, background) if colours is None else colours
    missing = sorted(set(np.unique(grid).tolist()) - set(colours))
    if missing:
        raise ValueError(f"colours has no colour for codes {missing[:10]}: make it from every grid you draw")
    h, w = grid.shape
    rgb = np.array([colours[int(code)] for code in grid.reshape(-1)], dtype=float).reshape(h, w, 3)
    ax = _new_axes(ax, figsize=(0.45 * w + 1.0, 0.45 * h + 1.0))
    ax.imshow(rgb, interpolation="nearest")
    for (r, c), code in np.ndenumerate(grid):
        if background is not None and code == background:
            text_colour = (0.45, 0.45, 0.45)
        else:
            text_colour = "black" if _luminance(rgb[r, c]) > 0.5 else "white"
        ax.text(c, r, str(code), ha="center", va="center", fontsize=fontsize, color=text_colour)
    ax.set_xticks(range(w))
    ax.set_yticks(range(h))
    ax.set_xticks(np.arange(-0.5, w), minor=True)
    ax.set_yticks(np.arange(-0.5, h), minor=True)
    ax.grid(which="minor", color="white", linewidth=1.0)
    ax.tick_params(which="minor", length=0)
    ax.set_xlabel("token column")
    ax.set_ylabel("token row")
    ax.set_title(title)
    return ax


# --- the VQ-VAE, as a diagram ---------------------------------------------------------------------

_FORWARD = {"color": "black", "linestyle": "-"}
_GRADIENT = {"color": "tab:red", "linestyle": (0, (4, 2))}
_EMA = {"color": "tab:green", "linestyle": (0, (1, 1.5))}


def _box(ax: Axes, x: float, y: float, width: float, height: float, text: str, face: str) -> None:
    ax.add_patch(FancyBboxPatch((x, y), width, height, boxstyle="round,pad=0.02,rounding_size=0.15",
                                facecolor=face, edgecolor="0.25", linewidth=1.0))
    ax.text(x + width / 2, y + height / 2, text, ha="center", va="center", fontsize=8.5)


def _arrow(ax: Axes, start: tuple[float, float], end: tuple[float, float], style: dict, rad: float = 0.0) -> None:
    ax.annotate("", xy=end, xytext=start,
                arrowprops={"arrowstyle": "-|>", "color": style["color"], "linestyle": style["linestyle"],
                            "linewidth": 1.4, "shrinkA": 0, "shrinkB": 0,
                            "connectionstyle": f"arc3,rad={rad}"})


def draw_vq_vae(ax: Optional[Axes] = None, commitment: float = 0.25, codebook_size: int = 256,
                code_dim: int = 16) -> Axes:
    r"""The VQ-VAE of lesson 05 as a diagram: encoder -> z -> nearest code -> z_q -> decoder.

    Drawn on it: the forward pass (black), the gradient path of the backward pass (red dashed)
    with the **straight-through** step that copies the gradient at ``z_q`` to ``z`` around the
    argmin, and the three terms that train it as ``crossmodal_edu.dalle.tokenizer`` does:
    the reconstruction loss :math:`\lVert x - \hat x\rVert^2` (gradient to decoder and encoder),
    the commitment loss :math:`\beta \lVert z - \mathrm{sg}[z_q]\rVert^2` (gradient to the encoder
    only) and, in place of a codebook loss, the exponential-moving-average update of the codebook
    (green dotted: no gradient). Shapes are the defaults (``codebook_size`` codes of width
    ``code_dim``, 32 x 32 images, 8 x 8 tokens). Returns the Axes.
    """
    ax = _new_axes(ax, figsize=(12.0, 5.0))
    data, module, operation, loss = "#eef3fb", "#c6dbef", "#fdd0a2", "#fcbba1"
    row, height = 4.0, 1.3                                          # the forward row: y from 4.0 to 5.3
    boxes = {  # name: (left, bottom, width, height, text, colour)
        "x": (0.1, row, 1.8, height, "image $x$\n(B, 3, 32, 32)", data),
        "encoder": (2.5, row, 2.0, height, "encoder\n(convolutions)", module),
        "z": (5.1, row, 1.8, height, f"$z$\n(B, {code_dim}, 8, 8)", data),
        "nearest": (7.5, row, 2.6, height, "nearest code\n$k^* = \\arg\\min_k \\Vert z - e_k\\Vert^2$", operation),
        "z_q": (10.7, row, 1.9, height, f"$z_q = e_{{k^*}}$\n(B, {code_dim}, 8, 8)", data),
        "decoder": (13.2, row, 2.3, height, "decoder\n(transposed\nconvolutions)", module),
        "x_hat": (16.1, row, 1.8, height, "$\\hat x$\n(B, 3, 32, 32)", data),
        "codebook": (7.5, 6.6, 2.6, 1.1, f"codebook $e_1 \\dots e_{{{codebook_size}}}$\n({codebook_size}, {code_dim})", module),
        "tokens": (10.7, 6.6, 3.1, 1.1, "image_tokens $k^*$ (B, 8, 8):\nthe integers lesson 06 writes", data),
        "reconstruction": (14.6, 1.4, 3.3, 1.2, "reconstruction loss\n$\\Vert x - \\hat x\\Vert^2$", loss),
        "commitment": (3.9, 1.4, 3.9, 1.2,
                       f"commitment loss\n$\\beta\\,\\Vert z - \\mathrm{{sg}}[z_q]\\Vert^2$,  $\\beta$ = {commitment:g}", loss),
    }
    for left, bottom, width, h, text, face in boxes.values():
        _box(ax, left, bottom, width, h, text, face)

    def left(name): b = boxes[name]; return b[0]
    def right(name): b = boxes[name]; return b[0] + b[2]
    def middle(name): b = boxes[name]; return b[0] + b[2] / 2

    centre = row + height / 2
    chain = ["x", "encoder", "z", "nearest", "z_q", "decoder", "x_hat"]
    for a, b in zip(chain, chain[1:]):                              # the forward pass, left to right
        _arrow(ax, (right(a), centre), (left(b), centre), _FORWARD)
    _arrow(ax, (middle("codebook"), 6.6), (middle("codebook"), row + height), _FORWARD)
    _arrow(ax, (right("nearest") - 0.5, row + height), (left("tokens") + 0.4, 6.6), _FORWARD)
    # the loss terms read the forward pass
    _arrow(ax, (middle("x_hat"), row), (middle("x_hat"), 2.6), _FORWARD)
    _arrow(ax, (middle("z"), row), (middle("z"), 2.6), _FORWARD)
    ax.annotate("", xy=(right("commitment"), 2.0), xytext=(middle("z_q"), row),
                arrowprops={"arrowstyle": "-|>", "color": "black", "linewidth": 1.4, "shrinkA": 0, "shrinkB": 0,
                            "connectionstyle": "angle,angleA=-90,angleB=180,rad=0"})
    ax.text(middle("z_q") - 0.15, 2.2, "sg: no gradient\nflows back to $z_q$", fontsize=7.5, ha="right",
            va="bottom", color="0.3")
    # the backward pass: into the decoder, straight through the argmin, into the encoder
    gradient_y = row - 0.3
    _arrow(ax, (left("reconstruction"), 2.0), (middle("decoder"), row), _GRADIENT, rad=-0.3)
    _arrow(ax, (left("decoder"), gradient_y), (right("z_q"), gradient_y), _GRADIENT)
    _arrow(ax, (left("z_q") + 0.3, gradient_y), (right("z") - 0.3, gradient_y), _GRADIENT)
    ax.text(middle("nearest"), gradient_y - 0.15, "straight-through: the gradient at $z_q$\nis copied to $z$, "
            "around the argmin", fontsize=7.5, ha="center", va="top", color="tab:red")
    _arrow(ax, (left("z"), gradient_y), (right("encoder"), gradient_y), _GRADIENT)
    _arrow(ax, (left("commitment"), 2.0), (middle("encoder"), row), _GRADIENT, rad=-0.3)
    # the codebook learns without a gradient
    _arrow(ax, (middle("z"), row + height), (left("codebook"), 7.15), _EMA, rad=-0.25)
    ax.text(0.1, 7.15, "EMA update, no gradient (replaces the codebook loss\n"
                       "$\\Vert \\mathrm{sg}[z] - e\\Vert^2$): each code moves to the running mean\n"
                       "of the $z$ that chose it; dead codes are restarted",
            fontsize=7.5, ha="left", va="center", color="tab:green")
    handles = [Line2D([], [], lw=1.4, **_FORWARD), Line2D([], [], lw=1.4, **_GRADIENT), Line2D([], [], lw=1.4, **_EMA)]
    ax.legend(handles, ["forward pass", "gradient (backward pass)", "codebook update without gradient"],
              loc="lower left", fontsize=8, ncol=3, frameon=False, bbox_to_anchor=(0.0, -0.02))
    ax.set_xlim(0, 18.0)
    ax.set_ylim(0.3, 8.0)
    ax.set_axis_off()
    ax.set_title("The VQ-VAE tokenizer: forward pass, gradients, and the three terms that train it")
    return ax
