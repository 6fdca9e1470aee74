"""What kind of difference there is between a learner's array and the reference, in words.

"The values differ from the reference" is a dead end; "yours is the reference times 0.354 (= 1/√8)"
or "yours is the reference with its last two axes swapped" or "only rows 3–4 along axis 1 differ"
says where to look. :func:`describe_difference` tries a short list of simple relations, from the
most specific to the least, and returns the first that holds (or ``None``); :func:`describe_shape`
does the same for an output of the right size and the wrong shape. Neither names a mistake: the
catalogue of each task does that. They run on what the judge already holds (two float arrays), so
they cost nothing when the answer is right.
"""

from __future__ import annotations

import itertools
import math
from typing import Optional

import numpy as np

__all__ = ["describe_difference", "describe_shape", "describe_factor"]


def _close(a: np.ndarray, b: np.ndarray, rtol: float = 1e-5) -> bool:
    scale = max(float(np.max(np.abs(b), initial=0.0)), 1e-12)
    return a.shape == b.shape and bool(np.all(np.abs(a - b) <= rtol * scale + 1e-12))


def describe_factor(c: float) -> str:
    """``0.354 (= 1/√8)``: a factor, with the simple form it has, if any (n, 1/n, √n, 1/√n for a
    whole n up to 4096)."""
    text = f"{c:.4g}"
    size = abs(c)
    if size < 1e-12:
        return text
    sign = "-" if c < 0 else ""
    for value, form in ((size, "{n}"), (1 / size, "1/{n}"), (size ** 2, "√{n}"), (1 / size ** 2, "1/√{n}")):
        n = round(value)
        if 2 <= n <= 4096 and abs(value - n) <= 1e-4 * n:
            return f"{text} (= {sign}{form.format(n=n)})"
    return text


def _axis_name(axis: int, ndim: int) -> str:
    last = axis - ndim
    return f"axis {axis}" + (" (the last)" if last == -1 else f" (axis {last})" if last >= -2 else "")


def _ranges(indices: list[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``0-2, 5``."""
    parts, start = [], None
    for i, j in itertools.zip_longest(indices, indices[1:]):
        start = i if start is None else start
        if j != i + 1:
            parts.append(f"{start}" if start == i else f"{start}–{i}")
            start = None
    return ", ".join(parts)


def describe_difference(mine: np.ndarray, reference: np.ndarray) -> Optional[str]:
    """A sentence saying how ``mine`` (the learner's) relates to ``reference`` (same shape), or
    ``None`` when no simple relation holds."""
    a, b = np.asarray(mine, dtype=float), np.asarray(reference, dtype=float)
    if a.shape != b.shape or a.size == 0:
        return None
    bad_a, bad_b = ~np.isfinite(a), ~np.isfinite(b)
    if (bad_a & ~bad_b).any():
        where = tuple(int(i) for i in np.argwhere(bad_a & ~bad_b)[0])
        kinds = "NaN" if np.isnan(a[bad_a & ~bad_b]).all() else "inf or NaN"
        return (f"yours has {kinds} in {int((bad_a & ~bad_b).sum())} of {a.size} entries where the reference is "
                f"finite (the first at index {where})")
    if (bad_b & ~bad_a).any() or not np.array_equal(bad_a, bad_b):
        return None
    if bad_b.any():  # the same entries are infinite in both: compare the rest
        a, b = np.where(bad_b, 0.0, a), np.where(bad_b, 0.0, b)
    if np.max(np.abs(a - b)) <= 1e-5 * max(1.0, float(np.max(np.abs(b)))):
        return None  # rounding: no kind of difference worth a sentence
    if np.all(a == 0) and not np.all(b == 0):
        return "yours is all zeros"
    bb = float(np.sum(b * b))
    if bb > 0:
        c = float(np.sum(a * b)) / bb
        if abs(c - 1) > 1e-6 and _close(a, c * b):
            if abs(c + 1) < 1e-6:
                return "yours is the reference with its sign flipped"
            return f"yours is the reference times {describe_factor(c)}, everywhere"
    d = a - b
    if a.size > 1 and np.ptp(d) <= 1e-6 * max(1.0, float(np.max(np.abs(b)))):
        return f"yours is the reference plus {float(d.flat[0]):.4g}, everywhere"
    for i, j in itertools.combinations(range(a.ndim), 2):
        if a.shape[i] == a.shape[j] > 1 and _close(a, np.swapaxes(b, i, j)):
            which = "its last two axes" if (i, j) == (a.ndim - 2, a.ndim - 1) else f"axes {i} and {j}"
            return f"yours is the reference with {which} swapped (a transpose too many, or one missing)"
    for axis in range(a.ndim):
        n = a.shape[axis]
        if n < 2:
            continue
        front, back = [slice(None)] * a.ndim, [slice(None)] * a.ndim
        front[axis], back[axis] = slice(1, None), slice(None, -1)
        if _close(a[tuple(front)], b[tuple(back)]):
            return (f"yours is the reference shifted by one position along {_axis_name(axis, a.ndim)}: your entry "
                    f"i + 1 holds the reference's entry i")
        if _close(a[tuple(back)], b[tuple(front)]):
            return (f"yours is the reference shifted by one position along {_axis_name(axis, a.ndim)}: your entry "
                    f"i holds the reference's entry i + 1")
        if _close(a, np.flip(b, axis)):
            return f"yours is the reference in reverse order along {_axis_name(axis, a.ndim)}"
    for axis in range(a.ndim):
        if a.shape[axis] < 2:
            continue
        bb_axis = np.sum(b * b, axis=axis, keepdims=True)
        if np.any(bb_axis == 0):
            continue
        c = np.sum(a * b, axis=axis, keepdims=True) / bb_axis
        if np.ptp(c) > 1e-6 and _close(a, c * b):
            return (f"each slice along {_axis_name(axis, a.ndim)} is the reference times a factor of its own "
                    f"(from {float(c.min()):.3g} to {float(c.max()):.3g}): a sum or a normalisation over the "
                    f"wrong axis, or a missing one?")
    differs = ~np.isclose(a, b, rtol=1e-6, atol=1e-9)
    best = None
    for axis in range(a.ndim):
        n = a.shape[axis]
        hit = differs.any(axis=tuple(k for k in range(a.ndim) if k != axis))
        count = int(hit.sum())
        if n > 1 and 0 < count <= n // 2 and (best is None or count / n < best[0]):  # a few: worth saying which
            best = (count / n, axis, [int(i) for i in np.flatnonzero(hit)], n)
    if best is not None:
        _, axis, indices, n = best
        return (f"only entries {_ranges(indices)} of the {n} along {_axis_name(axis, a.ndim)} differ; the "
                f"others are right")
    return None


def describe_shape(mine: np.ndarray, reference: np.ndarray) -> Optional[str]:
    """For ``mine`` of another shape than ``reference`` but as many entries: whether it holds the
    reference's numbers with its axes permuted, or in the right order but reshaped."""
    a, b = np.asarray(mine, dtype=float), np.asarray(reference, dtype=float)
    if a.size != b.size or a.shape == b.shape or a.size == 0:
        return None
    if b.ndim <= 6:
        for order in itertools.permutations(range(b.ndim)):
            moved = np.transpose(b, order)
            if moved.shape == a.shape and _close(a, moved):
                return (f"it holds the reference's numbers with the axes in another order: your axes are the "
                        f"reference's axes {order}")
    if _close(a.reshape(-1), b.reshape(-1)):
        return "it holds the reference's numbers in the right order: only the shape is wrong (a reshape)"
    if math.prod(a.shape) == math.prod(b.shape):
        return "the same number of entries: a missing transpose or reshape?"
    return None
