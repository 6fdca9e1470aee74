"""Exercises 04 and 05: the mistakes a class makes that the first catalogue missed, written the way a
learner would write them, unusual ways of writing the old ones, and right answers written unusually,
which must pass (imported by tests/test_grading_mistakes.py).

Independent of the catalogue's own versions in crossmodal_edu/grading/tasks/online_slips.py,
lesson04.py and lesson05.py: each function here is a whole answer, as a learner would hand it in.
"""
import numpy as np
import torch

# --- 04.online_update --------------------------------------------------------------------------


def _max_and_safe(m, scores):
    m_new = np.maximum(m, np.max(scores, axis=-1, keepdims=True))
    return m_new, np.where(np.isinf(m_new), 0.0, m_new)


def update_l_alpha_upside_down(m, l, acc, scores, v):
    m_new, safe = _max_and_safe(m, scores)
    p = np.exp(scores - safe)
    return m_new, np.exp(safe - m) * l + p.sum(-1, keepdims=True), np.exp(m - safe) * acc + p @ v


def update_acc_alpha_upside_down(m, l, acc, scores, v):
    m_new, safe = _max_and_safe(m, scores)
    p = np.exp(scores - safe)
    l_new = np.exp(m - safe) * l + np.sum(p, axis=-1, keepdims=True)
    return m_new, l_new, np.exp(safe - m) * acc + p @ v


def update_alpha_from_block_max(m, l, acc, scores, v):
    block_max = scores.max(-1, keepdims=True)
    m_new, safe = _max_and_safe(m, scores)
    alpha = np.exp(m - block_max)
    p = np.exp(scores - safe)
    return m_new, alpha * l + p.sum(-1, keepdims=True), alpha * acc + p @ v


def update_l_alpha_from_block_max(m, l, acc, scores, v):
    m_new, safe = _max_and_safe(m, scores)
    p = np.exp(scores - safe)
    l_new = np.exp(m - scores.max(-1, keepdims=True)) * l + p.sum(-1, keepdims=True)
    return m_new, l_new, np.exp(m - safe) * acc + p @ v


def update_acc_alpha_from_block_max(m, l, acc, scores, v):
    m_new, safe = _max_and_safe(m, scores)
    p = np.exp(scores - safe)
    acc_new = np.exp(m - np.max(scores, axis=-1, keepdims=True)) * acc + np.matmul(p, v)
    return m_new, np.exp(m - safe) * l + p.sum(-1, keepdims=True), acc_new


def update_alpha_times_everything(m, l, acc, scores, v):
    m_new, safe = _max_and_safe(m, scores)
    alpha, p = np.exp(m - safe), np.exp(scores - safe)
    return m_new, alpha * (l + p.sum(-1, keepdims=True)), alpha * (acc + p @ v)


def update_alpha_times_all_of_l(m, l, acc, scores, v):
    m_new, safe = _max_and_safe(m, scores)
    alpha, p = np.exp(m - safe), np.exp(scores - safe)
    return m_new, (l + p.sum(-1, keepdims=True)) * alpha, acc * alpha + p @ v


def update_alpha_times_all_of_acc(m, l, acc, scores, v):
    m_new, safe = _max_and_safe(m, scores)
    alpha, p = np.exp(m - safe), np.exp(scores - safe)
    return m_new, alpha * l + p.sum(-1, keepdims=True), alpha * acc + alpha * (p @ v)


def update_alpha_on_the_new_part(m, l, acc, scores, v):
    m_new, safe = _max_and_safe(m, scores)
    alpha, p = np.exp(m - safe), np.exp(scores - safe)
    return m_new, l + alpha * p.sum(-1, keepdims=True), acc + alpha * (p @ v)


def update_alpha_on_the_new_part_of_l(m, l, acc, scores, v):
    m_new, safe = _max_and_safe(m, scores)
    alpha, p = np.exp(m - safe), np.exp(scores - safe)
    return m_new, l + alpha * np.sum(p, -1, keepdims=True), alpha * acc + p @ v


def update_alpha_on_the_new_part_of_acc(m, l, acc, scores, v):
    m_new, safe = _max_and_safe(m, scores)
    alpha, p = np.exp(m - safe), np.exp(scores - safe)
    return m_new, alpha * l + p.sum(-1, keepdims=True), acc + alpha * p @ v


def update_sum_without_keepdims(m, l, acc, scores, v):
    m_new, safe = _max_and_safe(m, scores)
    alpha, p = np.exp(m - safe), np.exp(scores - safe)
    return m_new, alpha * l + p.sum(-1), alpha * acc + p @ v


def update_global_block_max(m, l, acc, scores, v):
    m_new = np.maximum(m, np.max(scores))
    safe = np.where(np.isinf(m_new), 0.0, m_new)
    alpha, p = np.exp(m - safe), np.exp(scores - safe)
    return m_new, alpha * l + p.sum(-1, keepdims=True), alpha * acc + p @ v


def update_p_from_block_max(m, l, acc, scores, v):
    m_new, safe = _max_and_safe(m, scores)
    p = np.exp(scores - scores.max(axis=-1, keepdims=True))  # a softmax numerator of the block alone
    alpha = np.exp(m - safe)
    return m_new, alpha * l + p.sum(-1, keepdims=True), alpha * acc + p @ v


def update_p_from_old_max(m, l, acc, scores, v):
    m_new, safe = _max_and_safe(m, scores)
    alpha = np.exp(m - safe)
    p = np.exp(scores - m)
    return m_new, alpha * l + p.sum(-1, keepdims=True), alpha * acc + p @ v


def update_plain_sums(m, l, acc, scores, v):
    p = np.exp(scores)
    return np.maximum(m, scores.max(-1, keepdims=True)), l + p.sum(-1, keepdims=True), acc + p @ v


def update_empty_max_as_zero(m, l, acc, scores, v):
    m = np.where(np.isneginf(m), 0.0, m)  # "no NaN": -inf replaced first
    m_new = np.maximum(m, scores.max(-1, keepdims=True))
    alpha, p = np.exp(m - m_new), np.exp(scores - m_new)
    return m_new, alpha * l + p.sum(-1, keepdims=True), alpha * acc + p @ v


def update_returns_normalised_acc(m, l, acc, scores, v):
    m_new, safe = _max_and_safe(m, scores)
    alpha, p = np.exp(m - safe), np.exp(scores - safe)
    l_new = alpha * l + p.sum(-1, keepdims=True)
    return m_new, l_new, (alpha * acc + p @ v) / l_new


def update_old_max_kept_in_a_variable(m, l, acc, scores, v):  # an unusual "maximum not carried forward"
    m_old = m.copy()
    m = np.maximum(m, scores.max(-1, keepdims=True))
    safe = np.where(np.isneginf(m), 0, m)
    alpha, p = np.exp(m_old - safe), np.exp(scores - safe)
    return m_old, alpha * l + p.sum(-1, keepdims=True), alpha * acc + p @ v


# A slip in an answer that also forgot the guard of a row with no key: named by the slip.
def update_acc_not_rescaled_unguarded(m, l, acc, scores, v):
    m_new = np.maximum(m, scores.max(-1, keepdims=True))
    alpha, p = np.exp(m - m_new), np.exp(scores - m_new)
    return m_new, alpha * l + p.sum(-1, keepdims=True), acc + p @ v


def update_alpha_on_the_new_part_unguarded(m, l, acc, scores, v):
    m_new = np.maximum(m, scores.max(-1, keepdims=True))
    alpha, p = np.exp(m - m_new), np.exp(scores - m_new)
    return m_new, l + alpha * p.sum(-1, keepdims=True), acc + alpha * (p @ v)


# Right, written unusually.
def update_masks_instead_of_shift(m, l, acc, scores, v):
    m_new = np.maximum(m, scores.max(-1, keepdims=True))
    with np.errstate(invalid="ignore"):
        alpha = np.where(np.isneginf(m), 0.0, np.exp(m - m_new))
        p = np.where(np.isneginf(scores), 0.0, np.exp(scores - m_new))
    return m_new, alpha * l + p.sum(-1, keepdims=True), alpha * acc + np.einsum("...qk,...kd->...qd", p, v)


def update_nan_to_num(m, l, acc, scores, v):
    m_new = np.maximum(m, scores.max(-1, keepdims=True))
    with np.errstate(invalid="ignore"):
        alpha = np.nan_to_num(np.exp(m - m_new))
        p = np.nan_to_num(np.exp(scores - m_new))
    return m_new, alpha * l + p.sum(-1, keepdims=True), alpha * acc + p @ v


def update_in_torch(m, l, acc, scores, v):  # computed in torch, handed back as NumPy arrays
    m, l, acc, scores, v = (torch.from_numpy(a) for a in (m, l, acc, scores, v))
    m_new = torch.maximum(m, scores.amax(-1, keepdim=True))
    shift = torch.where(torch.isfinite(m_new), m_new, torch.zeros_like(m_new))
    alpha, p = torch.exp(m - shift), torch.exp(scores - shift)
    return m_new.numpy(), (alpha * l + p.sum(-1, keepdim=True)).numpy(), (alpha * acc + p @ v).numpy()


def update_returns_tensors(m, l, acc, scores, v):  # right values, but the state cannot be folded again
    m, l, acc, scores, v = (torch.from_numpy(a) for a in (m, l, acc, scores, v))
    m_new = torch.maximum(m, scores.amax(-1, keepdim=True))
    shift = torch.where(torch.isfinite(m_new), m_new, torch.zeros_like(m_new))
    alpha, p = torch.exp(m - shift), torch.exp(scores - shift)
    return m_new, alpha * l + p.sum(-1, keepdim=True), alpha * acc + p @ v


# --- 04.blocked_attention ----------------------------------------------------------------------
# The exercise gives the loop; a learner changes a line or two of it, or rewrites it.


def _loop(q, k, v, block_size, body, m0=-np.inf, stop=None, divide=True):
    m = np.full(q.shape[:-1] + (1,), m0)
    l = np.zeros(q.shape[:-1] + (1,))
    acc = np.zeros(q.shape[:-1] + (v.shape[-1],))
    for start in range(0, k.shape[-2] if stop is None else stop, block_size):
        keys = slice(start, start + block_size)
        scores = q @ k[..., keys, :].swapaxes(-1, -2) / np.sqrt(q.shape[-1])
        m_new = np.maximum(m, scores.max(axis=-1, keepdims=True))
        alpha = np.exp(m - m_new)
        m, l, acc = body(m, l, acc, scores, m_new, alpha, v[..., keys, :])
    return acc / l if divide else acc


def blocked_acc_alpha_inverted_inline(q, k, v, block_size=3):
    def body(m, l, acc, scores, m_new, alpha, vb):
        p = np.exp(scores - m_new)
        return m_new, alpha * l + p.sum(axis=-1, keepdims=True), np.exp(m_new - m) * acc + p @ vb
    return _loop(q, k, v, block_size, body)


def blocked_p_from_old_max(q, k, v, block_size=3):
    def body(m, l, acc, scores, m_new, alpha, vb):
        p = np.exp(scores - m)
        return m_new, alpha * l + p.sum(axis=-1, keepdims=True), alpha * acc + p @ vb
    return _loop(q, k, v, block_size, body)


def blocked_alpha_from_block_max(q, k, v, block_size=3):
    def body(m, l, acc, scores, m_new, alpha, vb):
        a = np.exp(m - scores.max(axis=-1, keepdims=True))
        p = np.exp(scores - m_new)
        return m_new, a * l + p.sum(axis=-1, keepdims=True), a * acc + p @ vb
    return _loop(q, k, v, block_size, body)


def blocked_l_alpha_from_block_max(q, k, v, block_size=3):
    def body(m, l, acc, scores, m_new, alpha, vb):
        p = np.exp(scores - m_new)
        l = np.exp(m - scores.max(axis=-1, keepdims=True)) * l + p.sum(axis=-1, keepdims=True)
        return m_new, l, alpha * acc + p @ vb
    return _loop(q, k, v, block_size, body)


def blocked_acc_alpha_from_block_max(q, k, v, block_size=3):
    def body(m, l, acc, scores, m_new, alpha, vb):
        p = np.exp(scores - m_new)
        acc = np.exp(m - np.max(scores, axis=-1, keepdims=True)) * acc + p @ vb
        return m_new, alpha * l + p.sum(axis=-1, keepdims=True), acc
    return _loop(q, k, v, block_size, body)


def blocked_alpha_times_everything(q, k, v, block_size=3):
    def body(m, l, acc, scores, m_new, alpha, vb):
        p = np.exp(scores - m_new)
        return m_new, alpha * (l + p.sum(axis=-1, keepdims=True)), alpha * (acc + p @ vb)
    return _loop(q, k, v, block_size, body)


def blocked_alpha_times_all_of_l(q, k, v, block_size=3):
    def body(m, l, acc, scores, m_new, alpha, vb):
        p = np.exp(scores - m_new)
        return m_new, alpha * (l + p.sum(axis=-1, keepdims=True)), alpha * acc + p @ vb
    return _loop(q, k, v, block_size, body)


def blocked_alpha_times_all_of_acc(q, k, v, block_size=3):  # the planted line, "fixed" by wrapping it
    def body(m, l, acc, scores, m_new, alpha, vb):
        p = np.exp(scores - m_new)
        return m_new, alpha * l + p.sum(axis=-1, keepdims=True), alpha * (acc + p @ vb)
    return _loop(q, k, v, block_size, body)


def blocked_alpha_on_the_new_part(q, k, v, block_size=3):
    def body(m, l, acc, scores, m_new, alpha, vb):
        p = np.exp(scores - m_new)
        return m_new, l + alpha * p.sum(axis=-1, keepdims=True), acc + alpha * (p @ vb)
    return _loop(q, k, v, block_size, body)


def blocked_alpha_on_the_new_part_of_l(q, k, v, block_size=3):
    def body(m, l, acc, scores, m_new, alpha, vb):
        p = np.exp(scores - m_new)
        return m_new, l + alpha * p.sum(axis=-1, keepdims=True), alpha * acc + p @ vb
    return _loop(q, k, v, block_size, body)


def blocked_alpha_on_the_new_part_of_acc(q, k, v, block_size=3):  # the planted line, alpha put on p
    def body(m, l, acc, scores, m_new, alpha, vb):
        p = np.exp(scores - m_new)
        return m_new, alpha * l + p.sum(axis=-1, keepdims=True), acc + alpha * p @ vb
    return _loop(q, k, v, block_size, body)


def blocked_p_from_block_max(q, k, v, block_size=3):
    def body(m, l, acc, scores, m_new, alpha, vb):
        p = np.exp(scores - scores.max(axis=-1, keepdims=True))
        return m_new, alpha * l + p.sum(axis=-1, keepdims=True), alpha * acc + p @ vb
    return _loop(q, k, v, block_size, body)


def blocked_p_unshifted(q, k, v, block_size=3):
    def body(m, l, acc, scores, m_new, alpha, vb):
        p = np.exp(scores)
        return m_new, alpha * l + p.sum(axis=-1, keepdims=True), alpha * acc + p @ vb
    return _loop(q, k, v, block_size, body)


def blocked_plain_sums(q, k, v, block_size=3):  # rewritten: "no need for a maximum"
    num = np.zeros(q.shape[:-1] + (v.shape[-1],))
    den = np.zeros(q.shape[:-1] + (1,))
    for start in range(0, k.shape[-2], block_size):
        e = np.exp(q @ np.swapaxes(k[..., start:start + block_size, :], -1, -2) / np.sqrt(q.shape[-1]))
        num, den = num + e @ v[..., start:start + block_size, :], den + e.sum(-1, keepdims=True)
    return num / den


def blocked_block_max_as_running_max(q, k, v, block_size=3):
    def body(m, l, acc, scores, m_new, alpha, vb):
        m_new = scores.max(axis=-1, keepdims=True)
        a, p = np.exp(m - m_new), np.exp(scores - m_new)
        return m_new, a * l + p.sum(axis=-1, keepdims=True), a * acc + p @ vb
    return _loop(q, k, v, block_size, body)


def blocked_max_starts_at_zero(q, k, v, block_size=3):
    def body(m, l, acc, scores, m_new, alpha, vb):
        p = np.exp(scores - m_new)
        return m_new, alpha * l + p.sum(axis=-1, keepdims=True), alpha * acc + p @ vb
    return _loop(q, k, v, block_size, body, m0=0.0)


def blocked_divides_in_the_loop(q, k, v, block_size=3):
    def body(m, l, acc, scores, m_new, alpha, vb):
        p = np.exp(scores - m_new)
        l = alpha * l + p.sum(axis=-1, keepdims=True)
        return m_new, l, (alpha * acc + p @ vb) / l
    return _loop(q, k, v, block_size, body, divide=False)


def blocked_divides_twice(q, k, v, block_size=3):
    def body(m, l, acc, scores, m_new, alpha, vb):
        p = np.exp(scores - m_new)
        l = alpha * l + p.sum(axis=-1, keepdims=True)
        return m_new, l, (alpha * acc + p @ vb) / l
    return _loop(q, k, v, block_size, body)


def blocked_stops_one_block_early(q, k, v, block_size=3):
    def body(m, l, acc, scores, m_new, alpha, vb):
        p = np.exp(scores - m_new)
        return m_new, alpha * l + p.sum(axis=-1, keepdims=True), alpha * acc + p @ vb
    return _loop(q, k, v, block_size, body, stop=k.shape[-2] - block_size)


def _scaled_loop(q, k, v, block_size, scale):
    """The given loop, fixed, with the learner's own scale for the scores."""
    m = np.full(q.shape[:-1] + (1,), -np.inf)
    l = np.zeros(q.shape[:-1] + (1,))
    acc = np.zeros(q.shape[:-1] + (v.shape[-1],))
    for start in range(0, k.shape[-2], block_size):
        scores = (q @ k[..., start:start + block_size, :].swapaxes(-1, -2)) * scale
        m_new = np.maximum(m, scores.max(axis=-1, keepdims=True))
        alpha, p = np.exp(m - m_new), np.exp(scores - m_new)
        l = alpha * l + p.sum(axis=-1, keepdims=True)
        acc = alpha * acc + p @ v[..., start:start + block_size, :]
        m = m_new
    return acc / l


def blocked_unscaled(q, k, v, block_size=3):
    return _scaled_loop(q, k, v, block_size, 1.0)


def blocked_by_d_k(q, k, v, block_size=3):
    return _scaled_loop(q, k, v, block_size, 1 / q.shape[-1])


def blocked_times_sqrt_d_k(q, k, v, block_size=3):
    return _scaled_loop(q, k, v, block_size, q.shape[-1] ** 0.5)


def blocked_by_d_v(q, k, v, block_size=3):
    return _scaled_loop(q, k, v, block_size, 1 / np.sqrt(v.shape[-1]))


def blocked_by_Lk(q, k, v, block_size=3):
    return _scaled_loop(q, k, v, block_size, k.shape[-2] ** -0.5)


def blocked_by_Lq(q, k, v, block_size=3):
    return _scaled_loop(q, k, v, block_size, 1 / np.sqrt(q.shape[-2]))


def blocked_by_first_dim(q, k, v, block_size=3):
    return _scaled_loop(q, k, v, block_size, 1 / np.sqrt(q.shape[0]))


# Right, written unusually.
def blocked_normalised_running_output(q, k, v, block_size=3):
    """Keeps o = acc / l normalised at every step: o' = (α l o + P V) / l'."""
    m = np.full(q.shape[:-1] + (1,), -np.inf)
    l = np.zeros_like(m)
    o = np.zeros(q.shape[:-1] + (v.shape[-1],))
    for start in range(0, k.shape[-2], block_size):
        s = q @ k[..., start:start + block_size, :].swapaxes(-1, -2) / np.sqrt(q.shape[-1])
        m_new = np.maximum(m, s.max(-1, keepdims=True))
        alpha, p = np.exp(m - m_new), np.exp(s - m_new)
        l_new = alpha * l + p.sum(-1, keepdims=True)
        o = (alpha * l * o + p @ v[..., start:start + block_size, :]) / l_new
        m, l = m_new, l_new
    return o


def blocked_array_split_scaled_q(q, k, v, block_size=3):
    qs = q / np.sqrt(q.shape[-1])
    n = -(-k.shape[-2] // block_size)
    bounds = [i * block_size for i in range(1, n)]
    m = l = acc = None
    for kb, vb in zip(np.split(k, bounds, axis=-2), np.split(v, bounds, axis=-2)):
        s = np.einsum("...qd,...kd->...qk", qs, kb)
        if m is None:  # the first block starts the state: no -inf needed
            m = s.max(-1, keepdims=True)
            p = np.exp(s - m)
            l, acc = p.sum(-1, keepdims=True), p @ vb
            continue
        m_new = np.maximum(m, s.max(-1, keepdims=True))
        alpha, p = np.exp(m - m_new), np.exp(s - m_new)
        l, acc, m = alpha * l + p.sum(-1, keepdims=True), alpha * acc + p @ vb, m_new
    return acc / l


# --- 04.merge_states ---------------------------------------------------------------------------

def _safe(m):
    return np.where(np.isneginf(m), 0.0, m)


def merge_l_not_rescaled(m1, l1, o1, m2, l2, o2):
    m = np.maximum(m1, m2)
    a1, a2 = np.exp(m1 - _safe(m)), np.exp(m2 - _safe(m))
    return m, l1 + l2, a1 * o1 + a2 * o2


def merge_l_factors_inverted(m1, l1, o1, m2, l2, o2):
    m = np.maximum(m1, m2)
    s = _safe(m)
    return m, np.exp(s - m1) * l1 + np.exp(s - m2) * l2, np.exp(m1 - s) * o1 + np.exp(m2 - s) * o2


def merge_o_factors_inverted(m1, l1, o1, m2, l2, o2):
    m = np.maximum(m1, m2)
    s = _safe(m)
    return m, np.exp(m1 - s) * l1 + np.exp(m2 - s) * l2, np.exp(s - m1) * o1 + np.exp(s - m2) * o2


def merge_smaller_max(m1, l1, o1, m2, l2, o2):
    m = np.minimum(m1, m2)
    s = _safe(m)
    a1, a2 = np.exp(m1 - s), np.exp(m2 - s)
    return m, a1 * l1 + a2 * l2, a1 * o1 + a2 * o2


def merge_onto_the_first_half(m1, l1, o1, m2, l2, o2):  # half 2 folded into half 1, as in the update
    s = _safe(m1)
    a1, a2 = np.exp(m1 - s), np.exp(m2 - s)
    return np.maximum(m1, m2), a1 * l1 + a2 * l2, a1 * o1 + a2 * o2


def merge_global_max(m1, l1, o1, m2, l2, o2):
    m = np.max([m1, m2])
    a1, a2 = np.exp(m1 - m), np.exp(m2 - m)
    return m, a1 * l1 + a2 * l2, a1 * o1 + a2 * o2


def merge_only_first_half_rescaled(m1, l1, o1, m2, l2, o2):
    m = np.maximum(m1, m2)
    a1 = np.exp(m1 - _safe(m))
    return m, a1 * l1 + l2, a1 * o1 + o2


def merge_only_second_half_rescaled(m1, l1, o1, m2, l2, o2):
    m = np.maximum(m1, m2)
    a2 = np.exp(m2 - _safe(m))
    return m, l1 + a2 * l2, o1 + a2 * o2


def merge_returns_normalised_o(m1, l1, o1, m2, l2, o2):
    m = np.maximum(m1, m2)
    a1, a2 = np.exp(m1 - _safe(m)), np.exp(m2 - _safe(m))
    l = a1 * l1 + a2 * l2
    return m, l, (a1 * o1 + a2 * o2) / l


def merge_larger_half_by_argmax(m1, l1, o1, m2, l2, o2):  # an unusual "kept only the larger half"
    ms = np.stack([m1, m2])
    pick = np.argmax(ms, axis=0)  # ties go to half 1
    return ms.max(0), np.where(pick == 0, l1, l2), np.where(pick == 0, o1, o2)


def merge_o_not_rescaled_unguarded(m1, l1, o1, m2, l2, o2):
    m = np.maximum(m1, m2)
    return m, np.exp(m1 - m) * l1 + np.exp(m2 - m) * l2, o1 + o2


def merge_only_first_half_unguarded(m1, l1, o1, m2, l2, o2):
    m = np.maximum(m1, m2)
    return m, np.exp(m1 - m) * l1 + l2, np.exp(m1 - m) * o1 + o2


# Right, written unusually.
def merge_by_the_gap(m1, l1, o1, m2, l2, o2):
    with np.errstate(invalid="ignore"):
        gap = np.nan_to_num(m1 - m2, nan=0.0)  # -inf - (-inf): both empty
    w = np.exp(-np.abs(gap))  # the smaller half's factor
    first = m1 >= m2
    return (np.maximum(m1, m2), np.where(first, l1 + w * l2, w * l1 + l2),
            np.where(first, o1 + w * o2, w * o1 + o2))


def merge_in_torch(m1, l1, o1, m2, l2, o2):
    m1, l1, o1, m2, l2, o2 = (torch.as_tensor(a) for a in (m1, l1, o1, m2, l2, o2))
    m = torch.maximum(m1, m2)
    shift = torch.nan_to_num(m, neginf=0.0)
    a1, a2 = (m1 - shift).exp(), (m2 - shift).exp()
    return m, a1 * l1 + a2 * l2, a1 * o1 + a2 * o2


# --- 04.block_backward -------------------------------------------------------------------------

def _backward(q, k, v, out, lse, d_out, scale=None, ds=None):
    c = 1 / np.sqrt(q.shape[-1]) if scale is None else scale
    p = np.exp(np.einsum("...qd,...kd->...qk", q, k) * c - lse[..., None])
    dp = np.einsum("...qd,...kd->...qk", d_out, v)
    D = (d_out * out).sum(-1)[..., None]
    dS = p * (dp - D) if ds is None else ds(p, dp, D)
    return c * dS @ k, c * np.swapaxes(dS, -1, -2) @ q, np.swapaxes(p, -1, -2) @ d_out


def bwd_without_p(q, k, v, out, lse, d_out):
    return _backward(q, k, v, out, lse, d_out, ds=lambda p, dp, D: dp - D)


def bwd_p_on_dp_only(q, k, v, out, lse, d_out):
    return _backward(q, k, v, out, lse, d_out, ds=lambda p, dp, D: p * dp - D)


def bwd_dk_forgot_the_scale(q, k, v, out, lse, d_out):
    dq, dk, dv = _backward(q, k, v, out, lse, d_out)
    return dq, dk * np.sqrt(q.shape[-1]), dv


def bwd_dq_forgot_the_scale(q, k, v, out, lse, d_out):
    scale = 1 / np.sqrt(q.shape[-1])
    p = np.exp(q @ np.swapaxes(k, -1, -2) * scale - lse[..., None])
    ds = p * (d_out @ np.swapaxes(v, -1, -2) - np.sum(d_out * out, -1, keepdims=True))
    return ds @ k, np.swapaxes(ds, -1, -2) @ q * scale, np.swapaxes(p, -1, -2) @ d_out


def bwd_no_scale(q, k, v, out, lse, d_out):
    return _backward(q, k, v, out, lse, d_out, scale=1.0)


def bwd_by_d_k(q, k, v, out, lse, d_out):
    return _backward(q, k, v, out, lse, d_out, scale=1 / q.shape[-1])


def bwd_times_sqrt_d_k(q, k, v, out, lse, d_out):
    return _backward(q, k, v, out, lse, d_out, scale=np.sqrt(k.shape[-1]))


def bwd_by_d_v(q, k, v, out, lse, d_out):
    return _backward(q, k, v, out, lse, d_out, scale=1 / np.sqrt(v.shape[-1]))


def bwd_by_block_length(q, k, v, out, lse, d_out):
    return _backward(q, k, v, out, lse, d_out, scale=1 / np.sqrt(k.shape[-2]))


def bwd_by_first_dim(q, k, v, out, lse, d_out):
    return _backward(q, k, v, out, lse, d_out, scale=len(q) ** -0.5)


def bwd_by_Lq(q, k, v, out, lse, d_out):
    return _backward(q, k, v, out, lse, d_out, scale=1 / np.sqrt(q.shape[-2]))


# Right, written unusually: P from the softmax's denominator, exp(s) / exp(lse); in torch.
def bwd_divides_by_exp_lse(q, k, v, out, lse, d_out):
    s = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])
    p = np.exp(s - lse[..., None])
    ds = p * (d_out @ np.swapaxes(v, -1, -2) - np.einsum("...qd,...qd->...q", d_out, out)[..., None])
    return ds @ (k / np.sqrt(q.shape[-1])), np.swapaxes(ds, -1, -2) @ (q / np.sqrt(q.shape[-1])), \
        np.swapaxes(p, -1, -2) @ d_out


def bwd_in_torch(q, k, v, out, lse, d_out):
    q, k, v, out, lse, d_out = (torch.from_numpy(a) for a in (q, k, v, out, lse, d_out))
    scale = q.shape[-1] ** -0.5
    p = torch.exp(q @ k.mT * scale - lse.unsqueeze(-1))
    ds = p * (d_out @ v.mT - (d_out * out).sum(-1, keepdim=True))
    return ds @ k * scale, ds.mT @ q * scale, p.mT @ d_out


# --- 05.nearest_code ---------------------------------------------------------------------------

def nearest_as_floats(z, codebook):
    d = torch.cdist(z.reshape(-1, z.shape[-1]), codebook) ** 2
    return d.argmin(dim=1).reshape(z.shape[:-1]).float()


def nearest_argmin_over_rows(z, codebook):
    flat = z.reshape(-1, z.shape[-1])
    d = (flat ** 2).sum(1, keepdim=True) - 2 * flat @ codebook.T + (codebook ** 2).sum(1)
    return torch.argmin(d, dim=0)


def nearest_argmin_dim0(z, codebook):
    d = ((z.unsqueeze(-2) - codebook) ** 2).sum(-1)  # (..., K)
    return d.argmin(dim=0)


def nearest_argmin_without_dim(z, codebook):
    return torch.argmin(((z[..., None, :] - codebook) ** 2).sum(-1))


def nearest_min_pair(z, codebook):
    return ((z.unsqueeze(-2) - codebook) ** 2).sum(-1).min(dim=-1)


def nearest_l1(z, codebook):
    return torch.cdist(z.reshape(-1, z.shape[-1]), codebook, p=1).argmin(-1).reshape(z.shape[:-1])


# Right, written unusually.
def nearest_cdist(z, codebook):
    return torch.cdist(z, codebook.expand(*z.shape[:-2], *codebook.shape)).argmin(-1)


def nearest_without_z_norm(z, codebook):  # ‖z‖² is the same for every code: it cannot change the argmin
    return ((codebook ** 2).sum(-1) - 2 * z @ codebook.T).argmin(-1)


def nearest_ties_to_the_last(z, codebook):  # a loop that keeps the last of equally near codes
    d = ((z[..., None, :] - codebook) ** 2).sum(-1)
    best = torch.zeros(z.shape[:-1], dtype=torch.long)
    for k in range(codebook.shape[0]):
        best = torch.where(d[..., k] <= d.gather(-1, best[..., None])[..., 0], torch.tensor(k), best)
    return best


def nearest_in_numpy(z, codebook):
    zn, cn = z.numpy(), codebook.numpy()
    d = ((zn[..., None, :] - cn) ** 2).sum(-1)
    return torch.from_numpy(d.argmin(-1))


def nearest_returns_numpy(z, codebook):
    d = ((z.numpy()[..., None, :] - codebook.numpy()) ** 2).sum(-1)
    return d.argmin(-1)


# --- 05.straight_through -----------------------------------------------------------------------
# Right, written unusually.

def straight_detach_each_term(z, z_q):
    return z_q.detach() + z - z.detach()


def straight_difference_without_grad(z, z_q):
    with torch.no_grad():
        step = z_q - z
    return z + step


def straight_data(z, z_q):
    return z + (z_q - z).data


def straight_swapped(z, z_q):
    return z_q + (z - z_q).detach()


# --- 05.perplexity -----------------------------------------------------------------------------

def perplexity_log_of_counts(counts):
    used = counts[counts > 0]
    p = used / used.sum()
    return np.exp(-np.sum(p * np.log(used)))


def perplexity_ln_then_base_2(counts):
    p = counts[counts > 0] / counts.sum()
    return 2 ** (-np.sum(p * np.log(p)))


def perplexity_log10(counts):
    p = counts / counts.sum()
    p = p[p > 0]
    return np.exp(-np.sum(p * np.log10(p)))


def perplexity_unweighted(counts):
    p = counts[counts > 0] / counts.sum()
    return np.exp(-np.sum(np.log(p)))


def perplexity_mean(counts):
    p = counts[counts > 0] / counts.sum()
    return np.exp(-np.mean(p * np.log(p)))


def perplexity_dead_as_one(counts):
    c = np.where(counts == 0, 1, counts)
    p = c / c.sum()
    return np.exp(-(p * np.log(p)).sum())


def perplexity_plus_one(counts):
    p = (counts + 1) / (counts + 1).sum()
    return float(np.exp(-(p * np.log(p)).sum()))


# Right, written unusually.
def perplexity_base_2(counts):
    p = counts[counts > 0] / counts.sum()
    return 2 ** -(p * np.log2(p)).sum()


def perplexity_product(counts):
    p = counts[counts > 0] / counts.sum()
    return float(np.prod(p ** -p))


def perplexity_epsilon(counts):
    p = counts / counts.sum()
    return float(np.exp(-(p * np.log(p + 1e-12)).sum()))


def perplexity_torch(counts):
    p = torch.as_tensor(counts, dtype=torch.float64)
    p = p / p.sum()
    return torch.exp(-torch.special.xlogy(p, p).sum())


LEARNER_MISTAKES_0405 = {
    "04.online_update": {
        "the rescale factor inverted for l only: e^(m_new - m)": update_l_alpha_upside_down,
        "the rescale factor inverted for acc only: e^(m_new - m)": update_acc_alpha_upside_down,
        "α measured from the block's maximum, e^(m - max(scores)), not from m_new": update_alpha_from_block_max,
        "α for l measured from the block's maximum, e^(m - max(scores)), not from m_new":
            update_l_alpha_from_block_max,
        "α for acc measured from the block's maximum, e^(m - max(scores)), not from m_new":
            update_acc_alpha_from_block_max,
        "α also multiplies the block's part: α · (l + …) and α · (acc + …)": update_alpha_times_everything,
        "α also multiplies the block's part of l: α · (l + P.sum(-1))": update_alpha_times_all_of_l,
        "α also multiplies the block's part of acc: α · (acc + P @ v)": update_alpha_times_all_of_acc,
        "α multiplies the block's part instead of the old sums: l + α · P.sum(-1), acc + α · (P @ v)":
            update_alpha_on_the_new_part,
        "α multiplies the block's part of l instead of the old l: l + α · P.sum(-1)": update_alpha_on_the_new_part_of_l,
        "α multiplies the block's part of acc instead of the old acc: acc + α · (P @ v)":
            update_alpha_on_the_new_part_of_acc,
        "the block's row sums lost their axis: P.sum(-1) without keepdims=True": update_sum_without_keepdims,
        "the block's maximum over the whole array (no axis), not each row's": update_global_block_max,
        "the block's exponentials measured from the block's maximum, not from m_new": update_p_from_block_max,
        "the block's exponentials measured from the old maximum m, not from m_new": update_p_from_old_max,
        "no maximum at all: plain sums of e^score, never rescaled": update_plain_sums,
        "an empty maximum taken as 0 instead of -inf": update_empty_max_as_zero,
        "returned acc / l: the state's acc is unnormalised": update_returns_normalised_acc,
    },
    "04.blocked_attention": {
        "α measured from the block's maximum, e^(m - max(scores)), not from m_new": blocked_alpha_from_block_max,
        "α for l measured from the block's maximum, e^(m - max(scores)), not from m_new":
            blocked_l_alpha_from_block_max,
        "α for acc measured from the block's maximum, e^(m - max(scores)), not from m_new":
            blocked_acc_alpha_from_block_max,
        "α also multiplies the block's part: α · (l + …) and α · (acc + …)": blocked_alpha_times_everything,
        "α also multiplies the block's part of l: α · (l + P.sum(-1))": blocked_alpha_times_all_of_l,
        "α also multiplies the block's part of acc: α · (acc + P @ v)": blocked_alpha_times_all_of_acc,
        "α multiplies the block's part instead of the old sums: l + α · P.sum(-1), acc + α · (P @ v)":
            blocked_alpha_on_the_new_part,
        "α multiplies the block's part of l instead of the old l: l + α · P.sum(-1)":
            blocked_alpha_on_the_new_part_of_l,
        "α multiplies the block's part of acc instead of the old acc: acc + α · (P @ v)":
            blocked_alpha_on_the_new_part_of_acc,
        "the block's exponentials measured from the block's maximum, not from m_new": blocked_p_from_block_max,
        "the block's exponentials not measured from the new maximum (np.exp(scores))": blocked_p_unshifted,
        "no maximum at all: plain sums of e^score, never rescaled": blocked_plain_sums,
        "used the block's maximum instead of the running maximum": blocked_block_max_as_running_max,
        "an empty maximum taken as 0 instead of -inf": blocked_max_starts_at_zero,
        "acc divided by l inside the loop": blocked_divides_in_the_loop,
        "divided by l twice: inside the loop and at the end": blocked_divides_twice,
        "the loop stops one block early: range(0, Lk - block_size, block_size)": blocked_stops_one_block_early,
        "no 1/√d_k scaling": blocked_unscaled,
        "divided by d_k instead of √d_k": blocked_by_d_k,
        "multiplied by √d_k instead of dividing by it": blocked_times_sqrt_d_k,
        "scaled by √d_v (the values' width) instead of √d_k": blocked_by_d_v,
        "scaled by √Lk (the number of keys) instead of √d_k": blocked_by_Lk,
        "scaled by √Lq (the number of queries) instead of √d_k": blocked_by_Lq,
        "scaled by √(q.shape[0]) instead of √d_k": blocked_by_first_dim,
    },
    "04.merge_states": {
        "l not rescaled to the new maximum (o is)": merge_l_not_rescaled,
        "the rescale factor inverted for l only: e^(m - m_i)": merge_l_factors_inverted,
        "the rescale factor inverted for o only: e^(m - m_i)": merge_o_factors_inverted,
        "m = the smaller of the two maxima": merge_smaller_max,
        "both halves brought to m1 instead of the larger maximum": merge_onto_the_first_half,
        "m = np.max([m1, m2]): the largest maximum of all the rows, not each row's larger one": merge_global_max,
        "only the first half rescaled: e^(m2 - m) left out": merge_only_first_half_rescaled,
        "only the second half rescaled: e^(m1 - m) left out": merge_only_second_half_rescaled,
        "returned o / l: the state's o is unnormalised": merge_returns_normalised_o,
    },
    "04.block_backward": {
        "dS without its factor P: dP - D": bwd_without_p,
        "D not multiplied by P: dS = P ∘ dP - D": bwd_p_on_dp_only,
        "dk not scaled by 1/√d_k (dq is)": bwd_dk_forgot_the_scale,
        "dq not scaled by 1/√d_k (dk is)": bwd_dq_forgot_the_scale,
        "no 1/√d_k scaling": bwd_no_scale,
        "divided by d_k instead of √d_k": bwd_by_d_k,
        "multiplied by √d_k instead of dividing by it": bwd_times_sqrt_d_k,
        "scaled by √d_v (the values' width) instead of √d_k": bwd_by_d_v,
        "scaled by √Lk (the number of keys) instead of √d_k": bwd_by_block_length,
        "scaled by √Lq (the number of queries) instead of √d_k": bwd_by_Lq,
        "scaled by √(q.shape[0]) instead of √d_k": bwd_by_first_dim,
    },
    "05.nearest_code": {
        "the indices are floating-point numbers": nearest_as_floats,
        "returned a NumPy array instead of a tensor": nearest_returns_numpy,
        "argmin over the vectors (dim 0) instead of over the codes": nearest_argmin_over_rows,
        "argmin over the first axis (dim 0) instead of over the codes": nearest_argmin_dim0,
        "summed absolute differences (L1), not squared ones": nearest_l1,
        "argmin without dim: one index into the whole flattened array": nearest_argmin_without_dim,
        "returned .min(-1), the distances and the indices, instead of the indices": nearest_min_pair,
    },
    "05.straight_through": {
        "z and z_q swapped: z_q + (z - z_q).detach() has z's value and gives z_q the gradient": straight_swapped,
    },
    "05.perplexity": {
        "mixed bases: natural log inside, 2 ** outside": perplexity_ln_then_base_2,
        "log base 10 inside, e outside": perplexity_log10,
        "the entropy without its weights: -Σ log p instead of -Σ p log p": perplexity_unweighted,
        "averaged p log p over the codes instead of summing it": perplexity_mean,
        "the dead codes counted as used once (to avoid log 0)": perplexity_dead_as_one,
        "1 added to every count (to avoid log 0)": perplexity_plus_one,
        "the log of the counts, not of the shares: -Σ p log counts": perplexity_log_of_counts,
    },
}

# Unusual ways of making a catalogued mistake, which must get its name: (task, name, function).
VARIANTS_0405 = [
    ("04.online_update", "the maximum is not carried forward: the old m is returned, or m = m_new is missing",
     update_old_max_kept_in_a_variable),
    ("04.blocked_attention",
     "NaN from the first block: e^(… - m) with m = -inf (alpha inverted, or p measured from the old m)",
     blocked_acc_alpha_inverted_inline),
    ("04.blocked_attention",
     "NaN from the first block: e^(… - m) with m = -inf (alpha inverted, or p measured from the old m)",
     blocked_p_from_old_max),
    ("04.merge_states", "kept only the half with the larger maximum", merge_larger_half_by_argmax),
    ("04.online_update", "acc not rescaled to the new maximum (l is)", update_acc_not_rescaled_unguarded),
    ("04.online_update", "α multiplies the block's part instead of the old sums: l + α · P.sum(-1), acc + α · (P @ v)",
     update_alpha_on_the_new_part_unguarded),
    ("04.merge_states", "o not rescaled to the new maximum (l is)", merge_o_not_rescaled_unguarded),
    ("04.merge_states", "only the first half rescaled: e^(m2 - m) left out", merge_only_first_half_unguarded),
]

RIGHT_ANSWERS_0405 = [
    ("04.online_update", update_masks_instead_of_shift),
    ("04.online_update", update_nan_to_num),
    ("04.online_update", update_in_torch),
    ("04.blocked_attention", blocked_normalised_running_output),
    ("04.blocked_attention", blocked_array_split_scaled_q),
    ("04.merge_states", merge_by_the_gap),
    ("04.merge_states", merge_in_torch),
    ("04.block_backward", bwd_divides_by_exp_lse),
    ("04.block_backward", bwd_in_torch),
    ("05.nearest_code", nearest_cdist),
    ("05.nearest_code", nearest_without_z_norm),
    ("05.nearest_code", nearest_ties_to_the_last),
    ("05.nearest_code", nearest_in_numpy),
    ("05.straight_through", straight_detach_each_term),
    ("05.straight_through", straight_difference_without_grad),
    ("05.straight_through", straight_data),
    ("05.perplexity", perplexity_base_2),
    ("05.perplexity", perplexity_product),
    ("05.perplexity", perplexity_epsilon),
    ("05.perplexity", perplexity_torch),
]
