"""How fast is crossmodal_edu's MultiHeadCrossAttention? One run prints every table.

    python benchmarks/cross_attention_speed.py --out RESULTS.md          # GPU: bf16, ~3 minutes
    python benchmarks/cross_attention_speed.py --quick --out cpu.md      # CPU: float32, small sizes

Compared, forward and forward+backward:
  * ``module``  -- MultiHeadCrossAttention (input checks, mask handling, SDPA fast path);
  * ``MHA``     -- torch.nn.MultiheadAttention(batch_first=True, need_weights=False);
  * ``inline``  -- four nn.Linear and F.scaled_dot_product_attention written inline, no checks;
  * the readable paths, ``module need_weights=True`` and ``MHA need_weights=True``.
Shapes: (a) mini DALL-E: B=64, Lq in {64, 256} image tokens, Lk in {16, 32} text tokens, width 256,
8 heads (head_dim 32); (b) long: B=4, Lq=Lk=4096, width 1024, 16 heads (head_dim 64). On a CPU (b)
shrinks to B=1, Lq=Lk=1024, width 512, 8 heads, and ``--quick`` shrinks both (said in the output).

Then: which SDPA kernel the default dispatch picks (torch._fused_sdp_choice, what SDPA itself asks)
and how fast each kernel is when forced with ``torch.nn.attention.sdpa_kernel``; what a padding
mask costs (and an all-True mask passed anyway, and a learned "null key"); and, at the small
shapes, whether ``torch.compile`` (``max-autotune-no-cudagraphs``, and ``reduce-overhead``, which
replays CUDA graphs) closes the gap left by kernel-launch overhead.

FLOP count (multiply-add = 2 FLOPs), width d = query_dim = context_dim, inner = num_heads * head_dim:
    projections  2 B (Lq d inner  +  2 Lk d inner  +  Lq inner d)     (to_q, to_k, to_v, to_out)
    attention    2 B Lq Lk inner  (Q K^T)  +  2 B Lq Lk inner  (weights V)
forward+backward counts 3x the forward (the backward does two matrix products per forward one; the
flash kernels also recompute Q K^T, which is not counted). Softmax, masks and copies are not counted.

Timing: median over repeats after warm-up, with CUDA events on a GPU (time.perf_counter on a CPU).
That is wall time per call, host overhead included; at the small shapes the host (Python, autograd,
kernel launches) dominates. Two GPU-only figures separate the two: "GPU ms (CUDA graph)" replays the
step captured in one CUDA graph (no launch gaps), and the SDPA-kernel table sums the kernel times the
profiler records.
Peak memory: torch.cuda.max_memory_allocated during one step minus what was allocated before it
(inputs and weights excluded), so it is the activations, gradients and workspace of that step.
The small shapes fit in L2 cache, as the previous layer's output often does in a real model.
Targets (GPU, bf16, forward+backward): module <= 0.85x MHA at every shape; the default SDPA kernel
within 10% of the fastest one forced by hand. Both print PASS or MISS.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, no install needed
from crossmodal_edu.torch_attention import MultiHeadCrossAttention  # noqa: E402

try:
    from torch.nn.attention import SDPBackend, sdpa_kernel
except ImportError:  # torch < 2.3: no per-call backend choice
    SDPBackend = sdpa_kernel = None

BACKENDS = ["FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION", "MATH"]
NOTES: dict[str, list[str]] = {}  # failure message -> the cases that hit it


@dataclass
class Shape:
    name: str  # label in the tables
    B: int  # batch size
    Lq: int  # query tokens (image tokens)
    Lk: int  # context tokens (text tokens)
    width: int  # query_dim = context_dim
    num_heads: int  # heads; head_dim = width // num_heads

    @property
    def inner(self) -> int:
        return self.width

    def flops(self) -> tuple[float, float]:
        """(projection FLOPs, attention-core FLOPs) of one forward pass."""
        d, inner = self.width, self.inner
        proj = 2 * self.B * (self.Lq * d * inner + 2 * self.Lk * d * inner + self.Lq * inner * d)
        core = 4 * self.B * self.Lq * self.Lk * inner
        return float(proj), float(core)


def shapes_for(device: str, quick: bool) -> tuple[list[Shape], list[Shape]]:
    if device == "cuda":
        small = [Shape(f"B64 Lq{lq} Lk{lk}", 64, lq, lk, 256, 8) for lq in (64, 256) for lk in (16, 32)]
        return small, [Shape("B4 4096x4096 w1024", 4, 4096, 4096, 1024, 16)]
    if quick:
        small = [Shape(f"B8 Lq{lq} Lk{lk}", 8, lq, lk, 256, 8) for lq, lk in ((64, 16), (256, 32))]
        return small, [Shape("B1 512x512 w256", 1, 512, 512, 256, 4)]
    small = [Shape(f"B64 Lq{lq} Lk{lk}", 64, lq, lk, 256, 8) for lq in (64, 256) for lk in (16, 32)]
    return small, [Shape("B1 1024x1024 w512", 1, 1024, 1024, 512, 8)]


# ------------------------------------------------------------------------------------- timing

class Timer:
    def __init__(self, device: str, quick: bool):
        self.device = device
        # Measured time per case after warm-up: CUDA events are precise, a shared CPU is noisy.
        self.target_s = (0.1 if quick else 0.2) if device == "cuda" else (0.15 if quick else 0.3)
        self.max_reps = 100
        self.graphs_ok = True

    def kernel_ms(self, fn, reps: int = 10) -> float | None:
        """Summed GPU kernel time per call of fn(), from the profiler: what the kernels cost
        without the gaps between launches. None on a CPU."""
        if self.device != "cuda":
            return None
        from torch.profiler import ProfilerActivity, profile

        for _ in range(3):
            fn()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(reps):
                fn()
            torch.cuda.synchronize()
        total_us = sum(getattr(e, "self_device_time_total", None) or getattr(e, "self_cuda_time_total", 0)
                       for e in prof.key_averages())
        return total_us / reps / 1e3 if total_us else None

    def sync(self) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()

    def time_ms(self, fn) -> float:
        """Median milliseconds of fn() after warm-up; repeats chosen to fill ~target_s."""
        start = time.perf_counter()
        fn()
        self.sync()
        for _ in range(2):
            fn()
        self.sync()
        estimate = max((time.perf_counter() - start) / 3, 1e-6)
        reps = int(min(self.max_reps, max(5, self.target_s / estimate)))
        times = []
        if self.device == "cuda":
            events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
                      for _ in range(reps)]
            for begin, end in events:
                begin.record()
                fn()
                end.record()
            torch.cuda.synchronize()
            times = [begin.elapsed_time(end) for begin, end in events]
        else:
            for _ in range(reps):
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(times)

    def graph_ms(self, fn) -> float | None:
        """GPU time of fn() with launch overhead removed: capture it once in a CUDA graph, time
        the replays. None on a CPU. fn must not synchronise (no .item(), no data-dependent if)."""
        if self.device != "cuda" or not self.graphs_ok:
            return None
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up off the default stream, as capture requires
            for _ in range(3):
                fn()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                fn()
            return self.time_ms(graph.replay)
        except Exception:
            self.graphs_ok = False  # a failed capture can leave CUDA state unusable for more captures
            raise
        finally:
            del graph
            torch.cuda.empty_cache()

    def peak_mib(self, fn) -> float | None:
        if self.device != "cuda":
            return None
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20


def attempt(label: str, fn, default=None):
    """Run fn(); on any failure record a note and return default (shown as n/a)."""
    try:
        return fn()
    except Exception as error:  # a missing backend or an OOM must not stop the run
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:160]
        NOTES.setdefault(f"{type(error).__name__}: {first}", []).append(label)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return default


def picked_backend(s: Shape, device, dtype, mask=None) -> str:
    """The SDPA kernel the default dispatch chooses for the module's q, k, v layout (and mask).

    Asks ``torch._fused_sdp_choice``, the function SDPA itself calls to dispatch, with inputs that
    require grad as in training (some kernels have no backward for some shapes)."""
    _, (q, k, v) = core_inputs(s, device, dtype, grad=True)
    choice = torch._fused_sdp_choice(q, k, v, mask, 0.0, False)
    name = SDPBackend(choice).name if SDPBackend is not None else str(choice)
    labels = {"FLASH_ATTENTION": "flash", "EFFICIENT_ATTENTION": "mem-efficient",
              "CUDNN_ATTENTION": "cuDNN", "MATH": "math"}
    label = labels.get(name, name)
    return label + " (CPU)" if device == "cpu" and label == "flash" else label


# ------------------------------------------------------------------------------------ cases

class Case:
    """One shape's modules and inputs, with forward and forward+backward closures."""

    def __init__(self, shape: Shape, device: str, dtype: torch.dtype, seed: int = 0):
        torch.manual_seed(seed)
        s = shape
        self.shape, self.device, self.dtype = s, device, dtype
        self.module = MultiHeadCrossAttention(s.width, s.width, s.num_heads).to(device, dtype)
        self.mha = nn.MultiheadAttention(s.width, s.num_heads, batch_first=True).to(device, dtype)
        self.x = torch.randn(s.B, s.Lq, s.width, device=device, dtype=dtype)
        self.context = torch.randn(s.B, s.Lk, s.width, device=device, dtype=dtype)
        self.grad_out = torch.randn(s.B, s.Lq, s.width, device=device, dtype=dtype)
        lengths = torch.randint(max(1, s.Lk // 2), s.Lk + 1, (s.B,), device=device)
        self.padding_mask = torch.arange(s.Lk, device=device)[None, :] < lengths[:, None]  # (B, Lk)
        self.all_true = torch.ones(s.B, s.Lk, dtype=torch.bool, device=device)

    def inline(self, x, context):
        """The module's arithmetic with nothing else: no checks, no mask handling."""
        m, s = self.module, self.shape
        hd = s.width // s.num_heads
        q = m.to_q(x).view(s.B, s.Lq, s.num_heads, hd).transpose(1, 2)  # (B, num_heads, Lq, head_dim)
        k = m.to_k(context).view(s.B, s.Lk, s.num_heads, hd).transpose(1, 2)  # (B, num_heads, Lk, head_dim)
        v = m.to_v(context).view(s.B, s.Lk, s.num_heads, hd).transpose(1, 2)  # (B, num_heads, Lk, head_dim)
        out = F.scaled_dot_product_attention(q, k, v)  # (B, num_heads, Lq, head_dim)
        return m.to_out(out.transpose(1, 2).reshape(s.B, s.Lq, s.width))  # (B, Lq, query_dim)

    def impls(self) -> dict:
        m, mha = self.module, self.mha
        impls = {
            "module": lambda x, c: m(x, c),
            "MHA": lambda x, c: mha(x, c, c, need_weights=False)[0],
            "inline SDPA": self.inline,
            "module need_weights=True": lambda x, c: m(x, c, need_weights=True)[0],
            "MHA need_weights=True": lambda x, c: mha(x, c, c, need_weights=True,
                                                      average_attn_weights=False)[0],
        }
        if self.device == "cuda" and sdpa_kernel is not None:
            for first in ("CUDNN_ATTENTION", "FLASH_ATTENTION"):
                order = [getattr(SDPBackend, b) for b in [first] + [b for b in BACKENDS if b != first]]

                def prioritised(x, c, order=order):
                    with sdpa_kernel(order, set_priority=True):
                        return m(x, c)
                impls[f"module, {first.split('_')[0].lower()} first"] = prioritised
        return impls

    def forward(self, fn, mask=None):
        def run():
            with torch.no_grad():
                return fn(self.x, self.context) if mask is None else fn(self.x, self.context, mask)
        return run

    def forward_backward(self, fn, mask=None, params=None):
        params = list(self.module.parameters()) if params is None else params
        x = self.x.detach().requires_grad_(True)
        context = self.context.detach().requires_grad_(True)

        def run():
            out = fn(x, context) if mask is None else fn(x, context, mask)
            return torch.autograd.grad(out, [x, context, *params], self.grad_out)
        return run


def tflops(flop: float, ms: float | None) -> float | None:
    return None if ms is None else flop / (ms * 1e-3) / 1e12


def fmt(value, digits=3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, str):
        return value
    return f"{value:.{digits}f}"


def verdict(ratio: float | None, target: float, device: str) -> str:
    if ratio is None:
        return "n/a"
    if device != "cuda":
        return f"{ratio:.2f} (GPU target)"
    return f"{ratio:.2f} {'PASS' if ratio <= target else 'MISS'}"


def md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------- sections

def main_table(shapes, device, dtype, timer) -> tuple[str, dict]:
    rows, fwd_bwd = [], {}
    for s in shapes:
        case = Case(s, device, dtype)
        proj, core = s.flops()
        mha_params = list(case.mha.parameters())
        for name, fn in case.impls().items():
            params = mha_params if name.startswith("MHA") else None
            f_ms = attempt(f"{s.name} {name} fwd", lambda: timer.time_ms(case.forward(fn)))
            step = case.forward_backward(fn, params=params)
            fb_ms = attempt(f"{s.name} {name} fwd+bwd", lambda: timer.time_ms(step))
            gpu_ms = attempt(f"{s.name} {name} graph", lambda: timer.graph_ms(step))
            peak = attempt(f"{s.name} {name} peak", lambda: timer.peak_mib(step))
            fwd_bwd[(s.name, name)] = fb_ms
            fwd_bwd[(s.name, name, "graph")] = gpu_ms
            digits = 1 if device == "cuda" else 3
            row = [s.name, name, fmt(f_ms), fmt(tflops(proj + core, f_ms), digits),
                   fmt(fb_ms), fmt(tflops(3 * (proj + core), fb_ms), digits)]
            if device == "cuda":
                row += [fmt(gpu_ms), fmt(tflops(3 * (proj + core), gpu_ms), digits), fmt(peak, 0)]
            rows.append(row)
        del case
    header = ["shape", "implementation", "fwd ms", "fwd TFLOP/s", "fwd+bwd ms", "fwd+bwd TFLOP/s"]
    if device == "cuda":
        header += ["fwd+bwd GPU ms (CUDA graph)", "GPU TFLOP/s", "peak MiB (fwd+bwd)"]
    ratio_rows = []
    for s in shapes:
        ours, theirs = fwd_bwd.get((s.name, "module")), fwd_bwd.get((s.name, "MHA"))
        inline = fwd_bwd.get((s.name, "inline SDPA"))
        ratio = None if not (ours and theirs) else ours / theirs
        overhead = None if not (ours and inline) else ours / inline
        row = [s.name, verdict(ratio, 0.85, device), fmt(overhead, 2)]
        if device == "cuda":
            g_ours, g_theirs = fwd_bwd.get((s.name, "module", "graph")), fwd_bwd.get((s.name, "MHA", "graph"))
            row.append(verdict(None if not (g_ours and g_theirs) else g_ours / g_theirs, 0.85, device))
        ratio_rows.append(row)
    ratio_header = ["shape", "module / MHA, fwd+bwd (target <= 0.85)", "module / inline SDPA"]
    if device == "cuda":
        ratio_header.append("same, GPU time only (CUDA graph)")
    text = md_table(header, rows) + "\n\n" + md_table(ratio_header, ratio_rows)
    return text, fwd_bwd


def core_inputs(s: Shape, device, dtype, grad: bool):
    """q, k, v laid out as the module makes them: views (B, num_heads, L, head_dim) of (B, L, width)."""
    hd = s.width // s.num_heads
    q = torch.randn(s.B, s.Lq, s.width, device=device, dtype=dtype)
    k = torch.randn(s.B, s.Lk, s.width, device=device, dtype=dtype)
    v = torch.randn(s.B, s.Lk, s.width, device=device, dtype=dtype)
    q, k, v = (t.requires_grad_(grad) for t in (q, k, v))
    views = [t.view(s.B, -1, s.num_heads, hd).transpose(1, 2) for t in (q, k, v)]  # (B, num_heads, L, head_dim)
    return (q, k, v), views


def core_step(s: Shape, device, dtype, backend=None, mask=None, extra_key=False):
    """Forward+backward of the attention core alone, optionally forced onto one backend."""
    leaves, (q, k, v) = core_inputs(s, device, dtype, grad=True)
    if extra_key:  # a learned null key/value every query can fall back on: Lk + 1 keys
        null_k = torch.randn(1, s.num_heads, 1, q.shape[-1], device=device, dtype=dtype, requires_grad=True)
        null_v = torch.randn_like(null_k, requires_grad=True)
        leaves = (*leaves, null_k, null_v)
    grad_out = torch.randn(s.B, s.num_heads, s.Lq, q.shape[-1], device=device, dtype=dtype)

    def run():
        kk, vv = k, v
        if extra_key:
            kk = torch.cat([null_k.expand(s.B, -1, -1, -1), k], dim=2)  # (B, num_heads, Lk + 1, head_dim)
            vv = torch.cat([null_v.expand(s.B, -1, -1, -1), v], dim=2)  # (B, num_heads, Lk + 1, head_dim)
        if backend is None:
            out = F.scaled_dot_product_attention(q, kk, vv, attn_mask=mask)
        else:
            with sdpa_kernel([getattr(SDPBackend, backend)]):
                out = F.scaled_dot_product_attention(q, kk, vv, attn_mask=mask)
        return torch.autograd.grad(out, leaves, grad_out)
    return run


def backend_table(shapes, device, dtype, timer) -> str:
    names = ["default"] + (BACKENDS if sdpa_kernel is not None else [])
    cells = {n: [] for n in names}
    picked, verdicts = [], []
    for s in shapes:
        _, core = s.flops()
        times = {}
        for n in names:
            step = attempt(f"{s.name} core {n}", lambda: core_step(s, device, dtype, None if n == "default" else n))
            def measure(step, n=n):
                if device != "cuda":
                    return timer.time_ms(step)
                ms = timer.kernel_ms(step)
                if ms is None:  # the profiler saw no kernels: fall back to wall time
                    NOTES.setdefault("profiler saw no kernels; wall-clock time used", []).append(f"{s.name} {n}")
                    ms = timer.time_ms(step)
                return ms
            ms = None if step is None else attempt(f"{s.name} core {n}", lambda: measure(step))
            times[n] = ms
            cells[n].append("n/a" if ms is None else f"{ms:.3f} ({tflops(3 * core, ms):.{1 if device == 'cuda' else 3}f})")
        picked.append(attempt(f"{s.name} dispatch", lambda: picked_backend(s, device, dtype), "?"))
        forced = {n: t for n, t in times.items() if n != "default" and t is not None}
        if forced and times["default"]:
            fastest = min(forced, key=forced.get)
            verdicts.append(f"{verdict(times['default'] / forced[fastest], 1.10, device)} (fastest: {fastest})")
        else:
            verdicts.append("n/a")
    rows = [[n] + cells[n] for n in names]
    rows.append(["default dispatch runs"] + picked)
    rows.append(["default / fastest (target <= 1.10)"] + verdicts)
    what = "summed kernel ms from the profiler" if device == "cuda" else "ms"
    return md_table([f"attention core fwd+bwd: {what} (TFLOP/s)"] + [s.name for s in shapes], rows)


def mask_table(shapes, device, dtype, timer) -> str:
    rows = {}
    order = ["module, no mask", "module, all-True mask (dropped)", "module, padding mask",
             "core, no mask", "core, all-True mask passed", "core, padding mask",
             "core, padding mask, mem-efficient", "core, padding mask, cuDNN",
             "core, null key + padding mask"]
    for name in order + ["with padding mask, dispatch picks"]:
        rows[name] = []
    for s in shapes:
        case = Case(s, device, dtype)
        m = case.module
        variants = {
            "module, no mask": case.forward_backward(lambda x, c: m(x, c)),
            "module, all-True mask (dropped)": case.forward_backward(lambda x, c, k: m(x, c, k), case.all_true),
            "module, padding mask": case.forward_backward(lambda x, c, k: m(x, c, k), case.padding_mask),
        }
        keep = case.padding_mask[:, None, None, :]  # (B, 1, 1, Lk)
        keep_null = torch.cat([torch.ones_like(keep[..., :1]), keep], dim=-1)  # (B, 1, 1, Lk + 1)
        variants["core, no mask"] = core_step(s, device, dtype)
        variants["core, all-True mask passed"] = core_step(s, device, dtype, mask=case.all_true[:, None, None, :])
        variants["core, padding mask"] = core_step(s, device, dtype, mask=keep)
        if sdpa_kernel is not None:
            variants["core, padding mask, mem-efficient"] = core_step(s, device, dtype, "EFFICIENT_ATTENTION", keep)
            variants["core, padding mask, cuDNN"] = core_step(s, device, dtype, "CUDNN_ATTENTION", keep)
        variants["core, null key + padding mask"] = core_step(s, device, dtype, mask=keep_null, extra_key=True)
        for name in order:
            step = variants.get(name)
            ms = None if step is None else attempt(f"{s.name} {name}", lambda: timer.time_ms(step))
            rows[name].append(fmt(ms))
        rows["with padding mask, dispatch picks"].append(
            attempt(f"{s.name} dispatch", lambda: picked_backend(s, device, dtype, keep), "?"))
        del case
    return md_table(["fwd+bwd ms"] + [s.name for s in shapes], [[n] + r for n, r in rows.items()])


def compile_table(shapes, device, dtype, timer, budget_s: float, compile_modes: list[str]) -> str:
    modes = ["eager"] + compile_modes
    rows = {f"module, {mode}": [] for mode in modes}
    rows["module, eager step captured by hand in one CUDA graph"] = []
    rows["MHA, eager"] = []
    rows[f"compile time s ({' / '.join(compile_modes)})"] = []
    started = time.perf_counter()
    for s in shapes:
        case = Case(s, device, dtype)
        compile_times = []
        for mode in modes:
            if mode != "eager" and time.perf_counter() - started > budget_s:
                rows[f"module, {mode}"].append("skipped (time budget)")
                compile_times.append("-")
                continue
            if mode == "eager":
                fn = case.module
            else:
                torch._dynamo.reset()
                fn = torch.compile(case.module, mode=mode, dynamic=False)
            step = case.forward_backward(lambda x, c: fn(x, c))
            if mode == "reduce-overhead":
                inner = step

                def step():  # a new step: the graph may reuse (overwrite) the last step's outputs
                    torch.compiler.cudagraph_mark_step_begin()
                    return inner()
            if mode != "eager":
                t0 = time.perf_counter()
                ok = attempt(f"{s.name} compile {mode}", lambda: (step(), timer.sync(), True)[-1])
                compile_times.append(fmt(time.perf_counter() - t0, 0) if ok else "failed")
                if not ok:
                    rows[f"module, {mode}"].append("n/a")
                    continue
            ms = attempt(f"{s.name} {mode}", lambda: timer.time_ms(step))
            rows[f"module, {mode}"].append(fmt(ms))
        rows["module, eager step captured by hand in one CUDA graph"].append(fmt(attempt(
            f"{s.name} graph", lambda: timer.graph_ms(case.forward_backward(lambda x, c: case.module(x, c))))))
        rows["MHA, eager"].append(fmt(attempt(f"{s.name} MHA", lambda: timer.time_ms(
            case.forward_backward(lambda x, c: case.mha(x, c, c, need_weights=False)[0],
                                  params=list(case.mha.parameters()))))))
        rows[f"compile time s ({' / '.join(compile_modes)})"].append(" / ".join(compile_times))
        del case
    return md_table(["fwd+bwd ms"] + [s.name for s in shapes], [[n] + r for n, r in rows.items()])


def matmul_ceiling(device, dtype, timer) -> str:
    n = 8192 if device == "cuda" else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    ms = timer.time_ms(lambda: a @ b)
    return f"{n}^3 {str(dtype).split('.')[-1]} matmul: {2 * n**3 / (ms * 1e-3) / 1e12:.1f} TFLOP/s ({ms:.3f} ms)"


def header(device, dtype, quick) -> str:
    lines = [f"- torch {torch.__version__}, Python {platform.python_version()}, dtype {str(dtype).split('.')[-1]}"]
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        lines.append(f"- device: {props.name}, {props.multi_processor_count} SMs, CUDA {torch.version.cuda}, "
                     f"cuDNN {torch.backends.cudnn.version()}")
    else:
        lines.append(f"- device: CPU ({platform.processor() or platform.machine()}, "
                     f"{torch.get_num_threads()} threads); the long shape is shrunk to finish in minutes"
                     + ("; --quick: smaller still" if quick else ""))
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, help="also write the tables as markdown here")
    parser.add_argument("--quick", action="store_true", help="fewer repeats (and smaller shapes on a CPU)")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--compile", dest="compile", action="store_true", default=None,
                        help="run the torch.compile section (default: on GPU only)")
    parser.add_argument("--no-compile", dest="compile", action="store_false")
    parser.add_argument("--compile-modes", default="reduce-overhead,max-autotune-no-cudagraphs",
                        help="comma-separated torch.compile modes to time")
    parser.add_argument("--compile-budget-s", type=float, default=120.0,
                        help="stop starting new compilations after this many seconds")
    args = parser.parse_args(argv)
    device = args.device
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    do_compile = (device == "cuda") if args.compile is None else args.compile
    timer = Timer(device, args.quick)
    small, long = shapes_for(device, args.quick)
    started = time.perf_counter()

    sections = [("# Cross-attention speed", header(device, dtype, args.quick))]

    def section(title, build):
        t0 = time.perf_counter()
        body = attempt(title, build, "n/a (section failed, see notes)")
        sections.append((f"## {title}", body))
        print(f"\n## {title}  [{time.perf_counter() - t0:.0f} s]\n\n{body}", flush=True)

    print(sections[0][0] + "\n" + sections[0][1], flush=True)
    section("Matmul ceiling", lambda: matmul_ceiling(device, dtype, timer))
    section("This module vs nn.MultiheadAttention vs inline SDPA",
            lambda: main_table(small + long, device, dtype, timer)[0])
    section("SDPA kernels (attention core only, no mask)", lambda: backend_table(small + long, device, dtype, timer))
    section("Masks", lambda: mask_table(small + long, device, dtype, timer))
    if do_compile:
        compile_shapes = [small[0], small[-1]]
        section("torch.compile at the small shapes",
                lambda: compile_table(compile_shapes, device, dtype, timer, args.compile_budget_s,
                                      [m for m in args.compile_modes.split(",") if m]))
    else:
        sections.append(("## torch.compile at the small shapes", "skipped (CPU run; pass --compile to force)"))
    notes = "\n".join(f"- {', '.join(labels)}: {message}" for message, labels in NOTES.items()) or "- none"
    total = f"total {time.perf_counter() - started:.0f} s"
    sections.append(("## Notes (unavailable kernels and failures show as n/a)", notes + f"\n- {total}"))
    print(f"\n## Notes\n{notes}\n- {total}", flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n\n".join(f"{title}\n\n{body}" for title, body in sections) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
