r"""Exercises 01 · Attention in NumPy: stable softmax -> (predict) the scale of raw scores ->
scaled dot-product attention -> masks that work, even for a query that may see nothing.

Solutions: solutions/01_attention_in_numpy.ipynb. Reference: crossmodal_edu/numpy_attention.py.
"""

from __future__ import annotations

import math

import numpy as np

from crossmodal_edu import numpy_attention as reference
from crossmodal_edu.grading.spec import IN_PLACE, Case, FunctionTask, Mistake, PredictionTask, Property
from crossmodal_edu.grading.tasks.attention_slips import attention_mistakes, numpy_attention, slip_name
from crossmodal_edu.grading.tasks.properties import (
    a_number,
    between_0_and_1,
    finite,
    first,
    first_value,
    has_shapes,
    sums_to_one,
    where,
)


def distinct(rng: np.random.Generator, n: int, low: int, high: int) -> list[int]:
    """``n`` different sizes from ``low..high``, so that no two dimensions can be confused.

    4 and 9 are never drawn: with them, √d_v could equal d_k (d_k = 2, d_v = 4), and dividing by
    the wrong one of the two would look right.
    """
    sizes = [s for s in range(low, high + 1) if s not in (4, 9)]
    return [int(s) for s in rng.choice(sizes, size=n, replace=False)]


# ---------------------------------------------------------------------------------------------
# 01.softmax
# ---------------------------------------------------------------------------------------------


def _softmax_cases(rng: np.random.Generator) -> list[Case]:
    B = int(rng.integers(2, 4))
    Lq, Lk = distinct(rng, 2, 3, 7)
    L = int(rng.integers(3, 6))
    levels = rng.choice([-1e4, 0.0, 1e4], size=(B, Lq, 1))
    levels[0, :2, 0] = [1e4, -1e4]  # at least two rows far apart
    spread = rng.normal(size=(B, Lq, Lk))
    spread[:, :, 0] -= 900.0  # inside each slice, logits from about -900 to +900: only the maximum
    spread[:, :, 1] += 900.0  # keeps every exponent below 709 (the minimum or the mean overflow)
    return [
        Case({"z": 2 * rng.normal(size=(B, Lq, Lk))}),
        Case({"z": 1e4 + rng.normal(size=(B, Lq, Lk))}, note="logits near 10 000"),
        Case({"z": levels + rng.normal(size=(B, Lq, Lk))}, note="rows at very different levels"),
        Case({"z": spread}, note="logits from -900 to +900 inside one row"),
        Case({"z": rng.normal(size=(B, Lq, Lk))}, {"axis": 1}),
        Case({"z": rng.normal(size=(Lk, B, Lq))}, {"axis": 0}, note="softmax along the first axis"),
        Case({"z": rng.normal(size=(L, L))}, note="a square matrix"),
        Case({"z": 3 * rng.normal(size=Lk)}, note="a single vector of scores"),
    ]


def _axis(case: Case) -> int:
    return case.options.get("axis", -1)


def _softmax_no_max(z, axis=-1):
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def _softmax_min(z, axis=-1):
    e = np.exp(z - z.min(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _softmax_max_in_numerator_only(z, axis=-1):
    return np.exp(z - z.max(axis=axis, keepdims=True)) / np.exp(z).sum(axis=axis, keepdims=True)


def _softmax_max_along_last(z, axis=-1):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _softmax_default_axis_0(z, axis=0):
    return reference.softmax(z, axis=axis)


def _softmax_global_max(z, axis=-1):
    e = np.exp(z - z.max())
    return e / e.sum(axis=axis, keepdims=True)


def _softmax_max_no_keepdims(z, axis=-1):
    e = np.exp(z - z.max(axis=axis))
    return e / e.sum(axis=axis, keepdims=True)


def _softmax_sum_no_keepdims(z, axis=-1):
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis)


def _softmax_whole_array(z, axis=-1):
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum()


def _softmax_ignores_axis(z, axis=-1):
    return reference.softmax(z, axis=-1)


def _softmax_in_place(z, axis=-1):
    z -= z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def _shift_invariant(fn, case, outputs):
    (z,), options = case.fresh()
    shifted = np.asarray(fn(z + 7.0, **options), dtype=float)
    if shifted.shape == outputs[0].shape and np.allclose(shifted, outputs[0], rtol=1e-6, atol=1e-9, equal_nan=True):
        return None
    return "adding 7 to every logit changes your output"


SOFTMAX = FunctionTask(
    id="01.softmax",
    title="Stable softmax",
    points=3,
    name="softmax",
    signature="softmax(z, axis=-1)",
    cases=_softmax_cases,
    reference=reference.softmax,
    outputs=("weights",),
    properties=(
        has_shapes(lambda c: (c.inputs["z"].shape,), "the same as z's"),
        finite(0, "softmax(z)"),
        between_0_and_1(0, "softmax(z)"),
        sums_to_one(0, _axis, "the weights must sum to 1 along `axis`", "the weights at"),
        Property("softmax(z + c) must equal softmax(z) (shift invariance)", _shift_invariant),
    ),
    mistakes=(
        Mistake("no max subtraction",
                "np.exp(z) overflows to inf once z exceeds about 709, and inf / inf is NaN. Subtract "
                "the maximum first: z - z.max(axis=axis, keepdims=True); it changes nothing else.",
                _softmax_no_max),
        Mistake("subtracted the minimum (or the mean), not the maximum",
                "any constant may be subtracted in exact arithmetic, but only the maximum keeps every "
                "exponent at most 0: with logits far apart in one row, e^(z - min) overflows to inf.",
                _softmax_min),
        Mistake("the maximum subtracted in the numerator only",
                "softmax(z) = e^(z - m) / Σ e^(z - m): the denominator must use the same shifted exponentials, "
                "or e^z overflows there.", _softmax_max_in_numerator_only),
        Mistake("the maximum taken along the last axis, the sum along `axis`",
                "the shift must be constant within each slice you normalise: take the maximum along `axis` too.",
                _softmax_max_along_last),
        Mistake("the default is not axis=-1",
                "the signature is softmax(z, axis=-1): without an `axis`, the softmax runs along the last axis.",
                _softmax_default_axis_0),
        Mistake("subtracted the maximum of the whole array, not of each row",
                "z.max() is one number for the whole array; a row far below it underflows to 0 / 0. "
                "Take one maximum per slice: z.max(axis=axis, keepdims=True).",
                _softmax_global_max),
        Mistake("the maximum lost its axis (no keepdims=True)",
                "z.max(axis=axis) drops that axis, so it broadcasts against the wrong axis of z (or "
                "not at all). Write z.max(axis=axis, keepdims=True).",
                _softmax_max_no_keepdims),
        Mistake("the sum lost its axis (no keepdims=True)",
                "e.sum(axis=axis) drops that axis, so e is divided along the wrong axis. Write "
                "e.sum(axis=axis, keepdims=True).",
                _softmax_sum_no_keepdims),
        Mistake("normalised by the sum of the whole array",
                "e / e.sum() divides by one number for the whole array, so no slice sums to 1. Sum "
                "along `axis`: e.sum(axis=axis, keepdims=True).",
                _softmax_whole_array),
        Mistake("ignores the `axis` argument",
                "your softmax always works along the last axis; use `axis` in both the max and the sum.",
                _softmax_ignores_axis),
        Mistake(IN_PLACE, "", _softmax_in_place, in_place=True),
    ),
)

# ---------------------------------------------------------------------------------------------
# 01.score_std (predict, then run)
# ---------------------------------------------------------------------------------------------


def _number_close(a, b) -> bool:
    return math.isclose(float(a), float(b), rel_tol=0.02, abs_tol=1e-9)


SCORE_STD = PredictionTask(
    id="01.score_std",
    title="Predict: the spread of raw scores",
    points=1,
    name="predicted_std",
    expects="a number",
    read=a_number,
    answer=8.0,
    accept=lambda value: abs(float(value) - 8.0) <= 0.5,
    explanation="Var(q·k) = d_k = 64, so the standard deviation is √64 = 8: dividing by √d_k brings "
                "it back to 1.",
    mistakes=(
        Mistake("that is the variance, not the standard deviation",
                "Var(q·k) = d_k = 64 is right; the standard deviation is its square root.", value=64),
        Mistake("that is the spread after dividing by √d_k",
                "1 is what the scaling achieves; the question is about q·k before dividing.", value=1),
        Mistake("that is the mean of the score, not its spread",
                "q·k has mean 0, but each of its 64 terms adds variance 1.", value=0),
        Mistake("that squares d_k: Var(q·k) is d_k itself",
                "each of the d_k terms of q·k has variance 1, so the variance is d_k = 64, not d_k²; the "
                "spread is its square root.", value=4096),
        Mistake("that is √8: the spread is √d_k, and d_k = 64",
                "the standard deviation is the square root of the variance d_k = 64.", value=8 ** 0.5),
        Mistake("the spread grows with d_k, it does not shrink",
                "q·k is a sum of d_k terms, each with variance 1: the variances add up.", value=1 / 8),
    ),
    same=_number_close,
)

# ---------------------------------------------------------------------------------------------
# 01.attention
# ---------------------------------------------------------------------------------------------


def _attention_cases(rng: np.random.Generator) -> list[Case]:
    B, H = 2, int(rng.integers(2, 4))
    Lq, Lk, d_k, d_v = distinct(rng, 4, 3, 9)  # none of them 2 = B, which q.shape[0] would give
    normal = rng.normal
    Lq2, d_v2 = distinct(rng, 2, 2, 8)
    q_large, k_large = 30 * normal(size=(B, Lq, d_k)), 30 * normal(size=(B, Lk, d_k))
    q_large[:, 0], k_large[:, 0] = 50.0, 50.0  # a score of 2500 √d_k: e^score overflows, for sure
    return [
        Case({"q": normal(size=(B, H, Lq, d_k)), "k": normal(size=(B, H, Lk, d_k)),
              "v": normal(size=(B, H, Lk, d_v))}),
        # Lk = d_k only here: the one shape on which q @ k (no transpose) runs, so it can be named.
        Case({"q": normal(size=(Lq2, d_k)), "k": normal(size=(d_k, d_k)), "v": normal(size=(d_k, d_v2))},
             note="no batch dims"),
        Case({"q": q_large, "k": k_large, "v": normal(size=(B, Lk, d_v))}, note="large scores"),
    ]


def _sdpa(q, k, v, scale, axis=-1, softmax=reference.softmax):
    scores = q @ np.swapaxes(k, -1, -2) * scale  # (..., Lq, Lk)
    weights = softmax(scores, axis=axis)
    return weights @ v, weights


def _attention_shapes(case: Case):
    q, k, v = case.inputs["q"], case.inputs["k"], case.inputs["v"]
    lead = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
    return (*lead, q.shape[-2], v.shape[-1]), (*lead, q.shape[-2], k.shape[-2])


def _out_is_weights_at_v(fn, case, outputs):
    out, weights = outputs
    v = case.inputs["v"]
    try:
        recomputed = weights @ v
    except ValueError:
        return f"`weights @ v` cannot even be computed: weights has shape {weights.shape}, v has shape {v.shape}"
    if recomputed.shape != out.shape or not np.allclose(recomputed, out, rtol=1e-6, atol=1e-9, equal_nan=True):
        return "the `out` you return is not `weights @ v` for the `weights` you return"
    return None


def _keys_axis(case: Case) -> int:
    return -1


ATTENTION_PROPERTIES = (
    has_shapes(_attention_shapes, "out (..., Lq, d_v), weights (..., Lq, Lk)"),
    finite(1, "weights"),
    between_0_and_1(1, "weights"),
    sums_to_one(1, _keys_axis, "each query's weights must sum to 1 over the keys (the last axis)",
                "the weights of query"),
    Property("`out` must equal `weights @ v`", _out_is_weights_at_v),
)


def _att_k_not_transposed(q, k, v):
    weights = reference.softmax(q @ k / np.sqrt(q.shape[-1]))
    return weights @ v, weights


def _att_np_dot(q, k, v):
    weights = reference.softmax(np.dot(q, np.swapaxes(k, -1, -2)) / np.sqrt(q.shape[-1]))
    return np.dot(weights, v), weights


def _att_np_dot_scores_only(q, k, v):
    weights = reference.softmax(np.dot(q, np.swapaxes(k, -1, -2)) / np.sqrt(q.shape[-1]))
    return weights @ v, weights


def _att_k_dot_T(q, k, v):
    weights = reference.softmax(q @ k.T / np.sqrt(q.shape[-1]))
    return weights @ v, weights


def _att_weights_at_k(q, k, v):
    _, weights = _sdpa(q, k, v, 1 / np.sqrt(q.shape[-1]))
    return weights @ k, weights


def _att_swapped_return(q, k, v):
    out, weights = _sdpa(q, k, v, 1 / np.sqrt(q.shape[-1]))
    return weights, out


def _att_in_place(q, k, v):
    q /= np.sqrt(q.shape[-1])
    return _sdpa(q, k, v, 1.0)


ATTENTION = FunctionTask(
    id="01.attention",
    title="Scaled dot-product attention",
    points=3,
    name="attention",
    signature="attention(q, k, v) -> (out, weights)",
    cases=_attention_cases,
    reference=reference.scaled_dot_product_attention,
    outputs=("out", "weights"),
    properties=ATTENTION_PROPERTIES,
    mistakes=(
        *attention_mistakes("01.attention", lambda slip: lambda q, k, v: numpy_attention(q, k, v, slip=slip),
                            has={"scale", "softmax", "large"}),
        Mistake("K not transposed (q @ k)",
                "scores[i, j] = q_i · k_j needs q @ k.swapaxes(-1, -2): (..., Lq, d_k) @ (..., d_k, Lk).",
                _att_k_not_transposed),
        Mistake("with batch dims, k.T or np.dot mixes the batch axes in",
                "k.T reverses every axis, and np.dot pairs every batch with every other; only the last two axes "
                "take part in a product: q @ k.swapaxes(-1, -2), and weights @ v.",
                _att_k_dot_T, also=(_att_np_dot, _att_np_dot_scores_only)),
        Mistake("weights multiplied with k instead of v",
                "the output mixes the values: weights @ v, of shape (..., Lq, d_v).", _att_weights_at_k),
        Mistake("returns (weights, out) instead of (out, weights)",
                "return the output first, then the weights: return out, weights.", _att_swapped_return),
        Mistake(IN_PLACE, "", _att_in_place, in_place=True),
    ),
)

# ---------------------------------------------------------------------------------------------
# 01.masked_attention (fix the bug)
# ---------------------------------------------------------------------------------------------


def _masked_cases(rng: np.random.Generator) -> list[Case]:
    B = int(rng.integers(2, 4))
    # Lq < Lk: a causal mask then has no row of all True, and nor have the other masks, so an
    # inverted mask never hides every key of a row (whatever one does there, it is named).
    Lq, Lk, d_k, d_v = [n for n in distinct(rng, 5, 2, 9) if n != B][:4]  # and none equal to B
    Lq, Lk = sorted((Lq, Lk))
    Lk = max(Lk, 3)
    d_k = max(d_k, 2)
    normal = rng.normal
    lengths = rng.integers(1, Lk, size=B)  # every sequence has padding, none is empty
    padding = reference.padding_mask(lengths, Lk)[:, None, :]  # (B, 1, Lk)
    full = rng.random((B, Lq, Lk)) < 0.6
    full[full.all(axis=-1)] = False  # no row may see every key (see above) ...
    full[..., 0] |= ~full.any(axis=-1)  # ... and every row sees at least one ...
    full[0, 0] = False  # ... except query 0 of sequence 0, which may see nothing
    # Padded keys whose scores are far above the real ones' (by more than 745, where e^-x underflows):
    # only hiding them before the softmax leaves the real keys any weight. Every score is negative
    # (about -150 to -350 for the padding, below -1000 for the real words), so that even a softmax
    # without its max shift overflows nowhere here.
    q_loud, k_loud = normal(size=(B, Lq, d_k)), normal(size=(B, Lk, d_k))
    q_loud[..., 0] = 3.0 + np.clip(np.abs(q_loud[..., 0]), 0.0, 3.0)  # 3 to 6
    k_loud[..., 0] = np.where(padding[:, 0, :], -350.0, -50.0) * np.sqrt(d_k)
    # Scores all about the same and above 1000: e^score overflows unless the maximum is subtracted.
    q_high, k_high = normal(size=(B, Lq, d_k)), normal(size=(B, Lk, d_k))
    q_high[..., 0], k_high[..., 0] = 40.0, 40.0 * np.sqrt(d_k)
    return [
        Case({"q": normal(size=(B, Lq, d_k)), "k": normal(size=(B, Lk, d_k)),
              "v": normal(size=(B, Lk, d_v)), "mask": padding}, note="a padding mask"),
        Case({"q": q_loud, "k": k_loud, "v": normal(size=(B, Lk, d_v)), "mask": padding},
             note="padded keys with huge scores"),
        Case({"q": q_high, "k": k_high, "v": normal(size=(B, Lk, d_v)), "mask": padding},
             note="every score above 1000"),
        Case({"q": normal(size=(B, Lq, d_k)), "k": normal(size=(B, Lk, d_k)),
              "v": normal(size=(B, Lk, d_v)), "mask": full}, note="query (0, 0) may see no key"),
        Case({"q": normal(size=(Lq, d_k)), "k": normal(size=(Lk, d_k)), "v": normal(size=(Lk, d_v)),
              "mask": reference.causal_mask(Lq, Lk)}, note="a causal mask"),
    ]


def _scores(q, k):
    return q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])  # (..., Lq, Lk)


def _may_see(case: Case) -> np.ndarray:
    q, k, mask = case.inputs["q"], case.inputs["k"], case.inputs["mask"]
    return np.broadcast_to(mask, _scores(q, k).shape)


def _masked_keys_zero(fn, case, outputs):
    weights = outputs[1]
    hidden = ~_may_see(case) & (np.abs(weights) > 1e-12)
    if hidden.any():
        return f"a masked key gets weight {first_value(weights, hidden):.3g} at index {first(hidden)}"
    return None


def _blind_rows_zero(fn, case, outputs):
    out, weights = outputs
    blind = ~_may_see(case).any(axis=-1)  # (..., Lq): queries that may see no key
    if not blind.any():
        return None
    i = np.unravel_index(int(np.flatnonzero(blind)[0]), blind.shape)
    if not (np.all(weights[i] == 0) and np.all(out[i] == 0)):
        return f"query {where(i)} may see no key and gets the weights {np.round(weights[i], 3).tolist()}"
    return None


MASKED_ATTENTION = FunctionTask(
    id="01.masked_attention",
    title="Fix the masked attention",
    points=3,
    name="masked_attention",
    signature="masked_attention(q, k, v, mask) -> (out, weights)",
    cases=_masked_cases,
    reference=reference.scaled_dot_product_attention,
    outputs=("out", "weights"),
    properties=(
        has_shapes(_attention_shapes, "out (..., Lq, d_v), weights (..., Lq, Lk)"),
        Property("masked keys must get zero weight", _masked_keys_zero),
        finite(1, "weights"),
        finite(0, "out"),
        Property("a query that may see no key must get zero weights and a zero output", _blind_rows_zero),
        sums_to_one(1, _keys_axis, "the weights of a query that may see a key must sum to 1",
                    "the weights of query", rows=lambda case, sums: _may_see(case).any(axis=-1)),
        Property("`out` must equal `weights @ v`", _out_is_weights_at_v),
    ),
    mistakes=attention_mistakes(
        "01.masked_attention", lambda slip: lambda q, k, v, mask: numpy_attention(q, k, v, mask, slip=slip),
        has={"scale", "softmax", "mask", "blind", "hidden_large", "large"}),
    planted=slip_name("mask_after_softmax"),
)

TASKS = (SOFTMAX, SCORE_STD, ATTENTION, MASKED_ATTENTION)
