"""How many training steps does each decoder configuration need? (exploration)

Trains several configurations of the miniature DALL-E's decoder for several step budgets, in
parallel worker processes (one thread each), and prints one JSON line per run: training time,
final loss and prompt fidelity (read back by the oracle) at a few guidance scales. Steps, not
seconds, are what transfer between machines: multiply by a machine's step time to get its
training time. A run's ``conditioning`` names the design (``build_decoder``); older runs name
the layerwise and joint designs ``variant=...`` (from when they lived in benchmarks/), read the same.
Rounds 1-2 ran on an H200 (results/decoder_sweep_h200.jsonl), rounds 3-6 on a 2-core CPU
(results/decoder_sweep_cpu.jsonl); benchmarks/RESULTS.md tabulates both.

    python benchmarks/decoder_sweep.py --workers 8 --out sweep.jsonl
    python benchmarks/decoder_sweep.py --workers 2 --only 33,36 --out sweep.jsonl   # some runs, by index
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time

RUNS = [
    # Rounds 1 and 2 ran when DecoderConfig.text_layers defaulted to 2 (the "params" of each line says which).
    # round 1 (H200, 2026-11-28): architecture, width, batch, steps
    *[dict(name="x128", steps=s, two=0.0) for s in (500, 1000, 2000)],
    *[dict(name="x96", steps=s, two=0.0, d_model=96, lr=3e-3) for s in (500, 1000, 2000)],
    *[dict(name="x128-bs32", steps=s, two=0.0, batch_size=32) for s in (1000, 2000)],
    *[dict(name="single128-L7", steps=s, two=0.0, conditioning="single-stream", layers=7) for s in (500, 1000, 2000)],
    dict(name="none128", steps=1000, two=0.0, conditioning="none"),
    dict(name="x128", steps=4000, two=0.5),
    dict(name="x128", steps=6000, two=0.5),
    dict(name="x128-L6", steps=4000, two=0.5, layers=6),
    dict(name="single128-L7", steps=4000, two=0.5, conditioning="single-stream", layers=7),
    dict(name="x128", steps=4000, two=1.0),
    # round 2: is it the depth of the text encoder? and cheaper tier-1 models
    dict(name="x128-tl4", steps=4000, two=0.5, text_layers=4),
    dict(name="x128-tl6-L3", steps=4000, two=0.5, text_layers=6, layers=3),
    dict(name="x128-lr3e-3", steps=4000, two=0.5, lr=3e-3),
    dict(name="x96-tl4", steps=4000, two=0.5, d_model=96, text_layers=4, lr=3e-3),
    dict(name="x128-bs128", steps=2000, two=0.5, batch_size=128),
    dict(name="x128-tl4", steps=2000, two=0.0, text_layers=4),
    *[dict(name="x64", steps=s, two=0.0, d_model=64, lr=4e-3) for s in (2000, 3000)],
    dict(name="x96", steps=1500, two=0.0, d_model=96, lr=3e-3),
    dict(name="x96-tl4-L3", steps=2000, two=0.0, d_model=96, text_layers=4, layers=3, lr=3e-3),
    dict(name="single96-L6", steps=1500, two=0.0, d_model=96, layers=6, conditioning="single-stream", lr=3e-3),
    # round 3 (2-core CPU VM, one thread per run, 2026-11-28): what fits tier 1's 5 minutes?
    dict(name="x64", steps=1600, two=0.0, d_model=64, lr=4e-3),
    dict(name="single64-L5", steps=1600, two=0.0, d_model=64, layers=5, conditioning="single-stream", lr=4e-3),
    dict(name="single96-L4", steps=1400, two=0.0, d_model=96, layers=4, conditioning="single-stream", lr=3e-3),
    dict(name="x64-bs32", steps=3000, two=0.0, d_model=64, batch_size=32, lr=3e-3),
    # round 4 (same CPU): why does the single stream learn two objects faster? (layerwise and joint designs)
    *[dict(name=name, steps=2000, two=1.0, d_model=64, lr=3e-3, scales=(1.0,), **kw) for name, kw in (
        ("x64-tl2", dict(text_layers=2)),
        ("x64-tl4", dict(text_layers=4)),
        ("layerwise64", dict(text_layers=4, variant="layerwise")),
        ("joint64", dict(text_layers=2, variant="joint")),
        ("single64-L7", dict(layers=7, conditioning="single-stream")),
    )],
    # round 5 (same CPU): tier 1 in what a 5-minute budget leaves the decoder (~2,300 steps of batch 32)
    dict(name="x64-tl2-bs32", steps=2300, two=0.0, d_model=64, text_layers=2, batch_size=32, lr=3e-3),
    dict(name="joint64-bs32", steps=2300, two=0.0, d_model=64, text_layers=2, batch_size=32, lr=3e-3, variant="joint"),
    # round 6 (same CPU): the round-4 gap again with another seed, and joint attention on one object at batch 64
    dict(name="x64-tl2", steps=2000, two=1.0, d_model=64, lr=3e-3, scales=(1.0,), text_layers=2, seed=1),
    dict(name="joint64", steps=2000, two=1.0, d_model=64, lr=3e-3, scales=(1.0,), text_layers=2, variant="joint", seed=1),
    dict(name="joint64", steps=2000, two=0.0, d_model=64, lr=4e-3, text_layers=2, variant="joint"),
]

MODEL_KEYS = ("d_model", "layers", "text_layers", "num_heads", "caption_dropout", "conditioning")
TRAIN_KEYS = ("lr", "batch_size", "warmup_steps", "weight_decay", "seed")


def run(spec: dict) -> dict:
    import torch

    torch.set_num_threads(1)
    from crossmodal_edu.dalle.config import DecoderConfig
    from crossmodal_edu.dalle.evaluate import evaluate_decoder
    from crossmodal_edu.dalle.train_decoder import DecoderTrainConfig, train_decoder

    model = {k: spec[k] for k in MODEL_KEYS if k in spec}
    if "variant" in spec:  # the round-4 to round-6 name of a design
        model["conditioning"] = spec["variant"]
    config = DecoderConfig(**model)
    train = DecoderTrainConfig(steps=spec["steps"], two_object_fraction=spec["two"], **{k: spec[k] for k in TRAIN_KEYS if k in spec})
    start = time.perf_counter()
    result = train_decoder(config, train, progress=False)
    out = {**spec, "train_s": round(time.perf_counter() - start, 1), "loss": round(sum(result.history["loss"][-50:]) / len(result.history["loss"][-50:]), 4),
           "params": sum(p.numel() for p in result.decoder.parameters())}
    kinds = (("tier1", "held_out") if spec["two"] < 1 else ()) + (("tier2",) if spec["two"] > 0 else ())
    for scale in spec.get("scales", (1.0, 2.0)):
        metrics = evaluate_decoder(result.decoder, result.tokenizer, spec.get("n", 300), kinds=kinds, guidance_scale=scale)
        out[f"g{scale:g}"] = {k: round(v, 3) for k, v in metrics.items() if not k.endswith(("_size", "_count"))}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--out", default=None, help="also append the JSON lines to this file")
    parser.add_argument("--only", default=None, help="comma-separated run indices")
    parser.add_argument("--smoke", action="store_true", help="3 steps, 4 prompts per run: checks the script runs")
    args = parser.parse_args()
    runs = RUNS if args.only is None else [RUNS[int(i)] for i in args.only.split(",")]
    if args.smoke:
        runs = [{**r, "steps": 3, "n": 4, "scales": (1.0, 2.0), "warmup_steps": 1} for r in runs[:2] + runs[-2:]]
    runs = sorted(runs, key=lambda r: -r["steps"] * (1.6 if r.get("conditioning") == "single-stream" else 1))  # longest first
    with mp.get_context("spawn").Pool(args.workers) as pool:
        for result in pool.imap_unordered(run, runs):
            line = json.dumps(result)
            print(line, flush=True)
            if args.out:
                with open(args.out, "a") as file:
                    file.write(line + "\n")


if __name__ == "__main__":
    main()
