"""Decoders between cross-attention and the single stream, to find out *why* the single stream
(DALL-E 1) learns two-object captions faster than cross-attention at equal size (exploration).

The two models differ in three ways at once:

1. **Which text an image token reads.** Cross-attention reads the text encoder's *final*
   output in every block; in the single stream, block ``l`` reads the caption as processed by
   ``l`` blocks (a different representation at every depth).
2. **One softmax or two.** The single stream's image tokens weigh caption words and earlier
   image tokens against each other in one softmax; cross-attention has one softmax over the
   image prefix (self-attention) and a separate one over the words.
3. **Shared weights, causal text.** The single stream processes words with the same weights as
   image tokens, and causally.

Each variant here changes one of them, so a sweep over them (``benchmarks/decoder_sweep.py``,
``variant=...``) separates the causes:

* ``layerwise``: cross-attention, but block ``l`` reads text-encoder layer ``l`` (cause 1 only).
* ``joint``: no separate cross-attention; every block's self-attention takes the final encoded
  caption as extra keys and values, in one softmax with the image prefix (cause 2 only). This
  is the joint attention of Stable Diffusion 3's MM-DiT, without updating the caption.

Both keep ``ImageTokenDecoder``'s interface except ``decode_step`` (no KV cache): sample them
with ``use_cache=False``.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from crossmodal_edu.dalle.config import DecoderConfig
from crossmodal_edu.dalle.decoder import MLP, DecoderOutput, ImageTokenDecoder


class LayerwiseDecoder(ImageTokenDecoder):
    """Cross-attention decoder whose block ``l`` reads the caption after text layer ``l``
    (needs ``text_layers == layers``). ``encode_text`` returns ``(B, L, layers, d_model)``."""

    def __init__(self, config: DecoderConfig) -> None:
        if config.text_layers != config.layers:
            raise ValueError(f"layerwise needs text_layers == layers, got {config.text_layers} and {config.layers}")
        super().__init__(config)
        self.context_norms = nn.ModuleList(nn.LayerNorm(config.d_model) for _ in range(config.layers))

    def encode_text(self, text_tokens: torch.Tensor, context_mask: torch.Tensor) -> torch.Tensor:
        encoder = self.text_encoder
        positions = torch.arange(text_tokens.shape[1], device=text_tokens.device)
        h = encoder.token_embedding(text_tokens) + encoder.position_embedding(positions)  # (B, L, d)
        outputs = []
        for layer, norm in zip(encoder.layers, self.context_norms):
            h = layer(h, context_mask)
            outputs.append(norm(h))
        return torch.stack(outputs, dim=2)  # (B, L, layers, d)

    def decode(self, image_tokens, context, context_mask, need_weights=False):
        B, t = image_tokens.shape
        start = torch.full((B, 1), self.config.start_id, dtype=torch.long, device=image_tokens.device)
        inputs = torch.cat([start, image_tokens.long()], dim=1)
        x = self.token_embedding(inputs) + self.position_embedding(torch.arange(t + 1, device=inputs.device))
        for l, block in enumerate(self.blocks):
            x, _ = block(x, context[:, :, l], context_mask)
        return DecoderOutput(self.head(self.norm(x)), None)


class JointBlock(nn.Module):
    """Pre-norm block whose one attention reads ``[caption ; image prefix]`` in one softmax
    (caption keys/values from their own projection), then an MLP."""

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        d = config.d_model
        self.num_heads = config.num_heads
        self.norm1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.text_kv = nn.Linear(d, 2 * d)
        self.out = nn.Linear(d, d)
        self.norm3 = nn.LayerNorm(d)
        self.mlp = MLP(d, config.mlp_ratio, config.dropout)

    def forward(self, x, context, context_mask, need_weights=False, cache=None):
        B, T, d = x.shape
        L, H = context.shape[1], self.num_heads
        q, k, v = self.qkv(self.norm1(x)).view(B, T, 3, H, d // H).permute(2, 0, 3, 1, 4)  # (B, H, T, hd)
        tk, tv = self.text_kv(context).view(B, L, 2, H, d // H).permute(2, 0, 3, 1, 4)  # (B, H, L, hd)
        causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()  # (T, T)
        allowed = torch.cat([context_mask[:, None, :].expand(B, T, L), causal.expand(B, T, T)], dim=2)  # (B, T, L + T)
        heads = F.scaled_dot_product_attention(q, torch.cat([tk, k], 2), torch.cat([tv, v], 2), attn_mask=allowed[:, None])
        x = x + self.out(heads.transpose(1, 2).reshape(B, T, d))
        return x + self.mlp(self.norm3(x)), None


class JointDecoder(ImageTokenDecoder):
    """``ImageTokenDecoder`` with :class:`JointBlock`s instead of self- + cross-attention."""

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__(config)
        self.blocks = nn.ModuleList(JointBlock(config) for _ in range(config.layers))
        self.blocks.apply(self._init_weights)


VARIANTS = {"layerwise": LayerwiseDecoder, "joint": JointDecoder}
