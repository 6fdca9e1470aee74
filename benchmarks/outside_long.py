"""The outside row at the shipped decoders' step count: DALLE-pytorch 1.6.6 at the lab's size, 8,000 steps.

The shipped decoders (``crossmodal_edu/dalle/checkpoints/README.md``) trained 8,000 steps of batch 64 at
lr 3e-3 (width 96, 804,832-880,096 weights). This trains the lab's outside row (width 64, 503,329 weights,
its lab-chosen lr 3e-3, seed 0) for the same 8,000 steps on the same batches (half two-object scenes)
and grades it exactly as the lab does (500 test prompts per kind, sampling seeds 0-2, guidance 1 and
1.5), with its two-object curve every 500 steps. One seed: about an hour of one CPU core.

    python benchmarks/conditioning_lab.py --setup-outside && python benchmarks/outside_long.py
    python benchmarks/outside_long.py --report     # beside the shipped decoders (shipped_decoders_cpu.json)

The line goes to ``benchmarks/results/outside_8000_cpu.jsonl`` (skipped if already there). The shipped
decoders' numbers come from ``shipped_decoders.py``: the same 500 prompts per kind (``evaluation_prompts``'
default seeds, as the lab's test) and sampling seeds 0-2, drawn in batches of 256 captions rather than
250, so the random draws differ; and from the released float16 weights. ``--grade`` grades shipped
checkpoints by the lab's own test function instead (batches of 250, the same code path as the outside
row's test), one line each in ``benchmarks/results/shipped_lab_test_cpu.jsonl``:

    python benchmarks/outside_long.py --grade decoder,decoder_joint,decoder_single_stream
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

from conditioning_lab import KINDS as LAB_KINDS, OUTSIDE_NAME, ROOT, Run, Settings, append_line, execute, read_lines, grade_test

OUT = ROOT / "benchmarks" / "results" / "outside_8000_cpu.jsonl"
GRADED = ROOT / "benchmarks" / "results" / "shipped_lab_test_cpu.jsonl"
SHIPPED = ROOT / "benchmarks" / "results" / "shipped_decoders_cpu.json"
STEPS = 8000
LR = 3e-3  # the lab's choice for the outside row at 2,000 steps (validation 0.695, against 0.437 at 1.5e-3 and 0.663 at 6e-3)
KINDS = (*(f"{kind}_all" for kind in LAB_KINDS), "tier2_relation")  # the report's columns, as the lab's


def grade_checkpoint(name: str, settings: Settings = Settings()) -> dict:
    """A shipped (or any) decoder checkpoint graded exactly as the lab grades a run's test: its
    ``settings.test_prompts`` test prompts per kind, sampling seeds and guidance scales, through the
    lab's ``grade_test`` (so the same prompts and sampling batches as the outside row's line)."""
    import time
    from pathlib import Path

    import torch

    from crossmodal_edu.dalle import load_text_to_image, pretrained_path
    from crossmodal_edu.dalle.checkpoint import load_checkpoint
    from crossmodal_edu.dalle.lab_results import design_name

    path = Path(name) if name.endswith(".pt") else pretrained_path(name)
    decoder, tokenizer = load_text_to_image(path)
    config = decoder.config
    start = time.perf_counter()
    test = grade_test(decoder, tokenizer, settings)
    return {"checkpoint": path.name, "design": design_name(config),
            "params": sum(p.numel() for p in decoder.parameters()), "steps": load_checkpoint(path)["step"],
            "torch": torch.__version__, "test": test, "eval_s": round(time.perf_counter() - start, 1),
            "test_settings": {"n": settings.test_prompts, "sampling_seeds": list(settings.sampling_seeds),
                              "scales": list(settings.scales)},
            "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def report() -> str:
    """The outside row at 8,000 steps beside the shipped decoders (% fully right), then its curve."""
    rows = ["| model | weights | steps | guidance | one object | held-out | two objects | relation |", "|---|---|---|---|---|---|---|---|"]
    for entry in json.loads(SHIPPED.read_text()):
        if entry["checkpoint"] in ("decoder.pt", "decoder_joint.pt", "decoder_single_stream.pt"):
            for scale in ("g1", "g1.5"):
                cells = " | ".join(f"{100 * entry['scores'][f'{scale}/{kind}']['mean']:.1f}" for kind in KINDS)
                rows.append(f"| shipped {entry['conditioning']} (`{entry['checkpoint']}`) | {entry['params']:,} | 8,000 | {scale[1:]} | {cells} |")
    for line in read_lines(GRADED) if GRADED.exists() else []:
        for scale, test in line["test"].items():
            cells = " | ".join(f"{100 * test[kind]:.1f}" for kind in KINDS)
            rows.append(f"| shipped {line['design']} (`{line['checkpoint']}`), the lab's test | {line['params']:,} | {line['steps']:,} | {scale[1:]} | {cells} |")
    curves = []
    for line in read_lines(OUT) if OUT.exists() else []:
        for scale, test in line["test"].items():
            cells = " | ".join(f"{100 * test[kind]:.1f}" for kind in KINDS)
            rows.append(f"| {line['design']} (lr {line['lr']:g}, seed {line['seed']}) | {line['params']:,} | {line['steps']:,} | {scale[1:]} | {cells} |")
        curves.append(f"{line['design']}, two objects fully right (200 validation prompts, g 1) by step: "
                      + ", ".join(f"{point['step']}: {100 * point['tier2_all']:.1f}" for point in line["curve"])
                      + f"; {line['train_cpu_s'] / line['steps']:.3f} CPU s/step ({line['torch']})")
    return "\n".join(rows + [""] + curves)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--report", action="store_true", help="print the table of what is in the results file")
    parser.add_argument("--grade", default=None, help="shipped checkpoints (names or .pt paths, comma-separated) to grade by the lab's test")
    args = parser.parse_args()
    if args.report:
        print(report())
    elif args.grade:
        for name in args.grade.split(","):
            line = grade_checkpoint(name)
            append_line(GRADED, line)
            print(f"{line['checkpoint']}: {line['eval_s']:.0f} s", flush=True)
        print(report())
    else:
        execute([Run(OUTSIDE_NAME, LR, 0, STEPS)], OUT, 1, replace(Settings(), steps=STEPS))
