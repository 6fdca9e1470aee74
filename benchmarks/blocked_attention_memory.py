"""How much memory and time does blocked (online-softmax) attention cost, against the naive one?

    python benchmarks/blocked_attention_memory.py                 # L = 8192, d = 64, float64: ~2 minutes
    python benchmarks/blocked_attention_memory.py --quick         # L = 2048: seconds
    python benchmarks/blocked_attention_memory.py --out table.md  # also write the markdown

Compared, on one head, Lq = Lk = L, d_k = d_v = d, float64, NumPy on the CPU:
  * ``naive``   -- crossmodal_edu.numpy_attention.scaled_dot_product_attention: builds the (L, L)
                   scores, their softmax, and returns the weights with the output;
  * ``blocked`` -- crossmodal_edu.blocked_attention.blocked_attention at several key block sizes
                   (all queries at once) and with query blocks too;
  * ``BLAS floor`` -- only the naive version's two matrix products, ``q @ k.T`` and ``(L, L) @ v``:
                   no attention on this machine can be faster than the arithmetic it must do.

Peak extra memory: ``tracemalloc``'s peak during one call, minus what was allocated when the call
began (NumPy reports its array buffers to tracemalloc, so this counts every temporary; the inputs,
allocated before, are excluded). Time: median wall time of ``--repeats`` calls, tracemalloc off,
the variants interleaved so that a noisy neighbour slows them all alike.

Targets (issue 6): at L = 8192, d = 64, some block size with blocked peak <= 1/8 of naive's and
blocked time <= 1.5x naive's. Each row prints PASS or MISS.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, no install needed
from crossmodal_edu.blocked_attention import blocked_attention  # noqa: E402
from crossmodal_edu.numpy_attention import scaled_dot_product_attention  # noqa: E402

MiB = 2**20


def peak_extra_bytes(fn) -> int:
    """Largest amount of memory allocated during fn() beyond what was allocated before it."""
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak - before


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or platform.machine()


def blas_name() -> str:
    try:
        config = np.show_config(mode="dicts")
        blas = config["Build Dependencies"]["blas"]
        return f"{blas.get('name', '?')} {blas.get('version', '')}".strip()
    except Exception:  # older NumPy: no mode="dicts"
        return "unknown BLAS"


def md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--length", type=int, default=None, help="Lq = Lk (default 8192; 2048 with --quick)")
    parser.add_argument("--dim", type=int, default=64, help="d_k = d_v")
    parser.add_argument("--blocks", default="64,128,256,512,1024,2048",
                        help="comma-separated key block sizes (all queries at once)")
    parser.add_argument("--query-block", type=int, default=1024,
                        help="also run every key block size with query blocks of this many rows (0: don't)")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per variant (default 5; 3 with --quick)")
    parser.add_argument("--quick", action="store_true", help="L = 2048, fewer repeats")
    parser.add_argument("--out", type=Path, help="also write the markdown here")
    args = parser.parse_args(argv)
    L = args.length or (2048 if args.quick else 8192)
    d = args.dim
    repeats = args.repeats or (3 if args.quick else 5)
    blocks = [int(b) for b in args.blocks.split(",") if b and int(b) <= L]
    qb = args.query_block if 0 < args.query_block < L else None

    rng = np.random.default_rng(0)
    q, k, v = (rng.normal(size=(L, d)) for _ in range(3))  # (L, d) each, float64
    k_t = k.T.copy()  # (d, L)

    def blas_floor():
        scores = q @ k_t  # (L, L)
        return scores @ v  # (L, d)

    variants = {"naive (reference)": lambda: scaled_dot_product_attention(q, k, v)}
    variants["BLAS floor: q @ k.T and (L, L) @ v only"] = blas_floor
    for b in blocks:
        variants[f"blocked, key block {b}"] = lambda b=b: blocked_attention(q, k, v, block_size=b)
    if qb:
        for b in blocks:
            variants[f"blocked, key block {b}, query block {qb}"] = (
                lambda b=b: blocked_attention(q, k, v, block_size=b, query_block_size=qb))

    started = time.perf_counter()
    reference, _ = scaled_dot_product_attention(q, k, v)
    max_diff = {name: float(np.abs(fn() - reference).max())
                for name, fn in variants.items() if name.startswith("blocked")}
    peaks = {name: peak_extra_bytes(fn) for name, fn in variants.items()}

    times: dict[str, list[float]] = {name: [] for name in variants}
    for name, fn in variants.items():  # warm-up: page in the buffers, spin up BLAS threads
        fn()
    for _ in range(repeats):
        for name, fn in variants.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    median = {name: statistics.median(t) for name, t in times.items()}

    naive = "naive (reference)"
    floor = "BLAS floor: q @ k.T and (L, L) @ v only"
    rows = []
    for name in variants:
        mem_ratio = peaks[name] / peaks[naive]
        time_ratio = median[name] / median[naive]
        if name.startswith("blocked"):
            ok = mem_ratio <= 1 / 8 and time_ratio <= 1.5
            verdict = f"{'PASS' if ok else 'MISS'}"
            diff = f"{max_diff[name]:.1e}"
        else:
            verdict, diff = "", ""
        spread = f"{min(times[name]) * 1e3:.0f}-{max(times[name]) * 1e3:.0f}"
        rows.append([name, f"{peaks[name] / MiB:.1f}", f"{mem_ratio:.3f}", f"{median[name] * 1e3:.0f}",
                     spread, f"{time_ratio:.2f}", diff, verdict])
    header = ["variant", "peak extra MiB", "/ naive (target <= 0.125)", "median ms", "min-max ms",
              "time / naive (target <= 1.5)", "max abs diff vs naive", "both targets"]
    ratio = median[naive] / median[floor]
    lines = [
        f"- L = Lq = Lk = {L}, d_k = d_v = {d}, float64, one head; the (L, L) float64 score matrix alone "
        f"is {L * L * 8 / MiB:.0f} MiB",
        f"- CPU: {cpu_name()}, {os.cpu_count()} logical cores; NumPy {np.__version__} ({blas_name()}), "
        f"Python {platform.python_version()}",
        f"- {repeats} timed calls per variant after one warm-up, interleaved; date "
        f"{datetime.date.today().isoformat()}",
        f"- naive / BLAS floor: **{ratio:.2f}x** (the softmax's passes over the (L, L) matrix cost "
        f"{ratio - 1:.0%} on top of the two matrix products)",
    ]
    text = "\n".join(lines) + "\n\n" + md_table(header, rows)
    text += f"\n\n(total {time.perf_counter() - started:.0f} s)"
    print(text, flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
