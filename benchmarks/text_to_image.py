"""Measured conditioning of the miniature DALL-E: does the text get into the image?

Every number is a prompt-fidelity rate: generate one image per prompt, read it back with the
world's oracle, and compare with what the prompt asked for (``world.caption_fidelity``).

    python benchmarks/text_to_image.py tier1     # tokenizer + decoder from scratch in 5 min, one-object prompts,
                                                 # graded at guidance 1 and 1.5, temperature 1 and 0.7 (--seed:
                                                 # the training seed; RESULTS.md "Tier 1, session 11")
    python benchmarks/text_to_image.py tier2     # the same in 20 min, two objects and a relation
                                                 # (--model cross-attention | joint: which decoder; see RECIPES)
    python benchmarks/text_to_image.py compare   # cross-attention vs joint attention vs one stream (DALL-E 1) vs no text, equal time
    python benchmarks/text_to_image.py guidance  # fidelity and diversity against the guidance scale (shipped decoder)

Budgets are wall-clock: the script times a few steps first to plan the step count, and the clock
ends each stage: with a time budget, the learning-rate schedule follows whichever runs out first,
steps or minutes (``dalle.train.learning_rate``), so a stage cut by the clock still ends decayed. Add
``--device cuda`` to train on a GPU. Each command prints a Markdown table and can append it
to a file (``--out``). Results measured by the maintainers are in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from pathlib import Path

import numpy as np
import torch

from crossmodal_edu.dalle.config import DecoderConfig, TokenizerConfig, TrainConfig
from crossmodal_edu.dalle.evaluate import evaluate_decoder, evaluate_tokenizer, evaluation_prompts, prompt_fidelity
from crossmodal_edu.dalle.lab_results import design_name
from crossmodal_edu.dalle.sampling import generate
from crossmodal_edu.dalle.train import train_tokenizer
from crossmodal_edu.dalle.train_decoder import DecoderTrainConfig, load_text_to_image, train_decoder
from crossmodal_edu.device import get_device

RECIPES = {
    (1, "cross-attention"): (DecoderConfig(d_model=64, text_layers=2, layers=4), dict(batch_size=32, lr=3e-3)),
    (1, "joint"): (DecoderConfig(d_model=64, text_layers=2, layers=4, conditioning="joint"), dict(batch_size=32, lr=3e-3)),
    (1, "single-stream"): (DecoderConfig(d_model=64, layers=5, conditioning="single-stream"), dict(batch_size=64, lr=4e-3)),
    (2, "cross-attention"): (DecoderConfig(d_model=96, text_layers=2, layers=4), dict(two_object_fraction=0.75, lr=3e-3)),
    (2, "joint"): (DecoderConfig(d_model=96, text_layers=2, layers=4, conditioning="joint"), dict(two_object_fraction=0.75, lr=3e-3)),
}
"""(tier, model) -> decoder config and training settings. Tier 1: of the models that fit a CPU's 5 minutes,
the one that got furthest per second in the CPU sweep (benchmarks/results/decoder_sweep_cpu.jsonl), and the
single stream of that sweep (95.0% after 1,600 steps of 0.14 s on the shipped tokenizer).
Tier 2: width 96, the best steps-per-second trade-off in the sweeps; "joint" is the decoder whose one
softmax reads the caption and the image prefix together (crossmodal_edu/dalle/joint.py), which learned two
objects fastest per step in the CPU sweep."""

COMPARE = {
    "cross-attention": DecoderConfig(text_layers=2, layers=4),
    "joint attention": DecoderConfig(text_layers=2, layers=4, conditioning="joint"),
    "single stream": DecoderConfig(conditioning="single-stream", layers=7),
    "no text (ablation)": DecoderConfig(conditioning="none", text_layers=2, layers=4),
}
"""Config per model. Equal width (128) and about equal parameters (1.53 M, 1.40 M, 1.47 M; the ablation
lacks 0.27 M of cross-attention)."""


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type}, {os.cpu_count()} cores"


def step_seconds(config: DecoderConfig, train: TrainConfig, tokenizer, steps: int = 8) -> float:
    """Seconds per training step of ``config`` on this machine (after two warm-up steps)."""
    probe = dataclasses.replace(train, steps=steps + 2, warmup_steps=1, checkpoint_every=10**9)
    start = [0.0]

    def timed(step: int) -> None:
        if step == 2:
            start[0] = time.perf_counter()

    result = train_decoder(config, probe, tokenizer, progress=False, on_step=timed)
    return (time.perf_counter() - start[0]) / steps if result.step == probe.steps else float("nan")


def train_for(config: DecoderConfig, train: TrainConfig, tokenizer, seconds: float):
    """Train for ``seconds`` in all (the step-time probes included): the clock ends training and its schedule."""
    probe_start = time.perf_counter()
    step_seconds(config, train, tokenizer, steps=2)  # warm-up: a process's first steps are slow
    per_step = step_seconds(config, train, tokenizer)
    seconds -= time.perf_counter() - probe_start
    steps = max(50, int(1.25 * seconds / per_step))  # room to spare: the clock (minutes) ends the run and its schedule
    train = dataclasses.replace(train, steps=steps, warmup_steps=min(train.warmup_steps, steps // 10), minutes=seconds / 60)
    start = time.perf_counter()
    result = train_decoder(config, train, tokenizer, progress=True)
    return result, time.perf_counter() - start, per_step


def table(rows: list[dict], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = []
        for c in columns:
            v = row.get(c, "")
            cells.append(f"{100 * v:.1f}%" if isinstance(v, float) and c.endswith(("_all", "_shape", "_colour", "_size", "_position", "_relation", "_count")) else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report(text: str, out: Path | None) -> None:
    print(text, flush=True)
    if out is not None:
        with open(out, "a") as file:
            file.write(text + "\n\n")


def tiered(args: argparse.Namespace, tier: int) -> None:
    device = get_device(args.device)
    budget = 60 * args.minutes
    start = time.perf_counter()
    tokenizer_config = TokenizerConfig(codebook_size=args.codebook_size)
    tokenizer_train = TrainConfig(steps=4, warmup_steps=1, two_object_fraction=0.0 if tier == 1 else 0.5,
                                  seed=args.seed, device=args.device)
    train_tokenizer(tokenizer_config, tokenizer_train, progress=False)  # warm up (first calls are slow) ...
    probe_start = time.perf_counter()
    train_tokenizer(tokenizer_config, dataclasses.replace(tokenizer_train, steps=16), progress=False)
    per_step = (time.perf_counter() - probe_start) / 16  # ... then time 16 steps
    seconds = 60 * args.tokenizer_minutes - (time.perf_counter() - start)
    steps = max(50, min(args.tokenizer_steps, int(1.25 * seconds / per_step)))
    tokenizer_train = dataclasses.replace(tokenizer_train, steps=steps, warmup_steps=min(100, steps // 10), minutes=seconds / 60)
    tokenizer_result = train_tokenizer(tokenizer_config, tokenizer_train, progress=True)
    tokenizer, steps = tokenizer_result.model, tokenizer_result.step
    tokenizer_seconds = time.perf_counter() - start
    tok = evaluate_tokenizer(tokenizer, 300)
    config, recipe = RECIPES[tier, args.model]
    config = dataclasses.replace(config, codebook_size=tokenizer_config.codebook_size, token_shift=args.token_shift)
    recipe = {**recipe, **({"batch_size": args.batch_size} if args.batch_size else {})}
    train = DecoderTrainConfig(**{"two_object_fraction": 0.0, **recipe}, seed=args.seed, device=args.device)
    result, seconds, per_step = train_for(config, train, tokenizer, budget - (time.perf_counter() - start))
    total = time.perf_counter() - start
    kinds = ("tier1", "held_out") if tier == 1 else ("tier2", "tier1")
    rows = []
    for temperature in args.temperatures:
        for scale in args.scales:
            metrics = evaluate_decoder(result.decoder, result.tokenizer, args.prompts, kinds=kinds,
                                       guidance_scale=scale, temperature=temperature)
            rows.append({"guidance": scale, "temperature": temperature, **metrics})
    params = sum(p.numel() for p in result.decoder.parameters()) / 1e6
    layers = (f"one stream of {config.layers} layers" if config.conditioning == "single-stream"
              else f"text {config.text_layers} + decoder {config.layers} layers")
    head = (f"### Tier {tier} from scratch on {describe_device(device)} ({torch.get_num_threads()} threads), "
            f"budget {args.minutes:g} min, training seed {args.seed}\n\ndecoder: {design_name(config)}, d {config.d_model}, {layers}, {params:.2f} M parameters, batch {train.batch_size}, lr {train.lr:g}. tokenizer: {tokenizer_seconds:.0f} s ({steps} steps), "
            f"{tokenizer_config.codebook_size} codes, oracle on reconstructions {100 * tok['oracle_all_1']:.1f}% / {100 * tok['oracle_all_2']:.1f}% (1 / 2 objects); "
            f"decoder: {result.step} steps of {per_step:.3f} s, {seconds:.0f} s; total {total:.0f} s. "
            f"{args.prompts} fresh prompts per kind.\n")
    columns = ["guidance", "temperature"] + [f"{k}_{a}" for k in kinds for a in (("shape", "colour", "size", "position", "all") if k != "tier2" else ("shape", "colour", "relation", "all"))]
    report(head + "\n" + table(rows, columns), args.out)


def compare(args: argparse.Namespace) -> None:
    from crossmodal_edu.dalle.train import load_tokenizer

    device = get_device(args.device)
    tokenizer = load_tokenizer()
    rows = []
    for name, config in COMPARE.items():
        train = DecoderTrainConfig(two_object_fraction=0.5, device=args.device)
        result, seconds, per_step = train_for(config, train, tokenizer, 60 * args.minutes)
        metrics = evaluate_decoder(result.decoder, result.tokenizer, args.prompts, kinds=("tier1", "tier2"), guidance_scale=1.0)
        rows.append({"model": name, "params": f"{sum(p.numel() for p in result.decoder.parameters()) / 1e6:.2f} M",
                     "s/step": f"{per_step:.3f}", "steps": result.step, "seconds": f"{seconds:.0f}", **metrics})
    head = f"### Cross-attention vs joint attention vs one stream, {args.minutes:g} min each on {describe_device(device)}, both tiers, guidance 1\n"
    report(head + "\n" + table(rows, ["model", "params", "s/step", "steps", "seconds", "tier1_all", "tier2_colour", "tier2_shape", "tier2_relation", "tier2_all"]), args.out)


def diversity(image_tokens: np.ndarray, per_prompt: int) -> float:
    """Mean fraction of token positions at which two images of the same prompt differ."""
    grids = image_tokens.reshape(-1, per_prompt, image_tokens.shape[1] * image_tokens.shape[2])
    pairs = [(i, j) for i in range(per_prompt) for j in range(i + 1, per_prompt)]
    return float(np.mean([(grids[:, i] != grids[:, j]).mean() for i, j in pairs]))


def guidance(args: argparse.Namespace) -> None:
    decoder, tokenizer = load_text_to_image(args.checkpoint)
    rows = []
    for kind in ("tier1", "tier2"):
        captions = evaluation_prompts(args.prompts, kind, decoder.config.held_out_pairs)
        repeated = [c for c in captions[: args.prompts // 4] for _ in range(4)]
        for scale in args.scales:
            fidelity = prompt_fidelity(decoder, tokenizer, captions, guidance_scale=scale)
            tokens = generate(decoder, tokenizer, repeated, guidance_scale=scale, seed=1).image_tokens
            rows.append({"prompts": kind, "guidance": scale, "all": f"{100 * fidelity['all']:.1f}%",
                         "diversity": f"{diversity(tokens, 4):.3f}"})
    head = f"### Guidance sweep, {args.checkpoint or 'shipped decoder'}: fidelity (all attributes) and diversity (token positions that differ between two samples of one prompt)\n"
    report(head + "\n" + table(rows, ["prompts", "guidance", "all", "diversity"]), args.out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["tier1", "tier2", "compare", "guidance"])
    parser.add_argument("--minutes", type=float, default=None, help="training budget (tier1: 5, tier2: 20, compare: 10 per model)")
    parser.add_argument("--tokenizer-minutes", type=float, default=None, help="tokenizer's share (tier1: 1.75, tier2: 3)")
    parser.add_argument("--tokenizer-steps", type=int, default=3000)
    parser.add_argument("--codebook-size", type=int, default=TokenizerConfig.codebook_size,
                        help="tier1/tier2: codes of the tokenizer trained from scratch")
    parser.add_argument("--batch-size", type=int, default=None, help="tier1/tier2: the decoder's batch (default: RECIPES)")
    parser.add_argument("--prompts", type=int, default=500, help="fresh prompts per kind")
    parser.add_argument("--scales", type=float, nargs="+", default=None, help="guidance scales to evaluate")
    parser.add_argument("--temperatures", type=float, nargs="+", default=None,
                        help="sampling temperatures to evaluate (tier1/tier2; below 1 sharpens each token's distribution)")
    parser.add_argument("--checkpoint", type=Path, default=None, help="decoder for 'guidance' (default: shipped)")
    parser.add_argument("--model", choices=["cross-attention", "joint", "single-stream"], default=None,
                        help="tier1/tier2 decoder (tier1: cross-attention, tier2: joint)")
    parser.add_argument("--token-shift", action="store_true",
                        help="tier1/tier2: the recipe's decoder with DecoderConfig(token_shift=True) (cross-attention, single-stream)")
    parser.add_argument("--seed", type=int, default=0, help="tier1/tier2: training seed of tokenizer and decoder (weights and batches)")
    parser.add_argument("--device", default=None)
    parser.add_argument("--out", type=Path, default=None, help="append the table to this Markdown file")
    args = parser.parse_args()
    defaults = {"tier1": (5, 1.75, [1.0, 1.5], [1.0, 0.7]), "tier2": (20, 3, [1.0, 1.5], [1.0]),
                "compare": (10, None, [1.0], [1.0]), "guidance": (None, None, [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0], [1.0])}[args.command]
    args.minutes = args.minutes if args.minutes is not None else defaults[0]
    args.tokenizer_minutes = args.tokenizer_minutes if args.tokenizer_minutes is not None else defaults[1]
    args.scales = args.scales or defaults[2]
    args.temperatures = args.temperatures or defaults[3]
    args.model = args.model or ("joint" if args.command == "tier2" else "cross-attention")
    if args.command in ("tier1", "tier2"):
        tier = int(args.command[-1])
        if (tier, args.model) not in RECIPES:
            parser.error(f"no tier-{tier} recipe for --model {args.model}: there are {sorted(m for t, m in RECIPES if t == tier)}")
        tiered(args, tier)
    elif args.command == "compare":
        compare(args)
    else:
        guidance(args)


if __name__ == "__main__":
    main()
