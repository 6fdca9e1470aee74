r"""Exercises 05 · An image tokenizer: nearest-code quantisation -> fix a straight-through estimator
whose encoder gets no gradient -> the perplexity of code usage -> (predict) the perplexity of a
lopsided codebook.

Inputs are float64 tensors (counts are NumPy integer histograms, as ``codebook_usage`` returns
them), so that answers are compared with the package to float64 rounding. The straight-through
task is graded through a harness that also returns the gradients the answer sends back (and whether z
takes part in the answer at all).

Solutions: solutions/05_image_tokenizer.ipynb. Reference: crossmodal_edu/dalle/tokenizer.py
(``nearest_code``, ``straight_through``, ``perplexity``).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from crossmodal_edu.dalle import tokenizer as reference
from crossmodal_edu.grading.spec import IN_PLACE, Case, FunctionTask, Mistake, PredictionTask, Property
from crossmodal_edu.grading.tasks.lesson01 import distinct
from crossmodal_edu.grading.tasks.lesson03 import tensor
from crossmodal_edu.grading.tasks.properties import a_number, finite, first, has_shapes, near, where

# ---------------------------------------------------------------------------------------------
# 05.nearest_code
# ---------------------------------------------------------------------------------------------


def _codebook(rng: np.random.Generator, K: int, D: int, tie: bool = False) -> tuple[np.ndarray, int, int, np.ndarray]:
    """``K`` codes of width ``D`` and very different lengths, three of them along one direction c:
    c, 3c and 0.6c, at indices of at least ``D``. Returns the codebook, the index of c, and the index
    of a code that has a twin (with ``tie``: a later code equal to it, as two codes restarted from
    the same vector are), else -1.

    A vector equal to c is nearest to c, yet its dot product is larger with 3c, its ``‖e‖² - z·e``
    smaller at 0.6c, and so is its ``‖e‖² + 2 z·e``: each mis-expanded distance picks another code,
    and an index below ``D`` (a sum over the wrong axis) cannot be c's. Also returns a point p whose
    nearest code is not its nearest by the L1 distance.
    """
    codebook = rng.normal(size=(K, D)) * rng.uniform(0.3, 2.5, size=(K, 1))  # (K, D)
    c = rng.normal(size=D)
    c *= rng.uniform(1.0, 2.0) / np.linalg.norm(c)
    slots = rng.choice(np.arange(D, K), size=7 if tie else 5, replace=False)
    codebook[slots[:3]] = np.stack([c, 3.0 * c, 0.6 * c])
    # Far from the others, around a point p: p + e_i + e_j (two axes) is the nearer to p (√2 < 1.7),
    # p + 1.7 e_i the nearer by the sum of absolute differences (2 > 1.7). _vectors puts a vector on p.
    e1, e2 = np.eye(D)[rng.choice(D, size=2, replace=False)]
    p = 20.0 * c / np.linalg.norm(c) + 5.0 * e2
    codebook[slots[3]], codebook[slots[4]] = p + e1 + e2, p + 1.7 * e1
    twin = -1
    if tie:
        twin = int(min(slots[5:]))
        codebook[max(slots[5:])] = codebook[twin]
    return codebook, int(slots[0]), twin, p


def _vectors(rng: np.random.Generator, codebook: np.ndarray, lead: tuple[int, ...], p: np.ndarray,
             *equal_to: int) -> np.ndarray:
    """Encoder outputs ``(*lead, D)``: most near some code, a few far from every code, one equal to the
    point ``p``, and one equal to each code of ``equal_to`` (a negative index: none)."""
    K, D = codebook.shape
    z = codebook[rng.integers(K, size=lead)] + 0.3 * rng.normal(size=(*lead, D))  # (*lead, D)
    far = rng.random(lead) < 0.2
    z[far] = 2.0 * rng.normal(size=(int(far.sum()), D))
    places = rng.choice(int(np.prod(lead)), size=len(equal_to) + 1, replace=False)
    for place, point in zip(places, [p] + [codebook[i] if i >= 0 else None for i in equal_to]):
        if point is not None:
            z[np.unravel_index(int(place), lead)] = point
    return z


def _nearest_case(rng, lead, D, K, note="", tie=False, dtype=torch.float64):
    codebook, c_index, twin, p = _codebook(rng, K, D, tie)
    z = _vectors(rng, codebook, lead, p, c_index, twin)
    return Case({"z": tensor(z).to(dtype), "codebook": tensor(codebook).to(dtype)}, note=note)


def _nearest_cases(rng: np.random.Generator) -> list[Case]:
    h, w, D = distinct(rng, 3, 2, 6)
    N, D2 = int(rng.integers(6, 12)), int(rng.choice([d for d in (2, 3, 5) if d != D]))
    D3, n3 = int(rng.choice([d for d in (2, 3, 5, 6) if d not in (D, D2)])), int(rng.integers(3, 6))
    return [
        _nearest_case(rng, (2, h, w), D, D + int(rng.integers(8, 12)),
                      "an encoder output (B, h, w, D); two codes are equal, and a vector sits on them", tie=True),
        _nearest_case(rng, (N,), D2, D2 + int(rng.integers(6, 11)), "no batch dims"),
        _nearest_case(rng, (n3, 2), D3, D3 + int(rng.integers(6, 11)), "float32, as a trained codebook is",
                      dtype=torch.float32),
    ]


def _squared_distances(z: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    """‖z - e_k‖² in float64, ``(..., K)``, and the slack within which two of them count as equal: a
    float32 answer (or one that expands the square another way) may pick either of two codes that close."""
    distances = ((z[..., None, :] - codebook) ** 2).sum(-1)  # (..., K)
    slack = 1e-5 * (1.0 + (z ** 2).sum(-1, keepdims=True) + (codebook ** 2).sum(-1).max())  # (..., 1)
    return distances, slack


def _canonical(fn):
    """``fn(z, codebook)`` as ``(image_tokens, kind)``: the indices it returns, where a nearest code
    is replaced by the first of the codes equally near (so that every way of breaking a tie, or a
    float32 rounding, gives the same answer, while a code that is not nearest stays as it is); and
    what it returned them as: 0.0 an integer tensor (right), 1.0 floating-point numbers, 2.0 an integer
    NumPy array (the next step, ``codebook[image_tokens]`` or the decoder, wants a tensor).

    Anything that is not an array of whole numbers in 0..K-1 with z's leading shape comes back as it
    came, for the judge to describe.
    """

    def run(z, codebook):
        out = fn(z, codebook)
        try:
            tokens = out.detach().cpu().numpy() if isinstance(out, torch.Tensor) else out
            floating = np.asarray(tokens).dtype.kind == "f"
            kind = torch.tensor(1.0 if floating else 0.0 if isinstance(out, torch.Tensor) else 2.0)
            if not isinstance(tokens, np.ndarray) or tokens.dtype.kind not in "biuf":
                return out, kind
        except (TypeError, ValueError, RuntimeError):
            return out, torch.tensor(0.0)
        K = codebook.shape[0]
        valid = (tokens.shape == tuple(z.shape[:-1]) and np.isfinite(tokens).all()
                 and (tokens == np.round(tokens)).all() and tokens.min(initial=0) >= 0
                 and tokens.max(initial=0) <= K - 1)
        if not valid:
            return out, kind
        distances, slack = _squared_distances(z.detach().double().numpy(), codebook.detach().double().numpy())
        chosen = np.take_along_axis(distances, tokens.astype(np.int64)[..., None], axis=-1)  # (..., 1)
        nearest = distances <= distances.min(-1, keepdims=True) + slack  # (..., K)
        first = nearest.argmax(-1)  # (...): the first code equally near as the nearest
        keep = chosen[..., 0] > distances.min(-1) + slack[..., 0]
        return torch.from_numpy(np.where(keep, tokens.astype(np.int64), first)), kind

    return run


def _distances(z, codebook):
    return ((z[..., None, :] - codebook) ** 2).sum(-1)  # (..., K)


def _nc_farthest(z, codebook):
    return _distances(z, codebook).argmax(-1)


def _nc_dot(z, codebook):
    return (z @ codebook.T).argmax(-1)


def _nc_no_two(z, codebook):
    return ((z ** 2).sum(-1, keepdim=True) - z @ codebook.T + (codebook ** 2).sum(-1)).argmin(-1)


def _nc_plus(z, codebook):
    return ((z ** 2).sum(-1, keepdim=True) + 2 * z @ codebook.T + (codebook ** 2).sum(-1)).argmin(-1)


def _nc_wrong_axis(z, codebook):
    return ((z[..., None, :] - codebook) ** 2).sum(-2).argmin(-1)  # (..., D), then an index below D


def _nc_codes(z, codebook):
    return codebook[reference.nearest_code(z, codebook)]


def _nc_flat(z, codebook):
    return _distances(z.reshape(-1, z.shape[-1]), codebook).argmin(-1)


def _nc_floats(z, codebook):
    return reference.nearest_code(z, codebook).to(z.dtype)


def _nc_numpy(z, codebook):
    return reference.nearest_code(z, codebook).numpy()


def _nc_flat_dim0(z, codebook):
    return _distances(z.reshape(-1, z.shape[-1]), codebook).argmin(0)


def _nc_dim0(z, codebook):
    return _distances(z, codebook).argmin(0)


def _nc_no_dim(z, codebook):
    return _distances(z, codebook).argmin()


def _nc_min(z, codebook):
    return _distances(z, codebook).min(-1)


def _nc_l1(z, codebook):
    return (z[..., None, :] - codebook).abs().sum(-1).argmin(-1)


def _valid_indices(fn, case, outputs):
    K = case.inputs["codebook"].shape[0]
    tokens = outputs[0]
    bad = (tokens != np.round(tokens)) | (tokens < 0) | (tokens > K - 1)
    if bad.any():
        return f"the index at {first(bad)} is {tokens[np.unravel_index(int(np.flatnonzero(bad)[0]), bad.shape)]:.4g}"
    return None


def _integers(fn, case, outputs):
    if outputs[1] == 1:
        return "they are floating-point numbers (argmin gives int64: keep that dtype)"
    if outputs[1] == 2:
        return "they are a NumPy array: z is a tensor, and so must the tokens be (torch's argmin gives one)"
    return None


def _nearest_really(fn, case, outputs):
    distances, slack = _squared_distances(case.inputs["z"].double().numpy(), case.inputs["codebook"].double().numpy())
    tokens = outputs[0].astype(np.int64)
    chosen = np.take_along_axis(distances, tokens[..., None], axis=-1)[..., 0]  # (...)
    bad = chosen > distances.min(-1) + slack[..., 0]
    if bad.any():
        i = np.unravel_index(int(np.flatnonzero(bad)[0]), bad.shape)
        return (f"the vector at {where(i)} gets code {int(tokens[i])}, at squared distance {chosen[i]:.4g}, "
                f"but code {int(distances[i].argmin())} is nearer, at {distances[i].min():.4g}")
    return None


NEAREST_CODE = FunctionTask(
    id="05.nearest_code",
    title="Nearest-code quantisation",
    points=3,
    name="nearest_code",
    signature="nearest_code(z, codebook) -> image_tokens",
    cases=_nearest_cases,
    reference=reference.nearest_code,
    outputs=("image_tokens", "kind"),
    harness=_canonical,
    unreported=("kind",),
    properties=(
        has_shapes(lambda c: (tuple(c.inputs["z"].shape[:-1]), ()), "z's without its last axis, (...)"),
        Property("every index must name a code: an integer from 0 to K - 1", _valid_indices),
        Property("image tokens must be an integer tensor", _integers),
        Property("each vector must get the code nearest to it", _nearest_really),
    ),
    mistakes=(
        Mistake("argmax of the distances: the farthest code",
                "the token is the code at the smallest squared distance: .argmin(-1), not .argmax(-1).",
                _nc_farthest),
        Mistake("the largest dot product z · e_k instead of the smallest distance (or ‖e_k‖² left out of the "
                "expansion)",
                "‖z - e_k‖² = ‖z‖² - 2 z · e_k + ‖e_k‖²: a long code can have the largest dot product without "
                "being near. Keep the ‖e_k‖² term, (codebook ** 2).sum(-1), and take the argmin.", _nc_dot),
        Mistake("the expansion without the factor 2: ‖z‖² - z · e_k + ‖e_k‖²",
                "the cross term of ‖z - e‖² is -2 z · e: ‖z‖² - 2 z @ codebook.T + ‖e‖².", _nc_no_two),
        Mistake("the cross term's sign flipped: ‖z‖² + 2 z · e_k + ‖e_k‖² (that is the distance to -z)",
                "‖z - e‖² = ‖z‖² - 2 z · e + ‖e‖²: subtract the dot products.", _nc_plus),
        Mistake("squared differences summed over the codes axis instead of the code width D",
                "with differences of shape (..., K, D), sum over the last axis, .sum(-1), to get one distance "
                "per code (..., K); then argmin over the codes.", _nc_wrong_axis),
        Mistake("returns the codes z_q instead of their indices",
                "image tokens are integers: return the argmin itself; codebook[image_tokens] is z_q.", _nc_codes),
        Mistake("the indices are left flat: not reshaped back to z's leading shape",
                "after flattening z to (N, D), reshape the indices to z.shape[:-1].", _nc_flat),
        Mistake("the indices are floating-point numbers",
                "image tokens are integers: argmin gives int64, keep that dtype (no .float(), no conversion to "
                "z's dtype); they index the codebook and the decoder's embedding.", _nc_floats),
        Mistake("returned a NumPy array instead of a tensor",
                "z and the codebook are tensors, and what uses the tokens next (codebook[image_tokens], the "
                "decoder's embedding) wants one: compute with torch (z @ codebook.T, .argmin(-1)), or convert back "
                "with torch.from_numpy.", _nc_numpy),
        Mistake("argmin over the vectors (dim 0) instead of over the codes",
                "the distances of the flattened z have shape (N, K): one row per vector, one column per code. "
                "Take the argmin over the codes, .argmin(-1), then reshape to z.shape[:-1].", _nc_flat_dim0),
        Mistake("argmin over the first axis (dim 0) instead of over the codes",
                "the distances have shape (..., K), the codes last: .argmin(-1), or .argmin(dim=-1).", _nc_dim0),
        Mistake("argmin without dim: one index into the whole flattened array",
                "argmin() with no dim flattens everything; the code of each vector is the argmin over the codes "
                "axis: .argmin(-1).", _nc_no_dim),
        Mistake("returned .min(-1), the distances and the indices, instead of the indices",
                "torch's .min(-1) gives a pair (values, indices): return its .indices, or use .argmin(-1).", _nc_min),
        Mistake("summed absolute differences (L1), not squared ones",
                "the nearest code is the one at the smallest squared Euclidean distance, ((z - e) ** 2).sum(-1); "
                "the L1 distance picks another code for some vectors.", _nc_l1),
    ),
)

# ---------------------------------------------------------------------------------------------
# 05.straight_through (fix the bug)
# ---------------------------------------------------------------------------------------------


def decoder_gradient(shape) -> torch.Tensor:
    """The gradient that arrives from the decoder in a check: a fixed pattern of numbers in [-1, 1], none
    of them 0, different at every entry (float64, ``shape``)."""
    n = int(np.prod(shape))
    return torch.cos(1.3 * torch.arange(n, dtype=torch.float64) + 0.5).reshape(tuple(shape))


def _with_gradients(fn):
    """``fn(z, z_q)`` as ``(value, z.grad, z_q.grad, z left out)``: its result; the gradients it sends to z
    and to z_q when :func:`decoder_gradient` arrives from the decoder (zeros where none arrives); and 1.0
    if the result carries a gradient but is not computed from z at all (as ``return z_q`` is), else 0.0.

    The last one tells ``return z_q`` from ``z + (z_q - z)``: both send z a zero gradient, but only in the
    second is z part of the computation (its two terms cancel).
    """

    def run(z, z_q):
        z.requires_grad_(True)
        z_q.requires_grad_(True)
        out = fn(z, z_q)
        nothing = (torch.zeros_like(z.detach()), torch.zeros_like(z_q.detach()))
        if out is not None and not isinstance(out, torch.Tensor):
            try:
                out = torch.as_tensor(np.asarray(out, dtype=np.float64))
            except (TypeError, ValueError, RuntimeError):
                pass  # the judge says what came instead of a tensor
        if not isinstance(out, torch.Tensor):
            return out, *nothing, torch.tensor(0.0)
        if not out.requires_grad or out.shape != z.shape:
            return out.detach(), *nothing, torch.tensor(0.0)
        grad_out = decoder_gradient(z.shape).to(out.dtype)
        grads = torch.autograd.grad(out, (z, z_q), grad_outputs=grad_out, allow_unused=True)
        z_left_out = torch.tensor(1.0 if grads[0] is None else 0.0)
        return out.detach(), *(zero if g is None else g for g, zero in zip(grads, nothing)), z_left_out

    return run


def _straight_case(rng, shape, channels_axis, note, dtype=torch.float64):
    """``z`` and its codes ``z_q``: the nearest codes of a random codebook (``dtype`` tensors; in float32,
    z + (z_q - z) and z_q.detach() + z - z.detach() round differently, so the tolerance is float32's)."""
    z = rng.normal(size=shape)
    D = shape[channels_axis]
    codebook = rng.normal(size=(int(rng.integers(5, 9)), D))
    vectors = np.moveaxis(z, channels_axis, -1)  # (..., D)
    z_q = np.moveaxis(codebook[((vectors[..., None, :] - codebook) ** 2).sum(-1).argmin(-1)], -1, channels_axis)
    loose = dtype == torch.float32
    return Case({"z": tensor(z).to(dtype), "z_q": tensor(z_q).to(dtype)}, note=note,
                rtol=1e-5 if loose else None, atol=1e-6 if loose else None)


def _straight_cases(rng: np.random.Generator) -> list[Case]:
    D, h, w = distinct(rng, 3, 2, 6)
    return [
        _straight_case(rng, (2, D, h, w), 1, "an encoder output (B, D, h, w)"),
        _straight_case(rng, (int(rng.integers(3, 8)), int(rng.integers(2, 5))), -1, "vectors (N, D)"),
        _straight_case(rng, (1, int(rng.integers(2, 5)), h, w), 1, "float32, as an encoder's output is",
                       dtype=torch.float32),
    ]


def _st_no_detach(z, z_q):
    return z + (z_q - z)


def _st_returns_z(z, z_q):
    return z


def _st_returns_z_q(z, z_q):
    return z_q


def _st_sign_flipped(z, z_q):
    return z - (z_q - z).detach()


def _st_into_codebook(z, z_q):
    return z_q + (z - z.detach())


def _st_all_detached(z, z_q):
    return (z + (z_q - z)).detach()


def _st_swapped(z, z_q):
    return z_q + (z - z_q).detach()


def _st_z_detached(z, z_q):
    return z.detach() + (z_q - z)


def _close_to(output: int, expected, statement: str, what: str) -> Property:
    """``outputs[output]`` equals ``expected(case)`` (to float32 rounding: z + (z_q - z) is z_q only to
    rounding); a failure names the first entry that differs."""

    def test(fn, case, outputs):
        got, want = outputs[output], expected(case)
        bad = ~np.isclose(got, want, rtol=1e-6, atol=1e-6)
        if bad.any():
            i = np.unravel_index(int(np.flatnonzero(bad)[0]), bad.shape)
            return f"{what} at index {where(i)} is {got[i]:.6g}, not {want[i]:.6g}"
        return None

    return Property(statement, test)


STRAIGHT_THROUGH = FunctionTask(
    id="05.straight_through",
    title="Fix the straight-through estimator",
    points=2,
    name="straight_through",
    signature="straight_through(z, z_q) -> z_st",
    cases=_straight_cases,
    reference=reference.straight_through,
    outputs=("value", "z.grad", "z_q.grad", "z left out"),
    harness=_with_gradients,
    unreported=("z left out",),
    properties=(
        has_shapes(lambda c: (tuple(c.inputs["z"].shape),) * 3, "those of z (the value and both gradients)"),
        _close_to(0, lambda c: c.inputs["z_q"].numpy(), "the forward value must be z_q: the decoder gets the codes",
                  "the value"),
        _close_to(1, lambda c: decoder_gradient(c.inputs["z"].shape).numpy(),
                  "z must receive the decoder's gradient unchanged", "z.grad"),
        _close_to(2, lambda c: np.zeros(c.inputs["z_q"].shape),
                  "no gradient may reach z_q: the codebook learns by its own rule", "z_q.grad"),
    ),
    mistakes=(
        Mistake("no .detach(): the two z cancel, and the encoder gets no gradient",
                "z + (z_q - z) is z_q in the backward pass as well as in value. Stop the gradient of the "
                "difference: z + (z_q - z).detach() has the value z_q and the gradient of z.", _st_no_detach),
        Mistake("returns z: the decoder gets the unquantised vectors",
                "the forward value must be the codes z_q; only the gradient is z's: z + (z_q - z).detach().",
                _st_returns_z),
        Mistake("returns z_q alone: the decoder gets the codes, but the encoder gets no gradient",
                "the forward value z_q is right, but z takes no part in computing it, and the quantisation that "
                "made z_q (an argmin) has no gradient: nothing reaches the encoder. Keep z in the sum and detach "
                "only the difference: z + (z_q - z).detach().", _st_returns_z_q),
        Mistake("sign flipped: z - (z_q - z).detach()",
                "add the detached difference: z + (z_q - z).detach() evaluates to z_q; with a minus it is "
                "2z - z_q.", _st_sign_flipped),
        Mistake("the decoder's gradient also flows into z_q (the codebook)",
                "z_q + (z - z.detach()) has the right value and sends the gradient to z, but to z_q as well: "
                "detach the whole difference, z + (z_q - z).detach(), so z_q gets none (the codebook learns "
                "by its own loss or moving average).", _st_into_codebook),
        Mistake("nothing gets a gradient: the whole result is detached, or the two z terms still cancel "
                "(as in z + (z_q.detach() - z))",
                "detach the whole difference, and only it: z + (z_q - z).detach().",
                _st_all_detached),
        Mistake("detached z instead of the difference: the encoder's gradient is reversed",
                "z.detach() + (z_q - z) sends -1 × the gradient to z and +1 × to z_q. Detach the difference: "
                "z + (z_q - z).detach().", _st_z_detached),
        Mistake("z and z_q swapped: z_q + (z - z_q).detach() has z's value and gives z_q the gradient",
                "the term outside the detach is the one that gets the gradient, and the sum has the value of z_q: "
                "z + (z_q - z).detach().", _st_swapped),
    ),
    planted="no .detach(): the two z cancel, and the encoder gets no gradient",
)

# ---------------------------------------------------------------------------------------------
# 05.perplexity
# ---------------------------------------------------------------------------------------------


def _perplexity_cases(rng: np.random.Generator) -> list[Case]:
    K = int(rng.integers(8, 16))
    counts = rng.integers(1, 60, size=K)
    counts[rng.choice(K, size=int(rng.integers(2, K // 2)), replace=False)] = 0  # dead codes
    used = np.flatnonzero(counts)
    counts[used[0]] = 3 * counts[used[1]] + 1  # never all equal
    K2, K3 = int(rng.integers(4, 10)), int(rng.integers(6, 12))
    one = np.zeros(K2, np.int64)
    one[rng.integers(K2)] = rng.integers(5, 500)
    m = int(rng.integers(2, K3 - 1))
    once = np.zeros(K3, np.int64)
    once[rng.choice(K3, size=m, replace=False)] = 1  # counts of 1 keep apart all the normalisation mistakes
    return [
        Case({"counts": counts.astype(np.int64)}, note="some codes dead"),
        Case({"counts": one}, note="a collapsed codebook: one code for every token"),
        Case({"counts": once}, note=f"{m} codes used once each, the others dead"),
    ]


def _used_p(counts):
    counts = np.asarray(counts, dtype=np.float64)
    return counts[counts > 0] / counts.sum()


def _ppl_log2(counts):
    p = _used_p(counts)
    return float(np.exp(-(p * np.log2(p)).sum()))


def _ppl_not_normalised(counts):
    n = np.asarray(counts, dtype=np.float64)
    n = n[n > 0]
    return float(np.exp(-(n * np.log(n)).sum()))


def _ppl_nan(counts):
    p = np.asarray(counts, dtype=np.float64) / np.sum(counts)
    return float(np.exp(-(p * np.log(p)).sum()))


def _ppl_entropy(counts):
    p = _used_p(counts)
    return float(-(p * np.log(p)).sum())


def _ppl_sign(counts):
    p = _used_p(counts)
    return float(np.exp((p * np.log(p)).sum()))


def _ppl_codes_in_use(counts):
    return float((np.asarray(counts) > 0).sum())


def _ppl_log_counts(counts):
    n = np.asarray(counts, dtype=np.float64)
    p = _used_p(counts)
    return float(np.exp(-(p * np.log(n[n > 0])).sum()))


def _ppl_by_K(counts):
    counts = np.asarray(counts, dtype=np.float64)
    p = counts[counts > 0] / len(counts)
    return float(np.exp(-(p * np.log(p)).sum()))


def _ppl_ln_then_2(counts):
    p = _used_p(counts)
    return float(2.0 ** (-(p * np.log(p)).sum()))


def _ppl_log10(counts):
    p = _used_p(counts)
    return float(np.exp(-(p * np.log10(p)).sum()))


def _ppl_unweighted(counts):
    p = _used_p(counts)
    return float(np.exp(-np.log(p).sum()))


def _ppl_mean(counts):
    p = _used_p(counts)
    return float(np.exp(-(p * np.log(p)).mean()))


def _ppl_dead_as_one(counts):
    n = np.maximum(np.asarray(counts, dtype=np.float64), 1.0)
    p = n / n.sum()
    return float(np.exp(-(p * np.log(p)).sum()))


def _ppl_plus_one(counts):
    n = np.asarray(counts, dtype=np.float64) + 1.0
    p = n / n.sum()
    return float(np.exp(-(p * np.log(p)).sum()))


def _ppl_in_place(counts):
    counts[counts == 0] = 1
    p = counts / counts.sum()
    return float(np.exp(-(p * np.log(p)).sum()))


def _between_1_and_used(fn, case, outputs):
    used = int((case.inputs["counts"] > 0).sum())
    value = float(outputs[0])
    slack = 1e-4 * max(1, used)  # float32 sums round; the reference comparison is as lenient
    if not 1 - slack <= value <= used + slack:
        return f"it is {value:.8g}, with {used} code(s) in use"
    return None


PERPLEXITY = FunctionTask(
    id="05.perplexity",
    title="Perplexity of code usage",
    points=2,
    name="perplexity",
    signature="perplexity(counts) -> float",
    cases=_perplexity_cases,
    reference=reference.perplexity,
    outputs=("perplexity",),
    properties=(
        has_shapes(lambda c: ((),), "a single number"),
        finite(0, "perplexity"),
        Property("the perplexity must lie between 1 and the number of codes in use", _between_1_and_used),
    ),
    mistakes=(
        Mistake("mixed bases: log base 2 inside, e outside",
                "exp undoes the natural log: exp(-Σ p log p) with np.log (or 2 ** (-Σ p log2 p), the same number).",
                _ppl_log2),
        Mistake("counts not normalised: p must be a fraction of the tokens",
                "p_k = counts_k / counts.sum(), so that the p sum to 1.", _ppl_not_normalised),
        Mistake("NaN from the dead codes: 0 · log 0",
                "np.log(0) is -inf and 0 · -inf is NaN. A dead code adds nothing to the entropy (p log p → 0): "
                "leave it out, p = p[p > 0].", _ppl_nan),
        Mistake("returned the entropy, not its exponential",
                "the perplexity is exp(entropy): e^(-Σ p log p).", _ppl_entropy),
        Mistake("the entropy's sign flipped: exp(+Σ p log p) = 1 / perplexity",
                "the entropy is -Σ p log p (positive, since log p ≤ 0): exp(-Σ p log p).", _ppl_sign),
        Mistake("counted the codes in use",
                "that is the perplexity only when they are used equally; weigh each code by its share: "
                "exp(-Σ p log p).", _ppl_codes_in_use),
        Mistake("the log of the counts, not of the shares: -Σ p log counts",
                "the entropy is -Σ p log p, with the same p = counts / counts.sum() inside the log.", _ppl_log_counts),
        Mistake("divided the counts by the number of codes, not by the number of tokens",
                "p_k is the fraction of the tokens that are code k: counts / counts.sum(), not counts / len(counts).",
                _ppl_by_K),
        Mistake("mixed bases: natural log inside, 2 ** outside",
                "exp undoes the natural log: exp(-Σ p log p) with np.log (or 2 ** (-Σ p log2 p), the same number).",
                _ppl_ln_then_2),
        Mistake("log base 10 inside, e outside",
                "exp undoes the natural log: exp(-Σ p log p) with np.log, not np.log10.", _ppl_log10),
        Mistake("the entropy without its weights: -Σ log p instead of -Σ p log p",
                "each code's surprise -log p_k counts as often as the code is used: weigh it by p_k.",
                _ppl_unweighted),
        Mistake("averaged p log p over the codes instead of summing it",
                "the entropy is a sum over the codes, -Σ p log p (the p already weigh each code): .sum(), not .mean().",
                _ppl_mean),
        Mistake("the dead codes counted as used once (to avoid log 0)",
                "a dead code has p = 0 and adds nothing (p log p → 0): leave it out, p = p[p > 0], rather than "
                "giving it a count it does not have.", _ppl_dead_as_one),
        Mistake("1 added to every count (to avoid log 0)",
                "smoothing changes the shares of every code; a dead code has p = 0 and adds nothing: leave it out, "
                "p = p[p > 0].", _ppl_plus_one),
        Mistake(IN_PLACE, "", _ppl_in_place, in_place=True),
    ),
)

# ---------------------------------------------------------------------------------------------
# 05.lopsided (predict, then run)
# ---------------------------------------------------------------------------------------------

# 25 200 tokens: 18 900 (3/4) are the background code, 63 codes have 100 each, 192 codes are dead.
_P = np.array([0.75] + [0.25 / 63] * 63)
_ENTROPY = float(-(_P * np.log(_P)).sum())  # nats
_PPL = math.exp(_ENTROPY)  # 4.94


LOPSIDED = PredictionTask(
    id="05.lopsided",
    title="Predict: a lopsided codebook",
    points=1,
    name="predicted_perplexity",
    expects="a number",
    read=a_number,
    answer=_PPL,
    accept=lambda value: near(value, _PPL),
    explanation=f"-Σ p log p = 0.75 · log(4/3) + 0.25 · log(252) = {_ENTROPY:.3f} nats, and e^{_ENTROPY:.3f} = "
                f"{_PPL:.2f}: the 64 codes in use are worth fewer than 5 equally used ones, because one of "
                f"them carries three quarters of the tokens.",
    mistakes=(
        Mistake("that counts the codes in use",
                "perplexity weighs each code by how often it is used: one code with three quarters of the "
                "tokens and 63 sharing the rest are worth far fewer than 64 equally used codes.", value=64),
        Mistake("that is the size of the codebook", "192 of the 256 codes are dead: they add nothing.",
                value=256),
        Mistake("that is the entropy, not the perplexity", "the perplexity is e^entropy.", value=_ENTROPY),
        Mistake("that is the entropy in bits", "the perplexity is 2^(entropy in bits) = e^(entropy in nats).",
                value=_ENTROPY / math.log(2)),
        Mistake("mixed bases: the entropy in bits, then e^", "use one base: 2^(bits) or e^(nats).",
                value=math.exp(_ENTROPY / math.log(2))),
        Mistake("mixed bases: the entropy in nats, then 2^", "use one base: 2^(bits) or e^(nats).",
                value=2 ** _ENTROPY),
        Mistake("that is 1 / perplexity: the entropy's sign flipped", "the entropy is -Σ p log p, positive.",
                value=1 / _PPL),
        Mistake("left out the background code's own term",
                "every used code adds -p log p, the background code too: -0.75 · log 0.75.",
                value=math.exp(-0.25 * math.log(0.25 / 63))),
        Mistake("1 would mean every token is the same code",
                "a quarter of the tokens are spread over 63 other codes: they raise the perplexity.", value=1),
    ),
    same=near,
)

TASKS = (NEAREST_CODE, STRAIGHT_THROUGH, PERPLEXITY, LOPSIDED)
