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
from typing import Optional

import numpy as np

from crossmodal_edu.numpy_attention import check_attention_inputs

__all__ = ["online_softmax_update", "blocked_attention"]


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


def blocked_attention(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    mask: Optional[np.ndarray] = None,
    block_size: int = 512,
    query_block_size: Optional[int] = None,
) -> np.ndarray:
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
        Returns out ``(..., Lq, d_v)``. The weights are not returned: not storing them is the point.

    Extra memory: about three ``(..., query_block_size or Lq, block_size)`` arrays, instead of
    several ``(..., Lq, Lk)`` ones. A query whose keys are all masked gets a zero output.
    Float dtypes are kept; integers become float64.

    Derived in notebooks/04_attention_that_fits_in_memory.ipynb.
    """
    q, k, v, mask, scores_shape = check_attention_inputs(q, k, v, mask)
    _check_block_size("block_size", block_size)
    _check_block_size("query_block_size", query_block_size)
    *lead, Lq, Lk = scores_shape
    d_k, d_v = q.shape[-1], v.shape[-1]
    if mask is not None:
        mask = np.broadcast_to(mask, scores_shape)  # (..., Lq, Lk): a view, no copy

    # Scaling q once (Lq x d_k numbers) is cheaper than scaling every block of scores.
    q = q * q.dtype.type(1.0 / math.sqrt(d_k))  # (..., Lq, d_k)
    k_t = np.swapaxes(k, -1, -2)  # (..., d_k, Lk): a view
    query_block_size = Lq if query_block_size is None else query_block_size
    out = np.empty((*lead, Lq, d_v), dtype=q.dtype)  # (..., Lq, d_v)

    for qs in range(0, Lq, query_block_size):
        q_blk = q[..., qs:qs + query_block_size, :]  # (..., bq, d_k)
        bq = q_blk.shape[-2]
        m = np.full((*lead, bq, 1), -np.inf, dtype=q.dtype)  # (..., bq, 1)
        l = np.zeros((*lead, bq, 1), dtype=q.dtype)  # noqa: E741  (..., bq, 1)
        acc = np.zeros((*lead, bq, d_v), dtype=q.dtype)  # (..., bq, d_v)
        for ks in range(0, Lk, block_size):
            scores = q_blk @ k_t[..., ks:ks + block_size]  # (..., bq, bk)
            if mask is not None:
                keep = mask[..., qs:qs + bq, ks:ks + block_size]  # (..., bq, bk)
                np.copyto(scores, -np.inf, where=~keep)  # in place: -inf becomes weight exactly 0
            m, l, acc = online_softmax_update(m, l, acc, scores, v[..., ks:ks + block_size, :])
        # l is 0 only where every key was masked, and there acc is 0 too: divide by 1, output 0.
        out[..., qs:qs + bq, :] = acc / np.where(l == 0.0, 1.0, l)
    return out
