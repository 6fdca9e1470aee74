"""Command line of the miniature DALL-E.

    python -m crossmodal_edu.dalle train-tokenizer --out runs/tokenizer.pt --minutes 10
    python -m crossmodal_edu.dalle train-tokenizer --out runs/tokenizer.pt --resume --steps 4000
    python -m crossmodal_edu.dalle eval-tokenizer                       # the shipped checkpoint
    python -m crossmodal_edu.dalle eval-tokenizer --checkpoint runs/tokenizer.pt
    python -m crossmodal_edu.dalle train-decoder --out runs/decoder.pt --minutes 20
    python -m crossmodal_edu.dalle train-decoder --out runs/mmdit.pt --conditioning mmdit --text-layers 2   # another design
    python -m crossmodal_edu.dalle train --out-dir runs --tokenizer-minutes 1.5 --minutes 3.5   # both, from scratch
    python -m crossmodal_edu.dalle eval-decoder --guidance-scale 1.5             # the shipped decoder
    python -m crossmodal_edu.dalle sample "a small red circle at the top left" --out red.png

Every field of ``TokenizerConfig``, ``DecoderConfig`` and ``TrainConfig`` is an option
(``--codebook-size 64``, ``--d-model 96``); ``train`` takes the tokenizer's training budget as
``--tokenizer-steps`` / ``--tokenizer-minutes``.
Ctrl-C stops training and keeps the last complete checkpoint; ``--resume`` continues from it.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import sys
import typing
from dataclasses import fields
from pathlib import Path
from typing import Callable

import torch

from crossmodal_edu.dalle.checkpoint import CheckpointError, load_checkpoint, pretrained_path, save_checkpoint
from crossmodal_edu.dalle.config import DecoderConfig, TokenizerConfig, TrainConfig
from crossmodal_edu.dalle.evaluate import evaluate_decoder, evaluate_tokenizer
from crossmodal_edu.dalle.train import plot_history, tokenizer_from_checkpoint, train_tokenizer
from crossmodal_edu.dalle.train_decoder import DecoderTrainConfig, decoder_from_checkpoint, train_decoder


def _flag(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _count(least: int) -> Callable[[str], int]:
    """An argparse type: a whole number of at least ``least``, or a message saying what came."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"expected a number of at least {least}, got {value}")
        return value
    return parse


def _add_config_options(parser: argparse.ArgumentParser, cls: type, prefix: str = "") -> None:
    """One ``--{prefix}field-name`` option per dataclass field, typed by its annotation."""
    hints = typing.get_type_hints(cls)
    group = parser.add_argument_group(cls.__name__ + (f" (--{prefix}...)" if prefix else ""))
    for f in fields(cls):
        kind = hints[f.name]
        args = [a for a in typing.get_args(kind) if a is not type(None)]  # unwrap "X | None"
        kind = args[0] if args else kind
        group.add_argument(
            f"--{prefix}{f.name.replace('_', '-')}", dest=prefix.replace("-", "_") + f.name,
            type=_flag if kind is bool else kind, default=f.default, metavar=kind.__name__.upper(),
        )


def _pick(cls: type, args: argparse.Namespace, prefix: str = ""):
    return cls(**{f.name: getattr(args, prefix.replace("-", "_") + f.name) for f in fields(cls)})


def _half(state: dict[str, torch.Tensor], keep: tuple[str, ...] = ()) -> dict[str, torch.Tensor]:
    return {k: v.half() if v.is_floating_point() and not k.startswith(keep) else v for k, v in state.items()}


def _release(path: Path) -> None:
    """Drop the optimiser state and store the weights in float16: a small checkpoint to ship."""
    checkpoint = load_checkpoint(path)
    checkpoint.pop("optimizer", None)
    if checkpoint["kind"] == "image_token_decoder":
        checkpoint["model"] = _half(checkpoint["model"])
        checkpoint["tokenizer"]["model"] = _half(checkpoint["tokenizer"]["model"], ("quantizer.",))
    else:
        checkpoint["model"] = _half(checkpoint["model"], ("quantizer.",))
    save_checkpoint(checkpoint, path)


def _save_history_plot(history: dict, key: str, title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    ax = plot_history(history, key, title=title)
    ax.figure.savefig(path, dpi=80, bbox_inches="tight")


def _sampling_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--guidance-scale", type=float, default=1.0, help="classifier-free guidance scale (1 = none)")
    parser.add_argument("--temperature", type=float, default=1.0, help="softmax temperature (0 = greedy)")
    parser.add_argument("--top-k", type=int, default=None, help="sample from the k most likely tokens only")


def _sampling(args: argparse.Namespace) -> dict:
    return {"guidance_scale": args.guidance_scale, "temperature": args.temperature, "top_k": args.top_k}


def _exit_clearly_on_bad_checkpoints(main: Callable[..., int]) -> Callable[..., int]:
    """A checkpoint that cannot be trusted ends the command with its message and exit status 1,
    not a traceback (and never with status 0 on corrupted weights)."""

    @functools.wraps(main)
    def run(argv: list[str] | None = None) -> int:
        try:
            return main(argv)
        except CheckpointError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1

    return run


@_exit_clearly_on_bad_checkpoints
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m crossmodal_edu.dalle", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train-tokenizer", help="train the VQ-VAE image tokenizer")
    train.add_argument("--out", type=Path, required=True, help="checkpoint to write (atomically, every --checkpoint-every steps)")
    train.add_argument("--resume", action="store_true", help="continue from the checkpoint at --out")
    train.add_argument("--release", action="store_true",
                       help="at the end, drop the optimiser state and store float16 weights (cannot be resumed)")
    train.add_argument("--eval-scenes", type=int, default=1000, help="fresh scenes per tier to evaluate on at the end")
    _add_config_options(train, TokenizerConfig)
    _add_config_options(train, TrainConfig)

    evaluate = commands.add_parser("eval-tokenizer", help="pixel error, codebook use and oracle accuracy")
    evaluate.add_argument("--checkpoint", type=Path, default=pretrained_path("tokenizer"))
    evaluate.add_argument("--eval-scenes", type=int, default=1000)

    decoder_train = commands.add_parser("train-decoder", help="train the text-to-image-token decoder on a tokenizer")
    decoder_train.add_argument("--out", type=Path, required=True, help="checkpoint to write (atomically)")
    decoder_train.add_argument("--tokenizer", type=Path, default=pretrained_path("tokenizer"), help="tokenizer checkpoint to build on")
    decoder_train.add_argument("--resume", action="store_true", help="continue from the checkpoint at --out")
    decoder_train.add_argument("--release", action="store_true", help="at the end, drop the optimiser state, float16 weights")
    decoder_train.add_argument("--eval-prompts", type=_count(0), default=500,
                               help="fresh prompts per kind to evaluate on at the end (0: no evaluation)")
    _sampling_options(decoder_train)
    _add_config_options(decoder_train, DecoderConfig)
    _add_config_options(decoder_train, DecoderTrainConfig)

    both = commands.add_parser("train", help="train a tokenizer, then a decoder on it, from scratch")
    both.add_argument("--out-dir", type=Path, required=True, help="writes tokenizer.pt and decoder.pt here")
    both.add_argument("--tokenizer-steps", type=int, default=TrainConfig.steps, help="tokenizer training steps")
    both.add_argument("--tokenizer-minutes", type=float, default=None, help="tokenizer training time budget")
    both.add_argument("--release", action="store_true", help="at the end, drop the optimiser states, float16 weights")
    both.add_argument("--eval-prompts", type=_count(0), default=500, help="fresh scenes and prompts to evaluate on (0: none)")
    _sampling_options(both)
    _add_config_options(both, TokenizerConfig, prefix="tokenizer-")
    _add_config_options(both, DecoderConfig)
    _add_config_options(both, DecoderTrainConfig)

    decoder_eval = commands.add_parser("eval-decoder", help="prompt fidelity of a decoder, read back by the oracle")
    decoder_eval.add_argument("--checkpoint", type=Path, default=pretrained_path("decoder"))
    decoder_eval.add_argument("--eval-prompts", type=_count(1), default=500)
    decoder_eval.add_argument("--seed", type=int, default=0)
    _sampling_options(decoder_eval)

    sample = commands.add_parser("sample", help="draw images for captions into a PNG")
    sample.add_argument("captions", nargs="+", help='captions such as "a small red circle at the top left"')
    sample.add_argument("--checkpoint", type=Path, default=pretrained_path("decoder"))
    sample.add_argument("--out", type=Path, default=Path("samples.png"))
    sample.add_argument("--per-caption", type=int, default=4, help="images per caption")
    sample.add_argument("--seed", type=int, default=0)
    _sampling_options(sample)

    args = parser.parse_args(argv)
    if args.command in ("train-decoder", "train"):
        config, train = _pick(DecoderConfig, args), _pick(DecoderTrainConfig, args)
        out = args.out if args.command == "train-decoder" else args.out_dir / "decoder.pt"
        if args.command == "train":
            tokenizer_train = TrainConfig(**{**vars(train), "steps": args.tokenizer_steps, "minutes": args.tokenizer_minutes,
                                             "batch_size": TrainConfig.batch_size, "lr": TrainConfig.lr,
                                             "weight_decay": TrainConfig.weight_decay,
                                             "checkpoint_every": TrainConfig.checkpoint_every})
            tokenizer_result = train_tokenizer(
                _pick(TokenizerConfig, args, prefix="tokenizer-"), tokenizer_train, out=args.out_dir / "tokenizer.pt",
                evaluate=(lambda model: evaluate_tokenizer(model, args.eval_prompts)) if args.eval_prompts else None,
            )
            if tokenizer_result.interrupted:
                return 130
            print(json.dumps(load_checkpoint(args.out_dir / "tokenizer.pt").get("metrics", {}), indent=2))
            tokenizer = tokenizer_result.model
        else:
            tokenizer = None if args.resume and out.is_file() else tokenizer_from_checkpoint(load_checkpoint(args.tokenizer))
        if tokenizer is not None:  # the decoder predicts this tokenizer's codes
            config = dataclasses.replace(
                config, codebook_size=tokenizer.config.codebook_size, num_image_tokens=tokenizer.config.num_tokens
            )
        result = train_decoder(
            config, train, tokenizer, out=out, resume=getattr(args, "resume", False),
            evaluate=(lambda decoder, tok: evaluate_decoder(decoder, tok, args.eval_prompts, **_sampling(args)))
            if args.eval_prompts else None,  # --eval-prompts 0: no evaluation
        )
        if result.interrupted:
            return 130
        _save_history_plot(result.history, "loss", "Image-token decoder: cross-entropy", out.with_name(out.stem + "_loss.png"))
        if args.release:
            _release(out)
            if args.command == "train":
                _release(args.out_dir / "tokenizer.pt")
        print(json.dumps(load_checkpoint(out).get("metrics", {}), indent=2))
        print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB)")
    elif args.command == "eval-decoder":
        decoder, tokenizer = decoder_from_checkpoint(load_checkpoint(args.checkpoint))
        metrics = evaluate_decoder(decoder, tokenizer, args.eval_prompts, seed=args.seed, **_sampling(args))
        print(json.dumps(metrics, indent=2))
    elif args.command == "sample":
        import matplotlib

        matplotlib.use("Agg")
        from crossmodal_edu.dalle.sampling import generate
        from crossmodal_edu.plotting import show_images

        decoder, tokenizer = decoder_from_checkpoint(load_checkpoint(args.checkpoint))
        captions = [c for c in args.captions for _ in range(args.per_caption)]
        generation = generate(decoder, tokenizer, captions, seed=args.seed, **_sampling(args))
        figure = show_images(generation.images, captions, ncols=args.per_caption)
        figure.savefig(args.out, dpi=100, bbox_inches="tight")
        print(f"wrote {args.out}")
    elif args.command == "train-tokenizer":
        result = train_tokenizer(
            _pick(TokenizerConfig, args),
            _pick(TrainConfig, args),
            out=args.out,
            resume=args.resume,
            evaluate=lambda model: evaluate_tokenizer(model, args.eval_scenes),
        )
        if result.interrupted:
            return 130
        _save_history_plot(result.history, "mse", "Image tokenizer: reconstruction error", args.out.with_name(args.out.stem + "_mse.png"))
        if args.release:
            _release(args.out)
        print(json.dumps(load_checkpoint(args.out)["metrics"], indent=2))
        print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")
    elif args.command == "eval-tokenizer":
        torch.manual_seed(0)
        model = tokenizer_from_checkpoint(load_checkpoint(args.checkpoint))
        print(json.dumps(evaluate_tokenizer(model, args.eval_scenes), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
