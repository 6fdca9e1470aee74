"""The NumPy loss, gradient and optimisers agree with PyTorch's own (F.cross_entropy, autograd,
torch.optim.SGD / Adam / AdamW) on fresh random inputs, and refuse malformed ones by name."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from crossmodal_edu import numpy_training as nt


def _batch(rng, B=5, C=7, scale=1.0):
    return scale * rng.normal(size=(B, C)), rng.integers(C, size=B)


def test_cross_entropy_equals_torch_and_a_float64_loop():
    rng = np.random.default_rng(0)
    logits, targets = _batch(rng)
    ours = nt.cross_entropy(logits, targets)
    theirs = F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(targets)).item()
    loop = -sum(math.log(math.exp(z[y]) / sum(math.exp(t) for t in z)) for z, y in zip(logits, targets)) / len(targets)
    assert ours == pytest.approx(theirs, rel=1e-12) and ours == pytest.approx(loop, rel=1e-12)


def test_cross_entropy_stays_finite_where_the_log_of_the_softmax_does_not():
    rng = np.random.default_rng(1)
    logits, targets = _batch(rng, B=6, C=4, scale=1000.0)
    theirs = F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(targets)).item()
    assert math.isfinite(theirs) and nt.cross_entropy(logits, targets) == pytest.approx(theirs, rel=1e-12)
    assert nt.log_softmax(logits) == pytest.approx(torch.log_softmax(torch.from_numpy(logits), -1).numpy(), rel=1e-12)


def test_equal_logits_cost_ln_c():
    assert nt.cross_entropy(np.full((3, 9), 2.5), np.array([0, 4, 8])) == pytest.approx(math.log(9), rel=1e-12)


def test_the_gradient_equals_autograd_and_finite_differences():
    rng = np.random.default_rng(2)
    logits, targets = _batch(rng, B=4, C=6)
    z = torch.from_numpy(logits).requires_grad_(True)
    F.cross_entropy(z, torch.from_numpy(targets)).backward()
    grad = nt.cross_entropy_gradient(logits, targets)
    np.testing.assert_allclose(grad, z.grad.numpy(), rtol=1e-10, atol=1e-14)
    h = 1e-6
    for b, j in [(0, 0), (1, 3), (3, 5)]:
        up, down = logits.copy(), logits.copy()
        up[b, j] += h
        down[b, j] -= h
        slope = (nt.cross_entropy(up, targets) - nt.cross_entropy(down, targets)) / (2 * h)
        assert slope == pytest.approx(grad[b, j], abs=1e-8)
    np.testing.assert_allclose(grad.sum(axis=1), 0.0, atol=1e-15)


def _run(step, torch_optimiser, steps=6, **state):
    """Take ``steps`` steps with the NumPy rule and with the PyTorch optimiser on the same gradients."""
    rng = np.random.default_rng(3)
    param = rng.normal(size=(3, 5))
    grads = [rng.normal(size=(3, 5)) * 10.0 ** rng.uniform(-2, 1) for _ in range(steps)]
    p = torch.nn.Parameter(torch.from_numpy(param.copy()))
    optimiser = torch_optimiser([p])
    for t, g in enumerate(grads, start=1):
        param, *rest = step(param, g, t, *state.values())
        state = dict(zip(state, rest))
        p.grad = torch.from_numpy(g.copy())
        optimiser.step()
    np.testing.assert_allclose(param, p.detach().numpy(), rtol=1e-12, atol=1e-14)


def test_sgd_equals_torch():
    _run(lambda p, g, t: (nt.sgd_step(p, g, lr=0.05),), lambda ps: torch.optim.SGD(ps, lr=0.05))


def test_momentum_equals_torch():
    _run(lambda p, g, t, vel: nt.momentum_step(p, g, vel, lr=0.05, momentum=0.8),
         lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.8), velocity=np.zeros((3, 5)))


@pytest.mark.parametrize("weight_decay", [0.0, 0.3])
def test_adam_equals_torch(weight_decay):
    _run(lambda p, g, t, m, v: nt.adam_step(p, g, m, v, t, lr=0.02, beta1=0.8, beta2=0.95, eps=1e-3,
                                            weight_decay=weight_decay),
         lambda ps: torch.optim.Adam(ps, lr=0.02, betas=(0.8, 0.95), eps=1e-3, weight_decay=weight_decay),
         m=np.zeros((3, 5)), v=np.zeros((3, 5)))


def test_adamw_equals_torch():
    _run(lambda p, g, t, m, v: nt.adamw_step(p, g, m, v, t, lr=0.02, beta1=0.8, beta2=0.95, eps=1e-3,
                                             weight_decay=0.3),
         lambda ps: torch.optim.AdamW(ps, lr=0.02, betas=(0.8, 0.95), eps=1e-3, weight_decay=0.3),
         m=np.zeros((3, 5)), v=np.zeros((3, 5)))


def test_the_optimisers_leave_their_inputs_unchanged():
    rng = np.random.default_rng(4)
    arrays = [rng.normal(size=(2, 3)) for _ in range(3)] + [rng.uniform(size=(2, 3))]  # v >= 0
    copies = [a.copy() for a in arrays]
    nt.adamw_step(*arrays, step=1, lr=0.1, weight_decay=0.1)
    nt.momentum_step(*arrays[:3], lr=0.1)
    assert all(np.array_equal(a, c) for a, c in zip(arrays, copies))


@pytest.mark.parametrize("logits, targets, message", [
    (np.zeros((2, 3, 4)), np.zeros(2, int), r"expected 2 dims \(B, C\).*\(2, 3, 4\)"),
    (np.zeros((2, 3)), np.zeros(3, int), r"shape \(2,\).*targets has shape \(3,\)"),
    (np.zeros((2, 3)), np.zeros(2), "integer class indices"),
    (np.zeros((2, 3)), np.array([0, 3]), r"0\.\.2 \(C = 3 classes\)"),
])
def test_malformed_logits_or_targets_are_named(logits, targets, message):
    with pytest.raises(ValueError, match=message):
        nt.cross_entropy(logits, targets)


def test_mismatched_shapes_and_step_zero_are_named():
    with pytest.raises(ValueError, match=r"param and grad must have the same shape.*\(2, 3\).*\(3, 2\)"):
        nt.sgd_step(np.zeros((2, 3)), np.zeros((3, 2)), lr=0.1)
    with pytest.raises(ValueError, match="step counts from 1"):
        nt.adamw_step(np.zeros(2), np.zeros(2), np.zeros(2), np.zeros(2), step=0)
