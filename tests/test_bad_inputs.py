"""Bad and extreme inputs: never a silent NaN, never an unclear error.

A sweep over every public attention function (NumPy ``softmax`` and
``scaled_dot_product_attention``, ``blocked_attention``, the NumPy ``CrossAttention``, the torch
``MultiHeadCrossAttention`` on its fast path and on its ``need_weights=True`` path) and the sampler
functions of ``crossmodal_edu.dalle.guidance``. The rule each test states:

* finite inputs give a finite output, or a ``ValueError`` that says what overflowed;
* a NaN or inf input, a zero width or a complex dtype gives a ``ValueError``/``TypeError`` that names
  the argument;
* an empty axis gives its documented natural answer (no keys: zero output);
* a masked key's k and v never reach the output, whatever they hold.

References are independent: float64 NumPy written here, and torch's own attention.
"""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from crossmodal_edu.blocked_attention import blocked_attention
from crossmodal_edu.dalle.guidance import classifier_free_guidance, sample_from_logits, top_k_filter
from crossmodal_edu.numpy_attention import CrossAttention, scaled_dot_product_attention, softmax
from crossmodal_edu.torch_attention import MultiHeadCrossAttention

B, LQ, LK, DK, DV = 2, 5, 7, 4, 3  # Lq != Lk, d_k != d_v


def reference_attention(q, k, v, keep=None):
    """Float64 attention written from the equation; rows with no key give 0."""
    q, k, v = (np.asarray(a, dtype=np.float64) for a in (q, k, v))
    s = q @ np.swapaxes(k, -1, -2) / math.sqrt(q.shape[-1])
    if keep is None:
        keep = np.ones(s.shape, bool)
    keep = np.broadcast_to(keep, s.shape)
    s = np.where(keep, s, -np.inf)
    m = np.where(keep.any(-1, keepdims=True), s.max(-1, keepdims=True), 0.0)
    e = np.where(keep, np.exp(s - m), 0.0)
    total = e.sum(-1, keepdims=True)
    w = e / np.where(total == 0, 1.0, total)
    return np.einsum("...ij,...jd->...id", w, np.where(keep.any(-2)[..., None], v, 0.0))


def qkv(rng, dtype=np.float64, lead=(B,)):
    return (rng.normal(size=(*lead, LQ, DK)).astype(dtype), rng.normal(size=(*lead, LK, DK)).astype(dtype),
            rng.normal(size=(*lead, LK, DV)).astype(dtype))


# Every NumPy attention as f(q, k, v, mask=None, context_mask=None) -> out.
NUMPY_ATTENTION = {
    "sdpa": lambda q, k, v, mask=None, context_mask=None: scaled_dot_product_attention(
        q, k, v, mask, context_mask=context_mask)[0],
    "blocked": lambda q, k, v, mask=None, context_mask=None: blocked_attention(
        q, k, v, mask, block_size=3, context_mask=context_mask),
    "blocked_query_blocks": lambda q, k, v, mask=None, context_mask=None: blocked_attention(
        q, k, v, mask, block_size=2, query_block_size=2, context_mask=context_mask),
}


def torch_module(dtype=torch.float64, num_heads=2):
    torch.manual_seed(0)
    return MultiHeadCrossAttention(8, 6, num_heads).to(dtype).eval()


def torch_reference(module, x, context):
    """The module's attention recomputed in float64 from its weights with torch's own SDPA."""
    W = {name: getattr(module, name) for name in ("to_q", "to_k", "to_v", "to_out")}
    lin = {name: (layer.weight.detach().double(), layer.bias.detach().double()) for name, layer in W.items()}
    x, context = x.double(), context.double()
    H = module.num_heads

    def heads(t, name):
        y = F.linear(t, *lin[name])
        return y.view(*y.shape[:2], H, -1).transpose(1, 2)  # (B, H, L, head_dim)

    out = F.scaled_dot_product_attention(heads(x, "to_q"), heads(context, "to_k"), heads(context, "to_v"))
    return F.linear(out.transpose(1, 2).reshape(*x.shape[:2], -1), *lin["to_out"])


def call(module, x, context, context_mask=None, need_weights=False):
    out = module(x, context, context_mask, need_weights=need_weights)
    return out[0] if need_weights else out


# ----------------------------------------------------------------- finite inputs, finite output


@pytest.mark.parametrize("name", NUMPY_ATTENTION)
@pytest.mark.parametrize("dtype,factor", [(np.float64, 1e160), (np.float32, 1e30), (np.float32, 1e20)])
def test_scores_that_overflow_raise_a_clear_error(name, dtype, factor):
    q, k, v = qkv(np.random.default_rng(0), dtype)
    with pytest.raises(ValueError, match=r"scores .*overflowed"):
        NUMPY_ATTENTION[name](q * dtype(factor), k * dtype(factor), v)


@pytest.mark.parametrize("name", NUMPY_ATTENTION)
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
@pytest.mark.parametrize("factor", [1e-300, 1e-30, 1e-3, 1.0, 1e3, 1e6, 1e30, 1e150, 1e300])
def test_finite_inputs_give_a_finite_output_or_a_clear_error(name, dtype, factor):
    q, k, v = qkv(np.random.default_rng(1), np.float64)
    with np.errstate(over="ignore", under="ignore"):
        q, k = (a * factor for a in (q, k))
        q, k, v = (a.astype(dtype) for a in (q, k, v))
    if not (np.isfinite(q).all() and np.isfinite(k).all()):
        pytest.skip("the inputs themselves do not fit this dtype")
    try:
        out = NUMPY_ATTENTION[name](q, k, v)
    except ValueError as error:
        assert "overflowed" in str(error)
        return
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, reference_attention(q, k, v), rtol=1e-2 if dtype == np.float16 else 1e-5,
                               atol=1e-2 if dtype == np.float16 else 1e-5)


def test_softmax_of_huge_finite_logits_is_finite_and_exact():
    x = np.array([[1e308, -1e308, 0.0], [-1e308, -1e308, -1e308]])
    np.testing.assert_array_equal(softmax(x), [[1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3]])


@pytest.mark.parametrize("need_weights", [False, True])
def test_float16_module_with_large_inputs_stays_finite(need_weights):
    module = torch_module(torch.float16)
    torch.manual_seed(1)
    x, context = (300 * torch.randn(B, LQ, 8)).half(), (300 * torch.randn(B, LK, 6)).half()
    want = torch_reference(module, x, context).float()  # float64, where the scores fit
    got = call(module, x, context, need_weights=need_weights)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got.float(), want, rtol=0.05, atol=0.05 * want.abs().max().item())


@pytest.mark.parametrize("need_weights", [False, True])
def test_module_scores_that_overflow_raise_on_both_paths(need_weights):
    module = torch_module(torch.float32)
    x, context = 1e30 * torch.randn(B, LQ, 8), 1e30 * torch.randn(B, LK, 6)
    with pytest.raises(ValueError, match="overflowed"):
        call(module, x, context, need_weights=need_weights)


# ----------------------------------------------------------------- non-finite inputs are named


@pytest.mark.parametrize("name", NUMPY_ATTENTION)
@pytest.mark.parametrize("which", [0, 1, 2])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_non_finite_input_is_named(name, which, bad):
    arrays = list(qkv(np.random.default_rng(2)))
    arrays[which][1, 2, 0] = bad
    with pytest.raises(ValueError, match=rf"^{'qkv'[which]} must be finite.*\[1, 2, 0\] = {bad}"):
        NUMPY_ATTENTION[name](*arrays)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_softmax_names_nan_and_plus_inf_but_takes_minus_inf(bad):
    with pytest.raises(ValueError, match=rf"x must be finite or -inf.*= {bad}"):
        softmax(np.array([0.0, bad, 1.0]))
    np.testing.assert_array_equal(softmax(np.array([0.0, -np.inf])), [1.0, 0.0])


@pytest.mark.parametrize("need_weights", [False, True])
@pytest.mark.parametrize("where", ["x", "context"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_module_names_a_non_finite_input_on_both_paths(need_weights, where, bad):
    module = torch_module()
    x, context = torch.randn(B, LQ, 8, dtype=torch.float64), torch.randn(B, LK, 6, dtype=torch.float64)
    (x if where == "x" else context)[1, 2, 3] = bad
    with pytest.raises(ValueError, match=rf"^{where} must be finite"):
        call(module, x, context, need_weights=need_weights)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_numpy_cross_attention_names_a_non_finite_input(bad):
    layer = CrossAttention(8, 6, num_heads=2)
    x, context = np.random.default_rng(3).normal(size=(B, LQ, 8)), np.random.default_rng(4).normal(size=(B, LK, 6))
    x[0, 1, 2] = bad
    with pytest.raises(ValueError, match=r"^x must be finite"):
        layer(x, context)


# ----------------------------------------------------------------- a masked key never matters


@pytest.mark.parametrize("name", NUMPY_ATTENTION)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("via", ["mask", "context_mask"])
def test_a_masked_key_may_hold_anything(name, bad, via):
    q, k, v = qkv(np.random.default_rng(5))
    context_mask = np.ones((B, LK), bool)
    context_mask[0, [1, 4]] = False
    context_mask[1, 6] = False
    want = reference_attention(q, k, v, context_mask[:, None, :])
    k[0, 1], v[0, 4], v[1, 6, 2] = bad, bad, bad
    kwargs = {"mask": context_mask[:, None, :]} if via == "mask" else {"context_mask": context_mask}
    got = NUMPY_ATTENTION[name](q, k, v, **kwargs)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", NUMPY_ATTENTION)
def test_a_key_some_query_may_attend_must_be_finite(name):
    q, k, v = qkv(np.random.default_rng(6))
    mask = np.ones((LQ, LK), bool)
    mask[:3, 2] = False  # queries 3, 4 still see key 2
    v[0, 2, 1] = np.inf
    with pytest.raises(ValueError, match=r"v must be finite wherever a query may attend"):
        NUMPY_ATTENTION[name](q, k, v, mask)


@pytest.mark.parametrize("need_weights", [False, True])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_module_padding_may_hold_anything(need_weights, bad):
    module = torch_module()
    x, context = torch.randn(B, LQ, 8, dtype=torch.float64), torch.randn(B, LK, 6, dtype=torch.float64)
    context_mask = torch.ones(B, LK, dtype=torch.bool)
    context_mask[0, 5:] = False
    clean = call(module, x, context, context_mask, need_weights)
    context[0, 5:] = bad
    got = call(module, x, context, context_mask, need_weights)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, clean, rtol=1e-12, atol=1e-12)


def test_numpy_cross_attention_padding_may_hold_anything():
    layer = CrossAttention(8, 6, num_heads=2)
    rng = np.random.default_rng(7)
    x, context = rng.normal(size=(B, LQ, 8)), rng.normal(size=(B, LK, 6))
    context_mask = np.ones((B, LK), bool)
    context_mask[1, :3] = False
    clean = layer(x, context, context_mask)[0]
    context[1, :3] = np.inf
    np.testing.assert_allclose(layer(x, context, context_mask)[0], clean, rtol=1e-12, atol=1e-12)


# ----------------------------------------------------------------- the (B, Lk) mask trap


@pytest.mark.parametrize("name", NUMPY_ATTENTION)
def test_context_mask_equals_the_full_mask_with_a_query_axis(name):
    rng = np.random.default_rng(8)
    q, k, v = rng.normal(size=(LQ, LQ, DK)), rng.normal(size=(LQ, LK, DK)), rng.normal(size=(LQ, LK, DV))  # B == Lq
    context_mask = rng.random((LQ, LK)) > 0.3
    got = NUMPY_ATTENTION[name](q, k, v, context_mask=context_mask)
    np.testing.assert_allclose(got, reference_attention(q, k, v, context_mask[:, None, :]), rtol=1e-12, atol=1e-12)
    trap = NUMPY_ATTENTION[name](q, k, v, mask=context_mask)  # legal broadcasting, different meaning
    assert not np.allclose(trap, got)


def test_context_mask_broadcasts_over_heads():
    rng = np.random.default_rng(9)
    q, k, v = rng.normal(size=(B, 3, LQ, DK)), rng.normal(size=(B, 3, LK, DK)), rng.normal(size=(B, 3, LK, DV))
    context_mask = rng.random((B, LK)) > 0.3
    got, weights = scaled_dot_product_attention(q, k, v, context_mask=context_mask)
    np.testing.assert_allclose(got, reference_attention(q, k, v, context_mask[:, None, None, :]), atol=1e-12)
    assert (weights[~np.broadcast_to(context_mask[:, None, None, :], weights.shape)] == 0).all()


def test_a_context_mask_of_the_wrong_shape_is_named():
    q, k, v = qkv(np.random.default_rng(10))
    with pytest.raises(ValueError, match=r"context_mask must have shape \(B, Lk\).*\(2, 6\)"):
        scaled_dot_product_attention(q, k, v, context_mask=np.ones((B, LK - 1), bool))


# ----------------------------------------------------------------- empty axes and zero widths


@pytest.mark.parametrize("name", NUMPY_ATTENTION)
def test_no_keys_gives_a_zero_output(name):
    q, k, v = qkv(np.random.default_rng(11))
    out = NUMPY_ATTENTION[name](q, k[:, :0], v[:, :0])
    assert out.shape == (B, LQ, DV) and (out == 0).all()


@pytest.mark.parametrize("name", NUMPY_ATTENTION)
def test_no_queries_or_no_batch_gives_an_empty_output(name):
    q, k, v = qkv(np.random.default_rng(12))
    assert NUMPY_ATTENTION[name](q[:, :0], k, v).shape == (B, 0, DV)
    assert NUMPY_ATTENTION[name](q[:0], k[:0], v[:0]).shape == (0, LQ, DV)


@pytest.mark.parametrize("name", NUMPY_ATTENTION)
def test_zero_d_k_is_named(name):
    q, k, v = qkv(np.random.default_rng(13))
    with pytest.raises(ValueError, match=r"d_k .* must be at least 1"):
        NUMPY_ATTENTION[name](q[..., :0], k[..., :0], v)


def test_sdpa_weights_with_no_keys_are_empty():
    q, k, v = qkv(np.random.default_rng(14))
    out, weights = scaled_dot_product_attention(q, k[:, :0], v[:, :0])
    assert weights.shape == (B, LQ, 0) and (out == 0).all()


@pytest.mark.parametrize("need_weights", [False, True])
def test_module_with_no_context_outputs_the_bias(need_weights):
    module = torch_module()
    x = torch.randn(B, LQ, 8, dtype=torch.float64)
    out = call(module, x, torch.zeros(B, 0, 6, dtype=torch.float64), need_weights=need_weights)
    torch.testing.assert_close(out, module.to_out.bias.expand(B, LQ, 8))


@pytest.mark.parametrize("args", [(8, 6, 0), (0, 6, 2), (8, 0, 2), (8, 6, 2, 0), (8, 6, 2.0)])
def test_module_widths_must_be_positive_integers(args):
    with pytest.raises(ValueError, match="must be an integer of at least 1"):
        MultiHeadCrossAttention(*args)


# ----------------------------------------------------------------- complex numbers


@pytest.mark.parametrize("name", NUMPY_ATTENTION)
def test_complex_inputs_are_rejected(name):
    q, k, v = qkv(np.random.default_rng(15))
    with pytest.raises(TypeError, match=r"k must hold real numbers.*complex128"):
        NUMPY_ATTENTION[name](q, k + 1j, v)
    with pytest.raises(TypeError, match=r"x must hold real numbers"):
        softmax(np.array([1j, 2.0]))


def test_module_rejects_complex_inputs():
    module = torch_module()
    with pytest.raises(TypeError, match=r"x must hold real numbers"):
        module(torch.randn(B, LQ, 8, dtype=torch.complex128), torch.randn(B, LK, 6, dtype=torch.float64))


# ----------------------------------------------------------------- the sampler


def logits(seed=0, shape=(3, 10)):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("k", [3, np.int64(3), np.int32(3), torch.tensor(3)])
def test_top_k_takes_any_integer_type(k):
    kept = top_k_filter(logits(), k)
    assert (torch.isfinite(kept).sum(-1) == 3).all()


@pytest.mark.parametrize("k", [0, -1, 2.5, True, "3"])
def test_top_k_rejects_a_non_positive_or_non_integer_k(k):
    with pytest.raises(ValueError, match="k must be a positive int"):
        top_k_filter(logits(), k)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_sampler_functions_name_nan_and_plus_inf_logits(bad):
    l = logits()
    l[1, 4] = bad
    with pytest.raises(ValueError, match=r"logits must be finite or -inf"):
        sample_from_logits(l)
    with pytest.raises(ValueError, match=r"logits must be finite or -inf"):
        sample_from_logits(l, temperature=0)
    with pytest.raises(ValueError, match=r"logits must be finite or -inf"):
        top_k_filter(l, 3)
    with pytest.raises(ValueError, match=r"cond_logits must be finite"):
        classifier_free_guidance(l, logits(1), 2.0)


def test_a_row_with_every_token_ruled_out_is_named():
    l = logits()
    l[2] = float("-inf")
    with pytest.raises(ValueError, match=r"row 2 of logits is -inf everywhere"):
        sample_from_logits(l)


@pytest.mark.parametrize("temperature", [float("nan"), float("inf"), -1.0, "1", None])
def test_a_bad_temperature_is_named(temperature):
    with pytest.raises(ValueError, match="temperature must be"):
        sample_from_logits(logits(), temperature=temperature)


def test_a_temperature_so_small_that_logits_overflow_is_named():
    with pytest.raises(ValueError, match="overflowed.*temperature=0 for greedy"):
        sample_from_logits(logits() * 1e30, temperature=1e-20)


def test_minus_inf_logits_are_never_drawn():
    l = logits(seed=3)
    l[:, :8] = float("-inf")
    tokens = sample_from_logits(l, temperature=1.0, generator=torch.Generator().manual_seed(0))
    assert (tokens >= 8).all()


@pytest.mark.parametrize("scale", [float("nan"), float("inf"), "2", None])
def test_a_bad_guidance_scale_is_named(scale):
    with pytest.raises(ValueError, match="scale must be a finite real number"):
        classifier_free_guidance(logits(0), logits(1), scale)


def test_guidance_keeps_a_token_ruled_out_in_both_and_names_one_ruled_out_in_one():
    cond, uncond = logits(0), logits(1)
    cond[0, 3] = uncond[0, 3] = float("-inf")
    guided = classifier_free_guidance(cond, uncond, 3.0)
    assert guided[0, 3] == float("-inf")
    keep = torch.ones_like(cond, dtype=torch.bool)
    keep[0, 3] = False
    torch.testing.assert_close(guided[keep], (uncond + 3.0 * (cond - uncond))[keep])
    cond[1, 2] = float("-inf")
    with pytest.raises(ValueError, match=r"-inf in the same places"):
        classifier_free_guidance(cond, uncond, 3.0)


def test_guidance_that_overflows_is_named():
    with pytest.raises(ValueError, match="guidance overflowed"):
        classifier_free_guidance(logits(0), logits(1), 1e308)


def test_sampling_probabilities_match_an_independent_softmax():
    # The draw distribution: top-k then temperature, checked by counting (a reference, not the code).
    l = torch.tensor([[0.0, 1.0, 2.0, -float("inf")]], dtype=torch.float64).repeat(4000, 1)
    tokens = sample_from_logits(l, temperature=2.0, generator=torch.Generator().manual_seed(0))
    counts = torch.bincount(tokens, minlength=4).double() / len(tokens)
    p = np.exp(np.array([0.0, 0.5, 1.0]))
    p /= p.sum()
    np.testing.assert_allclose(counts[:3].numpy(), p, atol=0.03)
    assert counts[3] == 0


# ----------------------------------------------------------------- the NumPy layer and softmax edges


def test_numpy_cross_attention_with_no_context_outputs_the_bias():
    layer = CrossAttention(8, 6, num_heads=2)
    x = np.random.default_rng(16).normal(size=(B, LQ, 8))
    out, weights = layer(x, np.zeros((B, 0, 6)))
    np.testing.assert_array_equal(out, np.broadcast_to(layer.b_o, (B, LQ, 8)))
    assert weights.shape == (B, 2, LQ, 0)


def test_numpy_cross_attention_rejects_complex_and_zero_widths():
    layer = CrossAttention(8, 6, num_heads=2)
    rng = np.random.default_rng(17)
    with pytest.raises(TypeError, match="context must hold real numbers"):
        layer(rng.normal(size=(B, LQ, 8)), rng.normal(size=(B, LK, 6)) * 1j)
    with pytest.raises(ValueError, match="num_heads must be an integer of at least 1"):
        CrossAttention(8, 6, num_heads=0)


def test_softmax_over_an_empty_axis_is_empty():
    assert softmax(np.zeros((3, 0))).shape == (3, 0)
    assert softmax(np.zeros((0, 4))).shape == (0, 4)
