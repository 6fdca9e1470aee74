"""The judge's handle on a function that lives in the learner's kernel.

A :class:`RemoteFunction` looks like the learner's function to the judge: calling it sends the inputs to
the kernel (:mod:`~crossmodal_edu.grading.agent`), which calls the learner's code and answers in plain
data (:mod:`~crossmodal_edu.grading.wire`). What the call returned comes back as arrays or tensors; an
exception it raised comes back as an exception of the same name, with the learner's line as ``where``;
an input it changed in place is changed here too, so the judge sees the mistake as it would locally.

A tensor that needs a gradient may go in (a hidden test's ``backward()``): the answer is then tied
into this side's autograd graph, and the backward pass asks the kernel for the vector-Jacobian product.
"""

from __future__ import annotations

import builtins
import secrets
import sys
from typing import Any, Callable, Optional

from crossmodal_edu.grading import wire

__all__ = ["RemoteFunction", "KernelTimeout", "KernelLost", "RemoteError", "Channel"]

Channel = Callable[[dict], dict]  # one request to the kernel -> its reply (raises KernelTimeout, KernelLost)


class KernelTimeout(BaseException):
    """The kernel did not answer in time (a ``BaseException``: no ``except Exception`` of a check swallows it)."""


class KernelLost(BaseException):
    """The kernel died, or answered something that is not the protocol."""


class RemoteError(Exception):
    """An exception raised in the kernel whose type is not one of Python's own."""


_ERRORS: dict[tuple[str, str], type] = {}


def remote_error(info: Any) -> BaseException:
    """The exception the learner's code raised, rebuilt from its type name and message (no code of theirs)."""
    if not isinstance(info, dict):
        return RemoteError("the kernel reported an error it did not describe")
    name, module = str(info.get("type", "Exception"))[:80], str(info.get("module", ""))[:80]
    message = str(info.get("message", ""))[:2000]
    builtin = getattr(builtins, name, None)
    if module == "builtins" and isinstance(builtin, type) and issubclass(builtin, Exception):
        cls = builtin
    else:  # SystemExit, KeyboardInterrupt, a library's or the learner's class: an ordinary exception here
        key = (module, name)
        if key not in _ERRORS:
            _ERRORS[key] = type(name if name.isidentifier() else "RemoteError", (RemoteError,), {})
        cls = _ERRORS[key]
    try:
        error = cls(message)
    except Exception:
        error = RemoteError(message)
    error.remote_where = str(info.get("where", ""))[:500]
    return error


def _write_back(local: Any, new: Any) -> None:
    """Change ``local`` in place to ``new`` (what the learner's in-place operation made of it)."""
    import numpy as np

    try:
        if isinstance(local, np.ndarray) and isinstance(new, np.ndarray):
            if new.shape == local.shape:
                np.copyto(local, new.astype(local.dtype, copy=False), casting="unsafe")
            else:
                local.flat[0] = local.flat[0] + 1  # a change of shape in place: any change shows it
        elif hasattr(local, "detach") and hasattr(new, "detach"):
            import torch

            with torch.no_grad():
                if new.shape == local.shape:
                    local.copy_(new.to(local.dtype))
                else:
                    local.view(-1)[0] += 1
    except Exception:
        pass


class RemoteFunction:
    """The learner's answer to ``task_id`` (or their function ``name``), called in their kernel."""

    def __init__(self, channel: Channel, task_id: Optional[str] = None, name: Optional[str] = None):
        self.channel, self.task_id, self.name = channel, task_id, name
        self.copied: Optional[str] = None  # set when the kernel saw the reference being called
        self.__name__ = name or task_id or "answer"

    def __repr__(self) -> str:
        return f"<the learner's {self.__name__}>"

    def _request(self, args: tuple, kwargs: dict, graph: Optional[str] = None) -> Any:
        request = {"op": "call", "task": self.task_id, "name": self.name, "args": list(args), "kwargs": kwargs,
                   "graph": graph}
        reply = self.channel(request)
        if reply.get("copied") and not self.copied:
            self.copied = str(reply["copied"])[:300]
        for item in reply.get("changed") or []:
            try:
                index, value = item
                _write_back(args[int(index)], wire.decode(value))
            except (TypeError, ValueError, IndexError):
                raise KernelLost("the kernel sent a malformed reply") from None
        if "error" in reply:
            raise remote_error(reply["error"])
        if "value" not in reply:
            raise KernelLost("the kernel sent a reply without a value")
        return wire.decode(reply["value"])

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        torch = sys.modules.get("torch")
        if torch is not None and torch.is_grad_enabled() and any(
                isinstance(a, torch.Tensor) and a.requires_grad for a in args):
            return _with_graph(self, args, kwargs)
        return self._request(args, kwargs)


def _with_graph(remote: RemoteFunction, args: tuple, kwargs: dict) -> Any:
    """Call ``remote`` so that a backward pass from its outputs reaches the inputs that need a gradient."""
    import torch

    needs = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
    handle = secrets.token_hex(8)
    box: dict[str, Any] = {}

    class Remote(torch.autograd.Function):
        @staticmethod
        def forward(ctx, *inputs):
            value = remote._request(args, kwargs, graph=handle)
            box["value"] = value
            outputs = value if isinstance(value, tuple) else (value,)
            tensors = tuple(o for o in outputs if isinstance(o, torch.Tensor) and o.is_floating_point())
            box["positions"] = [i for i, o in enumerate(outputs) if isinstance(o, torch.Tensor)
                                and o.is_floating_point()]
            return tensors

        @staticmethod
        def backward(ctx, *grads):
            n = len(box["value"]) if isinstance(box["value"], tuple) else 1
            full = [None] * n
            for position, grad in zip(box["positions"], grads):
                full[position] = grad
            reply = remote.channel({"op": "grad", "graph": handle, "grads": full})
            decoded = [wire.decode(g) for g in reply.get("grads", [])]
            if len(decoded) != len(needs):
                raise KernelLost("the kernel sent the wrong number of gradients")
            return tuple(g.to(a.dtype) if isinstance(g, torch.Tensor) else None for g, a in zip(decoded, needs))

    tensors = Remote.apply(*needs)
    tensors = tensors if isinstance(tensors, tuple) else (tensors,)
    value = box["value"]
    outputs = list(value) if isinstance(value, tuple) else [value]
    for position, tensor in zip(box["positions"], tensors):
        outputs[position] = tensor
    return tuple(outputs) if isinstance(value, tuple) else outputs[0]
