"""Configurations of the miniature latent diffusion model: one dataclass for the denoiser, one for
training. Plain numbers and strings, so a checkpoint stores them as plain dicts (as in
``crossmodal_edu.dalle.config``).
"""

from __future__ import annotations

from dataclasses import dataclass

from crossmodal_edu.dalle.config import DecoderConfig, TrainConfig

DENOISER_CONDITIONINGS: tuple[str, ...] = ("cross-attention", "mmdit", "none")
"""How the denoiser reads the caption (``DiffusionConfig.conditioning``):

- ``"cross-attention"``: in every block the latents (queries) ask the encoded caption (keys and
  values), Stable Diffusion 1/2's way (``denoiser.py``);
- ``"mmdit"``: one joint attention per block over ``[caption ; latents]``, each stream with its own
  weights, the caption updated in every block and reading the latents too: SD3 / FLUX
  (``mmdit.py``), the two-way form an autoregressive model cannot have;
- ``"none"``: the ablation, the caption never reaches the latents.
"""


@dataclass
class DiffusionConfig:
    """A text encoder and a transformer that predicts, for noisy latents at time ``t``, the
    velocity that carries them back towards an image (rectified flow)."""

    vocab_size: int = 25  # caption words including <pad> (id 0); the null caption's token is id vocab_size
    max_text_len: int = 8  # longest caption, in words
    latent_channels: int = 16  # channels of the tokenizer's latent grid (its code_dim)
    grid_size: int = 8  # latent positions along each side: 8 x 8 = 64 latent tokens
    d_model: int = 128  # width of every token vector, text and latent
    num_heads: int = 4  # attention heads in every attention layer
    text_layers: int = 2  # transformer layers of the text encoder
    layers: int = 4  # denoiser blocks
    mlp_ratio: int = 4  # MLP hidden width = mlp_ratio * d_model
    dropout: float = 0.0  # dropout on attention weights and MLP outputs
    conditioning: str = "cross-attention"  # one of DENOISER_CONDITIONINGS
    caption_dropout: float = 0.1  # share of training captions replaced by the null caption (for guidance)
    held_out: str = "green triangle,blue circle,magenta square"  # colour-shape pairs never trained on

    def __post_init__(self) -> None:
        if self.d_model % self.num_heads:
            raise ValueError(f"d_model {self.d_model} must be divisible by num_heads {self.num_heads}")
        if self.conditioning not in DENOISER_CONDITIONINGS:
            raise ValueError(f"conditioning must be one of {DENOISER_CONDITIONINGS}, got {self.conditioning!r}")
        if not 0.0 <= self.caption_dropout < 1.0:
            raise ValueError(f"caption_dropout must be in [0, 1), got {self.caption_dropout}")
        for name in ("latent_channels", "grid_size", "layers", "mlp_ratio"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        self.held_out_pairs  # noqa: B018 -- validates the string

    # The caption side is the DALL-E decoder's: same vocabulary, null caption and held-out pairs.
    held_out_pairs = DecoderConfig.held_out_pairs
    null_id = DecoderConfig.null_id

    @property
    def num_latents(self) -> int:
        """Latent tokens per image, ``grid_size ** 2``."""
        return self.grid_size**2


@dataclass
class DiffusionTrainConfig(TrainConfig):
    """``TrainConfig`` with the denoiser's defaults, plus the two choices diffusion adds."""

    steps: int = 2400
    batch_size: int = 64
    lr: float = 1.5e-3
    warmup_steps: int = 100
    weight_decay: float = 0.0
    two_object_fraction: float = 0.3
    checkpoint_every: int = 250
    time_sampling: str = "uniform"  # how training draws t: "uniform" or "logit-normal" (SD3's, fewer steps near t = 1)
    ema_decay: float = 0.999  # the sampled model is an exponential moving average of the weights

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.time_sampling not in ("uniform", "logit-normal"):
            raise ValueError(f"time_sampling must be 'uniform' or 'logit-normal', got {self.time_sampling!r}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
