r"""The MM-DiT denoiser (Stable Diffusion 3, FLUX): caption and latents as two streams that meet
in one joint attention per block, each with its own projections, MLP and adaLN modulation.

Per block, with :math:`e` the caption stream, :math:`h` the latent stream and :math:`c` the time:

.. math::
    [q_e, k_e, v_e] &= \operatorname{adaLN}^e_1(e, c)\,W^e_{qkv}, \qquad
    [q_h, k_h, v_h] = \operatorname{adaLN}^h_1(h, c)\,W^h_{qkv} \\
    [o_e ; o_h] &= \operatorname{softmax}\!\Big(\frac{[q_e ; q_h]\,[k_e ; k_h]^\top}{\sqrt{d_k}} + M\Big)\,[v_e ; v_h]

then each stream adds its gated output projection and its gated MLP. :math:`M` hides only the
caption's padding: **every row sees every real token of both streams**, so the words read the
latents as much as the latents read the words. In lesson 06's autoregressive decoder the caption
could not read the image (the image was not drawn yet; ``crossmodal_edu.dalle.mmdit``); a
diffusion model denoises all 64 latents at once, so nothing is "the future" and the full two-way
form is allowed. (Esser et al. 2024, "Scaling Rectified Flow Transformers for High-Resolution
Image Synthesis".) SD3 also adds a pooled caption vector to :math:`c`; this one does not, so the
caption enters only through attention, as in the cross-attention denoiser it is compared with.

The maps drawn for this design are the latent rows' weights on the caption columns of the joint
softmax (they do not sum to 1 over the words: the rest went to other latents).
Discussed in notebooks/07_latent_diffusion.ipynb.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from crossmodal_edu.dalle.adaln import modulate
from crossmodal_edu.dalle.decoder import MLP
from crossmodal_edu.diffusion.config import DiffusionConfig
from crossmodal_edu.diffusion.denoiser import Denoiser


class Stream(nn.Module):
    """One modality's weights in an MM-DiT block: norms, ``qkv``, output projection, MLP, and the
    six modulation vectors it takes from the time embedding."""

    def __init__(self, config: DiffusionConfig) -> None:
        super().__init__()
        d = config.d_model
        self.norm1 = nn.LayerNorm(d, elementwise_affine=False)
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.norm2 = nn.LayerNorm(d, elementwise_affine=False)
        self.mlp = MLP(d, config.mlp_ratio, config.dropout)
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(d, 6 * d))
        nn.init.zeros_(self.modulation[1].weight)
        nn.init.zeros_(self.modulation[1].bias)


class MMDiTBlock(nn.Module):
    """Joint attention over ``[caption ; latents]`` with per-modality weights (module docstring)."""

    def __init__(self, config: DiffusionConfig) -> None:
        super().__init__()
        self.num_heads = config.num_heads
        self.dropout = config.dropout
        self.text = Stream(config)
        self.image = Stream(config)

    def forward(
        self, h: torch.Tensor, c: torch.Tensor, e: torch.Tensor, context_mask: torch.Tensor, need_weights: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """``h`` ``(B, N, d)`` latents, ``c`` ``(B, d)`` time, ``e`` ``(B, L, d)`` caption ->
        new ``h``, new ``e`` and, when asked, the latents' weights on the words ``(B, heads, N, L)``."""
        B, N, d = h.shape
        L = e.shape[1]
        H = self.num_heads
        mods = {}
        qkv = []
        for name, stream, x in (("text", self.text, e), ("image", self.image, h)):
            mods[name] = stream.modulation(c)[:, None].chunk(6, dim=-1)
            shift1, scale1 = mods[name][0], mods[name][1]
            qkv.append(stream.qkv(modulate(stream.norm1(x), shift1, scale1)))
        q, k, v = torch.cat(qkv, dim=1).view(B, L + N, 3, H, d // H).permute(2, 0, 3, 1, 4)  # each (B, H, L+N, hd)
        keys_visible = torch.cat([context_mask, context_mask.new_ones(B, N)], dim=1)  # (B, L+N): every latent, real words
        scores = q @ k.transpose(-2, -1) / (d // H) ** 0.5  # (B, H, L+N, L+N)
        scores = scores.masked_fill(~keys_visible[:, None, None, :], float("-inf"))
        weights = scores.softmax(dim=-1)
        if self.training and self.dropout > 0:
            weights = nn.functional.dropout(weights, self.dropout)
        joint = (weights @ v).transpose(1, 2).reshape(B, L + N, d)  # (B, L+N, d)
        outputs = []
        for name, stream, x, part in (("text", self.text, e, joint[:, :L]), ("image", self.image, h, joint[:, L:])):
            _, _, gate1, shift2, scale2, gate2 = mods[name]
            x = x + gate1 * stream.out(part)
            outputs.append(x + gate2 * stream.mlp(modulate(stream.norm2(x), shift2, scale2)))
        word_weights = weights[:, :, L:, :L] if need_weights else None  # latent rows, caption columns
        return outputs[1], outputs[0], word_weights


class MMDiTDenoiser(Denoiser):
    """:class:`~crossmodal_edu.diffusion.denoiser.Denoiser` with MM-DiT blocks: the encoded
    caption becomes the text stream and is updated in every block. Attention control (editing
    maps) is a cross-attention feature and is refused here; maps can be read."""

    def make_block(self, config: DiffusionConfig, index: int) -> nn.Module:
        return MMDiTBlock(config)

    def forward(self, x_t, t, text_tokens, context_mask, need_weights=False, attention_control=None, context=None):
        if attention_control is not None:
            raise ValueError("attention_control edits cross-attention maps; the MM-DiT denoiser has joint attention instead")
        from crossmodal_edu.diffusion.denoiser import DenoiserOutput

        self._check(x_t, t, text_tokens, context_mask)
        B, C, hgt, wid = x_t.shape
        e = self.encode_text(text_tokens, context_mask) if context is None else context
        h = self.latent_in(x_t.flatten(2).transpose(1, 2)) + self.position_embedding
        c = self.time_embedding(t)
        weights = []
        for block in self.blocks:
            h, e, w = block(h, c, e, context_mask, need_weights)
            if w is not None:
                weights.append(w)
        velocity = self.final(h, c).transpose(1, 2).reshape(B, C, hgt, wid)
        return DenoiserOutput(velocity, weights)
