r"""The image tokenizer: a small VQ-VAE that turns a 32 x 32 image into an 8 x 8 grid of integer
``image_tokens``, and those tokens back into an image.

Derived in notebooks/05_image_tokenizer.ipynb. The file reads in the order data flows:

1. the **encoder**, convolutions that shrink the image 4x along each side:
   ``(B, 3, 32, 32) -> z (B, code_dim, 8, 8)``. By default it is *local*: each token sees its own
   4 x 4 block and 4 px around it, so black background is always the same token and an object
   changes only the tokens near it (fewer bits for the decoder of lesson 06 to predict);
2. **vector quantisation**: each of the 64 vectors ``z`` is replaced by its nearest code in a
   learned ``codebook (codebook_size, code_dim)``; the code's index is the image token;
3. the **decoder**, transposed convolutions back to ``(B, 3, 32, 32)``.

Training minimises (van den Oord et al., 2017, with the codebook learned by exponential moving
averages as in their appendix and in Razavi et al., 2019)

.. math::

    \mathcal{L} = \lVert x - \hat x \rVert^2 + \beta\, \lVert z - \mathrm{sg}[z_q] \rVert^2

(means over pixels and entries), where :math:`\mathrm{sg}` stops the gradient. The argmin in the middle has no gradient, so the
**straight-through estimator** copies the decoder's input gradient to the encoder's output.
Codes that no encoder output picks any more are **restarted** on encoder outputs the codebook
represents worst, so the whole vocabulary stays in use.

Images here are PyTorch's ``(B, 3, H, W)``; :func:`images_to_tensor` and :func:`tensor_to_images`
convert from and to the world's NumPy ``(B, H, W, 3)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from crossmodal_edu._checks import describe, fmt_shape
from crossmodal_edu.dalle.config import TokenizerConfig

# --- images between NumPy (the world) and PyTorch (the model) --------------------------------


def images_to_tensor(images: np.ndarray, device: str | torch.device = "cpu") -> torch.Tensor:
    """World images ``(B, H, W, 3)`` (or one ``(H, W, 3)``) float in [0, 1] -> ``(B, 3, H, W)``
    float32 tensor on ``device``."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(
            f"images must have shape (B, H, W, 3) or (H, W, 3), got shape {fmt_shape(images.shape)}"
        )
    tensor = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    return tensor.permute(0, 3, 1, 2).contiguous().to(device)  # (B, 3, H, W)


def tensor_to_images(images: torch.Tensor) -> np.ndarray:
    """Model images ``(B, 3, H, W)`` -> world images ``(B, H, W, 3)`` float32, clipped to [0, 1]."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must have shape (B, 3, H, W), but {describe('images', images)}")
    array = images.detach().float().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()  # (B, H, W, 3)
    return np.ascontiguousarray(array)


# --- vector quantisation ---------------------------------------------------------------------


def nearest_code(z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    r"""Index of the nearest code (squared Euclidean distance) for every vector of ``z``.

    .. math:: k^*(z) = \arg\min_k \lVert z - e_k \rVert^2
              = \arg\min_k \big(\lVert z\rVert^2 - 2\, z \cdot e_k + \lVert e_k \rVert^2\big)

    The expanded form needs one matrix product instead of a ``(N, K, D)`` difference tensor.
    Shapes: ``z (..., D)``, ``codebook (K, D)`` -> ``(...)`` int64. Ties go to the lower index.
    Derived in notebooks/05_image_tokenizer.ipynb.
    """
    if codebook.ndim != 2:
        raise ValueError(f"codebook must have shape (K, D), but {describe('codebook', codebook)}")
    if z.shape[-1] != codebook.shape[-1]:
        raise ValueError(
            f"z and codebook must share the code width D (their last axis): "
            f"{describe('z', z)}, {describe('codebook', codebook)}"
        )
    flat = z.reshape(-1, z.shape[-1])  # (N, D)
    distances = (
        flat.square().sum(-1, keepdim=True)  # (N, 1)
        - 2 * flat @ codebook.T  # (N, K)
        + codebook.square().sum(-1)  # (K,)
    )  # (N, K)
    return distances.argmin(-1).reshape(z.shape[:-1])  # (...)


def straight_through(z: torch.Tensor, z_q: torch.Tensor) -> torch.Tensor:
    r"""The straight-through estimator: the value of ``z_q``, the gradient of ``z``.

    .. math:: \tilde z = z + \mathrm{sg}[z_q - z], \qquad \tilde z = z_q, \qquad
              \frac{\partial \mathcal L}{\partial z} = \frac{\partial \mathcal L}{\partial \tilde z}

    Without the stop-gradient (``detach``) the two ``z`` cancel and the encoder gets no gradient
    at all. Shapes: ``z`` and ``z_q`` the same, returned unchanged.
    Derived in notebooks/05_image_tokenizer.ipynb.
    """
    if z.shape != z_q.shape:
        raise ValueError(f"z and z_q must have the same shape: {describe('z', z)}, {describe('z_q', z_q)}")
    return z + (z_q - z).detach()


def codebook_usage(image_tokens: torch.Tensor | np.ndarray, codebook_size: int) -> np.ndarray:
    """How often each code occurs in ``image_tokens`` (any shape): ``(codebook_size,)`` int64."""
    tokens = np.asarray(image_tokens.cpu() if isinstance(image_tokens, torch.Tensor) else image_tokens)
    if tokens.size and (tokens.min() < 0 or tokens.max() >= codebook_size):
        raise ValueError(
            f"image_tokens must lie in 0..{codebook_size - 1}, got {tokens.min()}..{tokens.max()}"
        )
    return np.bincount(tokens.reshape(-1).astype(np.int64), minlength=codebook_size)


def perplexity(counts: np.ndarray) -> float:
    r"""Perplexity of a code histogram ``counts (K,)``: the number of equally used codes that
    would have the same entropy.

    .. math:: \mathrm{PPL} = \exp\Big(-\sum_k p_k \log p_k\Big), \qquad p_k = n_k / \textstyle\sum_j n_j

    1 when every token is the same code; ``K`` when all ``K`` codes are used equally.
    """
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 1 or counts.sum() <= 0:
        raise ValueError(f"counts must be a non-empty histogram (K,), got shape {fmt_shape(counts.shape)}")
    p = counts[counts > 0] / counts.sum()
    return float(np.exp(-(p * np.log(p)).sum()))


@dataclass
class QuantizerOutput:
    """What the quantiser returns for encoder outputs ``z (B, D, h, w)``."""

    z_q: torch.Tensor  # (B, D, h, w) the codes, carrying z's gradient (straight-through)
    image_tokens: torch.Tensor  # (B, h, w) int64 code indices
    commitment_loss: torch.Tensor  # scalar ||z - sg[z_q]||^2, mean over entries
    restarted: int  # codes restarted by this call (0 outside training)


class VectorQuantizer(nn.Module):
    r"""Nearest-code quantisation with a codebook learned by exponential moving averages.

    For each step's assignments, with :math:`n_k` vectors assigned to code :math:`k` and
    :math:`s_k` their sum,

    .. math:: N_k \leftarrow \gamma N_k + (1-\gamma)\, n_k, \quad
              m_k \leftarrow \gamma m_k + (1-\gamma)\, s_k, \quad
              e_k = m_k / N_k

    so each code moves towards the mean of the vectors it won (online k-means); no gradient
    reaches the codebook, hence no codebook loss. A code whose share of the assignments
    :math:`N_k / \sum_j N_j` falls below ``dead_code_usage / K`` is **dead**: it is moved onto an
    encoder output of the current batch, drawn with probability proportional to that output's
    squared distance to its nearest code (as k-means++ seeds), i.e. where the codebook is worst.
    All counts start at zero, so the first training step seeds every code this way.

    Buffers (saved in ``state_dict``): ``codebook (K, D)``, ``ema_count (K,)``, ``ema_sum (K, D)``.
    """

    def __init__(
        self,
        codebook_size: int,
        code_dim: int,
        ema_decay: float = 0.99,
        dead_code_usage: float = 0.03,
        restart_dead_codes: bool = True,
    ) -> None:
        super().__init__()
        self.codebook_size = codebook_size
        self.code_dim = code_dim
        self.ema_decay = ema_decay
        self.dead_code_usage = dead_code_usage
        self.restart_dead_codes = restart_dead_codes
        self.generator: torch.Generator | None = None  # CPU generator for restarts; set by training
        self.register_buffer("codebook", torch.randn(codebook_size, code_dim) * 0.1)
        self.register_buffer("ema_count", torch.zeros(codebook_size))
        self.register_buffer("ema_sum", torch.zeros(codebook_size, code_dim))

    def extra_repr(self) -> str:
        return f"codebook_size={self.codebook_size}, code_dim={self.code_dim}, ema_decay={self.ema_decay}"

    def _check(self, z: torch.Tensor) -> None:
        if z.ndim != 4 or z.shape[1] != self.code_dim:
            raise ValueError(
                f"z must have shape (B, code_dim, h, w) with code_dim={self.code_dim}, but {describe('z', z)}"
            )

    def quantize(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Codes and indices for ``z (B, D, h, w)``, no gradient, no update:
        ``(z_q (B, D, h, w), image_tokens (B, h, w))``."""
        self._check(z)
        vectors = z.detach().float().permute(0, 2, 3, 1)  # (B, h, w, D)
        image_tokens = nearest_code(vectors, self.codebook)  # (B, h, w)
        return self.lookup(image_tokens), image_tokens

    def lookup(self, image_tokens: torch.Tensor) -> torch.Tensor:
        """The code vectors of ``image_tokens (B, h, w)``: ``(B, D, h, w)``."""
        if image_tokens.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"image_tokens must be integers, got dtype {image_tokens.dtype}")
        return F.embedding(image_tokens, self.codebook).permute(0, 3, 1, 2)  # (B, D, h, w)

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        """Quantise ``z (B, D, h, w)``; in training mode also update the codebook."""
        z = z.float()  # distances in float32 even under autocast
        z_q, image_tokens = self.quantize(z)
        commitment_loss = F.mse_loss(z, z_q)  # z_q carries no gradient: this is ||z - sg[z_q]||^2
        restarted = 0
        if self.training:
            restarted = self._update(z.detach(), image_tokens)
        return QuantizerOutput(straight_through(z, z_q), image_tokens, commitment_loss, restarted)

    @torch.no_grad()
    def _update(self, z: torch.Tensor, image_tokens: torch.Tensor) -> int:
        vectors = z.permute(0, 2, 3, 1).reshape(-1, self.code_dim)  # (N, D)
        tokens = image_tokens.reshape(-1)  # (N,)
        counts = torch.bincount(tokens, minlength=self.codebook_size).float()  # (K,)
        sums = torch.zeros_like(self.ema_sum).index_add_(0, tokens, vectors)  # (K, D)
        gamma = self.ema_decay
        self.ema_count.mul_(gamma).add_(counts, alpha=1 - gamma)
        self.ema_sum.mul_(gamma).add_(sums, alpha=1 - gamma)
        used = self.ema_count > 1e-8
        self.codebook[used] = self.ema_sum[used] / self.ema_count[used, None]
        if not self.restart_dead_codes:
            return 0
        return self.restart(vectors)

    @torch.no_grad()
    def restart(self, vectors: torch.Tensor) -> int:
        """Move every dead code onto one of ``vectors (N, D)``, drawn with probability
        proportional to its squared distance to the nearest code. Returns how many moved."""
        share = self.ema_count / self.ema_count.sum().clamp_min(1e-8)  # (K,)
        dead = torch.nonzero(share < self.dead_code_usage / self.codebook_size).reshape(-1)  # (n_dead,)
        if dead.numel() == 0:
            return 0
        nearest = self.codebook[nearest_code(vectors, self.codebook)]  # (N, D)
        # On the CPU so that one seed gives the same restarts on every device.
        weights = (vectors - nearest).square().sum(-1).float().cpu() + 1e-12  # (N,)
        replace = dead.numel() <= len(vectors)
        picks = torch.multinomial(weights, dead.numel(), replacement=not replace, generator=self.generator)
        new_codes = vectors[picks.to(vectors.device)]  # (n_dead, D)
        # A restarted code gets the average code's count, so it has time to win vectors.
        fresh_count = max(float(self.ema_count.sum()) / self.codebook_size, 1e-3)
        self.codebook[dead] = new_codes
        self.ema_sum[dead] = new_codes * fresh_count
        self.ema_count[dead] = fresh_count
        return int(dead.numel())


# --- encoder and decoder ---------------------------------------------------------------------


class ResBlock(nn.Module):
    """``x + conv1x1(relu(conv3x3(relu(x))))``, the residual block of the VQ-VAE paper."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv3 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv1 = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv1(F.relu(self.conv3(F.relu(x))))


def _stage_widths(config: TokenizerConfig) -> list[int]:
    """Channels after each stride-2 stage: half width until the last stage, then full width."""
    stages = int(math.log2(config.downsample))
    return [config.channels // 2] * (stages - 1) + [config.channels]


class Encoder(nn.Module):
    """``(B, 3, H, W) -> z (B, code_dim, H / downsample, W / downsample)``.

    A 3 x 3 convolution, then 4 x 4 stride-2 convolutions: with ``downsample=4`` and no residual
    blocks each token's receptive field is its own 4 x 4 block plus 4 px on every side (12 x 12 px).
    Padding repeats the edge values rather than adding zeros: a zero-padded feature map would tell
    the border tokens of a black image apart from the inner ones, and give them codes of their own.
    """

    def __init__(self, config: TokenizerConfig) -> None:
        super().__init__()
        widths = _stage_widths(config)
        pad = {"padding": 1, "padding_mode": "replicate"}
        layers: list[nn.Module] = [nn.Conv2d(3, config.channels // 2, 3, **pad)]
        width = config.channels // 2
        for out in widths:
            layers += [nn.ReLU(), nn.Conv2d(width, out, 4, stride=2, **pad)]  # halves H and W
            width = out
        layers += [ResBlock(width) for _ in range(config.encoder_res_blocks)]
        layers += [nn.ReLU(), nn.Conv2d(width, config.code_dim, 1)]
        self.layers = nn.Sequential(*layers)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.layers(images)  # (B, code_dim, h, w)


class Decoder(nn.Module):
    """``z_q (B, code_dim, h, w) -> (B, 3, h * downsample, w * downsample)``, unclipped.

    Residual blocks at the token grid first, so each pixel is painted from a neighbourhood of
    tokens (an object's corner can be read off the tokens beside it), then transposed convolutions.
    """

    def __init__(self, config: TokenizerConfig) -> None:
        super().__init__()
        widths = _stage_widths(config)[::-1]  # mirror of the encoder
        width = config.channels
        layers: list[nn.Module] = [nn.Conv2d(config.code_dim, width, 3, padding=1)]
        layers += [ResBlock(width) for _ in range(config.decoder_res_blocks)]
        for out in widths[1:] + [config.channels // 2]:
            layers += [nn.ReLU(), nn.ConvTranspose2d(width, out, 4, stride=2, padding=1)]  # doubles H, W
            width = out
        layers += [nn.ReLU(), nn.Conv2d(width, 3, 3, padding=1)]
        self.layers = nn.Sequential(*layers)

    def forward(self, z_q: torch.Tensor) -> torch.Tensor:
        return self.layers(z_q)  # (B, 3, H, W)


# --- the tokenizer ---------------------------------------------------------------------------


@dataclass
class TokenizerOutput:
    """What :meth:`ImageTokenizer.forward` returns for images ``(B, 3, H, W)``."""

    reconstruction: torch.Tensor  # (B, 3, H, W) the decoder's output, not clipped
    image_tokens: torch.Tensor  # (B, h, w) int64
    commitment_loss: torch.Tensor  # scalar
    restarted: int  # dead codes restarted in this step (training mode only)


class ImageTokenizer(nn.Module):
    """A VQ-VAE: encoder, vector quantiser with an EMA codebook, decoder.

    ``encode``: images ``(B, 3, H, W)`` -> ``image_tokens (B, h, w)`` int64 in ``0..K-1``;
    ``decode``: ``image_tokens`` ``(B, h, w)`` or flattened ``(B, h * w)`` (raster order, as a
    transformer emits them) -> images ``(B, 3, H, W)`` in [0, 1]; ``forward`` does both, for
    training. With the defaults, ``H = W = 32``, ``h = w = 8``, ``K = 256``.
    Derived in notebooks/05_image_tokenizer.ipynb.
    """

    def __init__(self, config: TokenizerConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or TokenizerConfig()
        self.encoder = Encoder(config)
        self.quantizer = VectorQuantizer(
            config.codebook_size, config.code_dim, config.ema_decay, config.dead_code_usage
        )
        self.decoder = Decoder(config)

    @property
    def codebook(self) -> torch.Tensor:
        """The code vectors ``(codebook_size, code_dim)``."""
        return self.quantizer.codebook

    def _check_images(self, images: torch.Tensor) -> None:
        size = self.config.image_size
        if images.ndim != 4 or tuple(images.shape[1:]) != (3, size, size):
            hint = ""
            if images.ndim == 4 and images.shape[-1] == 3:
                hint = "; world images are (B, H, W, 3): convert them with images_to_tensor"
            raise ValueError(
                f"images must have shape (B, 3, {size}, {size}), but {describe('images', images)}{hint}"
            )

    def forward(self, images: torch.Tensor) -> TokenizerOutput:
        """Encode, quantise (updating the codebook in training mode) and decode ``(B, 3, H, W)``."""
        self._check_images(images)
        z = self.encoder(images)  # (B, code_dim, h, w)
        with torch.autocast(device_type=images.device.type, enabled=False):
            quantized = self.quantizer(z)
        reconstruction = self.decoder(quantized.z_q)  # (B, 3, H, W)
        return TokenizerOutput(
            reconstruction, quantized.image_tokens, quantized.commitment_loss, quantized.restarted
        )

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Images ``(B, 3, H, W)`` in [0, 1] -> ``image_tokens (B, h, w)`` int64."""
        self._check_images(images)
        z = self.encoder(images.to(self.codebook.device))  # (B, code_dim, h, w)
        return self.quantizer.quantize(z)[1]  # (B, h, w)

    @torch.no_grad()
    def decode(self, image_tokens: torch.Tensor) -> torch.Tensor:
        """``image_tokens`` ``(B, h, w)`` or ``(B, h * w)`` -> images ``(B, 3, H, W)`` in [0, 1]."""
        grid = self.config.grid_size
        image_tokens = torch.as_tensor(image_tokens, device=self.codebook.device)
        if image_tokens.ndim == 2 and image_tokens.shape[1] == grid * grid:
            image_tokens = image_tokens.reshape(-1, grid, grid)  # (B, h, w), raster order
        if image_tokens.ndim != 3 or tuple(image_tokens.shape[1:]) != (grid, grid):
            raise ValueError(
                f"image_tokens must have shape (B, {grid}, {grid}) or (B, {grid * grid}), "
                f"but {describe('image_tokens', image_tokens)}"
            )
        if image_tokens.min() < 0 or image_tokens.max() >= self.config.codebook_size:
            raise ValueError(f"image_tokens must lie in 0..{self.config.codebook_size - 1}")
        return self.decoder(self.quantizer.lookup(image_tokens.long())).clamp(0, 1)  # (B, 3, H, W)

    @torch.no_grad()
    def reconstruct(self, images: np.ndarray, batch_size: int = 500) -> np.ndarray:
        """World images ``(B, H, W, 3)`` -> their reconstructions through the tokens, same shape."""
        out = []
        for start in range(0, len(images), batch_size):
            batch = images_to_tensor(images[start : start + batch_size], self.codebook.device)
            out.append(tensor_to_images(self.decode(self.encode(batch))))
        return np.concatenate(out) if out else np.zeros_like(images, dtype=np.float32)

    @torch.no_grad()
    def tokenize(self, images: np.ndarray, batch_size: int = 500) -> np.ndarray:
        """World images ``(B, H, W, 3)`` -> ``image_tokens (B, h, w)`` int64 NumPy array."""
        out = [
            self.encode(images_to_tensor(images[start : start + batch_size], self.codebook.device)).cpu().numpy()
            for start in range(0, len(images), batch_size)
        ]
        grid = self.config.grid_size
        return np.concatenate(out) if out else np.zeros((0, grid, grid), dtype=np.int64)
