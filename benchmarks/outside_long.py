"""The outside row at the shipped decoders' step count: DALLE-pytorch 1.6.6 at the lab's size, 8,000 steps.

The shipped decoders (``crossmodal_edu/dalle/checkpoints/README.md``) trained 8,000 steps of batch 64 at
lr 3e-3 (width 96, 804,832-880,096 weights). This trains the lab's outside row (width 64, 503,329 weights,
its lab-chosen lr 3e-3, seed 0) for the same 8,000 steps on the same batches (half two-object scenes)
and grades it exactly as the lab does (500 test prompts per kind, sampling seeds 0-2, guidance 1 and
1.5), with its two-object curve every 500 steps. One seed: about an hour of one CPU core.

    python benchmarks/conditioning_lab.py --setup-outside && python benchmarks/outside_long.py
    python benchmarks/outside_long.py --report     # beside the shipped decoders (shipped_decoders_cpu.json)

The line goes to ``benchmarks/results/outside_8000_cpu.jsonl`` (skipped if already there). The shipped
decoders' numbers come from ``shipped_decoders.py``: the same kinds of prompt, 500 per kind and sampling
seeds 0-2, drawn from other prompt seeds than the lab's test prompts.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

from conditioning_lab import KINDS as LAB_KINDS, OUTSIDE_NAME, ROOT, Run, Settings, execute, read_lines

OUT = ROOT / "benchmarks" / "results" / "outside_8000_cpu.jsonl"
SHIPPED = ROOT / "benchmarks" / "results" / "shipped_decoders_cpu.json"
STEPS = 8000
LR = 3e-3  # the lab's choice for the outside row at 2,000 steps (validation 0.695, against 0.437 at 1.5e-3 and 0.663 at 6e-3)
KINDS = (*(f"{kind}_all" for kind in LAB_KINDS), "tier2_relation")  # the report's columns, as the lab's


def report() -> str:
    """The outside row at 8,000 steps beside the shipped decoders (% fully right), then its curve."""
    rows = ["| model | weights | steps | guidance | one object | held-out | two objects | relation |", "|---|---|---|---|---|---|---|---|"]
    for entry in json.loads(SHIPPED.read_text()):
        if entry["checkpoint"] in ("decoder.pt", "decoder_joint.pt"):
            for scale in ("g1", "g1.5"):
                cells = " | ".join(f"{100 * entry['scores'][f'{scale}/{kind}']['mean']:.1f}" for kind in KINDS)
                rows.append(f"| shipped {entry['conditioning']} (`{entry['checkpoint']}`) | {entry['params']:,} | 8,000 | {scale[1:]} | {cells} |")
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
    if parser.parse_args().report:
        print(report())
    else:
        execute([Run(OUTSIDE_NAME, LR, 0, STEPS)], OUT, 1, replace(Settings(), steps=STEPS))
