"""Specification of crossmodal_edu.torch_attention: the PyTorch cross-attention equals the NumPy
reference, torch.nn.MultiheadAttention and a float64 loop written here, on every path.

Each test runs on the CPU and, when a CUDA GPU is present, on it as well.
"""
import math

import numpy as np
import pytest
import torch
from torch import nn

from crossmodal_edu.torch_attention import CrossAttentionBlock, MultiHeadCrossAttention

HAS_CUDA = torch.cuda.is_available()
requires_cuda = pytest.mark.skipif(not HAS_CUDA, reason="no CUDA GPU in this runtime")
DEVICES = ["cpu", pytest.param("cuda", marks=requires_cuda)]
# "padded": random lengths >= 1; "empty": batch element 1 has no real token at all.
MASKS = ["none", "padded", "all_true", "empty"]

# Shapes where the two modalities differ: Lq != Lk, query_dim != context_dim.
B, LQ, LK, QUERY_DIM, CONTEXT_DIM, NUM_HEADS = 3, 5, 7, 12, 10, 3


def make_mask(kind, batch, Lk, generator, device="cpu"):
    if kind == "none":
        return None
    if kind == "all_true":
        return torch.ones(batch, Lk, dtype=torch.bool, device=device)
    lengths = torch.randint(1, Lk + 1, (batch,), generator=generator)
    if kind == "empty":
        lengths[1] = 0
    return (torch.arange(Lk)[None, :] < lengths[:, None]).to(device)  # (B, Lk)


def make_case(device, dtype=torch.float64, mask="none", seed=0, bias=True, head_dim=None,
              batch=B, Lq=LQ, Lk=LK, query_dim=QUERY_DIM, context_dim=CONTEXT_DIM, num_heads=NUM_HEADS):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    module = MultiHeadCrossAttention(query_dim, context_dim, num_heads, head_dim=head_dim, bias=bias)
    module = module.to(device=device, dtype=dtype)
    x = torch.randn(batch, Lq, query_dim, generator=g, dtype=dtype).to(device)
    context = torch.randn(batch, Lk, context_dim, generator=g, dtype=dtype).to(device)
    return module, x, context, make_mask(mask, batch, Lk, g, device)


def loop_reference(module, x, context, context_mask):
    """Float64, one batch element and one head at a time, straight from the equations."""
    def arr(t):
        return None if t is None else t.detach().double().cpu().numpy()

    Wq, Wk, Wv, Wo = (arr(m.weight).T for m in (module.to_q, module.to_k, module.to_v, module.to_out))
    bq, bk, bv, bo = (arr(m.bias) if m.bias is not None else 0.0
                      for m in (module.to_q, module.to_k, module.to_v, module.to_out))
    x, context = arr(x), arr(context)
    batch, Lq, _ = x.shape
    Lk = context.shape[1]
    H, hd = module.num_heads, module.head_dim
    keep_all = np.ones((batch, Lk), bool) if context_mask is None else arr(context_mask).astype(bool)
    out = np.zeros((batch, Lq, module.query_dim))
    weights = np.zeros((batch, H, Lq, Lk))
    for b in range(batch):
        keep = keep_all[b]
        heads = []
        for h in range(H):
            cols = slice(h * hd, (h + 1) * hd)
            q = x[b] @ Wq[:, cols] + (bq[cols] if np.ndim(bq) else 0.0)
            k = context[b] @ Wk[:, cols] + (bk[cols] if np.ndim(bk) else 0.0)
            v = context[b] @ Wv[:, cols] + (bv[cols] if np.ndim(bv) else 0.0)
            if keep.any():
                scores = q @ k.T / math.sqrt(hd)
                scores[:, ~keep] = -np.inf
                e = np.exp(scores - scores.max(axis=1, keepdims=True))
                weights[b, h] = e / e.sum(axis=1, keepdims=True)
            heads.append(weights[b, h] @ v)
        out[b] = np.concatenate(heads, axis=1) @ Wo + bo
    return out, weights


def as_np(t):
    return t.detach().double().cpu().numpy()


def relative_error(out, ref):
    out, ref = as_np(out), np.asarray(ref, dtype=np.float64)
    return float(np.linalg.norm(out - ref) / np.linalg.norm(ref))


def copy_into_multihead_attention(module):
    """An nn.MultiheadAttention holding the module's weights (needs num_heads*head_dim == query_dim)."""
    mha = nn.MultiheadAttention(module.query_dim, module.num_heads, kdim=module.context_dim,
                                vdim=module.context_dim, batch_first=True,
                                bias=module.to_q.bias is not None)
    mha = mha.to(device=module.to_q.weight.device, dtype=module.to_q.weight.dtype)
    with torch.no_grad():
        if mha._qkv_same_embed_dim:
            mha.in_proj_weight.copy_(torch.cat([module.to_q.weight, module.to_k.weight, module.to_v.weight]))
        else:
            mha.q_proj_weight.copy_(module.to_q.weight)
            mha.k_proj_weight.copy_(module.to_k.weight)
            mha.v_proj_weight.copy_(module.to_v.weight)
        mha.out_proj.weight.copy_(module.to_out.weight)
        if mha.in_proj_bias is not None:
            mha.in_proj_bias.copy_(torch.cat([module.to_q.bias, module.to_k.bias, module.to_v.bias]))
            mha.out_proj.bias.copy_(module.to_out.bias)
    return mha


# ---------------------------------------------------------------- shapes and independent references

@pytest.mark.parametrize("device", DEVICES)
def test_output_and_weights_have_documented_shapes(device):
    module, x, context, mask = make_case(device, mask="padded")
    out = module(x, context, mask)
    out2, weights = module(x, context, mask, need_weights=True)
    assert out.shape == out2.shape == (B, LQ, QUERY_DIM)
    assert weights.shape == (B, NUM_HEADS, LQ, LK)
    assert module.to_q.weight.shape == (NUM_HEADS * module.head_dim, QUERY_DIM)
    assert module.to_k.weight.shape == module.to_v.weight.shape == (NUM_HEADS * module.head_dim, CONTEXT_DIM)
    assert module.to_out.weight.shape == (QUERY_DIM, NUM_HEADS * module.head_dim)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mask", MASKS)
@pytest.mark.parametrize("bias", [True, False])
def test_both_paths_match_a_float64_loop_over_batch_and_heads(device, mask, bias):
    # head_dim=5 makes num_heads * head_dim (15) differ from query_dim (12) and context_dim (10).
    module, x, context, context_mask = make_case(device, mask=mask, bias=bias, head_dim=5, seed=1)
    ref_out, ref_weights = loop_reference(module, x, context, context_mask)
    fast = module(x, context, context_mask)
    manual, weights = module(x, context, context_mask, need_weights=True)
    np.testing.assert_allclose(as_np(fast), ref_out, rtol=0, atol=1e-12)
    np.testing.assert_allclose(as_np(manual), ref_out, rtol=0, atol=1e-12)
    np.testing.assert_allclose(as_np(weights), ref_weights, rtol=0, atol=1e-12)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mask", ["none", "padded", "empty"])
def test_matches_numpy_cross_attention_after_from_numpy(device, mask):
    numpy_attention = pytest.importorskip("crossmodal_edu.numpy_attention")
    layer = numpy_attention.CrossAttention(QUERY_DIM, CONTEXT_DIM, num_heads=NUM_HEADS, head_dim=5, seed=3)
    module = MultiHeadCrossAttention.from_numpy(layer, device=device)
    assert module.to_q.weight.dtype == torch.float64
    rng = np.random.default_rng(3)
    x = rng.standard_normal((B, LQ, QUERY_DIM))
    context = rng.standard_normal((B, LK, CONTEXT_DIM))
    context_mask = None
    if mask != "none":
        context_mask = np.arange(LK)[None, :] < np.array([LK, 0 if mask == "empty" else 2, 4])[:, None]
    ref_out, ref_weights = layer(x, context, context_mask)

    def t(a):
        return None if a is None else torch.as_tensor(a, device=device)

    fast = module(t(x), t(context), t(context_mask))
    manual, weights = module(t(x), t(context), t(context_mask), need_weights=True)
    assert np.abs(as_np(fast) - ref_out).max() < 1e-10
    assert np.abs(as_np(manual) - ref_out).max() < 1e-10
    assert np.abs(as_np(weights) - ref_weights).max() < 1e-10


def test_from_numpy_without_bias_and_rejects_a_separate_value_width():
    numpy_attention = pytest.importorskip("crossmodal_edu.numpy_attention")
    layer = numpy_attention.CrossAttention(6, 4, num_heads=2, bias=False, seed=0)
    module = MultiHeadCrossAttention.from_numpy(layer)
    assert module.to_q.bias is None
    x, context = np.random.default_rng(0).standard_normal((2, 3, 6)), np.ones((2, 5, 4))
    np.testing.assert_allclose(as_np(module(torch.as_tensor(x), torch.as_tensor(context))),
                               layer(x, context)[0], rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match=r"W_v must have as many columns as W_q"):
        MultiHeadCrossAttention.from_numpy(numpy_attention.CrossAttention(6, 4, 2, head_dim=3, v_head_dim=2))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mask", ["none", "padded", "all_true"])
def test_matches_nn_multihead_attention_with_inverted_padding_mask(device, mask):
    module, x, context, context_mask = make_case(device, mask=mask, seed=2)
    mha = copy_into_multihead_attention(module)
    key_padding_mask = None if context_mask is None else ~context_mask  # MHA: True = ignore
    ref, ref_weights = mha(x, context, context, key_padding_mask=key_padding_mask,
                           need_weights=True, average_attn_weights=False)
    fast = module(x, context, context_mask)
    manual, weights = module(x, context, context_mask, need_weights=True)
    torch.testing.assert_close(fast, ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(manual, ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(weights, ref_weights, rtol=0, atol=1e-12)


@pytest.mark.parametrize("device", DEVICES)
def test_parameter_gradients_match_nn_multihead_attention(device):
    module, x, context, context_mask = make_case(device, mask="padded", seed=4)
    mha = copy_into_multihead_attention(module)
    grad_out = torch.randn(B, LQ, QUERY_DIM, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    grad_out = grad_out.to(device)
    (module(x, context, context_mask) * grad_out).sum().backward()
    (mha(x, context, context, key_padding_mask=~context_mask, need_weights=False)[0] * grad_out).sum().backward()
    pairs = [(module.to_q.weight, mha.q_proj_weight), (module.to_k.weight, mha.k_proj_weight),
             (module.to_v.weight, mha.v_proj_weight), (module.to_out.weight, mha.out_proj.weight),
             (module.to_out.bias, mha.out_proj.bias)]
    for ours, theirs in pairs:
        torch.testing.assert_close(ours.grad, theirs.grad, rtol=0, atol=1e-12)
    bias_grads = torch.cat([module.to_q.bias.grad, module.to_k.bias.grad, module.to_v.bias.grad])
    torch.testing.assert_close(bias_grads, mha.in_proj_bias.grad, rtol=0, atol=1e-12)


# ---------------------------------------------------------------- fast path, masks, gradients

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mask", MASKS)
def test_fast_path_equals_manual_path(device, mask):
    module, x, context, context_mask = make_case(device, mask=mask, seed=5)
    fast = module(x, context, context_mask)
    manual, _ = module(x, context, context_mask, need_weights=True)
    torch.testing.assert_close(fast, manual, rtol=0, atol=1e-12)


@pytest.mark.parametrize("device", DEVICES)
def test_all_true_mask_gives_the_same_result_as_no_mask(device):
    module, x, context, context_mask = make_case(device, mask="all_true", seed=6)
    torch.testing.assert_close(module(x, context, context_mask), module(x, context), rtol=0, atol=0)


@pytest.mark.parametrize("device", DEVICES)
def test_masked_keys_get_zero_weight_and_do_not_change_the_output(device):
    module, x, context, context_mask = make_case(device, mask="padded", seed=7)
    out, weights = module(x, context, context_mask, need_weights=True)
    assert (weights.masked_select(~context_mask[:, None, None, :]) == 0).all()
    changed = context.masked_fill(~context_mask[..., None], 1e3)  # (B, Lk, context_dim)
    torch.testing.assert_close(module(x, changed, context_mask), out, rtol=0, atol=1e-12)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mask", ["none", "padded", "empty"])
@pytest.mark.parametrize("need_weights", [False, True])
def test_gradcheck_in_float64(device, mask, need_weights):
    module, x, context, context_mask = make_case(device, mask=mask, seed=8, batch=2, Lq=3, Lk=4,
                                                 query_dim=4, context_dim=6, num_heads=2)
    x.requires_grad_(True)
    context.requires_grad_(True)

    def f(x, context):
        out = module(x, context, context_mask, need_weights=need_weights)
        return out[0] if need_weights else out

    assert torch.autograd.gradcheck(f, (x, context), eps=1e-6, atol=1e-7)


def _autocast_dtypes():
    cases = [pytest.param("cpu", torch.float64, None, id="cpu-float64"),
             pytest.param("cpu", torch.float32, None, id="cpu-float32"),
             pytest.param("cpu", torch.float32, torch.bfloat16, id="cpu-autocast-bf16")]
    for low in (torch.bfloat16, torch.float16):
        cases.append(pytest.param("cuda", torch.float32, low, marks=requires_cuda,
                                  id=f"cuda-autocast-{str(low).split('.')[-1]}"))
    cases.append(pytest.param("cuda", torch.float64, None, marks=requires_cuda, id="cuda-float64"))
    return cases


@pytest.mark.parametrize("device,dtype,autocast", _autocast_dtypes())
@pytest.mark.parametrize("need_weights", [False, True])
def test_fully_masked_rows_are_finite_with_finite_gradients(device, dtype, autocast, need_weights):
    module, x, context, context_mask = make_case(device, dtype=dtype, mask="empty", seed=9)
    x.requires_grad_(True)
    context.requires_grad_(True)
    with torch.autocast(device, dtype=autocast or torch.bfloat16, enabled=autocast is not None):
        result = module(x, context, context_mask, need_weights=need_weights)
    out = result[0] if need_weights else result
    assert torch.isfinite(out).all()
    # Batch element 1 has no real token: its rows are to_out applied to zeros, i.e. the bias.
    # (Under autocast the bias is rounded to the low-precision dtype like everything else.)
    torch.testing.assert_close(out[1], module.to_out.bias.to(out.dtype).expand(LQ, -1), rtol=0, atol=0)
    if need_weights:
        assert (result[1][1] == 0).all() and torch.isfinite(result[1]).all()
    out.float().square().sum().backward()
    grads = [x.grad, context.grad] + [p.grad for p in module.parameters()]
    assert all(torch.isfinite(g).all() for g in grads)
    assert (x.grad[1] == 0).all() and (context.grad[1] == 0).all()


@pytest.mark.parametrize("device,dtype,autocast", [c for c in _autocast_dtypes() if c.values[2] is not None])
@pytest.mark.parametrize("mask", ["none", "padded", "empty"])
@pytest.mark.parametrize("need_weights", [False, True])
def test_low_precision_autocast_stays_close_to_float64(device, dtype, autocast, mask, need_weights):
    # Widths a GPU's fused kernels accept (head_dim 64), so the flash / cuDNN paths run on CUDA.
    module, x, context, context_mask = make_case(device, dtype=dtype, mask=mask, seed=10, batch=2, Lq=33,
                                                 Lk=19, query_dim=128, context_dim=96, num_heads=2)
    reference = MultiHeadCrossAttention(128, 96, 2).double()
    reference.load_state_dict(module.state_dict())
    ref = reference(x.double().cpu(), context.double().cpu(),
                    None if context_mask is None else context_mask.cpu())
    with torch.autocast(device, dtype=autocast):
        result = module(x, context, context_mask, need_weights=need_weights)
    out = result[0] if need_weights else result
    assert out.dtype == autocast
    assert torch.isfinite(out).all()
    assert relative_error(out, as_np(ref)) < 1e-2


@pytest.mark.parametrize("device", DEVICES)
def test_dropout_acts_only_in_training(device):
    module, x, context, context_mask = make_case(device, mask="padded", seed=11)
    dropping = MultiHeadCrossAttention(QUERY_DIM, CONTEXT_DIM, NUM_HEADS, dropout=0.5).to(device).double()
    dropping.load_state_dict(module.state_dict())
    dropping.eval()
    for need_weights in (False, True):
        first = dropping(x, context, context_mask, need_weights=need_weights)
        second = dropping(x, context, context_mask, need_weights=need_weights)
        plain = module(x, context, context_mask, need_weights=need_weights)
        if need_weights:
            first, second, plain = first[0], second[0], plain[0]
        torch.testing.assert_close(first, second, rtol=0, atol=0)
        torch.testing.assert_close(first, plain, rtol=0, atol=1e-12)
    dropping.train()
    torch.manual_seed(0)
    assert not torch.allclose(dropping(x, context, context_mask), dropping(x, context, context_mask))


def test_torch_compile_matches_eager_without_graph_breaks():
    module, x, context, context_mask = make_case("cpu", dtype=torch.float32, mask="empty", seed=12,
                                                 batch=2, Lq=4, Lk=3, query_dim=8, context_dim=6, num_heads=2)
    try:
        # aot_eager traces forward and backward like inductor but skips code generation, so this
        # checks the module is compilable (fullgraph: no graph breaks) in about a second on a CPU.
        compiled = torch.compile(module, backend="aot_eager", fullgraph=True)
        out = compiled(x, context, context_mask)
    except Exception as error:  # pragma: no cover - depends on the installed torch
        pytest.skip(f"torch.compile cannot run in this runtime: {type(error).__name__}: {error}")
    torch.testing.assert_close(out, module(x, context, context_mask))
    torch.testing.assert_close(compiled(x, context), module(x, context))
    out.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in module.parameters())


# ---------------------------------------------------------------- bad inputs

@pytest.mark.parametrize("change,message", [
    (lambda x, c, m: (x[..., :-1], c, m), r"x must have shape \(B, Lq, query_dim\) with query_dim=12, but x has shape \(3, 5, 11\)"),
    (lambda x, c, m: (x[0], c, m), r"x must have shape \(B, Lq, query_dim\).*x has shape \(5, 12\)"),
    (lambda x, c, m: (x, c[..., :-2], m), r"context_dim=10, but context has shape \(3, 7, 8\)"),
    (lambda x, c, m: (x, c[:2], m[:2]), r"share the batch size B.*x has shape \(3, 5, 12\), context has shape \(2, 7, 10\)"),
    (lambda x, c, m: (x, c, m[:, :-1]), r"context_mask must have shape \(B, Lk\) = \(3, 7\).*context_mask has shape \(3, 6\)"),
    (lambda x, c, m: (x, c, m[:, None, :]), r"context_mask has shape \(3, 1, 7\)"),
    (lambda x, c, m: (x, c, m.float()), r"context_mask must be a boolean array \(True = real token\).*torch.float32"),
])
def test_bad_inputs_raise_value_errors_naming_the_shapes(change, message):
    module, x, context, context_mask = make_case("cpu", mask="padded")
    with pytest.raises(ValueError, match=message):
        module(*change(x, context, context_mask))


def test_head_dim_must_be_given_when_query_dim_does_not_split_into_heads():
    with pytest.raises(ValueError, match=r"query_dim=10, num_heads=3"):
        MultiHeadCrossAttention(10, 4, 3)
    assert MultiHeadCrossAttention(10, 4, 3, head_dim=4).to_q.out_features == 12


# ---------------------------------------------------------------- the residual block

@pytest.mark.parametrize("device", DEVICES)
def test_gated_block_is_the_identity_at_initialisation(device):
    torch.manual_seed(0)
    block = CrossAttentionBlock(QUERY_DIM, CONTEXT_DIM, NUM_HEADS, gated=True).to(device)
    _, x, context, context_mask = make_case(device, dtype=torch.float32, mask="padded")
    out = block(x, context, context_mask)
    assert torch.equal(out, x)
    out.square().sum().backward()
    # The gates still receive gradient, so training can open them.
    assert block.attn_gate.grad.abs() > 0 and block.mlp_gate.grad.abs() > 0


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("gated", [False, True])
def test_block_computes_pre_norm_residual_attention_then_mlp(device, gated):
    torch.manual_seed(1)
    block = CrossAttentionBlock(QUERY_DIM, CONTEXT_DIM, NUM_HEADS, mlp_ratio=2, gated=gated)
    block = block.to(device).double()
    with torch.no_grad():
        for p in block.parameters():  # move LayerNorm and gates away from their trivial init
            p.add_(0.3 * torch.randn_like(p))
    attention, x, context, context_mask = make_case(device, mask="padded", seed=13)
    attention = block.attention
    ln1, ln2, (fc1, _, fc2, _) = block.norm1, block.norm2, block.mlp

    def layer_norm(z, ln):
        mu = z.mean(-1, keepdim=True)
        var = ((z - mu) ** 2).mean(-1, keepdim=True)
        return (z - mu) / torch.sqrt(var + ln.eps) * ln.weight + ln.bias

    g1 = math.tanh(block.attn_gate.item()) if gated else 1.0
    g2 = math.tanh(block.mlp_gate.item()) if gated else 1.0
    attended, _ = loop_reference(attention, layer_norm(x, ln1), context, context_mask)
    h = x + g1 * torch.as_tensor(attended, device=device)
    hidden = layer_norm(h, ln2) @ fc1.weight.T + fc1.bias
    hidden = 0.5 * hidden * (1 + torch.erf(hidden / math.sqrt(2)))  # exact GELU
    expected = h + g2 * (hidden @ fc2.weight.T + fc2.bias)
    torch.testing.assert_close(block(x, context, context_mask), expected, rtol=0, atol=1e-12)
    assert block.mlp[0].out_features == 2 * QUERY_DIM


def test_numpy_input_is_rejected_with_a_conversion_hint():
    module = MultiHeadCrossAttention(8, 6, num_heads=2)
    x, context = np.zeros((1, 3, 8), dtype=np.float32), torch.zeros(1, 4, 6)
    with pytest.raises(ValueError, match=r"x must be a torch.Tensor.*numpy.*torch.from_numpy\(x\)"):
        module(x, context)


def test_dtype_mismatch_outside_autocast_names_both_dtypes():
    module = MultiHeadCrossAttention(8, 6, num_heads=2)  # float32 weights
    x, context = torch.zeros(1, 3, 8, dtype=torch.float64), torch.zeros(1, 4, 6, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"x has dtype torch.float64 but the module's weights are torch.float32"):
        module(x, context)


def test_mixed_dtypes_are_accepted_under_autocast():
    module = MultiHeadCrossAttention(8, 6, num_heads=2)
    x, context = torch.randn(1, 3, 8).bfloat16(), torch.randn(1, 4, 6)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        out = module(x, context)
    assert out.shape == (1, 3, 8) and torch.isfinite(out).all()
