"""The conditioning lab: every way text enters the miniature DALL-E, at equal parameters, equal
steps and identical batches, over 3 seeds, with an outside row (lucidrains' DALLE-pytorch 1.6.6).

Recipe (the same for every design; issue 13 section 2):

- Models: ``build_decoder(matched_config(design, REFERENCE))`` with ``REFERENCE =
  DecoderConfig(d_model=64)`` (4 heads, 4 text layers, 4 blocks: 506,560 weights); every design
  within +-10% of it (``matched_config`` changes depths only; ``--dry-run`` prints the counts).
  Designs: cross-attention (the course's decoder), joint, mmdit, adaln, single-stream; ``none``
  (no text) once, as the floor (one seed, lr 3e-3, no search).
- Training: 2,000 steps of batch 64, ``two_object_fraction=0.5``, ``DecoderTrainConfig``
  otherwise (AdamW betas 0.9/0.95, weight decay 0.01, 100 warm-up steps then cosine to lr/10,
  gradient clipping 1, caption dropout 0.1). The batch of step ``s`` depends on ``(seed, s)``
  only, so every design of one seed sees identical batches.
- Learning rate: chosen per design from ``LRS`` on seed 0, by the mean all-attribute fidelity
  over the three kinds of the VALIDATION prompts (200 per kind from ``VALIDATION_SEEDS``,
  70_001-70_003: not the test seeds 60_001-60_003 of ``evaluation_prompts``), guidance 1,
  sampling seed 0. Then seeds 1 and 2 at that rate (seed 0 at that rate is the lr-phase run).
- Test: every finished run is graded on 500 fresh prompts per kind (``evaluation_prompts``:
  tier1 = one object, held_out = the three held-out colour-shape pairs, tier2 = two objects
  and a relation) at guidance 1 and 1.5, each over sampling seeds 0, 1, 2 (the same prompts,
  other draws); the line keeps every attribute, per scale, averaged over sampling seeds, and the
  per-seed all-attribute scores.
- Steps to 80% on two objects: 200 validation two-object prompts are graded every 500 steps
  (guidance 1, sampling seed 0); the line keeps the curve and the first step at or above 80%
  (null if never) with the training seconds it took (the grading itself excluded).
- Outside row (``--phase outside``): DALLE-pytorch 1.6.6's ``DALLE`` (one causal stream over
  [caption ; image], rotary embeddings, token shift, its own loss that also predicts the
  caption, weight 7 on the image) at dim 64, 4 heads of 16 (the course's head split), depth 7
  (503,329 weights), fed the course's shipped tokenizer's ids as ``image`` through
  ``TokenIdsVAE``; caption dropout is the course's (the same dropped captions, as DALLE's own
  null caption: all padding), so batches, dropout, optimiser and schedule are identical. It is
  sampled with its own ``generate_images`` (KV cache, its default ``filter_thres=0.5`` top-k and
  gumbel sampling, ``cond_scale`` for guidance); the ids are decoded by the course tokenizer and
  graded by ``image_fidelity``. ``--setup-outside`` installs it (and einops,
  axial-positional-embedding, rotary-embedding-torch; no torchvision, taming or transformers:
  the two modules DALLE never uses, ``vae`` and ``distributed_utils``, are stubbed) into
  ``build/outside/`` from the package registry; nothing goes into the course's environment.

Results: one JSON line per finished run, appended (lock + flush + fsync) to
``crossmodal_edu/results/conditioning_lab_cpu.jsonl`` (package data: lesson 06 draws it, on Colab
too); a run whose id is already there is skipped,
so the benchmark can be spread over several sittings. ``--report`` prints the table (mean +- sd
over training seeds, with n) and draws ``benchmarks/results/conditioning_lab_cpu.png``;
``crossmodal_edu.dalle.lab_results.summarise(path)`` returns the same rows as dicts (lesson 06 draws them).

Cost on the 2-core development VM, one thread per run (the first run of the background job,
cross-attention at lr 1.5e-3, 2026-12-01): 633 s of training (0.317 s/step) and 71 s of test
sampling (9,000 images), ~12 minutes in all. DALLE-pytorch took 0.47 CPU s/step (1.4x; two runs on
the two cores, 2026-12-02), ~17 minutes a run; the single stream 0.7-0.9 (measured while three runs
shared the cores). The 26 course runs and the 5 outside runs took ~9 CPU hours; ``--phase all --workers 1`` goes design by design
(``ORDER``: each design's lr phase, then its seeds), so an interrupted job leaves whole designs.
On a GPU (the device is CUDA whenever one is present, with bf16 autocast), phase by phase:

    python benchmarks/conditioning_lab.py --phase all --workers 8 --out crossmodal_edu/results/conditioning_lab_h200.jsonl

    python benchmarks/conditioning_lab.py --dry-run                 # the runs, their ids, done or not
    python benchmarks/conditioning_lab.py --phase lr --designs joint,mmdit --workers 2
    python benchmarks/conditioning_lab.py --setup-outside && python benchmarks/conditioning_lab.py --phase outside
    python benchmarks/conditioning_lab.py --report
"""

from __future__ import annotations

import argparse
import fcntl
import json
import math
import multiprocessing as mp
import os
import subprocess
import sys
import time
import types
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from crossmodal_edu.dalle.lab_results import (FLOOR, FLOOR_LR, LRS, RESULTS, chosen_lr, read_lines,  # noqa: F401 (re-exported)
                                              mean_sd, plot_results, report_table, summarise)
from crossmodal_edu.dalle.lab_results import OUTSIDE as OUTSIDE_NAME
from crossmodal_edu.dalle.lab_results import TOKEN_SHIFT

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = RESULTS  # crossmodal_edu/results/conditioning_lab_cpu.jsonl: it ships with the package, lesson 06 draws it
OUTSIDE_DIR = ROOT / "build" / "outside"
OUTSIDE_VERSION = "1.6.6"
OUTSIDE_DEPS = ("einops", "axial-positional-embedding", "rotary-embedding-torch")

DESIGNS: tuple[str, ...] = ("cross-attention", "joint", "mmdit", "adaln", "single-stream",
                            "cross-attention" + TOKEN_SHIFT, "single-stream" + TOKEN_SHIFT)
"""The course's designs; a name ending in ``TOKEN_SHIFT`` is its design with token shift."""
SEEDS: tuple[int, ...] = (0, 1, 2)
KINDS: tuple[str, ...] = ("tier1", "held_out", "tier2")
VALIDATION_SEEDS: dict[str, int] = {"tier1": 70_001, "tier2": 70_002, "held_out": 70_003}
"""Seeds of the validation prompts (the lr choice and the 80% curve); the test prompts of
``evaluation_prompts`` use 60_001-60_003 and training scenes hash ``(seed, step)``."""
ORDER: tuple[str, ...] = ("cross-attention", "joint", OUTSIDE_NAME, "mmdit", "single-stream", "adaln",
                          "cross-attention" + TOKEN_SHIFT, "single-stream" + TOKEN_SHIFT)
"""Run order of ``--phase all`` (the floor ``none`` last): the course's decoder, the issue's rival, the outside row."""
OUTSIDE_DEPTH = 7  # DALLE-pytorch blocks at dim 64 and 4 x 16 heads: 503,329 weights (reference 506,560)


@dataclass(frozen=True)
class Settings:
    """How big each run and each evaluation is (the defaults are the benchmark; tests shrink them)."""

    steps: int = 2000  # optimiser steps per run
    batch_size: int = 64  # images per step
    two_object_fraction: float = 0.5  # share of each batch with two objects
    val_prompts: int = 200  # validation prompts per kind (lr choice)
    curve_prompts: int = 200  # validation two-object prompts graded every curve_every steps
    curve_every: int = 500  # steps between points of the two-object curve
    test_prompts: int = 500  # test prompts per kind
    sampling_seeds: tuple[int, ...] = (0, 1, 2)  # sampling seeds of the test evaluation
    scales: tuple[float, ...] = (1.0, 1.5)  # guidance scales of the test evaluation
    target: float = 0.8  # two-object all-attribute fidelity of "steps to 80%"


@dataclass(frozen=True)
class Run:
    """One training run: a design, a learning rate, a seed."""

    design: str
    lr: float
    seed: int
    steps: int

    @property
    def id(self) -> str:
        return f"{self.design}|lr={self.lr:g}|seed={self.seed}|steps={self.steps}"


# ----------------------------------------------------------------------------- the models


def reference_config():
    from crossmodal_edu.dalle.config import DecoderConfig

    return DecoderConfig(d_model=64)


def design_config(design: str):
    """The config of ``design`` at the reference's parameter count (the outside row: the reference).
    A name ending in ``TOKEN_SHIFT`` is its design with ``token_shift=True`` (no extra weights)."""
    from crossmodal_edu.dalle.designs import matched_config

    base = design.removesuffix(TOKEN_SHIFT)
    config = reference_config() if base == OUTSIDE_NAME else matched_config(base, reference_config())
    return replace(config, token_shift=True) if design.endswith(TOKEN_SHIFT) else config


def parameter_counts(designs: tuple[str, ...] = (*DESIGNS, FLOOR)) -> dict[str, int]:
    """Weights of each design's model (``parameter_count`` on the meta device)."""
    from crossmodal_edu.dalle.designs import parameter_count

    return {d: parameter_count(design_config(d)) for d in designs}


def check_equal_size(counts: dict[str, int], tolerance: float = 0.10) -> None:
    """Raise ``ValueError`` naming the designs whose count is more than ``tolerance`` off the reference."""
    from crossmodal_edu.dalle.designs import parameter_count

    target = parameter_count(reference_config())
    off = {d: n for d, n in counts.items() if abs(n - target) > tolerance * target}
    if off:
        raise ValueError(f"designs not within {tolerance:.0%} of the reference's {target:,} weights: {off}")


def _load_dalle_module():
    """``dalle_pytorch.dalle_pytorch`` from the wheel unpacked in ``build/outside``, with stubs for
    its ``vae`` (taming, transformers) and ``distributed_utils`` (deepspeed, horovod) modules,
    which ``DALLE`` only touches for raw images and DeepSpeed."""
    import importlib.util

    import torch

    package_dir = OUTSIDE_DIR / "whl" / "dalle_pytorch"
    if not (package_dir / "dalle_pytorch.py").is_file():
        raise FileNotFoundError(f"no DALLE-pytorch in {package_dir}: run `python benchmarks/conditioning_lab.py --setup-outside`")
    if "dalle_pytorch.dalle_pytorch" in sys.modules:
        return sys.modules["dalle_pytorch.dalle_pytorch"]
    sys.path.insert(0, str(OUTSIDE_DIR / "site"))
    package = types.ModuleType("dalle_pytorch")
    package.__path__ = [str(package_dir)]
    vae = types.ModuleType("dalle_pytorch.vae")
    vae.OpenAIDiscreteVAE = type("OpenAIDiscreteVAE", (torch.nn.Module,), {})
    vae.VQGanVAE = type("VQGanVAE", (torch.nn.Module,), {})
    distributed = types.ModuleType("dalle_pytorch.distributed_utils")
    distributed.is_distributed = False
    sys.modules.update({"dalle_pytorch": package, "dalle_pytorch.vae": vae, "dalle_pytorch.distributed_utils": distributed})
    spec = importlib.util.spec_from_file_location("dalle_pytorch.dalle_pytorch", package_dir / "dalle_pytorch.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def outside_available() -> bool:
    """True if ``--setup-outside`` has run and DALLE-pytorch imports."""
    try:
        _load_dalle_module()
    except Exception:  # noqa: BLE001 -- any failure means: no outside row here
        return False
    return True


def setup_outside() -> None:
    """Download DALLE-pytorch 1.6.6 (no dependencies) and the three packages its ``DALLE`` class
    imports into ``build/outside`` (gitignored) with this interpreter's pip."""
    OUTSIDE_DIR.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip"]
    subprocess.run([*pip, "download", f"{OUTSIDE_NAME}=={OUTSIDE_VERSION}", "--no-deps", "-d", str(OUTSIDE_DIR)], check=True)
    wheel = next(OUTSIDE_DIR.glob(f"dalle_pytorch-{OUTSIDE_VERSION}-*.whl"))
    import zipfile

    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(OUTSIDE_DIR / "whl")
    subprocess.run([*pip, "install", "--no-deps", "--target", str(OUTSIDE_DIR / "site"), *OUTSIDE_DEPS], check=True)
    print(f"DALLE-pytorch {OUTSIDE_VERSION} in {OUTSIDE_DIR}: imports = {outside_available()}")


def build_outside(config, **dalle_kwargs):
    """DALLE-pytorch's ``DALLE`` wrapped as a course decoder (``.config``, ``.loss``);
    ``dalle_kwargs`` override ``DALLE``'s own defaults (``benchmarks/outside_ablation.py``)."""
    import torch

    dalle_module = _load_dalle_module()

    class TokenIdsVAE(sys.modules["dalle_pytorch.vae"].OpenAIDiscreteVAE):  # DALLE accepts only its VAE classes
        """What ``DALLE`` reads of a VAE, for images that are already token ids: an 8 x 8 grid
        (image_size 32 / 2**num_layers) of codebook_size codes. ``decode`` returns the ids."""

        def __init__(self) -> None:
            super().__init__()
            self.num_tokens, self.image_size, self.num_layers, self.channels = config.codebook_size, 32, 2, 3

        def decode(self, image_tokens: torch.Tensor) -> torch.Tensor:
            return image_tokens

    class OutsideDecoder(torch.nn.Module):
        """``DALLE`` with the course's interface: ``loss(image_tokens, text_tokens, context_mask)``.
        The course's null caption (``[null_id, pad, ...]``) becomes DALLE's (all padding, id 0)."""

        supports_kv_cache = False  # the course's sampler cannot drive it: DALLE samples itself

        def __init__(self) -> None:
            super().__init__()
            self.config = config
            self.dalle = dalle_module.DALLE(
                dim=config.d_model, vae=TokenIdsVAE(), num_text_tokens=config.vocab_size,
                text_seq_len=config.max_text_len, depth=OUTSIDE_DEPTH, heads=config.num_heads,
                dim_head=config.d_model // config.num_heads, **dalle_kwargs,
            )

        def dalle_text(self, text_tokens: torch.Tensor) -> torch.Tensor:
            null = text_tokens[:, 0] == config.null_id  # (B,)
            return torch.where(null[:, None], torch.zeros_like(text_tokens), text_tokens)  # (B, L), a new tensor

        def loss(self, image_tokens: torch.Tensor, text_tokens: torch.Tensor, context_mask: torch.Tensor) -> torch.Tensor:
            return self.dalle(self.dalle_text(text_tokens), image_tokens, return_loss=True)

    return OutsideDecoder()


def build_model(design: str, **dalle_kwargs):
    from crossmodal_edu.dalle.decoder import build_decoder

    config = design_config(design)
    if dalle_kwargs and design != OUTSIDE_NAME:
        raise ValueError(f"DALLE options {sorted(dalle_kwargs)} given for the course design {design!r}")
    return build_outside(config, **dalle_kwargs) if design == OUTSIDE_NAME else build_decoder(config)


# ----------------------------------------------------------------------------- sampling and grading


SAMPLERS: tuple[str, ...] = ("own", "full", "dalle-top-k")
"""How a test image's tokens are drawn: ``own`` is each model's default (the course: the full
softmax; DALLE-pytorch: its top-k), ``full`` the full softmax for both, ``dalle-top-k`` DALLE's
``top_k(thres=0.5)`` for both: the best half of its 289 logits (256 image codes + 33 text
tokens, masked at image positions), i.e. the 144 likeliest of the 256 codes."""


def dalle_top_k(config) -> int:
    """How many codes DALLE-pytorch's default ``top_k(thres=0.5)`` keeps at an image position."""
    return max(int(0.5 * (config.codebook_size + config.vocab_size + config.max_text_len)), 1)


def sample_images(model, tokenizer, captions: list[str], seed: int, scale: float, batch_size: int = 250, sampler: str = "own"):
    """One image ``(B, 32, 32, 3)`` per caption: the course's ``generate`` (KV cache), or for the
    outside row DALLE's own ``generate_images`` (KV cache, global RNG seeded by ``seed``); ``sampler``
    is one of ``SAMPLERS``."""
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    import numpy as np
    import torch

    if not hasattr(model, "dalle"):
        from crossmodal_edu.dalle.sampling import generate

        top_k = dalle_top_k(model.config) if sampler == "dalle-top-k" else None
        return generate(model, tokenizer, captions, guidance_scale=scale, seed=seed, batch_size=batch_size, top_k=top_k).images
    from crossmodal_edu import world
    from crossmodal_edu.dalle.tokenizer import tensor_to_images

    model.eval()
    device = next(model.parameters()).device
    text_tokens, _ = world.Vocab().encode_batch(list(captions), max_len=model.config.max_text_len)
    text_tokens = torch.from_numpy(text_tokens).to(device)
    torch.manual_seed(seed)
    images = []
    for start in range(0, len(captions), batch_size):
        ids = dalle_generate(model.dalle, text_tokens[start:start + batch_size], scale, 0.0 if sampler == "full" else 0.5)  # (b, N)
        images.append(tensor_to_images(tokenizer.decode(ids.to(next(tokenizer.parameters()).device))))
    return np.concatenate(images)


def dalle_generate(dalle, text_tokens, scale: float = 1.0, filter_thres: float = 0.5):
    """DALLE-pytorch's ``generate_images`` over token ids (its top-k ``filter_thres=0.5``, gumbel
    sampling, the global RNG), with one KV cache for the caption and one for the null caption.
    ``filter_thres=0`` keeps every logit: the full softmax.

    Its own ``generate_images(use_cache=True)`` gives the null caption a copy of the caption's
    cache at every step (``forward_with_cond_scale``), so with ``cond_scale != 1`` the null
    branch attends to the caption's keys and values: not classifier-free guidance. This loop
    keeps the two caches apart; at ``scale=1`` it draws exactly what ``generate_images`` draws,
    and at other scales what its uncached ``generate_images`` draws (up to float rounding).
    """
    import torch

    dalle_module = sys.modules["dalle_pytorch.dalle_pytorch"]
    was_training = dalle.training
    dalle.eval()
    image = text_tokens.new_zeros(len(text_tokens), 0)  # (B, t), grows to image_seq_len
    caches = ({}, {})
    with torch.no_grad():
        for _ in range(dalle.image_seq_len):
            logits = dalle(text_tokens.clone(), image, cache=caches[0])[:, -1]  # (B, total_tokens)
            if scale != 1.0:  # null_cond_prob=1: the caption all padding, drawing from the RNG as generate_images does
                null = dalle(text_tokens.clone(), image, null_cond_prob=1.0, cache=caches[1])[:, -1]  # (B, total_tokens)
                logits = null + (logits - null) * scale
            sample = dalle_module.gumbel_sample(dalle_module.top_k(logits, thres=filter_thres), temperature=1.0, dim=-1)  # (B,)
            image = torch.cat([image, (sample - dalle.num_text_tokens)[:, None]], dim=1)
    dalle.train(was_training)
    return image  # (B, N) ids of the tokenizer's codebook


def fidelity(model, tokenizer, captions: list[str], seed: int = 0, scale: float = 1.0, sampler: str = "own") -> dict[str, float]:
    """``image_fidelity`` of one image per caption: fraction right per attribute."""
    from crossmodal_edu.world.fidelity import image_fidelity

    return image_fidelity(captions, sample_images(model, tokenizer, captions, seed, scale, sampler=sampler))


def prompts(kind: str, n: int, seed: int | None, config) -> list[str]:
    from crossmodal_edu.dalle.evaluate import evaluation_prompts

    return evaluation_prompts(n, kind, config.held_out_pairs, seed=seed)


def grade_test(model, tokenizer, settings: Settings = Settings(), sampler: str = "own") -> dict[str, Any]:
    """The lab's test of a trained model: per guidance scale ``"g1"``, ``"g1.5"``, each attribute's
    fidelity on ``settings.test_prompts`` test prompts per kind, averaged over the sampling seeds, and
    ``"per_sampling_seed"`` (the ``_all`` and ``_relation`` values of each seed)."""
    grades: dict[str, Any] = {}
    for scale in settings.scales:
        per_seed: dict[str, list[float]] = {}
        for kind in KINDS:
            captions = prompts(kind, settings.test_prompts, None, model.config)
            for seed in settings.sampling_seeds:
                for key, value in fidelity(model, tokenizer, captions, seed, scale, sampler).items():
                    per_seed.setdefault(f"{kind}_{key}", []).append(value)
        grades[f"g{scale:g}"] = {
            **{key: sum(values) / len(values) for key, values in per_seed.items()},
            "per_sampling_seed": {key: values for key, values in per_seed.items() if key.endswith(("_all", "_relation"))},
        }
    return grades


def validation_score(metrics: dict[str, float]) -> float:
    """The lr choice's criterion: mean all-attribute fidelity over the kinds."""
    return sum(metrics[f"{kind}_all"] for kind in KINDS) / len(KINDS)


# ----------------------------------------------------------------------------- one run


def train_and_grade(run: Run, settings: Settings = Settings(), dalle_kwargs: dict[str, Any] | None = None,
                    samplers: tuple[str, ...] = ("own",)) -> dict[str, Any]:
    """Train ``run`` with the benchmark's recipe, grade it (validation, curve, test), return its line.

    ``dalle_kwargs`` (outside row only) override DALLE's defaults; the test is graded with each of
    ``samplers`` (``line["test"]`` with the first, ``line["test_by_sampler"]`` with every one when
    there is more than one). The lab itself uses the defaults."""
    import torch

    torch.set_num_threads(1)
    from crossmodal_edu.dalle.train import load_tokenizer, seed_everything
    from crossmodal_edu.dalle.train_decoder import DecoderTrainConfig, train_decoder
    from crossmodal_edu.device import get_device

    seed_everything(run.seed)  # the weights' initialisation, as train_decoder does before build_decoder
    model = build_model(run.design, **(dalle_kwargs or {}))
    config = model.config
    tokenizer = load_tokenizer()
    train = DecoderTrainConfig(
        steps=run.steps, batch_size=settings.batch_size, two_object_fraction=settings.two_object_fraction,
        lr=run.lr, seed=run.seed, warmup_steps=min(100, max(1, run.steps // 20)),
    )
    curve_captions = prompts("tier2", settings.curve_prompts, VALIDATION_SEEDS["tier2"], config)
    clock = {"eval": 0.0, "cpu_eval": 0.0, "start": time.perf_counter(), "cpu_start": time.process_time()}
    curve: list[dict[str, float]] = []

    def curve_point(step: int) -> None:
        wall, cpu = time.perf_counter(), time.process_time()
        train_s = wall - clock["start"] - clock["eval"]
        train_cpu_s = cpu - clock["cpu_start"] - clock["cpu_eval"]
        score = fidelity(model, tokenizer, curve_captions, 0, 1.0)["all"]
        model.train()
        curve.append({"step": step, "train_s": round(train_s, 2), "cpu_s": round(train_cpu_s, 2), "tier2_all": score})
        clock["eval"] += time.perf_counter() - wall
        clock["cpu_eval"] += time.process_time() - cpu

    def on_step(step: int) -> None:
        if step > 0 and step % settings.curve_every == 0:
            curve_point(step)

    result = train_decoder(train=train, tokenizer=tokenizer, progress=False, on_step=on_step, model=model)
    curve_point(run.steps)
    train_s = curve[-1]["train_s"]
    reached = next((p for p in curve if p["tier2_all"] >= settings.target), None)
    tail = result.history["loss"][-50:]
    line: dict[str, Any] = {
        "id": run.id, **asdict(run), "device": str(get_device(None)), "torch": torch.__version__,
        "params": sum(p.numel() for p in model.parameters()),
        "depths": {"text_layers": config.text_layers, "layers": OUTSIDE_DEPTH if run.design == OUTSIDE_NAME else config.layers},
        "train_s": train_s, "train_cpu_s": curve[-1]["cpu_s"], "s_per_step": round(train_s / run.steps, 4),
        "loss": round(sum(tail) / len(tail), 4), "curve": curve,
        "steps_to_target": reached and reached["step"], "train_s_to_target": reached and reached["train_s"],
        "cpu_s_to_target": reached and reached["cpu_s"], "target": settings.target,
    }
    start = time.perf_counter()
    validation: dict[str, float] = {}
    for kind in KINDS:
        for key, value in fidelity(model, tokenizer, prompts(kind, settings.val_prompts, VALIDATION_SEEDS[kind], config)).items():
            validation[f"{kind}_{key}"] = value
    line["validation"] = {**validation, "score": validation_score(validation), "n": settings.val_prompts}
    by_sampler = {sampler: grade_test(model, tokenizer, settings, sampler) for sampler in samplers}
    line["test"] = by_sampler[samplers[0]]
    if len(samplers) > 1:
        line["test_by_sampler"] = by_sampler
    if dalle_kwargs:
        line["dalle_kwargs"] = dict(dalle_kwargs)
    line["test_settings"] = {"n": settings.test_prompts, "sampling_seeds": list(settings.sampling_seeds), "scales": list(settings.scales)}
    line["eval_s"] = round(time.perf_counter() - start, 1)
    line["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return line


# ----------------------------------------------------------------------------- the results file


def done_ids(path: str | Path) -> set[str]:
    return {line["id"] for line in read_lines(path)}


def append_line(path: str | Path, line: dict[str, Any]) -> None:
    """Append one JSON line under an exclusive lock, flushed and fsynced: a line is there whole or not at all."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as file:
        fcntl.flock(file, fcntl.LOCK_EX)
        try:
            file.write(json.dumps(line) + "\n")
            file.flush()
            os.fsync(file.fileno())
        finally:
            fcntl.flock(file, fcntl.LOCK_UN)


def plan(phase: str, designs: tuple[str, ...], steps: int, lines: list[dict[str, Any]]) -> tuple[list[Run], list[str]]:
    """The runs of ``phase`` (``lr`` or ``seeds``) for ``designs``, and notes on runs that must wait."""
    runs, waiting = [], []
    for design in designs:
        if phase == "lr":
            runs += [Run(design, FLOOR_LR, 0, steps)] if design == FLOOR else [Run(design, lr, 0, steps) for lr in LRS]
        elif design != FLOOR:
            lr = chosen_lr(lines, design, steps)
            if lr is None:
                waiting.append(f"{design}: seeds {list(SEEDS)} wait for its lr phase")
            else:
                runs += [Run(design, lr, seed, steps) for seed in SEEDS]
    return runs, waiting


def _worker(args: tuple[Run, Settings]) -> dict[str, Any]:
    """``train_and_grade``, or ``{"id", "error"}`` if it failed (a long job goes on to the next run)."""
    import traceback

    try:
        return train_and_grade(*args)
    except Exception:  # noqa: BLE001 -- reported, not written, and the run stays to do
        return {"id": args[0].id, "error": traceback.format_exc()}


def execute(runs: list[Run], out: str | Path, workers: int = 1, settings: Settings = Settings()) -> list[dict[str, Any]]:
    """Train and grade the runs not yet in ``out``, appending each line as it finishes."""
    done = done_ids(out)
    todo = [run for run in runs if run.id not in done]
    for run in runs:
        if run.id in done:
            print(f"skip (done): {run.id}", flush=True)
    finished = []
    if not todo:
        return finished
    if workers <= 1:
        results = (_worker((run, settings)) for run in todo)
        pool = None
    else:
        pool = mp.get_context("spawn").Pool(workers)
        results = pool.imap_unordered(_worker, [(run, settings) for run in todo])
    try:
        for line in results:
            if "error" in line:
                print(f"FAILED {line['id']} (not written; it stays to do):\n{line['error']}", flush=True)
                continue
            append_line(out, line)
            finished.append(line)
            g1 = line["test"].get("g1", {})
            print(f"done {line['id']}: {line['train_s']:.0f} s ({line['s_per_step']:.3f} s/step), val {line['validation']['score']:.3f}, "
                  f"test g1 tier1 {g1.get('tier1_all', float('nan')):.3f} held-out {g1.get('held_out_all', float('nan')):.3f} "
                  f"tier2 {g1.get('tier2_all', float('nan')):.3f}, eval {line['eval_s']:.0f} s", flush=True)
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    return finished


# ----------------------------------------------------------------------------- the report

# ----------------------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--phase", choices=("lr", "seeds", "outside", "all"), default="all")
    parser.add_argument("--designs", default=None, help=f"comma-separated, of {', '.join((*DESIGNS, FLOOR, OUTSIDE_NAME))}")
    parser.add_argument("--steps", type=int, default=Settings.steps)
    parser.add_argument("--workers", type=int, default=1, help="parallel processes, one thread each")
    parser.add_argument("--out", default=str(DEFAULT_OUT))
    parser.add_argument("--dry-run", action="store_true", help="list the runs, their ids and whether they are done")
    parser.add_argument("--report", action="store_true", help="print the table and draw benchmarks/results/<out>.png")
    parser.add_argument("--setup-outside", action="store_true", help=f"install DALLE-pytorch {OUTSIDE_VERSION} into build/outside")
    args = parser.parse_args(argv)
    if args.setup_outside:
        setup_outside()
        return
    if args.report:
        rows = summarise(args.out)
        print(report_table(rows))
        if rows:
            png = ROOT / "benchmarks" / "results" / Path(args.out).with_suffix(".png").name
            plot_results(rows).savefig(png, dpi=120)
            print(f"chart: {png}")
        return
    known = (*DESIGNS, FLOOR, OUTSIDE_NAME)
    chosen = tuple(args.designs.split(",")) if args.designs else None
    if chosen and set(chosen) - set(known):
        parser.error(f"unknown designs {sorted(set(chosen) - set(known))}: expected some of {known}")
    counts = parameter_counts()
    if outside_available():
        counts[OUTSIDE_NAME] = sum(p.numel() for p in build_model(OUTSIDE_NAME).parameters())
    check_equal_size(counts)
    print("parameters:", ", ".join(f"{d} {n:,}" for d, n in counts.items()), flush=True)
    settings = replace(Settings(), steps=args.steps)
    everything = (*ORDER, FLOOR)
    if args.phase == "outside":
        stages = [("lr", (OUTSIDE_NAME,)), ("seeds", (OUTSIDE_NAME,))]
    elif args.phase in ("lr", "seeds"):
        stages = [(args.phase, tuple(d for d in everything if d != OUTSIDE_NAME))]
    elif args.workers > 1 or args.dry_run:  # phase by phase, so that a pool has many runs at once
        stages = [("lr", everything), ("seeds", everything)]
    else:  # one design after another (its lr phase, then its seeds): an interrupted job leaves whole designs
        stages = [(phase, (design,)) for design in everything for phase in ("lr", "seeds")]
    for phase, designs in stages:
        designs = tuple(d for d in designs if chosen is None or d in chosen)
        if OUTSIDE_NAME in designs and not args.dry_run and not outside_available():
            print("outside row skipped: DALLE-pytorch does not import (run --setup-outside)", flush=True)
            designs = tuple(d for d in designs if d != OUTSIDE_NAME)
        if not designs:
            continue
        runs, waiting = plan(phase, designs, args.steps, read_lines(args.out))
        if args.dry_run:
            done = done_ids(args.out)
            print(f"phase {phase}:")
            for run in runs:
                print(f"  {'done' if run.id in done else 'todo'}  {run.id}")
            for note in waiting:
                print(f"  wait  {note}")
            continue
        print(f"phase {phase} ({', '.join(designs)}): {len(runs)} runs" + (f"; {'; '.join(waiting)}" if waiting else ""), flush=True)
        execute(runs, args.out, args.workers, settings)

if __name__ == "__main__":
    main()
