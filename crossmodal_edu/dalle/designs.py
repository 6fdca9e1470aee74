"""Comparing decoder designs fairly: parameter counts, and configs of about equal size.

A design that wins because it has more weights has not won. ``matched_config`` gives, for any
``conditioning``, a config at the same width as a reference whose parameter count is close to
the reference model's, changing depths only (``benchmarks/`` sweeps use it).
"""

from __future__ import annotations

from dataclasses import replace

import torch

from crossmodal_edu.dalle.config import CONDITIONINGS, DecoderConfig


def parameter_count(config: DecoderConfig) -> int:
    """Number of weights of ``build_decoder(config)``, counted on the ``meta`` device (no memory,
    no arithmetic: a big model costs nothing to count)."""
    from crossmodal_edu.dalle.decoder import build_decoder

    with torch.device("meta"):
        model = build_decoder(config)
    return sum(p.numel() for p in model.parameters())


def _count_by_depth(config: DecoderConfig):
    """``(text_layers, layers) -> parameter count`` for ``config``'s design, from three counted
    models: every design's count is ``a + b * text_layers + c * layers`` (for ``layers >= 1``;
    MM-DiT's lighter last block is in ``a``), so three points fix it."""
    tied = config.conditioning == "layerwise"
    base = parameter_count(replace(config, text_layers=1, layers=1))
    per_block = parameter_count(replace(config, text_layers=2 if tied else 1, layers=2)) - base
    per_text_layer = 0 if tied else parameter_count(replace(config, text_layers=2, layers=1)) - base
    return lambda text_layers, layers: base + per_text_layer * (text_layers - 1) + per_block * (layers - 1)


def _depths(conditioning: str, reference: DecoderConfig) -> list[tuple[int, int]]:
    """Candidate ``(text_layers, layers)`` for a design: only the depths it uses vary."""
    blocks = range(1, 3 * reference.layers + 4)
    if conditioning in ("single-stream", "none"):  # no text encoder that matters: only the blocks
        return [(reference.text_layers, n) for n in blocks]
    if conditioning == "layerwise":  # one text layer per block
        return [(n, n) for n in blocks]
    return [(t, n) for t in range(0, 2 * reference.text_layers + 3) for n in blocks]


def matched_config(conditioning: str, reference: DecoderConfig | None = None, tolerance: float = 0.05) -> DecoderConfig:
    """``reference`` (default ``DecoderConfig()``) with ``conditioning`` and the depths
    (``text_layers``, ``layers``) that give about the reference model's parameter count.

    Among depths within ``tolerance`` (a fraction) of the reference count, it keeps ``layers``
    (then ``text_layers``) as close to the reference as it can; if none is that close, it takes
    the closest count. Width, heads and everything else stay the reference's.
    """
    reference = reference or DecoderConfig()
    if conditioning not in CONDITIONINGS:
        raise ValueError(f"conditioning must be one of {CONDITIONINGS}, got {conditioning!r}")
    target = parameter_count(reference)
    count = _count_by_depth(replace(reference, conditioning=conditioning))
    candidates = []
    for text_layers, layers in _depths(conditioning, reference):
        config = replace(reference, conditioning=conditioning, text_layers=text_layers, layers=layers)
        error = abs(count(text_layers, layers) - target) / target
        candidates.append((error, abs(layers - reference.layers), abs(text_layers - reference.text_layers), config))
    close = [c for c in candidates if c[0] <= tolerance]
    if close:
        return min(close, key=lambda c: (c[1], c[2], c[0]))[3]
    return min(candidates, key=lambda c: c[0])[3]
