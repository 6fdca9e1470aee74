r"""Token shift: before a sub-layer reads them, image tokens borrow channels from their neighbours
on the image grid.

An image of the miniature DALL-E is an 8 x 8 grid of tokens, but the decoder reads them as a
line of 64 in raster order: the token above token ``j`` is 8 places back, just as far as an
unrelated token of the row before. Token shift (the ``shift_tokens`` option of lucidrains'
DALLE-pytorch, after Peng's RWKV) puts the grid back into every block at no cost in weights.
Split each token's ``d`` channels into four quarters::

    channels [0, d/4)      come from the token above (zeros in the top row)
    channels [d/4, d/2)    come from the token to the left (zeros in the first column)
    channels [d/2, d)      stay the token's own

so a single attention or MLP step sees a token, its upper and its left neighbour side by side.
Both neighbours come earlier in raster order, so the model stays causal. In a single causal stream
the caption's tokens shift too: each takes half of its channels from the word before it.

``DecoderConfig(token_shift=True)`` applies :func:`shift_tokens` to the normalised input of
every block's self-attention and MLP (``decoder.DecoderBlock``); the KV cache keeps those inputs,
so each sampling step can look up its neighbours. Measured in benchmarks/RESULTS.md and lesson 06.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def grid_width(num_image_tokens: int) -> int:
    """The side of the square grid of ``num_image_tokens`` tokens (8 for 64); ValueError if not square."""
    side = math.isqrt(num_image_tokens)
    if side * side != num_image_tokens:
        raise ValueError(f"token shift needs a square grid of image tokens, got num_image_tokens={num_image_tokens}")
    return side


def shift_tokens(x: torch.Tensor, width: int, text_len: int = 0) -> torch.Tensor:
    """A new ``(B, T, d)`` tensor: ``x`` with the token shift applied (``d`` divisible by 4).

    The sequence ``x`` ``(B, T, d)`` holds ``text_len`` caption tokens (0 in a decoder whose caption
    arrives by cross-attention), then ``<start>``, then image tokens ``0, 1, ...`` in raster order
    on a grid ``width`` tokens wide, at positions ``text_len + 1 + j``. Image token ``j`` takes its
    first quarter of channels from image token ``j - width`` and its second quarter from image token
    ``j - 1`` (zeros where that neighbour is off the grid); caption token ``i`` takes its first half
    from caption token ``i - 1`` (zeros for ``i = 0``); ``<start>`` is unchanged.
    """
    B, T, d = x.shape
    if d % 4:
        raise ValueError(f"token shift splits the channels in quarters: d_model must be divisible by 4, got {d}")
    quarter, half = d // 4, d // 2
    parts = []
    if text_len:
        text = x[:, :text_len]  # (B, L, d)
        previous = F.pad(text[..., :half], (0, 0, 1, 0))[:, :text_len]  # (B, L, d/2): word i-1's channels, zeros first
        parts.append(torch.cat([previous, text[..., half:]], dim=-1))
    parts.append(x[:, text_len:text_len + 1])  # <start>, as it is (empty if T <= text_len)
    image = x[:, text_len + 1:]  # (B, n, d), n image tokens so far
    n = image.shape[1]
    if n:
        above = F.pad(image[..., :quarter], (0, 0, width, 0))[:, :n]  # (B, n, d/4): token j - width's channels
        left = F.pad(image[..., quarter:half], (0, 0, 1, 0))[:, :n]  # (B, n, d/4): token j - 1's channels
        first_column = (torch.arange(n, device=x.device) % width == 0)[None, :, None]  # (1, n, 1)
        left = left.masked_fill(first_column, 0.0)  # no left neighbour: do not wrap round to the row above
        parts.append(torch.cat([above, left, image[..., half:]], dim=-1))
    return torch.cat(parts, dim=1)  # (B, T, d)


def shift_with_cache(
    x: torch.Tensor, width: int, text_len: int, cache: dict[str, torch.Tensor] | None, key: str
) -> torch.Tensor:
    """:func:`shift_tokens` of ``x`` ``(B, T, d)``, the newest ``T`` positions of the sequence.

    Without a ``cache`` ``x`` is the whole sequence. With one (sampling), ``cache[key]`` keeps the
    earlier positions' inputs, so a step that feeds one token can still read the token above it;
    ``x`` is appended there and the shift of the whole history is cut to its last ``T`` rows (a
    few hundred numbers per step at this size: the same function as the full pass, so the same
    values)."""
    if cache is None:
        return shift_tokens(x, width, text_len)
    history = torch.cat([cache[key], x], dim=1) if key in cache else x  # (B, t + T, d)
    cache[key] = history
    return shift_tokens(history, width, text_len)[:, -x.shape[1]:]
