r"""Exercises 04 · Attention that fits in memory: (predict) the memory of the weights -> one step of
the online softmax -> fix a blocked kernel whose running output goes stale -> merge the states of
two halves of the keys (split-K) -> the backward pass of one block of keys (the D term).

A state is what the online softmax keeps per query after reading some keys: the running maximum
``m`` ``(..., Lq, 1)``, the running sum ``l`` ``(..., Lq, 1)`` measured from ``m``, and the
unnormalised running output ``acc`` (or ``o``) ``(..., Lq, d_v)``, also measured from ``m``. Every
state in a case is the true state of some keys: it comes from the package's update, starting empty.

Solutions: solutions/04_attention_that_fits_in_memory.ipynb. Reference:
crossmodal_edu/blocked_attention.py (and numpy_attention.py, which the tests compare it with).
"""

from __future__ import annotations

import numpy as np

from crossmodal_edu import blocked_attention as reference
from crossmodal_edu.grading.spec import IN_PLACE, Case, FunctionTask, Mistake, PredictionTask, Property
from crossmodal_edu.grading.tasks import online_slips
from crossmodal_edu.grading.tasks.attention_slips import attention_mistakes, scale_for
from crossmodal_edu.grading.tasks.lesson01 import distinct
from crossmodal_edu.grading.tasks.online_slips import empty_state
from crossmodal_edu.grading.tasks.properties import a_number, finite, first, has_shapes, near, where

# ---------------------------------------------------------------------------------------------
# 04.memory (predict, then run)
# ---------------------------------------------------------------------------------------------

# 64 images of 1024 image tokens attend to captions of 77 words with 8 heads, in float32.
_MIB = 64 * 8 * 1024 * 77 * 4 / 2**20  # 154.0


MEMORY = PredictionTask(
    id="04.memory",
    title="Predict: memory of the weights",
    points=1,
    name="predicted_mib",
    expects="a number of MiB",
    read=a_number,
    answer=_MIB,
    accept=lambda value: near(value, _MIB),
    explanation="B · num_heads · Lq · Lk = 64 · 8 · 1024 · 77 = 40 370 176 numbers of 4 bytes: "
                "161 480 704 bytes = 154 MiB, for one layer, before any gradient.",
    mistakes=(
        Mistake("that is Lq × Lq: self-attention among the image tokens",
                "the keys are the caption's 77 words: the matrix is Lq × Lk = 1024 × 77 per head.",
                value=64 * 8 * 1024 * 1024 * 4 / 2**20),
        Mistake("that is Lk × Lk: self-attention among the words",
                "one row per image token that asks (1024), one column per word (77).",
                value=64 * 8 * 77 * 77 * 4 / 2**20),
        Mistake("forgot the heads", "each of the 8 heads has its own softmax, so its own matrix.",
                value=64 * 1024 * 77 * 4 / 2**20),
        Mistake("forgot the batch", "each of the 64 images has its own weights.",
                value=8 * 1024 * 77 * 4 / 2**20),
        Mistake("counted 8 bytes per number (float64), or the scores and the weights together",
                "a float32 number takes 4 bytes, and the question asks for the weights alone: one "
                "(B, num_heads, Lq, Lk) array.",
                value=64 * 8 * 1024 * 77 * 8 / 2**20),
        Mistake("forgot the 4 bytes per number: that counts the numbers (in units of 2^20)",
                "multiply the count by 4 bytes, then divide by 2^20.", value=64 * 8 * 1024 * 77 / 2**20),
        Mistake("that is in bytes, not MiB", "divide by 2^20 = 1 048 576 bytes per MiB.",
                value=64 * 8 * 1024 * 77 * 4),
        Mistake("that is in MB (10^6 bytes), not MiB (2^20 bytes)",
                "1 MiB = 2^20 = 1 048 576 bytes: divide by that, not by 10^6.",
                value=64 * 8 * 1024 * 77 * 4 / 1e6),
        Mistake("that is in GiB, not MiB", "the question asks for MiB: multiply by 1024.",
                value=64 * 8 * 1024 * 77 * 4 / 2**30),
        Mistake("that is in KiB, not MiB (divided by 1024 once)", "1 MiB = 1024 KiB = 2^20 bytes: divide by 1024 "
                "once more.", value=64 * 8 * 1024 * 77 * 4 / 2**10),
        Mistake("counted 2 bytes per number (float16)", "the weights here are float32: 4 bytes a number.",
                value=64 * 8 * 1024 * 77 * 2 / 2**20),
        Mistake("forgot the batch and the heads: that is one head of one image",
                "there is one Lq × Lk matrix per image and per head: 64 · 8 of them.", value=1024 * 77 * 4 / 2**20),
    ),
    same=near,
)

# ---------------------------------------------------------------------------------------------
# 04.online_update
# ---------------------------------------------------------------------------------------------
# The mistakes of the three tasks that fold a state (04.online_update, 04.blocked_attention,
# 04.merge_states) come from one family, crossmodal_edu/grading/tasks/online_slips.py: a slip has the
# same name and hint wherever it can occur.


def _update_case(rng, lead, Lq, seen, block, d_v, level=0.0, masked_block=False, note=""):
    """A state after ``seen`` keys and the next block of scores, with rows chosen to keep mistakes
    apart: in rows 0, 2, ... the block raises the maximum, in rows 1, 3, ... it does not (with
    ``masked_block``, row 1's block is all masked); the third-to-last and second-to-last rows have seen
    only masked keys and now get their first real ones, all below ``level`` (resp. one above it); the
    last row sees nothing yet."""
    before = level + rng.normal(size=(*lead, Lq, seen))
    scores = level + rng.normal(size=(*lead, Lq, block)) + np.where(np.arange(Lq) % 2 == 0, 3.0, -3.0)[:, None]
    scores[rng.random(scores.shape) < 0.2] = -np.inf  # some masked keys
    before[..., -3:, :] = -np.inf
    scores[..., -3, :] = level - 2.0 - np.abs(rng.normal(size=block))
    scores[..., -2, 0] = level + 1.0
    scores[..., -1, :] = -np.inf
    if masked_block:
        scores[..., 1, :] = -np.inf
    m, l, acc = reference.online_softmax_update(*empty_state(lead, Lq, d_v), before,
                                                rng.normal(size=(*lead, seen, d_v)))
    return Case({"m": m, "l": l, "acc": acc, "scores": scores, "v": rng.normal(size=(*lead, block, d_v))},
                note=note)


def _update_cases(rng: np.random.Generator) -> list[Case]:
    sizes = [(int(rng.integers(low, 9)), *distinct(rng, 2, 2, 7)) for low in (7, 6, 6)]
    (Lq, block, d_v), (Lq2, block2, d_v2), (Lq3, block3, d_v3) = sizes
    return [
        _update_case(rng, (2, int(rng.integers(2, 4))), Lq, int(rng.integers(2, 6)), block, d_v,
                     masked_block=True,
                     note="rows whose maximum grows, stays, arrives below 0 or above it, or is still -inf; "
                          "a block with every key masked"),
        _update_case(rng, (), Lq2, int(rng.integers(2, 6)), block2, d_v2, level=800.0, note="scores near 800"),
        _update_case(rng, (3,), Lq3, int(rng.integers(2, 6)), block3, d_v3, level=-800.0,
                     note="scores near -800"),
    ]


def _upd_in_place(m, l, acc, scores, v):
    m_new = np.maximum(m, scores.max(axis=-1, keepdims=True))
    shift = np.where(np.isfinite(m_new), m_new, 0.0)
    alpha = np.exp(m - shift)
    acc *= alpha
    p = np.exp(scores - shift)
    return m_new, alpha * l + p.sum(axis=-1, keepdims=True), acc + p @ v


def _numpy_state(fn, case, outputs):
    """The state goes back in with the next block: it must be what came in, NumPy arrays."""
    args, options = case.fresh()
    returned = fn(*args, **options)
    kinds = [type(a).__name__ for a in returned if not isinstance(a, np.ndarray)] if isinstance(returned, tuple) else []
    if kinds:
        return (f"it returns {', '.join(sorted(set(kinds)))} values, and the next step of the loop "
                f"(np.maximum(m, ...), p @ v with NumPy blocks) needs NumPy arrays")
    return None


def _running_max(fn, case, outputs):
    m, scores = case.inputs["m"], case.inputs["scores"]
    want = np.maximum(m, scores.max(axis=-1, keepdims=True))
    bad = ~((outputs[0] == want) | np.isclose(outputs[0], want, rtol=1e-9, atol=0))
    if bad.any():
        i = np.unravel_index(int(np.flatnonzero(bad)[0]), bad.shape)
        return (f"the new m at index {where(i)} is {outputs[0][i]:.6g}, but the largest score seen there "
                f"is {want[i]:.6g}")
    return None


ONLINE_UPDATE = FunctionTask(
    id="04.online_update",
    title="One step of the online softmax",
    points=3,
    name="online_softmax_update",
    signature="online_softmax_update(m, l, acc, scores, v) -> (m, l, acc)",
    cases=_update_cases,
    reference=reference.online_softmax_update,
    outputs=("m", "l", "acc"),
    properties=(
        has_shapes(lambda c: (c.inputs["m"].shape, c.inputs["l"].shape, c.inputs["acc"].shape),
                   "those of m, l and acc"),
        Property("the new m must be the largest score seen so far, max(m, the block's maximum)", _running_max),
        finite(1, "l"),
        finite(2, "acc"),
        Property("the new state must be NumPy arrays, like the old one, so that it can be folded again",
                 _numpy_state),
    ),
    mistakes=(*online_slips.mistakes("04.online_update"), Mistake(IN_PLACE, "", _upd_in_place, in_place=True)),
)

# ---------------------------------------------------------------------------------------------
# 04.blocked_attention (fix the bug)
# ---------------------------------------------------------------------------------------------


def _blocked_case(rng, lead, Lq, Lk, d_k, d_v, block_size, ramp, note, strength=2.0, noise=1.0):
    """q and k share a direction u; key j gets ``ramp[j]`` of it, so with a rising ramp every query's
    largest scores come in the last blocks, where a stale running output shows most. ``strength`` is
    q's share of u: with a large one, the scores follow ``ramp · strength / √d_k`` closely."""
    u = rng.normal(size=d_k)
    u /= np.linalg.norm(u)
    q = noise * rng.normal(size=(*lead, Lq, d_k)) + strength * u
    k = noise * rng.normal(size=(*lead, Lk, d_k)) + ramp[:, None] * u
    return Case({"q": q, "k": k, "v": rng.normal(size=(*lead, Lk, d_v))}, {"block_size": block_size},
                note=note)


def _blocked_cases(rng: np.random.Generator) -> list[Case]:
    cases = []
    for lead, note in (((2, int(rng.integers(2, 4))), "the largest scores in the last blocks"),
                       ((), "the largest scores in the last blocks, no batch dims")):
        Lq, d_k, d_v = distinct(rng, 3, 2, 8)
        block_size = int(rng.integers(2, 5))
        Lk = block_size * int(rng.integers(3, 5)) + int(rng.integers(1, block_size))  # a shorter last block
        cases.append(_blocked_case(rng, lead, Lq, Lk, d_k, d_v, block_size, np.linspace(-2.0, 4.0, Lk), note))
    Lq, d_k, d_v = distinct(rng, 3, 2, 8)
    block_size = int(rng.integers(2, 4))
    Lk = block_size * int(rng.integers(3, 5))
    cases.append(_blocked_case(rng, (2,), Lq, Lk, d_k, d_v, block_size, np.zeros(Lk),
                               "keys in no particular order, Lk a multiple of block_size"))
    # Scores of hundreds: with the strength 30, a score is about ramp · 30 / √d_k.
    for top, bottom, note in ((800.0, -800.0, "scores falling from about 800 to about -800"),
                              (-1600.0, -800.0, "every score below about -770, rising")):
        Lq, d_k, d_v = distinct(rng, 3, 2, 8)
        block_size = int(rng.integers(2, 4))
        Lk = block_size * int(rng.integers(3, 5)) + 1
        ramp = np.linspace(top, bottom, Lk) * np.sqrt(d_k) / 30.0
        cases.append(_blocked_case(rng, (), Lq, Lk, d_k, d_v, block_size, ramp, note, strength=30.0,
                                   noise=0.3))
    Lq, Lk, d_k, d_v = distinct(rng, 4, 3, 10)
    cases.append(_blocked_case(rng, (2,), Lq, Lk, d_k, d_v, 1, np.linspace(-2.0, 4.0, Lk),
                               "block_size = 1: one key per block"))
    Lq, Lk, d_k, d_v = distinct(rng, 4, 3, 10)
    cases.append(_blocked_case(rng, (), Lq, Lk, d_k, d_v, Lk + int(rng.integers(1, 4)), np.linspace(-2.0, 4.0, Lk),
                               "block_size > Lk: one block holds every key"))
    return cases


def _blocked_reference(q, k, v, block_size=3):
    return reference.blocked_attention(q, k, v, block_size=block_size)


def _independent_of_block_size(fn, case, outputs):
    (q, k, v), _ = case.fresh()
    one_block = np.asarray(fn(q, k, v, block_size=k.shape[-2]), dtype=float)
    if one_block.shape != outputs[0].shape or not np.allclose(one_block, outputs[0], rtol=1e-6, atol=1e-9):
        return (f"with block_size = {case.options['block_size']} the output differs from the output with "
                f"one block of all {k.shape[-2]} keys")
    return None


BLOCKED_ATTENTION = FunctionTask(
    id="04.blocked_attention",
    title="Fix the blocked attention",
    points=3,
    name="blocked_attention",
    signature="blocked_attention(q, k, v, block_size=3) -> out",
    cases=_blocked_cases,
    reference=_blocked_reference,
    outputs=("out",),
    properties=(
        has_shapes(lambda c: ((*c.inputs["q"].shape[:-1], c.inputs["v"].shape[-1]),), "(..., Lq, d_v)"),
        finite(0, "out"),
        Property("the output must not depend on the block size", _independent_of_block_size),
    ),
    mistakes=(
        *online_slips.mistakes("04.blocked_attention"),
        # The loop computes the scores itself, so it can scale them wrongly; its softmax is its own
        # (online_slips: no maximum at all, the block's maximum, ...).
        *attention_mistakes(
            "04.blocked_attention",
            lambda slip: None if "/" in slip else (  # no row with nothing to see: no "/nan" variant
                lambda q, k, v, block_size=3: online_slips.blocked(q, k, v, block_size, scale_slip=slip)),
            has={"scale"}),
    ),
    planted="acc not rescaled to the new maximum (l is)",
)

# ---------------------------------------------------------------------------------------------
# 04.merge_states (split-K)
# ---------------------------------------------------------------------------------------------


def _merge_case(rng, lead, Lq, Lk1, Lk2, d_v, note=""):
    """The states of two halves of the keys. Row 0: half 1 holds the larger scores; row 1: half 2;
    rows -3, -2: half 1, resp. half 2, fully masked; row -1: every key masked."""
    s1, s2 = rng.normal(size=(*lead, Lq, Lk1)), rng.normal(size=(*lead, Lq, Lk2))
    s1[..., 0, :] += 4.0
    s2[..., 1, :] += 4.0
    s1[..., -3, :] = -np.inf
    s2[..., -2, :] = -np.inf
    s1[..., -1, :] = s2[..., -1, :] = -np.inf
    s1[rng.random(s1.shape) < 0.15] = -np.inf
    v1, v2 = rng.normal(size=(*lead, Lk1, d_v)), rng.normal(size=(*lead, Lk2, d_v))
    state1 = reference.online_softmax_update(*empty_state(lead, Lq, d_v), s1, v1)
    state2 = reference.online_softmax_update(*empty_state(lead, Lq, d_v), s2, v2)
    names = ("m1", "l1", "o1", "m2", "l2", "o2")
    return Case(dict(zip(names, (*state1, *state2))), note=note)


def _merge_cases(rng: np.random.Generator) -> list[Case]:
    Lq, Lk1, Lk2, d_v = int(rng.integers(5, 8)), *distinct(rng, 3, 2, 8)
    Lq2, Lk3, Lk4, d_v2 = int(rng.integers(5, 8)), *distinct(rng, 3, 2, 8)
    return [_merge_case(rng, (2, int(rng.integers(2, 4))), Lq, Lk1, Lk2, d_v,
                        "rows with either half, or both, fully masked"),
            _merge_case(rng, (), Lq2, Lk3, Lk4, d_v2, "no batch dims")]


def merge_states_reference(m1, l1, o1, m2, l2, o2):
    r"""The state of all the keys from the states of two disjoint parts of them.

    .. math::

        m = \max(m_1, m_2), \quad \ell = e^{m_1 - m}\ell_1 + e^{m_2 - m}\ell_2, \quad
        o = e^{m_1 - m} o_1 + e^{m_2 - m} o_2

    (shifting by 0 where both maxima are -inf, so that a query with no key gets 0, not NaN).
    """
    m = np.maximum(m1, m2)  # (..., Lq, 1)
    shift = np.where(np.isfinite(m), m, 0.0)
    a1, a2 = np.exp(m1 - shift), np.exp(m2 - shift)  # (..., Lq, 1)
    return m, a1 * l1 + a2 * l2, a1 * o1 + a2 * o2


def _merged_max(fn, case, outputs):
    want = np.maximum(case.inputs["m1"], case.inputs["m2"])
    bad = ~((outputs[0] == want) | np.isclose(outputs[0], want, rtol=1e-9, atol=0))
    if bad.any():
        return f"m at index {first(bad)} is not the larger of m1 and m2"
    return None


def _symmetric(fn, case, outputs):
    (m1, l1, o1, m2, l2, o2), _ = case.fresh()
    swapped = tuple(np.asarray(a, dtype=float) for a in fn(m2, l2, o2, m1, l1, o1))
    same = len(swapped) == 3 and all(a.shape == b.shape and np.allclose(a, b, rtol=1e-6, atol=1e-9, equal_nan=True)
                                     for a, b in zip(swapped, outputs))
    if not same:
        return "merging (half 2, half 1) gives another state than merging (half 1, half 2)"
    return None


MERGE_STATES = FunctionTask(
    id="04.merge_states",
    title="Merge two halves of the keys",
    points=3,
    name="merge_states",
    signature="merge_states(m1, l1, o1, m2, l2, o2) -> (m, l, o)",
    cases=_merge_cases,
    reference=merge_states_reference,
    outputs=("m", "l", "o"),
    properties=(
        has_shapes(lambda c: (c.inputs["m1"].shape, c.inputs["l1"].shape, c.inputs["o1"].shape),
                   "those of m1, l1 and o1"),
        Property("m must be the larger of the two maxima", _merged_max),
        finite(1, "l"),
        finite(2, "o"),
        Property("the order of the two halves must not matter", _symmetric),
    ),
    mistakes=online_slips.mistakes("04.merge_states"),
)

# ---------------------------------------------------------------------------------------------
# 04.block_backward
# ---------------------------------------------------------------------------------------------


def _bwd_case(rng, lead, Lq, block, d_k, d_v, extra, note):
    """One block of ``block`` keys out of ``block + extra``: out and lse come from the forward pass
    over all of them, so that the block's own softmax, or its own rowsum(P * dP), is not the right one."""
    q = 1.5 * rng.normal(size=(*lead, Lq, d_k))
    k_all, v_all = rng.normal(size=(*lead, block + extra, d_k)), rng.normal(size=(*lead, block + extra, d_v))
    out, lse = reference.blocked_attention(q, k_all, v_all, block_size=3, return_lse=True)
    start = int(rng.integers(0, extra + 1))
    keys = slice(start, start + block)
    return Case({"q": q, "k": k_all[..., keys, :], "v": v_all[..., keys, :], "out": out, "lse": lse,
                 "d_out": rng.normal(size=(*lead, Lq, d_v))}, note=note)


def _bwd_cases(rng: np.random.Generator) -> list[Case]:
    Lq, block, d_k, d_v = distinct(rng, 4, 2, 9)
    Lq2, block2, d_k2, d_v2 = distinct(rng, 4, 2, 9)
    return [_bwd_case(rng, (2, int(rng.integers(2, 4))), Lq, block, d_k, d_v, int(rng.integers(3, 7)),
                      "one block of the keys, batch and head dims"),
            _bwd_case(rng, (), Lq2, block2, d_k2, d_v2, int(rng.integers(3, 7)), "no batch dims")]


def block_backward_reference(q, k, v, out, lse, d_out):
    r"""One key block's share of the gradients, given the forward pass's ``out`` and ``lse``.

    .. math::

        P = e^{QK^\top/\sqrt{d_k} - \mathrm{lse}}, \quad D = \mathrm{rowsum}(dO \circ O), \quad
        dS = P \circ (dO\,V^\top - D), \quad
        dQ = \frac{dS\,K}{\sqrt{d_k}}, \ dK = \frac{dS^\top Q}{\sqrt{d_k}}, \ dV = P^\top dO

    q (..., Lq, d_k); k (..., block, d_k); v (..., block, d_v); out, d_out (..., Lq, d_v); lse (..., Lq).
    """
    return reference.blocked_attention_backward(q, k, v, out, lse, d_out)


def _bw(q, k, v, out, lse, d_out, *, d_local=False, no_lse=False, renormalise=False, sign=-1.0, use_d=True,
        scale_grads=True, scale_scores=True, ds_form="p(dp-D)", scale_slip=None):
    """The block's backward pass with one thing changed (each keyword plants one mistake; ``scale_slip``
    is a scale slip of attention_slips, used wherever the learner's one ``scale`` is)."""
    scale = scale_for(scale_slip, q.shape[-1], v.shape[-1], q.shape[-2], k.shape[-2], first_dim=q.shape[0])
    s = q @ np.swapaxes(k, -1, -2) * (scale if scale_scores else 1.0)  # (..., Lq, block)
    if renormalise:
        p = np.exp(s - s.max(axis=-1, keepdims=True))
        p /= p.sum(axis=-1, keepdims=True)
    else:
        p = np.exp(s) if no_lse else np.exp(s - lse[..., None])
    dp = d_out @ np.swapaxes(v, -1, -2)
    D = (p * dp).sum(axis=-1, keepdims=True) if d_local else (d_out * out).sum(axis=-1, keepdims=True)
    ds = p * (dp + sign * D) if use_d else p * dp
    if ds_form == "dp-D":
        ds = dp - D
    elif ds_form == "p*dp-D":
        ds = p * dp - D
    gq = scale if scale_grads in (True, "dq only") else 1.0  # "dq only": only dq scaled, dk left unscaled
    gk = scale if scale_grads in (True, "dk only") else 1.0
    return ds @ k * gq, np.swapaxes(ds, -1, -2) @ q * gk, np.swapaxes(p, -1, -2) @ d_out


def _bw_d_local(q, k, v, out, lse, d_out):
    return _bw(q, k, v, out, lse, d_out, d_local=True)


def _bw_no_lse(q, k, v, out, lse, d_out):
    return _bw(q, k, v, out, lse, d_out, no_lse=True)


def _bw_renormalised(q, k, v, out, lse, d_out):
    return _bw(q, k, v, out, lse, d_out, renormalise=True)


def _bw_d_sign(q, k, v, out, lse, d_out):
    return _bw(q, k, v, out, lse, d_out, sign=1.0)


def _bw_no_d(q, k, v, out, lse, d_out):
    return _bw(q, k, v, out, lse, d_out, use_d=False)


def _bw_no_grad_scale(q, k, v, out, lse, d_out):
    return _bw(q, k, v, out, lse, d_out, scale_grads=False)


def _bw_dk_unscaled(q, k, v, out, lse, d_out):
    return _bw(q, k, v, out, lse, d_out, scale_grads="dq only")


def _bw_dq_unscaled(q, k, v, out, lse, d_out):
    return _bw(q, k, v, out, lse, d_out, scale_grads="dk only")


def _bw_unscaled_scores(q, k, v, out, lse, d_out):
    return _bw(q, k, v, out, lse, d_out, scale_scores=False)


def _bw_no_p_in_ds(q, k, v, out, lse, d_out):
    return _bw(q, k, v, out, lse, d_out, ds_form="dp-D")


def _bw_d_not_times_p(q, k, v, out, lse, d_out):
    return _bw(q, k, v, out, lse, d_out, ds_form="p*dp-D")


BLOCK_BACKWARD = FunctionTask(
    id="04.block_backward",
    title="The backward pass of one block",
    points=3,
    name="block_backward",
    signature="block_backward(q, k, v, out, lse, d_out) -> (dq, dk, dv)",
    cases=_bwd_cases,
    reference=block_backward_reference,
    outputs=("dq", "dk", "dv"),
    properties=(
        has_shapes(lambda c: (c.inputs["q"].shape, c.inputs["k"].shape, c.inputs["v"].shape),
                   "those of q, k and v"),
        finite(0, "dq"),
        finite(1, "dk"),
        finite(2, "dv"),
    ),
    mistakes=(
        Mistake("D from this block only: rowsum(P ∘ dP) over the block's keys",
                "D = rowsum(P ∘ dP) runs over *all* the keys, not this block's: use the equal "
                "D = np.sum(d_out * out, axis=-1, keepdims=True), which the forward pass's out already holds.",
                _bw_d_local),
        Mistake("P not recomputed from the lse: np.exp(scores)",
                "the block's weights are P = np.exp(scores - lse[..., None]): lse is the log of the "
                "softmax's denominator over all the keys.", _bw_no_lse),
        Mistake("P renormalised over the block (a softmax of the block's scores alone)",
                "the weights are normalised over all the keys, not the block's: P = np.exp(scores - "
                "lse[..., None]), with no further division.", _bw_renormalised),
        Mistake("D's sign flipped: P ∘ (dP + D)",
                "the softmax's Jacobian subtracts the row's weighted mean: dS = P * (dP - D).", _bw_d_sign),
        Mistake("D left out: dS = P ∘ dP",
                "the softmax couples the row: dS = P * (dP - D), with D = rowsum(d_out * out).", _bw_no_d),
        Mistake("dq and dk not scaled by 1/√d_k",
                "the scores are q k^T / √d_k, so dq = dS @ k / √d_k and dk = dS^T @ q / √d_k.",
                _bw_no_grad_scale),
        Mistake("dk not scaled by 1/√d_k (dq is)",
                "dk comes from the same scores q k^T / √d_k as dq: dk = dS^T @ q / √d_k.", _bw_dk_unscaled),
        Mistake("dq not scaled by 1/√d_k (dk is)",
                "dq comes from the same scores q k^T / √d_k as dk: dq = dS @ k / √d_k.", _bw_dq_unscaled),
        Mistake("the scores not scaled by 1/√d_k before recomputing P",
                "recompute the forward pass's scores exactly: scores = q @ k^T / √d_k, then "
                "P = np.exp(scores - lse[..., None]).", _bw_unscaled_scores),
        Mistake("dS without its factor P: dP - D",
                "the softmax's Jacobian is diag(P) - P Pᵀ, so every entry of dS carries its weight: "
                "dS = P * (dP - D).", _bw_no_p_in_ds),
        Mistake("D not multiplied by P: dS = P ∘ dP - D",
                "P multiplies the whole bracket: dS = P * (dP - D), so that a key of weight 0 gets no gradient.",
                _bw_d_not_times_p),
        # One `scale` used for the scores and for dq, dk: the shared scale slips, wherever it is wrong.
        *attention_mistakes(
            "04.block_backward",
            lambda slip: None if "/" in slip else (  # no row with nothing to see: no "/nan" variant
                lambda q, k, v, out, lse, d_out: _bw(q, k, v, out, lse, d_out, scale_slip=slip)),
            has={"scale"}, words={"d_k_is": "q.shape[-1] (= k.shape[-1])"}),
    ),
)


TASKS = (MEMORY, ONLINE_UPDATE, BLOCKED_ATTENTION, MERGE_STATES, BLOCK_BACKWARD)
