"""Training: a step- or time-budgeted loop with a progress bar, deterministic data, atomic
resumable checkpoints and a loss history; and ``train_tokenizer``, which uses it.

The loop (``train_loop``) knows nothing about the model: it calls ``train_step(step)`` until the
step count or the time budget runs out, checkpoints every ``checkpoint_every`` steps and at the
end, and on Ctrl-C stops with the last good checkpoint intact. The decoder of the miniature
DALL-E trains with the same loop.

Determinism: the weights come from ``seed``; the batch of step ``s`` is drawn from the world
with a seed derived from ``(seed, s)``, and so are the codebook restarts. So a run resumed from
the checkpoint of step ``s`` sees exactly the batches the uninterrupted run would have seen.
Used by ``python -m crossmodal_edu.dalle train-tokenizer`` and notebooks/05_image_tokenizer.ipynb.
"""

from __future__ import annotations

import math
import platform
import random
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from crossmodal_edu import world
from crossmodal_edu.dalle.checkpoint import load_checkpoint, pretrained_path, save_checkpoint
from crossmodal_edu.dalle.config import TokenizerConfig, TrainConfig, config_from_dict, config_to_dict
from crossmodal_edu.dalle.tokenizer import ImageTokenizer, images_to_tensor
from crossmodal_edu.device import get_device

CHECKPOINT_FORMAT = 1
"""Version of the checkpoint layout; bumped when its keys change meaning."""


# --- determinism and devices -----------------------------------------------------------------


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and PyTorch's global generators (weights are drawn from these)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def step_seed(seed: int, step: int, stream: int = 0) -> int:
    """A 32-bit seed for ``step`` of the run seeded ``seed``; ``stream`` tells apart several
    random things drawn at one step (one-object scenes, two-object scenes, restarts)."""
    return int(np.random.SeedSequence([seed, step, stream]).generate_state(1)[0])


def autocast(device: torch.device) -> AbstractContextManager:
    """bfloat16 autocast on a CUDA GPU (matrix products in bf16, the rest in float32);
    float32 everywhere else (CPU, and Apple's MPS, whose bf16 support varies by release)."""
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return nullcontext()


def learning_rate(step: int, config: TrainConfig, elapsed_minutes: float = 0.0) -> float:
    r"""Linear warm-up over ``warmup_steps``, then cosine decay to ``lr / 10`` at ``steps``:

    .. math:: \eta(s) = \eta_{\max}\Big(0.1 + 0.45\big(1 + \cos(\pi p)\big)\Big), \quad
              p = \frac{s - w}{S - w}, \quad s \ge w

    With a time budget (``config.minutes``), ``p`` is the larger of the share of steps and the
    share of minutes used (``elapsed_minutes / minutes``): the schedule ends at whichever runs out
    first, so a run stopped by the clock still ends at ``lr / 10``. (Such a run depends on the
    machine's speed; a run limited by steps alone is reproducible step for step.)
    """
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    if config.minutes:
        progress = max(progress, elapsed_minutes / config.minutes)
    return config.lr * (0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, progress))))


# --- the generic loop --------------------------------------------------------------------------


@dataclass
class LoopResult:
    """How a call of :func:`train_loop` ended."""

    step: int  # steps done in total (including those before a resume)
    interrupted: bool  # stopped by Ctrl-C
    seconds: float  # wall time of this call


def train_loop(
    train_step: Callable[[int], dict[str, float]],
    config: TrainConfig,
    start_step: int = 0,
    save: Callable[[int], Any] | None = None,
    desc: str = "training",
    progress: bool = True,
) -> LoopResult:
    """Call ``train_step(step)`` for ``step = start_step, ..., config.steps - 1``, stopping early
    when ``config.minutes`` have passed. ``save(step)`` (steps done so far) runs every
    ``config.checkpoint_every`` steps and once at the end. ``train_step`` returns the numbers to
    show on the progress bar (e.g. ``{"loss": 0.01}``).

    Ctrl-C stops training: the checkpoint being written (if any) is abandoned, so the file on
    disk is the last complete one, and the result says ``interrupted=True``.
    """
    start = time.perf_counter()
    deadline = None if config.minutes is None else start + 60 * config.minutes
    step, saved = start_step, start_step
    bar = tqdm(total=config.steps, initial=start_step, desc=desc, disable=not progress, mininterval=1.0)
    try:
        while step < config.steps and (deadline is None or time.perf_counter() < deadline):
            shown = train_step(step)
            step += 1
            bar.update(1)
            if shown:
                bar.set_postfix({k: f"{v:.4g}" for k, v in shown.items()}, refresh=False)
            if save is not None and step % config.checkpoint_every == 0:
                save(step)
                saved = step
        if save is not None and saved != step:
            save(step)
    except KeyboardInterrupt:
        bar.close()
        where = "the checkpoint on disk is the last complete one" if save else "nothing was saved"
        print(f"Interrupted at step {step}: {where} (step {saved}); resume to continue.")
        return LoopResult(step, True, time.perf_counter() - start)
    bar.close()
    return LoopResult(step, False, time.perf_counter() - start)


def plot_history(history: dict[str, Any], key: str = "loss", ax: Any = None, title: str | None = None) -> Any:
    """Plot ``history[key]`` per step, with a running mean over 1% of the run. Returns the Axes."""
    import matplotlib.pyplot as plt

    values = np.asarray(history[key], dtype=np.float64)
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 3), dpi=90)
    ax.plot(values, lw=0.6, alpha=0.4, label="batch")
    window = max(1, len(values) // 100)
    if window > 1:
        smooth = np.convolve(values, np.ones(window) / window, mode="valid")
        ax.plot(np.arange(window - 1, len(values)), smooth, label=f"mean of {window}")
        ax.legend()
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel(key)
    ax.set_title(title or f"{key} during training")
    return ax


# --- the tokenizer -----------------------------------------------------------------------------


def tokenizer_batch(step: int, config: TrainConfig, image_size: int = 32) -> np.ndarray:
    """The images of training step ``step``: fresh one- and two-object scenes (both caption
    tiers, since the decoder will draw both), ``(batch_size, H, W, 3)``."""
    two = int(round(config.batch_size * config.two_object_fraction))
    parts = [
        world.make_dataset(n, num_objects=k, seed=step_seed(config.seed, step, k), image_size=image_size).images
        for k, n in ((1, config.batch_size - two), (2, two))
        if n > 0
    ]
    return np.concatenate(parts)  # (batch_size, H, W, 3)


def make_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW over every parameter (the codebook is a buffer, learned by EMA, not here)."""
    return torch.optim.AdamW(model.parameters(), lr=config.lr, betas=(0.9, 0.99), weight_decay=config.weight_decay)


def model_checkpoint(
    kind: str,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    train_config: TrainConfig,
    step: int,
    history: dict[str, list[float]],
    seconds: float,
    metrics: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Everything needed to use a model (``kind``, ``config``, ``model``) and to resume training
    it (``optimizer``, ``step``, ``history``), as plain data. ``model.config`` is a config dataclass."""
    checkpoint = {
        "kind": kind,
        "format": CHECKPOINT_FORMAT,
        "config": config_to_dict(model.config),
        "train_config": config_to_dict(train_config),
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "step": step,
        "seconds": seconds,
        "history": {k: torch.tensor(v, dtype=torch.float32) for k, v in history.items()},
        "environment": {"torch": str(torch.__version__), "machine": platform.machine()},
    }
    if optimizer is not None:
        checkpoint["optimizer"] = optimizer.state_dict()
    if metrics is not None:
        checkpoint["metrics"] = dict(metrics)
    return checkpoint


def tokenizer_checkpoint(
    model: ImageTokenizer,
    optimizer: torch.optim.Optimizer | None,
    train_config: TrainConfig,
    step: int,
    history: dict[str, list[float]],
    seconds: float,
    metrics: dict[str, float] | None = None,
) -> dict[str, Any]:
    """:func:`model_checkpoint` of an image tokenizer."""
    return model_checkpoint("image_tokenizer", model, optimizer, train_config, step, history, seconds, metrics)


def tokenizer_from_checkpoint(checkpoint: dict[str, Any]) -> ImageTokenizer:
    """Rebuild the tokenizer a checkpoint holds (float32, CPU, eval mode)."""
    if checkpoint.get("kind") != "image_tokenizer":
        raise ValueError(f"not an image tokenizer checkpoint (kind={checkpoint.get('kind')!r})")
    model = ImageTokenizer(config_from_dict(TokenizerConfig, checkpoint["config"]))
    model.load_state_dict({k: v.float() for k, v in checkpoint["model"].items()})
    return model.eval()


def load_tokenizer(path: str | Path | None = None, device: str | torch.device = "cpu") -> ImageTokenizer:
    """The tokenizer saved at ``path`` (default: the pretrained one shipped with the package),
    in eval mode on ``device``. Reads with ``weights_only=True``; needs no network."""
    checkpoint = load_checkpoint(pretrained_path("tokenizer") if path is None else path)
    return tokenizer_from_checkpoint(checkpoint).to(device)


@dataclass
class TrainResult:
    """What :func:`train_tokenizer` returns."""

    model: ImageTokenizer  # the trained tokenizer, in eval mode
    history: dict[str, list[float]] = field(default_factory=dict)  # per step: loss, mse, ...
    step: int = 0  # steps done in total
    interrupted: bool = False  # stopped by Ctrl-C
    seconds: float = 0.0  # training wall time in total, over all resumes


def train_tokenizer(
    config: TokenizerConfig | None = None,
    train: TrainConfig | None = None,
    out: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    evaluate: Callable[[ImageTokenizer], dict[str, float]] | None = None,
) -> TrainResult:
    """Train an :class:`ImageTokenizer` on freshly drawn scenes.

    Per step: ``loss = mse(reconstruction, images) + commitment * ||z - sg[z_q]||^2``, one AdamW
    step, one EMA codebook update (with dead-code restarts). Checkpoints go to ``out`` (if
    given); with ``resume=True`` and a checkpoint at ``out``, training continues from it (its
    tokenizer config wins; ``train`` may raise ``steps``). ``evaluate(model)`` (if given) runs at
    the end and its metrics are stored in the final checkpoint.
    """
    config = config or TokenizerConfig()
    train = train or TrainConfig()
    device = get_device(train.device)
    out = None if out is None else Path(out)

    history: dict[str, list[float]] = {"loss": [], "mse": [], "perplexity": [], "restarted": []}
    start_step, seconds_before = 0, 0.0
    checkpoint = load_checkpoint(out) if resume and out is not None and out.is_file() else None
    seed_everything(train.seed)
    if checkpoint is not None:
        model = tokenizer_from_checkpoint(checkpoint)
        if "optimizer" not in checkpoint:
            raise ValueError(f"{out} holds no optimiser state (a release checkpoint): it cannot be resumed")
        start_step, seconds_before = int(checkpoint["step"]), float(checkpoint["seconds"])
        history = {k: v.tolist() for k, v in checkpoint["history"].items()}
    else:
        model = ImageTokenizer(config)
    model.to(device).train()
    optimizer = make_optimizer(model, train)
    if checkpoint is not None:
        optimizer.load_state_dict(checkpoint["optimizer"])
    clock = time.perf_counter()

    def train_step(step: int) -> dict[str, float]:
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, train, (time.perf_counter() - clock) / 60)
        images = images_to_tensor(tokenizer_batch(step, train, model.config.image_size), device)
        model.quantizer.generator = torch.Generator().manual_seed(step_seed(train.seed, step, 3))
        with autocast(device):
            output = model(images)
        mse = F.mse_loss(output.reconstruction.float(), images)
        loss = mse + model.config.commitment * output.commitment_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        counts = torch.bincount(output.image_tokens.reshape(-1), minlength=model.config.codebook_size)
        p = counts[counts > 0].float() / counts.sum()
        record = {
            "loss": loss.item(),
            "mse": mse.item(),
            "perplexity": float(torch.exp(-(p * p.log()).sum())),
            "restarted": float(output.restarted),
        }
        for key, value in record.items():
            history[key].append(value)
        return {"mse": record["mse"], "ppl": record["perplexity"]}

    def save(step: int, metrics: dict[str, float] | None = None, with_optimizer: bool = True) -> None:
        if out is not None:
            seconds = seconds_before + time.perf_counter() - clock
            opt = optimizer if with_optimizer else None
            save_checkpoint(tokenizer_checkpoint(model, opt, train, step, history, seconds, metrics), out)

    result = train_loop(train_step, train, start_step, save if out is not None else None, "tokenizer", progress)
    model.quantizer.generator = None
    model.eval()
    seconds = seconds_before + result.seconds
    if evaluate is not None and not result.interrupted:
        metrics = {**evaluate(model), "train_seconds": seconds, "steps": result.step}
        save(result.step, metrics)
    return TrainResult(model, history, result.step, result.interrupted, seconds)
