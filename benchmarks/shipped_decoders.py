"""Prompt fidelity of the decoders shipped in ``crossmodal_edu/dalle/checkpoints/`` (issue 13, section 3).

Each checkpoint is graded by the oracle on 500 fresh prompts per kind (``evaluation_prompts``:
one object with a seen colour-shape pair, one with a held-out pair, two objects and a relation),
each prompt drawn with sampling seeds 0, 1 and 2, at guidance scales 1, 1.5 and 2. A cell gives
the mean over the three sampling seeds and, in brackets, a standard error and the range over the
three seeds (how much one sampling seed alone moves a number). The standard error is the binomial
one of a single seed's prompts, sqrt(p (1 - p) / 500): the mean over seeds has at most that much,
and at least 1/sqrt(3) of it (the three draws share their prompts, so they are not independent).

    python benchmarks/shipped_decoders.py                      # the three shipped decoders, ~20 min on 2 CPU cores
    python benchmarks/shipped_decoders.py --checkpoints decoder_joint --prompts 100 --seeds 0
    python benchmarks/shipped_decoders.py --checkpoints runs/decoder.pt --scales 1,1.5   # your own
    python benchmarks/shipped_decoders.py --json crossmodal_edu/results/shipped_decoders_cpu.json
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from crossmodal_edu.dalle import load_text_to_image, pretrained_path
from crossmodal_edu.dalle.evaluate import evaluation_prompts, prompt_fidelity
from crossmodal_edu.dalle.lab_results import design_name

KINDS = (("tier1", "one object"), ("held_out", "held-out pair"), ("tier2", "two objects"))
ATTRIBUTES = {"tier1": ("all",), "held_out": ("all",), "tier2": ("all", "relation")}


def grade(name: str, prompts: int, seeds: tuple[int, ...], scales: tuple[float, ...]) -> dict:
    path = Path(name) if name.endswith(".pt") else pretrained_path(name)  # a shipped name, or any checkpoint file
    decoder, tokenizer = load_text_to_image(path)
    result = {"checkpoint": path.name, "conditioning": design_name(decoder.config), "prompts": prompts,
              "seeds": list(seeds), "params": sum(p.numel() for p in decoder.parameters()), "scores": {}}
    start = time.perf_counter()
    for scale in scales:
        for kind, _ in KINDS:
            captions = evaluation_prompts(prompts, kind, decoder.config.held_out_pairs)
            runs = [prompt_fidelity(decoder, tokenizer, captions, seed=seed, guidance_scale=scale) for seed in seeds]
            for attribute in ATTRIBUTES[kind]:
                values = [run[attribute] for run in runs]
                mean = sum(values) / len(values)
                se = math.sqrt(max(mean * (1 - mean), 0.0) / prompts)  # one seed's; bounds the mean's from above
                result["scores"][f"g{scale:g}/{kind}_{attribute}"] = {
                    "mean": mean, "se": se, "min": min(values), "max": max(values), "per_seed": values}
    result["seconds"] = round(time.perf_counter() - start, 1)
    return result


def table(results: list[dict], scales: tuple[float, ...]) -> str:
    header = ["checkpoint", "guidance"] + [label for kind, label in KINDS] + ["relation"]
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for result in results:
        for scale in scales:
            cells = []
            for kind, attribute in [(k, "all") for k, _ in KINDS] + [("tier2", "relation")]:
                s = result["scores"][f"g{scale:g}/{kind}_{attribute}"]
                spread = "" if len(result["seeds"]) < 2 else f", {100 * s['min']:.1f}–{100 * s['max']:.1f}"
                cells.append(f"{100 * s['mean']:.1f} (se {100 * s['se']:.1f}{spread})")
            out.append(f"| {result['checkpoint']} ({result['conditioning']}) | {scale:g} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoints", default="decoder,decoder_joint,decoder_single_stream",
                        help="names in crossmodal_edu/dalle/checkpoints/, or paths of .pt files")
    parser.add_argument("--prompts", type=int, default=500, help="fresh prompts per kind")
    parser.add_argument("--seeds", default="0,1,2", help="sampling seeds")
    parser.add_argument("--scales", default="1,1.5,2", help="guidance scales")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()
    seeds = tuple(int(s) for s in args.seeds.split(","))
    scales = tuple(float(s) for s in args.scales.split(","))
    results = []
    for name in args.checkpoints.split(","):
        results.append(grade(name, args.prompts, seeds, scales))
        print(f"{name}: {results[-1]['seconds']:.0f} s", flush=True)
    print(f"\n{args.prompts} prompts per kind, sampling seeds {list(seeds)}; % fully right, "
          "mean over the seeds (standard error, range over the seeds)\n")
    print(table(results, scales))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
