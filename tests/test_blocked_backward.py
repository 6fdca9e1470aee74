"""Specification of the tiled backward pass: crossmodal_edu.blocked_attention.blocked_attention_backward
and the log-sum-exp that blocked_attention(..., return_lse=True) returns.

References are independent of the code under test: torch autograd through attention written from
the equation in float64, and central finite differences. Lq != Lk and d_k != d_v throughout; the
lengths are primes, so that no block size divides them.
"""

import tracemalloc

import numpy as np
import pytest
import torch

from crossmodal_edu.blocked_attention import blocked_attention, blocked_attention_backward
from crossmodal_edu.numpy_attention import causal_mask

LQ, LK, DK, DV = 11, 13, 5, 3  # primes; Lq != Lk, d_k != d_v


def torch_attention(q, k, v, keep=None):
    """softmax(Q K^T / sqrt(d_k) + M) V in float64 torch; a row with no key it may attend gives 0
    (and, through torch.where, zero gradient)."""
    scores = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
    if keep is None:
        return scores.softmax(-1) @ v
    keep = torch.as_tensor(keep).expand(scores.shape)
    has_key = keep.any(-1, keepdim=True)
    scores = torch.where(keep, scores, torch.where(has_key, -torch.inf, 0.0))  # no -inf-only rows
    weights = torch.where(has_key, scores.softmax(-1), 0.0)
    return weights @ v


def autograd(q, k, v, d_out, keep=None):
    tensors = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (q, k, v)]
    out = torch_attention(*tensors, keep)
    out.backward(torch.tensor(d_out))
    return [t.grad.numpy() for t in tensors]


def inputs(seed, lead=(2,), Lq=LQ, Lk=LK):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(*lead, Lq, DK)), rng.normal(size=(*lead, Lk, DK)), rng.normal(size=(*lead, Lk, DV)),
            rng.normal(size=(*lead, Lq, DV)))


def masks():
    rng = np.random.default_rng(100)
    padding = np.ones((2, 1, LK), bool)
    padding[0, 0, 9:], padding[1, 0, 4:] = False, False
    late = np.ones((LQ, LK), bool)
    late[:, :7] = False  # every row's first blocks (of sizes up to 7) are entirely masked
    fully = rng.random((2, LQ, LK)) > 0.4
    fully[0, 3], fully[1, [0, 10]] = False, False  # rows with no key at all
    return {"none": None, "padding": padding, "causal": causal_mask(LQ, LK), "first blocks masked": late,
            "fully masked rows": fully}


def backward(q, k, v, d_out, mask, block_size, query_block_size=None):
    out, lse = blocked_attention(q, k, v, mask, block_size, query_block_size, return_lse=True)
    return blocked_attention_backward(q, k, v, out, lse, d_out, mask, block_size, query_block_size)


@pytest.mark.parametrize("mask_name", list(masks()))
@pytest.mark.parametrize("block_size", list(range(1, LK + 2)))
def test_gradients_equal_torch_autograd_for_every_block_size(mask_name, block_size):
    q, k, v, d_out = inputs(block_size)
    mask = masks()[mask_name]
    got = backward(q, k, v, d_out, mask, block_size)
    want = autograd(q, k, v, d_out, mask)
    for name, g, w in zip(("dq", "dk", "dv"), got, want):
        assert g.shape == w.shape, name
        np.testing.assert_allclose(g, w, rtol=0, atol=1e-10, err_msg=name)


@pytest.mark.parametrize("query_block_size", [1, 2, 3, 5, 11, 20])
@pytest.mark.parametrize("mask_name", ["none", "fully masked rows", "first blocks masked"])
def test_gradients_equal_torch_autograd_with_query_blocks(query_block_size, mask_name):
    q, k, v, d_out = inputs(query_block_size)
    mask = masks()[mask_name]
    got = backward(q, k, v, d_out, mask, 4, query_block_size)
    for g, w in zip(got, autograd(q, k, v, d_out, mask)):
        np.testing.assert_allclose(g, w, rtol=0, atol=1e-10)


def test_context_mask_gives_the_gradients_of_the_padding_mask():
    q, k, v, d_out = inputs(1)
    context_mask = np.random.default_rng(2).random((2, LK)) > 0.3
    out, lse = blocked_attention(q, k, v, block_size=4, context_mask=context_mask, return_lse=True)
    got = blocked_attention_backward(q, k, v, out, lse, d_out, block_size=4, context_mask=context_mask)
    for g, w in zip(got, autograd(q, k, v, d_out, context_mask[:, None, :])):
        np.testing.assert_allclose(g, w, rtol=0, atol=1e-10)


def test_gradients_of_broadcast_inputs_are_summed_like_autograd():
    rng = np.random.default_rng(3)
    q = rng.normal(size=(1, 3, LQ, DK))  # shared by both batch elements
    k, v = rng.normal(size=(2, 3, LK, DK)), rng.normal(size=(2, 1, LK, DV))  # v shared by the heads
    d_out = rng.normal(size=(2, 3, LQ, DV))
    got = backward(q, k, v, d_out, None, 5)
    for g, w, a in zip(got, autograd(q, k, v, d_out), (q, k, v)):
        assert g.shape == a.shape
        np.testing.assert_allclose(g, w, rtol=0, atol=1e-10)


def test_gradients_equal_central_finite_differences():
    q, k, v, d_out = inputs(4, lead=(), Lq=5, Lk=7)
    mask = np.random.default_rng(5).random((5, 7)) > 0.3
    mask[2] = False  # a fully masked row: its gradient is 0

    def loss(q_, k_, v_):
        return float(np.sum(blocked_attention(q_, k_, v_, mask, block_size=3) * d_out))

    got = backward(q, k, v, d_out, mask, 3)
    h = 1e-6
    for which, grad in enumerate(got):
        args = [q, k, v]
        numeric = np.zeros_like(args[which])
        for index in np.ndindex(*args[which].shape):
            plus, minus = [a.copy() for a in args], [a.copy() for a in args]
            plus[which][index] += h
            minus[which][index] -= h
            numeric[index] = (loss(*plus) - loss(*minus)) / (2 * h)
        np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)


def test_lse_is_the_log_sum_exp_of_the_masked_scaled_scores():
    q, k, v, _ = inputs(6)
    mask = masks()["fully masked rows"]
    _, lse = blocked_attention(q, k, v, mask, block_size=4, return_lse=True)
    scores = torch.tensor(q) @ torch.tensor(k).transpose(-1, -2) / DK ** 0.5
    want = torch.logsumexp(scores.masked_fill(~torch.tensor(mask), -torch.inf), dim=-1).numpy()
    np.testing.assert_allclose(lse, want, rtol=0, atol=1e-12)  # -inf where the row has no key
    assert np.isneginf(lse[0, 3]) and np.isneginf(lse[1, 0])


def test_return_lse_does_not_change_the_output():
    q, k, v, _ = inputs(7)
    out, _ = blocked_attention(q, k, v, block_size=4, return_lse=True)
    np.testing.assert_array_equal(out, blocked_attention(q, k, v, block_size=4))


def test_fully_masked_rows_get_zero_gradient_and_masked_keys_too():
    q, k, v, d_out = inputs(8)
    mask = masks()["fully masked rows"]
    dq, dk, dv = backward(q, k, v, d_out, mask, 4)
    assert (dq[0, 3] == 0).all() and (dq[1, [0, 10]] == 0).all()
    never = ~mask.any(axis=-2)  # keys no query may attend to
    assert (dk[never] == 0).all() and (dv[never] == 0).all()


def test_shape_mistakes_are_named():
    q, k, v, d_out = inputs(9)
    out, lse = blocked_attention(q, k, v, return_lse=True)
    with pytest.raises(ValueError, match=r"lse must have shape \(2, 11\)"):
        blocked_attention_backward(q, k, v, out, lse[..., None], d_out)
    with pytest.raises(ValueError, match=r"d_out must have shape \(2, 11, 3\)"):
        blocked_attention_backward(q, k, v, out, lse, d_out[..., :2])
    d_out[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="d_out must be finite"):
        blocked_attention_backward(q, k, v, out, lse, d_out)


def peak_extra_bytes(L, block_size=64, d=16):
    rng = np.random.default_rng(0)
    q, k, v, d_out = (rng.normal(size=(L, d)) for _ in range(4))
    out, lse = blocked_attention(q, k, v, block_size=block_size, return_lse=True)
    tracemalloc.start()
    tracemalloc.reset_peak()
    blocked_attention_backward(q, k, v, out, lse, d_out, block_size=block_size)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def test_peak_memory_of_the_backward_grows_linearly_not_quadratically():
    small, large = peak_extra_bytes(512), peak_extra_bytes(2048)
    # Linear growth gives a ratio near 4 for 4x the length; quadratic growth would give 16.
    assert large / small < 6, (small, large)
    # And a fraction of one (L, L) float64 array, of which the plain backward needs several.
    assert large < 2048 * 2048 * 8 / 4, (small, large)
