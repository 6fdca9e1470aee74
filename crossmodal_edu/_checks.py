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
