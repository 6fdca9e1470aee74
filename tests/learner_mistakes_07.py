"""Exercises 07's catalogued mistakes, written the way a learner would write them, and right answers
written in unusual ways, which must pass (imported by tests/test_grading_mistakes.py).

Independent of the catalogue's own versions in crossmodal_edu/grading/tasks/lesson07.py.
"""
import torch
import torch.nn.functional as F

from crossmodal_edu.grading.spec import IN_PLACE


def _col(t):
    return t.view(-1, 1, 1, 1)


# --- 07.forward_process ------------------------------------------------------------------------

def forward_t_swapped(x0, noise, t):
    t = _col(t)
    return t * x0 + (1 - t) * noise, noise - x0


def forward_target_reversed(x0, noise, t):
    x_t = torch.lerp(x0, noise, _col(t))
    return x_t, x0 - noise


def forward_predicts_noise(x0, noise, t):
    t = t[:, None, None, None]
    return (1 - t) * x0 + t * noise, noise


def forward_noise_on_top(x0, noise, t):
    return x0 + _col(t) * noise, noise - x0


def forward_t_not_reshaped(x0, noise, t):
    x_t = (1 - t) * x0 + t * noise
    return x_t, noise - x0


def forward_t_unsqueezed_once(x0, noise, t):
    t = t.unsqueeze(-1)
    return (1 - t) * x0 + t * noise, noise - x0


def forward_in_place(x0, noise, t):
    target = noise - x0
    x_t = x0
    x_t.mul_(1 - _col(t)).add_(_col(t) * noise)
    return x_t, target


# Right, written unusually: on the target, with lerp, with einsum, with a loop over the batch.
def forward_from_the_target(x0, noise, t):
    v = noise - x0
    return x0 + _col(t) * v, v


def forward_lerp(x0, noise, t):
    return torch.lerp(x0, noise, t.reshape(-1, *[1] * (x0.dim() - 1))), torch.sub(noise, x0)


def forward_loop(x0, noise, t):
    x_t = torch.stack([(1 - t[b]) * x0[b] + t[b] * noise[b] for b in range(len(t))])
    return x_t, noise - x0


# --- 07.adaln_mlp -----------------------------------------------------------------------------

def adaln_scale_without_one(h, shift, scale, gate, norm, mlp):
    return h + gate * mlp(norm(h) * scale + shift)


def adaln_without_shift(h, shift, scale, gate, norm, mlp):
    normed = norm(h)
    return h + gate * mlp(normed + scale * normed)


def adaln_shift_and_scale_swapped(h, shift, scale, gate, norm, mlp):
    return h + gate * mlp(norm(h) * (1 + shift) + scale)


def adaln_no_gate(h, shift, scale, gate, norm, mlp):
    return h + mlp(norm(h) * (1 + scale) + shift)


def adaln_modulates_the_output(h, shift, scale, gate, norm, mlp):
    out = mlp(norm(h))
    return h + gate * (out * (1 + scale) + shift)


def adaln_no_layer_norm(h, shift, scale, gate, norm, mlp):
    return h + gate * mlp(h * (1 + scale) + shift)


def adaln_gate_everything(h, shift, scale, gate, norm, mlp):
    return (h + mlp(norm(h) * (1 + scale) + shift)) * gate


def adaln_no_residual(h, shift, scale, gate, norm, mlp):
    return gate * mlp(norm(h) * (1 + scale) + shift)


def adaln_normed_residual(h, shift, scale, gate, norm, mlp):
    h = norm(h)
    return h + gate * mlp(h * (1 + scale) + shift)


def adaln_in_place(h, shift, scale, gate, norm, mlp):
    update = mlp(norm(h) * (1 + scale) + shift)
    h.add_(gate * update)
    return h


# Right, written unusually: addcmul, F.layer_norm by hand, in place on a clone.
def adaln_addcmul(h, shift, scale, gate, norm, mlp):
    modulated = torch.addcmul(shift, norm(h), 1 + scale)
    return torch.addcmul(h, gate, mlp(modulated))


def adaln_own_layer_norm(h, shift, scale, gate, norm, mlp):
    normed = F.layer_norm(h, h.shape[-1:], eps=norm.eps)
    return h + gate * mlp(normed + normed * scale + shift)


def adaln_on_a_clone(h, shift, scale, gate, norm, mlp):
    out = h.clone()
    out += gate * mlp(norm(h) * (1 + scale) + shift)
    return out


# --- 07.euler_sample --------------------------------------------------------------------------

def sample_steps_forward(velocity_fn, noise, steps):
    x, dt = noise, 1.0 / steps
    for i in range(steps):
        t = 1.0 - i * dt
        x = x + dt * velocity_fn(x, t)
    return x


def sample_times_upwards(velocity_fn, noise, steps):
    x = noise
    for i in range(steps):
        x = x - velocity_fn(x, i / steps) / steps
    return x


def sample_ascending_grid(velocity_fn, noise, steps):
    times = torch.linspace(0, 1, steps + 1)
    x = noise
    for i in range(steps):
        t, t_next = times[i].item(), times[i + 1].item()
        x = x + (t_next - t) * velocity_fn(x, t)
    return x


def sample_linspace_steps(velocity_fn, noise, steps):
    times = torch.linspace(1.0, 0.0, steps)
    x = noise
    for t, t_next in zip(times[:-1], times[1:]):
        x = x + (t_next - t) * velocity_fn(x, t)
    return x


def sample_one_step_too_many(velocity_fn, noise, steps):
    x, dt = noise, 1 / steps
    for i in range(steps + 1):
        x = x - dt * velocity_fn(x, 1 - i * dt)
    return x


def sample_velocity_at_the_end(velocity_fn, noise, steps):
    x, dt = noise, 1 / steps
    for i in range(steps):
        t_next = 1 - (i + 1) * dt
        x = x - dt * velocity_fn(x, t_next)
    return x


def sample_without_dt(velocity_fn, noise, steps):
    x = noise
    for i in range(steps):
        x = x - velocity_fn(x, 1 - i / steps)
    return x


def sample_in_place(velocity_fn, noise, steps):
    x, dt = noise, 1 / steps
    t = 1.0
    for _ in range(steps):
        x -= dt * velocity_fn(x, t)
        t -= dt
    return x


# Right, written unusually: a while loop over time, float64 times, the package's grid, one item at a time.
def sample_while_loop(velocity_fn, noise, steps):
    x, t, dt = noise.clone(), 1.0, 1.0 / steps
    while t > dt / 2:  # not t > 0: 1 - 1/3 - 1/3 - 1/3 is 1e-16, not 0
        x.sub_(dt * velocity_fn(x, t))
        t -= dt
    return x


def sample_float64_grid(velocity_fn, noise, steps):
    times = torch.linspace(1, 0, steps + 1, dtype=torch.float64)
    x = noise
    for i in range(steps):
        x = x + (times[i + 1] - times[i]) * velocity_fn(x, times[i])
    return x


def sample_package_grid(velocity_fn, noise, steps):
    from crossmodal_edu.diffusion.flow import euler_step, time_grid

    times = time_grid(steps)
    x = noise
    for t, t_next in zip(times[:-1], times[1:]):
        x = euler_step(x, velocity_fn(x, float(t)), float(t), float(t_next))
    return x


def sample_each_latent(velocity_fn, noise, steps):
    out = []
    for x in noise:  # (C, h, w) at a time: the fields act on each latent alone
        for k in range(steps, 0, -1):
            x = x - velocity_fn(x, k / steps) / steps
        out.append(x)
    return torch.stack(out)


# --- 07.guidance ------------------------------------------------------------------------------

def guidance_swapped(v_uncond, v_cond, guidance_scale):
    return v_cond + guidance_scale * (v_uncond - v_cond)


def guidance_added(v_uncond, v_cond, guidance_scale):
    return guidance_scale * v_cond + v_uncond


def guidance_one_plus_s(v_uncond, v_cond, guidance_scale):
    return (1 + guidance_scale) * v_cond - guidance_scale * v_uncond


def guidance_averaged(v_uncond, v_cond, guidance_scale):
    return 0.5 * (v_uncond + v_cond)


def guidance_sign_flipped(v_uncond, v_cond, guidance_scale):
    return v_uncond + guidance_scale * (v_uncond - v_cond)


def guidance_difference_only(v_uncond, v_cond, guidance_scale):
    return guidance_scale * (v_cond - v_uncond)


def guidance_scales_cond(v_uncond, v_cond, guidance_scale):
    return v_cond * guidance_scale


def guidance_in_place(v_uncond, v_cond, guidance_scale):
    v_cond.sub_(v_uncond).mul_(guidance_scale).add_(v_uncond)
    return v_cond


# Right, written unusually: lerp (which extrapolates for weights above 1), and the two weights.
def guidance_lerp(v_uncond, v_cond, guidance_scale):
    return torch.lerp(v_uncond, v_cond, guidance_scale)


def guidance_two_weights(v_uncond, v_cond, guidance_scale):
    return (1 - guidance_scale) * v_uncond + guidance_scale * v_cond


# --- 07.inject_maps ---------------------------------------------------------------------------

def _layer_ok(layer, layers):
    return layers is None or layer in layers


def inject_inclusive(weights, stored, inject_steps, layers=None):
    out = weights.clone()
    for step in range(weights.shape[0]):
        for layer in range(weights.shape[1]):
            if step <= inject_steps and _layer_ok(layer, layers):
                out[step, layer] = stored[step, layer]
    return out


def inject_at_the_end(weights, stored, inject_steps, layers=None):
    out = weights.clone()
    for layer in range(weights.shape[1]):
        if _layer_ok(layer, layers):
            out[inject_steps:, layer] = stored[inject_steps:, layer]
    return out


def inject_all_steps(weights, stored, inject_steps, layers=None):
    if layers is None:
        return stored.clone()
    out = weights.clone()
    out[:, layers] = stored[:, layers]
    return out


def inject_every_layer(weights, stored, inject_steps, layers=None):
    out = weights.clone()
    out[:inject_steps] = stored[:inject_steps]
    return out


def inject_on_the_layers_axis(weights, stored, inject_steps, layers=None):
    return torch.cat([stored[:, :inject_steps], weights[:, inject_steps:]], dim=1)


def inject_nothing(weights, stored, inject_steps, layers=None):
    return weights


def inject_in_place(weights, stored, inject_steps, layers=None):
    for step in range(inject_steps):
        for layer in range(weights.shape[1]):
            if _layer_ok(layer, layers):
                weights[step, layer] = stored[step, layer]
    return weights


# Right, written unusually: a mask and torch.where; the package's AttentionInjection, call by call.
def inject_with_a_mask(weights, stored, inject_steps, layers=None):
    steps, num_layers = weights.shape[:2]
    early = torch.arange(steps) < inject_steps  # (steps,)
    chosen = torch.ones(num_layers, dtype=torch.bool) if layers is None else \
        torch.isin(torch.arange(num_layers), torch.tensor(list(layers), dtype=torch.long))
    where = (early[:, None] & chosen[None, :]).view(steps, num_layers, 1, 1, 1, 1)
    return torch.where(where, stored, weights)


def inject_with_the_package(weights, stored, inject_steps, layers=None):
    from crossmodal_edu.diffusion.control import AttentionInjection, AttentionStore

    store = AttentionStore()
    for step in range(stored.shape[0]):
        for layer in range(stored.shape[1]):
            store.edit(step, layer, stored[step, layer])
    injection = AttentionInjection(store, inject_steps, layers)
    rows = [[injection.edit(s, l, weights[s, l]) for l in range(weights.shape[1])] for s in range(weights.shape[0])]
    return torch.stack([torch.stack(row) for row in rows])


LEARNER_MISTAKES_07 = {
    "07.forward_process": {
        "t and 1 - t swapped: x_t = t·x0 + (1 - t)·noise": forward_t_swapped,
        "the target's sign flipped: x0 - noise": forward_target_reversed,
        "the target is the noise alone (DDPM's ε-prediction)": forward_predicts_noise,
        "noise added without shrinking x0: x_t = x0 + t·noise": forward_noise_on_top,
        "t not reshaped: its B times broadcast along the last axis (w), not one per latent": forward_t_not_reshaped,
        "t reshaped to (B, 1): it lines up with the rows h, not with the batch": forward_t_unsqueezed_once,
        IN_PLACE: forward_in_place,
    },
    "07.adaln_mlp": {
        "scale without the 1 +: LN(h)·scale + shift": adaln_scale_without_one,
        "the shift forgotten: LN(h)·(1 + scale) only": adaln_without_shift,
        "shift and scale swapped": adaln_shift_and_scale_swapped,
        "the gate forgotten: the MLP's output is added at full strength": adaln_no_gate,
        "modulated after the MLP: the scale and shift act on its output": adaln_modulates_the_output,
        "the LayerNorm forgotten: h itself is scaled and shifted": adaln_no_layer_norm,
        "the gate also scales the residual: gate·(h + MLP(...))": adaln_gate_everything,
        "no residual: the output is gate·MLP(...) alone": adaln_no_residual,
        "the residual adds the normalised h": adaln_normed_residual,
        IN_PLACE: adaln_in_place,
    },
    "07.euler_sample": {
        "stepped forward in time: x + Δt·v walks back towards the noise": sample_steps_forward,
        "the times run from 0 up to 1: the velocity is read at t = 0, 1/steps, ...": sample_times_upwards,
        "walked from t = 0 to t = 1: an ascending grid, x + (t_next - t)·v": sample_ascending_grid,
        "steps - 1 steps: torch.linspace(1, 0, steps) has only steps times": sample_linspace_steps,
        "one step too many: the walk goes past t = 0": sample_one_step_too_many,
        "the velocity read at t_next, the end of each step": sample_velocity_at_the_end,
        "each step moves by the whole velocity: Δt = 1/steps is missing": sample_without_dt,
        IN_PLACE: sample_in_place,
    },
    "07.guidance": {
        "v_cond and v_uncond swapped: v_cond + s·(v_uncond - v_cond) pushes towards no caption": guidance_swapped,
        "v_uncond + s·v_cond: the velocities added, not their difference scaled": guidance_added,
        "v_cond + s·(v_cond - v_uncond): that is guidance with scale 1 + s": guidance_one_plus_s,
        "averaged v_cond and v_uncond": guidance_averaged,
        "sign flipped: v_uncond - s·(v_cond - v_uncond) pushes away from the caption": guidance_sign_flipped,
        "forgot to add v_uncond back: s·(v_cond - v_uncond)": guidance_difference_only,
        "scaled the conditional velocity only: s·v_cond": guidance_scales_cond,
        IN_PLACE: guidance_in_place,
    },
    "07.inject_maps": {
        "<= instead of <: injected one step too many": inject_inclusive,
        "injected at the last steps instead of the first": inject_at_the_end,
        "injected at every step: inject_steps ignored": inject_all_steps,
        "layers ignored: injected into every layer": inject_every_layer,
        "indexed the layers axis with the steps: weights[:, :inject_steps]": inject_on_the_layers_axis,
        "nothing injected: this run's maps came back unchanged": inject_nothing,
        IN_PLACE: inject_in_place,
    },
}

# Correct answers that look nothing like the solution: each must pass.
RIGHT_ANSWERS_07 = [
    ("07.forward_process", forward_from_the_target),
    ("07.forward_process", forward_lerp),
    ("07.forward_process", forward_loop),
    ("07.adaln_mlp", adaln_addcmul),
    ("07.adaln_mlp", adaln_own_layer_norm),
    ("07.adaln_mlp", adaln_on_a_clone),
    ("07.euler_sample", sample_while_loop),
    ("07.euler_sample", sample_float64_grid),
    ("07.euler_sample", sample_package_grid),
    ("07.euler_sample", sample_each_latent),
    ("07.guidance", guidance_lerp),
    ("07.guidance", guidance_two_weights),
    ("07.inject_maps", inject_with_a_mask),
    ("07.inject_maps", inject_with_the_package),
]
