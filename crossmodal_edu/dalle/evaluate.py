"""How good is a tokenizer? Pixel error, codebook use, and whether the oracle still reads the
scene from the reconstruction.

The oracle's accuracy on reconstructions is the ceiling of the whole miniature DALL-E: the
decoder can only generate token grids, and a generated image can be no more readable than the
reconstruction of a real one. Used by the CLI, the tests and notebooks/05_image_tokenizer.ipynb.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from crossmodal_edu import world
from crossmodal_edu.dalle.tokenizer import ImageTokenizer, codebook_usage, perplexity
from crossmodal_edu.world.fidelity import image_fidelity

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


PROMPT_SEEDS: dict[str, int] = {"tier1": 60_001, "tier2": 60_002, "held_out": 60_003}
"""Seeds of the evaluation prompts (fresh scenes, never drawn in training)."""


def evaluation_prompts(
    num_prompts: int, kind: str, held_out_pairs: tuple[tuple[str, str], ...], seed: int | None = None
) -> list[str]:
    """Captions to generate from. ``kind``: ``"tier1"`` / ``"tier2"``, scenes that avoid the
    held-out colour-shape pairs (the kinds of prompt trained on, but fresh scenes), or
    ``"held_out"``, one-object scenes of only the held-out pairs (compositions never seen)."""
    rng = np.random.default_rng(PROMPT_SEEDS[kind] if seed is None else seed)
    if kind == "held_out":
        if not held_out_pairs:
            raise ValueError("this decoder held no colour-shape pair out of training")
        others = [(c, s) for c in world.COLOURS for s in world.SHAPES if (c, s) not in held_out_pairs]
        scenes = world.sample_scenes(rng, num_prompts, 1, exclude=others)
    elif kind in ("tier1", "tier2"):
        scenes = world.sample_scenes(rng, num_prompts, int(kind[-1]), exclude=held_out_pairs)
    else:
        raise ValueError(f"kind must be 'tier1', 'tier2' or 'held_out', got {kind!r}")
    return [world.describe(scene, rng) for scene in scenes]


def prompt_fidelity(
    decoder: Any,
    tokenizer: ImageTokenizer,
    captions: list[str],
    seed: int = 0,
    **sampling: Any,
) -> dict[str, float]:
    """Generate one image per caption with ``decoder`` and grade it against its caption:
    ``image_fidelity(captions, generate(decoder, tokenizer, captions, ...).images)``.
    ``sampling``: ``guidance_scale``, ``temperature``, ``top_k``, ``use_cache`` of
    :func:`crossmodal_edu.dalle.sampling.generate`.

    It needs a decoder of this package. To grade images made any other way, call
    :func:`crossmodal_edu.world.fidelity.image_fidelity` on them.
    """
    from crossmodal_edu.dalle.sampling import generate

    generation = generate(decoder, tokenizer, captions, seed=seed, **sampling)
    return image_fidelity(captions, generation.images)


def evaluate_decoder(
    decoder: Any,
    tokenizer: ImageTokenizer,
    num_prompts: int = 500,
    kinds: tuple[str, ...] = ("tier1", "tier2", "held_out"),
    seed: int = 0,
    **sampling: Any,
) -> dict[str, float]:
    """Prompt fidelity on ``num_prompts`` fresh prompts of each kind (see
    :func:`evaluation_prompts`): ``{kind}_{attribute}`` -> fraction, e.g. ``tier1_all``."""
    metrics: dict[str, float] = {}
    for kind in kinds:
        if kind == "held_out" and not decoder.config.held_out_pairs:
            continue
        captions = evaluation_prompts(num_prompts, kind, decoder.config.held_out_pairs)
        for key, value in prompt_fidelity(decoder, tokenizer, captions, seed, **sampling).items():
            metrics[f"{kind}_{key}"] = value
    return metrics
