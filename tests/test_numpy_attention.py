"""Specification of crossmodal_edu.numpy_attention.

References are independent of the code under test: float64 loops written here, and PyTorch's
``scaled_dot_product_attention``, ``layer_norm`` and ``MultiheadAttention`` on the CPU in float64.
Modalities always differ: Lq != Lk, query_dim != context_dim, d_k != d_v.
"""

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from crossmodal_edu.numpy_attention import (
    CrossAttention,
    CrossAttentionBlock,
    causal_mask,
    layer_norm,
    merge_heads,
    padding_mask,
    scaled_dot_product_attention,
    softmax,
    split_heads,
)

SEEDS = [0, 1, 2]
TOL = 1e-10


# ---------------------------------------------------------------- references written by hand


def loop_softmax(row):
    """Softmax of a list of floats, -inf allowed; an all -inf row gives zeros."""
    finite = [s for s in row if s != -math.inf]
    if not finite:
        return [0.0] * len(row)
    m = max(finite)
    e = [0.0 if s == -math.inf else math.exp(s - m) for s in row]
    total = sum(e)
    return [x / total for x in e]


def loop_attention(q, k, v, mask=None):
    """Attention with explicit Python loops over the leading dims, queries and keys."""
    lead = q.shape[:-2]
    Lq, d_k = q.shape[-2:]
    Lk, d_v = v.shape[-2:]
    if mask is None:
        mask = np.ones(lead + (Lq, Lk), dtype=bool)
    out = np.zeros(lead + (Lq, d_v))
    weights = np.zeros(lead + (Lq, Lk))
    for b in np.ndindex(*lead):
        for i in range(Lq):
            scores = []
            for j in range(Lk):
                if mask[b + (i, j)]:
                    s = sum(float(q[b + (i, d)]) * float(k[b + (j, d)]) for d in range(d_k))
                    scores.append(s / math.sqrt(d_k))
                else:
                    scores.append(-math.inf)
            row = loop_softmax(scores)
            for j in range(Lk):
                weights[b + (i, j)] = row[j]
                for e in range(d_v):
                    out[b + (i, e)] += row[j] * float(v[b + (j, e)])
    return out, weights


def loop_cross_attention(layer, x, context, context_mask=None):
    """Multi-head cross-attention from the layer's weights, one head and one token at a time."""
    B, Lq, _ = x.shape
    Lk = context.shape[1]
    H, hd, vhd = layer.num_heads, layer.head_dim, layer.v_head_dim
    zero = lambda n: np.zeros(n)  # noqa: E731
    b_q = layer.b_q if layer.b_q is not None else zero(H * hd)
    b_k = layer.b_k if layer.b_k is not None else zero(H * hd)
    b_v = layer.b_v if layer.b_v is not None else zero(H * vhd)
    b_o = layer.b_o if layer.b_o is not None else zero(layer.query_dim)
    out = np.zeros((B, Lq, layer.query_dim))
    weights = np.zeros((B, H, Lq, Lk))
    for b in range(B):
        for i in range(Lq):
            concat = []
            for h in range(H):
                qcols = slice(h * hd, (h + 1) * hd)
                vcols = slice(h * vhd, (h + 1) * vhd)
                q_i = x[b, i] @ layer.W_q[:, qcols] + b_q[qcols]
                scores = []
                for j in range(Lk):
                    if context_mask is not None and not context_mask[b, j]:
                        scores.append(-math.inf)
                        continue
                    k_j = context[b, j] @ layer.W_k[:, qcols] + b_k[qcols]
                    scores.append(float(np.dot(q_i, k_j)) / math.sqrt(hd))
                row = loop_softmax(scores)
                head = np.zeros(vhd)
                for j in range(Lk):
                    v_j = context[b, j] @ layer.W_v[:, vcols] + b_v[vcols]
                    head += row[j] * v_j
                    weights[b, h, i, j] = row[j]
                concat.extend(head)
            out[b, i] = np.array(concat) @ layer.W_o + b_o
    return out, weights


def loop_layer_norm(x, eps=1e-5):
    y = np.zeros_like(x)
    for idx in np.ndindex(*x.shape[:-1]):
        row = [float(t) for t in x[idx]]
        mu = sum(row) / len(row)
        var = sum((t - mu) ** 2 for t in row) / len(row)
        y[idx] = [(t - mu) / math.sqrt(var + eps) for t in row]
    return y


def random_qkv(seed, lead=(2, 3), Lq=4, Lk=6, d_k=5, d_v=7):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal(lead + (Lq, d_k))
    k = rng.standard_normal(lead + (Lk, d_k))
    v = rng.standard_normal(lead + (Lk, d_v))
    return rng, q, k, v


def random_mask(rng, shape, fully_masked_row=True):
    mask = rng.random(shape) < 0.6
    if fully_masked_row:
        mask[(0,) * (len(shape) - 2) + (1,)] = False  # query 1 of the first batch sees nothing
    return mask


def to_torch(a):
    return torch.from_numpy(np.ascontiguousarray(a))


# ---------------------------------------------------------------- softmax


@pytest.mark.parametrize("seed", SEEDS)
def test_softmax_matches_loop_reference(seed):
    x = np.random.default_rng(seed).standard_normal((3, 4, 6)) * 5
    expected = np.array([[loop_softmax(list(row)) for row in block] for block in x])
    np.testing.assert_allclose(softmax(x), expected, rtol=0, atol=1e-14)


def test_softmax_rows_sum_to_one():
    x = np.random.default_rng(0).standard_normal((5, 9)) * 10
    np.testing.assert_allclose(softmax(x).sum(axis=-1), 1.0, rtol=0, atol=1e-14)


def test_softmax_along_another_axis_normalises_that_axis():
    x = np.random.default_rng(0).standard_normal((4, 3))
    np.testing.assert_allclose(softmax(x, axis=0), softmax(x.T).T, rtol=0, atol=1e-15)
    np.testing.assert_allclose(softmax(x, axis=0).sum(axis=0), 1.0, rtol=0, atol=1e-14)


def test_softmax_is_shift_invariant():
    x = np.random.default_rng(0).standard_normal((3, 7))
    shift = np.random.default_rng(1).standard_normal((3, 1)) * 100
    np.testing.assert_allclose(softmax(x + shift), softmax(x), rtol=0, atol=1e-12)


def test_softmax_has_no_overflow_or_nan_at_large_logits():
    x = np.array([[1e4, 0.0, -1e4], [1e4, 1e4, -1e4], [-1e4, -1e4, -1e4]])
    with np.errstate(all="raise"):
        y = softmax(x)
    assert np.isfinite(y).all()
    np.testing.assert_array_equal(y[0], [1.0, 0.0, 0.0])
    np.testing.assert_array_equal(y[1], [0.5, 0.5, 0.0])
    np.testing.assert_allclose(y[2], [1 / 3, 1 / 3, 1 / 3], rtol=0, atol=1e-15)


def test_softmax_of_an_all_minus_inf_row_is_zeros_without_warnings():
    x = np.array([[-np.inf, -np.inf, -np.inf], [0.0, -np.inf, 0.0]])
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        y = softmax(x)
    np.testing.assert_array_equal(y, [[0.0, 0.0, 0.0], [0.5, 0.0, 0.5]])


def test_softmax_keeps_float32_and_promotes_integers_to_float64():
    assert softmax(np.ones((2, 3), dtype=np.float32)).dtype == np.float32
    assert softmax(np.arange(6).reshape(2, 3)).dtype == np.float64


def test_softmax_does_not_modify_its_input():
    x = np.random.default_rng(0).standard_normal((3, 4))
    before = x.copy()
    softmax(x)
    np.testing.assert_array_equal(x, before)


# ---------------------------------------------------------------- scaled dot-product attention


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("masked", [False, True])
def test_attention_matches_loop_reference(seed, masked):
    rng, q, k, v = random_qkv(seed)
    mask = random_mask(rng, (2, 3, 4, 6)) if masked else None
    out, weights = scaled_dot_product_attention(q, k, v, mask)
    ref_out, ref_weights = loop_attention(q, k, v, mask)
    assert out.shape == (2, 3, 4, 7) and weights.shape == (2, 3, 4, 6)
    np.testing.assert_allclose(weights, ref_weights, rtol=0, atol=TOL)
    np.testing.assert_allclose(out, ref_out, rtol=0, atol=TOL)


@pytest.mark.parametrize("seed", SEEDS)
def test_attention_without_mask_matches_torch_sdpa(seed):
    _, q, k, v = random_qkv(seed)
    out, _ = scaled_dot_product_attention(q, k, v)
    expected = F.scaled_dot_product_attention(to_torch(q), to_torch(k), to_torch(v)).numpy()
    np.testing.assert_allclose(out, expected, rtol=0, atol=TOL)


@pytest.mark.parametrize("seed", SEEDS)
def test_attention_with_mask_matches_torch_sdpa_whose_mask_also_means_may_attend(seed):
    rng, q, k, v = random_qkv(seed)
    mask = random_mask(rng, (2, 3, 4, 6))
    out, _ = scaled_dot_product_attention(q, k, v, mask)
    expected = F.scaled_dot_product_attention(
        to_torch(q), to_torch(k), to_torch(v), attn_mask=to_torch(mask)
    ).numpy()
    # PyTorch may give NaN on fully masked rows; ours gives zeros there (checked below).
    seen = mask.any(axis=-1)  # (2, 3, 4)
    assert (~seen).any(), "the test should include a fully masked query row"
    np.testing.assert_allclose(out[seen], expected[seen], rtol=0, atol=TOL)
    np.testing.assert_array_equal(out[~seen], 0.0)


def test_attention_weights_rows_sum_to_one():
    rng, q, k, v = random_qkv(0)
    mask = random_mask(rng, (2, 3, 4, 6), fully_masked_row=False)
    mask[..., 0] = True
    _, weights = scaled_dot_product_attention(q, k, v, mask)
    np.testing.assert_allclose(weights.sum(axis=-1), 1.0, rtol=0, atol=1e-14)


def test_masked_keys_get_exactly_zero_weight():
    rng, q, k, v = random_qkv(1)
    mask = random_mask(rng, (2, 3, 4, 6))
    _, weights = scaled_dot_product_attention(q, k, v, mask)
    assert (weights[~mask] == 0.0).all()
    assert (weights[mask] > 0.0).all()


def test_masking_keys_equals_dropping_them():
    _, q, k, v = random_qkv(2)
    keep = np.array([True, False, True, True, False, True])
    out, weights = scaled_dot_product_attention(q, k, v, keep)
    out_dropped, weights_dropped = scaled_dot_product_attention(q, k[..., keep, :], v[..., keep, :])
    np.testing.assert_allclose(out, out_dropped, rtol=0, atol=1e-14)
    np.testing.assert_allclose(weights[..., keep], weights_dropped, rtol=0, atol=1e-14)


def test_adding_a_constant_to_each_querys_scores_changes_nothing():
    # Append a feature: q' = [q * sqrt((d+1)/d), c_i] and k' = [k, 1], so that
    # q'.k' / sqrt(d+1) = q.k / sqrt(d) + c_i / sqrt(d+1): the same constant for every key.
    rng, q, k, v = random_qkv(3)
    d = q.shape[-1]
    c = rng.standard_normal(q.shape[:-1] + (1,)) * 50
    q_shifted = np.concatenate([q * math.sqrt((d + 1) / d), c], axis=-1)
    k_shifted = np.concatenate([k, np.ones(k.shape[:-1] + (1,))], axis=-1)
    out, weights = scaled_dot_product_attention(q, k, v)
    out_shifted, weights_shifted = scaled_dot_product_attention(q_shifted, k_shifted, v)
    np.testing.assert_allclose(weights_shifted, weights, rtol=0, atol=1e-12)
    np.testing.assert_allclose(out_shifted, out, rtol=0, atol=1e-12)


def test_permuting_keys_and_values_together_changes_nothing():
    rng, q, k, v = random_qkv(4)
    mask = random_mask(rng, (2, 3, 4, 6))
    perm = rng.permutation(6)
    out, weights = scaled_dot_product_attention(q, k, v, mask)
    out_p, weights_p = scaled_dot_product_attention(q, k[..., perm, :], v[..., perm, :], mask[..., perm])
    np.testing.assert_allclose(out_p, out, rtol=0, atol=1e-14)
    np.testing.assert_allclose(weights_p, weights[..., perm], rtol=0, atol=1e-15)


def test_fully_masked_query_row_gets_zero_weights_and_zero_output_without_warnings():
    _, q, k, v = random_qkv(5)
    mask = np.ones((4, 6), dtype=bool)
    mask[2] = False
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        out, weights = scaled_dot_product_attention(q, k, v, mask)
    np.testing.assert_array_equal(weights[..., 2, :], 0.0)
    np.testing.assert_array_equal(out[..., 2, :], 0.0)
    assert np.isfinite(out).all() and np.isfinite(weights).all()


def test_attention_broadcasts_leading_dims_like_matmul():
    rng = np.random.default_rng(6)
    q = rng.standard_normal((2, 3, 4, 5))  # (B, num_heads, Lq, d_k)
    k = rng.standard_normal((6, 5))  # one shared (Lk, d_k)
    v = rng.standard_normal((3, 6, 7))  # per head (num_heads, Lk, d_v)
    mask = rng.random((2, 1, 1, 6)) < 0.7  # per batch, shared by heads and queries
    mask[..., 0] = True
    out, weights = scaled_dot_product_attention(q, k, v, mask)
    full = lambda a, tail: np.broadcast_to(a, (2, 3) + tail)  # noqa: E731
    ref_out, ref_weights = loop_attention(q, full(k, (6, 5)), full(v, (6, 7)), full(mask, (4, 6)))
    np.testing.assert_allclose(out, ref_out, rtol=0, atol=TOL)
    np.testing.assert_allclose(weights, ref_weights, rtol=0, atol=TOL)


def test_attention_keeps_float32():
    _, q, k, v = random_qkv(0)
    out, weights = scaled_dot_product_attention(*(a.astype(np.float32) for a in (q, k, v)))
    assert out.dtype == np.float32 and weights.dtype == np.float32


def test_attention_does_not_modify_its_inputs():
    rng, q, k, v = random_qkv(7)
    mask = random_mask(rng, (2, 3, 4, 6))
    before = [a.copy() for a in (q, k, v, mask)]
    scaled_dot_product_attention(q, k, v, mask)
    for a, b in zip((q, k, v, mask), before):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(
    "shapes, mask, expected",
    [
        pytest.param(((2, 5, 8), (2, 7, 6), (2, 7, 4)), None, ["d_k", "(2, 5, 8)", "(2, 7, 6)"], id="d_k-mismatch"),
        pytest.param(((2, 5, 8), (2, 7, 8), (2, 6, 4)), None, ["Lk", "(2, 7, 8)", "(2, 6, 4)"], id="Lk-mismatch"),
        pytest.param(((2, 5, 8), (3, 7, 8), (3, 7, 4)), None, ["(2, 5, 8)", "(3, 7, 8)"], id="batch-mismatch"),
        pytest.param(((8,), (7, 8), (7, 4)), None, ["(..., L", "at least 2 dims", "(8,)"], id="1-D-q"),
        pytest.param(((5, 8), (8,), (7, 4)), None, ["at least 2 dims", "(8,)"], id="1-D-k"),
        pytest.param(((5, 8), (7, 8), (4,)), None, ["at least 2 dims", "(4,)"], id="1-D-v"),
        pytest.param(
            ((2, 5, 8), (2, 7, 8), (2, 7, 4)), np.ones((2, 5, 6), bool), ["(2, 5, 6)", "(2, 5, 7)"], id="mask-shape"
        ),
        pytest.param(
            ((2, 5, 8), (2, 7, 8), (2, 7, 4)), np.ones((2, 7, 5), bool), ["(2, 7, 5)", "(2, 5, 7)"], id="mask-transposed"
        ),
        pytest.param(
            ((2, 5, 8), (2, 7, 8), (2, 7, 4)), np.ones((2, 5, 7)), ["float64", "True = may attend", "> 0.5"], id="float-mask"
        ),
        pytest.param(
            ((2, 5, 8), (2, 7, 8), (2, 7, 4)),
            np.where(np.eye(5, 7, dtype=bool), 0.0, -np.inf),
            ["float64", "True = may attend", "== 0"],
            id="additive-mask",
        ),
    ],
)
def test_attention_shape_mistakes_raise_value_error_naming_the_shapes(shapes, mask, expected):
    q, k, v = (np.zeros(s) for s in shapes)
    with pytest.raises(ValueError) as info:
        scaled_dot_product_attention(q, k, v, mask)
    for text in expected:
        assert text in str(info.value)


# ---------------------------------------------------------------- masks


def test_padding_mask_matches_loop_construction():
    lengths = [3, 0, 5, 1]
    mask = padding_mask(lengths, max_len=6)
    expected = np.zeros((4, 6), dtype=bool)
    for b, n in enumerate(lengths):
        for j in range(n):
            expected[b, j] = True
    assert mask.dtype == bool
    np.testing.assert_array_equal(mask, expected)


def test_padding_mask_max_len_defaults_to_longest_sequence():
    assert padding_mask(np.array([2, 4])).shape == (2, 4)


@pytest.mark.parametrize(
    "lengths, max_len, expected",
    [([2, 7], 5, "at most max_len = 5"), ([2, -1], None, "non-negative"), ([[1, 2]], None, "(1, 2)")],
)
def test_padding_mask_rejects_bad_lengths(lengths, max_len, expected):
    with pytest.raises(ValueError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        padding_mask(lengths, max_len)


@pytest.mark.parametrize("Lq, Lk", [(4, 4), (3, 6), (6, 3)])
def test_causal_mask_matches_loop_construction(Lq, Lk):
    expected = np.array([[j <= i for j in range(Lk)] for i in range(Lq)])
    mask = causal_mask(Lq, Lk)
    assert mask.dtype == bool
    np.testing.assert_array_equal(mask, expected)


def test_causal_mask_defaults_to_square():
    np.testing.assert_array_equal(causal_mask(3), causal_mask(3, 3))


@pytest.mark.parametrize("Lq, Lk", [(3, 6), (6, 3)])
def test_causal_mask_is_aligned_top_left_like_torch_is_causal(Lq, Lk):
    # With v = identity, torch's output *is* its weights, so its mask is where they are non-zero.
    q = torch.randn(Lq, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    k = torch.randn(Lk, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    weights = F.scaled_dot_product_attention(q, k, torch.eye(Lk, dtype=torch.float64), is_causal=True)
    np.testing.assert_array_equal(causal_mask(Lq, Lk), weights.numpy() > 0)
    out, _ = scaled_dot_product_attention(q.numpy(), k.numpy(), np.eye(Lk), causal_mask(Lq, Lk))
    np.testing.assert_allclose(out, weights.numpy(), rtol=0, atol=TOL)


# ---------------------------------------------------------------- heads


def test_split_heads_matches_explicit_loop():
    x = np.random.default_rng(0).standard_normal((2, 5, 12))
    heads = split_heads(x, 3)
    assert heads.shape == (2, 3, 5, 4)
    for b in range(2):
        for h in range(3):
            for t in range(5):
                for i in range(4):
                    assert heads[b, h, t, i] == x[b, t, h * 4 + i]


def test_merge_heads_inverts_split_heads():
    x = np.random.default_rng(1).standard_normal((2, 3, 5, 12))
    np.testing.assert_array_equal(merge_heads(split_heads(x, 4)), x)
    heads = np.random.default_rng(2).standard_normal((2, 4, 5, 3))
    np.testing.assert_array_equal(split_heads(merge_heads(heads), 4), heads)


def test_split_heads_rejects_width_not_divisible_by_num_heads():
    with pytest.raises(ValueError, match=r"divisible by num_heads = 3.*\(2, 5, 8\)"):
        split_heads(np.zeros((2, 5, 8)), 3)


def test_merge_heads_rejects_fewer_than_three_dims():
    with pytest.raises(ValueError, match=r"\(5, 8\)"):
        merge_heads(np.zeros((5, 8)))


# ---------------------------------------------------------------- layer norm


@pytest.mark.parametrize("seed", SEEDS)
def test_layer_norm_matches_torch_in_float64(seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 5, 8)) * 3 + 1
    gamma, beta = rng.standard_normal(8), rng.standard_normal(8)
    expected = F.layer_norm(to_torch(x), (8,), to_torch(gamma), to_torch(beta), eps=1e-5).numpy()
    np.testing.assert_allclose(layer_norm(x, gamma, beta), expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(layer_norm(x), loop_layer_norm(x), rtol=0, atol=1e-12)


def test_layer_norm_rejects_gamma_of_wrong_width():
    with pytest.raises(ValueError, match=r"\(6,\).*\(2, 5, 8\)"):
        layer_norm(np.zeros((2, 5, 8)), gamma=np.ones(6))


# ---------------------------------------------------------------- CrossAttention

# query_dim != context_dim, Lq != Lk; head_dim * num_heads == query_dim so MHA can compare.
QUERY_DIM, CONTEXT_DIM, NUM_HEADS, B, LQ, LK = 8, 6, 2, 3, 4, 5


def cross_inputs(seed, query_dim=QUERY_DIM, context_dim=CONTEXT_DIM):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, LQ, query_dim))
    context = rng.standard_normal((B, LK, context_dim))
    context_mask = padding_mask(rng.integers(1, LK + 1, size=B), LK)
    return x, context, context_mask


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("bias", [True, False])
def test_cross_attention_matches_loop_reference(seed, bias):
    # head_dim and v_head_dim chosen freely, so d_k != d_v and num_heads * head_dim != query_dim.
    layer = CrossAttention(QUERY_DIM, CONTEXT_DIM, num_heads=3, head_dim=2, v_head_dim=5, bias=bias, seed=seed)
    x, context, context_mask = cross_inputs(seed)
    out, weights = layer(x, context, context_mask)
    ref_out, ref_weights = loop_cross_attention(layer, x, context, context_mask)
    assert out.shape == (B, LQ, QUERY_DIM) and weights.shape == (B, 3, LQ, LK)
    np.testing.assert_allclose(out, ref_out, rtol=0, atol=TOL)
    np.testing.assert_allclose(weights, ref_weights, rtol=0, atol=TOL)


def torch_mha_from(layer):
    mha = torch.nn.MultiheadAttention(
        embed_dim=layer.query_dim,
        num_heads=layer.num_heads,
        kdim=layer.context_dim,
        vdim=layer.context_dim,
        batch_first=True,
        dtype=torch.float64,
    )
    with torch.no_grad():
        # nn.Linear computes x @ weight.T, so weight = W.T.
        mha.q_proj_weight.copy_(to_torch(layer.W_q.T))
        mha.k_proj_weight.copy_(to_torch(layer.W_k.T))
        mha.v_proj_weight.copy_(to_torch(layer.W_v.T))
        mha.in_proj_bias.copy_(to_torch(np.concatenate([layer.b_q, layer.b_k, layer.b_v])))
        mha.out_proj.weight.copy_(to_torch(layer.W_o.T))
        mha.out_proj.bias.copy_(to_torch(layer.b_o))
    return mha.eval()


@pytest.mark.parametrize("seed", SEEDS)
def test_cross_attention_matches_torch_multihead_attention(seed):
    layer = CrossAttention(QUERY_DIM, CONTEXT_DIM, num_heads=NUM_HEADS, seed=seed)
    x, context, context_mask = cross_inputs(seed)
    out, weights = layer(x, context, context_mask)
    with torch.no_grad():
        expected, expected_weights = torch_mha_from(layer)(
            to_torch(x),
            to_torch(context),
            to_torch(context),
            key_padding_mask=to_torch(~context_mask),  # torch: True = ignore
            need_weights=True,
            average_attn_weights=False,
        )
    np.testing.assert_allclose(out, expected.numpy(), rtol=0, atol=TOL)
    np.testing.assert_allclose(weights, expected_weights.numpy(), rtol=0, atol=TOL)


def test_torch_key_padding_mask_is_the_inverse_of_context_mask():
    layer = CrossAttention(QUERY_DIM, CONTEXT_DIM, num_heads=NUM_HEADS, seed=0)
    x, context, _ = cross_inputs(0)
    context_mask = np.ones((B, LK), dtype=bool)
    context_mask[:, 3:] = False  # the last two keys are padding; both conventions keep a key
    out, _ = layer(x, context, context_mask)
    mha = torch_mha_from(layer)
    with torch.no_grad():
        args = (to_torch(x), to_torch(context), to_torch(context))
        inverted, _ = mha(*args, key_padding_mask=to_torch(~context_mask))
        not_inverted, _ = mha(*args, key_padding_mask=to_torch(context_mask))
    np.testing.assert_allclose(out, inverted.numpy(), rtol=0, atol=TOL)
    assert np.abs(out - not_inverted.numpy()).max() > 1e-3


def test_cross_attention_masking_context_equals_dropping_padding():
    layer = CrossAttention(QUERY_DIM, CONTEXT_DIM, num_heads=NUM_HEADS, seed=1)
    x, context, _ = cross_inputs(1)
    context_mask = padding_mask([3, 3, 3], LK)
    out, weights = layer(x, context, context_mask)
    out_short, weights_short = layer(x, context[:, :3])
    np.testing.assert_allclose(out, out_short, rtol=0, atol=1e-14)
    np.testing.assert_allclose(weights[..., :3], weights_short, rtol=0, atol=1e-15)
    assert (weights[..., 3:] == 0).all()


def test_cross_attention_on_fully_masked_context_outputs_b_o_without_warnings():
    layer = CrossAttention(QUERY_DIM, CONTEXT_DIM, num_heads=NUM_HEADS, seed=2)
    x, context, _ = cross_inputs(2)
    context_mask = np.ones((B, LK), dtype=bool)
    context_mask[1] = False
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        out, weights = layer(x, context, context_mask)
    np.testing.assert_array_equal(weights[1], 0.0)
    np.testing.assert_allclose(out[1], np.broadcast_to(layer.b_o, (LQ, QUERY_DIM)), rtol=0, atol=0)


def test_cross_attention_accepts_unbatched_inputs():
    layer = CrossAttention(QUERY_DIM, CONTEXT_DIM, num_heads=NUM_HEADS, seed=3)
    x, context, context_mask = cross_inputs(3)
    out, weights = layer(x[0], context[0], context_mask[0])
    batched_out, batched_weights = layer(x, context, context_mask)
    np.testing.assert_allclose(out, batched_out[0], rtol=0, atol=1e-14)
    np.testing.assert_allclose(weights, batched_weights[0], rtol=0, atol=1e-15)


def test_cross_attention_does_not_modify_its_inputs():
    layer = CrossAttention(QUERY_DIM, CONTEXT_DIM, num_heads=NUM_HEADS, seed=4)
    inputs = cross_inputs(4)
    before = [a.copy() for a in inputs]
    layer(*inputs)
    for a, b in zip(inputs, before):
        np.testing.assert_array_equal(a, b)


def test_cross_attention_head_dim_defaults_to_query_dim_over_num_heads():
    layer = CrossAttention(12, 5, num_heads=3)
    assert (layer.head_dim, layer.v_head_dim) == (4, 4)
    assert layer.W_q.shape == (12, 12) and layer.W_k.shape == (5, 12) and layer.W_v.shape == (5, 12)
    assert layer.W_o.shape == (12, 12) and layer.b_o.shape == (12,)


def test_cross_attention_weight_shapes_follow_head_dims():
    layer = CrossAttention(10, 6, num_heads=3, head_dim=4, v_head_dim=2)
    shapes = {n: getattr(layer, n).shape for n in ("W_q", "b_q", "W_k", "b_k", "W_v", "b_v", "W_o", "b_o")}
    assert shapes == {
        "W_q": (10, 12), "b_q": (12,), "W_k": (6, 12), "b_k": (12,),
        "W_v": (6, 6), "b_v": (6,), "W_o": (6, 10), "b_o": (10,),
    }  # fmt: skip


def test_cross_attention_rejects_query_dim_not_divisible_without_head_dim():
    with pytest.raises(ValueError, match="head_dim"):
        CrossAttention(10, 6, num_heads=3)


def test_cross_attention_without_bias_has_none_biases():
    layer = CrossAttention(QUERY_DIM, CONTEXT_DIM, num_heads=NUM_HEADS, bias=False)
    assert all(getattr(layer, n) is None for n in ("b_q", "b_k", "b_v", "b_o"))


def test_same_seed_gives_identical_weights_and_different_seed_different_weights():
    names = ("W_q", "b_q", "W_k", "b_k", "W_v", "b_v", "W_o", "b_o")
    a, b, c = (CrossAttention(QUERY_DIM, CONTEXT_DIM, num_heads=NUM_HEADS, seed=s) for s in (7, 7, 8))
    for n in names:
        np.testing.assert_array_equal(getattr(a, n), getattr(b, n))
        assert not np.array_equal(getattr(a, n), getattr(c, n))


def test_init_is_float64_uniform_within_one_over_sqrt_fan_in():
    layer = CrossAttention(QUERY_DIM, CONTEXT_DIM, num_heads=NUM_HEADS, seed=0)
    fan_in = {"W_q": QUERY_DIM, "b_q": QUERY_DIM, "W_k": CONTEXT_DIM, "b_k": CONTEXT_DIM,
              "W_v": CONTEXT_DIM, "b_v": CONTEXT_DIM, "W_o": QUERY_DIM, "b_o": QUERY_DIM}  # fmt: skip
    for n, f in fan_in.items():
        w = getattr(layer, n)
        assert w.dtype == np.float64
        assert np.abs(w).max() <= 1 / math.sqrt(f)


@pytest.mark.parametrize(
    "x_shape, context_shape, mask_shape, expected",
    [
        pytest.param((2, 5, 7), (2, 4, 6), None, ["(..., Lq, 8)", "(2, 5, 7)"], id="x-width"),
        pytest.param((2, 5, 8), (2, 4, 8), None, ["(..., Lk, 6)", "(2, 4, 8)"], id="context-width"),
        pytest.param((2, 5, 8), (3, 4, 6), None, ["(2, 5, 8)", "(3, 4, 6)"], id="batch-mismatch"),
        pytest.param((2, 5, 8), (2, 4, 6), (2, 5), ["(2, 5)", "(2, 4)", "True = real token"], id="mask-uses-Lq"),
        pytest.param((2, 5, 8), (2, 4, 6), (4,), ["(4,)", "(2, 4)", "True = real token"], id="mask-unbatched"),
        pytest.param((8,), (2, 4, 6), None, ["at least 2 dims", "(8,)"], id="1-D-x"),
    ],
)
def test_cross_attention_shape_mistakes_raise_value_error_naming_the_shapes(x_shape, context_shape, mask_shape, expected):
    layer = CrossAttention(8, 6, num_heads=2)
    mask = None if mask_shape is None else np.ones(mask_shape, dtype=bool)
    for module in (layer, CrossAttentionBlock(8, 6, num_heads=2)):
        with pytest.raises(ValueError) as info:
            module(np.zeros(x_shape), np.zeros(context_shape), mask)
        for text in expected:
            assert text in str(info.value)


def test_cross_attention_rejects_non_boolean_context_mask():
    layer = CrossAttention(8, 6, num_heads=2)
    with pytest.raises(ValueError) as info:
        layer(np.zeros((2, 5, 8)), np.zeros((2, 4, 6)), np.ones((2, 4), dtype=np.int64))
    assert "int64" in str(info.value) and "True = real token" in str(info.value)


# ---------------------------------------------------------------- CrossAttentionBlock


@pytest.mark.parametrize("seed", SEEDS)
def test_cross_attention_block_is_x_plus_attention_of_layer_norm_of_x(seed):
    block = CrossAttentionBlock(QUERY_DIM, CONTEXT_DIM, num_heads=NUM_HEADS, seed=seed)
    x, context, context_mask = cross_inputs(seed)
    y, weights = block(x, context, context_mask)
    update, ref_weights = loop_cross_attention(block.attention, loop_layer_norm(x), context, context_mask)
    np.testing.assert_allclose(y, x + update, rtol=0, atol=TOL)
    np.testing.assert_allclose(weights, ref_weights, rtol=0, atol=TOL)


def test_cross_attention_block_output_has_query_dim_width():
    block = CrossAttentionBlock(QUERY_DIM, CONTEXT_DIM, num_heads=NUM_HEADS)
    x, context, context_mask = cross_inputs(0)
    y, weights = block(x, context, context_mask)
    assert y.shape == x.shape == (B, LQ, QUERY_DIM)
    assert weights.shape == (B, NUM_HEADS, LQ, LK)


def test_cross_attention_block_starts_with_identity_layer_norm_parameters():
    block = CrossAttentionBlock(QUERY_DIM, CONTEXT_DIM, num_heads=NUM_HEADS, seed=5)
    assert isinstance(block.attention, CrossAttention)
    np.testing.assert_array_equal(block.gamma, np.ones(QUERY_DIM))
    np.testing.assert_array_equal(block.beta, np.zeros(QUERY_DIM))
    np.testing.assert_array_equal(block.attention.W_q, CrossAttention(QUERY_DIM, CONTEXT_DIM, NUM_HEADS, seed=5).W_q)


def test_cross_attention_block_uses_its_gamma_and_beta():
    block = CrossAttentionBlock(QUERY_DIM, CONTEXT_DIM, num_heads=NUM_HEADS, seed=6)
    rng = np.random.default_rng(6)
    block.gamma, block.beta = rng.standard_normal(QUERY_DIM), rng.standard_normal(QUERY_DIM)
    x, context, context_mask = cross_inputs(6)
    y, _ = block(x, context, context_mask)
    normed = loop_layer_norm(x) * block.gamma + block.beta
    update, _ = loop_cross_attention(block.attention, normed, context, context_mask)
    np.testing.assert_allclose(y, x + update, rtol=0, atol=TOL)
