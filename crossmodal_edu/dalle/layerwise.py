"""Cross-attention that reads a different depth of the text encoder in every block: block ``l``
reads the caption as text layer ``l`` left it (each through its own LayerNorm).

The single stream (DALL-E 1) differs from cross-attention in several ways at once; one of them
is that its block ``l`` reads the caption as processed by ``l`` blocks, not the text encoder's
final output. This design changes only that, so a sweep can tell the causes apart
(``benchmarks/decoder_sweep.py``; the answer is in benchmarks/RESULTS.md). Needs
``text_layers == layers``. Discussed in notebooks/06_text_to_image.ipynb.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from crossmodal_edu.dalle.config import DecoderConfig
from crossmodal_edu.dalle.decoder import DecoderBlock, DecoderOutput, ImageTokenDecoder


class LayerwiseDecoder(ImageTokenDecoder):
    """Cross-attention decoder whose block ``l`` reads text-encoder layer ``l``.
    ``encode_text`` returns ``context`` ``(B, L, layers, d_model)``."""

    conditionings = ("layerwise",)

    def __init__(self, config: DecoderConfig | None = None) -> None:
        config = config or DecoderConfig(conditioning="layerwise")
        if config.text_layers != config.layers:
            raise ValueError(
                f"layerwise needs text_layers == layers (one text layer per block), got text_layers={config.text_layers} "
                f"and layers={config.layers}"
            )
        super().__init__(config)
        self.context_norms = nn.ModuleList(nn.LayerNorm(config.d_model) for _ in range(config.layers))

    def make_block(self, config: DecoderConfig, index: int) -> nn.Module:
        return DecoderBlock(config)  # conditioning "layerwise" has cross-attention in every block

    def encode_text(self, text_tokens: torch.Tensor, context_mask: torch.Tensor) -> torch.Tensor:
        """``text_tokens`` ``(B, L)`` -> every text layer's output, ``(B, L, layers, d_model)``."""
        encoder = self.text_encoder
        positions = torch.arange(text_tokens.shape[1], device=text_tokens.device)  # (L,)
        h = encoder.token_embedding(text_tokens) + encoder.position_embedding(positions)  # (B, L, d_model)
        outputs = []
        for layer, norm in zip(encoder.layers, self.context_norms):
            h = layer(h, context_mask)
            outputs.append(norm(h))
        return torch.stack(outputs, dim=2)  # (B, L, layers, d_model)

    def decode(
        self, image_tokens: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor, need_weights: bool = False
    ) -> DecoderOutput:
        """As ``ImageTokenDecoder.decode``, block ``l`` reading ``context[:, :, l]``."""
        B, t = image_tokens.shape
        start = torch.full((B, 1), self.config.start_id, dtype=torch.long, device=image_tokens.device)
        inputs = torch.cat([start, image_tokens.long()], dim=1)  # (B, t + 1)
        x = self.token_embedding(inputs) + self.position_embedding(torch.arange(t + 1, device=inputs.device))  # (B, t + 1, d)
        cross_weights = [] if need_weights else None
        for l, block in enumerate(self.blocks):
            x, weights = block(x, context[:, :, l], context_mask, need_weights)
            if need_weights:
                cross_weights.append(weights)
        return DecoderOutput(self.head(self.norm(x)), cross_weights)

    def decode_step(
        self,
        previous: torch.Tensor | None,
        position: int,
        context: torch.Tensor,
        context_mask: torch.Tensor,
        caches: list[dict[str, torch.Tensor]],
    ) -> torch.Tensor:
        """As ``ImageTokenDecoder.decode_step``, block ``l`` reading ``context[:, :, l]``."""
        B = context.shape[0]
        if previous is None:
            previous = torch.full((B,), self.config.start_id, dtype=torch.long, device=context.device)
        x = self.token_embedding(previous[:, None]) + self.position_embedding.weight[position]  # (B, 1, d_model)
        for l, (block, cache) in enumerate(zip(self.blocks, caches)):
            x, _ = block(x, context[:, :, l], context_mask, cache=cache)
        return self.head(self.norm(x))[:, 0]  # (B, codebook_size)
