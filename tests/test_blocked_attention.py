"""Specification of crossmodal_edu.blocked_attention: the online softmax is exact, block by block.

References are independent of the code under test: the NumPy reference
``crossmodal_edu.numpy_attention.scaled_dot_product_attention`` (which builds the full score matrix),
PyTorch's ``scaled_dot_product_attention`` in float64, and a softmax written out in the test.
Modalities always differ: Lq != Lk and d_k != d_v.
"""

import math
import tracemalloc
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from crossmodal_edu.blocked_attention import blocked_attention, online_softmax_update
from crossmodal_edu.numpy_attention import causal_mask, padding_mask, scaled_dot_product_attention

EXACT = 1e-12  # float64 rounding, as the issue asks
Lq, Lk, d_k, d_v = 37, 53, 8, 5  # 53 is prime: most block sizes do not divide it


def inputs(seed, lead=(2, 3), Lq=Lq, Lk=Lk, d_k=d_k, d_v=d_v, scale=1.0):
    rng = np.random.default_rng(seed)
    q = scale * rng.normal(size=(*lead, Lq, d_k))
    k = scale * rng.normal(size=(*lead, Lk, d_k))
    v = rng.normal(size=(*lead, Lk, d_v))
    return q, k, v


def reference_out(q, k, v, mask=None):
    return scaled_dot_product_attention(q, k, v, mask)[0]


def max_diff(a, b):
    return float(np.abs(a - b).max())


# ---------------------------------------------------------------- exactness


@pytest.mark.parametrize("block_size", [1, 2, 7, 16, 52, 53, 54, 1000])
@pytest.mark.parametrize("seed", [0, 1])
def test_equals_reference_for_every_key_block_size(block_size, seed):
    q, k, v = inputs(seed)
    assert max_diff(blocked_attention(q, k, v, block_size=block_size), reference_out(q, k, v)) < EXACT


@pytest.mark.parametrize("query_block_size", [1, 5, 36, 37, 100])
@pytest.mark.parametrize("block_size", [3, 16])
def test_equals_reference_with_query_blocks_too(block_size, query_block_size):
    q, k, v = inputs(2)
    out = blocked_attention(q, k, v, block_size=block_size, query_block_size=query_block_size)
    assert max_diff(out, reference_out(q, k, v)) < EXACT


@pytest.mark.parametrize("block_size", [1, 4, 10, 53])
def test_equals_torch_sdpa_in_float64(block_size):
    q, k, v = inputs(3)
    theirs = F.scaled_dot_product_attention(*(torch.from_numpy(a) for a in (q, k, v))).numpy()
    assert max_diff(blocked_attention(q, k, v, block_size=block_size), theirs) < EXACT


def test_equals_a_softmax_written_out_by_hand():
    q, k, v = inputs(4, lead=())
    scores = q @ k.T / math.sqrt(d_k)  # (Lq, Lk)
    e = np.exp(scores - scores.max(axis=1, keepdims=True))
    expected = (e / e.sum(axis=1, keepdims=True)) @ v
    assert max_diff(blocked_attention(q, k, v, block_size=6), expected) < EXACT


@pytest.mark.parametrize("block_size", [1, 8, 13, 53])
def test_padding_mask_matches_reference(block_size):
    q, k, v = inputs(5, lead=(3,))
    mask = padding_mask([53, 20, 1], max_len=Lk)[:, None, :]  # (B, 1, Lk)
    out = blocked_attention(q, k, v, mask, block_size=block_size)
    assert max_diff(out, reference_out(q, k, v, mask)) < EXACT


@pytest.mark.parametrize("block_size", [1, 8, 13])
def test_causal_mask_matches_reference_and_torch(block_size):
    q, k, v = inputs(6, lead=(2,))
    mask = causal_mask(Lq, Lk)  # (Lq, Lk), top-left aligned
    out = blocked_attention(q, k, v, mask, block_size=block_size, query_block_size=10)
    assert max_diff(out, reference_out(q, k, v, mask)) < EXACT
    theirs = F.scaled_dot_product_attention(*(torch.from_numpy(a) for a in (q, k, v)), is_causal=True)
    assert max_diff(out, theirs.numpy()) < EXACT


@pytest.mark.parametrize("block_size", [1, 5, 16])
def test_random_full_mask_matches_reference(block_size):
    q, k, v = inputs(7)
    mask = np.random.default_rng(7).random((2, 3, Lq, Lk)) > 0.6  # (B, H, Lq, Lk)
    mask[..., 0] = True  # every query keeps one key
    out = blocked_attention(q, k, v, mask, block_size=block_size, query_block_size=8)
    assert max_diff(out, reference_out(q, k, v, mask)) < EXACT


@pytest.mark.parametrize("block_size", [1, 4, 16, 53])
def test_fully_masked_rows_give_a_zero_output_and_no_nan(block_size):
    q, k, v = inputs(8)
    mask = np.random.default_rng(8).random((2, 3, Lq, Lk)) > 0.5
    mask[0, 1, 4] = False  # one query of one head sees nothing
    mask[1, :, :, :] = False  # a whole batch element sees nothing
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "invalid value" warning either
        out = blocked_attention(q, k, v, mask, block_size=block_size)
    assert not np.isnan(out).any()
    assert np.all(out[0, 1, 4] == 0.0) and np.all(out[1] == 0.0)
    assert max_diff(out, reference_out(q, k, v, mask)) < EXACT


def test_rows_whose_first_blocks_are_all_masked_recover_when_keys_appear():
    # The running max is -inf for the first blocks, then becomes finite: the -inf - -inf trap.
    q, k, v = inputs(9, lead=())
    mask = np.zeros((Lq, Lk), dtype=bool)
    mask[:, 40:] = True  # only the last 13 keys are visible
    mask[::3, 45] = False
    out = blocked_attention(q, k, v, mask, block_size=8)
    assert max_diff(out, reference_out(q, k, v, mask)) < EXACT


def test_huge_scores_do_not_overflow():
    q, k, v = inputs(10, scale=40.0)  # scores of order 1e4: exp would overflow without the max
    out = blocked_attention(q, k, v, block_size=7)
    assert np.isfinite(out).all()
    assert max_diff(out, reference_out(q, k, v)) < EXACT


def test_later_blocks_with_a_larger_max_rescale_the_earlier_ones():
    # Keys sorted by increasing score: every block raises the running max, so every step rescales.
    q = np.ones((1, 4))
    k = np.linspace(-3.0, 3.0, 20)[:, None] * np.ones((1, 4))  # (20, 4)
    v = np.arange(40.0).reshape(20, 2)  # (20, 2)
    assert max_diff(blocked_attention(q, k, v, block_size=3), reference_out(q, k, v)) < EXACT


def test_leading_dims_broadcast_like_the_reference():
    rng = np.random.default_rng(11)
    q = rng.normal(size=(4, 2, Lq, d_k))  # (B, H, Lq, d_k)
    k = rng.normal(size=(1, 2, Lk, d_k))  # shared over the batch
    v = rng.normal(size=(Lk, d_v))  # shared over batch and heads
    out = blocked_attention(q, k, v, block_size=9)
    assert out.shape == (4, 2, Lq, d_v)
    assert max_diff(out, reference_out(q, k, v)) < EXACT


def test_float32_stays_float32_and_close():
    q, k, v = inputs(12)
    out = blocked_attention(*(a.astype(np.float32) for a in (q, k, v)), block_size=8)
    assert out.dtype == np.float32
    assert max_diff(out, reference_out(q, k, v)) < 1e-5


def test_inputs_are_not_modified():
    q, k, v = inputs(13)
    mask = np.random.default_rng(13).random((Lq, Lk)) > 0.3
    copies = [a.copy() for a in (q, k, v, mask)]
    blocked_attention(q, k, v, mask, block_size=6)
    for before, after in zip(copies, (q, k, v, mask)):
        assert np.array_equal(before, after)


# ---------------------------------------------------------------- the update step


def test_update_one_key_at_a_time_gives_the_softmax_max_and_denominator():
    scores = np.array([[1.0, 3.0, 2.0, 5.0, -1.0]])  # one query, five keys
    v = np.arange(10.0).reshape(5, 2)
    m, l, acc = np.full((1, 1), -np.inf), np.zeros((1, 1)), np.zeros((1, 2))
    for j in range(5):
        m, l, acc = online_softmax_update(m, l, acc, scores[:, j:j + 1], v[j:j + 1])
    assert m[0, 0] == 5.0
    assert abs(l[0, 0] - np.exp(scores - 5.0).sum()) < EXACT
    e = np.exp(scores - 5.0)
    assert max_diff(acc / l, (e / e.sum()) @ v) < EXACT


def test_update_from_the_empty_state_is_one_plain_softmax_block():
    rng = np.random.default_rng(14)
    scores, v = rng.normal(size=(3, 6)), rng.normal(size=(6, 2))
    m, l, acc = online_softmax_update(np.full((3, 1), -np.inf), np.zeros((3, 1)), np.zeros((3, 2)), scores, v)
    e = np.exp(scores - scores.max(axis=1, keepdims=True))
    assert np.array_equal(m, scores.max(axis=1, keepdims=True))
    assert max_diff(acc / l, (e / e.sum(axis=1, keepdims=True)) @ v) < EXACT


def test_update_of_an_all_masked_block_keeps_the_empty_state_exactly():
    m0, l0, acc0 = np.full((2, 1), -np.inf), np.zeros((2, 1)), np.zeros((2, 3))
    scores = np.full((2, 4), -np.inf)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m, l, acc = online_softmax_update(m0, l0, acc0, scores, np.ones((4, 3)))
    assert np.all(m == -np.inf) and np.all(l == 0.0) and np.all(acc == 0.0)


def test_update_does_not_modify_its_scores():
    scores = np.array([[0.5, -2.0, 1.5]])
    kept = scores.copy()
    online_softmax_update(np.full((1, 1), -np.inf), np.zeros((1, 1)), np.zeros((1, 1)), scores, np.ones((3, 1)))
    assert np.array_equal(scores, kept)


# ---------------------------------------------------------------- memory


def test_never_allocates_anything_as_large_as_the_score_matrix():
    L, d = 1024, 16
    q, k, v = inputs(15, lead=(), Lq=L, Lk=L, d_k=d, d_v=d)
    score_bytes = L * L * 8
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        blocked_attention(q, k, v, block_size=64)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Three (L, 64) blocks plus the output: about 1.6 MB, against 8 MB for the scores.
    assert peak - before < score_bytes / 4


# ---------------------------------------------------------------- mistakes a learner can make


def test_mismatched_d_k_names_both_shapes():
    q, k, v = inputs(16)
    with pytest.raises(ValueError, match=r"share d_k.*q has shape \(2, 3, 37, 8\).*k has shape \(2, 3, 53, 6\)"):
        blocked_attention(q, k[..., :6], v)


def test_mismatched_Lk_names_both_shapes():
    q, k, v = inputs(17)
    with pytest.raises(ValueError, match=r"share Lk.*k has shape \(2, 3, 53, 8\).*v has shape \(2, 3, 50, 5\)"):
        blocked_attention(q, k, v[..., :50, :])


def test_leading_dims_that_do_not_broadcast_are_rejected():
    q, k, v = inputs(18)
    with pytest.raises(ValueError, match="leading"):
        blocked_attention(q, k[:1, :2], v[:1, :2])


def test_one_dimensional_inputs_are_rejected():
    with pytest.raises(ValueError, match=r"q: expected at least 2 dims"):
        blocked_attention(np.ones(4), np.ones((3, 4)), np.ones((3, 2)))


def test_float_mask_is_rejected_with_a_hint():
    q, k, v = inputs(19)
    with pytest.raises(ValueError, match="boolean"):
        blocked_attention(q, k, v, np.ones((Lq, Lk)))


def test_mask_of_the_wrong_shape_names_both_shapes():
    q, k, v = inputs(20)
    with pytest.raises(ValueError, match=r"mask has shape \(37, 52\).*\(2, 3, 37, 53\)"):
        blocked_attention(q, k, v, np.ones((Lq, Lk - 1), dtype=bool))


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "64"])
def test_block_sizes_must_be_positive_integers(bad):
    q, k, v = inputs(21)
    with pytest.raises(ValueError, match="block_size must be a positive integer"):
        blocked_attention(q, k, v, block_size=bad)
    with pytest.raises(ValueError, match="query_block_size must be a positive integer"):
        blocked_attention(q, k, v, query_block_size=bad)
