r"""Rectified flow (flow matching with straight paths): the objective and the sampler.

A clean latent :math:`x_0` and pure noise :math:`\varepsilon \sim \mathcal N(0, I)` are joined by a
straight line; time :math:`t \in [0, 1]` says how far along it a noisy latent lies:

.. math:: x_t = (1 - t)\, x_0 + t\, \varepsilon .

Its velocity along the line is :math:`\frac{d x_t}{dt} = \varepsilon - x_0`, the same at every
:math:`t`. The denoiser :math:`v_\theta(x_t, t, c)` is trained to predict it by mean squared error,

.. math:: \mathcal L = \mathbb E_{x_0, \varepsilon, t}\,\big\| v_\theta(x_t, t, c) - (\varepsilon - x_0) \big\|^2 ,

and an image is made by starting at noise (:math:`t = 1`) and walking back along the predicted
velocity with Euler steps, :math:`x_{t - \Delta} = x_t - \Delta\, v_\theta(x_t, t, c)`. One :math:`x_t`
lies on many lines (many clean latents could have made it), so the best prediction is their
average direction; that is why the walk needs several small steps, not one big one.
(Liu et al. 2022, "Flow Straight and Fast"; Lipman et al. 2022, "Flow Matching for Generative
Modeling"; Stable Diffusion 3 trains this objective: Esser et al. 2024.)

Classifier-free guidance (Ho & Salimans 2022) mixes the velocities with and without the caption,
:math:`v = v_\varnothing + s\,(v_c - v_\varnothing)`, exactly as lesson 06 mixes logits.
Derived in notebooks/07_latent_diffusion.ipynb.
"""

from __future__ import annotations

import math

import torch

from crossmodal_edu._checks import describe


def noisy_latents(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    r""":math:`x_t = (1 - t) x_0 + t \varepsilon`: ``x0`` and ``noise`` ``(B, ...)``, ``t`` ``(B,)`` in [0, 1]."""
    if x0.shape != noise.shape:
        raise ValueError(f"x0 and noise must have the same shape, but {describe('x0', x0)} and {describe('noise', noise)}")
    if t.ndim != 1 or len(t) != len(x0):
        raise ValueError(f"t must have shape ({len(x0)},), one time per latent, but {describe('t', t)}")
    t = t.reshape(-1, *([1] * (x0.ndim - 1)))  # (B, 1, 1, 1): broadcasts over each latent
    return (1 - t) * x0 + t * noise


def velocity_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    r"""The straight path's velocity :math:`\frac{d x_t}{dt} = \varepsilon - x_0` (what the denoiser learns)."""
    return noise - x0


def sample_times(batch_size: int, generator: torch.Generator, kind: str = "logit-normal") -> torch.Tensor:
    r"""Training times ``(batch_size,)`` in (0, 1). ``"uniform"``; or ``"logit-normal"``,
    :math:`t = \sigma(u)`, :math:`u \sim \mathcal N(0, 1)`, which spends more steps near the
    middle of the path, where predicting the velocity is hardest (SD3, Esser et al. 2024, §3.1)."""
    if kind == "uniform":
        return torch.rand(batch_size, generator=generator)
    if kind == "logit-normal":
        return torch.sigmoid(torch.randn(batch_size, generator=generator))
    raise ValueError(f"kind must be 'uniform' or 'logit-normal', got {kind!r}")


def time_grid(steps: int) -> torch.Tensor:
    """``steps + 1`` times from 1 (noise) down to 0 (image), evenly spaced."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int (Euler steps from noise to image), got {steps!r}")
    return torch.linspace(1.0, 0.0, steps + 1)


def euler_step(x_t: torch.Tensor, velocity: torch.Tensor, t: float, t_next: float) -> torch.Tensor:
    r"""One Euler step back along the path: :math:`x_{t'} = x_t + (t' - t)\, v`, with :math:`t' < t`."""
    return x_t + (t_next - t) * velocity


def guided_velocity(v_uncond: torch.Tensor, v_cond: torch.Tensor, guidance_scale: float) -> torch.Tensor:
    r"""Classifier-free guidance: :math:`v_\varnothing + s\,(v_c - v_\varnothing)`. ``s = 1`` is the
    conditional model alone, ``s = 0`` ignores the caption, ``s > 1`` pushes past it."""
    if not math.isfinite(guidance_scale):
        raise ValueError(f"guidance_scale must be a finite number, got {guidance_scale!r}")
    return v_uncond + guidance_scale * (v_cond - v_uncond)
