r"""Drawing images from captions: start at noise, walk back along the predicted velocity with
``steps`` Euler steps (``flow.py``), guided; decode the latents with the tokenizer.

With guidance each step runs the denoiser twice, with the caption and with the null caption
(as one batch of ``2B``), and mixes the two velocities. The caption is encoded once, not at
every step. The only randomness is the starting noise, so the same ``seed`` (and ``batch_size``)
gives the same images, and two captions sampled with one seed start from the same noise: what
prompt-to-prompt editing (``control.py``) relies on.

Used by notebooks/07_latent_diffusion.ipynb.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from crossmodal_edu import world
from crossmodal_edu.dalle.decoder import null_captions
from crossmodal_edu.dalle.tokenizer import ImageTokenizer
from crossmodal_edu.diffusion.flow import euler_step, guided_velocity, time_grid
from crossmodal_edu.diffusion.latents import LatentSpace


def latent_space(model: torch.nn.Module, tokenizer: ImageTokenizer) -> LatentSpace:
    """The latent space ``model`` was trained in: ``tokenizer`` with the model's saved statistics."""
    return LatentSpace(tokenizer, model.latent_mean.detach().cpu(), model.latent_std.detach().cpu())


@dataclass
class DiffusionGeneration:
    """Images generated from captions, with what they were made of."""

    captions: list[str]
    images: np.ndarray  # (B, H, W, 3) float32 in [0, 1]
    latents: np.ndarray  # (B, C, h, w): the final standardised latents
    words: list[list[str]]  # the words of each caption
    word_maps: np.ndarray | None = None  # (B, L, h, w): per word, averaged over steps, layers and heads
    weights: np.ndarray | None = None  # (B, steps, layers, heads, N, L): every cross-attention map
    trajectory: np.ndarray | None = None  # (B, steps + 1, C, h, w): the latents at every time, noise first


def _check_captions(captions: Sequence[str]) -> None:
    if isinstance(captions, str):
        raise ValueError("generate expects a list of captions, got a single string: wrap it in [ ]")
    if len(captions) == 0:
        raise ValueError("generate needs at least one caption, got an empty list")


@torch.no_grad()
def sample_latents(
    model: torch.nn.Module,
    text_tokens: torch.Tensor,
    context_mask: torch.Tensor,
    noise: torch.Tensor,
    guidance_scale: float = 3.0,
    steps: int = 20,
    need_weights: bool = False,
    attention_control: Any = None,
    keep_trajectory: bool = False,
) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """Euler sampling from ``noise`` ``(B, C, h, w)`` at t = 1 to latents at t = 0.

    Returns the latents, per step the cross-attention weights of the captioned half
    ``(B, layers, heads, N, L)`` (when ``need_weights`` or controlled), and per time the latents
    (when ``keep_trajectory``). ``attention_control``: an object with ``edit(step, layer, weights)``
    (``control.py``), applied to the captioned half only.
    """
    if not np.isfinite(guidance_scale):
        raise ValueError(f"guidance_scale must be a finite number, got {guidance_scale!r}")
    times = time_grid(steps)
    B = len(noise)
    device = noise.device
    guided = guidance_scale != 1.0
    if guided:
        null_tokens, null_mask = null_captions(B, model.config, device)
        null_tokens = null_tokens[:, : text_tokens.shape[1]]
        null_mask = null_mask[:, : text_tokens.shape[1]]
        text_tokens = torch.cat([text_tokens, null_tokens])
        context_mask = torch.cat([context_mask, null_mask])
    context = model.encode_text(text_tokens, context_mask)  # once, not at every step
    x = noise
    all_weights, trajectory = [], [x.cpu()] if keep_trajectory else []
    for step in range(steps):
        t, t_next = float(times[step]), float(times[step + 1])
        control = None
        if attention_control is not None:
            def control(layer: int, w: torch.Tensor, step: int = step) -> torch.Tensor:
                part = w[:B]
                edited = attention_control.edit(step, layer, part)
                if edited is part:  # unchanged: the layer keeps its own result
                    return w
                return torch.cat([edited, w[B:]]) if guided else edited
        inputs = torch.cat([x, x]) if guided else x
        output = model(inputs, torch.full((len(inputs),), t, device=device), text_tokens, context_mask,
                       need_weights=need_weights, attention_control=control, context=context)
        velocity = output.velocity
        if guided:
            velocity = guided_velocity(velocity[B:], velocity[:B], guidance_scale)
        if need_weights and output.cross_weights:
            all_weights.append(torch.stack([w[:B] for w in output.cross_weights], dim=1).float().cpu())
        x = euler_step(x, velocity, t, t_next)
        if keep_trajectory:
            trajectory.append(x.cpu())
    return x, all_weights, trajectory


def generate(
    model: torch.nn.Module,
    tokenizer: ImageTokenizer,
    captions: Sequence[str],
    guidance_scale: float = 3.0,
    steps: int = 20,
    seed: int = 0,
    attention_maps: bool = False,
    attention_control: Any = None,
    keep_trajectory: bool = False,
    batch_size: int = 250,
) -> DiffusionGeneration:
    """Draw one image per caption with ``steps`` Euler steps and classifier-free guidance
    ``guidance_scale`` (1 = no guidance, the conditional model alone).

    ``attention_maps=True`` also returns every cross-attention map (``weights``) and their
    average per word (``word_maps``). ``keep_trajectory=True`` returns the latents at every
    time. The same ``seed`` and ``batch_size`` give the same images. Grade the images with
    :func:`crossmodal_edu.world.fidelity.image_fidelity`.
    """
    _check_captions(captions)
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int (captions sampled together), got {batch_size!r}")
    time_grid(steps)  # validates steps
    vocab = world.Vocab()
    if len(vocab) != model.config.vocab_size:
        raise ValueError(f"model was trained on {model.config.vocab_size} words, this world has {len(vocab)}")
    if attention_maps and model.config.conditioning == "none":
        raise ValueError("this denoiser never reads the caption (conditioning='none'): it has no attention maps to show")
    text_tokens, context_mask = vocab.encode_batch(list(captions), max_len=model.config.max_text_len)
    text_tokens, context_mask = torch.from_numpy(text_tokens), torch.from_numpy(context_mask)
    space = latent_space(model, tokenizer)
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    latents, images, weights, trajectories = [], [], [], []
    for start in range(0, len(captions), int(batch_size)):
        part = slice(start, start + int(batch_size))
        n = len(text_tokens[part])
        noise = torch.randn(n, *space.shape, generator=generator).to(device)
        x, w, trajectory = sample_latents(
            model, text_tokens[part].to(device), context_mask[part].to(device), noise, guidance_scale, steps,
            need_weights=attention_maps, attention_control=attention_control, keep_trajectory=keep_trajectory,
        )
        latents.append(x.cpu())
        images.append(space.decode(x))
        if attention_maps:
            weights.append(torch.stack(w, dim=1))  # (b, steps, layers, heads, N, L)
        if keep_trajectory:
            trajectories.append(torch.stack(trajectory, dim=1))
    generation = DiffusionGeneration(
        captions=list(captions),
        images=np.concatenate(images),
        latents=torch.cat(latents).numpy(),
        words=[caption.split() for caption in captions],
    )
    if attention_maps:
        all_weights = torch.cat(weights)  # (B, S, layers, heads, N, L)
        generation.weights = all_weights.numpy()
        generation.word_maps = word_maps(all_weights, space.shape[1])
    if keep_trajectory:
        generation.trajectory = torch.cat(trajectories).numpy()
    return generation


def word_maps(weights: torch.Tensor | np.ndarray, grid_size: int) -> np.ndarray:
    """Weights ``(B, steps, layers, heads, N, L)`` -> per-word maps ``(B, L, h, w)``: how much
    each latent position read each word, averaged over steps, layers and heads."""
    weights = torch.as_tensor(weights)
    mean = weights.mean(dim=(1, 2, 3))  # (B, N, L)
    B, N, L = mean.shape
    return mean.transpose(1, 2).reshape(B, L, grid_size, grid_size).numpy()
