"""Peak extra memory of attention's backward pass: tiled (FlashAttention-style) against the plain one.

    python benchmarks/blocked_backward_memory.py            # L = 512 .. 4096, d = 64, float64
    python benchmarks/blocked_backward_memory.py --quick    # L = 256 .. 1024

Compared, on one head, Lq = Lk = L, d_k = d_v = d, float64, NumPy on the CPU, given the forward
pass's output (and, for the tiled one, its per-row log-sum-exp):
  * ``plain``  -- the textbook backward: P = softmax(S) rebuilt whole, then dV = P^T dO, dP = dO V^T,
                  dS = P * (dP - rowsum(dO * O)), dQ = dS K / sqrt(d), dK = dS^T Q / sqrt(d); several
                  (L, L) arrays at once;
  * ``tiled``  -- crossmodal_edu.blocked_attention.blocked_attention_backward, key blocks of
                  ``--block`` rows (all queries at once): only (L, block) arrays.

Peak extra memory is ``tracemalloc``'s peak during the call (NumPy reports its buffers to it), the
inputs excluded. The figures are exact and repeat to the byte; no timing is reported. The last column
says how the peak grew from the previous length: about 2x per doubling is linear, 4x quadratic.
"""

from __future__ import annotations

import argparse
import math
import sys
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from crossmodal_edu.blocked_attention import blocked_attention, blocked_attention_backward  # noqa: E402


def plain_backward(q, k, v, out, d_out):
    """The backward pass that stores the whole (L, L) weights, as autograd would."""
    scale = 1.0 / math.sqrt(q.shape[-1])
    scores = (q * scale) @ k.T  # (L, L)
    scores -= scores.max(axis=-1, keepdims=True)
    np.exp(scores, out=scores)
    scores /= scores.sum(axis=-1, keepdims=True)  # P
    dv = scores.T @ d_out
    ds = d_out @ v.T  # (L, L): dP
    ds -= np.sum(d_out * out, axis=-1, keepdims=True)
    ds *= scores  # dS
    return ds @ k * scale, ds.T @ q * scale, dv


def peak_mib(fn) -> float:
    tracemalloc.start()
    tracemalloc.reset_peak()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--block", type=int, default=128)
    args = parser.parse_args()
    lengths = (256, 512, 1024) if args.quick else (512, 1024, 2048, 4096)
    d = 64
    print(f"d = {d}, float64, one head, tiled key block = {args.block}; peak extra memory by tracemalloc")
    print()
    print("| L | one (L, L) array MiB | plain backward MiB | tiled backward MiB | tiled / plain | tiled growth vs previous L |")
    print("|---|---|---|---|---|---|")
    previous = None
    for L in lengths:
        rng = np.random.default_rng(0)
        q, k, v, d_out = (rng.normal(size=(L, d)) for _ in range(4))
        out, lse = blocked_attention(q, k, v, block_size=args.block, return_lse=True)
        tiled_grads = blocked_attention_backward(q, k, v, out, lse, d_out, block_size=args.block)
        for a, b in zip(tiled_grads, plain_backward(q, k, v, out, d_out)):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-9)
        plain = peak_mib(lambda: plain_backward(q, k, v, out, d_out))
        tiled = peak_mib(lambda: blocked_attention_backward(q, k, v, out, lse, d_out, block_size=args.block))
        growth = "" if previous is None else f"{tiled / previous:.2f}x"
        print(f"| {L} | {L * L * 8 / 2**20:.1f} | {plain:.1f} | {tiled:.2f} | {tiled / plain:.3f} | {growth} |", flush=True)
        previous = tiled


if __name__ == "__main__":
    main()
