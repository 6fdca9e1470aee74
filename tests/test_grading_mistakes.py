"""Every catalogued mistake, written the way a learner would write it, is diagnosed by name.

The buggy functions here are independent of the catalogue's own (crossmodal_edu/grading/tasks/):
they are the specification of what a learner may write and what they must be told.
"""
import numpy as np
import pytest

from crossmodal_edu import numpy_attention as reference
from crossmodal_edu.grading import all_tasks, get_task, judge
from crossmodal_edu.grading.result import NOT_ATTEMPTED, PASSED
from crossmodal_edu.grading.spec import IN_PLACE, FunctionTask, PredictionTask

SEEDS = (0, 1, 2)


def my_softmax(z, axis=-1):
    """A learner's correct softmax from task 01.softmax: NaN on an all -inf row, like theirs."""
    e = np.exp(z - np.max(z, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


def T(k):
    return np.swapaxes(k, -1, -2)


# --- 01.softmax -------------------------------------------------------------------------------

def softmax_no_max(z, axis=-1):
    return np.exp(z) / np.sum(np.exp(z), axis=axis, keepdims=True)


def softmax_global_max(z, axis=-1):
    z = z - np.max(z)
    return np.exp(z) / np.exp(z).sum(axis=axis, keepdims=True)


def softmax_max_no_keepdims(z, axis=-1):
    m = z.max(axis=axis)
    e = np.exp(z - m)
    return e / e.sum(axis=axis, keepdims=True)


def softmax_sum_no_keepdims(z, axis=-1):
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis)


def softmax_whole_array(z, axis=-1):
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum()


def softmax_last_axis_only(z, axis=-1):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def softmax_in_place(z, axis=-1):
    z -= z.max(axis=axis, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=axis, keepdims=True)
    return z


# --- 01.attention ------------------------------------------------------------------------------

def attention_unscaled(q, k, v):
    w = my_softmax(q @ T(k))
    return w @ v, w


def attention_by_d_k(q, k, v):
    w = my_softmax(q @ T(k) / q.shape[-1])
    return w @ v, w


def attention_by_d_v(q, k, v):
    w = my_softmax(q @ T(k) / np.sqrt(v.shape[-1]))
    return w @ v, w


def attention_by_Lk(q, k, v):
    w = my_softmax(q @ T(k) / np.sqrt(k.shape[-2]))
    return w @ v, w


def attention_softmax_over_queries(q, k, v):
    w = my_softmax(q @ T(k) / np.sqrt(q.shape[-1]), axis=-2)
    return w @ v, w


def attention_k_not_transposed(q, k, v):
    w = my_softmax(q @ k / np.sqrt(q.shape[-1]))
    return w @ v, w


def attention_k_dot_T(q, k, v):
    w = my_softmax(np.matmul(q, k.T) / np.sqrt(q.shape[-1]))
    return w @ v, w


def attention_weights_at_k(q, k, v):
    w = my_softmax(q @ T(k) / np.sqrt(q.shape[-1]))
    return w @ k, w


def attention_returns_weights_first(q, k, v):
    w = my_softmax(q @ T(k) / np.sqrt(q.shape[-1]))
    return w, w @ v


def attention_naive_softmax(q, k, v):
    w = softmax_no_max(q @ T(k) / np.sqrt(q.shape[-1]))
    return w @ v, w


def attention_scales_q_in_place(q, k, v):
    q *= 1 / np.sqrt(q.shape[-1])
    w = my_softmax(q @ T(k))
    return w @ v, w


# --- 01.masked_attention -----------------------------------------------------------------------

def _scores(q, k):
    return q @ T(k) / np.sqrt(q.shape[-1])


def masked_after_softmax(q, k, v, mask):  # the code the exercise starts with
    weights = my_softmax(_scores(q, k), axis=-1) * mask
    return weights @ v, weights


def masked_fill_zero(q, k, v, mask):
    w = my_softmax(np.where(mask, _scores(q, k), 0))
    return w @ v, w


def masked_inverted(q, k, v, mask):
    w = my_softmax(np.where(mask, -np.inf, _scores(q, k)))
    return w @ v, w


def masked_ignored(q, k, v, mask):
    w = my_softmax(_scores(q, k))
    return w @ v, w


def masked_nan_rows(q, k, v, mask):
    w = my_softmax(np.where(mask, _scores(q, k), -np.inf))
    return w @ v, w


def masked_renormalised(q, k, v, mask):
    w = my_softmax(_scores(q, k)) * mask
    w = w / w.sum(axis=-1, keepdims=True)
    return w @ v, w


def masked_large_negative(q, k, v, mask):
    w = my_softmax(np.where(mask, _scores(q, k), -1e9))
    return w @ v, w


# --- 02.project --------------------------------------------------------------------------------

def project_self_attention(x, context, W_Q, W_K, W_V):
    return x @ W_Q, x @ W_K, x @ W_V


def project_swapped(x, context, W_Q, W_K, W_V):
    return context @ W_Q, x @ W_K, x @ W_V


def project_q_from_context(x, context, W_Q, W_K, W_V):
    return context @ W_Q, context @ W_K, context @ W_V


def project_k_v_swapped(x, context, W_Q, W_K, W_V):
    return x @ W_Q, context @ W_V, context @ W_K


# --- 02.cross_attention ------------------------------------------------------------------------

def _cross(q, k, v, W_O, scale, axis=-1):
    w = my_softmax(q @ T(k) / scale, axis=axis)
    return w @ v @ W_O, w


def cross_unscaled(x, c, W_Q, W_K, W_V, W_O):
    return _cross(x @ W_Q, c @ W_K, c @ W_V, W_O, 1.0)


def cross_by_query_dim(x, c, W_Q, W_K, W_V, W_O):
    return _cross(x @ W_Q, c @ W_K, c @ W_V, W_O, np.sqrt(x.shape[-1]))


def cross_by_context_dim(x, c, W_Q, W_K, W_V, W_O):
    return _cross(x @ W_Q, c @ W_K, c @ W_V, W_O, np.sqrt(c.shape[-1]))


def cross_softmax_over_queries(x, c, W_Q, W_K, W_V, W_O):
    return _cross(x @ W_Q, c @ W_K, c @ W_V, W_O, np.sqrt(W_Q.shape[1]), axis=-2)


def cross_without_W_O(x, c, W_Q, W_K, W_V, W_O):
    q, k, v = x @ W_Q, c @ W_K, c @ W_V
    w = my_softmax(q @ T(k) / np.sqrt(q.shape[-1]))
    return w @ v, w


def cross_context_asks(x, c, W_Q, W_K, W_V, W_O):
    return _cross(c @ W_Q, x @ W_K, x @ W_V, W_O, np.sqrt(W_Q.shape[1]))


def cross_self_attention(x, c, W_Q, W_K, W_V, W_O):
    return _cross(x @ W_Q, x @ W_K, x @ W_V, W_O, np.sqrt(W_Q.shape[1]))


# --- 02.padded_cross_attention -----------------------------------------------------------------

def _padded(x, c, W_Q, W_K, W_V, W_O, fill):
    q, k, v = x @ W_Q, c @ W_K, c @ W_V
    w = reference.softmax(fill(q @ T(k) / np.sqrt(q.shape[-1])))
    return w @ v @ W_O, w


def padded_inverted(x, c, W_Q, W_K, W_V, W_O, context_mask):  # the code the exercise starts with
    return _padded(x, c, W_Q, W_K, W_V, W_O, lambda s: np.where(~context_mask[:, None, :], s, -np.inf))


def padded_fill_zero(x, c, W_Q, W_K, W_V, W_O, context_mask):
    return _padded(x, c, W_Q, W_K, W_V, W_O, lambda s: np.where(context_mask[:, None, :], s, 0.0))


def padded_after_softmax(x, c, W_Q, W_K, W_V, W_O, context_mask):
    out, w = _padded(x, c, W_Q, W_K, W_V, W_O, lambda s: s)
    w = w * context_mask[:, None, :]
    return w @ (c @ W_V) @ W_O, w


def padded_ignored(x, c, W_Q, W_K, W_V, W_O, context_mask):
    return _padded(x, c, W_Q, W_K, W_V, W_O, lambda s: s)


def padded_not_broadcast(x, c, W_Q, W_K, W_V, W_O, context_mask):
    return _padded(x, c, W_Q, W_K, W_V, W_O, lambda s: np.where(context_mask, s, -np.inf))


def padded_wrong_axis(x, c, W_Q, W_K, W_V, W_O, context_mask):
    return _padded(x, c, W_Q, W_K, W_V, W_O, lambda s: np.where(context_mask[:, :, None], s, -np.inf))


# --- 02.merge_heads ----------------------------------------------------------------------------

def merge_reshape_only(t):
    *lead, h, L, d = t.shape
    return t.reshape(*lead, L, h * d)


def merge_interleaved(t):
    *lead, h, L, d = t.shape
    return np.moveaxis(t, -3, -1).reshape(*lead, L, h * d)


def merge_swaps_last_two(t):
    *lead, h, L, d = t.shape
    return t.swapaxes(-1, -2).reshape(*lead, L, h * d)


def merge_along_tokens(t):
    return np.concatenate([t[..., i, :, :] for i in range(t.shape[-3])], axis=-2)


def merge_four_dims_only(t):
    B, h, L, d = t.shape
    return t.transpose(0, 2, 1, 3).reshape(B, L, h * d)


# --- 02.block ----------------------------------------------------------------------------------

def block_no_residual(x, context, attention, context_mask=None):
    return attention(reference.layer_norm(x), context, context_mask)


def block_post_norm(x, context, attention, context_mask=None):
    update, w = attention(x, context, context_mask)
    return reference.layer_norm(x + update), w


def block_adds_to_normed(x, context, attention, context_mask=None):
    h = reference.layer_norm(x)
    update, w = attention(h, context, context_mask)
    return h + update, w


def block_no_norm(x, context, attention, context_mask=None):
    update, w = attention(x, context, context_mask)
    return x + update, w


def block_normalises_context(x, context, attention, context_mask=None):
    update, w = attention(x, reference.layer_norm(context), context_mask)
    return x + update, w


def block_drops_mask(x, context, attention, context_mask=None):
    update, w = attention(reference.layer_norm(x), context)
    return x + update, w


LEARNER_MISTAKES = {
    "01.softmax": {
        "no max subtraction": softmax_no_max,
        "subtracted the maximum of the whole array, not of each row": softmax_global_max,
        "the maximum lost its axis (no keepdims=True)": softmax_max_no_keepdims,
        "the sum lost its axis (no keepdims=True)": softmax_sum_no_keepdims,
        "normalised by the sum of the whole array": softmax_whole_array,
        "ignores the `axis` argument": softmax_last_axis_only,
        IN_PLACE: softmax_in_place,
    },
    "01.attention": {
        "no 1/√d_k scaling": attention_unscaled,
        "divided by d_k instead of √d_k": attention_by_d_k,
        "scaled by √d_v (the values' width) instead of √d_k": attention_by_d_v,
        "scaled by √Lk (the number of keys) instead of √d_k": attention_by_Lk,
        "softmax over the wrong axis (the queries, not the keys)": attention_softmax_over_queries,
        "K not transposed (q @ k)": attention_k_not_transposed,
        "k.T transposes every axis, not just the last two": attention_k_dot_T,
        "weights multiplied with k instead of v": attention_weights_at_k,
        "returns (weights, out) instead of (out, weights)": attention_returns_weights_first,
        "softmax without max subtraction": attention_naive_softmax,
        IN_PLACE: attention_scales_q_in_place,
    },
    "01.masked_attention": {
        "mask applied after the softmax": masked_after_softmax,
        "masked scores filled with 0 instead of −inf": masked_fill_zero,
        "inverted mask (True treated as 'ignore')": masked_inverted,
        "mask not applied": masked_ignored,
        "a query that may see no key gets NaN": masked_nan_rows,
        "a query that may see no key gets uniform weights": masked_large_negative,
    },
    "02.project": {
        "keys and values projected from x (self-attention), not from the context": project_self_attention,
        "x and context swapped: the context asks and x answers": project_swapped,
        "queries projected from the context": project_q_from_context,
        "W_K and W_V swapped": project_k_v_swapped,
    },
    "02.cross_attention": {
        "no 1/√d_k scaling": cross_unscaled,
        "scaled by √query_dim (the width of x) instead of √d_k": cross_by_query_dim,
        "scaled by √context_dim instead of √d_k": cross_by_context_dim,
        "softmax over the wrong axis (the queries, not the keys)": cross_softmax_over_queries,
        "forgot W_O: the output is left in the values' width d_v": cross_without_W_O,
        "x and context swapped: the context asks and x answers": cross_context_asks,
        "keys and values projected from x (self-attention), not from the context": cross_self_attention,
    },
    "02.padded_cross_attention": {
        "inverted mask (True treated as 'ignore', nn.MultiheadAttention's convention)": padded_inverted,
        "padding filled with 0 instead of −inf": padded_fill_zero,
        "mask applied after the softmax": padded_after_softmax,
        "mask not applied": padded_ignored,
        "mask not broadcast over the queries": padded_not_broadcast,
        "mask broadcast along the wrong axis": padded_wrong_axis,
    },
    "02.merge_heads": {
        "heads merged in the wrong order: reshaped without moving the head axis back": merge_reshape_only,
        "heads interleaved: each feature's heads side by side, not each head's features": merge_interleaved,
        "swapped the last two axes instead of the heads and the tokens": merge_swaps_last_two,
        "heads stacked along the tokens axis": merge_along_tokens,
        "works only with exactly one batch dim": merge_four_dims_only,
    },
    "02.block": {
        "forgot the residual": block_no_residual,
        "post-norm: the layer norm after the sum": block_post_norm,
        "residual added to the normalised stream": block_adds_to_normed,
        "no layer norm before the attention": block_no_norm,
        "normalised the context instead of x": block_normalises_context,
        "context_mask not passed on": block_drops_mask,
    },
}

# Other ways to make a catalogued mistake, which must get the same name.
VARIANTS = [("01.masked_attention", "a query that may see no key gets NaN", masked_renormalised)]

FUNCTION_TASKS = [t for t in all_tasks() if isinstance(t, FunctionTask)]
PLANTED = [(task_id, name, fn) for task_id, mistakes in LEARNER_MISTAKES.items() for name, fn in mistakes.items()]


def test_every_catalogued_mistake_has_a_learner_version_here():
    for task in FUNCTION_TASKS:
        assert set(LEARNER_MISTAKES[task.id]) == {m.name for m in task.mistakes}, task.id


@pytest.mark.parametrize("task_id, name, fn", PLANTED + VARIANTS,
                         ids=[f"{t}: {n}" for t, n, _ in PLANTED + VARIANTS])
def test_a_planted_mistake_is_diagnosed_by_name(task_id, name, fn):
    task = get_task(task_id)
    for seed in SEEDS:
        result = judge(task, fn, seed)
        assert result.mistake == name, result.text()
        assert result.points == 0
        if name == task.planted:
            assert result.status == NOT_ATTEMPTED and "not fixed yet" in result.summary
        else:
            assert f"mistake found: {name}" in result.summary
            assert "Hint: " in result.text() and "seed" in result.text()


@pytest.mark.parametrize("task", FUNCTION_TASKS, ids=lambda t: t.id)
def test_the_catalogues_own_version_of_each_mistake_is_named_as_itself(task):
    for mistake in task.mistakes:
        for seed in SEEDS:
            assert judge(task, mistake.impl, seed).mistake == mistake.name, (task.id, mistake.name, seed)


@pytest.mark.parametrize("task", FUNCTION_TASKS, ids=lambda t: t.id)
def test_a_constant_output_fails(task):
    case = task.cases(np.random.default_rng(0))[0]
    outputs = task.reference(*case.fresh()[0], **case.fresh()[1])
    constant = tuple(np.full(np.shape(o), 0.5) for o in (outputs if len(task.outputs) > 1 else (outputs,)))

    def answer(*args, **kwargs):
        return constant if len(constant) > 1 else constant[0]

    for seed in SEEDS:
        assert judge(task, answer, seed).status != PASSED


@pytest.mark.parametrize("task", FUNCTION_TASKS, ids=lambda t: t.id)
def test_an_output_hard_coded_from_a_previous_check_fails(task):
    earlier = task.cases(np.random.default_rng(1234))
    remembered = [task.reference(*case.fresh()[0], **case.fresh()[1]) for case in earlier]

    def answer(*args, **kwargs):  # replays, in turn, what the reference gave on seed 1234
        answer.calls += 1
        return remembered[(answer.calls - 1) % len(remembered)]

    for seed in SEEDS:
        answer.calls = 0
        assert judge(task, answer, seed).status != PASSED


@pytest.mark.parametrize("task", [t for t in all_tasks() if isinstance(t, PredictionTask)], ids=lambda t: t.id)
def test_a_wrong_prediction_names_its_misconception(task):
    for mistake in task.mistakes:
        result = judge(task, mistake.value)
        assert result.mistake == mistake.name and result.points == 0, result.text()
