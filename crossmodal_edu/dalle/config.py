"""Configurations of the miniature DALL-E: one dataclass per model, one for training.

Each is a plain dataclass of numbers and strings, so a checkpoint stores it as a plain dict
(``dataclasses.asdict``) and ``torch.load(..., weights_only=True)`` can read it back.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass
class TokenizerConfig:
    """The VQ-VAE that turns a 32 x 32 image into an 8 x 8 grid of ``image_tokens``."""

    image_size: int = 32  # side of the square input images, px
    downsample: int = 4  # image px per token along each side: 32 px / 4 = an 8 x 8 token grid
    channels: int = 64  # width of the convolutions at the token grid (half of it at full resolution)
    encoder_res_blocks: int = 0  # residual blocks at the token grid in the encoder (0: each token sees 12 x 12 px)
    decoder_res_blocks: int = 2  # residual blocks at the token grid in the decoder (each adds a token of context)
    codebook_size: int = 256  # K: number of codes, the image vocabulary the decoder will predict from
    code_dim: int = 16  # D: width of each code vector
    commitment: float = 0.25  # beta: weight of the commitment loss ||z - sg[e]||^2
    ema_decay: float = 0.99  # gamma: how slowly the codebook follows the encoder (EMA updates)
    dead_code_usage: float = 0.03  # restart a code whose EMA share of the tokens falls below this / K

    def __post_init__(self) -> None:
        if self.downsample not in (2, 4, 8):
            raise ValueError(f"downsample must be 2, 4 or 8 (stride-2 stages), got {self.downsample}")
        if self.image_size % self.downsample:
            raise ValueError(
                f"image_size {self.image_size} must be divisible by downsample {self.downsample}"
            )
        if self.codebook_size < 2 or self.code_dim < 1 or self.channels < 2:
            raise ValueError(
                f"need codebook_size >= 2, code_dim >= 1, channels >= 2; got {self.codebook_size}, "
                f"{self.code_dim}, {self.channels}"
            )
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")

    @property
    def grid_size(self) -> int:
        """Tokens along each side of the token grid: ``image_size // downsample``."""
        return self.image_size // self.downsample

    @property
    def num_tokens(self) -> int:
        """Tokens per image, ``grid_size ** 2``: the length of an image as a token sequence."""
        return self.grid_size**2


CONDITIONINGS: tuple[str, ...] = ("cross-attention", "single-stream", "joint", "mmdit", "adaln", "layerwise", "none")
"""Ways the decoder can read the caption (``DecoderConfig.conditioning``), each built by
``build_decoder``:

- ``"cross-attention"``: every block's image tokens ask the encoded caption (``decoder.py``);
- ``"single-stream"``: caption and image in one causal sequence, DALL-E 1 (``single_stream.py``);
- ``"joint"``: one softmax over ``[caption ; image prefix]`` per block, the caption fixed (``joint.py``);
- ``"mmdit"``: joint attention with per-modality weights, the caption updated in every block,
  Stable Diffusion 3's MM-DiT as far as a causal model allows (``mmdit.py``);
- ``"adaln"``: no attention to the words: a pooled caption vector scales and shifts every
  LayerNorm (DiT's adaLN; ``adaln.py``);
- ``"layerwise"``: cross-attention whose block ``l`` reads text-encoder layer ``l`` (``layerwise.py``);
- ``"none"``: the ablation, the caption never reaches the image tokens.
"""
TOKEN_SHIFT_CONDITIONINGS: tuple[str, ...] = ("cross-attention", "single-stream", "layerwise", "none")
"""The designs that take ``DecoderConfig(token_shift=True)``: those built from ``decoder.DecoderBlock``."""


@dataclass
class DecoderConfig:
    """The text-to-image-token model: a text encoder, and a causal decoder over image tokens
    that reads the encoded caption the way ``conditioning`` names (default: cross-attention in
    every block)."""

    vocab_size: int = 25  # caption words including <pad> (id 0); the null caption's token is id vocab_size
    max_text_len: int = 8  # longest caption, in words (both caption tiers have at most 8)
    codebook_size: int = 256  # image tokens the decoder predicts from: the tokenizer's K; id K is <start>
    num_image_tokens: int = 64  # tokens per image (an 8 x 8 grid), generated in raster order
    d_model: int = 128  # width of every token vector, text and image
    num_heads: int = 4  # attention heads in every attention layer (head_dim = d_model / num_heads)
    text_layers: int = 4  # transformer layers of the text encoder
    layers: int = 4  # decoder blocks (causal self-attention, cross-attention, MLP)
    mlp_ratio: int = 4  # MLP hidden width = mlp_ratio * d_model
    dropout: float = 0.0  # dropout on attention weights and MLP outputs
    conditioning: str = "cross-attention"  # how text reaches the image: one of CONDITIONINGS (above)
    token_shift: bool = False  # image tokens borrow channels from the tokens above and left (token_shift.py)
    caption_dropout: float = 0.1  # share of training captions replaced by the null caption (for guidance)
    held_out: str = "green triangle,blue circle,magenta square"  # colour-shape pairs never trained on

    def __post_init__(self) -> None:
        if self.d_model % self.num_heads:
            raise ValueError(f"d_model {self.d_model} must be divisible by num_heads {self.num_heads}")
        if self.conditioning not in CONDITIONINGS:
            raise ValueError(f"conditioning must be one of {CONDITIONINGS}, got {self.conditioning!r}")
        if self.token_shift:
            if self.conditioning not in TOKEN_SHIFT_CONDITIONINGS:
                raise ValueError(
                    f"token_shift is built for conditioning {TOKEN_SHIFT_CONDITIONINGS} (the designs whose blocks are "
                    f"decoder.DecoderBlock), got {self.conditioning!r}"
                )
            if self.d_model % 4:
                raise ValueError(f"token_shift splits the channels in quarters: d_model must be divisible by 4, got {self.d_model}")
            from crossmodal_edu.dalle.token_shift import grid_width

            grid_width(self.num_image_tokens)  # raises unless the image tokens form a square grid
        if not 0.0 <= self.caption_dropout < 1.0:
            raise ValueError(f"caption_dropout must be in [0, 1), got {self.caption_dropout}")
        self.held_out_pairs  # noqa: B018 -- validates the string

    @property
    def held_out_pairs(self) -> tuple[tuple[str, str], ...]:
        """``held_out`` as ``(colour, shape)`` pairs, e.g. ``(("green", "triangle"), ...)``."""
        from crossmodal_edu.world.scenes import COLOURS, SHAPES

        pairs = []
        for item in filter(None, (part.strip() for part in self.held_out.split(","))):
            words = item.split()
            if len(words) != 2 or words[0] not in COLOURS or words[1] not in SHAPES:
                raise ValueError(
                    f"held_out must be comma-separated 'colour shape' pairs such as 'green triangle', "
                    f"got {item!r} (colours {list(COLOURS)}, shapes {list(SHAPES)})"
                )
            pairs.append((words[0], words[1]))
        return tuple(pairs)

    @property
    def null_id(self) -> int:
        """Text token id of the null caption (no caption), learned like any word."""
        return self.vocab_size

    @property
    def start_id(self) -> int:
        """Image token id of ``<start>``, the input at the first position."""
        return self.codebook_size


@dataclass
class TrainConfig:
    """How long and how to train (the tokenizer now, the decoder later)."""

    steps: int = 3000  # optimiser steps to train for (stops earlier if minutes runs out)
    minutes: float | None = None  # wall-clock budget; None = only the step count limits training
    batch_size: int = 32  # images per step
    lr: float = 3e-3  # peak learning rate of AdamW
    warmup_steps: int = 100  # linear warm-up, then cosine decay to lr / 10 at `steps`
    weight_decay: float = 0.0  # AdamW weight decay
    two_object_fraction: float = 0.5  # share of each batch drawn from two-object (tier-2) scenes
    seed: int = 0  # seeds the weights, every batch and every codebook restart
    checkpoint_every: int = 500  # steps between checkpoints (one is always written at the end)
    device: str | None = None  # "cuda", "mps", "cpu"; None = the fastest available

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.checkpoint_every < 1:
            raise ValueError(
                f"steps, batch_size and checkpoint_every must be >= 1, got {self.steps}, "
                f"{self.batch_size}, {self.checkpoint_every}"
            )
        if not 0.0 <= self.two_object_fraction <= 1.0:
            raise ValueError(f"two_object_fraction must be in [0, 1], got {self.two_object_fraction}")


def config_to_dict(config: Any) -> dict[str, Any]:
    """A config as a plain dict, for a checkpoint."""
    return asdict(config)


def config_from_dict(cls: type[T], values: dict[str, Any]) -> T:
    """Rebuild a config from ``config_to_dict``'s output; unknown keys raise ``ValueError``."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields {unknown}: expected some of {sorted(known)}")
    return cls(**values)
