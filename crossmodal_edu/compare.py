r"""A one-line check that a learner's result matches a reference (after Karpathy's ``cmp``).

.. code-block:: python

    compare("softmax", my_softmax(x), softmax(x))
    # softmax: shape (2, 5, 7) ok | max |ours - reference| < 1e-12: True

The passing line never shows the actual (tiny, BLAS-dependent) difference, so a lesson cell that
ends in ``compare(...)`` can be marked ``# NBVAL_CHECK_OUTPUT``. A failing line says what is wrong
in words: which shapes disagree, where a NaN is, or how large the largest difference is and where.

Used from notebooks/01_attention_in_numpy.ipynb onwards.
"""

from typing import Any

import numpy as np

from crossmodal_edu._checks import fmt_shape

__all__ = ["compare", "to_numpy"]


def to_numpy(value: Any) -> np.ndarray:
    """A NumPy array from an array, a (possibly grad-tracking, GPU) PyTorch tensor, or a number."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        value = value.detach().cpu()
        try:
            return value.numpy()
        except TypeError:  # dtypes NumPy lacks, such as bfloat16
            return value.double().numpy()
    return np.asarray(value)


def _as_numbers(value: Any) -> np.ndarray | None:
    """``value`` as a float64 (or complex128) array, or ``None`` if it is not numeric."""
    try:
        array = to_numpy(value)
    except Exception:
        return None
    if array.dtype.kind == "c":
        return array.astype(np.complex128)
    if array.dtype.kind not in "biuf":
        return None
    return array.astype(np.float64)


def _is_discrete(value: Any) -> bool:
    try:
        return to_numpy(value).dtype.kind in "biu"
    except Exception:
        return False


def _index(flat: int, shape: tuple) -> str:
    return str(tuple(int(i) for i in np.unravel_index(flat, shape)))


def verdict(name: str, ours: Any, reference: Any, atol: float = 1e-12) -> tuple[bool, str]:
    r"""Whether ``ours`` matches ``reference``, and the one line :func:`compare` prints about it.

    They match when the shapes are equal (no broadcasting: it hides bugs), NaNs sit in the same
    places, and

    .. math::

        \max_i \lvert \mathrm{ours}_i - \mathrm{reference}_i \rvert < \mathrm{atol}

    (with ``atol=0``, when every entry is exactly equal). Accepts NumPy arrays, PyTorch tensors
    (detached and moved to the CPU for you) and Python numbers.

    Printed lines (passing, then the failures):

    - ``softmax: shape (2, 5, 7) ok | max |ours - reference| < 1e-12: True``
    - ``softmax: shape (2, 5, 7) ok | exact match: True``  (``atol=0``)
    - ``softmax: shape mismatch | ours has shape (2, 7), reference has shape (2, 5, 7)``
    - ``softmax: shape (2, 5, 7) ok | ours has 3 NaN value(s) where reference has none, first at index (1, 2, 0)``
    - ``softmax: shape (2, 5, 7) ok | max |ours - reference| < 1e-12: False | largest difference 0.31 at index (1, 2, 0) (ours 0.5, reference 0.19); 4 of 70 entries differ by 1e-12 or more``
    """
    if atol < 0:
        raise ValueError(f"atol must be non-negative: got {atol}")
    if ours is None:
        return False, f"{name}: ours is None, not an array; did your function forget to `return`?"
    o = _as_numbers(ours)
    r = _as_numbers(reference)
    if _is_discrete(ours) and _is_discrete(reference):
        atol = 0  # masks and token ids are either identical or wrong
    if o is None:
        return False, f"{name}: ours is a {type(ours).__name__}, not an array, tensor or number"
    if r is None:
        return False, f"{name}: reference is a {type(reference).__name__}, not an array, tensor or number"

    if o.shape != r.shape:
        hint = " (same number of entries: a missing transpose or reshape?)" if o.size == r.size else ""
        return False, (
            f"{name}: shape mismatch | ours has shape {fmt_shape(o.shape)}, "
            f"reference has shape {fmt_shape(r.shape)}{hint}"
        )
    head = f"{name}: shape {fmt_shape(o.shape)} ok"

    nan_o, nan_r = np.isnan(o), np.isnan(r)
    for who, other, extra in (("ours", "reference", nan_o & ~nan_r), ("reference", "ours", nan_r & ~nan_o)):
        if extra.any():
            first = _index(int(np.flatnonzero(extra)[0]), o.shape)
            return False, (
                f"{head} | {who} has {int(extra.sum())} NaN value(s) where {other} has none, "
                f"first at index {first}"
            )

    # Equal entries (including equal infinities and shared NaNs) differ by exactly 0.
    equal = (o == r) | (nan_o & nan_r)
    with np.errstate(invalid="ignore"):
        diff = np.where(equal, 0.0, np.abs(o - r))
    largest = float(diff.max()) if diff.size else 0.0
    if atol == 0:
        test, ok = "exact match", largest == 0.0
    else:
        test, ok = f"max |ours - reference| < {atol:g}", largest < atol
    if ok:
        return True, f"{head} | {test}: True"

    where = int(np.argmax(diff))
    off = int((diff >= atol).sum()) if atol > 0 else int((diff > 0).sum())
    bound = f"by {atol:g} or more" if atol > 0 else "at all"
    return False, (
        f"{head} | {test}: False | largest difference {largest:.3g} at index "
        f"{_index(where, o.shape)} (ours {o.flat[where]:.6g}, reference {r.flat[where]:.6g}); "
        f"{off} of {o.size} entries differ {bound}"
    )


def compare(name: str, ours: Any, reference: Any, atol: float = 1e-12) -> None:
    """Print one line saying whether ``ours`` matches ``reference`` (see :func:`verdict`).

    Returns nothing, so a notebook cell that ends in ``compare(...)`` shows only the line; use
    :func:`verdict` to get the answer as a bool.
    """
    print(verdict(name, ours, reference, atol)[1])
