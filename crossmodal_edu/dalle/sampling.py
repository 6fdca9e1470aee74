"""Generating images from captions: the autoregressive loop, and where each word was read.

``generate_tokens`` is the loop a learner can read in one go: encode the caption once, then 64
times run the decoder on the tokens so far, take the logits of the next position, guide,
filter, sample, append. By default it recomputes the whole prefix at every step: simple, and
the version the lesson reads. ``use_cache=True`` keeps each block's keys and values instead
(a KV cache), the same tokens at a fraction of the cost; ``generate`` uses it.

``generate`` wraps it for people: captions in, images, tokens and per-word attention maps out.
Sampling draws from a CPU ``torch.Generator`` seeded by ``seed``, so the same seed gives the
same images on every device (up to floating-point differences in the logits).
Derived in notebooks/06_text_to_image.ipynb.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from crossmodal_edu import world
from crossmodal_edu.dalle.decoder import ImageTokenDecoder, null_captions
from crossmodal_edu.dalle.guidance import classifier_free_guidance, sample_from_logits
from crossmodal_edu.dalle.tokenizer import ImageTokenizer, tensor_to_images


def _check_number(name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")


@torch.no_grad()
def generate_tokens(
    decoder: ImageTokenDecoder,
    text_tokens: torch.Tensor,
    context_mask: torch.Tensor,
    guidance_scale: float = 1.0,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
    use_cache: bool = False,
) -> torch.Tensor:
    """Sample ``image_tokens`` ``(B, num_image_tokens)`` in raster order for captions
    ``text_tokens`` ``(B, L)`` with ``context_mask`` ``(B, L)``.

    With ``guidance_scale != 1`` every step also runs the decoder on the null caption and
    mixes the two with :func:`classifier_free_guidance` (both in one batch of ``2B``).
    ``use_cache=True`` replaces the pass over the prefix by the decoder's ``decode_step``, which keeps the
    keys and values of earlier tokens (and the caption's, computed once) instead of recomputing
    them: the same tokens (a test checks it), about ten times faster at 64 tokens. A decoder
    without a KV cache (``supports_kv_cache`` missing or False) refuses ``use_cache=True``.
    """
    _check_number("guidance_scale", guidance_scale)
    _check_number("temperature", temperature)
    if use_cache and not getattr(decoder, "supports_kv_cache", False):
        raise ValueError(
            f"{type(decoder).__name__} has no KV cache (no decode_step, or a block without supports_kv_cache): "
            f"sample it with use_cache=False"
        )
    decoder.eval()
    B = text_tokens.shape[0]
    device = next(decoder.parameters()).device
    text_tokens, context_mask = text_tokens.to(device), context_mask.to(device)
    guided = guidance_scale != 1.0
    if guided:
        null_tokens, null_mask = null_captions(B, decoder.config, device)
        text_tokens = torch.cat([text_tokens, null_tokens])  # (2B, L): captions, then null captions
        context_mask = torch.cat([context_mask, null_mask])  # (2B, L)
    decoder._check(torch.zeros(len(text_tokens), 0, dtype=torch.long, device=device), text_tokens, context_mask)
    context = decoder.encode_text(text_tokens, context_mask)  # (B or 2B, L, d_model), computed once

    image_tokens = torch.zeros(B, 0, dtype=torch.long, device=device)  # (B, t), grows to N
    caches: list[dict] = [{} for _ in range(len(decoder.blocks))]  # used only with use_cache
    for t in range(decoder.config.num_image_tokens):
        prefix = torch.cat([image_tokens, image_tokens]) if guided else image_tokens
        if use_cache:
            previous = prefix[:, -1] if t > 0 else None
            logits = decoder.decode_step(previous, t, context, context_mask, caches).float()  # (B or 2B, K)
        else:  # the plain way: run the decoder over the whole prefix, keep the last position
            logits = decoder.decode(prefix, context, context_mask).logits[:, -1].float()  # (B or 2B, K)
        if guided:
            logits = classifier_free_guidance(logits[:B], logits[B:], guidance_scale)  # (B, K)
        next_token = sample_from_logits(logits.cpu(), temperature, top_k, generator)  # (B,)
        image_tokens = torch.cat([image_tokens, next_token.to(device)[:, None]], dim=1)
    return image_tokens  # (B, N)


@torch.no_grad()
def cross_attention_weights(
    decoder: ImageTokenDecoder, image_tokens: torch.Tensor, text_tokens: torch.Tensor, context_mask: torch.Tensor
) -> torch.Tensor:
    """The cross-attention weights with which each image token was generated:
    ``(B, layers, num_heads, num_image_tokens, L)``. For the joint and MM-DiT designs, whose one
    softmax covers words and earlier image tokens together, the words' part of it (each row then
    sums to the share of the attention that went to the caption at all); for the single stream, the
    caption positions' part of its self-attention, read the same way.

    Causal attention makes one teacher-forced pass over the finished tokens see, at position
    ``i``, exactly what the sampling loop saw when it chose token ``i``; so one pass gives the
    weights of all 64 steps (with the caption: the conditional half of guidance).
    """
    device = next(decoder.parameters()).device
    output = decoder(image_tokens[:, :-1].to(device), text_tokens.to(device), context_mask.to(device), need_weights=True)
    if not output.cross_weights:
        raise ValueError(f"this decoder's image tokens do not attend to the words (conditioning={decoder.config.conditioning!r}): no maps to show")
    return torch.stack(output.cross_weights, dim=1).float().cpu()  # (B, layers, H, N, L)


@dataclass
class Generation:
    """Images generated from captions, with what they were made of."""

    captions: list[str]
    images: np.ndarray  # (B, H, W, 3) float32 in [0, 1]
    image_tokens: np.ndarray  # (B, h, w) int64
    word_maps: np.ndarray | None  # (B, L, h, w): per caption word, how much each token read it
    words: list[list[str]]  # the words of each caption (the first axis of its word_maps)


def word_attention_maps(weights: torch.Tensor, grid_size: int) -> np.ndarray:
    """Cross-attention weights ``(B, layers, num_heads, N, L)`` -> per-word maps ``(B, L, h, w)``:
    the weight each image token gave each word, averaged over layers and heads, laid out on
    the token grid (``N = h * w``, raster order)."""
    mean = weights.mean(dim=(1, 2))  # (B, N, L)
    B, N, L = mean.shape
    return mean.transpose(1, 2).reshape(B, L, grid_size, grid_size).numpy()  # (B, L, h, w)


def generate(
    decoder: ImageTokenDecoder,
    tokenizer: ImageTokenizer,
    captions: Sequence[str],
    guidance_scale: float = 1.0,
    temperature: float = 1.0,
    top_k: int | None = None,
    seed: int = 0,
    attention_maps: bool = False,
    batch_size: int = 256,
    use_cache: bool = True,
) -> Generation:
    """Draw one image per caption. The same ``seed`` gives the same images.

    Captions are checked against the vocabulary (an unknown word raises ``ValueError``
    listing the known ones). ``attention_maps=True`` also returns, per caption word, where
    in the image it was read (:func:`word_attention_maps`; every design whose image tokens attend
    to the words: cross-attention, layerwise, joint, MM-DiT and the single stream).
    ``batch_size``: how many captions are sampled together (a memory limit; keep it fixed to
    reproduce images, since it sets the order of the random draws). To grade the images, see
    :func:`crossmodal_edu.world.fidelity.image_fidelity`.
    """
    if isinstance(captions, str):
        raise ValueError("generate expects a list of captions, got a single string: wrap it in [ ]")
    if len(captions) == 0:
        raise ValueError("generate needs at least one caption, got an empty list")
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int (captions sampled together), got {batch_size!r}")
    _check_number("guidance_scale", guidance_scale)
    _check_number("temperature", temperature)
    vocab = world.Vocab()
    if len(vocab) != decoder.config.vocab_size:
        raise ValueError(f"decoder was trained on {decoder.config.vocab_size} words, this world has {len(vocab)}")
    text_tokens, context_mask = vocab.encode_batch(list(captions), max_len=decoder.config.max_text_len)
    text_tokens, context_mask = torch.from_numpy(text_tokens), torch.from_numpy(context_mask)
    generator = torch.Generator().manual_seed(seed)
    device = next(tokenizer.parameters()).device
    tokens, images, maps = [], [], []
    for start in range(0, len(captions), int(batch_size)):
        part = slice(start, start + batch_size)
        image_tokens = generate_tokens(
            decoder, text_tokens[part], context_mask[part], guidance_scale, temperature, top_k, generator, use_cache
        )  # (b, N)
        tokens.append(image_tokens.cpu())
        images.append(tensor_to_images(tokenizer.decode(image_tokens.to(device))))
        if attention_maps:
            weights = cross_attention_weights(decoder, image_tokens, text_tokens[part], context_mask[part])
            maps.append(word_attention_maps(weights, tokenizer.config.grid_size))
    grid = tokenizer.config.grid_size
    return Generation(
        captions=list(captions),
        images=np.concatenate(images),
        image_tokens=torch.cat(tokens).reshape(-1, grid, grid).numpy(),
        word_maps=np.concatenate(maps) if attention_maps else None,
        words=[caption.split() for caption in captions],
    )
