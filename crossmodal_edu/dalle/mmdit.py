r"""MM-DiT style: two streams, caption and image, that meet in one joint attention per block,
each with its own projections, MLP and norms, the caption stream updated in every block.

This is the block of Stable Diffusion 3 and FLUX (Esser et al. 2024, "Scaling Rectified Flow
Transformers for High-Resolution Image Synthesis"), as far as a model that draws one token at a
time allows. Per block, with :math:`c` the caption stream and :math:`x` the image stream:

.. math::
    [q_c, k_c, v_c] &= \operatorname{LN}^c_1(c)\,W^c_{qkv}, \qquad
    [q_x, k_x, v_x] = \operatorname{LN}^x_1(x)\,W^x_{qkv} \\
    [o_c ; o_x] &= \operatorname{softmax}\!\Big(\frac{[q_c ; q_x]\,[k_c ; k_x]^\top}{\sqrt{d_k}} + M\Big)\,[v_c ; v_x] \\
    c &\leftarrow c + o_c W^c_o, \quad c \leftarrow c + \operatorname{MLP}^c(\operatorname{LN}^c_2(c)) \\
    x &\leftarrow x + o_x W^x_o, \quad x \leftarrow x + \operatorname{MLP}^x(\operatorname{LN}^x_2(x))

with :math:`M` from :func:`~crossmodal_edu.dalle.joint.joint_attention_mask`. **One difference
from SD3:** there every token of both streams attends to every other, caption rows included,
because a diffusion model denoises all image tokens at once and none of them is "the future".
Here image token ``i`` is drawn before token ``i + 1`` exists, so if a caption row read image
tokens, the caption (and through it every image token) would see the future. So the caption
rows of :math:`M` see only the caption: the caption stream is a text encoder that runs beside
the image stream, block by block, and the image tokens of block ``l`` read the caption as it
is after ``l`` caption updates. The full two-way form belongs to diffusion models.

In the last block nothing reads the caption's output, so (as in SD3's last block) the caption
stream there only supplies keys and values: no caption queries, output projection or MLP.
Discussed in notebooks/06_text_to_image.ipynb.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from crossmodal_edu.dalle.config import DecoderConfig
from crossmodal_edu.dalle.decoder import MLP, DecoderOutput, ImageTokenDecoder
from crossmodal_edu.dalle.joint import attention_with_weights, joint_attention_mask


class MMDiTBlock(nn.Module):
    """One MM-DiT block (see the module docstring). ``last=True``: the caption stream only
    supplies keys and values (``context_kv``) and is not updated."""

    supports_kv_cache = True

    def __init__(self, config: DecoderConfig, last: bool = False) -> None:
        super().__init__()
        d = config.d_model
        self.num_heads = config.num_heads
        self.dropout = config.dropout
        self.last = last
        # image stream
        self.norm1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.norm2 = nn.LayerNorm(d)
        self.mlp = MLP(d, config.mlp_ratio, config.dropout)
        # caption stream: weights of its own
        self.context_norm1 = nn.LayerNorm(d)
        if last:
            self.context_kv = nn.Linear(d, 2 * d)
        else:
            self.context_qkv = nn.Linear(d, 3 * d)
            self.context_out = nn.Linear(d, d)
            self.context_norm2 = nn.LayerNorm(d)
            self.context_mlp = MLP(d, config.mlp_ratio, config.dropout)

    def _heads(self, linear: nn.Linear, h: torch.Tensor, parts: int) -> tuple[torch.Tensor, ...]:
        B, n, d = h.shape
        return tuple(linear(h).view(B, n, parts, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4))  # each (B, H, n, head_dim)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor,
        context_mask: torch.Tensor,
        cache: dict[str, torch.Tensor] | None = None,
        need_weights: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor] | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``x`` ``(B, T, d_model)`` image stream, ``context`` ``(B, L, d_model)`` caption stream,
        ``context_mask`` ``(B, L)`` -> both streams after the block (the caption unchanged in the
        last block); with ``need_weights`` (no cache), also the image rows' part of the joint
        softmax that falls on the words, ``(B, num_heads, T, L)``.

        ``cache`` (sampling): on the first call (any ``T``) the block runs in full and keeps the
        caption's keys and values and the image tokens'; after that, feed one image token at a
        time: the caption, which never reads image tokens, is not recomputed, and ``context``
        comes back as it went in (later blocks read their caption keys from their own cache).
        """
        B, T, d = x.shape
        q, k, v = self._heads(self.qkv, self.norm1(x), 3)  # each (B, H, T, head_dim)
        dropout_p = self.dropout if self.training else 0.0
        if cache is not None and "k" in cache:  # one new image token; the caption is done
            if T != 1:
                raise ValueError(f"with a filled cache, feed one token at a time (got T={T})")
            k = torch.cat([cache["k"], k], dim=2)  # (B, H, t + 1, head_dim)
            v = torch.cat([cache["v"], v], dim=2)
            cache.update(k=k, v=v)
            image_keys = torch.ones(B, 1, k.shape[2], dtype=torch.bool, device=x.device)  # (B, 1, t + 1)
            allowed = torch.cat([context_mask[:, None, :], image_keys], dim=2)  # (B, 1, L + t + 1)
            keys = torch.cat([cache["context_k"], k], dim=2)  # (B, H, L + t + 1, head_dim)
            values = torch.cat([cache["context_v"], v], dim=2)
            heads = F.scaled_dot_product_attention(q, keys, values, attn_mask=allowed[:, None])  # (B, H, 1, head_dim)
            x = x + self.out(heads.transpose(1, 2).reshape(B, T, d))
            return x + self.mlp(self.norm2(x)), context

        L = context.shape[1]
        normed = self.context_norm1(context)
        if self.last:
            context_k, context_v = self._heads(self.context_kv, normed, 2)  # (B, H, L, head_dim)
            queries, mask = q, joint_attention_mask(context_mask, T)[:, L:]  # image rows only: (B, T, L + T)
        else:
            context_q, context_k, context_v = self._heads(self.context_qkv, normed, 3)  # (B, H, L, head_dim)
            queries, mask = torch.cat([context_q, q], dim=2), joint_attention_mask(context_mask, T)  # (B, L + T, L + T)
        if cache is not None:
            cache.update(context_k=context_k, context_v=context_v, k=k, v=v)
        keys, values = torch.cat([context_k, k], dim=2), torch.cat([context_v, v], dim=2)  # (B, H, L + T, head_dim)
        if need_weights:
            heads, weights = attention_with_weights(queries, keys, values, mask, dropout_p)  # (B, H, rows, L + T)
            text_weights = weights[:, :, -T:, :L]  # image rows, word keys: (B, H, T, L)
        else:
            heads = F.scaled_dot_product_attention(queries, keys, values, attn_mask=mask[:, None], dropout_p=dropout_p)
        heads = heads.transpose(1, 2)  # (B, L + T or T, H, head_dim)
        image_heads = heads[:, -T:].reshape(B, T, d)  # (B, T, d_model)
        x = x + self.out(image_heads)
        x = x + self.mlp(self.norm2(x))
        if not self.last:
            context = context + self.context_out(heads[:, :L].reshape(B, L, d))  # (B, L, d_model)
            context = context + self.context_mlp(self.context_norm2(context))
        if need_weights:
            return x, context, text_weights
        return x, context


class MMDiTDecoder(ImageTokenDecoder):
    """Text encoder (``text_layers``, may be 0) whose output starts the caption stream, then
    ``layers`` :class:`MMDiTBlock`s over both streams, the image head on the image stream."""

    conditionings = ("mmdit",)

    def make_block(self, config: DecoderConfig, index: int) -> nn.Module:
        return MMDiTBlock(config, last=index == config.layers - 1)

    def _embed(self, tokens: torch.Tensor, positions: torch.Tensor | int) -> torch.Tensor:
        if isinstance(positions, int):
            return self.token_embedding(tokens) + self.position_embedding.weight[positions]
        return self.token_embedding(tokens) + self.position_embedding(positions)

    def decode(
        self, image_tokens: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor, need_weights: bool = False
    ) -> DecoderOutput:
        """``image_tokens`` ``(B, t)`` and the encoded caption ``(B, L, d_model)`` -> logits
        ``(B, t + 1, codebook_size)``; both streams run through every block. With ``need_weights``,
        ``cross_weights`` holds each block's image-to-word part of its joint softmax."""
        B, t = image_tokens.shape
        start = torch.full((B, 1), self.config.start_id, dtype=torch.long, device=image_tokens.device)
        inputs = torch.cat([start, image_tokens.long()], dim=1)  # (B, t + 1)
        x = self._embed(inputs, torch.arange(t + 1, device=inputs.device))  # (B, t + 1, d_model)
        text_weights = [] if need_weights else None
        for block in self.blocks:
            if need_weights:
                x, context, weights = block(x, context, context_mask, need_weights=True)
                text_weights.append(weights)
            else:
                x, context = block(x, context, context_mask)
        return DecoderOutput(self.head(self.norm(x)), text_weights)  # (B, t + 1, codebook_size)

    def decode_step(
        self,
        previous: torch.Tensor | None,
        position: int,
        context: torch.Tensor,
        context_mask: torch.Tensor,
        caches: list[dict[str, torch.Tensor]],
    ) -> torch.Tensor:
        """Logits ``(B, codebook_size)`` for image token ``position`` (see
        ``ImageTokenDecoder.decode_step``). Position 0 runs the caption stream through every
        block, once; later positions run one image token against the cached keys and values."""
        B = context.shape[0]
        if previous is None:
            previous = torch.full((B,), self.config.start_id, dtype=torch.long, device=context.device)
        x = self._embed(previous[:, None], position)  # (B, 1, d_model)
        for block, cache in zip(self.blocks, caches):
            x, context = block(x, context, context_mask, cache=cache)
        return self.head(self.norm(x))[:, 0]  # (B, codebook_size)
