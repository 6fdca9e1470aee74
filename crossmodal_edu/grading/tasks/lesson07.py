r"""Exercises 07 · Latent diffusion: the forward process and its velocity target -> the adaLN-modulated
MLP through which the denoiser reads the time -> the Euler sampler from noise to latents -> classifier-free
guidance on velocities -> prompt-to-prompt's injection of the source run's cross-attention maps.

Every function here is self-contained (tensors in, tensors out; the sampler gets a velocity field, the
sub-layer task the block's layers, as arguments), so the exercises do not depend on a trained model.
Latents are float64 tensors ``(B, C, h, w)``; cross-attention maps are ``weights`` ``(B, heads, N, L)``.

Solutions: solutions/07_latent_diffusion.ipynb. References: crossmodal_edu/diffusion/flow.py
(``noisy_latents``, ``velocity_target``, ``time_grid``, ``euler_step``, ``guided_velocity``), the last
line of ``DenoiserBlock.forward`` in crossmodal_edu/diffusion/denoiser.py with
``crossmodal_edu.dalle.adaln.modulate``, and ``AttentionInjection`` in crossmodal_edu/diffusion/control.py.
The sampler is checked with the velocity fields of crossmodal_edu/diffusion/toy_fields.py, whose exact
walks are known (they live outside the grading package: the learner's code calls them).
"""

from __future__ import annotations

import numpy as np
import torch

from crossmodal_edu.compare import to_numpy
from crossmodal_edu.dalle.adaln import modulate
from crossmodal_edu.diffusion import control, flow
from crossmodal_edu.diffusion.config import DiffusionConfig
from crossmodal_edu.diffusion.denoiser import DenoiserBlock
from crossmodal_edu.diffusion.toy_fields import LinearVelocity, TowardsPoint
from crossmodal_edu.grading.spec import IN_PLACE, Case, FunctionTask, Mistake, Property
from crossmodal_edu.grading.tasks.lesson01 import distinct
from crossmodal_edu.grading.tasks.lesson03 import tensor
from crossmodal_edu.grading.tasks.properties import finite, has_shapes, sums_to_one


def _numpy(value) -> np.ndarray:
    return to_numpy(value).astype(np.float64)


def _latents(rng: np.random.Generator, *shape: int) -> torch.Tensor:
    return tensor(rng.normal(size=shape))


# ---------------------------------------------------------------------------------------------
# 07.forward_process
# ---------------------------------------------------------------------------------------------


def forward_process_reference(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor):
    r"""A training example of rectified flow: ``x0`` and ``noise`` ``(B, C, h, w)``, ``t`` ``(B,)`` ->
    ``x_t`` = :math:`(1 - t)\,x_0 + t\,\varepsilon` and the velocity target :math:`\varepsilon - x_0`,
    both ``(B, C, h, w)``."""
    return flow.noisy_latents(x0, noise, t), flow.velocity_target(x0, noise)


def _forward_case(rng, B, C, h, w, t, note):
    return Case({"x0": _latents(rng, B, C, h, w), "noise": _latents(rng, B, C, h, w), "t": tensor(t)}, note=note)


def _forward_cases(rng: np.random.Generator) -> list[Case]:
    # B differs from h and w in the first two cases, so that a t left (B,) cannot broadcast there.
    B, C, h, w = distinct(rng, 4, 2, 7)
    B2, C2, h2, w2 = distinct(rng, 4, 3, 8)
    ends = rng.uniform(0.05, 0.95, size=B2)
    ends[rng.choice(B2, size=2, replace=False)] = [0.0, 1.0]
    n = int(rng.choice([3, 5]))  # B = h = w: the one shape on which an unreshaped t still runs
    C3 = int(rng.choice([2, 6]))
    return [
        _forward_case(rng, B, C, h, w, rng.uniform(0.05, 0.95, size=B), "random times"),
        _forward_case(rng, B2, C2, h2, w2, ends, "t = 0 and t = 1 in the batch"),
        _forward_case(rng, n, C3, n, n, rng.uniform(0.05, 0.95, size=n), "B = h = w"),
    ]


def _per_latent(t, x0):
    return t.reshape(-1, *([1] * (x0.ndim - 1)))  # (B, 1, 1, 1)


def _fp_swapped(x0, noise, t):
    t4 = _per_latent(t, x0)
    return t4 * x0 + (1 - t4) * noise, noise - x0


def _fp_target_sign(x0, noise, t):
    t4 = _per_latent(t, x0)
    return (1 - t4) * x0 + t4 * noise, x0 - noise


def _fp_target_noise(x0, noise, t):
    t4 = _per_latent(t, x0)
    return (1 - t4) * x0 + t4 * noise, noise.clone()


def _fp_not_shrunk(x0, noise, t):
    return x0 + _per_latent(t, x0) * noise, noise - x0


def _fp_t_last_axis(x0, noise, t):
    return (1 - t) * x0 + t * noise, noise - x0


def _fp_t_rows(x0, noise, t):
    t2 = t[:, None]  # (B, 1): lines up with (h, w)
    return (1 - t2) * x0 + t2 * noise, noise - x0


def _fp_in_place(x0, noise, t):
    t4 = _per_latent(t, x0)
    v = noise - x0
    x0 *= 1 - t4
    x0 += t4 * noise
    return x0, v


def _forward_again(fn, case, t):
    (x0, noise, _), options = case.fresh()
    x_t, v = fn(x0, noise, torch.as_tensor(t, dtype=torch.float64), **options)
    return _numpy(x_t), _numpy(v)


def _ends(fn, case, outputs):
    B = len(case.inputs["t"])
    for t, name, want in ((0.0, "x0", case.inputs["x0"]), (1.0, "the noise", case.inputs["noise"])):
        x_t, _ = _forward_again(fn, case, np.full(B, t))
        gap = np.abs(x_t - want.numpy()).max()
        if gap > 1e-9:
            return f"with t = {t:g} for every latent, x_t differs from {name} by up to {gap:.3g}"
    return None


def _along_the_target(fn, case, outputs):
    x_t, v = outputs
    t = case.inputs["t"].numpy()
    later = np.clip(t + 0.25, 0.0, 1.0)
    x_later, v_later = _forward_again(fn, case, later)
    if np.abs(v_later - v).max() > 1e-9:
        return "the target changes with t: the path is a straight line, its velocity the same at every time"
    moved = x_later - x_t
    want = (later - t).reshape(-1, 1, 1, 1) * v
    gap = np.abs(moved - want).max()
    if gap > 1e-9:
        return (f"moving from t to t + Δ changes x_t by something other than Δ·v_target (up to {gap:.3g} off): x_t "
                f"must lie on the straight line from x0 to the noise, and v_target be its velocity, d x_t / d t")
    return None


def _same_shape_twice(case):
    shape = tuple(case.inputs["x0"].shape)
    return shape, shape


FORWARD_PROCESS = FunctionTask(
    id="07.forward_process",
    title="Noisy latents and their velocity",
    points=2,
    name="forward_process",
    signature="forward_process(x0, noise, t) -> (x_t, v_target)",
    cases=_forward_cases,
    reference=forward_process_reference,
    outputs=("x_t", "v_target"),
    properties=(
        has_shapes(_same_shape_twice, "(B, C, h, w) both, that of x0"),
        finite(0, "x_t"),
        Property("x_t must be x0 at t = 0 and the noise at t = 1", _ends),
        Property("v_target must be the velocity along the path: x_t moves by Δ·v_target from t to t + Δ",
                 _along_the_target),
    ),
    mistakes=(
        Mistake("t and 1 - t swapped: x_t = t·x0 + (1 - t)·noise",
                "t is how far the latent has gone towards the noise: t = 0 must give the clean x0 and t = 1 pure "
                "noise. Check your x_t at the two ends.", _fp_swapped),
        Mistake("the target's sign flipped: x0 - noise",
                "the target is dx_t/dt, the direction in which x_t moves as t GROWS, that is towards the noise. "
                "Differentiate your x_t with respect to t.", _fp_target_sign),
        Mistake("the target is the noise alone (DDPM's ε-prediction)",
                "this model learns the velocity of the straight path, not the noise that was added: differentiate "
                "x_t = (1 - t)·x0 + t·noise with respect to t.", _fp_target_noise),
        Mistake("noise added without shrinking x0: x_t = x0 + t·noise",
                "at t = 1 the latent must be pure noise, with nothing of x0 left: x0's share must fall as the "
                "noise's grows.", _fp_not_shrunk),
        Mistake("t not reshaped: its B times broadcast along the last axis (w), not one per latent",
                "t has shape (B,), and broadcasting lines it up with the LAST axis of (B, C, h, w). Give it one "
                "axis per latent dimension, shape (B, 1, 1, 1), so that latent b uses t[b] everywhere.",
                _fp_t_last_axis),
        Mistake("t reshaped to (B, 1): it lines up with the rows h, not with the batch",
                "broadcasting aligns shapes from the right: (B, 1) meets (h, w). Latent b needs t[b] in every "
                "channel and position: shape (B, 1, 1, 1).", _fp_t_rows),
        Mistake(IN_PLACE, "", _fp_in_place, in_place=True),
    ),
    rtol=1e-9,
    atol=1e-12,
)

# ---------------------------------------------------------------------------------------------
# 07.adaln_mlp
# ---------------------------------------------------------------------------------------------


def adaln_mlp_reference(h, shift, scale, gate, norm, mlp):
    r"""The MLP half of ``DenoiserBlock``: :math:`h + \alpha \odot \mathrm{MLP}(\mathrm{LN}(h)(1 + \gamma) + \beta)`.
    ``h`` ``(B, N, d)``; ``shift`` :math:`\beta`, ``scale`` :math:`\gamma`, ``gate`` :math:`\alpha` ``(B, 1, d)``;
    ``norm`` a LayerNorm without parameters, ``mlp`` the block's MLP -> ``(B, N, d)``."""
    return h + gate * mlp(modulate(norm(h), shift, scale))


def _random_layers(rng: np.random.Generator, d: int):
    """A float64 ``DenoiserBlock``'s ``norm3`` (no parameters: adaLN's scale and shift replace them) and
    ``mlp``, whose weights are drawn from ``rng``."""
    with torch.random.fork_rng(devices=[]):  # its own init would draw from the learner's torch RNG
        block = DenoiserBlock(DiffusionConfig(d_model=d, num_heads=1, mlp_ratio=2)).double().eval()
    with torch.no_grad():
        for name, p in block.mlp.named_parameters():
            values = 0.3 * rng.normal(size=p.shape) if name.endswith("bias") else rng.normal(size=p.shape) / np.sqrt(p.shape[1])
            p.copy_(torch.from_numpy(values))
    return block.norm3.requires_grad_(False), block.mlp.requires_grad_(False)


def _adaln_case(rng, B, N, d, note, gate_zero=False):
    norm, mlp = _random_layers(rng, d)
    gate = np.zeros((B, 1, d)) if gate_zero else rng.normal(size=(B, 1, d))
    return Case({"h": tensor(rng.normal(size=(B, N, d))), "shift": tensor(0.5 * rng.normal(size=(B, 1, d))),
                 "scale": tensor(0.5 * rng.normal(size=(B, 1, d))), "gate": tensor(gate), "norm": norm, "mlp": mlp},
                note=f"d_model = {d}; {note}")


def _adaln_cases(rng: np.random.Generator) -> list[Case]:
    # d_model >= 3: a LayerNorm over 2 features only ever gives ±1
    B, N, d = distinct(rng, 3, 3, 8)
    B2, N2, d2 = distinct(rng, 3, 3, 8)
    B3, N3, d3 = distinct(rng, 3, 3, 7)
    return [_adaln_case(rng, B, N, d, "a trained block"), _adaln_case(rng, B2, N2, d2, "other sizes"),
            _adaln_case(rng, B3, N3, d3, "gate = 0, as adaLN-Zero starts", gate_zero=True)]


def _am_no_one(h, shift, scale, gate, norm, mlp):
    return h + gate * mlp(norm(h) * scale + shift)


def _am_no_shift(h, shift, scale, gate, norm, mlp):
    return h + gate * mlp(norm(h) * (1 + scale))


def _am_swapped(h, shift, scale, gate, norm, mlp):
    return h + gate * mlp(norm(h) * (1 + shift) + scale)


def _am_no_gate(h, shift, scale, gate, norm, mlp):
    return h + mlp(modulate(norm(h), shift, scale))


def _am_after_mlp(h, shift, scale, gate, norm, mlp):
    return h + gate * modulate(mlp(norm(h)), shift, scale)


def _am_no_norm(h, shift, scale, gate, norm, mlp):
    return h + gate * mlp(modulate(h, shift, scale))


def _am_gate_on_sum(h, shift, scale, gate, norm, mlp):
    return gate * (h + mlp(modulate(norm(h), shift, scale)))


def _am_no_residual(h, shift, scale, gate, norm, mlp):
    return gate * mlp(modulate(norm(h), shift, scale))


def _am_normed_residual(h, shift, scale, gate, norm, mlp):
    return norm(h) + gate * mlp(modulate(norm(h), shift, scale))


def _am_in_place(h, shift, scale, gate, norm, mlp):
    h += gate * mlp(modulate(norm(h), shift, scale))
    return h


def _closed_gate(fn, case, outputs):
    args, options = case.fresh()
    args[3] = torch.zeros_like(args[3])
    gap = np.abs(_numpy(fn(*args, **options)) - case.inputs["h"].numpy()).max()
    if gap > 1e-12:
        return f"with gate = 0 the output differs from h by up to {gap:.3g}"
    return None


ADALN_MLP = FunctionTask(
    id="07.adaln_mlp",
    title="The time-modulated MLP",
    points=3,
    name="adaln_mlp",
    signature="adaln_mlp(h, shift, scale, gate, norm, mlp) -> h",
    cases=_adaln_cases,
    reference=adaln_mlp_reference,
    outputs=("h",),
    properties=(
        has_shapes(lambda c: (tuple(c.inputs["h"].shape),), "(B, N, d_model), that of h"),
        finite(0, "h"),
        Property("with gate = 0 the sub-layer must return h unchanged (adaLN-Zero)", _closed_gate),
    ),
    mistakes=(
        Mistake("scale without the 1 +: LN(h)·scale + shift",
                "scale is a change of the LayerNorm's scale, around 1: with scale = 0 the normalised h must pass "
                "unchanged, which a plain product cannot do.", _am_no_one),
        Mistake("the shift forgotten: LN(h)·(1 + scale) only",
                "adaLN replaces both of the LayerNorm's parameters, its scale and its shift: after scaling, add "
                "shift.", _am_no_shift),
        Mistake("shift and scale swapped",
                "scale multiplies, shift adds: LN(h)·(1 + scale) + shift, as in modulate().", _am_swapped),
        Mistake("the gate forgotten: the MLP's output is added at full strength",
                "the gate multiplies what the MLP returns before it is added to h; with gate = 0 the sub-layer "
                "must leave h as it is.", _am_no_gate),
        Mistake("modulated after the MLP: the scale and shift act on its output",
                "adaLN modulates the LayerNorm, the MLP's INPUT: normalise, scale and shift, then the MLP.",
                _am_after_mlp),
        Mistake("the LayerNorm forgotten: h itself is scaled and shifted",
                "norm(h) first: adaLN scales and shifts the normalised h (norm has no parameters of its own; "
                "scale and shift stand in for them).", _am_no_norm),
        Mistake("the gate also scales the residual: gate·(h + MLP(...))",
                "the gate acts on the update only; h passes through the residual as it came.", _am_gate_on_sum),
        Mistake("no residual: the output is gate·MLP(...) alone",
                "the sub-layer adds to the stream: h + gate·(...). Without h, everything earlier layers computed "
                "is lost.", _am_no_residual),
        Mistake("the residual adds the normalised h",
                "normalise only what goes into the MLP; the residual is h as it came.", _am_normed_residual),
        Mistake(IN_PLACE, "", _am_in_place, in_place=True),
    ),
    rtol=1e-7,
    atol=1e-9,
)

# ---------------------------------------------------------------------------------------------
# 07.euler_sample
# ---------------------------------------------------------------------------------------------


def euler_sample_reference(velocity_fn, noise: torch.Tensor, steps: int) -> torch.Tensor:
    """The package's sampler without a model (``sampling.sample_latents``): from ``noise`` ``(B, C, h, w)``
    at t = 1, ``steps`` Euler steps along ``velocity_fn(x, t)`` on ``flow.time_grid(steps)`` down to t = 0."""
    times = flow.time_grid(steps).tolist()  # steps + 1 floats, from 1 to 0
    x = noise
    for t, t_next in zip(times[:-1], times[1:]):
        x = flow.euler_step(x, velocity_fn(x, t), t, t_next)  # (B, C, h, w)
    return x


def _towards_point(rng, C, h, w):
    return TowardsPoint(_latents(rng, C, h, w))


def _linear_field(rng, C, h, w):
    return LinearVelocity(tensor(rng.uniform(-1.0, 1.0, size=(C, h, w))), _latents(rng, C, h, w),
                          0.5 * _latents(rng, C, h, w))


def _sample_cases(rng: np.random.Generator) -> list[Case]:
    cases = []
    # 3, 5, 6 and 7: t = 1 counted down by 1/steps in floats ends near 1e-16, not 0, and a loop
    # `while t > 0` takes one step more; the one-point field shows it.
    for field, steps, note in ((_towards_point, int(rng.choice([3, 5, 6, 7])), "one data point: the walk must land on it"),
                               (_towards_point, 1, "one data point, steps = 1"),
                               (_linear_field, int(rng.integers(3, 9)), "a linear velocity field"),
                               (_linear_field, 1, "a linear velocity field, steps = 1")):
        B, C, h, w = (int(rng.integers(1, 4)), *distinct(rng, 3, 2, 6))
        cases.append(Case({"velocity_fn": field(rng, C, h, w), "noise": _latents(rng, B, C, h, w)},
                          {"steps": steps}, note=note))
    return cases


def _es_walk(velocity_fn, noise, times, read_at=lambda t, t_next: t, sign=-1.0, dt=None):
    """A walk through ``times``, reading the velocity at ``read_at(t, t_next)`` and moving by
    ``sign · |Δt| · v`` (or by ``sign · dt · v``)."""
    x = noise
    for t, t_next in zip(times[:-1], times[1:]):
        step = abs(t_next - t) if dt is None else dt
        x = x + sign * step * velocity_fn(x, read_at(t, t_next))
    return x


def _down(steps):
    return [1.0 - i / steps for i in range(steps + 1)]


def _es_forward(velocity_fn, noise, steps):
    return _es_walk(velocity_fn, noise, _down(steps), sign=1.0)


def _es_grid_up(velocity_fn, noise, steps):
    return _es_walk(velocity_fn, noise, [i / steps for i in range(steps + 1)])


def _es_walked_up(velocity_fn, noise, steps):
    return _es_walk(velocity_fn, noise, [i / steps for i in range(steps + 1)], sign=1.0)


def _es_steps_points(velocity_fn, noise, steps):
    return _es_walk(velocity_fn, noise, torch.linspace(1.0, 0.0, steps).tolist())


def _es_one_more(velocity_fn, noise, steps):
    return _es_walk(velocity_fn, noise, [1.0 - i / steps for i in range(steps + 2)])


def _es_at_t_next(velocity_fn, noise, steps):
    return _es_walk(velocity_fn, noise, _down(steps), read_at=lambda t, t_next: t_next)


def _es_whole_velocity(velocity_fn, noise, steps):
    return _es_walk(velocity_fn, noise, _down(steps), dt=1.0)


def _es_in_place(velocity_fn, noise, steps):
    x = noise
    for t in _down(steps)[:-1]:
        x -= velocity_fn(x, t) / steps
    return x


def _lands_on_the_point(fn, case, outputs):
    field = case.inputs["velocity_fn"]
    if not isinstance(field, TowardsPoint):
        return None
    gap = np.abs(outputs[0] - field.x0.numpy()).max()
    if gap > 1e-6:
        return (f"this walk misses the one data point by up to {gap:.3g}, and a correct one lands on it exactly: "
                f"does it take exactly steps = {case.options['steps']} steps, each towards t = 0, the last one ending "
                f"at t = 0 exactly?")
    return None


EULER_SAMPLE = FunctionTask(
    id="07.euler_sample",
    title="The Euler sampler",
    points=3,
    name="euler_sample",
    signature="euler_sample(velocity_fn, noise, steps) -> x0_hat",
    cases=_sample_cases,
    reference=euler_sample_reference,
    outputs=("x0_hat",),
    properties=(
        has_shapes(lambda c: (tuple(c.inputs["noise"].shape),), "(B, C, h, w), that of the noise"),
        finite(0, "x0_hat"),
        Property("with a single data point the walk must land exactly on it", _lands_on_the_point),
    ),
    mistakes=(
        Mistake("stepped forward in time: x + Δt·v walks back towards the noise",
                "v points from the image towards the noise (it is dx_t/dt); going from t to t - Δt moves the "
                "other way: x - Δt·v.", _es_forward),
        Mistake("the times run from 0 up to 1: the velocity is read at t = 0, 1/steps, ...",
                "the walk starts at the noise, t = 1, and ends at the image, t = 0: read the velocity at "
                "t = 1, 1 - 1/steps, ..., 1/steps, in that order.", _es_grid_up),
        Mistake("walked from t = 0 to t = 1: an ascending grid, x + (t_next - t)·v",
                "the noise is at t = 1: the grid must go DOWN from 1 to 0 (flow.time_grid(steps) does), so that "
                "t_next - t is negative.", _es_walked_up),
        Mistake("steps - 1 steps: torch.linspace(1, 0, steps) has only steps times",
                "steps Euler steps need steps + 1 times, both ends included: torch.linspace(1, 0, steps + 1).",
                _es_steps_points),
        Mistake("one step too many: the walk goes past t = 0",
                "make exactly steps steps, from t = 1 down to t = 0; the last one starts at t = 1/steps.",
                _es_one_more),
        Mistake("the velocity read at t_next, the end of each step",
                "Euler's method reads the velocity where the step STARTS: v(x, t), then moves to t_next.",
                _es_at_t_next),
        Mistake("each step moves by the whole velocity: Δt = 1/steps is missing",
                "one step covers a time Δt = 1/steps, and moves x by Δt·v, not by v.", _es_whole_velocity),
        Mistake(IN_PLACE, "", _es_in_place, in_place=True),
    ),
    rtol=1e-5,
    atol=1e-6,
)

# ---------------------------------------------------------------------------------------------
# 07.guidance
# ---------------------------------------------------------------------------------------------


def _guidance_cases(rng: np.random.Generator) -> list[Case]:
    cases = []
    for scale, note in ((0.0, "guidance_scale = 0"), (1.0, "guidance_scale = 1"),
                        (round(float(rng.uniform(2.0, 7.5)), 2), "guidance_scale > 1"),
                        (round(float(rng.uniform(0.2, 0.8)), 2), "0 < guidance_scale < 1")):
        B, C, h, w = (int(rng.integers(1, 4)), *distinct(rng, 3, 2, 6))
        cases.append(Case({"v_uncond": _latents(rng, B, C, h, w), "v_cond": _latents(rng, B, C, h, w)},
                          {"guidance_scale": scale}, note=note))
    return cases


def _cfg_swapped(v_uncond, v_cond, guidance_scale):
    return v_cond + guidance_scale * (v_uncond - v_cond)


def _cfg_added(v_uncond, v_cond, guidance_scale):
    return v_uncond + guidance_scale * v_cond


def _cfg_from_cond(v_uncond, v_cond, guidance_scale):
    return v_cond + guidance_scale * (v_cond - v_uncond)


def _cfg_average(v_uncond, v_cond, guidance_scale):
    return (v_cond + v_uncond) / 2


def _cfg_sign(v_uncond, v_cond, guidance_scale):
    return v_uncond - guidance_scale * (v_cond - v_uncond)


def _cfg_no_uncond(v_uncond, v_cond, guidance_scale):
    return guidance_scale * (v_cond - v_uncond)


def _cfg_cond_only(v_uncond, v_cond, guidance_scale):
    return guidance_scale * v_cond


def _cfg_in_place(v_uncond, v_cond, guidance_scale):
    v_cond -= v_uncond
    v_cond *= guidance_scale
    v_cond += v_uncond
    return v_cond


def _at_scale(scale: float, expected: str):
    def test(fn, case, outputs):
        args, _ = case.fresh()
        got = _numpy(fn(*args, guidance_scale=scale))
        want = case.inputs[expected].numpy()
        if got.shape != want.shape or not np.allclose(got, want, rtol=1e-9, atol=1e-12):
            return f"with guidance_scale = {scale:g} it does not return {expected}"
        return None

    return Property(f"guidance_scale {scale:g} must give {expected}", test)


GUIDANCE = FunctionTask(
    id="07.guidance",
    title="Guidance on velocities",
    points=2,
    name="guided_velocity",
    signature="guided_velocity(v_uncond, v_cond, guidance_scale) -> v",
    cases=_guidance_cases,
    reference=flow.guided_velocity,
    outputs=("v",),
    properties=(
        has_shapes(lambda c: (tuple(c.inputs["v_cond"].shape),), "(B, C, h, w), that of the velocities"),
        _at_scale(1.0, "v_cond"),
        _at_scale(0.0, "v_uncond"),
    ),
    mistakes=(
        Mistake("v_cond and v_uncond swapped: v_cond + s·(v_uncond - v_cond) pushes towards no caption",
                "start from the velocity without the caption and move towards what the caption changes. Mind "
                "the order of the arguments: v_uncond comes first.", _cfg_swapped),
        Mistake("v_uncond + s·v_cond: the velocities added, not their difference scaled",
                "guidance scales what the caption CHANGES, the difference between the two velocities; with "
                "s = 1 it must give v_cond exactly.", _cfg_added),
        Mistake("v_cond + s·(v_cond - v_uncond): that is guidance with scale 1 + s",
                "some papers write guidance this way, with w = s - 1; this course's scale makes s = 1 the "
                "conditional velocity and s = 0 the unconditional one.", _cfg_from_cond),
        Mistake("averaged v_cond and v_uncond",
                "guidance extrapolates, it does not average: s > 1 goes beyond v_cond, and the result depends on s.",
                _cfg_average),
        Mistake("sign flipped: v_uncond - s·(v_cond - v_uncond) pushes away from the caption",
                "move in the direction of the caption's change, not against it.", _cfg_sign),
        Mistake("forgot to add v_uncond back: s·(v_cond - v_uncond)",
                "the difference is only a direction; start from the unconditional velocity.", _cfg_no_uncond),
        Mistake("scaled the conditional velocity only: s·v_cond",
                "what matters is how the caption CHANGES the velocity, so both velocities take part.",
                _cfg_cond_only),
        Mistake(IN_PLACE, "", _cfg_in_place, in_place=True),
    ),
)

# ---------------------------------------------------------------------------------------------
# 07.inject_maps
# ---------------------------------------------------------------------------------------------


def inject_maps_reference(weights: torch.Tensor, stored: torch.Tensor, inject_steps: int, layers=None):
    """Prompt-to-prompt over a whole run, through the package's ``AttentionInjection``: ``weights`` and
    ``stored`` ``(steps, layers, B, heads, N, L)``, this run's and the source run's maps -> the maps this run
    uses: the source's at steps ``< inject_steps`` in ``layers`` (every layer if ``None``), its own elsewhere."""
    steps, num_layers = weights.shape[:2]
    store = control.AttentionStore({(s, l): stored[s, l] for s in range(steps) for l in range(num_layers)})
    inject = control.AttentionInjection(store, inject_steps, layers)
    return torch.stack([torch.stack([inject.edit(s, l, weights[s, l]) for l in range(num_layers)])
                        for s in range(steps)])  # (steps, layers, B, heads, N, L)


def _maps(rng, shape):
    logits = 2.0 * rng.normal(size=shape)
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return tensor(e / e.sum(axis=-1, keepdims=True))  # every row sums to 1 over the L words


def _inject_cases(rng: np.random.Generator) -> list[Case]:
    cases = []
    for kind in ("some steps", "some layers", "inject_steps = 0", "inject_steps = steps"):
        steps, num_layers = distinct(rng, 2, 3, 7)
        B, heads, N, L = int(rng.integers(1, 3)), 2, int(rng.integers(3, 6)), int(rng.integers(2, 5))
        shape = (steps, num_layers, B, heads, N, L)
        k = {"inject_steps = 0": 0, "inject_steps = steps": steps}.get(kind, int(rng.integers(1, steps)))
        layers = None
        if kind in ("some layers", "inject_steps = steps"):
            chosen = rng.choice(num_layers, size=int(rng.integers(1, num_layers)), replace=False)
            layers = sorted(int(i) for i in chosen)
        cases.append(Case({"weights": _maps(rng, shape), "stored": _maps(rng, shape)},
                          {"inject_steps": k, "layers": layers}, note=kind))
    return cases


def _chosen(weights, inject_steps, layers, steps_kept=None):
    """``(steps, layers)`` bool: where the source's maps are used; ``steps_kept(step, k)`` overrides ``step < k``."""
    steps, num_layers = weights.shape[:2]
    rule = steps_kept or (lambda s, k: s < k)
    return torch.tensor([[rule(s, inject_steps) and (layers is None or l in layers) for l in range(num_layers)]
                         for s in range(steps)])


def _pick(weights, stored, where):
    return torch.where(where[:, :, None, None, None, None], stored, weights)


def _im_inclusive(weights, stored, inject_steps, layers=None):
    return _pick(weights, stored, _chosen(weights, inject_steps, layers, lambda s, k: s <= k))


def _im_after(weights, stored, inject_steps, layers=None):
    return _pick(weights, stored, _chosen(weights, inject_steps, layers, lambda s, k: s >= k))


def _im_every_step(weights, stored, inject_steps, layers=None):
    return _pick(weights, stored, _chosen(weights, inject_steps, layers, lambda s, k: True))


def _im_layers_ignored(weights, stored, inject_steps, layers=None):
    return _pick(weights, stored, _chosen(weights, inject_steps, None))


def _im_layers_axis(weights, stored, inject_steps, layers=None):
    out = weights.clone()
    out[:, :inject_steps] = stored[:, :inject_steps]
    return out


def _im_never(weights, stored, inject_steps, layers=None):
    return weights.clone()


def _im_in_place(weights, stored, inject_steps, layers=None):
    chosen = slice(None) if layers is None else list(layers)
    weights[:inject_steps, chosen] = stored[:inject_steps, chosen]
    return weights


def _split_steps(fn, case, outputs):
    got = outputs[0]
    weights, stored = case.inputs["weights"].numpy(), case.inputs["stored"].numpy()
    k, layers = case.options["inject_steps"], case.options["layers"]
    if got.shape != weights.shape:
        return None
    for s in range(got.shape[0]):
        for l in range(got.shape[1]):
            injected = s < k and (layers is None or l in layers)
            want, what = (stored, "the source run's") if injected else (weights, "this run's own")
            if not np.array_equal(got[s, l], want[s, l]):
                return f"the maps of step {s}, layer {l} are not {what}"
    return None


INJECT_MAPS = FunctionTask(
    id="07.inject_maps",
    title="Prompt-to-prompt map injection",
    points=2,
    name="inject_maps",
    signature="inject_maps(weights, stored, inject_steps, layers=None) -> weights",
    cases=_inject_cases,
    reference=inject_maps_reference,
    outputs=("weights",),
    properties=(
        has_shapes(lambda c: (tuple(c.inputs["weights"].shape),), "(steps, layers, B, heads, N, L), that of weights"),
        sums_to_one(0, lambda c: -1, "every map row must still sum to 1 over the words", "the weights at"),
        Property("steps before inject_steps (in the chosen layers) must use the source run's maps, the others "
                 "this run's own, unchanged", _split_steps),
    ),
    mistakes=(
        Mistake("<= instead of <: injected one step too many",
                "inject_steps counts the steps that get the source's maps: steps 0, 1, ..., inject_steps - 1. "
                "With inject_steps = 0 nothing is injected.", _im_inclusive),
        Mistake("injected at the last steps instead of the first",
                "the layout of an image is settled in the FIRST steps, near the noise: those are the steps that "
                "take the source's maps; the later ones keep this run's own, to paint the new word.", _im_after),
        Mistake("injected at every step: inject_steps ignored",
                "only the steps before inject_steps take the source's maps; the rest keep this run's own, or the "
                "edit could never differ from the source image.", _im_every_step),
        Mistake("layers ignored: injected into every layer",
                "when layers is a list, only those layers take the source's maps; None means every layer.",
                _im_layers_ignored),
        Mistake("indexed the layers axis with the steps: weights[:, :inject_steps]",
                "the maps are (steps, layers, ...): the steps are the FIRST axis.", _im_layers_axis),
        Mistake("nothing injected: this run's maps came back unchanged",
                "the steps before inject_steps (in the chosen layers) must take the source run's maps, stored.",
                _im_never),
        Mistake(IN_PLACE, "", _im_in_place, in_place=True),
    ),
    rtol=0.0,
    atol=0.0,
)

TASKS = (FORWARD_PROCESS, ADALN_MLP, EULER_SAMPLE, GUIDANCE, INJECT_MAPS)
