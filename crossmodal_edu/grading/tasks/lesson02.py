r"""Exercises 02 · Cross-modal attention: projections -> cross-attention -> (predict) the shape of
the weights -> a padding mask that works -> merging heads -> the residual merge.

Solutions: solutions/02_cross_modal_attention.ipynb. Reference: crossmodal_edu/numpy_attention.py.
"""

from __future__ import annotations

import numpy as np

from crossmodal_edu import numpy_attention as reference
from crossmodal_edu.grading.spec import Case, FunctionTask, Mistake, PredictionTask, Property
from crossmodal_edu.grading.tasks.attention_slips import attention_mistakes, numpy_attention, slip_name
from crossmodal_edu.grading.tasks.lesson01 import distinct
from crossmodal_edu.grading.tasks.properties import a_shape, finite, first, first_value, has_shapes, sums_to_one

# ---------------------------------------------------------------------------------------------
# 02.project
# ---------------------------------------------------------------------------------------------


def _weights(rng, query_dim, context_dim, d_k, d_v, with_out=False):
    W = {"W_Q": rng.normal(size=(query_dim, d_k)), "W_K": rng.normal(size=(context_dim, d_k)),
         "W_V": rng.normal(size=(context_dim, d_v))}
    if with_out:
        W["W_O"] = rng.normal(size=(d_v, query_dim))
    return W


def _projection_cases(rng: np.random.Generator, with_out: bool = False) -> list[Case]:
    B = int(rng.integers(2, 4))
    # Six different sizes, so that no size can stand in for another (√Lk for √d_k, say) ...
    Lq, Lk, query_dim, context_dim, d_k, d_v = distinct(rng, 6, 2, 9)
    width, d_k2, d_v2 = distinct(rng, 3, 2, 9)  # ... and one case where x and context are as wide
    normal = rng.normal
    return [
        Case({"x": normal(size=(B, Lq, query_dim)), "context": normal(size=(B, Lk, context_dim)),
              **_weights(rng, query_dim, context_dim, d_k, d_v, with_out)}),
        # query_dim = context_dim only here: the one case on which mixing up x and context runs.
        Case({"x": normal(size=(Lq, width)), "context": normal(size=(Lk, width)),
              **_weights(rng, width, width, d_k2, d_v2, with_out)}, note="query_dim = context_dim"),
        Case({"x": normal(size=(1, query_dim)), "context": normal(size=(Lk, context_dim)),
              **_weights(rng, query_dim, context_dim, d_k, d_v, with_out)}, note="a single query, no batch dims"),
    ]


def _project(x, context, W_Q, W_K, W_V):
    return x @ W_Q, context @ W_K, context @ W_V


def _proj_kv_from_x(x, context, W_Q, W_K, W_V):
    return x @ W_Q, x @ W_K, x @ W_V


def _proj_swapped(x, context, W_Q, W_K, W_V):
    return context @ W_Q, x @ W_K, x @ W_V


def _proj_q_from_context(x, context, W_Q, W_K, W_V):
    return context @ W_Q, context @ W_K, context @ W_V


def _proj_k_v_swapped(x, context, W_Q, W_K, W_V):
    return x @ W_Q, context @ W_V, context @ W_K


def _proj_q_scaled(x, context, W_Q, W_K, W_V):
    return x @ W_Q / np.sqrt(W_Q.shape[1]), context @ W_K, context @ W_V


def _projection_shapes(case: Case):
    i = case.inputs
    return ((*i["x"].shape[:-1], i["W_Q"].shape[1]), (*i["context"].shape[:-1], i["W_K"].shape[1]),
            (*i["context"].shape[:-1], i["W_V"].shape[1]))


PROJECT = FunctionTask(
    id="02.project",
    title="Projections into a shared space",
    points=2,
    name="project",
    signature="project(x, context, W_Q, W_K, W_V) -> (q, k, v)",
    cases=_projection_cases,
    reference=_project,
    outputs=("q", "k", "v"),
    properties=(has_shapes(_projection_shapes, "q (..., Lq, d_k), k (..., Lk, d_k), v (..., Lk, d_v)"),),
    mistakes=(
        Mistake("keys and values projected from x (self-attention), not from the context",
                "in cross-attention only the queries come from x; k = context @ W_K, v = context @ W_V.",
                _proj_kv_from_x),
        Mistake("x and context swapped: the context asks and x answers",
                "the queries come from x (modality A, which asks), keys and values from the context.",
                _proj_swapped),
        Mistake("queries projected from the context",
                "q = x @ W_Q: the queries come from x, the modality that asks.", _proj_q_from_context),
        Mistake("keys and values swapped (W_K and W_V, or the order returned)",
                "keys are compared with queries, so they need W_K (width d_k); values carry content, W_V (width d_v); "
                "and the function returns them in that order, (q, k, v).",
                _proj_k_v_swapped),
        Mistake("q already divided by √d_k",
                "project only projects: q = x @ W_Q. The 1/√d_k belongs to the scores, in cross_attention (task 2).",
                _proj_q_scaled),
    ),
)

# ---------------------------------------------------------------------------------------------
# 02.cross_attention
# ---------------------------------------------------------------------------------------------


def _cross_attention_reference(x, context, W_Q, W_K, W_V, W_O, context_mask=None):
    """The package's ``CrossAttention`` with one head, no biases, and these weights."""
    layer = reference.CrossAttention(W_Q.shape[0], W_K.shape[0], num_heads=1, head_dim=W_Q.shape[1],
                                     v_head_dim=W_V.shape[1], bias=False)
    layer.W_q, layer.W_k, layer.W_v, layer.W_o = W_Q, W_K, W_V, W_O
    out, weights = layer(x, context, context_mask)  # weights (..., 1, Lq, Lk)
    return out, weights[..., 0, :, :]


def _cross(x, context, W_Q, W_K, W_V, W_O, scale=None, axis=-1, mask=None):
    q, k, v = x @ W_Q, context @ W_K, context @ W_V
    scale = 1 / np.sqrt(q.shape[-1]) if scale is None else scale
    scores = q @ np.swapaxes(k, -1, -2) * scale  # (..., Lq, Lk)
    if mask is not None:
        scores = np.where(mask, scores, -np.inf)
    weights = reference.softmax(scores, axis=axis)
    return weights @ v @ W_O, weights


def _cross_shapes(case: Case):
    x, context, W_Q = case.inputs["x"], case.inputs["context"], case.inputs["W_Q"]
    return x.shape, (*x.shape[:-1], context.shape[-2])


_WORDS_02 = {"d_k_is": "q.shape[-1] = W_Q.shape[1]", "d_v": "d_v"}


def _cross_slip(slip, masked=False):
    """``cross_attention`` (or, ``masked``, ``padded_cross_attention``) with the shared slip ``slip``
    planted (crossmodal_edu/grading/tasks/attention_slips.py)."""

    def cross(x, context, W_Q, W_K, W_V, W_O, context_mask=None):
        q, k, v = x @ W_Q, context @ W_K, context @ W_V
        mask = None if context_mask is None else context_mask[..., None, :]  # (..., 1, Lk)
        out, weights = numpy_attention(q, k, v, mask, slip=slip, query_dim=x.shape[-1],
                                       context_dim=context.shape[-1])
        return out @ W_O, weights

    if masked:
        return lambda x, context, W_Q, W_K, W_V, W_O, context_mask: cross(x, context, W_Q, W_K, W_V, W_O, context_mask)
    return lambda x, context, W_Q, W_K, W_V, W_O: cross(x, context, W_Q, W_K, W_V, W_O)


CROSS_PROPERTIES = (
    has_shapes(_cross_shapes, "out (..., Lq, query_dim): the queries' length and width; weights (..., Lq, Lk)"),
    finite(1, "weights"),
    sums_to_one(1, lambda case: -1, "each query's weights must sum to 1 over the keys (the last axis)",
                "the weights of query"),
)


def _ca_no_W_O(x, context, W_Q, W_K, W_V, W_O):
    out, weights = _cross(x, context, W_Q, W_K, W_V, np.eye(W_V.shape[1]))
    return out, weights


def _ca_plus_x(x, context, W_Q, W_K, W_V, W_O, context_mask=None):
    out, weights = _cross_slip(None, masked=context_mask is not None)(
        *((x, context, W_Q, W_K, W_V, W_O) + (() if context_mask is None else (context_mask,))))
    return x + out, weights


RESIDUAL_ADDED = Mistake(
    "added x to the output: the residual belongs to the block (task 6), not to the attention",
    "return what the attention computes, (weights @ v) @ W_O; the block adds it to the stream later.", _ca_plus_x)


def _ca_returns_scores(x, context, W_Q, W_K, W_V, W_O):
    q, k, v = x @ W_Q, context @ W_K, context @ W_V
    scores = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])
    return reference.softmax(scores) @ v @ W_O, scores


def _ca_roles_swapped(x, context, W_Q, W_K, W_V, W_O):
    return _cross(context, x, W_Q, W_K, W_V, W_O)


def _ca_kv_from_x(x, context, W_Q, W_K, W_V, W_O):
    return _cross(x, x, W_Q, W_K, W_V, W_O)


CROSS_ATTENTION = FunctionTask(
    id="02.cross_attention",
    title="Cross-attention, one head",
    points=3,
    name="cross_attention",
    signature="cross_attention(x, context, W_Q, W_K, W_V, W_O) -> (out, weights)",
    cases=lambda rng: _projection_cases(rng, with_out=True),
    reference=_cross_attention_reference,
    outputs=("out", "weights"),
    properties=CROSS_PROPERTIES,
    mistakes=(
        *attention_mistakes("02.cross_attention", _cross_slip, has={"scale", "softmax", "project"},
                            words=_WORDS_02),
        RESIDUAL_ADDED,
        Mistake("returned the scores as the weights, not their softmax",
                "the weights are softmax(scores): each query's row is positive and sums to 1.", _ca_returns_scores),
        Mistake("forgot W_O: the output is left in the values' width d_v",
                "map the result back to the queries' width: (weights @ v) @ W_O, shape (..., Lq, query_dim).",
                _ca_no_W_O),
        Mistake("x and context swapped: the context asks and x answers",
                "the queries come from x, keys and values from the context: q = x @ W_Q, k = context @ W_K.",
                _ca_roles_swapped),
        Mistake("keys and values projected from x (self-attention), not from the context",
                "k = context @ W_K and v = context @ W_V: x only asks.", _ca_kv_from_x),
    ),
)

# ---------------------------------------------------------------------------------------------
# 02.weights_shape (predict, then run)
# ---------------------------------------------------------------------------------------------


def _same_shape(a, b) -> bool:
    return tuple(int(n) for n in a) == tuple(b)


WEIGHTS_SHAPE = PredictionTask(
    id="02.weights_shape",
    title="Predict: the shape of the weights",
    points=1,
    name="predicted_shape",
    expects="a tuple of integers",
    read=a_shape,
    answer=(2, 4, 64, 9),
    accept=lambda value: _same_shape(value, (2, 4, 64, 9)),
    explanation="(B, num_heads, Lq, Lk) = (2, 4, 64, 9): one row per patch that asks, one column per "
                "word that answers, one matrix per head and image.",
    mistakes=(
        Mistake("Lq and Lk swapped",
                "rows belong to the queries, the patches that ask (64); columns to the words that answer (9).",
                value=(2, 4, 9, 64)),
        Mistake("no head axis", "each head has its own softmax, so its own (Lq, Lk) matrix.",
                value=(2, 64, 9)),
        Mistake("the head axis after the queries axis",
                "split_heads moves the heads before the sequence axis, so that @ treats them like a batch.",
                value=(2, 64, 4, 9)),
        Mistake("heads before the batch", "the batch stays the first axis; heads come right after it.",
                value=(4, 2, 64, 9)),
        Mistake("that is self-attention among the patches",
                "the keys are the caption's words here, so Lk = 9.", value=(2, 4, 64, 64)),
        Mistake("the last axis is head_dim: that is a head's output, not its weights",
                "each head's weights have one column per word that answers (Lk = 9); head_dim = 8 is the width "
                "of what a head returns.", value=(2, 4, 64, 8)),
        Mistake("that is the output's shape, not the weights'",
                "the layer returns (out, weights): out is (B, Lq, query_dim) = (2, 64, 50); the weights have "
                "one matrix per head, one row per patch and one column per word.", value=(2, 64, 50)),
        Mistake("that is self-attention among the words",
                "the queries are the image's patches here, so Lq = 64.", value=(2, 4, 9, 9)),
    ),
    same=_same_shape,
)

# ---------------------------------------------------------------------------------------------
# 02.padded_cross_attention (fix the bug)
# ---------------------------------------------------------------------------------------------


def _padded_case(rng, B, Lq, Lk, note=""):
    # Widths that differ from each other and, where there are enough sizes, from Lq and Lk.
    free = [n for n in distinct(rng, 6, 2, 9) if n not in (Lq, Lk)]
    query_dim, context_dim, d_k, d_v = free[:4] if len(free) >= 4 else distinct(rng, 4, 2, 9)
    lengths = rng.integers(1, Lk + 1, size=B)
    lengths[0], lengths[1] = Lk, int(rng.integers(1, Lk))  # one full caption, one padded
    return Case({"x": rng.normal(size=(B, Lq, query_dim)), "context": rng.normal(size=(B, Lk, context_dim)),
                 **_weights(rng, query_dim, context_dim, d_k, d_v, with_out=True),
                 "context_mask": reference.padding_mask(lengths, Lk)}, note=note)


def _padded_cases(rng: np.random.Generator) -> list[Case]:
    Lq, Lk = distinct(rng, 2, 3, 8)
    B = int(rng.choice([b for b in (2, 3, 4) if b not in (Lq, Lk)]))
    L, L2 = distinct(rng, 2, 3, 7)
    return [
        _padded_case(rng, B, Lq, Lk),
        _loud_padding(_padded_case(rng, B, Lq, Lk, note="padded words with huge scores"), rng),
        # Two probes, on which a mask broadcast along the wrong axis runs instead of raising.
        _padded_case(rng, 2, L, L, note="Lq = Lk"),
        _padded_case(rng, L2, L2, L2 + 1, note="B = Lq"),
    ]


def _loud_padding(case: Case, rng: np.random.Generator) -> Case:
    """``case`` with queries that all point about the same way and padded words whose keys point
    that way too, far: their scores top the real words' by more than 745 (where e^-x underflows)."""
    x, W_Q, W_K, context = (case.inputs[n].copy() for n in ("x", "W_Q", "W_K", "context"))
    x = x[:, :1] + 0.01 * rng.normal(size=x.shape)  # (B, Lq, query_dim): in each image, queries alike
    pad = ~case.inputs["context_mask"]  # (B, Lk)
    for b in range(x.shape[0]):
        q0 = x[b, 0] @ W_Q  # (d_k,)
        direction = W_K @ q0  # (context_dim,): a word along it has the key W_Kᵀ W_K q0, and q0·k > 0
        context[b, pad[b]] = 20000 * np.sqrt(W_K.shape[1]) / float(direction @ direction) * direction
    return Case({**case.inputs, "x": x, "context": context}, note=case.note)


def _padded_reference(x, context, W_Q, W_K, W_V, W_O, context_mask):
    return _cross_attention_reference(x, context, W_Q, W_K, W_V, W_O, context_mask)


def _pad_not_broadcast(x, context, W_Q, W_K, W_V, W_O, context_mask):
    return _cross(x, context, W_Q, W_K, W_V, W_O, mask=context_mask)


def _pad_wrong_axis(x, context, W_Q, W_K, W_V, W_O, context_mask):
    return _cross(x, context, W_Q, W_K, W_V, W_O, mask=context_mask[:, :, None])


def _padding_zero(fn, case, outputs):
    weights = outputs[1]
    pad = np.broadcast_to(~case.inputs["context_mask"][:, None, :], weights.shape)
    bad = pad & (np.abs(weights) > 1e-12)
    if bad.any():
        return f"a padded word gets weight {first_value(weights, bad):.3g} at index {first(bad)}"
    return None


PADDED_CROSS_ATTENTION = FunctionTask(
    id="02.padded_cross_attention",
    title="Fix the padding mask",
    points=3,
    name="padded_cross_attention",
    signature="padded_cross_attention(x, context, W_Q, W_K, W_V, W_O, context_mask) -> (out, weights)",
    cases=_padded_cases,
    reference=_padded_reference,
    outputs=("out", "weights"),
    properties=(
        CROSS_PROPERTIES[0],
        Property("padded words must get zero weight", _padding_zero),
        *CROSS_PROPERTIES[1:],
    ),
    mistakes=(
        *attention_mistakes("02.padded_cross_attention", lambda slip: _cross_slip(slip, masked=True),
                            has={"scale", "softmax", "project", "mask", "hidden_large"}, words=_WORDS_02),
        RESIDUAL_ADDED,
        Mistake("mask not broadcast over the queries",
                "context_mask is (B, Lk) and the scores (B, Lq, Lk): insert the queries axis, "
                "context_mask[:, None, :], or NumPy lines its batch axis up with the queries.",
                _pad_not_broadcast),
        Mistake("mask broadcast along the wrong axis",
                "context_mask[:, :, None] is (B, Lk, 1): it masks queries, not keys. Use context_mask[:, None, :].",
                _pad_wrong_axis),
    ),
    planted=slip_name("mask_inverted"),
)

# ---------------------------------------------------------------------------------------------
# 02.merge_heads
# ---------------------------------------------------------------------------------------------


def _merge_cases(rng: np.random.Generator) -> list[Case]:
    B = int(rng.integers(2, 4))
    H, L, hd = distinct(rng, 3, 2, 7)
    H2, L2, hd2 = distinct(rng, 3, 2, 7)
    return [Case({"t": rng.normal(size=(B, H, L, hd))}),
            Case({"t": rng.normal(size=(H2, L2, hd2))}, note="no batch dim")]


def _merge_no_swap(t):
    *lead, H, L, hd = t.shape
    return t.reshape(*lead, L, H * hd)


def _merge_interleaved(t):
    *lead, H, L, hd = t.shape
    return np.moveaxis(t, -3, -1).reshape(*lead, L, H * hd)


def _merge_wrong_swap(t):
    *lead, H, L, hd = t.shape
    return t.swapaxes(-1, -2).reshape(*lead, L, H * hd)


def _merge_along_tokens(t):
    *lead, H, L, hd = t.shape
    return t.reshape(*lead, H * L, hd)


def _merge_assumes_batch(t):
    B, H, L, hd = t.shape
    return t.transpose(0, 2, 1, 3).reshape(B, L, H * hd)


def _undoes_split(fn, case, outputs):
    t = case.inputs["t"]
    *lead, H, L, hd = t.shape
    original = np.random.default_rng(0).normal(size=(*lead, L, H * hd))
    back = np.asarray(fn(reference.split_heads(original, H)), dtype=float)
    if back.shape != original.shape or not np.allclose(back, original):
        return "merge_heads(split_heads(t, num_heads)) does not give t back"
    return None


MERGE_HEADS = FunctionTask(
    id="02.merge_heads",
    title="Merge the heads",
    points=2,
    name="merge_heads",
    signature="merge_heads(t) -> (..., L, num_heads * head_dim)",
    cases=_merge_cases,
    reference=reference.merge_heads,
    outputs=("merged",),
    properties=(
        has_shapes(lambda c: ((*c.inputs["t"].shape[:-3], c.inputs["t"].shape[-2],
                               c.inputs["t"].shape[-3] * c.inputs["t"].shape[-1]),),
                   "(..., L, num_heads * head_dim)"),
        Property("merge_heads must undo split_heads", _undoes_split),
    ),
    mistakes=(
        Mistake("heads merged in the wrong order: reshaped without moving the head axis back",
                "t is (..., num_heads, L, head_dim): swap to (..., L, num_heads, head_dim) with "
                "t.swapaxes(-2, -3) first, then reshape; a reshape alone mixes tokens across heads.",
                _merge_no_swap),
        Mistake("heads interleaved: each feature's heads side by side, not each head's features",
                "the merged width is head after head, [head 0 | head 1 | ...]: move the head axis "
                "next to the features, (..., L, num_heads, head_dim), not after them.",
                _merge_interleaved),
        Mistake("swapped the last two axes instead of the heads and the tokens",
                "swap axes -3 (heads) and -2 (tokens): t.swapaxes(-2, -3).", _merge_wrong_swap),
        Mistake("heads stacked along the tokens axis",
                "the heads go side by side in the feature axis: the result is (..., L, num_heads * head_dim).",
                _merge_along_tokens),
        Mistake("works only with exactly one batch dim",
                "count axes from the end (-3, -2, -1) so that any number of leading dims works.",
                _merge_assumes_batch),
    ),
)

# ---------------------------------------------------------------------------------------------
# 02.block (the residual merge)
# ---------------------------------------------------------------------------------------------


def _block_cases(rng: np.random.Generator) -> list[Case]:
    B = int(rng.integers(2, 4))
    Lq, Lk = distinct(rng, 2, 3, 8)
    query_dim, context_dim = distinct(rng, 2, 4, 10)
    layer = reference.CrossAttention(query_dim, context_dim, num_heads=2, head_dim=3,
                                     seed=int(rng.integers(1 << 30)))
    lengths = rng.integers(1, Lk + 1, size=B)
    lengths[0] = int(rng.integers(1, Lk))  # at least one caption is padded
    # Shifted, scaled streams, so that leaving out (or misplacing) the layer norm shows.
    x = lambda: 3.0 + 2.0 * rng.normal(size=(B, Lq, query_dim))
    context = lambda: -1.0 + 3.0 * rng.normal(size=(B, Lk, context_dim))
    return [
        Case({"x": x(), "context": context(), "attention": layer,
              "context_mask": reference.padding_mask(lengths, Lk)}, note="padded captions"),
        Case({"x": x(), "context": context(), "attention": layer, "context_mask": None},
             note="no mask"),
    ]


def _block_reference(x, context, attention, context_mask=None):
    block = reference.CrossAttentionBlock(attention.query_dim, attention.context_dim)
    block.attention = attention
    return block(x, context, context_mask)


def _block_no_residual(x, context, attention, context_mask=None):
    return attention(reference.layer_norm(x), context, context_mask)


def _block_post_norm(x, context, attention, context_mask=None):
    update, weights = attention(x, context, context_mask)
    return reference.layer_norm(x + update), weights


def _block_residual_from_normed(x, context, attention, context_mask=None):
    h = reference.layer_norm(x)
    update, weights = attention(h, context, context_mask)
    return h + update, weights


def _block_no_norm(x, context, attention, context_mask=None):
    update, weights = attention(x, context, context_mask)
    return x + update, weights


def _block_normed_context(x, context, attention, context_mask=None):
    update, weights = attention(x, reference.layer_norm(context), context_mask)
    return x + update, weights


def _block_both_normed(x, context, attention, context_mask=None):
    update, weights = attention(reference.layer_norm(x), reference.layer_norm(context), context_mask)
    return x + update, weights


def _block_norm_over_tokens(x, context, attention, context_mask=None):
    h = (x - x.mean(axis=-2, keepdims=True)) / np.sqrt(x.var(axis=-2, keepdims=True) + 1e-5)
    update, weights = attention(h, context, context_mask)
    return x + update, weights


def _block_mask_dropped(x, context, attention, context_mask=None):
    update, weights = attention(reference.layer_norm(x), context)
    return x + update, weights


def _passes_through(fn, case, outputs):
    (x, context, attention, context_mask), _ = case.fresh()
    attention.W_o = np.zeros_like(attention.W_o)
    attention.b_o = None if attention.b_o is None else np.zeros_like(attention.b_o)
    y = np.asarray(fn(x, context, attention, context_mask)[0], dtype=float)
    if y.shape != x.shape or not np.allclose(y, x):
        return "with an attention layer that adds nothing (W_o = 0), y differs from x"
    return None


def _block_shapes(case: Case):
    x, context, attention = case.inputs["x"], case.inputs["context"], case.inputs["attention"]
    return x.shape, (x.shape[0], attention.num_heads, x.shape[1], context.shape[1])


BLOCK = FunctionTask(
    id="02.block",
    title="The residual merge",
    points=3,
    name="cross_attention_block",
    signature="cross_attention_block(x, context, attention, context_mask=None) -> (y, weights)",
    cases=_block_cases,
    reference=_block_reference,
    outputs=("y", "weights"),
    properties=(
        has_shapes(_block_shapes, "y like x (B, Lq, query_dim); weights (B, num_heads, Lq, Lk)"),
        Property("the stream must pass through unchanged when the attention adds nothing", _passes_through),
    ),
    mistakes=(
        Mistake("forgot the residual",
                "add the attention's output to the stream: y = x + update. Without it, x's own "
                "information is lost.", _block_no_residual),
        Mistake("post-norm: the layer norm after the sum",
                "this block normalises first: y = x + attention(layer_norm(x), ...), and leaves the "
                "sum unnormalised.", _block_post_norm),
        Mistake("residual added to the normalised stream",
                "add the update to x itself, not to layer_norm(x): the stream keeps its own scale.",
                _block_residual_from_normed),
        Mistake("no layer norm before the attention",
                "normalise the queries' stream first: attention(layer_norm(x), context, ...).",
                _block_no_norm),
        Mistake("normalised the context instead of x",
                "layer_norm goes on x, the stream being updated; the context is passed as it is.",
                _block_normed_context),
        Mistake("normalised the context as well as x",
                "only the stream that asks is normalised before the attention (pre-norm); the context comes "
                "from the text encoder as it is.", _block_both_normed),
        Mistake("layer norm over the tokens axis, not over each token's features",
                "a layer norm standardises each token's own vector: the mean and variance run over the last "
                "axis (the features), x.mean(axis=-1, keepdims=True).", _block_norm_over_tokens),
        Mistake("context_mask not passed on",
                "pass context_mask to the attention, or padded words take part.", _block_mask_dropped),
    ),
)

TASKS = (PROJECT, CROSS_ATTENTION, WEIGHTS_SHAPE, PADDED_CROSS_ATTENTION, MERGE_HEADS, BLOCK)
