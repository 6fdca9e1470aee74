"""The three small functions that turn a decoder's logits into a sampled image token:
top-k filtering, temperature, and classifier-free guidance.

Each is a pure function of tensors, so it can be read, tested and graded on its own;
``crossmodal_edu.dalle.sampling`` strings them together into the autoregressive loop.
Derived in notebooks/06_text_to_image.ipynb (and practised in exercises/06).
"""

from __future__ import annotations

import torch

import math
import numbers
import operator

from crossmodal_edu._checks import describe, non_finite_error, require_real


def _require_logits(name: str, logits: torch.Tensor) -> None:
    """Raise unless ``logits`` is a real floating-point tensor ``(..., V)`` whose entries are finite
    or ``-inf`` (a token ruled out). NaN has no rank and ``+inf`` makes the softmax ``inf - inf``."""
    if not isinstance(logits, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape (..., V), got a {type(logits).__name__}")
    require_real(name, logits)
    if logits.ndim < 1 or not logits.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor of shape (..., V), but {describe(name, logits)}")
    bad = torch.isnan(logits) | torch.isposinf(logits)
    if bool(bad.any()):
        raise non_finite_error(name, logits, bad, " or -inf (-inf rules a token out)")


def _require_number(name: str, value: object, allowed: str) -> float:
    """``value`` as a float, raising unless it is a finite real number (``allowed`` says the range)."""
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_complex():
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite real number ({allowed}), got {value!r}")
    return float(value)


def top_k_filter(logits: torch.Tensor, k: int | None) -> torch.Tensor:
    r"""Keep the ``k`` largest logits of each row and set the rest to :math:`-\infty`, so
    softmax gives them probability exactly 0. ``logits`` ``(..., V)`` -> ``(..., V)``.

    ``k=None`` or ``k >= V`` keeps every logit. ``k`` may be any integer type (``3``,
    ``np.int64(3)``, a one-element integer tensor). Ties at the k-th value keep exactly ``k``
    entries (``torch.topk``'s choice). The input is not modified. Logits must be finite or
    ``-inf``: NaN and ``+inf`` raise a ``ValueError``.
    """
    _require_logits("logits", logits)
    if k is not None:
        try:
            if isinstance(k, bool):
                raise TypeError
            k = operator.index(k)  # any integer type: int, np.int64, a 0-d integer tensor
        except TypeError:
            raise ValueError(f"k must be a positive int or None (keep all), got {k!r}") from None
        if k < 1:
            raise ValueError(f"k must be a positive int or None (keep all), got {k!r}")
    if k is None or k >= logits.shape[-1]:
        return logits
    top = torch.topk(logits, k, dim=-1)  # values, indices: (..., k)
    filtered = torch.full_like(logits, float("-inf"))  # (..., V)
    return filtered.scatter(-1, top.indices, top.values)


def classifier_free_guidance(
    cond_logits: torch.Tensor, uncond_logits: torch.Tensor, scale: float
) -> torch.Tensor:
    r"""Push the prediction away from "no caption" and towards "this caption":

    .. math:: \ell = \ell_\varnothing + s\,(\ell_c - \ell_\varnothing)

    ``cond_logits`` :math:`\ell_c` (with the caption) and ``uncond_logits``
    :math:`\ell_\varnothing` (with the null caption), both ``(..., V)``. ``scale`` :math:`s = 1`
    gives the conditional logits, :math:`s = 0` the unconditional ones, :math:`s > 1`
    exaggerates what the caption changes (Ho & Salimans 2022, for autoregressive models
    Gafni et al. 2022 and Yu et al. 2022, "Parti").

    A token ruled out (``-inf``) in both stays ruled out; ``-inf`` in one but not the other has no
    guided value (``-inf - (-inf)`` or ``0 * inf``), so it raises a ``ValueError``, as do NaN or
    ``+inf`` logits, a scale that is not a finite real number, and a scale so large that finite
    logits overflow.
    """
    _require_logits("cond_logits", cond_logits)
    _require_logits("uncond_logits", uncond_logits)
    scale = _require_number("scale", scale, "the guidance strength; 1 = conditional logits")
    if cond_logits.shape != uncond_logits.shape:
        raise ValueError(
            "cond_logits and uncond_logits must have the same shape (..., V), but "
            f"{describe('cond_logits', cond_logits)} and {describe('uncond_logits', uncond_logits)}"
        )
    ruled_out = torch.isneginf(cond_logits)  # (..., V)
    if not torch.equal(ruled_out, torch.isneginf(uncond_logits)):
        differ = ruled_out != torch.isneginf(uncond_logits)
        raise non_finite_error(
            "cond_logits", cond_logits if bool((ruled_out & differ).any()) else uncond_logits, differ,
            " or -inf in the same places as uncond_logits (guidance of -inf against a finite logit is undefined)",
        )
    if bool(ruled_out.any()):
        # Select, do not compute: -inf + s * (-inf - -inf) would be NaN.
        finite_c = torch.where(ruled_out, torch.zeros_like(cond_logits), cond_logits)
        finite_u = torch.where(ruled_out, torch.zeros_like(uncond_logits), uncond_logits)
        guided = torch.where(ruled_out, cond_logits, finite_u + scale * (finite_c - finite_u))
    else:
        guided = uncond_logits + scale * (cond_logits - uncond_logits)
    overflow = torch.isinf(guided) & ~ruled_out
    if bool(overflow.any()):
        raise ValueError(
            f"classifier-free guidance overflowed {guided.dtype} with scale = {scale:g}: the guided "
            f"logits are too large to represent; use a smaller scale"
        )
    return guided


def sample_from_logits(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""Draw one token per row of ``logits`` ``(B, V)`` -> ``(B,)`` int64:
    :math:`p = \operatorname{softmax}(\operatorname{topk}(\ell) / T)`.

    ``temperature`` :math:`T` below 1 sharpens the distribution, above 1 flattens it;
    ``temperature=0`` takes the most likely token (greedy) and draws nothing. The draw is made
    in float32.

    Raises a ``ValueError`` (never torch's "probability tensor contains inf/nan", never a NaN
    pick) for NaN or ``+inf`` logits, a row with no finite logit (every token ruled out), a
    temperature that is negative or not a finite real number, and a temperature so small that
    ``logits / T`` overflows (use ``temperature=0`` for greedy decoding).
    """
    _require_logits("logits", logits)
    if logits.ndim != 2:
        raise ValueError(f"logits must have shape (B, V), but {describe('logits', logits)}")
    temperature = _require_number("temperature", temperature, ">= 0; 0 = greedy")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    no_token = torch.isneginf(logits).all(dim=-1)  # (B,)
    if bool(no_token.any()):
        row = int(no_token.nonzero()[0])
        raise ValueError(
            f"row {row} of logits is -inf everywhere: every token is ruled out, so there is nothing "
            f"to draw ({describe('logits', logits)})"
        )
    if temperature == 0:
        return logits.argmax(dim=-1)
    # Sampled in float32 whatever the dtype (so a seed draws the same tokens from float64 logits).
    scaled = top_k_filter(logits.float(), top_k) / temperature  # (B, V)
    if bool(torch.isposinf(scaled).any()):
        raise ValueError(
            f"logits / temperature overflowed {scaled.dtype} at temperature = {temperature:g} "
            f"(the largest logit is {logits.max().item():.3g}): use temperature=0 for greedy "
            f"decoding, or a larger temperature"
        )
    probs = torch.softmax(scaled, dim=-1)  # (B, V)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)  # (B,)
