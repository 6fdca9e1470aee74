"""PyTorch's fused attention kernels, each forced in turn: time, peak memory, and the masks it accepts.

    python benchmarks/sdpa_backends.py --out sdpa.md --json crossmodal_edu/results/sdpa_backends_gpu.json   # GPU, < 2 min
    python benchmarks/sdpa_backends.py --quick                                                  # CPU, seconds

Self-attention-shaped q, k, v of shape (B, num_heads, L, head_dim) -- on a GPU B = 2, 16 heads,
head_dim 64, bfloat16, L in 1024 ... 16384 -- go through ``F.scaled_dot_product_attention`` with one
backend forced by ``torch.nn.attention.sdpa_kernel([SDPBackend.X])``: FLASH_ATTENTION,
EFFICIENT_ATTENTION (memory-efficient), CUDNN_ATTENTION and MATH (the unfused reference, which
stores the (L, L) scores). For each: median time of the forward and of forward+backward (CUDA
events, after warm-up), TFLOP/s of forward+backward, and peak memory of one forward+backward
(``torch.cuda.max_memory_allocated`` after a reset, minus what was allocated before: the inputs are
excluded). "n/a" means the backend refused the case, or ran out of memory; MATH is skipped where
its scores alone would pass ``--math-limit-gb``.

FLOPs: forward 4 B H L^2 head_dim (Q K^T and weights V, a multiply-add counted as 2); forward+backward
counts 3x that, as benchmarks/cross_attention_speed.py does (the flash kernels' recomputation of
Q K^T in the backward is not counted).

Then, at L = 1024, which backends accept (a) no mask, (b) a boolean padding mask (B, 1, 1, L),
(c) ``is_causal=True``, (d) a float additive padding mask (0 / -inf) of the same shape, forward
and backward: "ok" (output and gradients equal to MATH in float32 within 5% of each tensor's largest
entry: bfloat16 rounding), "refused" (with the reason PyTorch gives), or "wrong" if it ran but disagreed.

``--json PATH`` writes every number for notebooks/A2_attention_kernels_on_a_gpu.ipynb, which plots
them when it runs without a GPU. On a CPU (``--quick`` or not) the sizes shrink and dtype is float32;
peak memory is not measured there.
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import re
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

try:
    from torch.nn.attention import SDPBackend, sdpa_kernel
except ImportError:  # torch < 2.3: no per-call backend choice
    sys.exit("torch.nn.attention.sdpa_kernel needs PyTorch 2.3 or newer; this is " + torch.__version__)

BACKENDS = ["FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION", "MATH"]
MASKS = {
    "none": "no mask",
    "bool_padding": "boolean padding mask",
    "causal": "is_causal=True",
    "float_additive": "float additive mask",
}
MiB = 2**20


def short_reason(caught: list, error: Exception | None) -> str:
    """Why PyTorch refused: its warnings name the reason ("Flash attention does not support ..."),
    after a generic "... kernel not used because:" line; the error itself only says "No available kernel"."""
    lines = []
    for w in caught:
        for line in str(w.message).strip().splitlines():
            line = re.sub(r"\s*\(Triggered internally at .*", "", line).strip()
            if line and not line.endswith("because:") and "runtime disabled" not in line and line not in lines:
                lines.append(line)
    if not lines and error is not None:
        lines = [str(error).strip().splitlines()[0]]
    return "; ".join(lines)[:240]


def attempt(fn, device: str):
    """Run fn(); return (result, status, reason) with status "ok", "refused" or "oom"."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            return fn(), "ok", ""
        except torch.cuda.OutOfMemoryError as error:
            result = (None, "oom", short_reason([], error))
        except RuntimeError as error:
            result = (None, "refused", short_reason(caught, error))
    if device == "cuda":
        torch.cuda.empty_cache()
    return result


class Clock:
    def __init__(self, device: str, quick: bool):
        self.device = device
        self.target_s = 0.05 if quick else 0.15  # measured time per case, after warm-up
        self.min_reps, self.max_reps = 3, 30

    def sync(self):
        if self.device == "cuda":
            torch.cuda.synchronize()

    def once_ms(self, fn) -> float:
        if self.device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end)
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e3

    def median_ms(self, fn) -> float:
        first = self.once_ms(fn)  # warm-up: kernel selection, workspace allocation
        self.once_ms(fn)
        reps = int(min(self.max_reps, max(self.min_reps, self.target_s * 1e3 / max(first, 1e-3))))
        return statistics.median(self.once_ms(fn) for _ in range(reps))


def make_inputs(B, H, L, D, device, dtype, seed=0):
    g = torch.Generator(device=device).manual_seed(seed)
    q, k, v = (torch.randn(B, H, L, D, device=device, dtype=dtype, generator=g).requires_grad_(True)
               for _ in range(3))
    grad_out = torch.randn(B, H, L, D, device=device, dtype=dtype, generator=g)
    return q, k, v, grad_out


def sdpa(backend: str, q, k, v, **kwargs):
    with sdpa_kernel([getattr(SDPBackend, backend)]):
        return F.scaled_dot_product_attention(q, k, v, **kwargs)


def measure(backend, B, H, L, D, device, dtype, clock) -> dict:
    q, k, v, grad_out = make_inputs(B, H, L, D, device, dtype)

    def forward():
        with torch.no_grad():
            return sdpa(backend, q, k, v)

    def forward_backward():
        out = sdpa(backend, q, k, v)
        return torch.autograd.grad(out, (q, k, v), grad_out)

    row = {"backend": backend, "seq_len": L}
    _, status, reason = attempt(lambda: (forward_backward(), clock.sync())[1], device)  # drop the gradients
    if status != "ok":
        return {**row, "status": status, "reason": reason}
    peak = None
    if device == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        forward_backward()
        torch.cuda.synchronize()
        peak = (torch.cuda.max_memory_allocated() - base) / MiB
    fwd_ms, s1, r1 = attempt(lambda: clock.median_ms(forward), device)
    fb_ms, s2, r2 = attempt(lambda: clock.median_ms(forward_backward), device)
    flops = 3 * 4 * B * H * L * L * D
    return {**row, "status": "ok" if s2 == "ok" else s2, "reason": r1 or r2,
            "fwd_ms": fwd_ms, "fwd_bwd_ms": fb_ms,
            "fwd_bwd_tflops": None if fb_ms is None else flops / (fb_ms * 1e-3) / 1e12,
            "peak_mib": peak}


def mask_acceptance(B, H, L, D, device, dtype) -> dict:
    q, k, v, grad_out = make_inputs(B, H, L, D, device, dtype, seed=1)
    lengths = torch.tensor([L, L // 2], device=device)[:B]
    keep = (torch.arange(L, device=device) < lengths[:, None])[:, None, None, :]  # (B, 1, 1, L)
    additive = torch.zeros(keep.shape, device=device, dtype=dtype).masked_fill(~keep, float("-inf"))
    cases = {"none": {}, "bool_padding": {"attn_mask": keep}, "causal": {"is_causal": True},
             "float_additive": {"attn_mask": additive}}
    result = {}
    for mask_name, kwargs in cases.items():
        q32, k32, v32 = (t.detach().float().requires_grad_(True) for t in (q, k, v))
        # A float mask must be bool, float32 or the query's dtype: give the float32 reference a float32 one.
        kwargs32 = {key: val.float() if torch.is_tensor(val) and val.is_floating_point() else val
                    for key, val in kwargs.items()}
        ref = sdpa("MATH", q32, k32, v32, **kwargs32)
        ref_grads = torch.autograd.grad(ref, (q32, k32, v32), grad_out.float())
        for backend in BACKENDS:
            def run():
                out = sdpa(backend, q, k, v, **kwargs)
                return out, torch.autograd.grad(out, (q, k, v), grad_out)
            got, status, reason = attempt(run, device)
            if status == "ok":
                out, grads = got
                # bf16 keeps ~3 digits: rounding stays near 1e-2 of each tensor's scale, a wrong mask near 1.
                diff = max(((a.float() - b).abs().max() / b.abs().max()).item()
                           for a, b in zip((out, *grads), (ref, *ref_grads)))
                if not diff < 5e-2:
                    status, reason = "wrong", f"differs from MATH in float32 by {diff:.2g} of its largest entry"
            result.setdefault(backend, {})[mask_name] = {"status": status, "reason": reason}
    return result


def md_table(header, rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(map(str, r)) + " |" for r in rows])


def fmt(x, digits=2) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def render(data: dict) -> str:
    lengths = sorted({r["seq_len"] for r in data["timings"]})
    by = {(r["backend"], r["seq_len"]): r for r in data["timings"]}
    s = data["shape"]
    lines = [
        f"# SDPA backends, each forced with `sdpa_kernel`: {data['device']}, {data['date']}",
        "",
        f"- torch {data['torch']}, CUDA {data['cuda']}, cuDNN {data['cudnn']}, dtype {data['dtype']}; "
        f"q, k, v of shape (B={s['batch']}, heads={s['num_heads']}, L, head_dim={s['head_dim']}), no mask",
        f"- {data['direction']}; median of CUDA-event timings after warm-up (wall time on a CPU); "
        "peak = max_memory_allocated during one forward+backward, inputs excluded",
        f"- MATH skipped where its float32 scores and their gradients would pass {data['math_limit_gb']} GB",
        "",
    ]
    for title, key, digits in (("forward+backward ms", "fwd_bwd_ms", 2), ("forward ms", "fwd_ms", 2),
                               ("forward+backward TFLOP/s", "fwd_bwd_tflops", 1 if data["cuda"] else 3),
                               ("peak MiB, forward+backward", "peak_mib", 0)):
        rows = []
        for b in data["backends"]:
            cells = []
            for L in lengths:
                r = by.get((b, L), {"status": "n/a"})
                cells.append(fmt(r.get(key), digits) if r["status"] == "ok" else r["status"])
            rows.append([b] + cells)
        lines += [f"## {title}", "", md_table(["backend"] + [f"L={L}" for L in lengths], rows), ""]
    rows, reasons = [], {}
    for b in data["backends"]:
        cells = []
        for m in MASKS:
            entry = data["masks"].get(b, {}).get(m, {"status": "n/a", "reason": ""})
            cell = entry["status"]
            if entry["status"] != "ok" and entry["reason"]:
                number = reasons.setdefault(entry["reason"], len(reasons) + 1)
                cell += f" [{number}]"
            cells.append(cell)
        rows.append([b] + cells)
    lines += [f"## Masks accepted (forward+backward at L={data['mask_seq_len']})", "",
              md_table(["backend"] + list(MASKS.values()), rows), ""]
    lines += [f"[{n}] {text}" for text, n in reasons.items()]
    lines += ["", f"(total {data['total_s']:.0f} s, including CUDA start-up)"]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    started = time.perf_counter()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (for a CPU smoke test)")
    parser.add_argument("--lengths", help="comma-separated sequence lengths (default: 1024..16384 on a GPU)")
    parser.add_argument("--batch", type=int, default=None, help="B (default 2 on a GPU, 1 on a CPU)")
    parser.add_argument("--heads", type=int, default=None, help="num_heads (default 16 on a GPU, 4 on a CPU)")
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--math-limit-gb", type=float, default=40.0)
    parser.add_argument("--out", type=Path, help="also write the markdown here")
    parser.add_argument("--json", type=Path, help="also write every number here, as JSON")
    args = parser.parse_args(argv)
    device = args.device
    gpu = device == "cuda"
    dtype = torch.bfloat16 if gpu else torch.float32
    B = args.batch or (2 if gpu else 1)
    H = args.heads or (16 if gpu else (2 if args.quick else 4))
    D = args.head_dim
    if args.lengths:
        lengths = [int(x) for x in args.lengths.split(",")]
    else:
        lengths = [1024, 2048, 4096, 8192, 16384] if gpu else ([128, 256] if args.quick else [512, 1024, 2048])
    mask_L = 1024 if gpu else 128
    clock = Clock(device, args.quick)
    torch.manual_seed(0)
    if gpu:
        torch.cuda.init()

    timings = []
    for L in lengths:
        for backend in BACKENDS:
            # MATH stores (B, H, L, L) float32 scores, their softmax and two gradients: ~16 bytes each.
            math_bytes = 16 * B * H * L * L
            if backend == "MATH" and math_bytes > args.math_limit_gb * 1e9:
                timings.append({"backend": backend, "seq_len": L, "status": "skipped",
                                "reason": f"~{math_bytes / 1e9:.0f} GB > --math-limit-gb {args.math_limit_gb:g}"})
                continue
            row = measure(backend, B, H, L, D, device, dtype, clock)
            timings.append(row)
            print(f"L={L:6d} {backend:20s} {row['status']:8s} fwd+bwd {fmt(row.get('fwd_bwd_ms'))} ms  "
                  f"peak {fmt(row.get('peak_mib'), 0)} MiB  {row.get('reason', '')[:80]}", flush=True)
    masks = mask_acceptance(B, H, mask_L, D, device, dtype)

    data = {
        "measured": True,
        "device": torch.cuda.get_device_name(0) if gpu else f"CPU ({platform.processor() or platform.machine()})",
        "date": datetime.date.today().isoformat(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda if gpu else None,
        "cudnn": torch.backends.cudnn.version() if gpu else None,
        "dtype": str(dtype).replace("torch.", ""),
        "shape": {"batch": B, "num_heads": H, "head_dim": D},
        "direction": "forward and forward+backward",
        "flops_fwd_bwd": "3 x 4 B H L^2 head_dim",
        "math_limit_gb": args.math_limit_gb,
        "backends": BACKENDS,
        "timings": timings,
        "mask_seq_len": mask_L,
        "masks": masks,
        "command": "python benchmarks/sdpa_backends.py " + " ".join(sys.argv[1:] if argv is None else argv),
    }
    data["total_s"] = time.perf_counter() - started
    text = render(data)
    print("\n" + text, flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        print(f"wrote {args.out}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(data, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
