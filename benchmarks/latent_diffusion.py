"""Measured: the miniature latent diffusion model (crossmodal_edu.diffusion, lesson 07).

Every fidelity number is the oracle's reading of generated images against their prompts
(``world.fidelity.image_fidelity``), with its standard error sqrt(p(1 - p) / n) over n prompts.

    python benchmarks/latent_diffusion.py fidelity    # the shipped model, 500 fresh prompts per kind
    python benchmarks/latent_diffusion.py guidance    # fidelity and diversity against the guidance scale
    python benchmarks/latent_diffusion.py steps       # fidelity and time against the number of Euler steps
    python benchmarks/latent_diffusion.py curve --snapshots runs/snap_*.pt   # fidelity during one training run
    python benchmarks/latent_diffusion.py ablation    # the same recipe without cross-attention, trained here
    python benchmarks/latent_diffusion.py edits       # prompt-to-prompt: word swaps with and without injected maps
    python benchmarks/latent_diffusion.py all               # or several sections: ... guidance steps

Each section prints a Markdown table and stores its numbers under its name in
``crossmodal_edu/results/latent_diffusion_cpu.json`` (the lesson reads them from there; a section
already there is skipped unless ``--again``), so the run can be spread over several sittings.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from crossmodal_edu import world
from crossmodal_edu.dalle.checkpoint import load_checkpoint
from crossmodal_edu.dalle.evaluate import evaluation_prompts
from crossmodal_edu.diffusion import DiffusionConfig, DiffusionTrainConfig, generate, prompt_to_prompt, train_diffusion
from crossmodal_edu.diffusion.evaluate import evaluate_diffusion, standard_error
from crossmodal_edu.diffusion.train import CHECKPOINT, diffusion_from_checkpoint, load_text_to_image
from crossmodal_edu.world.fidelity import image_fidelity, parse_caption

RESULTS = Path(__file__).resolve().parents[1] / "crossmodal_edu" / "results" / "latent_diffusion_cpu.json"
KINDS = ("tier1", "held_out", "tier2")


def _load() -> dict:
    return json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}


def _store(section: str, value) -> None:
    """Add one section to the results file (locked: two runs may measure different sections at once)."""
    import fcntl

    with open(RESULTS.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        results = _load()
        results[section] = value
        results["machine"] = f"{platform.machine()}, {torch.get_num_threads()} thread(s) per run, torch {torch.__version__}"
        RESULTS.write_text(json.dumps(results, indent=1) + "\n")


def _pct(p: float, n: int) -> str:
    return f"{100 * p:.1f} ± {100 * standard_error(p, n):.1f}"


def fidelity(args) -> dict:
    """Guidance 3 (seed 0) is what training measured at its end and stored in the checkpoint (the float32
    EMA weights before the float16 release); guidance 1 and a second sampling seed are measured here."""
    model, tokenizer = load_text_to_image()
    out = {"3.0": {k: v for k, v in load_checkpoint(CHECKPOINT)["metrics"].items() if k.startswith(KINDS)}}
    out["1.0"] = evaluate_diffusion(model, tokenizer, args.prompts, ("tier1", "tier2"), seed=0, guidance_scale=1.0, steps=20)
    print(f"| guidance | {' | '.join(KINDS)} |\n|---|" + "---|" * len(KINDS))
    for s in ("1.0", "3.0"):
        print(f"| {s} | " + " | ".join(_pct(out[s][f"{k}_all"], args.prompts) if f"{k}_all" in out[s] else "" for k in KINDS) + " |")
    # the sampling seed alone moves the numbers: another seed at the recommended scale
    again = evaluate_diffusion(model, tokenizer, args.prompts, ("tier1",), seed=1, guidance_scale=3.0, steps=20)["tier1_all"]
    out["tier1_all_over_seeds"] = [out["3.0"]["tier1_all"], again]
    print(f"one object, guidance 3, sampling seeds 0 and 1: {', '.join(f'{100 * v:.1f}%' for v in out['tier1_all_over_seeds'])}")
    return {"prompts": args.prompts, "steps": 20, **out}


def _diversity(images: np.ndarray, per: int) -> float:
    """Mean per-pixel standard deviation among the ``per`` images drawn for each prompt."""
    grouped = images.reshape(-1, per, *images.shape[1:])
    return float(grouped.std(axis=1).mean())


def guidance(args) -> dict:
    model, tokenizer = load_text_to_image()
    rows = []
    prompts = {k: evaluation_prompts(args.sweep_prompts, k, model.config.held_out_pairs) for k in ("tier1", "tier2")}
    print("| s | one object | two objects | diversity (pixel sd, 8 draws per prompt) |\n|---|---|---|---|")
    for s in (0.0, 1.0, 2.0, 3.0, 5.0, 7.5):
        row = {"s": s}
        for kind, captions in prompts.items():
            row[kind] = image_fidelity(captions, generate(model, tokenizer, captions, guidance_scale=s, seed=0).images)["all"]
        repeated = [c for c in prompts["tier1"][:16] for _ in range(8)]
        row["diversity"] = _diversity(generate(model, tokenizer, repeated, guidance_scale=s, seed=1).images, 8)
        rows.append(row)
        print(f"| {s:g} | {_pct(row['tier1'], args.sweep_prompts)} | {_pct(row['tier2'], args.sweep_prompts)} | {row['diversity']:.3f} |")
    return {"prompts": args.sweep_prompts, "rows": rows}


def steps(args) -> dict:
    model, tokenizer = load_text_to_image()
    captions = evaluation_prompts(args.sweep_prompts, "tier1", model.config.held_out_pairs)
    rows = []
    print("| Euler steps | one object | ms per image |\n|---|---|---|")
    for n in (1, 2, 5, 10, 20, 50):
        start = time.perf_counter()
        images = generate(model, tokenizer, captions, guidance_scale=3.0, steps=n, seed=0).images
        ms = 1000 * (time.perf_counter() - start) / len(captions)
        rows.append({"steps": n, "tier1": image_fidelity(captions, images)["all"], "ms_per_image": ms})
        print(f"| {n} | {_pct(rows[-1]['tier1'], len(captions))} | {ms:.1f} |")
    return {"prompts": args.sweep_prompts, "guidance": 3.0, "rows": rows}


def curve(args) -> dict:
    rows = []
    print("| step | training minutes | one object, guidance 3 |\n|---|---|---|")
    for path in sorted(args.snapshots, key=lambda p: int(load_checkpoint(p)["step"])):
        checkpoint = load_checkpoint(path)
        model, tokenizer = diffusion_from_checkpoint(checkpoint)
        captions = evaluation_prompts(args.sweep_prompts, "tier1", model.config.held_out_pairs)
        value = image_fidelity(captions, generate(model, tokenizer, captions, guidance_scale=3.0, seed=0).images)["all"]
        rows.append({"step": int(checkpoint["step"]), "minutes": float(checkpoint["seconds"]) / 60, "tier1": value})
        print(f"| {rows[-1]['step']} | {rows[-1]['minutes']:.1f} | {_pct(value, len(captions))} |")
    return {"prompts": args.sweep_prompts, "note": "EMA snapshots of the one shipped run (its schedule is the 2,400-step one)", "rows": rows}


def ablation(args) -> dict:
    shipped = load_checkpoint(CHECKPOINT)
    train = DiffusionTrainConfig(**{**shipped["train_config"], "steps": args.ablation_steps})
    config = DiffusionConfig(**{**shipped["config"], "conditioning": "none"})
    start = time.perf_counter()
    result = train_diffusion(config, train, progress=False)
    seconds = time.perf_counter() - start
    out = {"steps": args.ablation_steps, "train_seconds": seconds}
    for kind in ("tier1", "tier2"):
        captions = evaluation_prompts(args.sweep_prompts, kind, config.held_out_pairs)
        out[kind] = image_fidelity(captions, generate(result.model, result.tokenizer, captions, guidance_scale=1.0, seed=0).images)
    print("| attribute | one object, no cross-attention |\n|---|---|")
    for key, value in out["tier1"].items():
        print(f"| {key} | {_pct(value, args.sweep_prompts)} |")
    return out


SWAPS = {"colour": world.COLOURS, "shape": world.SHAPES, "size": ("small", "large")}


def _swap(caption: str, attribute: str, rng: np.random.Generator) -> str:
    words = caption.split()
    for i, word in enumerate(words):
        if word in SWAPS[attribute]:
            words[i] = str(rng.choice([w for w in SWAPS[attribute] if w != word]))
            return " ".join(words)
    raise ValueError(f"no {attribute} word in {caption!r}")


def _layout(scene) -> tuple:
    return tuple(sorted(obj.cell for obj in scene.objects))


def edits(args) -> dict:
    model, tokenizer = load_text_to_image()
    rng = np.random.default_rng(70_101)
    out = {"pairs": args.edit_pairs, "inject_steps": args.inject_steps, "rows": []}
    print("| scene | swapped | method | edit right (all attributes of the new caption) | layout kept | both |\n|---|---|---|---|---|---|")
    for kind in ("tier1", "tier2"):
        for attribute in ("colour", "shape", "size"):
            sources = evaluation_prompts(args.edit_pairs, kind, model.config.held_out_pairs, seed=int(rng.integers(1 << 30)))
            sources = [s for s in sources if any(w in SWAPS[attribute] for w in s.split())]
            if not sources:  # two-object captions name no sizes
                continue
            targets = [_swap(s, attribute, rng) for s in sources]
            source, plain, edited = prompt_to_prompt(model, tokenizer, sources, targets, args.inject_steps, guidance_scale=3.0, seed=3)
            layout = [_layout(s) for s in world.read_scenes(source.images)]
            for method, generation in (("same noise", plain), (f"same noise + maps for {args.inject_steps} of 20 steps", edited)):
                scenes = world.read_scenes(generation.images)
                right = [image_fidelity([t], g[None])["all"] == 1.0 for t, g in zip(targets, generation.images)]
                kept = [_layout(s) == l for s, l in zip(scenes, layout)]
                both = float(np.mean([r and k for r, k in zip(right, kept)]))
                row = {"kind": kind, "attribute": attribute, "method": method, "n": len(targets),
                       "right": float(np.mean(right)), "layout_kept": float(np.mean(kept)), "both": both}
                out["rows"].append(row)
                print(f"| {'one' if kind == 'tier1' else 'two'} object(s) | {attribute} | {method} | {_pct(row['right'], len(targets))} | "
                      f"{_pct(row['layout_kept'], len(targets))} | {_pct(both, len(targets))} |")
    return out


SECTIONS = {"fidelity": fidelity, "guidance": guidance, "steps": steps, "curve": curve, "ablation": ablation, "edits": edits}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("section", nargs="+", choices=[*SECTIONS, "all"])
    parser.add_argument("--again", action="store_true", help="measure a section even if its numbers are stored")
    parser.add_argument("--prompts", type=int, default=500, help="prompts per kind for `fidelity`")
    parser.add_argument("--sweep-prompts", type=int, default=100, help="prompts per point of the sweeps")
    parser.add_argument("--edit-pairs", type=int, default=150, help="caption pairs per swapped attribute")
    parser.add_argument("--inject-steps", type=int, default=5, help="steps (of 20) that use the source's maps")
    parser.add_argument("--ablation-steps", type=int, default=300)
    parser.add_argument("--snapshots", type=Path, nargs="*", default=[])
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    for name in (SECTIONS if "all" in args.section else args.section):
        if name == "curve" and not args.snapshots:
            continue
        if name in _load() and not args.again:
            print(f"{name}: stored in {RESULTS.name} (--again to measure again)")
            continue
        print(f"\n## {name}\n")
        _store(name, SECTIONS[name](args))


if __name__ == "__main__":
    main()
