r"""Editing an image through its cross-attention maps (prompt-to-prompt: Hertz et al. 2022,
"Prompt-to-Prompt Image Editing with Cross Attention Control").

In the cross-attention denoiser, the map of word :math:`j`, the weights of column :math:`j`
``(heads, 64)``, says *where* in the latent grid that word is read. Swap one word of a caption
("red" -> "blue") and sample again from the same noise: the new image may put its object
elsewhere, because every step's maps are computed afresh. Prompt-to-prompt keeps the layout by
*injecting* the first run's maps into the second run for the first ``steps`` Euler steps: the
second caption's values are read through the first caption's weights, so "blue" is painted
where "red" was. Re-weighting multiplies one word's column by a factor (no renormalisation,
as in the paper), to strengthen or weaken what it contributes.

Each control is an object with ``edit(step, layer, weights) -> weights`` that the sampler
(``sampling.sample_latents``) calls for every cross-attention of the captioned half, with
``weights`` ``(B, heads, 64, L)``.
Used by notebooks/07_latent_diffusion.ipynb and benchmarks/diffusion_edits.py.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

import torch


@dataclass
class AttentionStore:
    """Records every map it sees (``maps[(step, layer)]``) and changes nothing."""

    maps: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict)

    def edit(self, step: int, layer: int, weights: torch.Tensor) -> torch.Tensor:
        self.maps[(step, layer)] = weights.detach().clone()
        return weights


@dataclass
class AttentionInjection:
    """Uses ``source``'s maps instead of the current ones at steps ``< steps`` and in ``layers``
    (default: every layer). The captions must have the same number of words at the same places
    (a one-word swap), so that column ``j`` means the same slot in both."""

    source: AttentionStore
    steps: int
    layers: Collection[int] | None = None

    def edit(self, step: int, layer: int, weights: torch.Tensor) -> torch.Tensor:
        if step >= self.steps or (self.layers is not None and layer not in self.layers):
            return weights
        stored = self.source.maps.get((step, layer))
        if stored is None:
            raise ValueError(f"the source run stored no map at step {step}, layer {layer}: sample it with the same steps first")
        if stored.shape != weights.shape:
            raise ValueError(
                f"the source maps have shape {tuple(stored.shape)} but this run's are {tuple(weights.shape)}: "
                "inject between runs of the same batch size and caption length"
            )
        return stored.to(weights.device, weights.dtype)


@dataclass
class AttentionReweight:
    """Multiplies the maps of the words at ``positions`` by ``factor`` (every step and layer, or
    steps ``< steps``). ``factor > 1`` strengthens those words, ``< 1`` weakens them."""

    positions: Sequence[int]
    factor: float
    steps: int | None = None

    def edit(self, step: int, layer: int, weights: torch.Tensor) -> torch.Tensor:
        if self.steps is not None and step >= self.steps:
            return weights
        if self.factor == 1.0:
            return weights
        scale = torch.ones(weights.shape[-1], dtype=weights.dtype, device=weights.device)
        scale[list(self.positions)] = self.factor
        return weights * scale


def swapped_word(source: str, target: str) -> int:
    """The position of the one word in which two captions differ (a prompt-to-prompt swap);
    ``ValueError`` if they differ in length or in more or fewer than one word."""
    a, b = source.split(), target.split()
    if len(a) != len(b):
        raise ValueError(f"a word swap keeps the length: {source!r} has {len(a)} words, {target!r} has {len(b)}")
    differ = [i for i, (x, y) in enumerate(zip(a, b)) if x != y]
    if len(differ) != 1:
        raise ValueError(f"the captions must differ in exactly one word, they differ at positions {differ}")
    return differ[0]


def prompt_to_prompt(
    model: torch.nn.Module,
    tokenizer,
    sources: Sequence[str],
    targets: Sequence[str],
    inject_steps: int,
    guidance_scale: float = 3.0,
    steps: int = 20,
    seed: int = 0,
    layers: Collection[int] | None = None,
):
    """Sample ``sources``, then ``targets`` twice from the same noise: once plainly, once with the
    sources' maps injected for the first ``inject_steps`` steps. Returns the three
    :class:`~crossmodal_edu.diffusion.sampling.DiffusionGeneration` s ``(source, plain, edited)``."""
    from crossmodal_edu.diffusion.sampling import generate

    if len(sources) != len(targets):
        raise ValueError(f"need one target per source caption, got {len(sources)} and {len(targets)}")
    for s, t in zip(sources, targets):
        swapped_word(s, t)
    store = AttentionStore()
    kwargs = dict(guidance_scale=guidance_scale, steps=steps, seed=seed, batch_size=max(1, len(sources)))
    source = generate(model, tokenizer, list(sources), attention_control=store, **kwargs)
    plain = generate(model, tokenizer, list(targets), **kwargs)
    edited = generate(model, tokenizer, list(targets), attention_control=AttentionInjection(store, inject_steps, layers), **kwargs)
    return source, plain, edited
