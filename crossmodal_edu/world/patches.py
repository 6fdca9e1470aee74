"""Cut images into patches (image tokens as vectors) and glue them back.

An image ``(H, W, 3)`` becomes ``num_patches = (H // patch_size) * (W // patch_size)`` vectors.
Patch ``n`` is the one in patch-grid row ``r = n // (W // patch_size)`` and column
``c = n % (W // patch_size)`` (raster order: left to right, then top to bottom), and its
vector is the pixel block flattened row by row, channels fastest:

.. math:: \\text{patches}[n,\\; (i \\cdot p + j) \\cdot 3 + ch] = \\text{image}[r p + i,\\; c p + j,\\; ch]

i.e. ``patches[n] == image[r*p:(r+1)*p, c*p:(c+1)*p].reshape(-1)``, with ``p = patch_size``.
This is the layout of ViT (Dosovitskiy et al., 2021) and the one lesson 02 uses when caption
words attend to image patches.
"""

from __future__ import annotations

import numpy as np

from .._checks import fmt_shape


def _check_patch_size(patch_size: int) -> None:
    if isinstance(patch_size, bool) or not isinstance(patch_size, (int, np.integer)):
        raise ValueError(f"patch_size must be a positive int, got {patch_size!r}")
    if patch_size < 1:
        raise ValueError(f"patch_size must be a positive int, got {patch_size}")


def image_to_patches(images: np.ndarray, patch_size: int) -> np.ndarray:
    """Cut images into non-overlapping ``patch_size x patch_size`` patches, in raster order.

    Shapes: ``(H, W, 3) -> (num_patches, patch_size * patch_size * 3)`` and
    ``(B, H, W, 3) -> (B, num_patches, patch_size * patch_size * 3)``, with
    ``num_patches = (H // patch_size) * (W // patch_size)``; the vector layout is in the module
    docstring. ``H`` and ``W`` must be divisible by ``patch_size``.
    """
    _check_patch_size(patch_size)
    images = np.asarray(images)
    if images.ndim not in (3, 4) or images.shape[-1] != 3:
        raise ValueError(
            f"images must have shape (H, W, 3) or (B, H, W, 3), got shape {fmt_shape(images.shape)}"
        )
    *lead, height, width, _ = images.shape
    for name, side in (("height", height), ("width", width)):
        if side % patch_size:
            raise ValueError(
                f"image {name} {side} is not divisible by patch_size {patch_size} "
                f"(images have shape {fmt_shape(images.shape)})"
            )
    rows, cols = height // patch_size, width // patch_size
    grid = images.reshape(*lead, rows, patch_size, cols, patch_size, 3)  # (..., rows, p, cols, p, 3)
    grid = np.moveaxis(grid, -4, -3)  # (..., rows, cols, p, p, 3)
    return grid.reshape(*lead, rows * cols, patch_size * patch_size * 3)  # (..., num_patches, p*p*3)


def patches_to_image(
    patches: np.ndarray, patch_size: int, image_size: int | tuple[int, int]
) -> np.ndarray:
    """Glue patches back into images: the inverse of ``image_to_patches``.

    Shapes: ``(num_patches, patch_size * patch_size * 3) -> (H, W, 3)`` and
    ``(B, num_patches, patch_size * patch_size * 3) -> (B, H, W, 3)``, where ``image_size`` is
    ``H == W`` or the pair ``(H, W)``.
    """
    _check_patch_size(patch_size)
    patches = np.asarray(patches)
    height, width = (image_size, image_size) if np.isscalar(image_size) else tuple(image_size)
    for name, side in (("height", height), ("width", width)):
        if side % patch_size:
            raise ValueError(f"image {name} {side} is not divisible by patch_size {patch_size}")
    rows, cols = height // patch_size, width // patch_size
    dim = patch_size * patch_size * 3
    if patches.ndim not in (2, 3) or patches.shape[-2:] != (rows * cols, dim):
        raise ValueError(
            f"patches of a {height}x{width} image with patch_size {patch_size} must have shape "
            f"(num_patches, patch_size*patch_size*3) = ({rows * cols}, {dim}), optionally with a "
            f"leading batch axis, got shape {fmt_shape(patches.shape)}"
        )
    lead = patches.shape[:-2]
    grid = patches.reshape(*lead, rows, cols, patch_size, patch_size, 3)  # (..., rows, cols, p, p, 3)
    grid = np.moveaxis(grid, -3, -4)  # (..., rows, p, cols, p, 3)
    return grid.reshape(*lead, height, width, 3)  # (..., H, W, 3)
