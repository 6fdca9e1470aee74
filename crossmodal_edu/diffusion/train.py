"""Training the latent diffusion model: fresh scenes at every step, encoded to latents by the
frozen tokenizer, noised at random times, one mean-squared-error step on the velocity.

The loop is ``crossmodal_edu.dalle.train.train_loop`` (budget, progress bar, atomic checkpoints,
Ctrl-C keeps the last good one), and the determinism is the DALL-E decoder's: the batch, times,
noise and caption dropout of step ``s`` depend only on ``(seed, s)``, so a resumed run sees what
the uninterrupted one would have seen.

The model that samples is an exponential moving average (EMA) of the trained weights,
:math:`\\bar\\theta \\leftarrow \\gamma\\bar\\theta + (1 - \\gamma)\\theta` after every step, with
:math:`\\gamma = \\min(\\text{ema\\_decay}, (1 + s) / (10 + s))` so that it is not stuck near the
random start of a short run (DDPM, Ho et al. 2020, sampled from an EMA too). A checkpoint
carries a copy of its tokenizer, so ``load_text_to_image()`` needs one file.
Used by ``python -m crossmodal_edu.diffusion train`` and notebooks/07_latent_diffusion.ipynb.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from crossmodal_edu import world
from crossmodal_edu.dalle.checkpoint import load_checkpoint, save_checkpoint
from crossmodal_edu.dalle.config import TrainConfig, config_from_dict
from crossmodal_edu.dalle.decoder import drop_captions
from crossmodal_edu.dalle.tokenizer import ImageTokenizer
from crossmodal_edu.dalle.train import (
    autocast,
    learning_rate,
    load_tokenizer,
    model_checkpoint,
    seed_everything,
    step_seed,
    tokenizer_checkpoint,
    tokenizer_from_checkpoint,
    train_loop,
)
from crossmodal_edu.device import get_device
from crossmodal_edu.diffusion.config import DiffusionConfig, DiffusionTrainConfig
from crossmodal_edu.diffusion.denoiser import build_denoiser
from crossmodal_edu.diffusion.flow import sample_times
from crossmodal_edu.diffusion.latents import LatentSpace

KIND = "latent_diffusion"
CHECKPOINT = Path(__file__).resolve().parent / "checkpoints" / "diffusion.pt"
"""The shipped denoiser (made by the command in checkpoints/README.md)."""


def diffusion_batch(
    step: int, train: TrainConfig, config: DiffusionConfig, space: LatentSpace, vocab: world.Vocab
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The batch of step ``step``: fresh scenes (a share ``two_object_fraction`` of two objects),
    never a ``held_out`` pair. Returns ``text_tokens`` ``(B, L)``, ``context_mask`` ``(B, L)`` and
    standardised latents ``(B, C, h, w)`` on the tokenizer's device."""
    two = int(round(train.batch_size * train.two_object_fraction))
    images, captions = [], []
    for num_objects, n in ((1, train.batch_size - two), (2, two)):
        if n > 0:
            data = world.make_dataset(n, num_objects, seed=step_seed(train.seed, step, num_objects),
                                      image_size=space.tokenizer.config.image_size, exclude=config.held_out_pairs)
            images.append(space.encode(data.images))
            captions += data.captions
    text_tokens, context_mask = vocab.encode_batch(captions, max_len=config.max_text_len)
    device = space.device
    return torch.from_numpy(text_tokens).to(device), torch.from_numpy(context_mask).to(device), torch.cat(images)


def update_ema(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """``ema <- decay * ema + (1 - decay) * model``, parameter by parameter (buffers copied)."""
    with torch.no_grad():
        for e, p in zip(ema.parameters(), model.parameters()):
            e.lerp_(p, 1.0 - decay)
        for e, b in zip(ema.buffers(), model.buffers()):
            e.copy_(b)


def diffusion_from_checkpoint(checkpoint: dict[str, Any]) -> tuple[torch.nn.Module, ImageTokenizer]:
    """Rebuild the (EMA) denoiser and its tokenizer from a checkpoint (float32, CPU, eval mode)."""
    if checkpoint.get("kind") != KIND:
        raise ValueError(f"not a latent diffusion checkpoint (kind={checkpoint.get('kind')!r})")
    model = build_denoiser(config_from_dict(DiffusionConfig, checkpoint["config"]))
    model.load_state_dict({k: v.float() for k, v in checkpoint["model"].items()})
    return model.eval(), tokenizer_from_checkpoint(checkpoint["tokenizer"])


def load_text_to_image(path: str | Path | None = None, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, ImageTokenizer]:
    """The denoiser saved at ``path`` (default: the pretrained one shipped with the package) and
    the tokenizer whose latents it denoises, in eval mode on ``device``. Needs no network."""
    checkpoint = load_checkpoint(CHECKPOINT if path is None else path)
    model, tokenizer = diffusion_from_checkpoint(checkpoint)
    return model.to(device), tokenizer.to(device)


@dataclass
class DiffusionTrainResult:
    """What :func:`train_diffusion` returns."""

    model: torch.nn.Module  # the EMA weights, in eval mode: the model to sample from
    tokenizer: ImageTokenizer
    history: dict[str, list[float]] = field(default_factory=dict)  # per step: loss
    step: int = 0
    interrupted: bool = False
    seconds: float = 0.0  # training wall time over all resumes
    trained: torch.nn.Module | None = None  # the raw (non-averaged) weights


def train_diffusion(
    config: DiffusionConfig | None = None,
    train: DiffusionTrainConfig | None = None,
    tokenizer: ImageTokenizer | None = None,
    out: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    evaluate: Callable[[torch.nn.Module, ImageTokenizer], dict[str, float]] | None = None,
) -> DiffusionTrainResult:
    """Train a denoiser (``build_denoiser(config)``) on the latents of a frozen ``tokenizer``
    (default: the pretrained one). Per step: a batch (:func:`diffusion_batch`), caption dropout,
    times and noise, one AdamW step on the velocity error, an EMA update. ``resume=True``
    continues the checkpoint at ``out`` (its configs and tokenizer win; ``train`` may raise
    ``steps``). ``evaluate(model, tokenizer)`` runs on the EMA model at the end; its metrics go
    into the final checkpoint."""
    config = config or DiffusionConfig()
    train = train or DiffusionTrainConfig()
    device = get_device(train.device)
    out = None if out is None else Path(out)
    vocab = world.Vocab()
    if len(vocab) != config.vocab_size:
        raise ValueError(f"config.vocab_size is {config.vocab_size} but the world's vocabulary has {len(vocab)} words")
    history: dict[str, list[float]] = {"loss": []}
    start_step, seconds_before = 0, 0.0
    checkpoint = load_checkpoint(out) if resume and out is not None and out.is_file() else None
    seed_everything(train.seed)
    if checkpoint is not None:
        if "optimizer" not in checkpoint:
            raise ValueError(f"{out} holds no optimiser state (a release checkpoint): it cannot be resumed")
        ema, tokenizer = diffusion_from_checkpoint(checkpoint)
        model = build_denoiser(ema.config)
        model.load_state_dict({k: v.float() for k, v in checkpoint["trained"].items()})
        config = model.config
        start_step, seconds_before = int(checkpoint["step"]), float(checkpoint["seconds"])
        history = {k: v.tolist() for k, v in checkpoint["history"].items()}
    else:
        tokenizer = tokenizer if tokenizer is not None else load_tokenizer()
        if tokenizer.config.code_dim != config.latent_channels or tokenizer.config.grid_size != config.grid_size:
            raise ValueError(
                f"the tokenizer makes {tokenizer.config.grid_size} x {tokenizer.config.grid_size} latents of "
                f"{tokenizer.config.code_dim} channels; the config expects {config.grid_size} x {config.grid_size} of {config.latent_channels}"
            )
        model = build_denoiser(config)
        space = LatentSpace.measure(tokenizer)
        model.latent_mean.copy_(space.mean)
        model.latent_std.copy_(space.std)
        ema = copy.deepcopy(model)
    tokenizer = tokenizer.to(device).eval()
    model.to(device).train()
    ema.to(device).eval()
    space = LatentSpace(tokenizer, model.latent_mean.cpu(), model.latent_std.cpu())
    optimizer = torch.optim.AdamW(model.parameters(), lr=train.lr, betas=(0.9, 0.99), weight_decay=train.weight_decay)
    if checkpoint is not None:
        optimizer.load_state_dict(checkpoint["optimizer"])
    clock = time.perf_counter()

    def train_step(step: int) -> dict[str, float]:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, train, (time.perf_counter() - clock) / 60)
        text_tokens, context_mask, x0 = diffusion_batch(step, train, config, space, vocab)
        generator = torch.Generator().manual_seed(step_seed(train.seed, step, 4))
        drop = (torch.rand(len(x0), generator=generator) < config.caption_dropout).to(device)
        text_tokens, context_mask = drop_captions(text_tokens, context_mask, drop, config)
        t = sample_times(len(x0), generator, train.time_sampling).to(device)
        noise = torch.randn(x0.shape, generator=generator).to(device)
        with autocast(device):
            loss = model.loss(x0, text_tokens, context_mask, t, noise)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        update_ema(ema, model, min(train.ema_decay, (1 + step) / (10 + step)))
        history["loss"].append(loss.item())
        return {"loss": history["loss"][-1]}

    def save(step: int, metrics: dict[str, float] | None = None) -> None:
        if out is not None:
            seconds = seconds_before + time.perf_counter() - clock
            save_checkpoint(diffusion_checkpoint(ema, model, tokenizer, optimizer, train, step, history, seconds, metrics), out)

    result = train_loop(train_step, train, start_step, save if out is not None else None, "diffusion", progress)
    model.eval()
    seconds = seconds_before + result.seconds
    if evaluate is not None and not result.interrupted:
        metrics = {**evaluate(ema, tokenizer), "train_seconds": seconds, "steps": result.step}
        save(result.step, metrics)
    return DiffusionTrainResult(ema, tokenizer, history, result.step, result.interrupted, seconds, model)


def diffusion_checkpoint(
    ema: torch.nn.Module,
    model: torch.nn.Module | None,
    tokenizer: ImageTokenizer,
    optimizer: torch.optim.Optimizer | None,
    train: TrainConfig,
    step: int,
    history: dict[str, list[float]],
    seconds: float,
    metrics: dict[str, float] | None = None,
) -> dict[str, Any]:
    """A checkpoint whose ``"model"`` is the EMA weights; to resume, also the raw weights
    (``"trained"``) and the optimiser. Without ``model`` and ``optimizer``: a release checkpoint."""
    checkpoint = model_checkpoint(KIND, ema, optimizer, train, step, history, seconds, metrics)
    if model is not None and optimizer is not None:
        checkpoint["trained"] = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    checkpoint["tokenizer"] = tokenizer_checkpoint(tokenizer, None, TrainConfig(), 0, {}, 0.0)
    return checkpoint
