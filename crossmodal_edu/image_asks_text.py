r"""The image asks, the caption answers: which patches show the object the caption names?

Lesson 03 trains cross-attention in both directions. In its section 5 a word asks the image
patches where its object is (grounding). Here the arrows turn round, as in a text-to-image model:
every image patch is a **query**, the caption's words are the **keys and values**, and each patch
predicts whether it belongs to the object the caption names. A scene holds two objects of
different colours, so without the caption a patch cannot know which of the two is meant; the
patch-only baseline (``use_caption=False``) shows how far that gets.

For patch :math:`i` with vector :math:`p_i` and position embedding :math:`e_i`,

.. math::

    x_i = p_i W_p + e_i,\qquad
    h_i = x_i + \operatorname{CrossAttention}(x_i, \text{words}),\qquad
    \text{logit}_i = \operatorname{MLP}(h_i),

and :math:`\sigma(\text{logit}_i)` is the probability that patch :math:`i` shows the named object.

Derived in notebooks/03_cross_attention_in_pytorch.ipynb (section 6, "The other direction").
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from crossmodal_edu import world
from crossmodal_edu.torch_attention import MultiHeadCrossAttention

__all__ = ["NamedObjectData", "object_patches", "named_object_data", "PatchesAskCaption"]


def object_patches(image: np.ndarray, obj: world.SceneObject, patch_size: int = 4) -> np.ndarray:
    """``(num_patches,)`` bool: True for each patch of ``image`` ``(H, W, 3)`` that shows part of
    ``obj``, i.e. it has a lit pixel (some channel above 0.2) and its centre lies in ``obj``'s grid
    cell. Patches are numbered row by row, as in :func:`crossmodal_edu.world.image_to_patches`."""
    if image.ndim != 3 or image.shape[0] % patch_size or image.shape[1] != image.shape[0]:
        raise ValueError(
            f"image must be square (H, W, 3) with H divisible by patch_size={patch_size}, "
            f"got shape {image.shape}"
        )
    size = image.shape[0]
    grid = size // patch_size
    rows, cols = np.divmod(np.arange(grid * grid), grid)  # each patch's grid row and column
    centre_y = (rows + 0.5) * patch_size  # patch centres, in pixels
    centre_x = (cols + 0.5) * patch_size
    cells = world.GRID_SIZE
    in_cell = (centre_y * cells // size == obj.row) & (centre_x * cells // size == obj.col)
    lit = world.image_to_patches(image, patch_size).max(axis=-1) > 0.2  # (num_patches,)
    return lit & in_cell


@dataclass
class NamedObjectData:
    """Two-object scenes, a caption naming one object, and which patches show it."""

    patches: torch.Tensor  # (N, num_patches, patch_dim) float32: the queries' raw material
    text_tokens: torch.Tensor  # (N, Lk) int64, padded with vocab.pad_id
    context_mask: torch.Tensor  # (N, Lk) bool, True = real word
    labels: torch.Tensor  # (N, num_patches) bool: the patch shows the named object
    on_an_object: torch.Tensor  # (N, num_patches) bool: the patch shows either object
    images: np.ndarray  # (N, H, W, 3)
    captions: list[str]  # N captions, such as "a large red circle"
    targets: list[world.SceneObject]  # the N objects the captions name


def named_object_data(
    n: int, seed: int, vocab: world.Vocab | None = None, patch_size: int = 4
) -> NamedObjectData:
    """``n`` two-object scenes whose objects differ in colour, each with a caption that names
    one of them: ``"a red circle"``, or with its size, ``"a small red circle"`` (so captions have 3
    or 4 words and the shorter ones are padded). The object is chosen at random, so both objects
    are named equally often. The same ``seed`` gives the same data."""
    vocab = world.default_vocab() if vocab is None else vocab
    rng = np.random.default_rng(seed)
    images, captions, targets, labels, on_object = [], [], [], [], []
    drawn = 0
    while len(captions) < n:
        batch = world.make_dataset(max(2 * (n - len(captions)), 8), num_objects=2,
                                   seed=seed * 1_000 + drawn)
        drawn += 1
        for image, scene in zip(batch.images, batch.scenes):
            first, second = scene.objects
            if first.colour == second.colour or len(captions) == n:
                continue  # a patch sees its colour, hardly its shape: colours decide who is named
            target = scene.objects[int(rng.integers(2))]
            size = f"{target.size} " if rng.random() < 0.5 else ""
            captions.append(f"a {size}{target.colour} {target.shape}")
            targets.append(target)
            images.append(image)
            labels.append(object_patches(image, target, patch_size))
            on_object.append(object_patches(image, first, patch_size)
                             | object_patches(image, second, patch_size))
    images = np.stack(images)  # (N, H, W, 3)
    text_tokens, context_mask = vocab.encode_batch(captions, max_len=4)  # (N, 4), (N, 4)
    return NamedObjectData(
        patches=torch.from_numpy(world.image_to_patches(images, patch_size)),  # (N, P, patch_dim)
        text_tokens=torch.from_numpy(text_tokens),
        context_mask=torch.from_numpy(context_mask),
        labels=torch.from_numpy(np.stack(labels)),
        on_an_object=torch.from_numpy(np.stack(on_object)),
        images=images,
        captions=captions,
        targets=targets,
    )


class PatchesAskCaption(nn.Module):
    r"""Per-patch "is this the named object?" with the image patches as queries and the caption's
    words as keys and values (one :class:`~crossmodal_edu.torch_attention.MultiHeadCrossAttention`).

    Shapes: ``patches`` ``(B, P, patch_dim)``, ``text_tokens`` ``(B, Lk)`` int, ``context_mask``
    ``(B, Lk)`` bool (True = real word) -> ``logits`` ``(B, P)``, and with ``need_weights=True``
    also ``weights`` ``(B, num_heads, P, Lk)``: which words each patch reads.

    ``use_caption=False`` is the patch-only baseline: the same model without the attention, so
    each patch decides from its own pixels and position alone (``weights`` is then ``None``).
    """

    def __init__(
        self,
        vocab_size: int,
        width: int = 32,
        patch_dim: int = 48,
        num_patches: int = 64,
        num_heads: int = 1,
        use_caption: bool = True,
    ) -> None:
        super().__init__()
        self.use_caption = use_caption
        self.patch = nn.Linear(patch_dim, width)
        self.position = nn.Parameter(0.1 * torch.randn(num_patches, width))
        self.word = nn.Embedding(vocab_size, width)
        self.attend = MultiHeadCrossAttention(query_dim=width, context_dim=width, num_heads=num_heads)
        # Non-linear read-out: "my colour matches the colour I read" is not a linear function.
        self.answer = nn.Sequential(nn.Linear(width, 2 * width), nn.GELU(), nn.Linear(2 * width, 1))

    def forward(
        self,
        patches: torch.Tensor,
        text_tokens: torch.Tensor,
        context_mask: torch.Tensor | None = None,
        need_weights: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor | None]:
        """``patches`` ``(B, P, patch_dim)``, ``text_tokens`` ``(B, Lk)`` -> ``logits`` ``(B, P)``
        (plus ``weights`` ``(B, num_heads, P, Lk)`` with ``need_weights=True``)."""
        if patches.ndim != 3 or patches.shape[1:] != (self.position.shape[0], self.patch.in_features):
            raise ValueError(
                f"patches must have shape (B, {self.position.shape[0]}, {self.patch.in_features}) "
                f"= (B, num_patches, patch_dim), got {tuple(patches.shape)}"
            )
        if text_tokens.ndim != 2 or text_tokens.shape[0] != patches.shape[0]:
            raise ValueError(
                f"text_tokens must have shape (B, Lk) with B={patches.shape[0]} (as patches), "
                f"got {tuple(text_tokens.shape)}"
            )
        x = self.patch(patches) + self.position  # (B, P, width): every patch asks
        weights = None
        if self.use_caption:
            context = self.word(text_tokens)  # (B, Lk, width): the words answer
            if need_weights:
                found, weights = self.attend(x, context, context_mask, need_weights=True)
            else:
                found = self.attend(x, context, context_mask)  # (B, P, width)
            x = x + found  # the residual: each patch keeps its own pixels, plus what it read
        logits = self.answer(x)[..., 0]  # (B, P)
        return (logits, weights) if need_weights else logits
