r"""The denoiser: a small transformer over the 64 latent positions that predicts, for noisy
latents at time ``t`` and a caption, the velocity back towards the image (``flow.py``).

Two things condition it, and they enter in two different ways::

    caption (B, L) --TextEncoder--> context (B, L, d)          time t (B,) --> sinusoids --> MLP --> c (B, d)
                                          | keys and values                                      | scale, shift, gate
    x_t (B, 16, 8, 8) -> 64 tokens (B, 64, d) -> DenoiserBlock x layers -> velocity (B, 16, 8, 8)
                                  adaLN(c) -> self-attention: latents look at latents   (all 64, no mask)
                                  LN       -> cross-attention: latents (queries) ask, words answer
                                  adaLN(c) -> MLP

- **The caption through attention.** Each latent position asks the words what to draw there: the
  same ``MultiHeadCrossAttention`` as lessons 03 and 06, whose weights ``(B, heads, 64, L)`` are
  the per-word maps the lesson draws and edits.
- **The time through modulation.** ``t`` is one number per image, the same for every position,
  so it needs no attention: it sets the scale and shift of the LayerNorms and a gate on each
  residual (adaptive LayerNorm, "adaLN-Zero": Peebles & Xie 2023, "Scalable Diffusion Models
  with Transformers"). The gates start at 0, so every block starts as the identity.
  Cross-attention kept outside the modulation, beside adaLN for time, is PixArt-alpha's block
  (Chen et al. 2023).

Unlike lesson 06's decoder there is no causal mask: all 64 latents are denoised at once, and
every one may look at every other.

``attention_control(layer, weights) -> weights`` (optional) sees every cross-attention's
weights ``(B, heads, 64, L)`` and may return edited ones, which the layer then uses:
prompt-to-prompt editing (``control.py``) is built on it.
Derived in notebooks/07_latent_diffusion.ipynb.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from crossmodal_edu._checks import describe, is_bool
from crossmodal_edu.dalle.adaln import modulate
from crossmodal_edu.dalle.decoder import MLP, TextEncoder
from crossmodal_edu.diffusion.config import DiffusionConfig
from crossmodal_edu.torch_attention import MultiHeadCrossAttention

AttentionControl = Callable[[int, torch.Tensor], torch.Tensor]


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    r"""Sinusoids of ``t`` ``(B,)`` in [0, 1] -> ``(B, dim)``: :math:`[\cos(1000\,t\,\omega_i), \sin(1000\,t\,\omega_i)]`
    with frequencies :math:`\omega_i = p^{-i/(d/2)}`, the transformer's position code applied to time
    (scaled by 1000 so that neighbouring times differ in the fast sinusoids too)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)  # (dim/2,)
    angles = 1000.0 * t.float()[:, None] * freqs[None]  # (B, dim/2)
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)  # (B, dim)


def sincos_2d(grid_size: int, dim: int) -> torch.Tensor:
    """Fixed 2-D sinusoidal position codes ``(grid_size ** 2, dim)`` in raster order: half of the
    channels encode the row, half the column, each as sines and cosines of several frequencies
    (Vaswani et al. 2017, in two dimensions as in ViT/DiT)."""
    if dim % 4:
        raise ValueError(f"dim must be divisible by 4 for 2-D sinusoids, got {dim}")
    quarter = dim // 4
    freqs = 1.0 / 10_000 ** (torch.arange(quarter, dtype=torch.float32) / quarter)  # (dim/4,)
    rows, cols = torch.meshgrid(torch.arange(grid_size, dtype=torch.float32), torch.arange(grid_size, dtype=torch.float32), indexing="ij")
    parts = []
    for coordinate in (rows.flatten(), cols.flatten()):
        angles = coordinate[:, None] * freqs[None]  # (N, dim/4)
        parts += [torch.sin(angles), torch.cos(angles)]
    return torch.cat(parts, dim=1)  # (N, dim)


class TimeEmbedding(nn.Module):
    """``t`` ``(B,)`` -> ``c`` ``(B, d_model)``: sinusoids, then a two-layer MLP."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.d_model = d_model
        self.mlp = nn.Sequential(nn.Linear(d_model, d_model), nn.SiLU(), nn.Linear(d_model, d_model))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(timestep_embedding(t, self.d_model))


def attend_with(attention: MultiHeadCrossAttention, weights: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """The output of ``attention`` had its weights been ``weights`` ``(B, heads, Lq, Lk)``:
    ``to_out(weights @ V)``. Used when an attention control edits the maps."""
    B, Lk, _ = context.shape
    H, hd = attention.num_heads, attention.head_dim
    v = attention.to_v(context).view(B, Lk, H, hd).transpose(1, 2)  # (B, heads, Lk, head_dim)
    heads = (weights.to(v.dtype) @ v).transpose(1, 2).reshape(B, weights.shape[2], H * hd)  # (B, Lq, heads * head_dim)
    return attention.to_out(heads)


class DenoiserBlock(nn.Module):
    r"""adaLN self-attention, cross-attention to the caption, adaLN MLP (module docstring):

    .. math::
        [\beta_1, \gamma_1, \alpha_1, \beta_2, \gamma_2, \alpha_2] &= \operatorname{SiLU}(c)\,W + b \\
        h &\leftarrow h + \alpha_1 \odot \operatorname{SelfAttn}\big(\operatorname{LN}(h)(1 + \gamma_1) + \beta_1\big) \\
        h &\leftarrow h + \operatorname{CrossAttn}\big(\operatorname{LN}(h),\ \text{context}\big) \\
        h &\leftarrow h + \alpha_2 \odot \operatorname{MLP}\big(\operatorname{LN}(h)(1 + \gamma_2) + \beta_2\big)
    """

    def __init__(self, config: DiffusionConfig) -> None:
        super().__init__()
        d = config.d_model
        self.norm1 = nn.LayerNorm(d, elementwise_affine=False)
        self.self_attention = MultiHeadCrossAttention(d, d, config.num_heads, dropout=config.dropout)
        self.reads_caption = config.conditioning == "cross-attention"
        if self.reads_caption:
            self.norm2 = nn.LayerNorm(d)
            self.cross_attention = MultiHeadCrossAttention(d, d, config.num_heads, dropout=config.dropout)
        self.norm3 = nn.LayerNorm(d, elementwise_affine=False)
        self.mlp = MLP(d, config.mlp_ratio, config.dropout)
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(d, 6 * d))
        nn.init.zeros_(self.modulation[1].weight)
        nn.init.zeros_(self.modulation[1].bias)

    def forward(
        self,
        h: torch.Tensor,
        c: torch.Tensor,
        context: torch.Tensor,
        context_mask: torch.Tensor,
        need_weights: bool = False,
        control: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``h`` ``(B, N, d)``, ``c`` ``(B, d)``, ``context`` ``(B, L, d)``, ``context_mask`` ``(B, L)``
        -> new ``h`` and, when asked (or controlled), the cross-attention weights ``(B, heads, N, L)``."""
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(c)[:, None].chunk(6, dim=-1)  # each (B, 1, d)
        normed = modulate(self.norm1(h), shift1, scale1)
        h = h + gate1 * self.self_attention(normed, normed)
        weights = None
        if self.reads_caption:
            normed = self.norm2(h)
            if need_weights or control is not None:
                attended, weights = self.cross_attention(normed, context, context_mask, need_weights=True)
                if control is not None:
                    edited = control(weights)
                    if edited is not weights:  # read the values through the edited maps
                        weights, attended = edited, attend_with(self.cross_attention, edited, context)
            else:
                attended = self.cross_attention(normed, context, context_mask)
            h = h + attended
        h = h + gate2 * self.mlp(modulate(self.norm3(h), shift2, scale2))
        return h, weights


class FinalLayer(nn.Module):
    """adaLN, then a linear map from ``d_model`` back to the latent channels (zero at the start,
    so an untrained model predicts velocity 0)."""

    def __init__(self, d_model: int, channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_model, elementwise_affine=False)
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(d_model, 2 * d_model))
        self.linear = nn.Linear(d_model, channels)
        for layer in (self.modulation[1], self.linear):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.modulation(c)[:, None].chunk(2, dim=-1)
        return self.linear(modulate(self.norm(h), shift, scale))


@dataclass
class DenoiserOutput:
    velocity: torch.Tensor  # (B, C, h, w)
    cross_weights: list[torch.Tensor] = field(default_factory=list)  # per block (B, heads, N, L), when asked


class Denoiser(nn.Module):
    """Text encoder + denoiser blocks (module docstring). Build any design with
    :func:`build_denoiser`; this class is ``"cross-attention"`` and ``"none"``."""

    def __init__(self, config: DiffusionConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or DiffusionConfig()
        d = config.d_model
        self.text_encoder = TextEncoder(config) if config.conditioning != "none" else None
        self.latent_in = nn.Linear(config.latent_channels, d)
        # Where each latent sits: DiT's fixed 2-D sinusoids as the starting point (learned from there).
        # At the scale of the projected latents (about 1), unlike lesson 06's 0.02-scale start, which
        # left a denoiser here unable to tell the 64 positions apart for a long time.
        self.position_embedding = nn.Parameter(sincos_2d(config.grid_size, d))
        self.time_embedding = TimeEmbedding(d)
        self.blocks = nn.ModuleList(self.make_block(config, i) for i in range(config.layers))
        self.final = FinalLayer(d, config.latent_channels)
        # The latent space's per-channel statistics (latents.py), measured before training and
        # saved with the weights, so that a checkpoint can turn its latents back into images.
        self.register_buffer("latent_mean", torch.zeros(config.latent_channels))
        self.register_buffer("latent_std", torch.ones(config.latent_channels))

    def make_block(self, config: DiffusionConfig, index: int) -> nn.Module:
        return DenoiserBlock(config)

    @property
    def reads_caption_by_cross_attention(self) -> bool:
        return self.config.conditioning == "cross-attention"

    def _check(self, x_t: torch.Tensor, t: torch.Tensor, text_tokens: torch.Tensor, context_mask: torch.Tensor) -> None:
        cfg = self.config
        want = (cfg.latent_channels, cfg.grid_size, cfg.grid_size)
        if x_t.ndim != 4 or tuple(x_t.shape[1:]) != want:
            raise ValueError(f"x_t must have shape (B, {', '.join(map(str, want))}), but {describe('x_t', x_t)}")
        B = x_t.shape[0]
        if t.ndim != 1 or len(t) != B:
            raise ValueError(f"t must have shape ({B},), one time per latent, but {describe('t', t)}")
        if not bool(((t >= 0) & (t <= 1)).all()):
            raise ValueError(f"t must lie in [0, 1] (0 = image, 1 = pure noise), got values from {t.min().item():.3g} to {t.max().item():.3g}")
        if text_tokens.ndim != 2 or text_tokens.shape[0] != B:
            raise ValueError(f"text_tokens must have shape ({B}, L), but {describe('text_tokens', text_tokens)}")
        if text_tokens.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"text_tokens must be integer word ids, got dtype {text_tokens.dtype}")
        if context_mask.shape != text_tokens.shape or not is_bool(context_mask):
            raise ValueError(
                f"context_mask must be a bool tensor shaped like text_tokens {tuple(text_tokens.shape)} "
                f"(True = real word), but {describe('context_mask', context_mask)} with dtype {context_mask.dtype}"
            )
        if text_tokens.shape[1] > cfg.max_text_len:
            raise ValueError(f"captions may have at most {cfg.max_text_len} words, got {text_tokens.shape[1]}")
        if text_tokens.numel() and (int(text_tokens.min()) < 0 or int(text_tokens.max()) > cfg.null_id):
            raise ValueError(f"text_tokens must lie in 0..{cfg.null_id} (the null caption's id), got {int(text_tokens.min())}..{int(text_tokens.max())}")

    def encode_text(self, text_tokens: torch.Tensor, context_mask: torch.Tensor) -> torch.Tensor | None:
        """``(B, L)`` -> ``context`` ``(B, L, d_model)`` (None for the ``"none"`` ablation)."""
        return None if self.text_encoder is None else self.text_encoder(text_tokens, context_mask)

    def forward(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        text_tokens: torch.Tensor,
        context_mask: torch.Tensor,
        need_weights: bool = False,
        attention_control: AttentionControl | None = None,
        context: torch.Tensor | None = None,
    ) -> DenoiserOutput:
        """``x_t`` ``(B, C, h, w)``, ``t`` ``(B,)``, caption ``(B, L)`` -> velocity ``(B, C, h, w)``.
        ``context``: the caption already encoded (the sampler encodes it once, not at every step)."""
        self._check(x_t, t, text_tokens, context_mask)
        B, C, hgt, wid = x_t.shape
        if context is None:
            context = self.encode_text(text_tokens, context_mask)
        h = self.latent_in(x_t.flatten(2).transpose(1, 2)) + self.position_embedding  # (B, N, d)
        c = self.time_embedding(t)  # (B, d)
        weights = []
        for index, block in enumerate(self.blocks):
            control = None if attention_control is None else (lambda w, i=index: attention_control(i, w))
            h, w = block(h, c, context, context_mask, need_weights, control)
            if w is not None:
                weights.append(w)
        velocity = self.final(h, c).transpose(1, 2).reshape(B, C, hgt, wid)
        return DenoiserOutput(velocity, weights if need_weights else [])

    def loss(
        self, x0: torch.Tensor, text_tokens: torch.Tensor, context_mask: torch.Tensor, t: torch.Tensor, noise: torch.Tensor
    ) -> torch.Tensor:
        """Mean squared error between the predicted and the true velocity at ``x_t`` (``flow.py``)."""
        from crossmodal_edu.diffusion.flow import noisy_latents, velocity_target

        prediction = self(noisy_latents(x0, noise, t), t, text_tokens, context_mask).velocity
        return ((prediction - velocity_target(x0, noise)) ** 2).mean()


def build_denoiser(config: DiffusionConfig | None = None) -> nn.Module:
    """The denoiser ``config.conditioning`` names: :class:`Denoiser` (``"cross-attention"``,
    ``"none"``) or :class:`~crossmodal_edu.diffusion.mmdit.MMDiTDenoiser` (``"mmdit"``)."""
    config = config or DiffusionConfig()
    if config.conditioning == "mmdit":
        from crossmodal_edu.diffusion.mmdit import MMDiTDenoiser

        return MMDiTDenoiser(config)
    return Denoiser(config)
