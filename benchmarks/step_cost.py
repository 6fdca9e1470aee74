"""What one training step of each lab design costs, measured back to back on one machine.

The conditioning lab (``conditioning_lab.py``) records each run's CPU seconds, but its runs were
spread over two VMs with different processors and often shared the cores, so its s/step column does
not compare across rows. This times the same thing in one sitting: each design at the lab's size
(``conditioning_lab.design_config``), the lab's batch (64 scenes, half two-object, the same batches
for every design), one thread, a forward and backward pass and an AdamW step, ``--warmup`` untimed
steps then ``--steps`` timed ones, in turn, ``--rounds`` times (the median of the rounds is reported,
so a burst of other work on the machine moves one round, not the table). Run it on an otherwise idle
machine.

    python benchmarks/step_cost.py                                    # the course designs
    python benchmarks/conditioning_lab.py --setup-outside && python benchmarks/step_cost.py --designs cross-attention,cross-attention+token-shift,dalle-pytorch

Prints a table (CPU ms per step, and each design's cost relative to the first) and appends it, with
the machine's processor, to ``benchmarks/results/step_cost_cpu.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from conditioning_lab import DESIGNS, OUTSIDE_NAME, ROOT, build_model, outside_available

OUT = ROOT / "benchmarks" / "results" / "step_cost_cpu.jsonl"


def processor() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else what ``platform`` says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def batches(n: int, batch_size: int = 64):
    """``n`` training batches of the lab's recipe (seed 0), drawn once and reused by every design."""
    from crossmodal_edu import world
    from crossmodal_edu.dalle.train import load_tokenizer
    from crossmodal_edu.dalle.train_decoder import DecoderTrainConfig, decoder_batch

    from conditioning_lab import design_config

    tokenizer = load_tokenizer()
    train = DecoderTrainConfig(batch_size=batch_size, two_object_fraction=0.5, seed=0)
    config, vocab = design_config("cross-attention"), world.Vocab()
    with torch.no_grad():
        return [decoder_batch(step, train, config, tokenizer, vocab) for step in range(n)]


def time_design(design: str, data, warmup: int, steps: int) -> float:
    """CPU seconds per step over ``steps`` steps after ``warmup`` untimed ones."""
    torch.manual_seed(0)
    model = build_model(design).train()
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.01)

    def step(batch) -> None:
        text_tokens, context_mask, image_tokens = batch
        loss = model.loss(image_tokens, text_tokens, context_mask)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimiser.step()

    for batch in data[:warmup]:
        step(batch)
    start = time.process_time()
    for batch in data[warmup:warmup + steps]:
        step(batch)
    return (time.process_time() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--designs", default=",".join(DESIGNS), help="comma-separated lab designs (dalle-pytorch too, after --setup-outside)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    designs = args.designs.split(",")
    if OUTSIDE_NAME in designs and not outside_available():
        raise SystemExit("dalle-pytorch does not import here: run `python benchmarks/conditioning_lab.py --setup-outside` first")
    data = batches(args.warmup + args.steps)
    rounds: dict[str, list[float]] = {design: [] for design in designs}
    for _ in range(args.rounds):
        for design in designs:  # in turn, so that a slow minute of the machine falls on every design alike
            rounds[design].append(time_design(design, data, args.warmup, args.steps))
    cost = {design: statistics.median(values) for design, values in rounds.items()}
    first = cost[designs[0]]
    print(f"{processor()}, PyTorch {torch.__version__}, 1 thread, batch 64, median of {args.rounds} rounds of {args.steps} steps\n")
    print(f"| design | CPU ms/step | vs {designs[0]} | rounds (ms) |\n|---|---|---|---|")
    for design in designs:
        print(f"| {design} | {1000 * cost[design]:.0f} | {cost[design] / first:.2f}x | "
              + ", ".join(f"{1000 * v:.0f}" for v in rounds[design]) + " |")
    line = {"processor": processor(), "torch": torch.__version__, "steps": args.steps, "rounds": args.rounds,
            "cpu_s_per_step": cost, "per_round": rounds, "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with open(OUT, "a") as file:
        file.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
