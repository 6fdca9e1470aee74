"""Command line of the miniature DALL-E.

    python -m crossmodal_edu.dalle train-tokenizer --out runs/tokenizer.pt --minutes 10
    python -m crossmodal_edu.dalle train-tokenizer --out runs/tokenizer.pt --resume --steps 4000
    python -m crossmodal_edu.dalle eval-tokenizer                       # the shipped checkpoint
    python -m crossmodal_edu.dalle eval-tokenizer --checkpoint runs/tokenizer.pt

Every field of ``TokenizerConfig`` and ``TrainConfig`` is an option (``--codebook-size 64``).
Ctrl-C stops training and keeps the last complete checkpoint; ``--resume`` continues from it.
"""

from __future__ import annotations

import argparse
import json
import sys
import typing
from dataclasses import fields
from pathlib import Path

import torch

from crossmodal_edu.dalle.checkpoint import load_checkpoint, pretrained_path, save_checkpoint
from crossmodal_edu.dalle.config import TokenizerConfig, TrainConfig
from crossmodal_edu.dalle.evaluate import evaluate_tokenizer
from crossmodal_edu.dalle.train import plot_history, tokenizer_from_checkpoint, train_tokenizer


def _add_config_options(parser: argparse.ArgumentParser, cls: type) -> None:
    """One ``--field-name`` option per dataclass field, typed by its annotation."""
    hints = typing.get_type_hints(cls)
    group = parser.add_argument_group(cls.__name__)
    for f in fields(cls):
        kind = hints[f.name]
        args = [a for a in typing.get_args(kind) if a is not type(None)]  # unwrap "X | None"
        kind = args[0] if args else kind
        group.add_argument(f"--{f.name.replace('_', '-')}", type=kind, default=f.default, metavar=kind.__name__.upper())


def _pick(cls: type, args: argparse.Namespace):
    return cls(**{f.name: getattr(args, f.name) for f in fields(cls)})


def _release(path: Path) -> None:
    """Drop the optimiser state and store the weights in float16: a small checkpoint to ship."""
    checkpoint = load_checkpoint(path)
    checkpoint.pop("optimizer", None)
    checkpoint["model"] = {
        k: v.half() if v.is_floating_point() and not k.startswith("quantizer.") else v
        for k, v in checkpoint["model"].items()
    }
    save_checkpoint(checkpoint, path)


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

    args = parser.parse_args(argv)
    if args.command == "train-tokenizer":
        result = train_tokenizer(
            _pick(TokenizerConfig, args),
            _pick(TrainConfig, args),
            out=args.out,
            resume=args.resume,
            evaluate=lambda model: evaluate_tokenizer(model, args.eval_scenes),
        )
        if result.interrupted:
            return 130
        import matplotlib

        matplotlib.use("Agg")
        ax = plot_history(result.history, "mse", title="Image tokenizer: reconstruction error")
        ax.figure.savefig(args.out.with_name(args.out.stem + "_mse.png"), dpi=80, bbox_inches="tight")
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
