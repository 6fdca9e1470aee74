"""Training the image-token decoder: captions and images drawn fresh from the world at every
step, images turned into tokens by the (frozen) tokenizer, one cross-entropy step.

The loop itself is ``train_loop`` from ``crossmodal_edu.dalle.train`` (budget, progress bar,
atomic checkpoints every ``checkpoint_every`` steps, Ctrl-C keeps the last good one), and the
determinism is the same: the batch of step ``s`` depends only on ``(seed, s)``, so a resumed
run sees the batches the uninterrupted one would have seen.

A decoder checkpoint carries a copy of its tokenizer (the decoder's tokens mean nothing
without the codebook they index), so ``load_text_to_image()`` needs one file.
Used by ``python -m crossmodal_edu.dalle train-decoder`` and notebooks/06_text_to_image.ipynb.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from crossmodal_edu import world
from crossmodal_edu.dalle.checkpoint import load_checkpoint, pretrained_path, save_checkpoint
from crossmodal_edu.dalle.config import DecoderConfig, TrainConfig, config_from_dict
from crossmodal_edu.dalle.decoder import ImageTokenDecoder, build_decoder, drop_captions
from crossmodal_edu.dalle.tokenizer import ImageTokenizer, images_to_tensor
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


@dataclass
class DecoderTrainConfig(TrainConfig):
    """``TrainConfig`` with defaults that suit the decoder."""

    steps: int = 4000
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.01
    checkpoint_every: int = 250


def decoder_batch(
    step: int, train: TrainConfig, config: DecoderConfig, tokenizer: ImageTokenizer, vocab: world.Vocab
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The batch of training step ``step``: fresh scenes of one object and (a share
    ``two_object_fraction``) of two, never using a ``held_out`` colour-shape pair.

    Returns ``text_tokens`` ``(B, L)``, ``context_mask`` ``(B, L)`` and ``image_tokens``
    ``(B, num_image_tokens)``, on the tokenizer's device.
    """
    device = tokenizer.codebook.device
    two = int(round(train.batch_size * train.two_object_fraction))
    images, captions = [], []
    for num_objects, n in ((1, train.batch_size - two), (2, two)):
        if n > 0:
            data = world.make_dataset(
                n, num_objects, seed=step_seed(train.seed, step, num_objects),
                image_size=tokenizer.config.image_size, exclude=config.held_out_pairs,
            )
            images.append(images_to_tensor(data.images, device))
            captions += data.captions
    image_tokens = tokenizer.encode(torch.cat(images)).reshape(len(captions), -1)  # (B, N)
    text_tokens, context_mask = vocab.encode_batch(captions, max_len=config.max_text_len)
    return torch.from_numpy(text_tokens).to(device), torch.from_numpy(context_mask).to(device), image_tokens


def decoder_checkpoint(
    decoder: ImageTokenDecoder,
    tokenizer: ImageTokenizer,
    optimizer: torch.optim.Optimizer | None,
    train: TrainConfig,
    step: int,
    history: dict[str, list[float]],
    seconds: float,
    metrics: dict[str, float] | None = None,
) -> dict[str, Any]:
    """:func:`model_checkpoint` of a decoder, with a copy of its tokenizer (``"tokenizer"``)."""
    checkpoint = model_checkpoint("image_token_decoder", decoder, optimizer, train, step, history, seconds, metrics)
    checkpoint["tokenizer"] = tokenizer_checkpoint(tokenizer, None, TrainConfig(), 0, {}, 0.0)
    return checkpoint


def decoder_from_checkpoint(checkpoint: dict[str, Any]) -> tuple[ImageTokenDecoder, ImageTokenizer]:
    """Rebuild the decoder and its tokenizer (float32, CPU, eval mode)."""
    if checkpoint.get("kind") != "image_token_decoder":
        raise ValueError(f"not an image-token decoder checkpoint (kind={checkpoint.get('kind')!r})")
    decoder = build_decoder(config_from_dict(DecoderConfig, checkpoint["config"]))
    decoder.load_state_dict({k: v.float() for k, v in checkpoint["model"].items()})
    return decoder.eval(), tokenizer_from_checkpoint(checkpoint["tokenizer"])


def load_text_to_image(
    path: str | Path | None = None, device: str | torch.device = "cpu"
) -> tuple[ImageTokenDecoder, ImageTokenizer]:
    """The decoder saved at ``path`` (default: the pretrained one shipped with the package) and
    the tokenizer it was trained with, in eval mode on ``device``. Needs no network."""
    checkpoint = load_checkpoint(pretrained_path("decoder") if path is None else path)
    decoder, tokenizer = decoder_from_checkpoint(checkpoint)
    return decoder.to(device), tokenizer.to(device)


@dataclass
class DecoderTrainResult:
    """What :func:`train_decoder` returns."""

    decoder: ImageTokenDecoder  # in eval mode
    tokenizer: ImageTokenizer  # the frozen tokenizer it was trained with
    history: dict[str, list[float]] = field(default_factory=dict)  # per step: loss
    step: int = 0
    interrupted: bool = False
    seconds: float = 0.0  # training wall time over all resumes


def train_decoder(
    config: DecoderConfig | None = None,
    train: TrainConfig | None = None,
    tokenizer: ImageTokenizer | None = None,
    out: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    evaluate: Callable[[ImageTokenDecoder, ImageTokenizer], dict[str, float]] | None = None,
    on_step: Callable[[int], Any] | None = None,
    model: torch.nn.Module | None = None,
) -> DecoderTrainResult:
    """Train an :class:`ImageTokenDecoder` on top of a frozen ``tokenizer`` (default: the
    pretrained one).

    Per step: draw a batch (:func:`decoder_batch`), replace a share ``caption_dropout`` of its
    captions by the null caption, one AdamW step on the cross-entropy of every image token.
    With ``resume=True`` and a checkpoint at ``out``, training continues from it (its configs
    and tokenizer win; ``train`` may raise ``steps``). ``evaluate(decoder, tokenizer)`` runs at
    the end; its metrics go into the final checkpoint. ``on_step(step)`` (if given) is called
    before every step, e.g. to time steps. ``model``: a decoder to train instead of
    ``build_decoder(config)`` (any model with the decoders' interface and a ``config``
    attribute); its ``config`` is the one that counts, so pass ``config=None`` or the same
    config (a different one raises ``ValueError`` naming the fields that differ).
    """
    if model is not None:
        model_config = getattr(model, "config", None)
        if not isinstance(model_config, DecoderConfig):
            raise ValueError(f"model must have a DecoderConfig as .config, but {type(model).__name__}.config is {model_config!r}")
        if config is not None and config != model_config:
            differ = [f"{f.name} ({getattr(config, f.name)!r} vs the model's {getattr(model_config, f.name)!r})"
                      for f in fields(DecoderConfig) if getattr(config, f.name) != getattr(model_config, f.name)]
            raise ValueError(
                f"config and model.config differ in {', '.join(differ)}: train_decoder would draw batches for one "
                f"and train the other. Pass config=None to use the model's own."
            )
        config = model_config
    config = config or DecoderConfig()
    train = train or DecoderTrainConfig()
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
        decoder, tokenizer = decoder_from_checkpoint(checkpoint)
        start_step, seconds_before = int(checkpoint["step"]), float(checkpoint["seconds"])
        history = {k: v.tolist() for k, v in checkpoint["history"].items()}
    else:
        tokenizer = tokenizer if tokenizer is not None else load_tokenizer()
        if tokenizer.config.codebook_size != config.codebook_size or tokenizer.config.num_tokens != config.num_image_tokens:
            raise ValueError(
                f"the tokenizer makes {tokenizer.config.num_tokens} tokens from {tokenizer.config.codebook_size} codes, "
                f"the decoder config expects {config.num_image_tokens} from {config.codebook_size}"
            )
        decoder = model if model is not None else build_decoder(config)
    config = decoder.config  # on resume, the checkpoint's
    tokenizer = tokenizer.to(device).eval()
    decoder.to(device).train()
    optimizer = torch.optim.AdamW(decoder.parameters(), lr=train.lr, betas=(0.9, 0.95), weight_decay=train.weight_decay)
    if checkpoint is not None:
        optimizer.load_state_dict(checkpoint["optimizer"])
    clock = time.perf_counter()

    def train_step(step: int) -> dict[str, float]:
        if on_step is not None:
            on_step(step)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, train, (time.perf_counter() - clock) / 60)
        text_tokens, context_mask, image_tokens = decoder_batch(step, train, config, tokenizer, vocab)
        generator = torch.Generator().manual_seed(step_seed(train.seed, step, 4))
        drop = (torch.rand(len(text_tokens), generator=generator) < config.caption_dropout).to(device)
        text_tokens, context_mask = drop_captions(text_tokens, context_mask, drop, config)
        with autocast(device):
            loss = decoder.loss(image_tokens, text_tokens, context_mask)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(decoder.parameters(), 1.0)
        optimizer.step()
        history["loss"].append(loss.item())
        return {"loss": history["loss"][-1]}

    def save(step: int, metrics: dict[str, float] | None = None) -> None:
        if out is not None:
            seconds = seconds_before + time.perf_counter() - clock
            save_checkpoint(decoder_checkpoint(decoder, tokenizer, optimizer, train, step, history, seconds, metrics), out)

    result = train_loop(train_step, train, start_step, save if out is not None else None, "decoder", progress)
    decoder.eval()
    seconds = seconds_before + result.seconds
    if evaluate is not None and not result.interrupted:
        metrics = {**evaluate(decoder, tokenizer), "train_seconds": seconds, "steps": result.step}
        save(result.step, metrics)
    return DecoderTrainResult(decoder, tokenizer, history, result.step, result.interrupted, seconds)
