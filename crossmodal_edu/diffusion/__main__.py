"""Command line of the miniature latent diffusion model.

    python -m crossmodal_edu.diffusion train --out runs/diffusion.pt --minutes 20
    python -m crossmodal_edu.diffusion train --out runs/diffusion.pt --resume --steps 4000
    python -m crossmodal_edu.diffusion train --out runs/mmdit.pt --conditioning mmdit --d-model 104
    python -m crossmodal_edu.diffusion eval --guidance-scale 3 --steps 20        # the shipped model
    python -m crossmodal_edu.diffusion sample "a small red circle at the top left" --out red.png

Every field of ``DiffusionConfig`` and ``DiffusionTrainConfig`` is an option (``--d-model 96``,
``--time-sampling uniform``). Ctrl-C stops training and keeps the last complete checkpoint;
``--resume`` continues from it. The tokenizer is the shipped one unless ``--tokenizer`` names another.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from crossmodal_edu.dalle.__main__ import _add_config_options, _exit_clearly_on_bad_checkpoints, _half, _pick, _save_history_plot
from crossmodal_edu.dalle.checkpoint import load_checkpoint, pretrained_path, save_checkpoint
from crossmodal_edu.dalle.train import tokenizer_from_checkpoint
from crossmodal_edu.diffusion.config import DiffusionConfig, DiffusionTrainConfig
from crossmodal_edu.diffusion.evaluate import evaluate_diffusion
from crossmodal_edu.diffusion.train import CHECKPOINT, diffusion_from_checkpoint, train_diffusion


def release(path: Path) -> None:
    """Keep only what sampling needs: the EMA weights in float16 (in float32: everything named
    ``latent_*``, the latent statistics and the small input projection, and the tokenizer's codebook),
    no optimiser, no raw weights. Cannot be resumed."""
    checkpoint = load_checkpoint(path)
    checkpoint.pop("optimizer", None)
    checkpoint.pop("trained", None)
    checkpoint["model"] = _half(checkpoint["model"], ("latent_",))
    checkpoint["tokenizer"]["model"] = _half(checkpoint["tokenizer"]["model"], ("quantizer.",))
    save_checkpoint(checkpoint, path)


def _sampling_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--guidance-scale", type=float, default=3.0, help="classifier-free guidance scale (1 = none)")
    parser.add_argument("--sampling-steps", type=int, default=20, help="Euler steps from noise to image")


def _sampling(args: argparse.Namespace) -> dict:
    return {"guidance_scale": args.guidance_scale, "steps": args.sampling_steps}


@_exit_clearly_on_bad_checkpoints
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m crossmodal_edu.diffusion", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a denoiser on the shipped tokenizer's latents")
    train.add_argument("--out", type=Path, required=True, help="checkpoint to write (atomically, every --checkpoint-every steps)")
    train.add_argument("--tokenizer", type=Path, default=pretrained_path("tokenizer"), help="tokenizer checkpoint whose latents to denoise")
    train.add_argument("--resume", action="store_true", help="continue from the checkpoint at --out")
    train.add_argument("--release", action="store_true", help="at the end keep only the float16 EMA weights (cannot be resumed)")
    train.add_argument("--eval-prompts", type=int, default=500, help="fresh prompts per kind to evaluate on at the end")
    _sampling_options(train)
    _add_config_options(train, DiffusionConfig)
    _add_config_options(train, DiffusionTrainConfig)

    evaluate = commands.add_parser("eval", help="prompt fidelity, read back by the oracle")
    evaluate.add_argument("--checkpoint", type=Path, default=CHECKPOINT)
    evaluate.add_argument("--eval-prompts", type=int, default=500)
    evaluate.add_argument("--seed", type=int, default=0)
    _sampling_options(evaluate)

    sample = commands.add_parser("sample", help="draw images for captions into a PNG")
    sample.add_argument("captions", nargs="+", help='captions such as "a small red circle at the top left"')
    sample.add_argument("--checkpoint", type=Path, default=CHECKPOINT)
    sample.add_argument("--out", type=Path, default=Path("samples.png"))
    sample.add_argument("--per-caption", type=int, default=4, help="images per caption")
    sample.add_argument("--seed", type=int, default=0)
    _sampling_options(sample)

    args = parser.parse_args(argv)
    if args.command == "train":
        tokenizer = None if args.resume and args.out.is_file() else tokenizer_from_checkpoint(load_checkpoint(args.tokenizer))
        result = train_diffusion(
            _pick(DiffusionConfig, args), _pick(DiffusionTrainConfig, args), tokenizer, out=args.out, resume=args.resume,
            evaluate=lambda model, tok: evaluate_diffusion(model, tok, args.eval_prompts, **_sampling(args)),
        )
        if result.interrupted:
            return 130
        _save_history_plot(result.history, "loss", "Latent diffusion: velocity error", args.out.with_name(args.out.stem + "_loss.png"))
        if args.release:
            release(args.out)
        print(json.dumps(load_checkpoint(args.out)["metrics"], indent=2))
        print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")
    elif args.command == "eval":
        model, tokenizer = diffusion_from_checkpoint(load_checkpoint(args.checkpoint))
        print(json.dumps(evaluate_diffusion(model, tokenizer, args.eval_prompts, seed=args.seed, **_sampling(args)), indent=2))
    elif args.command == "sample":
        import matplotlib

        matplotlib.use("Agg")
        from crossmodal_edu.diffusion.sampling import generate
        from crossmodal_edu.plotting import show_images

        model, tokenizer = diffusion_from_checkpoint(load_checkpoint(args.checkpoint))
        captions = [c for c in args.captions for _ in range(args.per_caption)]
        generation = generate(model, tokenizer, captions, seed=args.seed, **_sampling(args))
        show_images(generation.images, captions, ncols=args.per_caption).savefig(args.out, dpi=100, bbox_inches="tight")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
