r"""The slips a learner makes with an online-softmax state, written once for every task that folds
one: one step of the update (``04.online_update``), the blocked loop (``04.blocked_attention``) and the
merge of two halves of the keys (``04.merge_states``).

A state is ``(m, l, acc)``: the largest score seen ``m``, and the sums ``l = Σ e^(s - m)`` and
``acc = Σ e^(s - m) v`` measured from it (``o`` when merging). Folding new keys in has a few places
where it goes wrong, and each :class:`Slip` changes one of them:

* the new maximum: the running one ``max(m, block max)`` (right), the block's own, the old one kept,
  or an empty row's ``-inf`` taken as 0;
* the rescale of the old ``l`` and of the old ``acc`` (``by_l``, ``by_acc``), each on its own:
  ``α = e^(m - m_new)`` (right), none, inverted ``e^(m_new - m)``, measured from the block's maximum,
  α also multiplying the block's part, or α on the block's part instead of the old sum; when merging,
  both halves, neither, or one half only;
* which maximum the block's exponentials are measured from: ``m_new`` (right), the block's, the old
  one, none;
* the guard of a row with no key yet (``-inf - (-inf)`` is NaN);
* the final division by ``l``: once at the end (right), never, inside the loop, twice;
* which blocks the loop visits.

:func:`update`, :func:`blocked` and :func:`merge` are the right computation with those places as
keyword arguments (the defaults are right). :func:`mistakes` builds a task's catalogue from
:data:`SLIPS`, so that a slip has the same name and hint in every task where it can occur; a name or
hint says ``{acc}`` for the output sum (``acc``, or ``o`` when merging) and ``{factor}`` for the right
rescale factor. The slips that no case can tell from another one in a task are left out of it (see
``tasks`` of each slip).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable

import numpy as np

from crossmodal_edu.grading.spec import Mistake
from crossmodal_edu.grading.tasks.attention_slips import scale_for

__all__ = ["Slip", "SLIPS", "update", "blocked", "merge", "mistakes", "empty_state"]

UPDATE, BLOCKED, MERGE = "04.online_update", "04.blocked_attention", "04.merge_states"

# How each task names the parts of a state, for the templates of names and hints.
_WORDS = {
    UPDATE: dict(acc="acc", factor="α = e^(m - m_new)", inverse="e^(m_new - m)", new="m_new", old="m",
                 part="the block's P.sum(-1) and P @ v", var="m_new"),
    BLOCKED: dict(acc="acc", factor="alpha = np.exp(m - m_new)", inverse="np.exp(m_new - m)", new="m_new",
                  old="m", part="the block's p.sum(-1) and p @ v", var="m_new"),
    MERGE: dict(acc="o", factor="e^(m_i - m)", inverse="e^(m - m_i)", new="m = max(m1, m2)", old="m_i",
                part="the other half", var="m"),
}


def empty_state(lead: tuple[int, ...], Lq: int, d_v: int):
    """The state before any key: m = -inf, l = 0, acc = 0."""
    return (np.full((*lead, Lq, 1), -np.inf), np.zeros((*lead, Lq, 1)), np.zeros((*lead, Lq, d_v)))


def _finite_or_0(m):
    return np.where(np.isfinite(m), m, 0.0)


def update(m, l, acc, scores, v, *, new_max="running", empty_as_0=False, by_l="alpha", by_acc="alpha",
           exps_from="new", guard=True, keep_old_max=False, normalised=False, keepdims=True, block_axis=-1):
    """One step of the online softmax, with the places a slip changes as keywords (defaults: right).

    m, l ``(..., Lq, 1)``; acc ``(..., Lq, d_v)``; scores ``(..., Lq, block)``; v ``(..., block, d_v)``.
    """
    block = scores.max(axis=-1, keepdims=True) if block_axis == -1 else scores.max()  # (..., Lq, 1)
    old = np.where(np.isneginf(m), 0.0, m) if empty_as_0 else m
    m_new = block if new_max == "block" else np.maximum(old, block)  # (..., Lq, 1)
    shift = _finite_or_0(m_new) if guard else m_new
    with np.errstate(over="ignore", invalid="ignore"):  # the slips overflow where a learner's would: inf is the point
        alpha = np.exp(old - shift)
        factors = {"alpha": alpha, "none": 1.0, "inverted": np.exp(shift - old), "block": np.exp(old - block)}
        p = np.exp(scores - {"new": shift, "block": block, "old": old, "zero": 0.0}[exps_from])  # (..., Lq, block)

    def fold(x, part, by):
        if by == "whole":
            return alpha * (x + part)
        return x + alpha * part if by == "moved" else factors[by] * x + part

    l_new = fold(l, p.sum(axis=-1, keepdims=keepdims), by_l)
    acc_new = fold(acc, p @ v, by_acc)
    if normalised:
        acc_new = acc_new / l_new
    return (m if keep_old_max else m_new), l_new, acc_new


def blocked(q, k, v, block_size=3, *, visits="all", divide="end", scale_slip=None, **slip):
    """The blocked attention loop over keys, each step an :func:`update` with ``slip``'s keywords.

    ``visits``: "all" blocks, "whole" ones only (range(0, Lk - block_size + 1, …)), or "early" (stops
    one block early, range(0, Lk - block_size, …)). ``divide``: by l at the "end", "none", in the
    "loop" only, or "twice" (in the loop and at the end). ``scale_slip``: a scale slip of
    :mod:`~crossmodal_edu.grading.tasks.attention_slips` ("by_d_v", ...), or None for 1/√d_k.
    """
    m, l, acc = empty_state(q.shape[:-2], q.shape[-2], v.shape[-1])
    Lk = k.shape[-2]
    factor = scale_for(scale_slip, q.shape[-1], v.shape[-1], q.shape[-2], Lk, first_dim=q.shape[0])
    stop = {"all": Lk, "whole": Lk - block_size + 1, "early": Lk - block_size}[visits]
    for start in range(0, stop, block_size):
        keys = slice(start, start + block_size)
        scores = q @ np.swapaxes(k[..., keys, :], -1, -2) * factor  # (..., Lq, block)
        m, l, acc = update(m, l, acc, scores, v[..., keys, :], **slip)  # noqa: E741
        if divide in ("loop", "twice"):
            acc = acc / l
    return acc if divide in ("none", "loop") else acc / l


def merge(m1, l1, o1, m2, l2, o2, *, new_max="max", by_l="both", by_acc="both", guard=True, normalised=False,
          larger_only=False):
    """The state of all the keys from the states of two halves, with a slip's keywords (defaults: right).

    ``new_max``: "max" (right), "min", or "first" (both halves brought to m1, m returned as the max).
    ``by_l``, ``by_acc``: "both" halves rescaled (right), "none", "inverted", "first" or "second" only.
    """
    m = {"min": np.minimum, "global": lambda a, b: np.max([a, b])}.get(new_max, np.maximum)(m1, m2)  # (..., Lq, 1)
    target = m1 if new_max == "first" else m
    shift = _finite_or_0(target) if guard else target
    a1, a2 = np.exp(m1 - shift), np.exp(m2 - shift)  # (..., Lq, 1)
    factors = {"both": (a1, a2), "none": (1.0, 1.0), "inverted": (np.exp(shift - m1), np.exp(shift - m2)),
               "first": (a1, 1.0), "second": (1.0, a2)}
    if larger_only:
        first = m1 >= m2
        return m, np.where(first, l1, l2), np.where(first, o1, o2)
    (f1, f2), (g1, g2) = factors[by_l], factors[by_acc]
    l, o = f1 * l1 + f2 * l2, g1 * o1 + g2 * o2
    return m, l, (o / l if normalised else o)


@dataclass(frozen=True)
class Slip:
    """One slip: its ``name`` and ``hint`` (templates, see the module's docstring), the keywords of
    :func:`update`, :func:`blocked` or :func:`merge` that plant it (``knobs``, or ``merge_knobs`` where
    merging says it otherwise), and the ``tasks`` where it can occur and be told apart."""

    name: str
    hint: str
    knobs: dict[str, Any]
    tasks: frozenset[str]
    merge_knobs: dict[str, Any] = field(default_factory=dict)


def _slip(name, hint, tasks, merge_knobs=None, **knobs):
    return Slip(name, hint, knobs, frozenset(tasks), merge_knobs if merge_knobs is not None else knobs)


_ALL = (UPDATE, BLOCKED, MERGE)
_FOLDS = (UPDATE, BLOCKED)

SLIPS: tuple[Slip, ...] = (
    # The rescale of the old sums: missing.
    _slip("{acc} not rescaled to the new maximum (l is)",
          "{acc} was measured from the old maximum, like l: multiply it by {factor} too, before adding "
          "{part}. l and {acc} are rescaled alike.", _ALL, by_acc="none"),
    _slip("l not rescaled to the new maximum ({acc} is)",
          "l was measured from the old maximum, like {acc}: multiply it by {factor} too, before adding "
          "{part}. l and {acc} are rescaled alike.", _ALL, by_l="none"),
    _slip("neither l nor {acc} rescaled to the new maximum",
          "both sums were measured from their own, old maximum: multiply l and {acc} by {factor} ≤ 1 "
          "before adding {part}.", _ALL, by_l="none", by_acc="none"),
    # The rescale inverted.
    _slip("the rescale factor inverted for l and {acc}: {inverse} instead of {factor}",
          "when the maximum grows, the old sums must shrink: the factor is e^(old maximum - new maximum) ≤ 1.",
          (UPDATE, MERGE), by_l="inverted", by_acc="inverted"),
    _slip("the rescale factor inverted for l only: {inverse}",
          "l and {acc} are rescaled by the same factor, {factor} ≤ 1; yours is upside down for l.",
          (UPDATE, MERGE), by_l="inverted"),
    _slip("the rescale factor inverted for {acc} only: {inverse}",
          "l and {acc} are rescaled by the same factor, {factor} ≤ 1; yours is upside down for {acc}.",
          (UPDATE, MERGE), by_acc="inverted"),
    # In the loop, the first block meets m = -inf: an inverted α (in l, in acc or in both) is then
    # e^(+inf) and inf · 0 = NaN, as is P measured from the old m; every output is NaN alike.
    _slip("NaN from the first block: e^(… - m) with m = -inf (alpha inverted, or p measured from the old m)",
          "in the first block m = -inf, so np.exp(m_new - m) = inf, and inf · 0 = NaN. The factor that "
          "rescales the old sums is alpha = np.exp(m - m_new) ≤ 1 (0 in the first block), for l and acc alike, "
          "and p = np.exp(scores - m_new).", (BLOCKED,), by_l="inverted", by_acc="inverted"),
    # The rescale measured from the block's maximum.
    _slip("α measured from the block's maximum, e^(m - max(scores)), not from m_new",
          "α converts sums measured from the old maximum m into sums measured from the new one: "
          "α = e^(m - m_new) with m_new = max(m, the block's maximum), for l and acc alike.",
          _FOLDS, by_l="block", by_acc="block"),
    _slip("α for l measured from the block's maximum, e^(m - max(scores)), not from m_new",
          "l and acc are rescaled by the same α = e^(m - m_new), with m_new = max(m, the block's maximum).",
          _FOLDS, by_l="block"),
    _slip("α for acc measured from the block's maximum, e^(m - max(scores)), not from m_new",
          "l and acc are rescaled by the same α = e^(m - m_new), with m_new = max(m, the block's maximum).",
          _FOLDS, by_acc="block"),
    # α also multiplies the block's part.
    _slip("α also multiplies the block's part: α · (l + …) and α · (acc + …)",
          "only the old sums are measured from the old maximum; the block's exponentials are already "
          "measured from m_new: l_new = α · l + P.sum(-1), acc_new = α · acc + P @ v.",
          _FOLDS, by_l="whole", by_acc="whole"),
    _slip("α also multiplies the block's part of l: α · (l + P.sum(-1))",
          "the block's exponentials are already measured from m_new: l_new = α · l + P.sum(-1).",
          _FOLDS, by_l="whole"),
    _slip("α also multiplies the block's part of acc: α · (acc + P @ v)",
          "the block's exponentials are already measured from m_new: acc_new = α · acc + P @ v.",
          _FOLDS, by_acc="whole"),
    # α on the block's part instead of the old sum.
    _slip("α multiplies the block's part instead of the old sums: l + α · P.sum(-1), acc + α · (P @ v)",
          "α converts the old sums, measured from the old maximum, to the new one; the block's exponentials "
          "are already measured from m_new: l_new = α · l + P.sum(-1), acc_new = α · acc + P @ v.",
          _FOLDS, by_l="moved", by_acc="moved"),
    _slip("α multiplies the block's part of l instead of the old l: l + α · P.sum(-1)",
          "α belongs to the old sum: l_new = α · l + P.sum(-1).", _FOLDS, by_l="moved"),
    _slip("α multiplies the block's part of acc instead of the old acc: acc + α · (P @ v)",
          "α belongs to the old sum: acc_new = α · acc + P @ v.", _FOLDS, by_acc="moved"),
    # Which maximum the block's exponentials are measured from.
    _slip("the block's exponentials measured from the block's maximum, not from m_new",
          "l and acc are measured from m_new = max(m, the block's maximum): P = e^(scores - m_new), or the "
          "block's part is on another scale than the old, rescaled part.", _FOLDS, exps_from="block"),
    _slip("the block's exponentials measured from the old maximum m, not from m_new",
          "l and acc are measured from the new maximum: P = e^(scores - m_new); the old m may be -inf, "
          "or lower than the block's scores.", (UPDATE,), exps_from="old"),
    _slip("the block's exponentials not measured from the new maximum (np.exp(scores))",
          "P = np.exp(scores - m_new): without the shift e^score overflows, and P is not on the scale of l "
          "and acc.", _FOLDS, exps_from="zero"),
    _slip("no maximum at all: plain sums of e^score, never rescaled",
          "mathematically the same, but e^score overflows for scores above ~709 and underflows to 0 below "
          "~-745 (then 0 / 0): measure every exponential from the running maximum, P = e^(scores - m_new), "
          "and rescale the old sums by α = e^(m - m_new).", _FOLDS, exps_from="zero", by_l="none", by_acc="none"),
    # The new maximum.
    _slip("used the block's maximum instead of the running maximum",
          "m_new = max(m, the block's maximum): a block whose scores are all below the old maximum must not "
          "lower it (then α = e^(m - m_new) > 1 can overflow).", _FOLDS, new_max="block"),
    _slip("the maximum is not carried forward: the old m is returned, or m = m_new is missing",
          "after the block the state is measured from m_new: return it (in the loop, m = m_new), or the "
          "next α is measured from a stale maximum.", _FOLDS, keep_old_max=True),
    _slip("an empty maximum taken as 0 instead of -inf",
          "m = -inf means no key yet; as 0 it is larger than every score below 0, so m_new is wrong there, "
          "and scores far below 0 underflow to e^(s - 0) = 0 (then 0 / 0). Take m_new = max(m, the block's "
          "maximum) with m = -inf; guard only the shift where m_new itself is -inf.", _FOLDS, empty_as_0=True),
    _slip("m = the smaller of the two maxima",
          "the merged state is measured from the larger maximum, m = max(m1, m2), so that every factor "
          "e^(m_i - m) is ≤ 1 (and a masked half, m_i = -inf, does not make m -inf).", (MERGE,), new_max="min"),
    _slip("m = np.max([m1, m2]): the largest maximum of all the rows, not each row's larger one",
          "np.max without an axis reduces everything to one number: m = np.maximum(m1, m2), elementwise, "
          "gives each query the larger of its two maxima.", (MERGE,), new_max="global"),
    _slip("both halves brought to m1 instead of the larger maximum",
          "the merged state is measured from m = max(m1, m2): rescale both halves, l = e^(m1 - m) l1 + "
          "e^(m2 - m) l2; measured from m1, l does not match the m you return.", (MERGE,), new_max="first"),
    # One half only.
    _slip("only the first half rescaled: e^(m2 - m) left out",
          "each half is measured from its own maximum: rescale both, l = e^(m1 - m) l1 + e^(m2 - m) l2, "
          "and the same for o.", (MERGE,), by_l="first", by_acc="first"),
    _slip("only the second half rescaled: e^(m1 - m) left out",
          "each half is measured from its own maximum: rescale both, l = e^(m1 - m) l1 + e^(m2 - m) l2, "
          "and the same for o.", (MERGE,), by_l="second", by_acc="second"),
    _slip("kept only the half with the larger maximum",
          "the other half's keys still count, only less: add both, each rescaled by e^(m_i - m).",
          (MERGE,), larger_only=True),
    # A row with no key.
    _slip("NaN on a row with no unmasked key: -inf - (-inf)",
          "there {new} is -inf, and -inf - (-inf) is NaN: subtract 0 instead where it is -inf, "
          "shift = np.where(np.isfinite({var}), {var}, 0.0), so that l and {acc} stay 0.", (UPDATE, MERGE),
          guard=False),
    _slip("the block's maximum over the whole array (no axis), not each row's",
          "each query keeps its own running maximum: scores.max(axis=-1, keepdims=True), one per row; "
          "np.max(scores) is one number for all of them.", (UPDATE,), block_axis=None),
    _slip("the block's row sums lost their axis: P.sum(-1) without keepdims=True",
          "P.sum(-1) has shape (..., Lq) and l (..., Lq, 1): added, they broadcast to (..., Lq, Lq). "
          "Keep the axis: P.sum(axis=-1, keepdims=True).", (UPDATE,), keepdims=False),
    # The division by l.
    _slip("returned {acc} / l: the state's {acc} is unnormalised",
          "a state keeps the unnormalised sum {acc}, so that more keys can be folded in later; only the final "
          "output is {acc} / l.", (UPDATE, MERGE), normalised=True),
    _slip("no final division by l",
          "acc is the unnormalised output: return acc / l.", (BLOCKED,), divide="none"),
    _slip("acc divided by l inside the loop",
          "acc must stay the unnormalised sum while blocks are folded in (α rescales it as it is): divide "
          "once, after the loop, return acc / l.", (BLOCKED,), divide="loop"),
    _slip("divided by l twice: inside the loop and at the end",
          "acc must stay the unnormalised sum while blocks are folded in: divide once, after the loop.",
          (BLOCKED,), divide="twice"),
    # Which blocks are visited.
    _slip("the last, shorter block is skipped",
          "range(0, Lk, block_size) visits every block; the last one may be shorter, and slicing "
          "k[..., start:start + block_size, :] handles that.", (BLOCKED,), visits="whole"),
    _slip("the loop stops one block early: range(0, Lk - block_size, block_size)",
          "range(0, Lk, block_size) visits every block, the last (maybe shorter) one too.", (BLOCKED,),
          visits="early"),
)


def _impl(task_id: str, knobs: dict[str, Any]) -> Callable[..., Any]:
    if task_id == UPDATE:
        return partial(update, **knobs)
    if task_id == MERGE:
        return partial(merge, **knobs)

    def blocked_attention(q, k, v, block_size=3):
        return blocked(q, k, v, block_size, **knobs)

    return blocked_attention


def mistakes(task_id: str) -> tuple[Mistake, ...]:
    """The catalogued mistakes of task ``task_id`` that come from a slip of :data:`SLIPS`, in its words.

    Where a case has rows with no key (04.online_update, 04.merge_states), each slip is also
    recognised written without the guard of those rows (``also``): a learner who forgot both is told
    the slip first, and the NaN once it is fixed.
    """
    words = _WORDS[task_id]
    found = []
    for s in SLIPS:
        if task_id not in s.tasks:
            continue
        knobs = s.merge_knobs if task_id == MERGE else s.knobs
        unguarded = () if task_id == BLOCKED or "guard" in knobs else (_impl(task_id, {**knobs, "guard": False}),)
        found.append(Mistake(s.name.format(**words), s.hint.format(**words), _impl(task_id, knobs), also=unguarded))
    return tuple(found)


def slip_names(task_id: str) -> set[str]:
    """The names of the mistakes :func:`mistakes` gives ``task_id``."""
    return {m.name for m in mistakes(task_id)}
