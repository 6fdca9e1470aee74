"""The outside row at the shipped decoders' step count: DALLE-pytorch 1.6.6 at the lab's size, 8,000 steps.

The shipped decoders (``crossmodal_edu/dalle/checkpoints/README.md``) trained 8,000 steps of batch 64 at
lr 3e-3 (width 96, 804,832-880,096 weights). This trains the lab's outside row (width 64, 503,329 weights,
its lab-chosen lr 3e-3, seed 0) for the same 8,000 steps on the same batches (half two-object scenes)
and grades it exactly as the lab does (500 test prompts per kind, sampling seeds 0-2, guidance 1 and
1.5), with its two-object curve every 500 steps. One seed: about an hour of one CPU core.

    python benchmarks/conditioning_lab.py --setup-outside && python benchmarks/outside_long.py

The line goes to ``benchmarks/results/outside_8000_cpu.jsonl`` (skipped if already there). Not run to the end yet:
the first attempt (2026-12-02) was stopped after about 40 CPU minutes for want of session time.
"""

from __future__ import annotations

from dataclasses import replace

from conditioning_lab import OUTSIDE_NAME, ROOT, Run, Settings, execute

OUT = ROOT / "benchmarks" / "results" / "outside_8000_cpu.jsonl"
STEPS = 8000
LR = 3e-3  # the lab's choice for the outside row at 2,000 steps (validation 0.695, against 0.437 at 1.5e-3 and 0.663 at 6e-3)

if __name__ == "__main__":
    execute([Run(OUTSIDE_NAME, LR, 0, STEPS)], OUT, 1, replace(Settings(), steps=STEPS))
