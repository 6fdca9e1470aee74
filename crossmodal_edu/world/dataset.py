"""A dataset of (image, caption) pairs from the synthetic world, generated on the fly.

Nothing is downloaded: ``make_dataset(10_000)`` draws scenes, renders them (jittered) and
captions them in about a second, identically for a given seed. Used by lessons 02 and 03 and
the miniature DALL-E.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import numpy as np

from .captions import describe
from .scenes import Scene, render_batch, sample_scenes


@dataclass
class Dataset:
    """Images, their captions and the scenes they show, aligned by index."""

    images: np.ndarray  # (n, H, W, 3) float32 in [0, 1]
    captions: list[str]  # n captions, tier 1 (one object) or tier 2 (two objects)
    scenes: list[Scene]  # n scenes, the ground truth behind images and captions

    def __len__(self) -> int:
        return len(self.captions)


def make_dataset(
    n: int,
    num_objects: int = 1,
    seed: int = 0,
    image_size: int = 32,
    exclude: Collection[tuple[str, str]] | None = None,
) -> Dataset:
    """Draw ``n`` random scenes of ``num_objects`` objects (1 or 2), render and caption them.

    Images are ``(n, image_size, image_size, 3)`` float32 in [0, 1], each object jittered by up
    to 1 px (at 32 px). Two-object captions pick one true relation at random. ``exclude``
    holds ``(colour, shape)`` pairs never generated. The same ``seed`` gives the same dataset.
    """
    if num_objects not in (1, 2):
        raise ValueError(f"num_objects must be 1 or 2 (the caption tiers), got {num_objects}")
    rng = np.random.default_rng(seed)
    scenes = sample_scenes(rng, n, num_objects, exclude)
    images = render_batch(scenes, image_size, rng)  # (n, H, W, 3)
    captions = [describe(scene, rng) for scene in scenes]
    return Dataset(images=images, captions=captions, scenes=scenes)
