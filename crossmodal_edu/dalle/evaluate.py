"""How good is a tokenizer? Pixel error, codebook use, and whether the oracle still reads the
scene from the reconstruction.

The oracle's accuracy on reconstructions is the ceiling of the whole miniature DALL-E: the
decoder can only generate token grids, and a generated image can be no more readable than the
reconstruction of a real one. Used by the CLI, the tests and notebooks/05_image_tokenizer.ipynb.
"""

from __future__ import annotations

import numpy as np

from crossmodal_edu import world
from crossmodal_edu.dalle.tokenizer import ImageTokenizer, codebook_usage, perplexity

EVAL_SEEDS: dict[int, int] = {1: 50_001, 2: 50_002}
"""Dataset seeds of the evaluation scenes, by number of objects. Training draws its batches
from seeds hashed from ``(seed, step)``, so these scenes are fresh."""


def evaluate_tokenizer(
    model: ImageTokenizer, num_scenes: int = 1000, seeds: dict[int, int] | None = None
) -> dict[str, float]:
    r"""Round-trip ``num_scenes`` fresh one-object and as many two-object scenes through the tokens.

    Returns ``mse`` (mean squared pixel error, both kinds of scene), ``oracle_all_1`` and
    ``oracle_all_2`` (the oracle reads every object of a reconstruction right: all of shape,
    colour, size and position, nothing missing or extra), ``perplexity``
    (:math:`\exp H` of the code histogram) and ``codes_used`` (codes that occur at all).
    """
    seeds = seeds or EVAL_SEEDS
    metrics: dict[str, float] = {}
    counts = np.zeros(model.config.codebook_size, dtype=np.int64)
    errors = []
    for num_objects in (1, 2):
        data = world.make_dataset(num_scenes, num_objects, seed=seeds[num_objects], image_size=model.config.image_size)
        tokens = model.tokenize(data.images)  # (n, h, w)
        counts += codebook_usage(tokens, model.config.codebook_size)
        reconstructions = model.reconstruct(data.images)  # (n, H, W, 3)
        errors.append(((reconstructions - data.images) ** 2).mean())
        accuracy = world.scene_accuracy(world.read_scenes(reconstructions), data.scenes)
        metrics[f"oracle_all_{num_objects}"] = accuracy["all"]
    metrics["mse"] = float(np.mean(errors))
    metrics["perplexity"] = perplexity(counts)
    metrics["codes_used"] = int((counts > 0).sum())
    return metrics
