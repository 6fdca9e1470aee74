r"""The space the diffusion model works in: the image tokenizer's continuous latents.

Lesson 05's VQ-VAE encoder turns a 32 x 32 image into an 8 x 8 grid of 16-number vectors
``z`` *before* they are snapped to the nearest code. A diffusion model cannot denoise integer
tokens by adding Gaussian noise, but it can denoise ``z``: 1,024 numbers instead of 3,072 pixels,
and a decoder that already knows how to paint them. This is the "VQ-regularised" latent space of
latent diffusion (Rombach et al. 2022, "High-Resolution Image Synthesis with Latent Diffusion
Models", §3 and appendix): the quantiser is kept, but only at the very end, inside the decoder,
where it snaps a generated latent to the nearest codes before painting.

Noise of standard deviation 1 only means "pure noise" if the data have a comparable scale, so each
channel is standardised with a mean and standard deviation measured once on fresh scenes:

.. math:: x = (z - \mu) / \sigma, \qquad z = \sigma x + \mu .

Used by notebooks/07_latent_diffusion.ipynb.
"""

from __future__ import annotations

import numpy as np
import torch

from crossmodal_edu import world
from crossmodal_edu._checks import describe
from crossmodal_edu.dalle.tokenizer import ImageTokenizer, images_to_tensor, tensor_to_images

STATS_SEED = 70_001
"""Seed of the scenes the per-channel statistics are measured on (never a training batch)."""


class LatentSpace:
    """Images <-> standardised latents ``(B, C, h, w)`` through a frozen ``tokenizer``.

    ``mean`` and ``std`` ``(C,)`` are the per-channel statistics of ``tokenizer.encoder``'s output;
    :meth:`measure` computes them. ``snap=True`` in :meth:`decode` rounds each latent vector to its
    nearest code before the decoder paints it (the quantiser as the last step of generation).
    """

    def __init__(self, tokenizer: ImageTokenizer, mean: torch.Tensor, std: torch.Tensor) -> None:
        channels = tokenizer.config.code_dim
        mean, std = torch.as_tensor(mean, dtype=torch.float32), torch.as_tensor(std, dtype=torch.float32)
        if mean.shape != (channels,) or std.shape != (channels,):
            raise ValueError(f"mean and std must have shape ({channels},), got {tuple(mean.shape)} and {tuple(std.shape)}")
        if not bool((std > 0).all()):
            raise ValueError("std must be positive in every channel")
        self.tokenizer = tokenizer.eval()
        self.mean, self.std = mean, std

    @classmethod
    def measure(cls, tokenizer: ImageTokenizer, num_images: int = 2000) -> "LatentSpace":
        """Measure the per-channel mean and standard deviation on ``num_images`` fresh scenes
        (half of one object, half of two)."""
        half = num_images // 2
        images = np.concatenate([
            world.make_dataset(half, 1, seed=STATS_SEED, image_size=tokenizer.config.image_size).images,
            world.make_dataset(num_images - half, 2, seed=STATS_SEED + 1, image_size=tokenizer.config.image_size).images,
        ])
        z = _encode_raw(tokenizer, images)  # (N, C, h, w)
        return cls(tokenizer, z.mean(dim=(0, 2, 3)), z.std(dim=(0, 2, 3)))

    @property
    def device(self) -> torch.device:
        return self.tokenizer.codebook.device

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(C, h, w)`` of one latent: ``(16, 8, 8)`` with the shipped tokenizer."""
        grid = self.tokenizer.config.grid_size
        return (self.tokenizer.config.code_dim, grid, grid)

    def _stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mean.to(self.device)[:, None, None], self.std.to(self.device)[:, None, None]

    @torch.no_grad()
    def encode(self, images: np.ndarray | torch.Tensor) -> torch.Tensor:
        """World images ``(B, H, W, 3)`` (NumPy) or ``(B, 3, H, W)`` (tensor) -> standardised
        latents ``(B, C, h, w)`` float32 on the tokenizer's device."""
        mean, std = self._stats()
        return (_encode_raw(self.tokenizer, images) - mean) / std

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, snap: bool = True) -> np.ndarray:
        """Standardised latents ``(B, C, h, w)`` -> images ``(B, H, W, 3)`` float32 in [0, 1]."""
        if latents.ndim != 4 or tuple(latents.shape[1:]) != self.shape:
            raise ValueError(f"latents must have shape (B, {', '.join(map(str, self.shape))}), but {describe('latents', latents)}")
        mean, std = self._stats()
        z = latents.to(self.device, torch.float32) * std + mean  # (B, C, h, w)
        if snap:
            z = self.tokenizer.quantizer.lookup(self.tokenizer.quantizer.quantize(z)[1])  # nearest codes
        return tensor_to_images(self.tokenizer.decoder(z).clamp(0, 1))

    def state(self) -> dict[str, torch.Tensor]:
        """The statistics, for a checkpoint."""
        return {"mean": self.mean.clone(), "std": self.std.clone()}


@torch.no_grad()
def _encode_raw(tokenizer: ImageTokenizer, images: np.ndarray | torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    device = tokenizer.codebook.device
    if isinstance(images, np.ndarray):
        parts = [images_to_tensor(images[i : i + batch_size], device) for i in range(0, len(images), batch_size)]
    else:
        parts = [images.to(device)]
    out = []
    for part in parts:
        tokenizer._check_images(part)
        out.append(tokenizer.encoder(part).float())
    return torch.cat(out)  # (B, C, h, w)
