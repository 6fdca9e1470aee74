r"""Conditioning without attention to the words: a pooled caption vector sets the scale and
shift of every LayerNorm (adaptive LayerNorm), the baseline the attention designs must beat.

The caption is encoded as usual, then averaged over its real words into one vector
:math:`c` ``(B, d_model)``. Each block turns :math:`c` into six vectors and uses them to
modulate its two sub-layers (DiT's adaLN-Zero: Peebles & Xie 2023, "Scalable Diffusion Models
with Transformers", where the vector is a class label's and the time step's; Stable Diffusion 3
and FLUX feed a pooled caption vector this way beside their joint attention, while SDXL, Podell et
al. 2023, adds its pooled caption vector to the time-step embedding beside its cross-attention):

.. math::
    [\beta_1, \gamma_1, \alpha_1, \beta_2, \gamma_2, \alpha_2] &= \operatorname{SiLU}(c)\,W + b \\
    x &\leftarrow x + \alpha_1 \odot \operatorname{CausalSelfAttn}\big(\operatorname{LN}(x)\,(1 + \gamma_1) + \beta_1\big) \\
    x &\leftarrow x + \alpha_2 \odot \operatorname{MLP}\big(\operatorname{LN}(x)\,(1 + \gamma_2) + \beta_2\big)

:math:`W` and :math:`b` start at zero, so every block starts as the identity and the gates
:math:`\alpha` open as training finds use for them. No image token ever looks at a word: the
whole caption reaches the image as one vector, the same for every position, so which colour
belongs to which shape must survive the average (the text encoder's self-attention can mix it
into every word before the mean). Discussed in notebooks/06_text_to_image.ipynb.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from crossmodal_edu.dalle.config import DecoderConfig
from crossmodal_edu.dalle.decoder import MLP, CausalSelfAttention, ImageTokenDecoder


def pooled_caption(context: torch.Tensor, context_mask: torch.Tensor) -> torch.Tensor:
    r"""Mean of the encoded caption over its real words:
    :math:`c_b = \sum_j m_{bj}\,\text{context}_{bj} / \sum_j m_{bj}`.
    ``context`` ``(B, L, d_model)``, ``context_mask`` ``(B, L)`` -> ``(B, d_model)`` (0 for a
    caption of padding only)."""
    weights = context_mask.to(context.dtype)[..., None]  # (B, L, 1)
    return (context * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)  # (B, d_model)


def modulate(h: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``h * (1 + scale) + shift``: ``h`` ``(B, T, d)``, ``shift`` and ``scale`` ``(B, 1, d)``."""
    return h * (1 + scale) + shift


class AdaLNBlock(nn.Module):
    """Causal self-attention and MLP, each behind a LayerNorm whose scale and shift (and a gate
    on the residual) come from the pooled caption (see the module docstring)."""

    supports_kv_cache = True

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        d = config.d_model
        self.norm1 = nn.LayerNorm(d, elementwise_affine=False)  # the scale and shift come from the caption
        self.self_attention = CausalSelfAttention(config)
        self.norm2 = nn.LayerNorm(d, elementwise_affine=False)
        self.mlp = MLP(d, config.mlp_ratio, config.dropout)
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(d, 6 * d))

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor,
        context_mask: torch.Tensor,
        need_weights: bool = False,
        cache: dict[str, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, None]:
        """``x`` ``(B, T, d_model)``, ``context`` ``(B, L, d_model)``, ``context_mask`` ``(B, L)``
        -> ``(B, T, d_model)`` and None (no attention to words). ``cache`` (sampling): the
        self-attention's keys and values and the caption's six vectors, computed once."""
        if cache is not None and "modulation" in cache:
            modulation = cache["modulation"]
        else:
            modulation = self.modulation(pooled_caption(context, context_mask))[:, None]  # (B, 1, 6 d_model)
            if cache is not None:
                cache["modulation"] = modulation
        shift1, scale1, gate1, shift2, scale2, gate2 = modulation.chunk(6, dim=-1)  # each (B, 1, d_model)
        x = x + gate1 * self.self_attention(modulate(self.norm1(x), shift1, scale1), cache)
        return x + gate2 * self.mlp(modulate(self.norm2(x), shift2, scale2)), None


class AdaLNDecoder(ImageTokenDecoder):
    """:class:`~crossmodal_edu.dalle.decoder.ImageTokenDecoder` whose blocks are
    :class:`AdaLNBlock`s: the same text encoder, embeddings, head and data flow."""

    conditionings = ("adaln",)

    def __init__(self, config: DecoderConfig | None = None) -> None:
        super().__init__(config)
        for block in self.blocks:  # adaLN-Zero: every block starts as the identity
            nn.init.zeros_(block.modulation[1].weight)
            nn.init.zeros_(block.modulation[1].bias)

    def make_block(self, config: DecoderConfig, index: int) -> nn.Module:
        return AdaLNBlock(config)
