r"""Joint attention: one softmax over the caption and the image prefix, in place of a
self-attention and a separate cross-attention.

In a cross-attention decoder each image token runs two softmaxes per block: one over earlier
image tokens (self-attention), one over the words (cross-attention). Here it runs one, over
``[caption ; image prefix]``, so words and earlier image tokens compete for the same attention:

.. math::
    \operatorname{softmax}\!\Big(\frac{q\,[K_\text{text} ; K_\text{image}]^\top}{\sqrt{d_k}} + M\Big)
    [V_\text{text} ; V_\text{image}],

with the caption's keys and values from their own projection of the encoded caption
(``text_kv``) and :math:`M` from :func:`joint_attention_mask`. This keeps only one half of the joint
attention of Stable Diffusion 3's MM-DiT (Esser et al. 2024, "Scaling Rectified Flow
Transformers for High-Resolution Image Synthesis"): there the caption tokens also ask the image
tokens, and the caption stream is updated in every block with weights of its own
(``crossmodal_edu.dalle.mmdit`` goes that far); here image tokens ask and the encoded caption only
answers. Discussed in notebooks/06_text_to_image.ipynb.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from crossmodal_edu._checks import describe
from crossmodal_edu.dalle.config import DecoderConfig
from crossmodal_edu.dalle.decoder import MLP, ImageTokenDecoder


def joint_attention_mask(context_mask: torch.Tensor, num_image_tokens: int) -> torch.Tensor:
    """Who may attend to whom in one sequence ``[caption (L) ; image tokens (T)]``:
    ``context_mask`` ``(B, L)`` -> ``mask`` ``(B, L + T, L + T)``, True = may attend.

    - the caption's rows see the real words only (never an image token: in a model that draws
      one token at a time, those are the future), and each word itself, so that no row is
      empty even for a caption of padding only;
    - image token ``i``'s row sees the real words and image tokens ``0..i`` (causal).

    Padded words are never a key. The joint design uses the image rows ``mask[:, L:]``;
    the MM-DiT design uses all of it.
    """
    if context_mask.ndim != 2 or context_mask.dtype != torch.bool:
        raise ValueError(f"context_mask must be a bool tensor of shape (B, L), but {describe('context_mask', context_mask)}")
    B, L = context_mask.shape
    T = num_image_tokens
    words = context_mask[:, None, :].expand(B, L + T, L).clone()  # (B, L + T, L): every row sees the real words
    words[:, :L] |= torch.eye(L, dtype=torch.bool, device=context_mask.device)  # and a word itself
    causal = torch.ones(T, T, dtype=torch.bool, device=context_mask.device).tril()  # (T, T)
    image = torch.zeros(L + T, T, dtype=torch.bool, device=context_mask.device)  # caption rows: no image key
    image[L:] = causal
    return torch.cat([words, image.expand(B, L + T, T)], dim=2)  # (B, L + T, L + T)


def attention_with_weights(
    q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, allowed: torch.Tensor, dropout_p: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """``F.scaled_dot_product_attention`` written out, to keep its weights: ``q`` ``(B, H, rows, hd)``,
    ``keys``/``values`` ``(B, H, n, hd)``, ``allowed`` ``(B, rows, n)`` (True = may attend) ->
    ``heads`` ``(B, H, rows, hd)`` and ``weights`` ``(B, H, rows, n)`` (before dropout)."""
    scores = (q @ keys.transpose(-2, -1)) / (q.shape[-1] ** 0.5)  # (B, H, rows, n)
    weights = torch.softmax(scores.masked_fill(~allowed[:, None], float("-inf")), dim=-1)
    return F.dropout(weights, dropout_p) @ values, weights


class JointBlock(nn.Module):
    r"""Pre-norm block: one joint attention over ``[caption ; image prefix]``, then an MLP.

    .. math::
        x &\leftarrow x + \operatorname{JointAttn}(\operatorname{LN}_1(x),\ \text{context}) \\
        x &\leftarrow x + \operatorname{MLP}(\operatorname{LN}_3(x))

    ``qkv`` projects the image tokens to queries, keys and values; ``text_kv`` projects the
    encoded caption to keys and values (it asks nothing).
    """

    supports_kv_cache = True

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        d = config.d_model
        self.num_heads = config.num_heads
        self.dropout = config.dropout
        self.norm1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.text_kv = nn.Linear(d, 2 * d)
        self.out = nn.Linear(d, d)
        self.norm3 = nn.LayerNorm(d)
        self.mlp = MLP(d, config.mlp_ratio, config.dropout)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor,
        context_mask: torch.Tensor,
        need_weights: bool = False,
        cache: dict[str, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``x`` ``(B, T, d_model)``, ``context`` ``(B, L, d_model)``, ``context_mask`` ``(B, L)``
        -> ``(B, T, d_model)`` and, with ``need_weights``, the words' part of the one softmax
        ``(B, num_heads, T, L)`` (else None). Each row of it sums to the share of that image
        token's attention that went to the caption at all; the rest went to earlier image tokens.

        ``cache`` (sampling): the caption's keys and values, computed on the first call, and the
        image tokens' keys and values so far; once it is filled, feed one token at a time.
        """
        B, T, d = x.shape
        H = self.num_heads
        q, k, v = self.qkv(self.norm1(x)).view(B, T, 3, H, d // H).permute(2, 0, 3, 1, 4)  # each (B, H, T, head_dim)
        if cache is not None and "text_k" in cache:
            text_k, text_v = cache["text_k"], cache["text_v"]
        else:
            L = context.shape[1]
            text_k, text_v = self.text_kv(context).view(B, L, 2, H, d // H).permute(2, 0, 3, 1, 4)  # (B, H, L, head_dim)
        L = text_k.shape[2]
        if cache is not None and "k" in cache:  # one new token: it may see the words and every cached token
            if T != 1:
                raise ValueError(f"with a filled cache, feed one token at a time (got T={T})")
            k = torch.cat([cache["k"], k], dim=2)  # (B, H, t + 1, head_dim)
            v = torch.cat([cache["v"], v], dim=2)
            image_rows = torch.ones(B, 1, k.shape[2], dtype=torch.bool, device=x.device)  # (B, 1, t + 1)
            allowed = torch.cat([context_mask[:, None, :], image_rows], dim=2)  # (B, 1, L + t + 1)
        else:
            allowed = joint_attention_mask(context_mask, T)[:, L:]  # (B, T, L + T): the image rows
        if cache is not None:
            cache.update(text_k=text_k, text_v=text_v, k=k, v=v)
        dropout_p = self.dropout if self.training else 0.0
        keys, values = torch.cat([text_k, k], dim=2), torch.cat([text_v, v], dim=2)  # (B, H, L + t, head_dim)
        text_weights = None
        if need_weights:
            heads, weights = attention_with_weights(q, keys, values, allowed, dropout_p)  # (B, H, T, L + t)
            text_weights = weights[..., :L]  # (B, H, T, L)
        else:
            heads = F.scaled_dot_product_attention(q, keys, values, attn_mask=allowed[:, None], dropout_p=dropout_p)
        x = x + self.out(heads.transpose(1, 2).reshape(B, T, d))  # (B, T, d_model)
        return x + self.mlp(self.norm3(x)), text_weights


class JointDecoder(ImageTokenDecoder):
    """:class:`~crossmodal_edu.dalle.decoder.ImageTokenDecoder` whose blocks are
    :class:`JointBlock`s: the same text encoder, embeddings, head and data flow."""

    conditionings = ("joint",)

    def make_block(self, config: DecoderConfig, index: int) -> nn.Module:
        return JointBlock(config)
