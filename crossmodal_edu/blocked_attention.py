r"""Attention without the score matrix: the online softmax over blocks of keys (the idea behind FlashAttention).

The reference :func:`crossmodal_edu.numpy_attention.scaled_dot_product_attention` builds the whole
``(Lq, Lk)`` score matrix, then its softmax. Here the keys and values arrive in blocks
:math:`K_j, V_j` of ``block_size`` rows, and each query keeps three running quantities: the largest
score seen so far :math:`m`, the sum of exponentials :math:`\ell` (relative to :math:`m`) and the
unnormalised output :math:`o`. With :math:`S_j = Q K_j^\top / \sqrt{d_k}` (masked entries
:math:`-\infty`):

.. math::

    m' = \max\big(m, \max_{\text{row}} S_j\big), \qquad \alpha = e^{m - m'}, \qquad
    P = e^{S_j - m'},

    \ell' = \alpha\,\ell + \textstyle\sum_{\text{row}} P, \qquad o' = \alpha\, o + P V_j,

starting from :math:`m = -\infty, \ell = 0, o = 0`; after the last block,
:math:`\mathrm{out} = o / \ell`. That is exactly :math:`\mathrm{softmax}(QK^\top/\sqrt{d_k}) V`, in
any block size; only ``Lq x block_size`` scores exist at any time (``query_block_size x
block_size`` with query blocks too).

Masks are boolean, **True = may attend**; a query whose keys are all masked gets a zero output,
as in the reference.

Derived in notebooks/04_attention_that_fits_in_memory.ipynb.
"""

import math
from typing import Optional, Union

import numpy as np

from crossmodal_edu._checks import describe, fmt_shape, non_finite_error, require_finite
from crossmodal_edu.numpy_attention import _scores_overflow_error, check_attention_inputs

__all__ = ["online_softmax_update", "blocked_attention", "blocked_attention_backward"]


def online_softmax_update(
    m: np.ndarray,
    l: np.ndarray,  # noqa: E741 -- the paper's name for the running sum
    acc: np.ndarray,
    scores: np.ndarray,
    v: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""Fold one block of keys into the running max, running sum and running output.

    .. math::

        m' = \max\big(m, \max_j s_j\big), \qquad \alpha = e^{m - m'},

        \ell' = \alpha\,\ell + \sum_j e^{s_j - m'}, \qquad
        \mathrm{acc}' = \alpha\,\mathrm{acc} + \sum_j e^{s_j - m'}\, v_j

    Shapes: m, l ``(..., Lq, 1)``; acc ``(..., Lq, d_v)``; scores ``(..., Lq, block)`` (already
    scaled by :math:`1/\sqrt{d_k}`, masked entries ``-inf``); v ``(..., block, d_v)``.
    Returns the new ``(m, l, acc)``, same shapes. Start from ``m = -inf``, ``l = 0``, ``acc = 0``;
    after the last block the output is ``acc / l``.

    While every score seen so far is ``-inf`` (a fully masked row), ``m`` stays ``-inf`` and
    ``l`` and ``acc`` stay exactly 0, never NaN. The inputs are not modified.

    Derived in notebooks/04_attention_that_fits_in_memory.ipynb.
    """
    m_new = np.maximum(m, scores.max(axis=-1, keepdims=True))  # (..., Lq, 1)
    # A row that has seen only -inf has m_new = -inf, and -inf - (-inf) is NaN: shift by 0 there,
    # so its exponentials are exp(-inf) = 0 and its alpha is exp(-inf) = 0.
    shift = np.where(np.isfinite(m_new), m_new, 0.0)  # (..., Lq, 1)
    with np.errstate(under="ignore"):  # far-below-max scores underflow to exactly 0: the right weight
        alpha = np.exp(m - shift)  # (..., Lq, 1): how much the old max overestimated the new one
        p = scores - shift  # (..., Lq, block)
        np.exp(p, out=p)  # in place: one block-sized temporary, not two
    l_new = alpha * l + p.sum(axis=-1, keepdims=True)  # (..., Lq, 1)
    acc_new = alpha * acc + p @ v  # (..., Lq, d_v)
    return m_new, l_new, acc_new


def _check_block_size(name: str, value: Optional[int]) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer (a number of rows): got {value!r}")


def _online_update_(
    m: np.ndarray, l: np.ndarray, acc: np.ndarray, scores: np.ndarray, v: np.ndarray  # noqa: E741
) -> None:
    """:func:`online_softmax_update`, in place: ``m``, ``l`` and ``acc`` are updated and ``scores``
    is overwritten with its exponentials, so a block costs no temporary of its own size."""
    m_new = np.maximum(m, scores.max(axis=-1, keepdims=True))  # (..., bq, 1)
    if not np.all(np.isfinite(m_new) | np.isneginf(m_new)):
        raise OverflowError  # the caller words the error: it knows q and k
    shift = np.where(np.isfinite(m_new), m_new, 0.0)  # (..., bq, 1): as in online_softmax_update
    with np.errstate(under="ignore", over="ignore"):  # scores - shift may reach -inf: weight 0
        alpha = np.exp(m - shift)  # (..., bq, 1)
        scores -= shift
        np.exp(scores, out=scores)  # (..., bq, bk): the block's exponentials
    l *= alpha
    l += scores.sum(axis=-1, keepdims=True)
    acc *= alpha
    acc += scores @ v  # (..., bq, d_v)
    m[...] = m_new


def _blocks(n: int, size: int) -> range:
    """Starts of the blocks of ``size`` rows covering ``n`` rows (none if ``n = 0``)."""
    return range(0, n, max(size, 1))


def blocked_attention(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    mask: Optional[np.ndarray] = None,
    block_size: int = 512,
    query_block_size: Optional[int] = None,
    *,
    context_mask: Optional[np.ndarray] = None,
    return_lse: bool = False,
) -> Union[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    r"""Scaled dot-product attention computed block by block, never storing the ``(Lq, Lk)`` scores.

    .. math::

        \mathrm{out} = \mathrm{softmax}\!\left(\frac{Q K^\top}{\sqrt{d_k}} + M\right) V,
        \qquad M_{ij} = \begin{cases} 0 & \text{mask}_{ij} = \text{True} \\
                                      -\infty & \text{mask}_{ij} = \text{False} \end{cases}

    evaluated with :func:`online_softmax_update` over key/value blocks of ``block_size`` rows
    (the last block may be shorter), and, if ``query_block_size`` is given, over query blocks of
    that many rows (each query block runs its own pass over the keys). Equal to
    :func:`crossmodal_edu.numpy_attention.scaled_dot_product_attention`'s output to rounding, for
    every block size.

    Shapes:
        q: ``(..., Lq, d_k)``; k: ``(..., Lk, d_k)``; v: ``(..., Lk, d_v)``; leading (batch, head)
        dims broadcast as in ``np.matmul``.
        mask: optional boolean, broadcastable to ``(..., Lq, Lk)``, **True = may attend**.
        context_mask: optional boolean ``(B, Lk)``, **True = real token**, the same keys for every
        query and head; see :func:`~crossmodal_edu.numpy_attention.scaled_dot_product_attention`
        for why a ``(B, Lk)`` padding mask belongs here and not in ``mask`` (as ``mask`` it
        broadcasts over the *queries* whenever ``B == Lq``).
        Returns out ``(..., Lq, d_v)``. The weights are not returned: not storing them is the point.
        With ``return_lse=True``, returns ``(out, lse)``: ``lse`` ``(..., Lq)`` is each row's
        log-sum-exp of the scaled, masked scores, :math:`m + \log \ell`, all that
        :func:`blocked_attention_backward` needs to recompute any block of weights,
        :math:`P = e^{S - \mathrm{lse}}`. A fully masked row has ``lse = -inf``.

    Extra memory: about three ``(..., query_block_size or Lq, block_size)`` arrays, instead of
    several ``(..., Lq, Lk)`` ones. A query whose keys are all masked gets a zero output (and so
    does every query if ``Lk = 0``); ``Lq = 0`` gives an empty output. Float dtypes are kept;
    integers become float64. Bad values are rejected as in the reference: NaN or inf where it can
    reach the output, ``d_k = 0`` and scores that overflow raise a ``ValueError``, complex inputs a
    ``TypeError``.

    Derived in notebooks/04_attention_that_fits_in_memory.ipynb.
    """
    q, k, v, mask, scores_shape = check_attention_inputs(q, k, v, mask, context_mask)
    _check_block_size("block_size", block_size)
    _check_block_size("query_block_size", query_block_size)
    *lead, Lq, Lk = scores_shape
    d_k, d_v = q.shape[-1], v.shape[-1]
    if mask is not None:
        mask = np.broadcast_to(mask, scores_shape)  # (..., Lq, Lk): a view, no copy

    # Scaling q once (Lq x d_k numbers) is cheaper than scaling every block of scores.
    q_scaled = q * q.dtype.type(1.0 / math.sqrt(d_k))  # (..., Lq, d_k)
    k_t = np.swapaxes(k, -1, -2)  # (..., d_k, Lk): a view
    query_block_size = Lq if query_block_size is None else query_block_size
    out = np.empty((*lead, Lq, d_v), dtype=q.dtype)  # (..., Lq, d_v)
    lse = np.empty((*lead, Lq), dtype=q.dtype)  # (..., Lq)

    # One buffer for every full block of scores: a fresh block-sized array per block would cost
    # page faults each time (the last, shorter block gets its own).
    buffer = np.empty((*lead, min(query_block_size, Lq), min(block_size, Lk)), dtype=q.dtype)

    for qs in _blocks(Lq, query_block_size):
        q_blk = q_scaled[..., qs:qs + query_block_size, :]  # (..., bq, d_k)
        bq = q_blk.shape[-2]
        m = np.full((*lead, bq, 1), -np.inf, dtype=q.dtype)  # (..., bq, 1)
        l = np.zeros((*lead, bq, 1), dtype=q.dtype)  # noqa: E741  (..., bq, 1)
        acc = np.zeros((*lead, bq, d_v), dtype=q.dtype)  # (..., bq, d_v)
        for ks in _blocks(Lk, block_size):
            k_blk = k_t[..., ks:ks + block_size]  # (..., d_k, bk)
            full = buffer.shape[-2:] == (bq, k_blk.shape[-1])
            with np.errstate(over="ignore"):  # an overflow is detected and named below
                scores = np.matmul(q_blk, k_blk, out=buffer if full else None)  # (..., bq, bk)
            if mask is not None:
                keep = mask[..., qs:qs + bq, ks:ks + block_size]  # (..., bq, bk)
                np.copyto(scores, -np.inf, where=~keep)  # in place: -inf becomes weight exactly 0
            try:
                _online_update_(m, l, acc, scores, v[..., ks:ks + block_size, :])
            except OverflowError:
                raise _scores_overflow_error(q.dtype, q, k) from None
        # l is 0 only where every key was masked, and there acc is 0 too: divide by 1, output 0.
        empty = l == 0.0  # (..., bq, 1)
        if empty.any() and Lk > 0:  # every score of a row -inf: masked, or all overflowed?
            attendable = (
                np.ones(empty.shape, bool) if mask is None
                else mask[..., qs:qs + bq, :].any(axis=-1, keepdims=True)
            )
            if (empty & attendable).any():
                raise _scores_overflow_error(q.dtype, q, k)
        np.divide(acc, np.where(empty, 1.0, l), out=out[..., qs:qs + bq, :])
        with np.errstate(divide="ignore"):  # log 0 = -inf: the lse of a fully masked row
            lse[..., qs:qs + bq] = (m + np.log(l))[..., 0]
    if not np.isfinite(out).all():
        raise ValueError(
            f"the output overflowed {out.dtype}: the largest |v| is {np.abs(v).max():.3g}; "
            f"rescale v or compute in float64"
        )
    return (out, lse) if return_lse else out


def _sum_to_shape(grad: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum ``grad`` over the axes along which an input of ``shape`` was broadcast (the chain rule
    for broadcasting: a value used by several batch elements collects all their gradients)."""
    extra = grad.ndim - len(shape)
    if extra:
        grad = grad.sum(axis=tuple(range(extra)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    return grad.sum(axis=axes, keepdims=True) if axes else grad


def blocked_attention_backward(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    out: np.ndarray,
    lse: np.ndarray,
    d_out: np.ndarray,
    mask: Optional[np.ndarray] = None,
    block_size: int = 512,
    query_block_size: Optional[int] = None,
    *,
    context_mask: Optional[np.ndarray] = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""The backward pass of :func:`blocked_attention`, block by block, never forming an
    ``(Lq, Lk)`` array: given the upstream gradient ``d_out`` :math:`= \partial L / \partial O`,
    return :math:`\partial L/\partial Q, \partial L/\partial K, \partial L/\partial V`.

    The forward pass kept only ``out`` :math:`O` and each row's log-sum-exp ``lse``; every block
    of weights is recomputed from them (FlashAttention's backward pass, Dao et al., 2022,
    "FlashAttention: Fast and Memory-Efficient Exact Attention with IO-Awareness"). With
    :math:`S_{ij} = Q_i K_j^\top / \sqrt{d_k}` (masked entries :math:`-\infty`), for each query
    block :math:`i` and key block :math:`j`:

    .. math::

        P_{ij} = e^{S_{ij} - \mathrm{lse}_i}, \qquad
        dV_j \mathrel{+}= P_{ij}^\top\, dO_i, \qquad
        dP_{ij} = dO_i\, V_j^\top,

        dS_{ij} = P_{ij} \circ \big(dP_{ij} - D_i\big), \qquad
        dQ_i \mathrel{+}= \frac{dS_{ij}\, K_j}{\sqrt{d_k}}, \qquad
        dK_j \mathrel{+}= \frac{dS_{ij}^\top\, Q_i}{\sqrt{d_k}},

    where :math:`D_i = \mathrm{rowsum}(dO_i \circ O_i)`. :math:`D` replaces the softmax
    Jacobian's :math:`\sum_j P_{ij}\, dP_{ij}`, which would need a whole row of :math:`P`:
    since :math:`O_i = \sum_j P_{ij} V_j`, that sum equals :math:`dO_i \cdot O_i`, which is known
    before any block is visited.

    Shapes: q ``(..., Lq, d_k)``, k ``(..., Lk, d_k)``, v ``(..., Lk, d_v)`` as for
    :func:`blocked_attention`; ``out`` and ``d_out`` ``(..., Lq, d_v)``; ``lse`` ``(..., Lq)``
    (``blocked_attention(..., return_lse=True)``); ``mask``, ``context_mask``, ``block_size`` and
    ``query_block_size`` as in the forward pass (the same mask must be passed). Returns
    ``(dq, dk, dv)`` with the shapes of q, k and v (summed over any leading axis an input was
    broadcast along).

    A fully masked query row (``lse = -inf``) has output 0 whatever q, k and v are, so its
    gradient is defined as 0: it adds nothing to dq, dk or dv. Masked keys get zero gradient.
    Extra memory: a few ``(..., query_block_size or Lq, block_size)`` blocks plus the three
    gradients, so it grows linearly in the lengths (tests/test_blocked_backward.py measures it).

    Derived in notebooks/04_attention_that_fits_in_memory.ipynb.
    """
    q_shape, k_shape, v_shape = np.shape(q), np.shape(k), np.shape(v)
    q, k, v, mask, scores_shape = check_attention_inputs(q, k, v, mask, context_mask)
    _check_block_size("block_size", block_size)
    _check_block_size("query_block_size", query_block_size)
    *lead, Lq, Lk = scores_shape
    d_k, d_v = q.shape[-1], v.shape[-1]
    out, d_out, lse = (np.asarray(a, dtype=q.dtype) for a in (out, d_out, lse))
    for name, array, expected in (
        ("out", out, (*lead, Lq, d_v)), ("d_out", d_out, (*lead, Lq, d_v)), ("lse", lse, (*lead, Lq))
    ):
        if array.shape != tuple(expected):
            raise ValueError(
                f"{name} must have shape {fmt_shape(expected)} (from the forward pass on these q, k, "
                f"v), but {describe(name, array)}"
            )
    require_finite("out", out)
    require_finite("d_out", d_out)
    if np.isnan(lse).any() or np.isposinf(lse).any():
        raise non_finite_error("lse", lse, np.isnan(lse) | np.isposinf(lse), " or -inf")
    if mask is not None:
        mask = np.broadcast_to(mask, scores_shape)  # (..., Lq, Lk): a view, no copy

    scale = q.dtype.type(1.0 / math.sqrt(d_k))
    q_scaled = np.broadcast_to(q * scale, (*lead, Lq, d_k))  # (..., Lq, d_k)
    k = np.broadcast_to(k, (*lead, Lk, d_k))  # (..., Lk, d_k)
    v = np.broadcast_to(v, (*lead, Lk, d_v))  # (..., Lk, d_v)
    D = np.sum(d_out * out, axis=-1, keepdims=True)  # (..., Lq, 1)
    # A fully masked row has lse = -inf and scores -inf: shift it by 0, so P = e^-inf = 0 there.
    shift = np.where(np.isneginf(lse), 0.0, lse)[..., None]  # (..., Lq, 1)
    dq = np.zeros((*lead, Lq, d_k), dtype=q.dtype)  # (..., Lq, d_k)
    dk = np.zeros((*lead, Lk, d_k), dtype=q.dtype)  # (..., Lk, d_k)
    dv = np.zeros((*lead, Lk, d_v), dtype=q.dtype)  # (..., Lk, d_v)
    query_block_size = Lq if query_block_size is None else query_block_size

    for qs in _blocks(Lq, query_block_size):
        rows = slice(qs, qs + query_block_size)
        q_blk, d_out_blk = q_scaled[..., rows, :], d_out[..., rows, :]  # (..., bq, d_k), (..., bq, d_v)
        for ks in _blocks(Lk, block_size):
            cols = slice(ks, ks + block_size)
            k_blk, v_blk = k[..., cols, :], v[..., cols, :]  # (..., bk, d_k), (..., bk, d_v)
            p = q_blk @ np.swapaxes(k_blk, -1, -2)  # (..., bq, bk): the scaled scores S
            if mask is not None:
                np.copyto(p, -np.inf, where=~mask[..., rows, cols])
            p -= shift[..., rows, :]
            with np.errstate(under="ignore"):
                np.exp(p, out=p)  # (..., bq, bk): P, the block's weights, recomputed
            dv[..., cols, :] += np.swapaxes(p, -1, -2) @ d_out_blk  # (..., bk, d_v)
            ds = d_out_blk @ np.swapaxes(v_blk, -1, -2)  # (..., bq, bk): dP
            ds -= D[..., rows, :]
            ds *= p  # (..., bq, bk): dS = P * (dP - D)
            dq[..., rows, :] += ds @ k_blk  # (..., bq, d_k), times the scale below
            dk[..., cols, :] += np.swapaxes(ds, -1, -2) @ q_blk  # (..., bk, d_k)
    dq *= scale
    return _sum_to_shape(dq, q_shape), _sum_to_shape(dk, k_shape), _sum_to_shape(dv, v_shape)
