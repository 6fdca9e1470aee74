r"""Cross-modal attention in NumPy: the reference every later lesson is checked against.

Modality A (``x``, the query stream) asks; modality B (``context``) answers:

.. math::

    \mathrm{Attention}(Q, K, V) = \mathrm{softmax}\!\left(\frac{Q K^\top}{\sqrt{d_k}} + M\right) V,
    \qquad Q = x W_q, \; K = \mathrm{context}\, W_k, \; V = \mathrm{context}\, W_v.

Vectors are rows (``y = x @ W + b``), as in PyTorch's ``nn.Linear`` (whose ``weight`` is ``W.T``).
Masks are boolean and **True = may attend / real token**.

Derived in notebooks/01_attention_in_numpy.ipynb.
"""

import math
from typing import Callable, Optional, Sequence

import numpy as np

from crossmodal_edu._checks import (
    describe,
    fmt_shape,
    non_finite_error,
    require_bool,
    require_finite,
    require_ndim,
    require_real,
)

__all__ = [
    "softmax",
    "scaled_dot_product_attention",
    "check_attention_inputs",
    "padding_mask",
    "causal_mask",
    "split_heads",
    "merge_heads",
    "layer_norm",
    "CrossAttention",
    "CrossAttentionBlock",
]


def _as_float(*arrays: np.ndarray, names: Sequence[str] = ()) -> list[np.ndarray]:
    """Convert to one common float dtype: keep float32/float64 as given, promote integers to float64.

    Raises a ``TypeError`` for complex or non-numeric input (``names`` name the arrays in the message).
    """
    arrays = [np.asarray(a) for a in arrays]
    for name, a in zip(names or ["input"] * len(arrays), arrays):
        require_real(name, a)
    dtype = np.result_type(*arrays)
    if not np.issubdtype(dtype, np.floating):
        dtype = np.float64
    return [a.astype(dtype, copy=False) for a in arrays]


def _scores_overflow_error(scores_dtype: np.dtype, q: np.ndarray, k: np.ndarray) -> ValueError:
    return ValueError(
        f"the scores Q K^T / sqrt(d_k) overflowed {scores_dtype} (largest finite value "
        f"{np.finfo(scores_dtype).max:.3g}): the largest |q| is {np.abs(q).max():.3g} and the largest "
        f"|k| is {np.abs(k).max():.3g}. Inputs this large are almost always a bug upstream; if they "
        f"are meant, rescale q and k (e.g. normalise each row) or compute in float64. (A softmax of "
        f"scores this large would be a hard maximum anyway.)"
    )


def _softmax_last_axis_(scores: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Turn ``scores`` into ``softmax(scores, axis=-1)`` in place, given its row maxima ``m``.

    ``m`` ``(..., 1)`` must be finite or ``-inf`` (an all ``-inf`` row, which becomes all zeros).
    Three passes over ``scores`` and no temporary of its size: the shift, the exponential, the
    division. ``m`` is modified.
    """
    # An all -inf row has m = -inf and x - m = NaN; shifting it by 0 keeps it at exp(-inf) = 0.
    m[np.isneginf(m)] = 0.0
    # Far-below-max logits underflow to exactly 0 (or, below -1e308, to -inf): the right weight.
    with np.errstate(under="ignore", over="ignore"):
        scores -= m
        np.exp(scores, out=scores)
    total = scores.sum(axis=-1, keepdims=True)  # (..., 1)
    # total is 0 only for an all -inf row, whose entries are all 0: dividing by 1 leaves zeros.
    total[total == 0.0] = 1.0
    scores /= total
    return scores


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    r"""Numerically stable softmax along ``axis``.

    .. math::

        \mathrm{softmax}(x)_j = \frac{e^{x_j - m}}{\sum_i e^{x_i - m}}, \qquad m = \max_i x_i

    Subtracting the maximum changes nothing mathematically (softmax is shift invariant) but keeps
    every exponent at most 0, so logits of ``1e4`` do not overflow. A slice that is entirely
    ``-inf`` (a query whose keys are all masked) gives all zeros, not NaN.

    ``-inf`` entries are allowed (they get weight exactly 0); NaN and ``+inf`` raise a
    ``ValueError`` (``+inf - +inf`` has no value), and so do complex inputs (``TypeError``). An empty
    ``axis`` gives an empty result: there is nothing to normalise.

    Shapes: ``x`` any shape -> same shape. Float dtypes are kept; integers become float64.

    Derived in notebooks/01_attention_in_numpy.ipynb.
    """
    (x,) = _as_float(x, names=("x",))
    if x.ndim == 0:
        raise ValueError("x must have at least one axis to take the softmax over: x is a scalar")
    moved = np.moveaxis(x, axis, -1)  # a view; the softmax runs along its last axis
    if moved.shape[-1] == 0:
        return x.copy()
    m = moved.max(axis=-1, keepdims=True)  # (..., 1)
    if not np.all(np.isfinite(m) | np.isneginf(m)):
        bad = np.isnan(x) | np.isposinf(x)
        raise non_finite_error("x", x, bad, " or -inf (-inf gets weight 0)")
    out = _softmax_last_axis_(moved.copy(), m)
    return np.moveaxis(out, -1, axis)


def _combine_masks(
    mask: Optional[np.ndarray], context_mask: Optional[np.ndarray], scores_shape: tuple[int, ...]
) -> Optional[np.ndarray]:
    """One boolean mask broadcastable to ``scores_shape`` from a full ``mask`` and a keys-only
    ``context_mask`` (either may be None), raising a ``ValueError`` that names the shapes."""
    if mask is not None:
        mask = np.asarray(mask)
        require_bool("mask", mask)
        try:
            fits = np.broadcast_shapes(mask.shape, scores_shape) == scores_shape
        except ValueError:
            fits = False
        if not fits:
            raise ValueError(
                "mask must be broadcastable to the scores shape (..., Lq, Lk): "
                f"mask has shape {fmt_shape(mask.shape)}, scores have shape {fmt_shape(scores_shape)}"
                + (
                    ". A keys-only padding mask of shape (B, Lk) goes in context_mask=, not mask="
                    if mask.ndim == 2 and mask.shape[-1] == scores_shape[-1]
                    else ""
                )
            )
    if context_mask is None:
        return mask
    context_mask = np.asarray(context_mask)
    require_bool("context_mask", context_mask, "True = real token")
    *lead, Lq, Lk = scores_shape
    batch = context_mask.shape[:-1]
    if (
        context_mask.ndim < 1
        or context_mask.shape[-1] != Lk
        or len(batch) > len(lead)
        or any(b not in (1, n) for b, n in zip(batch, lead))
    ):
        raise ValueError(
            "context_mask must have shape (B, Lk) (one flag per key, True = real token), its "
            "leading axes matching the first leading axes of the scores: context_mask has shape "
            f"{fmt_shape(context_mask.shape)}, scores have shape {fmt_shape(scores_shape)}"
        )
    # (B, Lk) -> (B, 1, ..., 1, Lk): the same keys are real for every head and every query.
    keys = context_mask.reshape(*batch, *([1] * (len(lead) - len(batch))), 1, Lk)
    return keys if mask is None else mask & keys


def _reduce_any_to(flags: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``np.any`` over the axes along which ``shape`` was broadcast to ``flags.shape``."""
    extra = flags.ndim - len(shape)
    flags = flags.any(axis=tuple(range(extra))) if extra else flags
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and flags.shape[i] != 1)
    return flags.any(axis=axes, keepdims=True) if axes else flags


def _finite_where_used(
    name: str, a: np.ndarray, used: Optional[Callable[[], np.ndarray]], role: str
) -> np.ndarray:
    """Return ``a`` if it is finite; raise if a row that reaches the output is not; otherwise a copy
    with the unused (masked) non-finite entries set to 0, so that nothing downstream multiplies an
    inf by a zero weight. ``used()`` ``(..., L)`` says which rows of ``a`` ``(..., L, d)`` are used;
    it is called only when ``a`` has a non-finite entry (it costs a pass over the mask)."""
    finite = np.isfinite(a)
    if finite.all():
        return a
    if used is None:
        raise non_finite_error(name, a, ~finite)
    used_rows = _reduce_any_to(used(), a.shape[:-1])  # (..., L) in a's own (unbroadcast) shape
    bad = ~finite & used_rows[..., None]
    if bad.any():
        raise non_finite_error(name, a, bad, f" wherever {role} (masked positions may hold anything)")
    return np.where(finite, a, a.dtype.type(0))


def check_attention_inputs(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    mask: Optional[np.ndarray] = None,
    context_mask: Optional[np.ndarray] = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, Optional[np.ndarray], tuple[int, ...]]:
    """Validate the inputs of scaled dot-product attention, raising a ``ValueError`` that names
    the shapes for every mistake; return q, k, v in one float dtype, the mask as a boolean array
    (or None; ``context_mask`` folded into it), and the shape the scores will have, ``(..., Lq, Lk)``.

    Raises a ``TypeError`` for complex or non-numeric inputs, a ``ValueError`` for ``d_k = 0`` and
    for a NaN or inf in q, k or v wherever it could reach the output. Entries that the mask hides
    completely (a key no query may attend to, a query that may attend to no key) may hold anything:
    they come back replaced by 0, so that no ``0 * inf`` can turn into NaN.

    Shared by every NumPy attention in the package, so they all reject the same mistakes with
    the same words.
    """
    q, k, v = _as_float(q, k, v, names=("q", "k", "v"))
    require_ndim("q", q, 2, "(..., Lq, d_k)")
    require_ndim("k", k, 2, "(..., Lk, d_k)")
    require_ndim("v", v, 2, "(..., Lk, d_v)")
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(
            f"q and k must share d_k (their last axis): {describe('q', q)}, {describe('k', k)}"
        )
    if q.shape[-1] == 0:
        raise ValueError(
            "d_k (the last axis of q and k) must be at least 1: the scores divide by sqrt(d_k), "
            f"and a dot product of empty vectors says nothing about a key: {describe('q', q)}, "
            f"{describe('k', k)}"
        )
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(
            "k and v must share Lk (their second-to-last axis, one value per key): "
            f"{describe('k', k)}, {describe('v', v)}"
        )
    try:
        lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    except ValueError:
        raise ValueError(
            "the leading (batch, head) dims of q, k and v must be equal or broadcast: "
            f"{describe('q', q)}, {describe('k', k)}, {describe('v', v)}"
        ) from None
    scores_shape = (*lead, q.shape[-2], k.shape[-2])
    mask = _combine_masks(mask, context_mask, scores_shape)
    full = None if mask is None else np.broadcast_to(mask, scores_shape)  # a view, no copy
    rows, keys = None, None
    if full is not None:
        rows, keys = (lambda: full.any(axis=-1)), (lambda: full.any(axis=-2))  # (..., Lq), (..., Lk)
    q = _finite_where_used("q", q, rows, "the query may attend to a key")
    k = _finite_where_used("k", k, keys, "a query may attend to the key")
    v = _finite_where_used("v", v, keys, "a query may attend to the key")
    return q, k, v, mask, scores_shape


def scaled_dot_product_attention(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    mask: Optional[np.ndarray] = None,
    context_mask: Optional[np.ndarray] = None,
) -> tuple[np.ndarray, np.ndarray]:
    r"""Scaled dot-product attention: each query takes a weighted average of the values.

    .. math::

        \mathrm{weights} = \mathrm{softmax}\!\left(\frac{Q K^\top}{\sqrt{d_k}} + M\right),
        \qquad \mathrm{out} = \mathrm{weights}\, V,
        \qquad M_{ij} = \begin{cases} 0 & \text{mask}_{ij} = \text{True} \\
                                      -\infty & \text{mask}_{ij} = \text{False} \end{cases}

    Shapes:
        q: ``(..., Lq, d_k)``; k: ``(..., Lk, d_k)``; v: ``(..., Lk, d_v)``.
        mask: optional boolean, broadcastable to ``(..., Lq, Lk)``. **True = may attend**, the
        convention of ``torch.nn.functional.scaled_dot_product_attention``. Beware that
        ``torch.nn.MultiheadAttention``'s ``key_padding_mask`` uses the opposite one
        (True = ignore): pass it ``~context_mask``.
        context_mask: optional boolean ``(B, Lk)``, **True = real token**: which keys exist, the
        same for every query (and every head). Its first axis is the batch, the first leading axis
        of the scores. Use it for padding rather than ``mask``: a ``(B, Lk)`` array passed as
        ``mask`` is *legal* broadcasting, but it lines up with the scores' last two axes
        ``(Lq, Lk)``, so whenever ``B == Lq`` it silently masks **queries'** rows by batch
        element, not each batch element's keys (``mask=context_mask[:, None, :]``, shape
        ``(B, 1, Lk)``, is the correct full mask). Both may be given; a key must pass both.
        Returns ``(out, weights)``: out ``(..., Lq, d_v)``, weights ``(..., Lq, Lk)``.

    Leading (batch, head) dims broadcast as in ``np.matmul``. A query whose keys are all masked
    gets all-zero weights and a zero output (a plain softmax gives NaN there, as do some
    PyTorch versions and kernels); so does every query when there are no keys at all (``Lk = 0``).
    Float dtypes are kept.

    Never a silent NaN: a NaN or inf in q, k or v where it can reach the output raises a
    ``ValueError`` (a masked key's k and v, and a fully masked query's q, may hold anything: they
    never reach the output), as does ``d_k = 0``, and complex inputs raise a ``TypeError``. If
    finite inputs are so large that the scores overflow the dtype (``|q|, |k| ~ 1e160`` in
    float64, ``~ 1e20`` in float32), a ``ValueError`` says so rather than returning NaN:
    rescaling the inputs is the honest fix, and hiding it here would bury the lesson's equation.

    The implementation is the equation, step by step, on one ``(..., Lq, Lk)`` array that is
    overwritten in place (scores, then exponentials, then weights): no other array of that size is
    allocated. On one CPU thread it takes 1.1-2 times its two matrix products, most of the
    difference being the exponentials (benchmarks/attention_blas_ratio.py, benchmarks/RESULTS.md).

    Derived in notebooks/01_attention_in_numpy.ipynb.
    """
    q, k, v, mask, scores_shape = check_attention_inputs(q, k, v, mask, context_mask)
    *lead, Lq, Lk = scores_shape
    if Lk == 0:  # nothing to attend to: as for a fully masked query, zero weights, zero output
        return np.zeros((*lead, Lq, v.shape[-1]), q.dtype), np.zeros(scores_shape, q.dtype)
    d_k = q.shape[-1]
    # Scaling q (Lq x d_k numbers) rather than the scores (Lq x Lk) saves a pass over the scores.
    with np.errstate(over="ignore"):  # an overflow is detected below and named, not warned about
        scores = (q * q.dtype.type(1.0 / math.sqrt(d_k))) @ np.swapaxes(k, -1, -2)  # (..., Lq, Lk)
    if mask is not None:
        # -inf becomes exactly 0 after softmax: masked keys get exactly zero weight.
        np.copyto(scores, -np.inf, where=~mask)  # (..., Lq, Lk), in place
    m = scores.max(axis=-1, keepdims=True)  # (..., Lq, 1)
    _check_row_maxima(m, mask, scores_shape, q, k)
    weights = _softmax_last_axis_(scores, m)  # (..., Lq, Lk): the same array, now the weights
    out = weights @ v  # (..., Lq, d_v)
    if not np.isfinite(out).all():  # weights are at most 1, so only huge values can overflow
        raise ValueError(
            f"the output weights @ v overflowed {out.dtype}: the largest |v| is "
            f"{np.abs(v).max():.3g}; rescale v or compute in float64"
        )
    return out, weights


def _check_row_maxima(
    m: np.ndarray, mask: Optional[np.ndarray], scores_shape: tuple[int, ...], q: np.ndarray, k: np.ndarray
) -> None:
    """Raise if the scores overflowed: a row maximum that is NaN or +inf (the inputs are finite, so
    only an overflow makes one), or -inf in a row that has a key it may attend to (every score
    overflowed to -inf). Costs a pass over ``m`` ``(..., Lq, 1)``, and over the mask only if some
    row maximum is -inf."""
    if not np.all(np.isfinite(m) | np.isneginf(m)):
        raise _scores_overflow_error(m.dtype, q, k)
    empty = np.isneginf(m[..., 0])  # (..., Lq)
    if empty.any():
        attendable = (
            np.ones(scores_shape[:-1], bool) if mask is None
            else np.broadcast_to(mask, scores_shape).any(axis=-1)
        )  # (..., Lq)
        if (empty & attendable).any():
            raise _scores_overflow_error(m.dtype, q, k)


def padding_mask(lengths: Sequence[int], max_len: Optional[int] = None) -> np.ndarray:
    r"""Boolean mask of real tokens for a batch of padded sequences.

    .. math::

        \mathrm{mask}_{b, j} = \big(j < \mathrm{lengths}_b\big)

    Shapes: lengths ``(B,)`` non-negative ints -> mask ``(B, max_len)`` bool, **True = real token**
    (use it as ``context_mask``). ``max_len`` defaults to ``max(lengths)``.

    Derived in notebooks/01_attention_in_numpy.ipynb.
    """
    lengths = np.asarray(lengths)
    if lengths.ndim != 1:
        raise ValueError(
            f"lengths must have shape (B,), one length per sequence: lengths has shape "
            f"{fmt_shape(lengths.shape)}"
        )
    if lengths.size and not np.issubdtype(lengths.dtype, np.integer):
        raise ValueError(f"lengths must be integers, but they have dtype {lengths.dtype}")
    if np.any(lengths < 0):
        raise ValueError(f"lengths must be non-negative: got {lengths.tolist()}")
    if max_len is None:
        max_len = int(lengths.max()) if lengths.size else 0
    if max_len < 0:
        raise ValueError(f"max_len must be non-negative: got {max_len}")
    if np.any(lengths > max_len):
        raise ValueError(
            f"every length must be at most max_len = {max_len}: got lengths {lengths.tolist()}"
        )
    return np.arange(max_len)[None, :] < lengths[:, None]  # (B, max_len)


def causal_mask(Lq: int, Lk: Optional[int] = None) -> np.ndarray:
    r"""Boolean causal mask: query ``i`` may attend to keys ``0 .. i``.

    .. math::

        \mathrm{mask}_{ij} = \big(j \le i\big)

    Shapes: -> ``(Lq, Lk)`` bool, **True = may attend**; ``Lk`` defaults to ``Lq``. When
    ``Lq != Lk`` the mask is aligned top-left, ``np.tril(np.ones((Lq, Lk)))``, exactly like
    ``torch.nn.functional.scaled_dot_product_attention(..., is_causal=True)``.

    Derived in notebooks/01_attention_in_numpy.ipynb.
    """
    if Lk is None:
        Lk = Lq
    if Lq < 0 or Lk < 0:
        raise ValueError(f"Lq and Lk must be non-negative: got Lq = {Lq}, Lk = {Lk}")
    return np.tril(np.ones((Lq, Lk), dtype=bool))  # (Lq, Lk)


def split_heads(x: np.ndarray, num_heads: int) -> np.ndarray:
    r"""Cut the last axis into ``num_heads`` heads and move the head axis before the length axis.

    .. math::

        \mathrm{out}[\dots, h, l, i] = x[\dots, l, h \cdot \mathrm{head\_dim} + i]

    Shapes: ``(..., L, num_heads * head_dim)`` -> ``(..., num_heads, L, head_dim)``.
    Inverse of :func:`merge_heads`.

    Derived in notebooks/01_attention_in_numpy.ipynb.
    """
    x = np.asarray(x)
    require_ndim("x", x, 2, "(..., L, num_heads * head_dim)")
    if num_heads < 1:
        raise ValueError(f"num_heads must be at least 1: got {num_heads}")
    L, width = x.shape[-2:]
    if width % num_heads != 0:
        raise ValueError(
            f"the last axis of x (width {width}) must be divisible by num_heads = {num_heads}: "
            f"{describe('x', x)}"
        )
    head_dim = width // num_heads
    x = x.reshape(*x.shape[:-2], L, num_heads, head_dim)  # (..., L, num_heads, head_dim)
    return np.swapaxes(x, -2, -3)  # (..., num_heads, L, head_dim)


def merge_heads(x: np.ndarray) -> np.ndarray:
    r"""Put the heads side by side again: the inverse of :func:`split_heads`.

    .. math::

        \mathrm{out}[\dots, l, h \cdot \mathrm{head\_dim} + i] = x[\dots, h, l, i]

    Shapes: ``(..., num_heads, L, head_dim)`` -> ``(..., L, num_heads * head_dim)``.

    Derived in notebooks/01_attention_in_numpy.ipynb.
    """
    x = np.asarray(x)
    require_ndim("x", x, 3, "(..., num_heads, L, head_dim)")
    num_heads, L, head_dim = x.shape[-3:]
    x = np.swapaxes(x, -2, -3)  # (..., L, num_heads, head_dim)
    return x.reshape(*x.shape[:-3], L, num_heads * head_dim)  # (..., L, num_heads * head_dim)


def layer_norm(
    x: np.ndarray,
    gamma: Optional[np.ndarray] = None,
    beta: Optional[np.ndarray] = None,
    eps: float = 1e-5,
) -> np.ndarray:
    r"""Layer normalisation over the last axis, like ``torch.nn.LayerNorm``.

    .. math::

        \mathrm{LN}(x) = \gamma \odot \frac{x - \mu}{\sqrt{\sigma^2 + \epsilon}} + \beta,
        \qquad \mu = \frac{1}{D}\sum_i x_i, \quad \sigma^2 = \frac{1}{D}\sum_i (x_i - \mu)^2

    (biased variance, divided by ``D``, as PyTorch does). ``gamma`` defaults to ones and
    ``beta`` to zeros.

    Shapes: x ``(..., D)``; gamma, beta ``(D,)`` -> ``(..., D)``.

    Derived in notebooks/01_attention_in_numpy.ipynb.
    """
    (x,) = _as_float(x, names=("x",))
    require_ndim("x", x, 1, "(..., D)")
    D = x.shape[-1]
    if D == 0:
        raise ValueError(f"x must have at least one feature to normalise over: {describe('x', x)}")
    for name, param in (("gamma", gamma), ("beta", beta)):
        if param is not None and np.shape(param) != (D,):
            raise ValueError(
                f"{name} must have shape ({D},), one entry per feature of x: "
                f"{name} has shape {fmt_shape(np.shape(param))}, {describe('x', x)}"
            )
    mu = x.mean(axis=-1, keepdims=True)  # (..., 1)
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)  # (..., 1)
    y = (x - mu) / np.sqrt(var + eps)
    if gamma is not None:
        y = y * gamma
    if beta is not None:
        y = y + beta
    return y


def _linear(x: np.ndarray, W: np.ndarray, b: Optional[np.ndarray]) -> np.ndarray:
    """Row-vector affine map ``x @ W + b``; ``b`` is ``None`` for a layer built with ``bias=False``."""
    return x @ W if b is None else x @ W + b


class CrossAttention:
    r"""Multi-head cross-attention: modality A (``x``) queries modality B (``context``).

    .. math::

        Q = x W_q + b_q, \quad K = \mathrm{context}\, W_k + b_k, \quad V = \mathrm{context}\, W_v + b_v

        \mathrm{head}_h = \mathrm{softmax}\!\left(
            \frac{Q_h K_h^\top}{\sqrt{\mathrm{head\_dim}}} + M\right) V_h,
        \qquad \mathrm{out} = [\mathrm{head}_1, \dots, \mathrm{head}_H]\, W_o + b_o

    Shapes:
        x ``(..., Lq, query_dim)``; context ``(..., Lk, context_dim)``;
        context_mask optional bool ``(..., Lk)``, **True = real token**.
        Returns ``(out, weights)``: out ``(..., Lq, query_dim)``, weights ``(..., num_heads, Lq, Lk)``.

    Parameters are plain public float64 arrays in the row-vector convention ``y = x @ W + b``:
    ``W_q (query_dim, num_heads*head_dim)``, ``W_k (context_dim, num_heads*head_dim)``,
    ``W_v (context_dim, num_heads*v_head_dim)``, ``W_o (num_heads*v_head_dim, query_dim)`` and
    biases ``b_q, b_k, b_v, b_o`` of the matching output widths. With ``bias=False`` every bias
    is ``None`` (as ``torch.nn.Linear(..., bias=False).bias`` is). A PyTorch layer takes these
    weights as ``Linear.weight = W.T``.

    Initialisation mirrors ``nn.Linear``: every entry is drawn from
    ``uniform(-1/sqrt(fan_in), 1/sqrt(fan_in))`` with ``np.random.default_rng(seed)``, in the order
    W_q, b_q, W_k, b_k, W_v, b_v, W_o, b_o. Same seed, same weights.

    ``head_dim`` defaults to ``query_dim // num_heads``; ``v_head_dim`` defaults to ``head_dim``.
    A query whose context is fully masked (or empty, ``Lk = 0``) gets zero weights, so its output
    is just ``b_o``. NaN or inf in ``x``, or in a real token of ``context``, raises a ``ValueError``
    naming the entry; padding tokens (context_mask False) may hold anything.

    Derived in notebooks/01_attention_in_numpy.ipynb.
    """

    def __init__(
        self,
        query_dim: int,
        context_dim: int,
        num_heads: int = 1,
        head_dim: Optional[int] = None,
        v_head_dim: Optional[int] = None,
        bias: bool = True,
        seed: int = 0,
    ) -> None:
        for name, value in (("query_dim", query_dim), ("context_dim", context_dim), ("num_heads", num_heads)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be an integer of at least 1: got {value!r}")
        if head_dim is None:
            if query_dim % num_heads != 0:
                raise ValueError(
                    f"query_dim = {query_dim} is not divisible by num_heads = {num_heads}, so "
                    f"head_dim cannot default to query_dim // num_heads; pass head_dim explicitly"
                )
            head_dim = query_dim // num_heads
        if v_head_dim is None:
            v_head_dim = head_dim
        if head_dim < 1 or v_head_dim < 1:
            raise ValueError(f"head_dim and v_head_dim must be at least 1: got {head_dim}, {v_head_dim}")
        self.query_dim = query_dim
        self.context_dim = context_dim
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.v_head_dim = v_head_dim

        rng = np.random.default_rng(seed)

        def linear(fan_in: int, fan_out: int) -> tuple[np.ndarray, Optional[np.ndarray]]:
            bound = 1.0 / np.sqrt(fan_in)
            W = rng.uniform(-bound, bound, size=(fan_in, fan_out))
            b = rng.uniform(-bound, bound, size=(fan_out,)) if bias else None
            return W, b

        self.W_q, self.b_q = linear(query_dim, num_heads * head_dim)
        self.W_k, self.b_k = linear(context_dim, num_heads * head_dim)
        self.W_v, self.b_v = linear(context_dim, num_heads * v_head_dim)
        self.W_o, self.b_o = linear(num_heads * v_head_dim, query_dim)

    def _check_inputs(
        self, x: np.ndarray, context: np.ndarray, context_mask: Optional[np.ndarray] = None
    ) -> np.ndarray:
        """Raise a ``ValueError`` naming the shapes if ``x``, ``context`` or ``context_mask`` do not
        fit, or naming the entry if ``x`` or a real context token is NaN or infinite; return
        ``context`` with its padding (which may hold anything) set to 0 where it is not finite."""
        require_ndim("x", x, 2, "(..., Lq, query_dim)")
        require_ndim("context", context, 2, "(..., Lk, context_dim)")
        if x.shape[-1] != self.query_dim:
            raise ValueError(
                f"x must have shape (..., Lq, query_dim) = (..., Lq, {self.query_dim}), "
                f"but {describe('x', x)}"
            )
        if context.shape[-1] != self.context_dim:
            raise ValueError(
                f"context must have shape (..., Lk, context_dim) = (..., Lk, {self.context_dim}), "
                f"but {describe('context', context)}"
            )
        try:
            np.broadcast_shapes(x.shape[:-2], context.shape[:-2])
        except ValueError:
            raise ValueError(
                "the batch dims of x and context must be equal (or broadcast): "
                f"{describe('x', x)}, {describe('context', context)}"
            ) from None
        if context_mask is not None:
            require_bool("context_mask", context_mask, "True = real token")
            if context_mask.shape != context.shape[:-1]:
                raise ValueError(
                    "context_mask must have shape (..., Lk) with True = real token, i.e. "
                    f"context.shape[:-1] = {fmt_shape(context.shape[:-1])}: context_mask has shape "
                    f"{fmt_shape(context_mask.shape)}, {describe('context', context)}"
                )
        require_finite("x", x)
        return _finite_where_used(
            "context", context, None if context_mask is None else (lambda: context_mask),
            "context_mask is True",
        )

    def __call__(
        self, x: np.ndarray, context: np.ndarray, context_mask: Optional[np.ndarray] = None
    ) -> tuple[np.ndarray, np.ndarray]:
        x, context = _as_float(x, context, names=("x", "context"))
        if context_mask is not None:
            context_mask = np.asarray(context_mask)
        context = self._check_inputs(x, context, context_mask)

        q = _linear(x, self.W_q, self.b_q)  # (..., Lq, num_heads * head_dim)
        k = _linear(context, self.W_k, self.b_k)  # (..., Lk, num_heads * head_dim)
        v = _linear(context, self.W_v, self.b_v)  # (..., Lk, num_heads * v_head_dim)
        q = split_heads(q, self.num_heads)  # (..., num_heads, Lq, head_dim)
        k = split_heads(k, self.num_heads)  # (..., num_heads, Lk, head_dim)
        v = split_heads(v, self.num_heads)  # (..., num_heads, Lk, v_head_dim)
        mask = None
        if context_mask is not None:
            # The same keys are real for every head and every query.
            mask = context_mask[..., None, None, :]  # (..., 1, 1, Lk)
        out, weights = scaled_dot_product_attention(q, k, v, mask)  # (..., num_heads, Lq, v_head_dim)
        out = merge_heads(out)  # (..., Lq, num_heads * v_head_dim)
        out = _linear(out, self.W_o, self.b_o)  # (..., Lq, query_dim)
        return out, weights


class CrossAttentionBlock:
    r"""Pre-norm residual cross-attention: modality A reads from modality B and keeps what it had.

    .. math::

        y = x + \mathrm{CrossAttention}\big(\mathrm{LN}_{\gamma,\beta}(x),\ \mathrm{context}\big)

    The output lives in modality A's space (width ``query_dim``) because the queries come from A:
    each of A's tokens asks a question, and the answer (a mix of B's values, projected back by
    ``W_o``) is added to that token. B is only read, never updated, so the block can be stacked
    on the query stream. The residual ``x + ...`` lets A keep its own information when the context
    has nothing useful (the attention term can be small) and gives gradients a direct path
    through deep stacks. Normalising before attention (pre-norm) keeps the residual stream itself
    unnormalised, which trains more stably than post-norm.

    Shapes: as :class:`CrossAttention`: x ``(..., Lq, query_dim)``, context ``(..., Lk, context_dim)``,
    context_mask optional bool ``(..., Lk)`` (True = real token) -> ``(y, weights)`` with
    y ``(..., Lq, query_dim)`` and weights ``(..., num_heads, Lq, Lk)``.

    Attributes: ``attention`` (a :class:`CrossAttention`), ``gamma`` (ones, ``(query_dim,)``),
    ``beta`` (zeros, ``(query_dim,)``). Constructor arguments are those of :class:`CrossAttention`.

    Derived in notebooks/01_attention_in_numpy.ipynb.
    """

    def __init__(
        self,
        query_dim: int,
        context_dim: int,
        num_heads: int = 1,
        head_dim: Optional[int] = None,
        v_head_dim: Optional[int] = None,
        bias: bool = True,
        seed: int = 0,
    ) -> None:
        self.attention = CrossAttention(
            query_dim, context_dim, num_heads, head_dim, v_head_dim, bias=bias, seed=seed
        )
        self.gamma = np.ones(query_dim)
        self.beta = np.zeros(query_dim)

    def __call__(
        self, x: np.ndarray, context: np.ndarray, context_mask: Optional[np.ndarray] = None
    ) -> tuple[np.ndarray, np.ndarray]:
        x, context = _as_float(x, context, names=("x", "context"))
        if context_mask is not None:
            context_mask = np.asarray(context_mask)
        # Check before layer_norm, so a wrong width is reported in terms of x, not gamma.
        context = self.attention._check_inputs(x, context, context_mask)
        h = layer_norm(x, self.gamma, self.beta)  # (..., Lq, query_dim)
        update, weights = self.attention(h, context, context_mask)  # (..., Lq, query_dim)
        return x + update, weights
