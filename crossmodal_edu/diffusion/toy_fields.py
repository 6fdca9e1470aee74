r"""Velocity fields whose Euler walks are known exactly, for checking a sampler without a model.

A sampler calls ``velocity_fn(x, t)`` with latents ``x`` ``(B, C, h, w)`` and a time ``t``, one
float in [0, 1], and walks from noise at :math:`t = 1` to :math:`t = 0` (``flow.py``). Two fields:

* :class:`TowardsPoint`: the data are one point :math:`x_0`. Every straight path then ends at it,
  and the velocity that carries :math:`x_t` there is :math:`v(x, t) = (x - x_0)/t`: each Euler
  step stays on the line from :math:`x_t` to :math:`x_0`, so a correct walk lands on :math:`x_0`
  exactly, with any number of steps. It is undefined at :math:`t = 0`, where a correct walk
  never asks for it, and raises a ``ValueError`` that says so.
* :class:`LinearVelocity`: :math:`v(x, t) = a \odot x + t\,b + c`, elementwise, random
  :math:`a, b, c`: it depends on :math:`x` and on :math:`t`, so stepping the wrong way, at the
  wrong times or a wrong number of times all give different results.

Both are plain objects (no closures), so the class grader can send them to a learner's kernel.
Used by the exercises of lesson 07 (``crossmodal_edu/grading/tasks/lesson07.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["TowardsPoint", "LinearVelocity"]


def _time(t: float) -> float:
    """``t`` as one float in [0, 1], or a ``ValueError`` that says what came."""
    try:
        value = float(t)
    except (TypeError, ValueError, RuntimeError):
        shape = getattr(t, "shape", None)
        came = f"a tensor of shape {tuple(shape)}" if shape is not None else f"{type(t).__name__} {t!r}"
        raise ValueError(f"velocity_fn(x, t) takes t as one float, the time of the whole batch, but got {came}") from None
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"velocity_fn(x, t) was called at t = {value:.6g}, outside [0, 1]: the walk goes from 1 to 0")
    return value


@dataclass
class TowardsPoint:
    """:math:`v(x, t) = (x - x_0) / t`: the exact velocity when the data are the one point ``x0`` ``(C, h, w)``."""

    x0: torch.Tensor

    def __call__(self, x: torch.Tensor, t: float) -> torch.Tensor:
        t = _time(t)
        if t == 0.0:
            raise ValueError("velocity_fn(x, t) was called at t = 0: the velocity towards the data point is "
                             "undefined there. Euler steps from 1 to 0 evaluate at t = 1, ..., 1/steps, never at 0")
        return (x - self.x0) / t


@dataclass
class LinearVelocity:
    r""":math:`v(x, t) = a \odot x + t\,b + c`, with ``a``, ``b``, ``c`` ``(C, h, w)``."""

    a: torch.Tensor
    b: torch.Tensor
    c: torch.Tensor

    def __call__(self, x: torch.Tensor, t: float) -> torch.Tensor:
        return self.a * x + _time(t) * self.b + self.c
