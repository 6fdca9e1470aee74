"""Properties shared by the tasks of several lessons, each a :class:`~crossmodal_edu.grading.spec.Property`
whose failure message is a plain sentence with the place where it fails; and, for "predict, then run"
questions, how a predicted value is compared (:func:`near`) and read (:func:`a_number`, :func:`a_shape`)."""

from __future__ import annotations

import decimal
import math
import numbers
from typing import Any, Callable, Optional

import numpy as np

from crossmodal_edu.compare import to_numpy
from crossmodal_edu.grading.spec import Case, Property

__all__ = ["has_shapes", "finite", "between_0_and_1", "sums_to_one", "where", "first", "first_value", "near",
           "a_number", "a_shape"]


def near(a, b, rel_tol: float = 0.02) -> bool:
    """A predicted number is right if within ``rel_tol`` (2%) of the answer: rounding is not a mistake."""
    return math.isclose(float(a), float(b), rel_tol=rel_tol)


def _what(value: Any) -> str:
    """What came, in words, for a message: ``a str: 'no idea'``, ``a tensor of shape (2, 3)``."""
    shape = getattr(value, "shape", None)
    if shape is not None and not isinstance(value, (np.generic, numbers.Number)):
        kind = "a tensor" if hasattr(value, "detach") else "an array"
        return f"{kind} of shape {tuple(int(n) for n in shape)}"
    name = type(value).__name__
    shown = repr(value)
    shown = shown if len(shown) <= 40 else shown[:39] + "…"
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}: {shown}"


def a_number(value: Any) -> float:
    """A predicted number as a float: an int or a float, a NumPy scalar, or an array or tensor holding one
    number (``np.float64(4.9)``, ``torch.tensor(4.9)``, ``np.array([4.9])``). Anything else, a bool or a
    string among them, raises ``TypeError`` saying what came (``a str: 'no idea'``)."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(_what(value))
    if isinstance(value, (numbers.Real, decimal.Decimal)):
        return float(value)
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            raise TypeError(_what(value)) from None
        raise TypeError(f"{_what(value)} (write the number itself, without quotes)")
    if hasattr(value, "shape") and hasattr(value, "dtype"):  # an array or a tensor, without importing torch
        array = to_numpy(value)
        if array.size == 1 and array.dtype.kind in "iuf":
            return float(array.reshape(()))
        if array.size == 1:
            raise TypeError(f"{_what(value)} and dtype {array.dtype}")
        raise TypeError(f"{_what(value)}, not one number")
    raise TypeError(_what(value))


def a_shape(value: Any) -> tuple[int, ...]:
    """A predicted shape as a tuple of ints, from a tuple, a list, a ``torch.Size`` or a 1-d array of whole
    numbers; anything else raises ``TypeError`` saying what came."""
    items = value
    if hasattr(value, "shape") and hasattr(value, "dtype") and len(value.shape) == 1:
        items = to_numpy(value).tolist()
    elif not isinstance(value, (tuple, list)):
        raise TypeError(_what(value))
    shape = []
    for i, n in enumerate(items):
        try:
            number = a_number(n)
        except TypeError as why:
            raise TypeError(f"{_what(value)}, whose item {i} is {why}") from None
        if not number.is_integer():
            raise TypeError(f"{_what(value)}, whose item {i} is not a whole number")
        shape.append(int(number))
    return tuple(shape)


def where(index) -> str:
    return str(tuple(int(i) for i in index))


def first(bad: np.ndarray) -> str:
    """The index of the first True entry, as ``(0, 2, 1)``."""
    return where(np.unravel_index(int(np.flatnonzero(bad)[0]), bad.shape))


def first_value(a: np.ndarray, bad: np.ndarray) -> float:
    """The entry of ``a`` at the first True entry of ``bad`` (of the same shape)."""
    return float(a[np.unravel_index(int(np.flatnonzero(bad)[0]), a.shape)])


def has_shapes(expected: Callable[[Case], tuple[tuple[int, ...], ...]], words: str) -> Property:
    """The outputs have the shapes ``expected(case)`` (one per output); ``words`` names them."""

    def test(fn, case, outputs) -> Optional[str]:
        for got, want in zip(outputs, expected(case)):
            if got.shape != tuple(want):
                return f"an output has shape {tuple(got.shape)}, but it should have shape {tuple(want)}"
        return None

    return Property(f"the shapes must be {words}", test)


def finite(output: int, name: str) -> Property:
    def test(fn, case, outputs) -> Optional[str]:
        a = outputs[output]
        bad = ~np.isfinite(a)
        if bad.any():
            return (f"`{name}` has {int(np.isnan(a).sum())} NaN and {int(np.isinf(a).sum())} infinite "
                    f"value(s), the first at index {first(bad)}")
        return None

    return Property(f"`{name}` must contain no NaN or inf", test)


def between_0_and_1(output: int, name: str) -> Property:
    def test(fn, case, outputs) -> Optional[str]:
        a = outputs[output]
        bad = (a < -1e-12) | (a > 1 + 1e-12)
        if bad.any():
            return f"`{name}` has the value {first_value(a, bad):.4g} at index {first(bad)}"
        return None

    return Property(f"every entry of `{name}` must lie between 0 and 1", test)


def sums_to_one(output: int, axis: Callable[[Case], int], statement: str, what: str,
                rows: Optional[Callable[[Case, np.ndarray], np.ndarray]] = None) -> Property:
    """``outputs[output]`` sums to 1 along ``axis(case)``.

    ``statement`` is the property in words ("each query's weights must sum to 1 over the keys"), ``what``
    names one slice in a failure message ("the weights of query"); ``rows(case, sums)`` selects the
    slices that must sum to 1 (default: all).
    """

    def test(fn, case, outputs) -> Optional[str]:
        sums = outputs[output].sum(axis=axis(case))
        must = np.ones(sums.shape, bool) if rows is None else np.broadcast_to(rows(case, sums), sums.shape)
        bad = must & ~np.isclose(sums, 1.0, rtol=0, atol=1e-6)
        if bad.any():
            index = np.unravel_index(int(np.flatnonzero(bad)[0]), sums.shape)
            return f"{what} {where(index)} sum to {sums[index]:.4g}, not 1"
        return None

    return Property(statement, test)
