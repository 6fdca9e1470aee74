"""How close the NumPy attention references come to BLAS speed: each one's time divided by the time of
its own two matrix products (Q K^T and weights V), on one thread.

    python benchmarks/attention_blas_ratio.py            # L = 1024 and 4096, float32 and float64, d = 64
    python benchmarks/attention_blas_ratio.py --quick    # L = 256 and 1024, fewer repeats

A ratio of 1.0 would mean the softmax, the scaling and the masking cost nothing beyond the two
products; everything above it is the passes over the (L, L) scores. The row "two products + one
np.exp pass" is the floor for any softmax written in NumPy: the exponential of every score cannot be
skipped, and on CPUs without AVX-512 NumPy's float64 exp is a scalar loop that alone costs most of
a matrix product. The "before" rows time the
implementations as they were before issue 16 (kept here, verbatim in substance, as the baseline),
so one run shows both. Runs are interleaved (every implementation once per round, rounds repeated)
in one process and the table reports medians, so that load from other jobs on a shared machine hits
all of them alike. Both the process's CPU time (``time.process_time``: with one thread, the work
done, which waiting for a shared core does not inflate) and the wall time are reported. The thread
count is printed; it is pinned to 1 below, before NumPy is imported.
"""

import os

for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")  # must happen before numpy is imported

import argparse  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from crossmodal_edu.blocked_attention import blocked_attention  # noqa: E402
from crossmodal_edu.numpy_attention import scaled_dot_product_attention  # noqa: E402


def _threads() -> str:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return f"OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']} (threadpoolctl not installed)"
    return ", ".join(f"{pool['internal_api']}: {pool['num_threads']}" for pool in threadpool_info())


def previous_sdpa(q, k, v):
    """scaled_dot_product_attention before issue 16: a fresh (L, L) array per step."""
    scores = q @ np.swapaxes(k, -1, -2) / math.sqrt(q.shape[-1])
    m = np.max(scores, axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(under="ignore"):
        e = np.exp(scores - m)
    total = np.sum(e, axis=-1, keepdims=True)
    weights = e / np.where(total == 0.0, 1.0, total)
    return weights @ v, weights


def previous_blocked(q, k, v, block_size=512):
    """blocked_attention before issue 16: a new array for every step of every block."""
    q = q * q.dtype.type(1.0 / math.sqrt(q.shape[-1]))
    Lq, Lk, d_v = q.shape[-2], k.shape[-2], v.shape[-1]
    m = np.full((Lq, 1), -np.inf, q.dtype)
    l = np.zeros((Lq, 1), q.dtype)  # noqa: E741
    acc = np.zeros((Lq, d_v), q.dtype)
    for ks in range(0, Lk, block_size):
        scores = q @ k[ks:ks + block_size].T
        m_new = np.maximum(m, scores.max(axis=-1, keepdims=True))
        shift = np.where(np.isfinite(m_new), m_new, 0.0)
        with np.errstate(under="ignore"):
            alpha = np.exp(m - shift)
            p = scores - shift
            np.exp(p, out=p)
        l = alpha * l + p.sum(axis=-1, keepdims=True)  # noqa: E741
        acc = alpha * acc + p @ v[ks:ks + block_size]
        m = m_new
    return acc / np.where(l == 0.0, 1.0, l)


def two_products(q, k, v):
    """The BLAS floor: the two matrix products every implementation needs, and nothing else."""
    return (q @ k.T) @ v


def two_products_and_exp(q, k, v):
    """The floor of any NumPy softmax: the two products and the one np.exp over the (L, L) scores
    that a softmax cannot skip (NumPy's float64 exp is not vectorised on CPUs without AVX-512)."""
    scores = q @ k.T
    np.exp(scores, out=scores)
    return scores @ v


def measure(L: int, dtype: type, d: int, repeats: int) -> dict[str, float]:
    rng = np.random.default_rng(0)
    q, k, v = (rng.normal(size=(L, d)).astype(dtype) for _ in range(3))
    q_scaled = q / dtype(math.sqrt(d))  # scores of the size a softmax exponentiates
    candidates = {
        "two matrix products": lambda: two_products(q, k, v),
        "two products + one np.exp pass": lambda: two_products_and_exp(q_scaled, k, v),
        "scaled_dot_product_attention": lambda: scaled_dot_product_attention(q, k, v),
        "scaled_dot_product_attention (before)": lambda: previous_sdpa(q, k, v),
        "blocked_attention (block 512)": lambda: blocked_attention(q, k, v, block_size=512),
        "blocked_attention (before)": lambda: previous_blocked(q, k, v, block_size=512),
    }
    np.testing.assert_allclose(scaled_dot_product_attention(q, k, v)[0], previous_sdpa(q, k, v)[0],
                               rtol=1e-3 if dtype == np.float32 else 1e-10, atol=1e-6)
    cpu = {name: [] for name in candidates}
    wall = {name: [] for name in candidates}
    for name, fn in candidates.items():  # warm-up: page in the arrays, load the code
        fn()
    for _ in range(repeats):
        for name, fn in candidates.items():
            start_cpu, start_wall = time.process_time(), time.perf_counter()
            fn()
            cpu[name].append(time.process_time() - start_cpu)
            wall[name].append(time.perf_counter() - start_wall)
    return {name: (statistics.median(cpu[name]), statistics.median(wall[name])) for name in candidates}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="L = 256 and 1024, 5 rounds")
    parser.add_argument("--repeats", type=int, default=None, help="interleaved rounds (default 15, 7 at L >= 4096)")
    args = parser.parse_args()
    lengths = (256, 1024) if args.quick else (1024, 4096)
    d = 64
    print(f"numpy {np.__version__}, {platform.machine()}, {platform.processor() or platform.platform()}, "
          f"threads: {_threads()}; d = {d}; median of interleaved rounds; ratio = time / time of the two products")
    print()
    print("| L | dtype | implementation | median CPU ms | ratio (CPU) | median wall ms | ratio (wall) |")
    print("|---|---|---|---|---|---|---|")
    for L in lengths:
        for dtype in (np.float32, np.float64):
            repeats = args.repeats or (5 if args.quick else (7 if L >= 4096 else 15))
            medians = measure(L, dtype, d, repeats)
            floor_cpu, floor_wall = medians["two matrix products"]
            for name, (cpu, wall) in medians.items():
                print(f"| {L} | {np.dtype(dtype).name} | {name} | {cpu * 1e3:.2f} | {cpu / floor_cpu:.2f} "
                      f"| {wall * 1e3:.2f} | {wall / floor_wall:.2f} |", flush=True)


if __name__ == "__main__":
    main()
