"""Multi-head cross-attention in PyTorch: the GPU version of the NumPy reference.

Derived in notebooks/03_cross_attention_in_pytorch.ipynb, which rebuilds
:class:`crossmodal_edu.numpy_attention.CrossAttention` with ``nn.Linear`` layers and
checks the two against each other with :meth:`MultiHeadCrossAttention.from_numpy`.

The file reads top to bottom in the order data flows: the attention layer (projections,
then a fast path and a readable path that tests prove equal), then the pre-norm residual
block that the mini DALL-E stacks.

One convention runs through all of it: ``context_mask`` is boolean, shape ``(B, Lk)``,
**True = real token** (may be attended to). That is the opposite of
``nn.MultiheadAttention``'s ``key_padding_mask`` (True = padding): pass
``key_padding_mask=~context_mask`` there.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from crossmodal_edu._checks import describe, fmt_shape, non_finite_error, require_bool, require_real


def _is_compiling() -> bool:
    """True while ``torch.compile`` traces the code (then data-dependent Python branches
    would split the graph, so the caller takes the branch-free route)."""
    compiler = getattr(torch, "compiler", None)
    if compiler is not None and hasattr(compiler, "is_compiling"):
        return bool(compiler.is_compiling())
    return bool(torch._dynamo.is_compiling())  # torch < 2.3


def _autocast_enabled(device_type: str) -> bool:
    """Whether torch.autocast is active for this device type (which then mixes dtypes itself)."""
    try:
        return bool(torch.is_autocast_enabled(device_type))
    except TypeError:  # torch < 2.4 takes no argument and answers for CUDA only
        if device_type == "cpu":
            return bool(torch.is_autocast_cpu_enabled())
        return bool(torch.is_autocast_enabled())


def _require_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be an integer of at least 1: got {value!r}")


def _scores_overflow_error(q: torch.Tensor, k: torch.Tensor) -> ValueError:
    return ValueError(
        f"the attention scores overflowed {q.dtype} (its largest finite value is "
        f"{torch.finfo(q.dtype).max:.3g}): the largest |q| is {q.abs().max().item():.3g} and the "
        f"largest |k| is {k.abs().max().item():.3g} (after to_q and to_k). Inputs this large are "
        f"almost always a bug upstream; if they are meant, normalise x and context, or compute in "
        f"float64."
    )


class MultiHeadCrossAttention(nn.Module):
    r"""Multi-head cross-attention: queries from ``x`` (modality A), keys and values from
    ``context`` (modality B).

    For each head :math:`h` with width :math:`d_k` = ``head_dim``,

    .. math::

        Q_h = x W^Q_h,\quad K_h = \text{context}\, W^K_h,\quad V_h = \text{context}\, W^V_h,

        \text{head}_h = \operatorname{softmax}\!\Big(\frac{Q_h K_h^\top}{\sqrt{d_k}}
                        + M\Big) V_h,\qquad
        \text{out} = [\text{head}_1, \dots, \text{head}_H]\, W^O,

    with :math:`M_{ij} = 0` where key :math:`j` is a real token and :math:`-\infty` where
    it is padding. ``nn.Linear`` stores :math:`W^\top`, so ``to_q.weight`` is
    :math:`(W^Q)^\top` with shape ``(num_heads * head_dim, query_dim)``.

    Shapes: ``x`` ``(B, Lq, query_dim)``, ``context`` ``(B, Lk, context_dim)``,
    ``context_mask`` ``(B, Lk)`` bool, True = real token. Returns ``(B, Lq, query_dim)``,
    and with ``need_weights=True`` also the per-head ``weights`` ``(B, num_heads, Lq, Lk)``.

    **Two paths, one function.** ``need_weights=False`` (the default) calls
    ``F.scaled_dot_product_attention`` (SDPA), which on a GPU runs a fused kernel
    (flash, memory-efficient or cuDNN) that never stores the ``(Lq, Lk)`` matrix.
    ``need_weights=True`` computes the softmax step by step, as in the lesson, because the
    fused kernels cannot return ``weights``. Tests prove the two paths equal.

    **Masks and speed.** The flash kernel takes no ``attn_mask``: passing any mask makes
    SDPA fall back to a slower kernel (memory-efficient, cuDNN or the plain math one).
    So when ``context_mask`` is ``None`` or every entry is True, no mask is passed at
    all. Checking "every entry is True" costs one small reduction and, on a GPU, one
    host-device synchronisation per call; under ``torch.compile`` the check is skipped
    (it would split the graph) and the mask is always passed, which is correct but may
    pick the slower kernel. Drop the mask yourself (pass ``None``) for unpadded batches.
    (Measured on an H200, bf16, B=4, Lq=Lk=4096, 16 heads: any mask, even an all-True one,
    made the attention kernel 1.5x slower; see benchmarks/RESULTS.md.)

    **Rows with no context.** If every key of a batch element is padding, its query rows
    have nothing to attend to: softmax over an empty set is 0/0, which a plain softmax (and
    SDPA in older PyTorch releases and some GPU kernels) turns into NaN.
    Here such rows attend to all keys (so every number stays finite) and the result is
    replaced by zeros afterwards: their ``weights`` and their attention result (the heads,
    before ``to_out``) are exactly 0, so the output row is ``to_out.bias`` (0 with
    ``bias=False``), exactly as in the NumPy reference. No NaN appears on any path or
    dtype, in the output or in the gradients.

    **Never a silent NaN.** A NaN or inf in ``x``, or in a real token of ``context``, raises a
    ``ValueError`` naming the entry, on both paths (padding tokens may hold anything: they are
    replaced by 0 before the projections, since ``0 * inf`` would be NaN even at zero weight);
    complex inputs raise a ``TypeError``. With ``need_weights=True`` in float16/bfloat16 the
    scores and the softmax are computed in float32 (float16 overflows at 65504); if finite inputs
    are so large that the scores still overflow, a ``ValueError`` says so. These checks cost a pass
    over ``x``, ``context`` and the heads and, on a GPU, one host-device synchronisation per call;
    under ``torch.compile`` they are skipped. ``Lk = 0`` (no context at all) is treated like a fully
    padded context.

    **Dropout** (on the attention weights, as in ``nn.MultiheadAttention``) acts only in
    training mode; in eval mode the output is deterministic. The returned ``weights`` are
    the probabilities before dropout.

    Derived in notebooks/03_cross_attention_in_pytorch.ipynb.
    """

    def __init__(
        self,
        query_dim: int,
        context_dim: int,
        num_heads: int,
        head_dim: int | None = None,
        dropout: float = 0.0,
        bias: bool = True,
    ) -> None:
        super().__init__()
        for name, value in (("query_dim", query_dim), ("context_dim", context_dim), ("num_heads", num_heads)):
            _require_positive_int(name, value)
        if head_dim is not None:
            _require_positive_int("head_dim", head_dim)
        if head_dim is None:
            if query_dim % num_heads != 0:
                raise ValueError(
                    f"query_dim must be divisible by num_heads when head_dim is not given: "
                    f"query_dim={query_dim}, num_heads={num_heads}; pass head_dim explicitly"
                )
            head_dim = query_dim // num_heads
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.query_dim = query_dim
        self.context_dim = context_dim
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.dropout = dropout
        inner_dim = num_heads * head_dim
        # diffusers / Stable Diffusion names, so pretrained weights map one to one.
        self.to_q = nn.Linear(query_dim, inner_dim, bias=bias)
        self.to_k = nn.Linear(context_dim, inner_dim, bias=bias)
        self.to_v = nn.Linear(context_dim, inner_dim, bias=bias)
        self.to_out = nn.Linear(inner_dim, query_dim, bias=bias)

    def extra_repr(self) -> str:
        return (
            f"query_dim={self.query_dim}, context_dim={self.context_dim}, "
            f"num_heads={self.num_heads}, head_dim={self.head_dim}, dropout={self.dropout}"
        )

    def _check_inputs(
        self, x: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor | None
    ) -> None:
        """Raise a clear error for every mistake of shape, type, dtype or device. (Values are
        checked after the forward pass, with one synchronisation: see ``_non_finite_error``.)"""
        for name, value in (("x", x), ("context", context), ("context_mask", context_mask)):
            if value is not None and not isinstance(value, torch.Tensor):
                raise ValueError(
                    f"{name} must be a torch.Tensor, but it is a {type(value).__module__}."
                    f"{type(value).__name__}; convert it with torch.from_numpy({name}) or "
                    f"torch.as_tensor({name})"
                )
        if x.ndim != 3 or x.shape[-1] != self.query_dim:
            raise ValueError(
                f"x must have shape (B, Lq, query_dim) with query_dim={self.query_dim}, "
                f"but {describe('x', x)}"
            )
        if context.ndim != 3 or context.shape[-1] != self.context_dim:
            raise ValueError(
                f"context must have shape (B, Lk, context_dim) with "
                f"context_dim={self.context_dim}, but {describe('context', context)}"
            )
        if context.shape[0] != x.shape[0]:
            raise ValueError(
                f"x and context must share the batch size B (their first axis): "
                f"{describe('x', x)}, {describe('context', context)}"
            )
        if x.device != context.device:
            raise ValueError(f"x is on {x.device} but context is on {context.device}")
        require_real("x", x)
        require_real("context", context)
        weight = self.to_q.weight
        if not _autocast_enabled(x.device.type):
            for name, value in (("x", x), ("context", context)):
                if value.dtype != weight.dtype:
                    raise ValueError(
                        f"{name} has dtype {value.dtype} but the module's weights are "
                        f"{weight.dtype}: convert one of them, e.g. {name}.to({weight.dtype}) "
                        f"or module.to({value.dtype}), or run under torch.autocast"
                    )
        if context_mask is not None:
            expected = (context.shape[0], context.shape[1])
            if tuple(context_mask.shape) != expected:
                raise ValueError(
                    f"context_mask must have shape (B, Lk) = {fmt_shape(expected)} "
                    f"(one flag per context token, True = real token), but "
                    f"{describe('context_mask', context_mask)}"
                )
            require_bool("context_mask", context_mask, "True = real token")
            if context_mask.device != context.device:
                raise ValueError(
                    f"context_mask is on {context_mask.device} but context is on "
                    f"{context.device}"
                )

    @staticmethod
    def _non_finite_error(
        x: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor | None,
        q: torch.Tensor, k: torch.Tensor,
    ) -> ValueError:
        """The error for a non-finite result: which input was not finite, or else the overflow."""
        finite = torch.isfinite(x)
        if not bool(finite.all()):
            return non_finite_error("x", x, ~finite)
        bad = ~torch.isfinite(context)
        if context_mask is not None:
            bad &= context_mask[..., None]
        if bool(bad.any()):
            where = "" if context_mask is None else " wherever context_mask is True (padding may hold anything)"
            return non_finite_error("context", context, bad, where)
        # The inputs are finite, so a non-finite head means the scores overflowed.
        return _scores_overflow_error(q, k)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor,
        context_mask: torch.Tensor | None = None,
        need_weights: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``x`` ``(B, Lq, query_dim)``, ``context`` ``(B, Lk, context_dim)``, ``context_mask``
        ``(B, Lk)`` bool (True = real token) -> ``(B, Lq, query_dim)``, plus ``weights``
        ``(B, num_heads, Lq, Lk)`` when ``need_weights=True``."""
        self._check_inputs(x, context, context_mask)
        checked = not _is_compiling()  # data-dependent checks would split a compiled graph
        given_context = context
        if checked:
            # Padding may hold anything; select, do not multiply by zero (0 * inf is NaN even at
            # zero weight). A real token that is not finite is reported after the pass.
            finite_context = torch.isfinite(context)  # (B, Lk, context_dim)
            context = torch.where(finite_context, context, torch.zeros((), dtype=context.dtype, device=context.device))
        B, Lq, _ = x.shape
        Lk = context.shape[1]
        H, hd = self.num_heads, self.head_dim

        q = self.to_q(x).view(B, Lq, H, hd).transpose(1, 2)  # (B, num_heads, Lq, head_dim)
        k = self.to_k(context).view(B, Lk, H, hd).transpose(1, 2)  # (B, num_heads, Lk, head_dim)
        v = self.to_v(context).view(B, Lk, H, hd).transpose(1, 2)  # (B, num_heads, Lk, head_dim)

        # An all-True mask is dropped, so the kernel sees no mask and flash stays eligible.
        # (.all() syncs with the GPU; under torch.compile we skip it rather than split the graph.)
        mask_needed = context_mask is not None and (
            need_weights or _is_compiling() or not bool(context_mask.all())
        )
        attend, has_context = None, None
        if mask_needed:
            has_context = context_mask.any(dim=-1)  # (B,)
            # Batch elements with no real token attend everywhere (finite numbers), zeroed below.
            attend = context_mask | ~has_context[:, None]  # (B, Lk)
            attend = attend[:, None, None, :]  # (B, 1, 1, Lk), broadcasts over heads and queries
        dropout_p = self.dropout if self.training else 0.0

        if Lk == 0:  # no context at all: as for a fully padded one, zero weights and zero heads
            weights = q.new_zeros(B, H, Lq, 0)  # (B, num_heads, Lq, 0)
            heads = q.new_zeros(B, H, Lq, hd)  # (B, num_heads, Lq, head_dim)
        elif need_weights:
            # float16 overflows at 65504, and q . k is a sum of head_dim products: score (and take the
            # softmax) in float32 there, as the fused kernels do internally.
            low = q.dtype in (torch.float16, torch.bfloat16)
            q_s, k_s = (q.float(), k.float()) if low else (q, k)
            scores = q_s @ k_s.transpose(-2, -1) / math.sqrt(hd)  # (B, num_heads, Lq, Lk)
            if attend is not None:
                scores = scores.masked_fill(~attend, float("-inf"))
            weights = scores.softmax(dim=-1).to(v.dtype)  # (B, num_heads, Lq, Lk)
            if has_context is not None:
                weights = weights.masked_fill(~has_context[:, None, None, None], 0.0)
            dropped = F.dropout(weights, p=dropout_p) if dropout_p > 0 else weights
            heads = dropped @ v  # (B, num_heads, Lq, head_dim)
        else:
            heads = F.scaled_dot_product_attention(
                q, k, v, attn_mask=attend, dropout_p=dropout_p
            )  # (B, num_heads, Lq, head_dim)

        if has_context is not None:
            # No context, nothing to average: these rows are 0, as in the NumPy reference.
            heads = heads.masked_fill(~has_context[:, None, None, None], 0.0)
        if checked:
            real = finite_context if context_mask is None else finite_context | ~context_mask[..., None]
            if not bool(torch.isfinite(x).all() & real.all() & torch.isfinite(heads).all()):  # one sync
                raise self._non_finite_error(x, given_context, context_mask, q, k)
        heads = heads.transpose(1, 2).reshape(B, Lq, H * hd)  # (B, Lq, num_heads * head_dim)
        out = self.to_out(heads)  # (B, Lq, query_dim)
        if need_weights:
            return out, weights
        return out

    @classmethod
    def from_numpy(
        cls,
        layer: Any,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> MultiHeadCrossAttention:
        r"""Build a module holding the same weights as a NumPy
        :class:`crossmodal_edu.numpy_attention.CrossAttention`.

        NumPy uses row vectors, :math:`y = x W + b` with ``W`` ``(in, out)``; ``nn.Linear``
        computes :math:`y = x A^\top + b` with ``A`` ``(out, in)``. So
        ``to_q.weight = W_q.T`` and ``to_q.bias = b_q``, and likewise for k, v and out.
        ``dtype`` defaults to the arrays' own (float64), so the two agree to ~1e-15.

        Derived in notebooks/03_cross_attention_in_pytorch.ipynb.
        """
        num_heads = int(layer.num_heads)
        query_dim, inner_dim = layer.W_q.shape
        context_dim = layer.W_k.shape[0]
        v_inner = layer.W_v.shape[1]
        if v_inner != inner_dim:
            raise ValueError(
                f"MultiHeadCrossAttention uses one head_dim for queries, keys and values, so "
                f"W_v must have as many columns as W_q: W_q has shape "
                f"{fmt_shape(layer.W_q.shape)}, W_v has shape {fmt_shape(layer.W_v.shape)} "
                f"(build the NumPy layer with v_head_dim=None)"
            )
        has_bias = getattr(layer, "b_q", None) is not None
        module = cls(
            query_dim, context_dim, num_heads, head_dim=inner_dim // num_heads, bias=has_bias
        )
        # Cast before copying, so float64 weights never pass through float32.
        module = module.to(device=device, dtype=dtype or torch.as_tensor(layer.W_q).dtype)
        with torch.no_grad():
            for name in ("q", "k", "v", "o"):
                linear = module.to_out if name == "o" else getattr(module, f"to_{name}")
                W = torch.as_tensor(getattr(layer, f"W_{name}"))  # (in, out)
                linear.weight.copy_(W.T)  # (out, in)
                if has_bias:
                    linear.bias.copy_(torch.as_tensor(getattr(layer, f"b_{name}")))
        return module


class CrossAttentionBlock(nn.Module):
    r"""Pre-norm residual cross-attention block, optionally gated (Flamingo).

    .. math::

        x &\leftarrow x + \tanh(g_1)\,\operatorname{Attention}(\operatorname{LN}_1(x),
              \text{context}) \\
        x &\leftarrow x + \tanh(g_2)\,\operatorname{MLP}(\operatorname{LN}_2(x)),
        \qquad \operatorname{MLP}(z) = \operatorname{GELU}(z W_1 + b_1) W_2 + b_2

    With ``gated=False`` (default) both gates are 1. With ``gated=True`` the learnable
    scalars ``attn_gate`` :math:`g_1` and ``mlp_gate`` :math:`g_2` start at 0, so at
    initialisation the block is exactly the identity: inserted into a pretrained
    network, it leaves that network's output untouched until training opens the gates
    (Alayrac et al., 2022, "Flamingo"). The MLP is ``mlp_ratio * query_dim`` wide.

    Shapes: ``x`` ``(B, Lq, query_dim)``, ``context`` ``(B, Lk, context_dim)``,
    ``context_mask`` ``(B, Lk)`` bool, True = real token -> ``(B, Lq, query_dim)``.

    Derived in notebooks/03_cross_attention_in_pytorch.ipynb.
    """

    def __init__(
        self,
        query_dim: int,
        context_dim: int,
        num_heads: int,
        head_dim: int | None = None,
        mlp_ratio: int = 4,
        dropout: float = 0.0,
        bias: bool = True,
        gated: bool = False,
    ) -> None:
        super().__init__()
        self.gated = gated
        self.norm1 = nn.LayerNorm(query_dim)
        self.attention = MultiHeadCrossAttention(
            query_dim, context_dim, num_heads, head_dim=head_dim, dropout=dropout, bias=bias
        )
        self.norm2 = nn.LayerNorm(query_dim)
        self.mlp = nn.Sequential(
            nn.Linear(query_dim, mlp_ratio * query_dim, bias=bias),
            nn.GELU(),
            nn.Linear(mlp_ratio * query_dim, query_dim, bias=bias),
            nn.Dropout(dropout),
        )
        if gated:
            self.attn_gate = nn.Parameter(torch.zeros(()))
            self.mlp_gate = nn.Parameter(torch.zeros(()))

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor,
        context_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``x`` ``(B, Lq, query_dim)``, ``context`` ``(B, Lk, context_dim)``, ``context_mask``
        ``(B, Lk)`` bool -> ``(B, Lq, query_dim)``."""
        update = self.attention(self.norm1(x), context, context_mask)  # (B, Lq, query_dim)
        if self.gated:
            update = torch.tanh(self.attn_gate) * update
        x = x + update
        update = self.mlp(self.norm2(x))  # (B, Lq, query_dim)
        if self.gated:
            update = torch.tanh(self.mlp_gate) * update
        return x + update
