r"""One catalogue of the ways attention gets computed wrong, shared by every task that computes it.

A learner who scales by √d_v in lesson 01 makes the same slip in lesson 02's cross-attention and in
lesson 03's multi-head module; they must be told the same thing each time. So the slips live here,
once, with their names and hints, and each task that computes attention builds its catalogued
mistakes from them with :func:`attention_mistakes`:

.. code-block:: python

    mistakes = attention_mistakes(
        "02.cross_attention",
        variant=lambda slip: (lambda x, context, W_Q, W_K, W_V, W_O: my_forward(..., slip=slip)),
        has={"scale", "softmax", "project"},
        words={"d_k": "d_k", "d_k_is": "W_Q.shape[1]"},
        not_here={"by_d_v": "d_v = d_k in every case of this task"},
    )

``variant(key)`` returns the task's function with that one slip planted (most tasks call
:func:`numpy_attention` or :func:`torch_attention` with ``slip=key`` after their own projections);
``has`` says which parts of attention the task's function computes itself; a slip that needs a part
the task has must be planted, or listed in ``not_here`` with the reason it cannot occur or cannot be
seen there. :data:`COVERAGE` records what each task did, and a test checks that no applicable slip
is silently left out.

The two cores, :func:`numpy_attention` and :func:`torch_attention`, compute
``softmax(mask(q kᵀ · scale)) v`` and return ``(out, weights)``; with ``slip=None`` they are the
course's reference (a query that may see no key gets zero weights and a zero output).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np

from crossmodal_edu.grading.spec import Mistake

__all__ = ["Slip", "SLIPS", "COVERAGE", "WORDS", "TORCH_WORDS", "slip_name", "attention_mistakes", "numpy_attention", "torch_attention", "scale_for"]


@dataclass(frozen=True)
class Slip:
    """One slip: ``key`` (used by the cores), the parts of attention it needs (``needs``), and its
    ``name`` and ``hint`` with ``{placeholders}`` a task fills in (:data:`WORDS`)."""

    key: str
    needs: frozenset[str]
    name: str
    hint: str


def _slip(key: str, needs: str, name: str, hint: str) -> Slip:
    return Slip(key, frozenset(needs.split()), name, hint)


# The parts a task's function may compute itself:
#   scale   it scales the scores;   softmax  it takes the softmax;   mask  it applies a True = keep mask;
#   blind   a case has a query that may see no key;   large  a case has scores large enough to overflow e^x;
#   project it projects x and a context with weights of its own;   heads  it splits heads;
#   hidden_large  a case has hidden keys whose scores are far above the visible ones'.
SLIPS: tuple[Slip, ...] = (
    # --- the scale -----------------------------------------------------------------------------
    _slip("no_scale", "scale", "no 1/√{d_k} scaling",
          "divide the scores by √{d_k}, with {d_k} = {d_k_is}: without it the scores grow with the width and "
          "the softmax saturates."),
    _slip("by_d_k", "scale", "divided by {d_k} instead of √{d_k}",
          "the scores' standard deviation is √{d_k}, so divide by the square root of {d_k}, not by {d_k}."),
    _slip("times_sqrt_d_k", "scale", "multiplied by √{d_k} instead of dividing by it",
          "the scaling shrinks the scores: divide by √{d_k}; multiplying makes them larger still."),
    _slip("by_d_v", "scale", "scaled by √{d_v} (the values' width) instead of √{d_k}",
          "{d_k} is the width of the queries and keys, {d_k_is}; {d_v} is the width of the values, which "
          "plays no part in the scores."),
    _slip("by_Lk", "scale", "scaled by √Lk (the number of keys) instead of √{d_k}",
          "{d_k} is the width of one query or key, {d_k_is}, not how many keys there are."),
    _slip("by_Lq", "scale", "scaled by √Lq (the number of queries) instead of √{d_k}",
          "{d_k} is the width of one query or key, {d_k_is}, not how many queries there are."),
    _slip("by_query_dim", "scale project", "scaled by √query_dim (the width of x) instead of √{d_k}",
          "the scores are dot products of projected queries and keys, {d_k_is} wide; x's own width does not "
          "enter them."),
    _slip("by_context_dim", "scale project", "scaled by √context_dim (the width of the context) instead of √{d_k}",
          "the scores are dot products of projected queries and keys, {d_k_is} wide; the context's own width "
          "does not enter them."),
    _slip("by_first_dim", "scale", "scaled by √(q.shape[0]) instead of √{d_k}",
          "q.shape[0] is the batch size (or, without batch dims, the number of queries); {d_k} is the width "
          "of one query, {d_k_is}: count from the end."),
    _slip("by_query_dim_per_head", "scale project heads", "scaled by √(query_dim / num_heads) instead of √{d_k}",
          "{d_k} is what to_q gives each head, {d_k_is}; x's own width, shared among the heads, is another number."),
    _slip("by_inner", "scale heads", "scaled by √(num_heads * {d_k}) instead of √{d_k}",
          "each head's scores are dot products of {d_k}-wide vectors: divide by √{d_k}, the width of one "
          "head, not of all heads together."),
    _slip("scale_after_softmax", "scale softmax", "scaled the weights after the softmax, not the scores before it",
          "1/√{d_k} belongs inside the softmax, on the scores q·k: scaling the weights afterwards leaves each "
          "row summing to 1/√{d_k} instead of 1."),
    # --- the softmax ---------------------------------------------------------------------------
    _slip("softmax_queries", "softmax", "softmax over the wrong axis (the queries, not the keys)",
          "each query spreads one unit of attention over the keys: take the softmax along the last axis of "
          "the (..., Lq, Lk) scores."),
    _slip("softmax_first_axis", "softmax", "softmax over the first axis (axis=0), not the keys",
          "axis=0 is the batch (or, without batch dims, the queries): each query's weights over the keys are "
          "the last axis of the (..., Lq, Lk) scores, axis=-1."),
    _slip("softmax_heads", "softmax heads", "softmax over the heads axis (dim=1), not the keys",
          "the scores are (B, num_heads, Lq, Lk): each query's weights over the keys are the last axis, dim=-1."),
    _slip("softmax_no_max", "softmax large", "softmax without max subtraction",
          "e^score overflows to inf once a score passes about 709, and inf / inf is NaN: subtract each row's "
          "maximum before the exponential (your softmax from lesson 01 does)."),
    # --- the mask ------------------------------------------------------------------------------
    _slip("mask_after_softmax", "mask", "mask applied after the softmax",
          "multiplying the weights by the mask zeroes the hidden keys but leaves the others summing to less "
          "than 1: put -inf into the hidden scores before the softmax."),
    _slip("mask_after_softmax_renormalised", "mask hidden_large",
          "mask applied after the softmax, then renormalised: a hidden key with a large score leaves the others 0",
          "renormalising the masked weights is right in exact arithmetic, but a hidden key whose score is far "
          "above the others takes all the weight first, and the visible keys' weights underflow to 0 (0/0 or 0/ε). "
          "Hide the keys before the softmax: -inf in their scores."),
    _slip("mask_zero", "mask", "hidden scores set to 0 instead of −inf",
          "a score of 0 still gets weight e^0 / Σ: fill the hidden scores with -inf (multiplying the scores "
          "by the mask sets them to 0 too), for which e^-inf = 0."),
    _slip("mask_inverted", "mask", "inverted mask (True treated as 'ignore')",
          "in this course True means 'may attend': keep the scores where the mask is True and hide the "
          "others."),
    _slip("mask_ignored", "mask", "mask not applied", "the mask must hide the scores of the keys it marks False, before the softmax."),
    _slip("mask_added", "mask", "the mask added to the scores as a number (1/0 or 0/−1), not as −inf",
          "True and False become 1 and 0: the kept scores gain 1 (or the hidden ones lose 1), so a hidden key "
          "still gets e^-1 times the weight it would have. Hide it: -inf where the mask is False."),
    _slip("mask_inverted_added", "mask", "the inverted mask added as a number: hidden keys gain 1 instead of −inf",
          "(~mask) as a number is 1 on the hidden keys: adding it raises their scores instead of hiding them. "
          "Hide them: {fill}."),
    _slip("mask_times_inf", "mask", "−inf multiplied by the mask: 0 · (−inf) is NaN",
          "(~mask) * -inf is NaN wherever the mask is True, since 0 times infinity has no value. Select "
          "instead of multiplying: {fill}."),
    _slip("mask_finite", "mask blind", "a query that may see no key gets uniform weights",
          "a large negative number instead of -inf spreads a fully hidden row evenly over keys it may not "
          "see; such a query should get zero weights and a zero output."),
    _slip("mask_nan", "mask blind", "a query that may see no key gets NaN",
          "when every key of a row is hidden, its maximum is -inf and -inf - (-inf) is NaN: find those rows "
          "(the mask has no True in them) and give them zero weights."),
)

# Slips seen by the exception they raise, not by what they return: (needs, name, hint, pattern).
RAISED: tuple[tuple[frozenset[str], str, str, str], ...] = (
    (frozenset({"mask"}), "negated a boolean mask with `-`",
     "`-mask` is not defined for True/False: flip a mask with `~mask`.",
     r"boolean negative|Negation, the `-` operator, on a bool tensor"),
    (frozenset({"mask"}), "arithmetic on a boolean mask (`mask - 1`, `1 - mask`)",
     "True/False masks are not numbers here: flip one with `~mask`, and hide keys by selecting, {fill}.",
     r"boolean subtract|Subtraction, the `-` operator, with a bool tensor"),
    (frozenset({"mask", "softmax"}), "indexed the scores with a mask of another shape",
     "scores[~mask] = ... needs a mask of exactly the scores' shape (..., Lq, Lk); a selection broadcasts it "
     "for you: {fill}.",
     r"boolean index did not match|shape of the mask .* does not match the shape of the indexed tensor"),
)

# Placeholders of the names and hints, and the words most tasks use for them.
WORDS = {"d_k": "d_k", "d_v": "d_v", "d_k_is": "q.shape[-1]", "fill": "np.where(mask, scores, -np.inf)"}
TORCH_WORDS = {"fill": "scores.masked_fill(~mask, float('-inf'))"}

COVERAGE: dict[str, dict[str, Any]] = {}
"""``task id -> {"has": parts, "planted": slip keys, "not_here": {key: reason}}``, filled by
:func:`attention_mistakes` as the task modules are imported."""

_BY_KEY = {slip.key: slip for slip in SLIPS}
_NAN_ROWS_ALWAYS = {"mask_nan", "softmax_no_max", "mask_finite", "mask_times_inf"}  # their rows are NaN (or never empty) either way


def attention_mistakes(
    task_id: str,
    variant: Callable[[str], Optional[Callable[..., Any]]],
    has: set[str] | frozenset[str],
    words: dict[str, str] | None = None,
    not_here: dict[str, str] | None = None,
    hints: dict[str, str] | None = None,
) -> tuple[Mistake, ...]:
    """The task's mistakes for every slip whose parts it ``has``: ``Mistake(name, hint,
    variant(key))``, with the slip's words filled in from ``words``; ``hints`` overrides a hint for
    this task (a key that must be named in this task's own terms, say). A slip in ``not_here`` is
    left out, with its reason recorded."""
    has, not_here, hints = frozenset(has), dict(not_here or {}), dict(hints or {})
    unknown = (set(not_here) | set(hints)) - set(_BY_KEY)
    if unknown:
        raise ValueError(f"{task_id}: no slips called {sorted(unknown)}; known: {sorted(_BY_KEY)}")
    fill = {**WORDS, **(words or {})}
    mistakes, planted = [], []
    for slip in SLIPS:
        if not slip.needs <= has or slip.key in not_here:
            continue
        impl = variant(slip.key)
        if impl is None:
            raise ValueError(f"{task_id}: variant({slip.key!r}) gave no function; list it in not_here with a reason")
        hint = hints.get(slip.key, slip.hint)
        # The same slip with a softmax that leaves a row of nothing but -inf NaN (a learner's own, or
        # torch's) rather than zero (the course's reference): both are what a learner may have written.
        # (a slip whose rows are NaN anyway: also with the NaN turned into 0, np.nan_to_num-style)
        ways = (f"{slip.key}/nan",) if slip.key not in _NAN_ROWS_ALWAYS else \
            (f"{slip.key}/zero",) if slip.key == "softmax_no_max" else ()
        if slip.key == "mask_after_softmax_renormalised":  # ... and with an ε against 0/0
            ways += (f"{slip.key}/eps",)
        also = tuple(f for f in (variant(way) for way in ways) if f is not None)
        mistakes.append(Mistake(slip.name.format(**fill), hint.format(**fill), impl, also=also))
        planted.append(slip.key)
    for needs, name, hint, pattern in RAISED:
        if needs <= has:
            mistakes.append(Mistake(name.format(**fill), hint.format(**fill), raises=pattern))
    COVERAGE[task_id] = {"has": has, "planted": tuple(planted), "not_here": not_here}
    return tuple(mistakes)


def slip_name(key: str, **words: str) -> str:
    """The name a slip is told by, in a task's words (for a ``planted`` bug, say)."""
    return _BY_KEY[key].name.format(**{**WORDS, **words})


_SCALE_SLIPS = {"by_first_dim", "by_query_dim_per_head", "scale_after_softmax", "no_scale", "by_d_k", "times_sqrt_d_k", "by_d_v", "by_Lk", "by_Lq", "by_query_dim",
                "by_context_dim", "by_inner"}


def _parse(slip: Optional[str]) -> tuple[Optional[str], bool, float]:
    """``"mask_inverted/nan"`` -> ``("mask_inverted", True, 0.0)``: the slip; whether a row with
    nothing to see comes out NaN (a plain softmax) rather than zero (the course's reference); and
    the ε a renormalisation adds to its denominator (``"/eps"``: 1e-9)."""
    if slip is None:
        return None, False, 0.0
    key, _, how = slip.partition("/")
    return key, how in ("nan", "zero") or key in ("mask_nan", "softmax_no_max", "mask_times_inf"), 1e-9 * (how == "eps")


def _zeroed(slip: Optional[str]) -> bool:
    """``"softmax_no_max/zero"``: the slip's NaN weights turned into 0 afterwards."""
    return slip is not None and slip.endswith("/zero")


def scale_for(slip: Optional[str], d_k: int, d_v: int, Lq: int, Lk: int,
              query_dim: Optional[int] = None, context_dim: Optional[int] = None,
              inner: Optional[int] = None, first_dim: Optional[int] = None,
              num_heads: Optional[int] = None) -> float:
    """The factor the scores are multiplied by: ``1/√d_k``, or what the slip ``slip`` uses instead."""
    sizes = {"by_d_v": d_v, "by_Lk": Lk, "by_Lq": Lq, "by_query_dim": query_dim,
             "by_context_dim": context_dim, "by_inner": inner, "by_first_dim": first_dim,
             "by_query_dim_per_head": None if query_dim is None or num_heads is None else query_dim / num_heads}
    if slip in ("no_scale", "scale_after_softmax"):
        return 1.0
    if slip == "by_d_k":
        return 1.0 / d_k
    if slip == "times_sqrt_d_k":
        return math.sqrt(d_k)
    if slip in sizes:
        if sizes[slip] is None:
            raise ValueError(f"slip {slip!r} needs a size the task did not give")
        return 1.0 / math.sqrt(sizes[slip])
    return 1.0 / math.sqrt(d_k)


def numpy_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: Optional[np.ndarray] = None, *,
                    slip: Optional[str] = None, scale: Optional[float] = None, **sizes: int):
    """``(out, weights)`` of ``softmax(mask(q kᵀ · scale)) v`` in NumPy, with ``slip`` planted.

    ``mask`` (True = may attend) broadcasts against the ``(..., Lq, Lk)`` scores. ``scale`` is the
    factor for ``slip=None`` (default ``1/√d_k``); ``sizes`` (``query_dim``, ``context_dim``,
    ``inner``) are what some slips scale by instead.
    """
    zero = _zeroed(slip)
    slip, nan_rows, eps = _parse(slip)
    d_k, d_v, Lq, Lk = q.shape[-1], v.shape[-1], q.shape[-2], k.shape[-2]
    sizes.setdefault("first_dim", q.shape[0])
    factor = scale if (scale is not None and slip not in _SCALE_SLIPS) else scale_for(slip, d_k, d_v, Lq, Lk, **sizes)
    scores = q @ np.swapaxes(k, -1, -2) * factor  # (..., Lq, Lk)
    keep = None if mask is None else np.broadcast_to(np.asarray(mask, dtype=bool), scores.shape)
    if keep is not None:
        if slip == "mask_zero":
            scores = np.where(keep, scores, 0.0)
        elif slip == "mask_inverted":
            scores = np.where(~keep, scores, -np.inf)
        elif slip == "mask_added":
            scores = scores + keep
        elif slip == "mask_times_inf":
            scores = scores + (~keep) * -np.inf
        elif slip == "mask_inverted_added":
            scores = scores + ~keep
        elif slip == "mask_finite":
            scores = np.where(keep, scores, -1e9)
        elif slip not in ("mask_ignored", "mask_after_softmax", "mask_after_softmax_renormalised"):
            scores = np.where(keep, scores, -np.inf)
    axis = {"softmax_queries": -2, "softmax_first_axis": 0, "softmax_heads": -3}.get(slip, -1)
    with np.errstate(all="ignore"):
        top = scores.max(axis=axis, keepdims=True)
        empty = np.isneginf(top)  # a row with nothing to see: all zeros (unless nan_rows)
        if slip == "softmax_no_max":
            e = np.exp(scores)
        else:
            e = np.exp(scores - (top if nan_rows else np.where(empty, 0.0, top)))
        weights = e / e.sum(axis=axis, keepdims=True)
        if not nan_rows:
            weights = np.where(empty, 0.0, weights)
        if keep is not None and slip in ("mask_after_softmax", "mask_after_softmax_renormalised"):
            weights = weights * keep
            if slip == "mask_after_softmax_renormalised":
                weights = weights / (weights.sum(axis=-1, keepdims=True) + eps)
    if slip == "scale_after_softmax":
        weights = weights / math.sqrt(d_k)
    if zero:
        weights = np.nan_to_num(weights, nan=0.0)
    return weights @ v, weights


def torch_attention(q, k, v, mask=None, *, slip: Optional[str] = None, scale: Optional[float] = None, **sizes: int):
    """:func:`numpy_attention` in PyTorch: ``q`` ``(..., Lq, d_k)``, ``k`` ``(..., Lk, d_k)``, ``v``
    ``(..., Lk, d_v)``, ``mask`` (True = may attend) broadcasting against the scores."""
    import torch

    zero = _zeroed(slip)
    slip, nan_rows, eps = _parse(slip)
    d_k, d_v, Lq, Lk = q.shape[-1], v.shape[-1], q.shape[-2], k.shape[-2]
    sizes.setdefault("first_dim", q.shape[0])
    factor = scale if (scale is not None and slip not in _SCALE_SLIPS) else scale_for(slip, d_k, d_v, Lq, Lk, **sizes)
    scores = q @ k.transpose(-2, -1) * factor  # (..., Lq, Lk)
    keep = None if mask is None else torch.as_tensor(mask, dtype=torch.bool).expand(scores.shape)
    minus_inf = torch.tensor(float("-inf"), dtype=scores.dtype)
    if keep is not None:
        if slip == "mask_zero":
            scores = scores.masked_fill(~keep, 0.0)
        elif slip == "mask_inverted":
            scores = scores.masked_fill(keep, float("-inf"))
        elif slip == "mask_added":
            scores = scores + keep.to(scores.dtype)
        elif slip == "mask_times_inf":
            scores = scores + (~keep).to(scores.dtype) * float("-inf")
        elif slip == "mask_inverted_added":
            scores = scores + (~keep).to(scores.dtype)
        elif slip == "mask_finite":
            scores = scores.masked_fill(~keep, -1e9)
        elif slip not in ("mask_ignored", "mask_after_softmax", "mask_after_softmax_renormalised"):
            scores = scores.masked_fill(~keep, float("-inf"))
    dim = {"softmax_queries": -2, "softmax_first_axis": 0, "softmax_heads": -3}.get(slip, -1)
    top = scores.amax(dim=dim, keepdim=True)
    empty = top == minus_inf  # a row with nothing to see: all zeros (unless nan_rows)
    if slip == "softmax_no_max":
        e = scores.exp()
    else:
        e = (scores - (top if nan_rows else torch.where(empty, torch.zeros_like(top), top))).exp()
    weights = e / e.sum(dim=dim, keepdim=True)
    if not nan_rows:
        weights = torch.where(empty, torch.zeros_like(weights), weights)
    if keep is not None and slip in ("mask_after_softmax", "mask_after_softmax_renormalised"):
        weights = weights * keep
        if slip == "mask_after_softmax_renormalised":
            weights = weights / (weights.sum(dim=-1, keepdim=True) + eps)
    if slip == "scale_after_softmax":
        weights = weights / math.sqrt(d_k)
    if zero:
        weights = torch.nan_to_num(weights, nan=0.0)
    return weights @ v, weights
