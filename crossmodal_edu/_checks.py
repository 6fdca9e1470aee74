"""Private helpers that turn a learner's shape mistake into a clear ``ValueError``.

They only read ``.shape``, ``.ndim`` and ``.dtype``, so they work on NumPy arrays and on
PyTorch tensors alike. Every message names what was expected and what came.
"""

from typing import Any


def fmt_shape(shape: Any) -> str:
    """Format a shape as a plain tuple, ``(2, 5, 8)``, whether it came from NumPy or PyTorch."""
    return str(tuple(int(n) for n in shape))


def describe(name: str, array: Any) -> str:
    """``"q has shape (2, 5, 8)"``: the phrase every shape error ends with."""
    return f"{name} has shape {fmt_shape(array.shape)}"


def require_ndim(name: str, array: Any, min_ndim: int, layout: str) -> None:
    """Raise unless ``array`` has at least ``min_ndim`` axes; ``layout`` is the expected shape in words."""
    if array.ndim < min_ndim:
        raise ValueError(
            f"{name}: expected at least {min_ndim} dims {layout}, but {describe(name, array)}"
        )


def is_bool(array: Any) -> bool:
    """True for a NumPy ``bool`` array or a ``torch.bool`` tensor."""
    return str(array.dtype) in ("bool", "torch.bool")


def require_bool(name: str, mask: Any, meaning: str = "True = may attend") -> None:
    """Raise unless ``mask`` is boolean, and say how to turn a float mask into one."""
    if not is_bool(mask):
        raise ValueError(
            f"{name} must be a boolean array ({meaning}), but it has dtype {mask.dtype} "
            f"and shape {fmt_shape(mask.shape)}. A 0/1 float mask becomes boolean with "
            f"`{name} > 0.5`; an additive mask of 0 and -inf becomes boolean with "
            f"`{name} == 0`."
        )


def _is_torch(array: Any) -> bool:
    return type(array).__module__.startswith("torch")


def require_real(name: str, array: Any) -> None:
    """Raise a ``TypeError`` unless ``array`` holds real numbers (bool, int or float).

    Complex numbers have no order, so a softmax over them is meaningless, and NumPy's silent cast
    to float would drop the imaginary part without a word.
    """
    if _is_torch(array):
        kind = "c" if array.is_complex() else ("f" if array.is_floating_point() else "i")
    else:
        kind = array.dtype.kind
    if kind == "c":
        raise TypeError(
            f"{name} must hold real numbers, but it has the complex dtype {array.dtype} "
            f"(shape {fmt_shape(array.shape)}): attention compares scores by size, which complex "
            f"numbers do not have. Pass {name}.real if the imaginary part is meant to be 0."
        )
    if kind not in "biuf":
        raise TypeError(
            f"{name} must hold numbers (bool, int or float), but it has dtype {array.dtype} "
            f"(shape {fmt_shape(array.shape)})"
        )


def first_index(flags: Any) -> tuple[int, ...]:
    """Index of the first True entry of a boolean NumPy array or torch tensor."""
    if _is_torch(flags):
        return tuple(int(i) for i in flags.nonzero()[0])
    return tuple(int(i) for i in next(zip(*flags.nonzero())))


def non_finite_error(name: str, array: Any, bad: Any, where: str = "") -> ValueError:
    """A ``ValueError`` naming how many entries of ``array`` are NaN or infinite and the first one.

    ``bad`` is the boolean array of the entries to report (``~isfinite(array)``, perhaps restricted
    to the entries that matter); ``where`` says which entries must be finite, e.g. "where a query may
    attend".
    """
    index = first_index(bad)
    value = array[index].item()
    count = int(bad.sum())
    return ValueError(
        f"{name} must be finite{where}, but {name}{list(index)} = {value} "
        f"({count} non-finite {'entry' if count == 1 else 'entries'} in all; "
        f"{describe(name, array)}). A NaN or inf here usually comes from upstream: a division by "
        f"zero, a log of 0, or an overflow in an earlier layer."
    )


def require_finite(name: str, array: Any) -> None:
    """Raise a :func:`non_finite_error` if any entry of ``array`` is NaN or infinite.

    Costs one pass over ``array`` (and, for a GPU tensor, one host-device synchronisation).
    """
    if _is_torch(array):
        import torch

        finite = torch.isfinite(array)
        if not bool(finite.all()):
            raise non_finite_error(name, array, ~finite)
    else:
        import numpy as np

        finite = np.isfinite(array)
        if not finite.all():
            raise non_finite_error(name, array, ~finite)
