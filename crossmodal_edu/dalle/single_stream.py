"""The other way to condition on text: one causal stream, as in DALL-E 1 (Ramesh et al., 2021).

The caption's tokens and the image's tokens form one sequence, ``[text_tokens, <start>,
image_tokens]``, and a plain decoder-only transformer (causal self-attention and MLP, no
cross-attention) predicts the image tokens. Text conditions the image only because image
positions may attend back to text positions in the same self-attention. Padding words stay in
the stream as ordinary tokens (DALL-E 1 did the same with learned padding tokens).

It has the same interface as ``ImageTokenDecoder`` (``encode_text``, ``decode``, ``forward``,
``loss``), so the same training loop, sampler and evaluation run it. It exists to be compared
with cross-attention at equal parameter count and time (``benchmarks/text_to_image.py``).
Discussed in notebooks/06_text_to_image.ipynb.
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn as nn
import torch.nn.functional as F

from crossmodal_edu.dalle.config import DecoderConfig
from crossmodal_edu.dalle.decoder import DecoderBlock, DecoderOutput, ImageTokenDecoder


def words_part_of_attention(block: DecoderBlock, x: torch.Tensor, text_len: int) -> torch.Tensor:
    """How much each position after the caption (``<start>`` and the image tokens) attends to each
    caption position in ``block``'s causal self-attention: ``x`` ``(B, L + T, d_model)``, the stream
    entering the block, ``text_len`` ``L`` -> ``(B, num_heads, T, L)``.

    In one stream the caption is not a separate input but the first ``L`` keys of the same softmax,
    so this is the words' part of it, as for the joint designs: each row sums to the share of that
    position's attention that went to the caption at all, the rest to earlier image positions.
    Padding words are ordinary tokens of the stream here, so they may get weight too. The block's
    own computation, written out (with token shift, on the shifted input the attention reads)."""
    L = text_len
    h = block._shift(block.norm1(x), None, "shift_attention", L)  # (B, L + T, d): what the attention reads
    B, S, d = h.shape
    H = block.self_attention.num_heads
    q, k, _ = block.self_attention.qkv(h).view(B, S, 3, H, d // H).permute(2, 0, 3, 1, 4)  # each (B, H, S, hd)
    scores = (q[:, :, L:] @ k.transpose(-2, -1)) / (d // H) ** 0.5  # (B, H, T, S): the rows after the caption
    causal = torch.ones(S, S, dtype=torch.bool, device=x.device).tril()[L:]  # (T, S): row L + i sees 0..L + i
    weights = torch.softmax(scores.masked_fill(~causal, float("-inf")), dim=-1)
    return weights[..., :L]  # (B, H, T, L)


class SingleStreamDecoder(nn.Module):
    """Decoder-only transformer over ``[caption, <start>, image tokens]``.

    Uses ``config.layers`` blocks of causal self-attention + MLP; ``config.text_layers`` is
    ignored. For equal parameter count with an
    ``ImageTokenDecoder`` of ``layers`` blocks and ``text_layers`` encoder layers, give this
    one about ``(16 * layers + 12 * text_layers) / 12`` blocks.
    """

    supports_kv_cache = True

    def __init__(self, config: DecoderConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or DecoderConfig(conditioning="single-stream")
        if config.conditioning != "single-stream":
            raise ValueError(
                f"SingleStreamDecoder builds conditioning 'single-stream', got {config.conditioning!r}: "
                f"use build_decoder(config), which picks the class"
            )
        self.text_embedding = nn.Embedding(config.vocab_size + 1, config.d_model)  # +1: the null token
        self.token_embedding = nn.Embedding(config.codebook_size + 1, config.d_model)  # +1: <start>
        self.position_embedding = nn.Embedding(config.max_text_len + config.num_image_tokens, config.d_model)
        block_config = replace(config, conditioning="none")
        self.blocks = nn.ModuleList(DecoderBlock(block_config) for _ in range(config.layers))
        self.norm = nn.LayerNorm(config.d_model)
        self.head = nn.Linear(config.d_model, config.codebook_size)
        self.apply(ImageTokenDecoder._init_weights)

    _check = ImageTokenDecoder._check

    def encode_text(self, text_tokens: torch.Tensor, context_mask: torch.Tensor) -> torch.Tensor:
        """``text_tokens`` ``(B, L)`` -> their embeddings ``(B, L, d_model)``: the first ``L``
        positions of the stream. (No encoder: the stream's own layers read them.)"""
        positions = torch.arange(text_tokens.shape[1], device=text_tokens.device)  # (L,)
        return self.text_embedding(text_tokens) + self.position_embedding(positions)  # (B, L, d_model)

    def decode(
        self, image_tokens: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor, need_weights: bool = False
    ) -> DecoderOutput:
        """``image_tokens`` ``(B, t)`` after the embedded caption ``(B, L, d_model)`` ->
        logits ``(B, t + 1, codebook_size)`` at ``<start>`` and the image positions."""
        B, t = image_tokens.shape
        L = context.shape[1]
        start = torch.full((B, 1), self.config.start_id, dtype=torch.long, device=image_tokens.device)
        inputs = torch.cat([start, image_tokens.long()], dim=1)  # (B, t + 1)
        positions = torch.arange(L, L + t + 1, device=image_tokens.device)  # (t + 1,)
        image = self.token_embedding(inputs) + self.position_embedding(positions)  # (B, t + 1, d_model)
        x = torch.cat([context, image], dim=1)  # (B, L + t + 1, d_model): one stream
        weights = []
        for block in self.blocks:
            if need_weights:
                weights.append(words_part_of_attention(block, x, L))
            x, _ = block(x, None, None, text_len=L)
        logits = self.head(self.norm(x[:, L:]))  # (B, t + 1, codebook_size)
        return DecoderOutput(logits, weights if need_weights else None)

    def decode_step(
        self,
        previous: torch.Tensor | None,
        position: int,
        context: torch.Tensor,
        context_mask: torch.Tensor,
        caches: list[dict[str, torch.Tensor]],
    ) -> torch.Tensor:
        """Logits ``(B, codebook_size)`` for image token ``position`` with key/value caches (see
        ``ImageTokenDecoder.decode_step``). Position 0 runs the caption and ``<start>`` through
        the stream, filling the caches; later positions feed one token each."""
        B, L, _ = context.shape
        if previous is None:
            start = torch.full((B, 1), self.config.start_id, dtype=torch.long, device=context.device)
            x = torch.cat([context, self.token_embedding(start) + self.position_embedding.weight[L]], dim=1)  # (B, L + 1, d)
        else:
            x = self.token_embedding(previous[:, None]) + self.position_embedding.weight[L + position]  # (B, 1, d)
        for block, cache in zip(self.blocks, caches):
            x, _ = block(x, None, None, cache=cache, text_len=L)
        return self.head(self.norm(x[:, -1]))  # (B, codebook_size)

    def forward(
        self, image_tokens: torch.Tensor, text_tokens: torch.Tensor, context_mask: torch.Tensor, need_weights: bool = False
    ) -> DecoderOutput:
        """Logits ``(B, t + 1, codebook_size)``; with ``need_weights``, per block the words' part of
        the image positions' self-attention (:func:`words_part_of_attention`)."""
        self._check(image_tokens, text_tokens, context_mask)
        return self.decode(image_tokens, self.encode_text(text_tokens, context_mask), context_mask, need_weights)

    def loss(self, image_tokens: torch.Tensor, text_tokens: torch.Tensor, context_mask: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of every image token given the caption and the tokens before it."""
        logits = self(image_tokens[:, :-1], text_tokens, context_mask).logits  # (B, N, K)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), image_tokens.reshape(-1))
