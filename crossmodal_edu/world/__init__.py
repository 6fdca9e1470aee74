"""A synthetic two-modality world, generated on the fly: small RGB scenes of coloured shapes on a
3 x 3 grid, their captions, and an oracle that reads scenes back from (even blurry) images.

- ``scenes``: attribute vocabularies, ``SceneObject``, ``Scene``, ``random_scene``, ``render``
- ``captions``: ``describe`` (tier-1 and tier-2 captions), ``Vocab``, ``default_vocab``
- ``patches``: ``image_to_patches``, ``patches_to_image``
- ``dataset``: ``make_dataset`` -> ``Dataset(images, captions, scenes)``
- ``oracle``: ``read_scene``, ``read_scenes``, ``scene_accuracy``
- ``fidelity``: ``parse_caption``, ``caption_fidelity`` (does a scene show what its caption asks?),
  ``image_fidelity`` (the same, read off images made by any model)

Needs only NumPy.
"""

from .captions import (
    PAD_TOKEN,
    POSITION_PHRASES,
    RELATIONS,
    Vocab,
    default_vocab,
    describe,
    grammar_words,
    true_relations,
)
from .dataset import Dataset, make_dataset
from .fidelity import Prompt, caption_fidelity, grade_prompt, image_fidelity, parse_caption
from .oracle import gaussian_blur, read_scene, read_scenes, scene_accuracy
from .patches import image_to_patches, patches_to_image
from .scenes import (
    COLOURS,
    GRID_SIZE,
    POSITIONS,
    SHAPES,
    SIZES,
    Scene,
    SceneObject,
    random_scene,
    render,
    render_batch,
    sample_scenes,
)

__all__ = [
    "COLOURS",
    "GRID_SIZE",
    "PAD_TOKEN",
    "POSITIONS",
    "POSITION_PHRASES",
    "RELATIONS",
    "SHAPES",
    "SIZES",
    "Dataset",
    "Prompt",
    "Scene",
    "SceneObject",
    "Vocab",
    "caption_fidelity",
    "image_fidelity",
    "default_vocab",
    "describe",
    "gaussian_blur",
    "grade_prompt",
    "grammar_words",
    "image_to_patches",
    "make_dataset",
    "parse_caption",
    "patches_to_image",
    "random_scene",
    "read_scene",
    "read_scenes",
    "render",
    "render_batch",
    "sample_scenes",
    "scene_accuracy",
    "true_relations",
]
