"""What crosses between the class grader's two rooms, and how.

The judge (trusted) sends the learner's kernel (untrusted) the inputs of a call; the kernel sends back
what the learner's code returned. The two directions are not alike:

* **judge → kernel** may carry anything the judge built (a case's arrays, a ``CrossAttention`` layer,
  an ``nn.Module``): it is pickled, because unpickling trusted data in the untrusted kernel endangers
  nothing the kernel could not reach anyway;
* **kernel → judge** is *plain data only*: JSON with tagged values, arrays as raw ``.npy`` bytes read
  back with ``allow_pickle=False``. Nothing the kernel sends can run code in the judge: an object that is
  not plain data arrives as :class:`Opaque` (its type name and a short ``repr``, both strings).

:func:`encode` runs in the kernel, :func:`decode` in the judge.
"""

from __future__ import annotations

import base64
import io
import json
import math
import numbers
import pickle
import re
from typing import Any

import numpy as np

__all__ = ["encode", "decode", "loads_reply", "dumps_request", "loads_request", "Opaque", "WireError",
           "MAX_REPLY_BYTES"]

MAX_REPLY_BYTES = 64 * 2**20  # a reply larger than this is refused
_MAX_DEPTH = 16
_ARRAY_KINDS = "biufc"  # bool, int, uint, float, complex: nothing that needs pickle


class WireError(ValueError):
    """A reply from the kernel that is not what the protocol allows."""


class Opaque:
    """Stands in, on the judge's side, for an object of the learner's that is not plain data."""

    type_name = "object"

    def __init__(self, shown: str, is_callable: bool = False):
        self._shown = shown
        self.is_callable = is_callable

    def __repr__(self) -> str:
        return self._shown


_OPAQUE_TYPES: dict[str, type] = {}


def _opaque_type(name: str) -> type:
    """A class named like the learner's (``MyArray``), so that messages name what came; never theirs."""
    name = re.sub(r"\W", "_", name)[:60] or "object"
    if not name[0].isalpha() and name[0] != "_":
        name = "_" + name
    if name not in _OPAQUE_TYPES:
        _OPAQUE_TYPES[name] = type(name, (Opaque,), {"type_name": name})
    return _OPAQUE_TYPES[name]


# --- the kernel's side ---------------------------------------------------------------------------


def _npy(array: np.ndarray) -> str:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array), allow_pickle=False)  # (ascontiguousarray would make a 0-d array 1-d)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _short_repr(value: Any) -> str:
    try:
        shown = repr(value)
    except BaseException:  # a learner's __repr__ may raise anything
        shown = f"<{type(value).__name__}>"
    return shown if len(shown) <= 200 else shown[:199] + "…"


def encode(value: Any, depth: int = 0) -> Any:
    """``value`` as tagged JSON-ready data (in the kernel). Arrays and tensors travel as ``.npy`` bytes;
    an object that is not plain data travels as its type name and ``repr``."""
    if depth > _MAX_DEPTH:
        return {"t": "object", "type": type(value).__name__, "repr": "<nested too deep>"}
    if value is None:
        return {"t": "none"}
    if value is Ellipsis:
        return {"t": "ellipsis"}
    if isinstance(value, bool):
        return {"t": "bool", "v": value}
    if isinstance(value, int) and type(value) is int:
        return {"t": "int", "v": str(value)}
    if isinstance(value, float) and type(value) is float:
        return {"t": "float", "v": repr(value)}
    if isinstance(value, numbers.Integral) and not isinstance(value, (np.generic, np.ndarray)):
        try:
            return {"t": "int", "v": str(int(value))}
        except BaseException:
            pass
    if isinstance(value, numbers.Real) and not isinstance(value, (np.generic, np.ndarray)):
        try:
            return {"t": "float", "v": repr(float(value))}  # a Fraction or a Decimal: the number it holds
        except BaseException:
            pass
    if isinstance(value, str) and type(value) is str:
        return {"t": "str", "v": value[:100_000]}
    if type(value) in (tuple, list):
        return {"t": type(value).__name__, "v": [encode(v, depth + 1) for v in value]}
    if type(value) is dict:
        return {"t": "dict", "v": [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in value.items()]}
    if isinstance(value, np.generic) and type(value).__module__ == "numpy" and value.dtype.kind in _ARRAY_KINDS:
        return {"t": "npscalar", "npy": _npy(np.asarray(value))}
    if type(value) is np.ndarray and value.dtype.kind in _ARRAY_KINDS:
        return {"t": "ndarray", "npy": _npy(value)}
    kind = type(value).__module__ + "." + type(value).__qualname__
    if kind in ("torch.Tensor", "torch.nn.parameter.Parameter"):
        tensor = value.detach().cpu()
        dtype = str(tensor.dtype)
        if tensor.dtype.is_complex or tensor.dtype.is_floating_point or dtype in (
                "torch.bool", "torch.int8", "torch.int16", "torch.int32", "torch.int64", "torch.uint8"):
            try:
                array = tensor.numpy()
            except TypeError:  # bfloat16 and other dtypes NumPy lacks
                array = tensor.double().numpy()
            return {"t": "tensor", "dtype": dtype, "npy": _npy(array)}
    if kind == "torch.Size":
        return {"t": "size", "v": [int(n) for n in value]}
    return {"t": "object", "type": type(value).__name__, "repr": _short_repr(value), "callable": callable(value)}


# --- the judge's side ----------------------------------------------------------------------------


def _array(text: Any) -> np.ndarray:
    if not isinstance(text, str):
        raise WireError("an array must come as base64 text")
    array = np.load(io.BytesIO(base64.b64decode(text, validate=True)), allow_pickle=False)
    if not isinstance(array, np.ndarray) or array.dtype.kind not in _ARRAY_KINDS:
        raise WireError(f"an array of dtype {getattr(array, 'dtype', '?')} is not plain data")
    return array


def _torch():
    import torch

    return torch


def decode(data: Any, depth: int = 0) -> Any:
    """The value :func:`encode` described (in the judge): only NumPy arrays, PyTorch tensors built from
    them, numbers, strings, tuples, lists, dicts and :class:`Opaque` stand-ins can come out."""
    if depth > _MAX_DEPTH + 1:
        raise WireError("nested too deep")
    if not isinstance(data, dict) or not isinstance(data.get("t"), str):
        raise WireError(f"not a tagged value: {str(data)[:80]}")
    t, v = data["t"], data.get("v")
    if t == "none":
        return None
    if t == "ellipsis":
        return Ellipsis
    if t == "bool" and isinstance(v, bool):
        return v
    if t == "int" and isinstance(v, str) and re.fullmatch(r"-?\d{1,4300}", v):
        return int(v)
    if t == "float" and isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            raise WireError(f"not a float: {v[:40]!r}") from None
    if t == "str" and isinstance(v, str):
        return v
    if t in ("tuple", "list") and isinstance(v, list):
        items = [decode(x, depth + 1) for x in v]
        return tuple(items) if t == "tuple" else items
    if t == "dict" and isinstance(v, list):
        out = {}
        for pair in v:
            if not (isinstance(pair, list) and len(pair) == 2):
                raise WireError("a dict item must be a pair")
            key = decode(pair[0], depth + 1)
            try:
                out[key] = decode(pair[1], depth + 1)
            except TypeError:  # an unhashable key: an array, say
                raise WireError("a dict key must be hashable") from None
        return out
    if t == "npscalar":
        return _array(data.get("npy"))[()]
    if t == "ndarray":
        return _array(data.get("npy"))
    if t == "tensor":
        torch = _torch()
        dtype = data.get("dtype")
        tensor = torch.from_numpy(_array(data.get("npy")).copy())
        if isinstance(dtype, str) and dtype.startswith("torch.") and isinstance(getattr(torch, dtype[6:], None),
                                                                               torch.dtype):
            tensor = tensor.to(getattr(torch, dtype[6:]))
        return tensor
    if t == "size" and isinstance(v, list) and all(isinstance(n, int) for n in v):
        return _torch().Size(v)
    if t == "object":
        return _opaque_type(str(data.get("type", "object")))(str(data.get("repr", ""))[:200],
                                                             bool(data.get("callable", False)))
    raise WireError(f"unknown tag {t!r}")


def loads_reply(raw: bytes) -> dict[str, Any]:
    """A reply read from the kernel's folder: JSON, at most :data:`MAX_REPLY_BYTES`, no code."""
    if len(raw) > MAX_REPLY_BYTES:
        raise WireError(f"the reply is {len(raw)} bytes, more than {MAX_REPLY_BYTES}")

    def constant(name):  # NaN and Infinity are numbers; nothing else JSON does not know
        return {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}[name]

    reply = json.loads(raw.decode("utf-8"), parse_constant=constant)
    if not isinstance(reply, dict):
        raise WireError("a reply must be a JSON object")
    return reply


def dumps_request(request: Any) -> str:
    """A request for the kernel (judge → kernel): pickled, as base64 text for a cell's source."""
    return base64.b64encode(pickle.dumps(request, protocol=pickle.HIGHEST_PROTOCOL)).decode("ascii")


def loads_request(text: str) -> Any:
    """In the kernel: the request the judge sent."""
    return pickle.loads(base64.b64decode(text))
