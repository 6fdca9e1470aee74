"""Prompt fidelity of a diffusion model, read back by the oracle: the DALL-E decoder's
measurement (``crossmodal_edu.dalle.evaluate``) with the diffusion sampler, and a standard error
beside every number."""

from __future__ import annotations

import math
from typing import Any

from crossmodal_edu.dalle.evaluate import evaluation_prompts
from crossmodal_edu.world.fidelity import image_fidelity


def standard_error(p: float, n: int) -> float:
    r"""Standard error of a fraction ``p`` measured on ``n`` independent prompts, :math:`\sqrt{p(1-p)/n}`."""
    return math.sqrt(max(p * (1 - p), 0.0) / n) if n else float("nan")


def evaluate_diffusion(
    model: Any,
    tokenizer: Any,
    num_prompts: int = 500,
    kinds: tuple[str, ...] = ("tier1", "tier2", "held_out"),
    seed: int = 0,
    **sampling: Any,
) -> dict[str, float]:
    """Fidelity on ``num_prompts`` fresh prompts of each kind (``evaluation_prompts``):
    ``{kind}_{attribute}`` -> fraction and ``{kind}_all_se`` -> its standard error.
    ``sampling``: ``guidance_scale``, ``steps`` of :func:`~crossmodal_edu.diffusion.sampling.generate`."""
    from crossmodal_edu.diffusion.sampling import generate

    metrics: dict[str, float] = {}
    for kind in kinds:
        if kind == "held_out" and not model.config.held_out_pairs:
            continue
        captions = evaluation_prompts(num_prompts, kind, model.config.held_out_pairs)
        images = generate(model, tokenizer, captions, seed=seed, **sampling).images
        for key, value in image_fidelity(captions, images).items():
            metrics[f"{kind}_{key}"] = value
        metrics[f"{kind}_all_se"] = standard_error(metrics[f"{kind}_all"], num_prompts)
    return metrics
