"""Why the outside row learns two objects sooner: the conditioning lab's runs, taken apart.

The lab (``conditioning_lab.py``) trains DALLE-pytorch 1.6.6 and the course's designs with one recipe
and grades each with its own sampler. DALLE-pytorch differs from the course's single stream (the
design it shares: caption and image in one causal sequence) in four ways at once:

- its sampler keeps only the likeliest half of the logits (``top_k(thres=0.5)``) where the course's
  ``generate`` draws from the full softmax;
- rotary position embeddings (1-D over the caption, 2-D axial over the image grid) instead of learned
  absolute positions;
- token shift: before attention and MLP, part of each image token's channels is replaced by its left
  and upper neighbours' (DALLE-pytorch's ``shift_tokens``);
- a loss that also predicts the caption (weight 1 against 7 for the image).

Each variant below is one training run at the lab's settings (width 64, 2,000 steps of batch 64,
identical batches, training seed 0 unless named, the lr the lab's search chose for its design), graded on the lab's
500 test prompts per kind, sampling seeds 0-2, guidance 1 and 1.5, with each of the samplers in
``conditioning_lab.SAMPLERS``: its own, the full softmax, and DALLE's top-k for both. One seed per
variant: these are leads for the lab, not results; the lab's seed spread (its JSONL) says how far one
run may be off.

Two more variants are the single stream's lab seeds 1 and 2 again: the lab's course designs ran on
another processor than its outside row, and a rerun of the single stream's seed 0 there drew another
score (RESULTS.md), so these put three seeds of the best course design on the outside row's machine.

    python benchmarks/conditioning_lab.py --setup-outside
    python benchmarks/outside_ablation.py --variants dalle-pytorch,single-stream     # one process each
    python benchmarks/outside_ablation.py --report

Lines go to ``benchmarks/results/outside_ablation_cpu.jsonl`` (a variant already there is skipped).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
from pathlib import Path
from typing import Any

from conditioning_lab import (KINDS, OUTSIDE_NAME, ROOT, SAMPLERS, Run, Settings, append_line, chosen_lr,
                              read_lines, train_and_grade)

OUT = ROOT / "benchmarks" / "results" / "outside_ablation_cpu.jsonl"
LAB = ROOT / "crossmodal_edu" / "results" / "conditioning_lab_cpu.jsonl"
VARIANTS: dict[str, tuple[str, dict[str, Any], int]] = {
    "dalle-pytorch": (OUTSIDE_NAME, {}, 0),
    "single-stream": ("single-stream", {}, 0),
    "dalle-pytorch no-rotary": (OUTSIDE_NAME, {"rotary_emb": False}, 0),  # learned text + axial image positions
    "dalle-pytorch no-token-shift": (OUTSIDE_NAME, {"shift_tokens": False}, 0),
    "dalle-pytorch image-loss-only": (OUTSIDE_NAME, {"loss_img_weight": 1e6}, 0),  # the caption's share 1e-6
    # the single stream's other lab seeds, on the machine of the outside row's three seeds
    "single-stream seed 1": ("single-stream", {}, 1),
    "single-stream seed 2": ("single-stream", {}, 2),
}
"""Variant name: (the lab's design, DALLE options that differ from its defaults, training seed)."""


def run_variant(name: str, steps: int = Settings.steps) -> dict[str, Any]:
    """Train and grade one variant at its design's lab-chosen lr and its training seed."""
    design, dalle_kwargs, seed = VARIANTS[name]
    lr = chosen_lr(read_lines(LAB), design, steps)
    if lr is None:
        raise RuntimeError(f"the lab has not chosen an lr for {design} at {steps} steps: run its lr phase first")
    line = train_and_grade(Run(design, lr, seed, steps), dalle_kwargs=dalle_kwargs, samplers=SAMPLERS)
    return {**line, "id": f"{name}|{line['id']}", "variant": name}


def _worker(name: str) -> dict[str, Any]:
    import traceback

    try:
        return run_variant(name)
    except Exception:  # noqa: BLE001 -- reported; the variant stays to do
        return {"id": name, "error": traceback.format_exc()}


def report(path: Path = OUT) -> str:
    """One Markdown row per variant, guidance and sampler: % fully right per kind and relation."""
    header = "| variant | params | lr | CPU s/step | guidance | sampler | one object | held-out | two objects | relation |"
    rows = [header, "|" + "---|" * (header.count("|") - 1)]
    for line in read_lines(path):
        cpu = line["train_cpu_s"] / line["steps"]
        for sampler, by_scale in line["test_by_sampler"].items():
            for scale, test in by_scale.items():
                cells = [f"{100 * test[f'{kind}_all']:.1f}" for kind in KINDS] + [f"{100 * test['tier2_relation']:.1f}"]
                rows.append(f"| {line['variant']} | {line['params']:,} | {line['lr']:g} | {cpu:.3f} | {scale[1:]} | {sampler} | "
                            + " | ".join(cells) + " |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of: {'; '.join(VARIANTS)}")
    parser.add_argument("--workers", type=int, default=1, help="parallel processes, one thread each")
    parser.add_argument("--report", action="store_true", help="print the table of what is in the results file")
    args = parser.parse_args()
    if args.report:
        print(report())
        return
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variants {unknown}: expected some of {list(VARIANTS)}")
    done = {line.get("variant") for line in read_lines(OUT)} if OUT.exists() else set()
    todo = [n for n in names if n not in done]
    print(f"to run: {todo}; done already: {sorted(set(names) & done)}", flush=True)
    results = map(_worker, todo) if args.workers <= 1 else mp.get_context("spawn").Pool(args.workers).imap_unordered(_worker, todo)
    for line in results:
        if "error" in line:
            print(f"FAILED {line['id']}:\n{line['error']}", flush=True)
            continue
        append_line(OUT, line)
        g1 = {s: line["test_by_sampler"][s]["g1"]["tier2_all"] for s in SAMPLERS}
        print(f"done {line['id']}: {line['train_cpu_s']:.0f} CPU s, two objects at g1 by sampler {json.dumps(g1)}", flush=True)


if __name__ == "__main__":
    main()
