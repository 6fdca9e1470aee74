"""The three small functions that turn a decoder's logits into a sampled image token:
top-k filtering, temperature, and classifier-free guidance.

Each is a pure function of tensors, so it can be read, tested and graded on its own;
``crossmodal_edu.dalle.sampling`` strings them together into the autoregressive loop.
Derived in notebooks/06_text_to_image.ipynb (and practised in exercises/06).
"""

from __future__ import annotations

import torch

from crossmodal_edu._checks import describe


def _require_logits(name: str, logits: torch.Tensor) -> None:
    if not isinstance(logits, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape (..., V), got a {type(logits).__name__}")
    if logits.ndim < 1 or not logits.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor of shape (..., V), but {describe(name, logits)}")


def top_k_filter(logits: torch.Tensor, k: int | None) -> torch.Tensor:
    r"""Keep the ``k`` largest logits of each row and set the rest to :math:`-\infty`, so
    softmax gives them probability exactly 0. ``logits`` ``(..., V)`` -> ``(..., V)``.

    ``k=None`` or ``k >= V`` keeps every logit. Ties at the k-th value keep exactly ``k``
    entries (``torch.topk``'s choice). The input is not modified.
    """
    _require_logits("logits", logits)
    if k is None or k >= logits.shape[-1]:
        return logits
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int or None (keep all), got {k!r}")
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
    """
    _require_logits("cond_logits", cond_logits)
    _require_logits("uncond_logits", uncond_logits)
    if cond_logits.shape != uncond_logits.shape:
        raise ValueError(
            "cond_logits and uncond_logits must have the same shape (..., V), but "
            f"{describe('cond_logits', cond_logits)} and {describe('uncond_logits', uncond_logits)}"
        )
    return uncond_logits + scale * (cond_logits - uncond_logits)


def sample_from_logits(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""Draw one token per row of ``logits`` ``(B, V)`` -> ``(B,)`` int64:
    :math:`p = \operatorname{softmax}(\operatorname{topk}(\ell) / T)`.

    ``temperature`` :math:`T` below 1 sharpens the distribution, above 1 flattens it;
    ``temperature=0`` takes the most likely token (greedy) and draws nothing.
    """
    _require_logits("logits", logits)
    if logits.ndim != 2:
        raise ValueError(f"logits must have shape (B, V), but {describe('logits', logits)}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    if temperature == 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(top_k_filter(logits.float(), top_k) / temperature, dim=-1)  # (B, V)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)  # (B,)
