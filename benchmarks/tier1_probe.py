"""Tier-1 probe: how many steps, not how many seconds, a one-object decoder needs.

``text_to_image.py tier1`` fits its steps to a clock, so its result moves with the machine's speed.
This script fixes the step counts instead and grades the decoder every ``--every`` steps on 300
(``--prompts``) validation prompts (one object; the lab's validation seed, not the test prompts), at guidance 1 and 1.5 and
temperature 1 and 0.7, printing one JSON line per point. One thread, so two probes can share the
two cores; training seconds exclude the grading.

    python benchmarks/tier1_probe.py                                   # shipped tokenizer, batch 32, 2,800 steps
    python benchmarks/tier1_probe.py --batch-size 16 --steps 3200 --every 800
    python benchmarks/tier1_probe.py --tokenizer-steps 858 --codebook-size 128 --batch-size 16 --steps 3000 --every 3000
    python benchmarks/tier1_probe.py --token-shift --steps 2000                # image tokens borrow from above and left

``--tokenizer-steps N`` trains a tokenizer from scratch on one-object scenes first (and grades its
read-back); without it the shipped tokenizer (3,000 steps) is used. Results: benchmarks/RESULTS.md,
"Tier 1, session 9" and (``--token-shift``) "Tier 1, session 16".
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import torch

from conditioning_lab import VALIDATION_SEEDS  # benchmarks/ is on the path when a script here runs
from text_to_image import RECIPES

from crossmodal_edu.dalle.config import TokenizerConfig, TrainConfig
from crossmodal_edu.dalle.decoder import build_decoder
from crossmodal_edu.dalle.evaluate import evaluate_tokenizer, evaluation_prompts, prompt_fidelity
from crossmodal_edu.dalle.train import load_tokenizer, seed_everything, train_tokenizer
from crossmodal_edu.dalle.train_decoder import DecoderTrainConfig, train_decoder

SETTINGS = ((1.0, 1.0), (1.5, 1.0), (1.0, 0.7), (1.5, 0.7))  # (guidance, temperature) of every grading
CONFIG, RECIPE = RECIPES[1, "cross-attention"]  # the decoder and recipe of text_to_image.py tier1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokenizer-steps", type=int, default=None, help="train a tokenizer from scratch for this many steps")
    parser.add_argument("--codebook-size", type=int, default=TokenizerConfig.codebook_size)
    parser.add_argument("--steps", type=int, default=2800, help="decoder steps (the schedule's length)")
    parser.add_argument("--every", type=int, default=400, help="steps between gradings")
    parser.add_argument("--batch-size", type=int, default=RECIPE["batch_size"])
    parser.add_argument("--lr", type=float, default=RECIPE["lr"])
    parser.add_argument("--token-shift", action="store_true", help="the same decoder with DecoderConfig(token_shift=True)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--prompts", type=int, default=300, help="validation prompts per grading")
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    if args.tokenizer_steps is None:
        tokenizer = load_tokenizer()
    else:
        train = TrainConfig(steps=args.tokenizer_steps, two_object_fraction=0.0, warmup_steps=min(100, args.tokenizer_steps // 10), seed=args.seed)
        tokenizer = train_tokenizer(TokenizerConfig(codebook_size=args.codebook_size), train, progress=False).model
        metrics = evaluate_tokenizer(tokenizer, args.prompts)
        print(json.dumps({"tokenizer_steps": args.tokenizer_steps, "codes": args.codebook_size, "seconds": round(time.perf_counter() - start, 1),
                          "reads_back_1": metrics["oracle_all_1"], "reads_back_2": metrics["oracle_all_2"]}), flush=True)
    config = dataclasses.replace(CONFIG, codebook_size=tokenizer.config.codebook_size, token_shift=args.token_shift)
    captions = evaluation_prompts(args.prompts, "tier1", config.held_out_pairs, seed=VALIDATION_SEEDS["tier1"])
    seed_everything(args.seed)
    decoder = build_decoder(config)
    clock = {"start": time.perf_counter(), "grading": 0.0}

    def grade(step: int) -> None:
        begun = time.perf_counter()
        point = {"step": step, "train_s": round(begun - clock["start"] - clock["grading"], 1)}
        for scale, temperature in SETTINGS:
            score = prompt_fidelity(decoder, tokenizer, captions, guidance_scale=scale, temperature=temperature)["all"]
            point[f"g{scale:g}_T{temperature:g}"] = round(score, 3)
        decoder.train()
        clock["grading"] += time.perf_counter() - begun
        print(json.dumps(point), flush=True)

    train = DecoderTrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, two_object_fraction=0.0, seed=args.seed)
    train_decoder(train=train, tokenizer=tokenizer, progress=False, model=decoder,
                  on_step=lambda step: grade(step) if 0 < step < args.steps and step % args.every == 0 else None)
    grade(args.steps)


if __name__ == "__main__":
    main()
