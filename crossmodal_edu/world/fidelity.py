"""Prompt fidelity: does a scene (read from a generated image by the oracle) show what its
caption asked for?

``parse_caption`` inverts ``describe``: it reads a tier-1 or tier-2 caption back into the
attributes it names. ``caption_fidelity`` grades scenes against captions, attribute by
attribute, so a report can say *what* a text-to-image model gets wrong (colours, shapes,
positions, relations), not only how often it is perfect. ``image_fidelity`` grades images
directly (the oracle reads each scene first): the way to grade images made by any model,
``image_fidelity(captions, images)``.

Chance levels, for a model that ignores the caption but draws one plausible object (tier 1):
shape 1/3, colour 1/6, size 1/2, position 1/9, all four at once 1/324 = 0.3%.
Used by the miniature DALL-E's evaluation (``crossmodal_edu.dalle.evaluate``) and lesson 06.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .captions import POSITION_PHRASES, RELATIONS, true_relations
from .scenes import COLOURS, SHAPES, SIZES, Scene, SceneObject

if TYPE_CHECKING:
    import numpy as np

_CELLS_BY_PHRASE = {phrase: cell for cell, phrase in POSITION_PHRASES.items()}

TIER1_KEYS: tuple[str, ...] = ("count", "shape", "colour", "size", "position", "all")
"""What ``caption_fidelity`` reports for one-object captions."""

TIER2_KEYS: tuple[str, ...] = ("count", "shape", "colour", "relation", "all")
"""What ``caption_fidelity`` reports for two-object captions."""


@dataclass(frozen=True)
class Prompt:
    """What a caption asks for. Tier 1: one object with every attribute (``relation`` is
    None). Tier 2: two objects with colour and shape (``size``, ``row`` and ``col`` of each
    are None) and the ``relation`` of the first to the second."""

    objects: tuple[dict, ...]  # per object: shape, colour, size, cell (None where unspecified)
    relation: str | None = None

    @property
    def tier(self) -> int:
        """1 (one object) or 2 (two objects and a relation)."""
        return len(self.objects)


def _unknown(caption: str) -> ValueError:
    return ValueError(
        f"cannot parse caption {caption!r}: expected 'a SIZE COLOUR SHAPE POSITION' "
        f"(e.g. 'a small red circle at the top left') or 'a COLOUR SHAPE RELATION a COLOUR SHAPE' "
        f"(e.g. 'a red circle left of a blue square')"
    )


def parse_caption(caption: str) -> Prompt:
    """Read a caption of either tier back into the attributes it names (inverse of ``describe``)."""
    words = caption.split()
    if len(words) >= 5 and words[0] == "a" and words[1] in SIZES:
        size, colour, shape, phrase = words[1], words[2], words[3], " ".join(words[4:])
        if colour in COLOURS and shape in SHAPES and phrase in _CELLS_BY_PHRASE:
            return Prompt(({"shape": shape, "colour": colour, "size": size, "cell": _CELLS_BY_PHRASE[phrase]},))
    elif len(words) >= 6 and words[0] == "a":
        relation = " ".join(words[3:-3])
        subject, reference = words[1:3], words[-2:]
        if (
            relation in RELATIONS
            and words[-3] == "a"
            and all(c in COLOURS and s in SHAPES for c, s in (subject, reference))
        ):
            return Prompt(
                tuple({"colour": c, "shape": s, "size": None, "cell": None} for c, s in (subject, reference)),
                relation,
            )
    raise _unknown(caption)


def _agrees(wanted: dict, obj: SceneObject) -> dict[str, bool]:
    return {"shape": obj.shape == wanted["shape"], "colour": obj.colour == wanted["colour"]}


def grade_prompt(prompt: Prompt, scene: Scene) -> dict[str, bool]:
    """One scene against one prompt.

    Tier 1: ``count`` (exactly one object), and ``shape``, ``colour``, ``size``, ``position``
    of the object that agrees with the prompt in most attributes (all False if the scene is
    empty); ``all``: exactly one object and all four right.
    Tier 2: ``count`` (exactly two objects); ``shape`` / ``colour``: both objects have the
    asked shape / colour; ``relation``: they stand in the asked relation; all judged for the
    pair of objects that agrees best (subject and reference told apart by colour and shape);
    ``all``: exactly two objects and everything right.
    """
    objects = scene.objects
    if prompt.tier == 1:
        wanted = prompt.objects[0]
        best = {"shape": False, "colour": False, "size": False, "position": False}
        for obj in objects:
            right = {**_agrees(wanted, obj), "size": obj.size == wanted["size"], "position": obj.cell == wanted["cell"]}
            if sum(right.values()) > sum(best.values()):
                best = right
        return {"count": len(objects) == 1, **best, "all": len(objects) == 1 and all(best.values())}
    best = {"shape": False, "colour": False, "relation": False}
    for subject, reference in itertools.permutations(objects, 2):
        a, b = _agrees(prompt.objects[0], subject), _agrees(prompt.objects[1], reference)
        right = {
            "shape": a["shape"] and b["shape"],
            "colour": a["colour"] and b["colour"],
            "relation": prompt.relation in true_relations(subject, reference),
        }
        if sum(right.values()) > sum(best.values()):
            best = right
    return {"count": len(objects) == 2, **best, "all": len(objects) == 2 and all(best.values())}


def caption_fidelity(captions: Sequence[str], scenes: Sequence[Scene]) -> dict[str, float]:
    """The fraction of ``scenes`` that show what their ``captions`` ask for, per attribute
    (see :func:`grade_prompt`). Captions of one tier only: mixing them would average
    different questions."""
    if len(captions) != len(scenes):
        raise ValueError(f"captions and scenes must have the same length, got {len(captions)} and {len(scenes)}")
    if not captions:
        raise ValueError("caption_fidelity needs at least one caption")
    prompts = [parse_caption(c) for c in captions]
    tiers = {p.tier for p in prompts}
    if len(tiers) != 1:
        raise ValueError("captions mix one-object and two-object prompts: grade each tier separately")
    grades = [grade_prompt(p, s) for p, s in zip(prompts, scenes)]
    return {key: sum(g[key] for g in grades) / len(grades) for key in grades[0]}


def image_fidelity(captions: Sequence[str], images: np.ndarray) -> dict[str, float]:
    """Grade images against the captions they were made from: the oracle reads each image
    (``world.read_scenes``), then :func:`caption_fidelity` grades the scenes.

    ``images`` ``(B, H, W, 3)`` float in [0, 1], one per caption, from any model (this
    package's ``generate(...).images``, or images made elsewhere, as arrays). Returns the
    fraction right per attribute, e.g. ``{"shape": ..., "all": ...}``; one tier per call.
    """
    from .oracle import read_scenes

    if getattr(images, "ndim", None) != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be an array of shape (B, H, W, 3), got shape {getattr(images, 'shape', type(images))}")
    if len(images) != len(captions):
        raise ValueError(f"need one image per caption: got {len(images)} images and {len(captions)} captions")
    return caption_fidelity(captions, read_scenes(images))
