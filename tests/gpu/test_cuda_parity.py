"""CUDA-only specification: every SDPA kernel the module can land on computes the same function.

tests/test_torch_attention.py already runs its whole suite on CUDA when a GPU is present; this file
adds what only a GPU has: each fused SDPA backend forced in turn, GPU-sized shapes, and
torch.compile with the inductor backend. Everything skips cleanly without a GPU (CI has none).
"""
import pytest
import torch

from crossmodal_edu.torch_attention import MultiHeadCrossAttention

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU in this runtime")

try:
    from torch.nn.attention import SDPBackend, sdpa_kernel
    BACKENDS = ["FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION", "MATH"]
except ImportError:  # torch < 2.3
    SDPBackend = sdpa_kernel = None
    BACKENDS = []

def make_case(mask, seed=0, batch=3, Lq=300, Lk=77, query_dim=256, context_dim=192, num_heads=4):
    # Lq != Lk, query_dim != context_dim, head_dim 64 (every fused kernel accepts it).
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    module = MultiHeadCrossAttention(query_dim, context_dim, num_heads).double()
    x = torch.randn(batch, Lq, query_dim, generator=g, dtype=torch.float64)
    context = torch.randn(batch, Lk, context_dim, generator=g, dtype=torch.float64)
    context_mask = None
    if mask != "none":
        lengths = torch.randint(1, Lk + 1, (batch,), generator=g)
        if mask == "empty":
            lengths[1] = 0
        context_mask = torch.arange(Lk)[None, :] < lengths[:, None]  # (B, Lk)
    return module, x, context, context_mask


def relative_error(out, ref):
    out, ref = out.double().cpu(), ref.double().cpu()
    return ((out - ref).norm() / ref.norm()).item()


def run_on_gpu(module, x, context, context_mask, dtype, need_weights=False):
    gpu = MultiHeadCrossAttention(module.query_dim, module.context_dim, module.num_heads).cuda()
    gpu.load_state_dict(module.state_dict())
    xg = x.float().cuda().requires_grad_(True)
    cg = context.float().cuda().requires_grad_(True)
    mg = None if context_mask is None else context_mask.cuda()
    with torch.autocast("cuda", dtype=dtype):
        out = gpu(xg, cg, mg, need_weights=need_weights)
    out = out[0] if need_weights else out
    out.float().square().sum().backward()
    grads = [xg.grad, cg.grad] + [p.grad for p in gpu.parameters()]
    return gpu, out, grads, xg, cg


@pytest.mark.skipif(not BACKENDS, reason="torch.nn.attention.sdpa_kernel needs torch >= 2.3")
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("mask", ["none", "padded", "empty"])
def test_each_sdpa_backend_matches_float64_with_finite_gradients(backend, dtype, mask):
    module, x, context, context_mask = make_case(mask, seed=1)
    ref = module(x, context, context_mask)
    try:
        with sdpa_kernel([getattr(SDPBackend, backend)]):
            gpu, out, grads, xg, cg = run_on_gpu(module, x, context, context_mask, dtype)
            torch.cuda.synchronize()
    except RuntimeError as error:  # "No available kernel" / "No viable backend": a limit, not a bug
        pytest.skip(f"{backend} does not run this case here: {str(error).strip().splitlines()[0][:200]}")
    assert torch.isfinite(out).all()
    assert relative_error(out, ref) < 1e-2
    assert all(torch.isfinite(g).all() for g in grads)
    if mask == "empty":
        torch.testing.assert_close(out[1], gpu.to_out.bias.to(out.dtype).expand_as(out[1]), rtol=0, atol=0)
        assert (xg.grad[1] == 0).all() and (cg.grad[1] == 0).all()


@pytest.mark.parametrize("mask", ["none", "padded", "empty"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_default_dispatch_gradients_match_float64(mask, dtype):
    module, x, context, context_mask = make_case(mask, seed=2)
    xd, cd = x.clone().requires_grad_(True), context.clone().requires_grad_(True)
    ref = module(xd, cd, context_mask)
    ref.square().sum().backward()
    _, out, grads, xg, cg = run_on_gpu(module, x, context, context_mask, dtype)
    assert relative_error(out, ref) < 1e-2
    assert relative_error(xg.grad, xd.grad) < 2e-2
    assert relative_error(cg.grad, cd.grad) < 2e-2
    # All parameters at once: to_k.bias alone has an exactly zero gradient (a bias shared by every
    # key shifts each row of scores by a constant, which softmax ignores), so no relative error.
    ours = torch.cat([g.flatten() for g in grads[2:]])
    theirs = torch.cat([p.grad.flatten() for p in module.parameters()])
    assert relative_error(ours, theirs) < 2e-2
    assert module.to_k.bias.grad.abs().max() < 1e-12


@pytest.mark.parametrize("mask", ["none", "padded"])
def test_long_sequences_fast_path_equals_manual_path_in_bf16(mask):
    module, x, context, context_mask = make_case(mask, seed=3, batch=2, Lq=2048, Lk=1024,
                                                 query_dim=512, context_dim=512, num_heads=8)
    gpu = MultiHeadCrossAttention(512, 512, 8).cuda().to(torch.bfloat16)
    gpu.load_state_dict(module.state_dict())
    xg, cg = x.cuda().to(torch.bfloat16), context.cuda().to(torch.bfloat16)
    mg = None if context_mask is None else context_mask.cuda()
    fast = gpu(xg, cg, mg)
    manual, _ = gpu(xg, cg, mg, need_weights=True)
    assert relative_error(fast, manual) < 1e-2
    assert relative_error(fast, module(x, context, context_mask)) < 1e-2


def test_inductor_compiled_module_matches_eager_forward_and_backward():
    module, x, context, context_mask = make_case("empty", seed=4, batch=4, Lq=64, Lk=16)
    gpu = MultiHeadCrossAttention(256, 192, 4).cuda()
    gpu.load_state_dict(module.state_dict())
    xg = x.float().cuda().requires_grad_(True)
    cg, mg = context.float().cuda(), context_mask.cuda()
    compiled = torch.compile(gpu, fullgraph=True)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = compiled(xg, cg, mg)
        eager = gpu(xg, cg, mg)
    assert torch.isfinite(out).all()
    assert relative_error(out, eager) < 1e-2
    (grad,) = torch.autograd.grad(out.float().sum(), xg)
    (grad_eager,) = torch.autograd.grad(eager.float().sum(), xg)
    assert torch.isfinite(grad).all() and relative_error(grad, grad_eager) < 2e-2
