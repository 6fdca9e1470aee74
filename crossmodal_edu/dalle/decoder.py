r"""The text-to-image model of the miniature DALL-E: a text encoder, and a causal transformer over
image tokens whose every block reads the caption through cross-attention.

Data flows top to bottom through this file::

    text_tokens (B, L) --TextEncoder--> context (B, L, d_model)
                                              |  keys and values
    <start>, image_tokens[:t] (B, t+1) --> DecoderBlock x layers --> logits (B, t+1, K)
                                   causal self-attention: image tokens look back at image tokens
                                   cross-attention:       image tokens (queries) ask, text answers
                                   MLP

The logits at position ``i`` are the model's guess for image token ``i`` given the caption and
tokens ``0..i-1``. Cross-attention is the course's ``MultiHeadCrossAttention`` (lesson 03), so
its weights (B, num_heads, Lq, Lk) say, for every image token, which caption words it read.

For classifier-free guidance the model also learns what to draw *without* a caption: during
training a share of captions (``caption_dropout``) is replaced by the **null caption**, a
single learned token ``null_id`` whose ``context_mask`` is ``[True, False, ..., False]``.
Masking every text key instead would leave the cross-attention rows with nothing to attend to.

The other ways text can enter the decoder (one causal stream, joint attention, MM-DiT, adaptive
LayerNorm, layerwise cross-attention) live in modules of their own beside this one, and
:func:`build_decoder` builds any of them from ``DecoderConfig.conditioning``.
Derived in notebooks/06_text_to_image.ipynb.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from crossmodal_edu._checks import describe
from crossmodal_edu.dalle.config import DecoderConfig
from crossmodal_edu.dalle.token_shift import grid_width, shift_with_cache
from crossmodal_edu.torch_attention import MultiHeadCrossAttention


def null_captions(batch_size: int, config: DecoderConfig, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """``batch_size`` null captions: ``text_tokens`` ``(B, L)`` = ``[null_id, pad, ..., pad]``
    and ``context_mask`` ``(B, L)`` = ``[True, False, ..., False]``."""
    text_tokens = torch.zeros(batch_size, config.max_text_len, dtype=torch.long, device=device)  # (B, L)
    text_tokens[:, 0] = config.null_id
    context_mask = torch.zeros(batch_size, config.max_text_len, dtype=torch.bool, device=device)  # (B, L)
    context_mask[:, 0] = True
    return text_tokens, context_mask


def drop_captions(
    text_tokens: torch.Tensor,
    context_mask: torch.Tensor,
    drop: torch.Tensor,
    config: DecoderConfig,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace the captions where ``drop`` ``(B,)`` is True by the null caption (caption dropout).
    Returns new ``(text_tokens, context_mask)``; the inputs are not modified."""
    null_tokens, null_mask = null_captions(len(text_tokens), config, text_tokens.device)
    keep = ~drop[:, None]  # (B, 1)
    return torch.where(keep, text_tokens, null_tokens), torch.where(keep, context_mask, null_mask)


class MLP(nn.Sequential):
    """``Linear -> GELU -> Linear -> Dropout``, ``mlp_ratio * d_model`` wide in the middle."""

    def __init__(self, d_model: int, mlp_ratio: int, dropout: float) -> None:
        super().__init__(
            nn.Linear(d_model, mlp_ratio * d_model),
            nn.GELU(),
            nn.Linear(mlp_ratio * d_model, d_model),
            nn.Dropout(dropout),
        )


class TextEncoderLayer(nn.Module):
    r"""Pre-norm transformer encoder layer over the caption.

    Self-attention is cross-attention whose context is the sequence itself, so it reuses
    ``MultiHeadCrossAttention`` with ``context = x``: every word may read every real word.

    .. math:: h \leftarrow h + \operatorname{Attn}(\operatorname{LN}(h), \operatorname{LN}(h)),\qquad
              h \leftarrow h + \operatorname{MLP}(\operatorname{LN}(h))
    """

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        d = config.d_model
        self.norm1 = nn.LayerNorm(d)
        self.attention = MultiHeadCrossAttention(d, d, config.num_heads, dropout=config.dropout)
        self.norm2 = nn.LayerNorm(d)
        self.mlp = MLP(d, config.mlp_ratio, config.dropout)

    def forward(self, h: torch.Tensor, context_mask: torch.Tensor) -> torch.Tensor:
        """``h`` ``(B, L, d_model)``, ``context_mask`` ``(B, L)`` -> ``(B, L, d_model)``."""
        normed = self.norm1(h)
        h = h + self.attention(normed, normed, context_mask)  # (B, L, d_model)
        return h + self.mlp(self.norm2(h))


class TextEncoder(nn.Module):
    """Caption ``text_tokens`` ``(B, L)`` -> ``context`` ``(B, L, d_model)``: word and position
    embeddings, ``text_layers`` encoder layers, a final LayerNorm."""

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(config.vocab_size + 1, config.d_model)  # +1: the null token
        self.position_embedding = nn.Embedding(config.max_text_len, config.d_model)
        self.layers = nn.ModuleList(TextEncoderLayer(config) for _ in range(config.text_layers))
        self.norm = nn.LayerNorm(config.d_model)

    def forward(self, text_tokens: torch.Tensor, context_mask: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(text_tokens.shape[1], device=text_tokens.device)  # (L,)
        h = self.token_embedding(text_tokens) + self.position_embedding(positions)  # (B, L, d_model)
        for layer in self.layers:
            h = layer(h, context_mask)
        return self.norm(h)  # (B, L, d_model)


class CausalSelfAttention(nn.Module):
    r"""Multi-head self-attention in which token ``i`` sees tokens ``0..i`` only:
    :math:`\operatorname{softmax}(QK^\top/\sqrt{d_k} + M)V` with :math:`M_{ij} = -\infty` for
    :math:`j > i` (lesson 01's ``causal_mask``). ``F.scaled_dot_product_attention`` with
    ``is_causal=True`` builds that mask itself."""

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        self.num_heads = config.num_heads
        self.dropout = config.dropout
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model)
        self.out = nn.Linear(config.d_model, config.d_model)

    def forward(self, x: torch.Tensor, cache: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """``x`` ``(B, T, d_model)`` -> ``(B, T, d_model)``.

        ``cache`` (sampling only): a dict that keeps the keys and values of the tokens seen so
        far, so each new token costs one row of attention instead of a pass over the prefix.
        Either the cache is empty (any ``T``: the tokens attend causally among themselves) or
        ``T == 1`` (the new token attends to every cached token and itself: no mask needed).
        """
        B, T, d = x.shape
        H = self.num_heads
        q, k, v = self.qkv(x).view(B, T, 3, H, d // H).permute(2, 0, 3, 1, 4)  # each (B, H, T, head_dim)
        causal = True
        if cache is not None:
            if "k" in cache:
                if T != 1:
                    raise ValueError(f"with a filled cache, feed one token at a time (got T={T})")
                k = torch.cat([cache["k"], k], dim=2)  # (B, H, t + 1, head_dim)
                v = torch.cat([cache["v"], v], dim=2)
                causal = False  # one query, the newest token: it may see everything cached
            cache["k"], cache["v"] = k, v
        dropout_p = self.dropout if self.training else 0.0
        heads = F.scaled_dot_product_attention(q, k, v, is_causal=causal, dropout_p=dropout_p)  # (B, H, T, head_dim)
        return self.out(heads.transpose(1, 2).reshape(B, T, d))  # (B, T, d_model)


def cached_cross_attention(
    attention: MultiHeadCrossAttention,
    x: torch.Tensor,
    context: torch.Tensor,
    context_mask: torch.Tensor,
    cache: dict[str, torch.Tensor],
) -> torch.Tensor:
    r"""``attention(x, context, context_mask)`` for sampling, with the caption's keys and values
    computed on the first call and kept in ``cache`` (``"context_k"``, ``"context_v"``).

    The caption does not change while an image is drawn, so :math:`K = \text{context}\,W^K`
    and :math:`V = \text{context}\,W^V` are the same at all 64 steps: computing them once
    leaves each step one query row, :math:`\operatorname{softmax}(q K^\top/\sqrt{d_k} + M) V`.
    ``x`` ``(B, T, d_model)`` (``T = 1`` after the first step), ``context`` ``(B, L, d_model)``,
    ``context_mask`` ``(B, L)`` -> ``(B, T, d_model)``; equal to the uncached call (a test checks it).
    Eval mode only (no dropout), like every KV cache here.
    """
    B, T, _ = x.shape
    H, hd = attention.num_heads, attention.head_dim
    if "context_k" not in cache:
        L = context.shape[1]
        cache["context_k"] = attention.to_k(context).view(B, L, H, hd).transpose(1, 2)  # (B, H, L, head_dim)
        cache["context_v"] = attention.to_v(context).view(B, L, H, hd).transpose(1, 2)  # (B, H, L, head_dim)
    q = attention.to_q(x).view(B, T, H, hd).transpose(1, 2)  # (B, H, T, head_dim)
    has_context = context_mask.any(dim=-1)  # (B,): as MultiHeadCrossAttention, a caption of padding only gives 0
    attend = (context_mask | ~has_context[:, None])[:, None, None, :]  # (B, 1, 1, L)
    heads = F.scaled_dot_product_attention(q, cache["context_k"], cache["context_v"], attn_mask=attend)  # (B, H, T, head_dim)
    heads = heads.masked_fill(~has_context[:, None, None, None], 0.0)
    return attention.to_out(heads.transpose(1, 2).reshape(B, T, H * hd))  # (B, T, d_model)


class DecoderBlock(nn.Module):
    r"""One block of the image-token decoder (pre-norm):

    .. math::
        x &\leftarrow x + \operatorname{CausalSelfAttn}(\operatorname{LN}_1(x)) \\
        x &\leftarrow x + \operatorname{CrossAttn}(\operatorname{LN}_2(x),\ \text{context}) \\
        x &\leftarrow x + \operatorname{MLP}(\operatorname{LN}_3(x))

    With ``conditioning="none"`` (the ablation) the middle line is gone and the block cannot
    see the caption at all. With ``token_shift`` the inputs of the self-attention and the MLP,
    :math:`\operatorname{LN}_1(x)` and :math:`\operatorname{LN}_3(x)`, are first shifted
    (:func:`~crossmodal_edu.dalle.token_shift.shift_tokens`): a quarter of each image token's
    channels from the token above it, a quarter from the token to its left.

    Every block of the package's decoders has this ``forward(x, context, context_mask,
    need_weights, cache) -> (x, weights)`` and says ``supports_kv_cache = True`` when its
    ``cache`` path gives the logits of the full pass; the sampler refuses ``use_cache=True``
    for a model with any block that does not.
    """

    supports_kv_cache = True

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        d = config.d_model
        self.norm1 = nn.LayerNorm(d)
        self.self_attention = CausalSelfAttention(config)
        self.cross_attention = None
        if config.conditioning in ("cross-attention", "layerwise"):
            self.norm2 = nn.LayerNorm(d)
            self.cross_attention = MultiHeadCrossAttention(d, d, config.num_heads, dropout=config.dropout)
        self.norm3 = nn.LayerNorm(d)
        self.mlp = MLP(d, config.mlp_ratio, config.dropout)
        self.shift_width = grid_width(config.num_image_tokens) if config.token_shift else None

    def _shift(self, h: torch.Tensor, cache: dict[str, torch.Tensor] | None, key: str, text_len: int) -> torch.Tensor:
        if self.shift_width is None:
            return h
        return shift_with_cache(h, self.shift_width, text_len, cache, key)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor,
        context_mask: torch.Tensor,
        need_weights: bool = False,
        cache: dict[str, torch.Tensor] | None = None,
        text_len: int = 0,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``x`` ``(B, T, d_model)`` image tokens, ``context`` ``(B, L, d_model)`` the encoded
        caption -> ``(B, T, d_model)``, and the cross-attention ``weights`` ``(B, num_heads, T, L)``
        when ``need_weights`` (else None). ``cache`` (sampling): the self-attention's keys and
        values of earlier tokens (see :class:`CausalSelfAttention`), the caption's keys and
        values, computed once (:func:`cached_cross_attention`), and with token shift the earlier
        sub-layer inputs. ``text_len``: caption tokens at the front of ``x``'s sequence (the single
        stream's; 0 here, where position 0 is ``<start>``): token shift needs to know where the
        image grid begins."""
        x = x + self.self_attention(self._shift(self.norm1(x), cache, "shift_attention", text_len), cache)
        weights = None
        if self.cross_attention is not None:
            if need_weights:
                update, weights = self.cross_attention(self.norm2(x), context, context_mask, need_weights=True)
            elif cache is not None:
                update = cached_cross_attention(self.cross_attention, self.norm2(x), context, context_mask, cache)
            else:
                update = self.cross_attention(self.norm2(x), context, context_mask)
            x = x + update  # (B, T, d_model): what the caption adds to each image token
        return x + self.mlp(self._shift(self.norm3(x), cache, "shift_mlp", text_len)), weights


@dataclass
class DecoderOutput:
    """What :meth:`ImageTokenDecoder.forward` returns."""

    logits: torch.Tensor  # (B, T, codebook_size): position i predicts image token i
    cross_weights: list[torch.Tensor] | None  # per block (B, num_heads, T, L), with need_weights: the
    # cross-attention weights; in the joint and MM-DiT designs, the words' part of the one softmax


def build_decoder(config: DecoderConfig) -> nn.Module:
    """The untrained model that ``config.conditioning`` names (``config.CONDITIONINGS``):

    ============================  =================================================================
    ``"cross-attention"``          :class:`ImageTokenDecoder` (this module)
    ``"none"``                     :class:`ImageTokenDecoder` without cross-attention (the ablation)
    ``"single-stream"``            :class:`~crossmodal_edu.dalle.single_stream.SingleStreamDecoder`
    ``"joint"``                    :class:`~crossmodal_edu.dalle.joint.JointDecoder`
    ``"mmdit"``                    :class:`~crossmodal_edu.dalle.mmdit.MMDiTDecoder`
    ``"adaln"``                    :class:`~crossmodal_edu.dalle.adaln.AdaLNDecoder`
    ``"layerwise"``                :class:`~crossmodal_edu.dalle.layerwise.LayerwiseDecoder`
    ============================  =================================================================

    All share one interface (``encode_text``, ``decode``, ``decode_step`` with a KV cache,
    ``forward``, ``loss``), so one training loop, sampler and evaluation run every one.
    ``crossmodal_edu.dalle.designs.matched_config`` picks depths for about equal parameters.
    """
    from crossmodal_edu.dalle.adaln import AdaLNDecoder
    from crossmodal_edu.dalle.joint import JointDecoder
    from crossmodal_edu.dalle.layerwise import LayerwiseDecoder
    from crossmodal_edu.dalle.mmdit import MMDiTDecoder
    from crossmodal_edu.dalle.single_stream import SingleStreamDecoder

    designs: dict[str, type[nn.Module]] = {
        "cross-attention": ImageTokenDecoder,
        "none": ImageTokenDecoder,
        "single-stream": SingleStreamDecoder,
        "joint": JointDecoder,
        "mmdit": MMDiTDecoder,
        "adaln": AdaLNDecoder,
        "layerwise": LayerwiseDecoder,
    }
    if not isinstance(config, DecoderConfig):
        raise ValueError(f"build_decoder expects a DecoderConfig, got a {type(config).__name__}")
    return designs[config.conditioning](config)


class ImageTokenDecoder(nn.Module):
    """Caption in, image-token logits out: ``TextEncoder`` + ``layers`` ``DecoderBlock``s.

    ``forward(image_tokens, text_tokens, context_mask)``: ``image_tokens`` ``(B, t)`` are the
    tokens generated so far (``t`` from 0 to ``num_image_tokens - 1``); the decoder reads
    ``<start>`` followed by them and returns logits ``(B, t + 1, codebook_size)``, where
    position ``i`` predicts token ``i``. Training passes ``image_tokens[:, :-1]`` and compares
    the logits with all of ``image_tokens``: one pass trains every position at once.

    The joint and adaLN designs are subclasses that change only the block (:meth:`make_block`)
    and inherit this data flow; the layerwise and MM-DiT designs also change how the caption
    reaches each block (``decode``, ``decode_step``). Their shared weights keep these names.
    """

    conditionings: tuple[str, ...] = ("cross-attention", "none")  # the values of config.conditioning this class builds

    def __init__(self, config: DecoderConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or DecoderConfig()
        if config.conditioning not in self.conditionings:
            raise ValueError(
                f"{type(self).__name__} builds conditioning {self.conditionings}, got {config.conditioning!r}: "
                f"use build_decoder(config), which picks the class"
            )
        self.text_encoder = TextEncoder(config)
        self.token_embedding = nn.Embedding(config.codebook_size + 1, config.d_model)  # +1: <start>
        self.position_embedding = nn.Embedding(config.num_image_tokens, config.d_model)
        self.blocks = nn.ModuleList(self.make_block(config, i) for i in range(config.layers))
        self.norm = nn.LayerNorm(config.d_model)
        self.head = nn.Linear(config.d_model, config.codebook_size)
        self.apply(self._init_weights)

    def make_block(self, config: DecoderConfig, index: int) -> nn.Module:
        """Block ``index`` of the decoder: here a :class:`DecoderBlock`."""
        return DecoderBlock(config)

    @property
    def supports_kv_cache(self) -> bool:
        """Whether :meth:`decode_step` gives the logits of a full pass: every block says so."""
        return all(getattr(block, "supports_kv_cache", False) for block in self.blocks)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        # Small normal weights (as in GPT-2): every logit starts near 0, the loss near log K.
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def _check(self, image_tokens: torch.Tensor, text_tokens: torch.Tensor, context_mask: torch.Tensor) -> None:
        c = self.config
        if image_tokens.ndim != 2 or image_tokens.shape[1] >= c.num_image_tokens:
            raise ValueError(
                f"image_tokens must have shape (B, t) with t < {c.num_image_tokens} (the tokens so far; "
                f"training passes image_tokens[:, :-1]), but {describe('image_tokens', image_tokens)}"
            )
        if text_tokens.ndim != 2 or text_tokens.shape[1] > c.max_text_len or text_tokens.shape[0] != image_tokens.shape[0]:
            raise ValueError(
                f"text_tokens must have shape (B, L) with B = {image_tokens.shape[0]} (as image_tokens) "
                f"and L <= {c.max_text_len}, but {describe('text_tokens', text_tokens)}"
            )
        if context_mask.shape != text_tokens.shape or context_mask.dtype != torch.bool:
            raise ValueError(
                f"context_mask must be a bool tensor shaped like text_tokens {tuple(text_tokens.shape)} "
                f"(True = real word), but it has shape {tuple(context_mask.shape)} and dtype {context_mask.dtype}"
            )
        if text_tokens.numel() and not 0 <= int(text_tokens.min()) <= int(text_tokens.max()) <= c.null_id:
            raise ValueError(
                f"text_tokens must be word ids in 0..{c.null_id} (world.Vocab ids, or null_id), "
                f"got values from {int(text_tokens.min())} to {int(text_tokens.max())}"
            )

    def encode_text(self, text_tokens: torch.Tensor, context_mask: torch.Tensor) -> torch.Tensor:
        """``text_tokens`` ``(B, L)`` -> ``context`` ``(B, L, d_model)``, the keys' and values' source."""
        return self.text_encoder(text_tokens, context_mask)

    def decode(
        self,
        image_tokens: torch.Tensor,
        context: torch.Tensor,
        context_mask: torch.Tensor,
        need_weights: bool = False,
    ) -> DecoderOutput:
        """``image_tokens`` ``(B, t)`` and an encoded caption -> logits ``(B, t + 1, codebook_size)``."""
        B, t = image_tokens.shape
        start = torch.full((B, 1), self.config.start_id, dtype=torch.long, device=image_tokens.device)
        inputs = torch.cat([start, image_tokens.long()], dim=1)  # (B, T) with T = t + 1
        positions = torch.arange(t + 1, device=image_tokens.device)  # (T,)
        x = self.token_embedding(inputs) + self.position_embedding(positions)  # (B, T, d_model)
        cross_weights = [] if need_weights else None
        for block in self.blocks:
            x, weights = block(x, context, context_mask, need_weights)
            if need_weights and weights is not None:
                cross_weights.append(weights)
        return DecoderOutput(self.head(self.norm(x)), cross_weights)  # logits (B, T, codebook_size)

    def decode_step(
        self,
        previous: torch.Tensor | None,
        position: int,
        context: torch.Tensor,
        context_mask: torch.Tensor,
        caches: list[dict[str, torch.Tensor]],
    ) -> torch.Tensor:
        """The logits ``(B, codebook_size)`` for image token ``position``, given the token before
        it (``previous`` ``(B,)``; None at position 0, where the input is ``<start>``) and the
        key/value ``caches`` of the earlier positions (one dict per block, start with empty
        dicts; position 0 also stores there the caption's keys and values, which every later
        position reuses). Equal to ``decode(tokens[:, :position], ...).logits[:, -1]``, at the
        cost of one position instead of ``position + 1``; a test checks that."""
        B = context.shape[0]
        if previous is None:
            previous = torch.full((B,), self.config.start_id, dtype=torch.long, device=context.device)
        x = self.token_embedding(previous[:, None]) + self.position_embedding.weight[position]  # (B, 1, d_model)
        for block, cache in zip(self.blocks, caches):
            x, _ = block(x, context, context_mask, cache=cache)
        return self.head(self.norm(x))[:, 0]  # (B, codebook_size)

    def forward(
        self,
        image_tokens: torch.Tensor,
        text_tokens: torch.Tensor,
        context_mask: torch.Tensor,
        need_weights: bool = False,
    ) -> DecoderOutput:
        """Encode the caption, then decode: see the class docstring."""
        self._check(image_tokens, text_tokens, context_mask)
        context = self.encode_text(text_tokens, context_mask)  # (B, L, d_model)
        return self.decode(image_tokens, context, context_mask, need_weights)

    def loss(self, image_tokens: torch.Tensor, text_tokens: torch.Tensor, context_mask: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of predicting every token of ``image_tokens`` ``(B, num_image_tokens)``
        from the caption and the tokens before it (teacher forcing)."""
        logits = self(image_tokens[:, :-1], text_tokens, context_mask).logits  # (B, N, K)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), image_tokens.reshape(-1))
