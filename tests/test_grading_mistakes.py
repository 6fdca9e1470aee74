"""Every catalogued mistake, written the way a learner would write it, is diagnosed by name.

The buggy functions here are independent of the catalogue's own (crossmodal_edu/grading/tasks/):
they are the specification of what a learner may write and what they must be told.
"""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from crossmodal_edu import numpy_attention as reference
from crossmodal_edu.grading import all_tasks, get_task, judge
from crossmodal_edu.grading.result import NOT_ATTEMPTED, PASSED
from crossmodal_edu.grading.spec import IN_PLACE, FunctionTask, PredictionTask
from crossmodal_edu.torch_attention import MultiHeadCrossAttention
from learner_mistakes_02b import LEARNER_MISTAKES_02B, RIGHT_ANSWERS_02B  # lesson 02b's, in a file of their own
from learner_mistakes_06 import LEARNER_MISTAKES_06, RIGHT_ANSWERS_06, VARIANTS_06  # 06's later additions
from learner_mistakes_07 import LEARNER_MISTAKES_07, RIGHT_ANSWERS_07  # lesson 07's, likewise
from learner_mistakes_attention import (  # the shared attention slips
    LEARNER_MISTAKES_ATTENTION, RIGHT_ANSWERS_ATTENTION, VARIANTS_ATTENTION)
from learner_mistakes_04_05 import LEARNER_MISTAKES_0405, RIGHT_ANSWERS_0405, VARIANTS_0405  # 04 and 05: more

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


# --- 03.forward --------------------------------------------------------------------------------

def _heads(t, h):
    B, L, _ = t.shape
    return t.view(B, L, h, -1).transpose(1, 2)  # (B, h, L, d)


def _unheads(t):
    B, h, L, d = t.shape
    return t.transpose(1, 2).reshape(B, L, h * d)


def _hide_padding(scores, context_mask):
    if context_mask is None:
        return scores
    return scores.masked_fill(~context_mask[:, None, None, :], float("-inf"))


def forward_unscaled(x, context, to_q, to_k, to_v, to_out, num_heads, context_mask=None):
    q, k, v = _heads(to_q(x), num_heads), _heads(to_k(context), num_heads), _heads(to_v(context), num_heads)
    w = torch.softmax(_hide_padding(q @ k.mT, context_mask), dim=-1)
    return to_out(_unheads(w @ v)), w


def forward_by_inner_dim(x, context, to_q, to_k, to_v, to_out, num_heads, context_mask=None):
    q, k, v = _heads(to_q(x), num_heads), _heads(to_k(context), num_heads), _heads(to_v(context), num_heads)
    w = torch.softmax(_hide_padding(q @ k.mT / math.sqrt(to_q.out_features), context_mask), dim=-1)
    return to_out(_unheads(w @ v)), w


def forward_by_query_dim(x, context, to_q, to_k, to_v, to_out, num_heads, context_mask=None):
    q, k, v = _heads(to_q(x), num_heads), _heads(to_k(context), num_heads), _heads(to_v(context), num_heads)
    w = torch.softmax(_hide_padding(q @ k.mT / x.shape[-1] ** 0.5, context_mask), dim=-1)
    return to_out(_unheads(w @ v)), w


def forward_softmax_over_queries(x, context, to_q, to_k, to_v, to_out, num_heads, context_mask=None):
    q, k, v = _heads(to_q(x), num_heads), _heads(to_k(context), num_heads), _heads(to_v(context), num_heads)
    w = F.softmax(_hide_padding(q @ k.mT / math.sqrt(q.shape[-1]), context_mask), dim=2)
    return to_out(_unheads(w @ v)), w


def forward_mask_inverted(x, context, to_q, to_k, to_v, to_out, num_heads, context_mask=None):
    q, k, v = _heads(to_q(x), num_heads), _heads(to_k(context), num_heads), _heads(to_v(context), num_heads)
    scores = q @ k.mT / math.sqrt(q.shape[-1])
    if context_mask is not None:
        scores = scores.masked_fill(context_mask[:, None, None, :], float("-inf"))
    w = scores.softmax(-1)
    return to_out(_unheads(w @ v)), w


def forward_mask_ignored(x, context, to_q, to_k, to_v, to_out, num_heads, context_mask=None):
    q, k, v = _heads(to_q(x), num_heads), _heads(to_k(context), num_heads), _heads(to_v(context), num_heads)
    w = (q @ k.mT / math.sqrt(q.shape[-1])).softmax(-1)
    return to_out(_unheads(w @ v)), w


def forward_without_to_out(x, context, to_q, to_k, to_v, to_out, num_heads, context_mask=None):
    q, k, v = _heads(to_q(x), num_heads), _heads(to_k(context), num_heads), _heads(to_v(context), num_heads)
    w = _hide_padding(q @ k.mT / math.sqrt(q.shape[-1]), context_mask).softmax(-1)
    return _unheads(w @ v), w


def forward_self_attention(x, context, to_q, to_k, to_v, to_out, num_heads, context_mask=None):
    q, k, v = _heads(to_q(x), num_heads), _heads(to_k(x), num_heads), _heads(to_v(x), num_heads)
    w = _hide_padding(q @ k.mT / math.sqrt(q.shape[-1]), context_mask).softmax(-1)
    return to_out(_unheads(w @ v)), w


def forward_split_without_transpose(x, context, to_q, to_k, to_v, to_out, num_heads, context_mask=None):
    def cut(t):
        return t.view(t.shape[0], num_heads, t.shape[1], -1)

    q, k, v = cut(to_q(x)), cut(to_k(context)), cut(to_v(context))
    w = _hide_padding(q @ k.mT / math.sqrt(q.shape[-1]), context_mask).softmax(-1)
    return to_out(_unheads(w @ v)), w


def forward_merge_without_transpose(x, context, to_q, to_k, to_v, to_out, num_heads, context_mask=None):
    q, k, v = _heads(to_q(x), num_heads), _heads(to_k(context), num_heads), _heads(to_v(context), num_heads)
    w = _hide_padding(q @ k.mT / math.sqrt(q.shape[-1]), context_mask).softmax(-1)
    heads = w @ v
    return to_out(heads.reshape(x.shape[0], x.shape[1], -1)), w


# --- 03.mha_mask -------------------------------------------------------------------------------

def _mha_from(layer, dtype, biases=True, q_weight=None, k_from=None, v_from=None):
    mha = nn.MultiheadAttention(layer.query_dim, layer.num_heads, kdim=layer.context_dim,
                                vdim=layer.context_dim, batch_first=True, dtype=dtype)
    with torch.no_grad():
        mha.q_proj_weight.copy_(layer.to_q.weight if q_weight is None else q_weight)
        to_k, to_v = k_from or layer.to_k, v_from or layer.to_v
        mha.k_proj_weight.copy_(to_k.weight)
        mha.v_proj_weight.copy_(to_v.weight)
        mha.out_proj.weight.copy_(layer.to_out.weight)
        if biases:
            mha.in_proj_bias.copy_(torch.cat([layer.to_q.bias, to_k.bias, to_v.bias]))
            mha.out_proj.bias.copy_(layer.to_out.bias)
    return mha


def mha_mask_not_inverted(x, context, layer, context_mask):  # the code the exercise starts with
    mha = _mha_from(layer, x.dtype)
    return mha(x, context, context, key_padding_mask=context_mask, average_attn_weights=False)


def mha_mask_not_inverted_copy(x, context, layer, context_mask):
    mha = _mha_from(layer, x.dtype)
    return mha(x, context, context, key_padding_mask=context_mask.clone().bool(), average_attn_weights=False)


def mha_without_mask(x, context, layer, context_mask):
    mha = _mha_from(layer, x.dtype)
    return mha(x, context, context, average_attn_weights=False)


def mha_without_biases(x, context, layer, context_mask):
    mha = _mha_from(layer, x.dtype, biases=False)
    return mha(x, context, context, key_padding_mask=~context_mask, average_attn_weights=False)


def mha_q_transposed(x, context, layer, context_mask):
    mha = _mha_from(layer, x.dtype, q_weight=layer.to_q.weight.t())
    return mha(x, context, context, key_padding_mask=~context_mask, average_attn_weights=False)


def mha_k_v_swapped(x, context, layer, context_mask):
    mha = _mha_from(layer, x.dtype, k_from=layer.to_v, v_from=layer.to_k)
    return mha(x, context, context, key_padding_mask=context_mask.logical_not(), average_attn_weights=False)


def mha_averaged_weights(x, context, layer, context_mask):
    mha = _mha_from(layer, x.dtype)
    return mha(x, context, context, key_padding_mask=~context_mask)


# --- 03.gated_block ---------------------------------------------------------------------------

class GatedOpenAtStart(nn.Module):
    def __init__(self, query_dim, context_dim, num_heads):
        super().__init__()
        self.norm = nn.LayerNorm(query_dim)
        self.attention = MultiHeadCrossAttention(query_dim, context_dim, num_heads)
        self.gate = nn.Parameter(torch.randn(1))  # a random start, not a closed gate

    def forward(self, x, context, context_mask=None):
        return x + torch.tanh(self.gate) * self.attention(self.norm(x), context, context_mask)


class GatedBase(nn.Module):
    """A learner's block with a closed gate; the subclasses below each change one line of forward."""

    def __init__(self, query_dim, context_dim, num_heads):
        super().__init__()
        self.norm = nn.LayerNorm(query_dim)
        self.attention = MultiHeadCrossAttention(query_dim, context_dim, num_heads)
        self.gate = nn.Parameter(torch.zeros(()))


class GatedSigmoid(GatedBase):
    def forward(self, x, context, context_mask=None):
        return x + torch.sigmoid(self.gate) * self.attention(self.norm(x), context, context_mask)


class GatedRaw(GatedBase):
    def forward(self, x, context, context_mask=None):
        return x + self.gate * self.attention(self.norm(x), context, context_mask)


class GatedWithoutGate(GatedBase):
    def forward(self, x, context, context_mask=None):
        return x + self.attention(self.norm(x), context, context_mask)


class GatedWholeSum(GatedBase):
    def forward(self, x, context, context_mask=None):
        return torch.tanh(self.gate) * (x + self.attention(self.norm(x), context, context_mask))


class GatedNoResidual(GatedBase):
    def forward(self, x, context, context_mask=None):
        return self.gate.tanh() * self.attention(self.norm(x), context, context_mask)


class GatedResidualFromNormed(GatedBase):
    def forward(self, x, context, context_mask=None):
        h = self.norm(x)
        return h + torch.tanh(self.gate) * self.attention(h, context, context_mask)


class GatedPostNorm(GatedBase):
    def forward(self, x, context, context_mask=None):
        return self.norm(x + torch.tanh(self.gate) * self.attention(x, context, context_mask))


class GatedNoNorm(GatedBase):
    def forward(self, x, context, context_mask=None):
        return x + torch.tanh(self.gate) * self.attention(x, context, context_mask)


class GatedNormsContext(GatedBase):
    def forward(self, x, context, context_mask=None):
        return x + torch.tanh(self.gate) * self.attention(self.norm(x), self.norm(context), context_mask)


class GatedDropsMask(GatedBase):
    def forward(self, x, context, context_mask=None):
        return x + torch.tanh(self.gate) * self.attention(self.norm(x), context)


class GatedOnesAtStart(GatedBase):
    def __init__(self, query_dim, context_dim, num_heads):
        super().__init__(query_dim, context_dim, num_heads)
        self.gate = nn.Parameter(torch.ones(()))

    def forward(self, x, context, context_mask=None):
        return x + torch.tanh(self.gate) * self.attention(self.norm(x), context, context_mask)


# --- 04.online_update --------------------------------------------------------------------------

def _guarded(m_new):
    return np.where(m_new == -np.inf, 0.0, m_new)


def update_acc_not_rescaled(m, l, acc, scores, v):
    m_new = np.maximum(m, np.max(scores, axis=-1, keepdims=True))
    a = np.exp(m - _guarded(m_new))
    p = np.exp(scores - _guarded(m_new))
    return m_new, a * l + p.sum(-1, keepdims=True), acc + p @ v


def update_l_not_rescaled(m, l, acc, scores, v):
    m_new = np.maximum(m, np.max(scores, axis=-1, keepdims=True))
    a = np.exp(m - _guarded(m_new))
    p = np.exp(scores - _guarded(m_new))
    return m_new, l + p.sum(-1, keepdims=True), a * acc + p @ v


def update_not_rescaled(m, l, acc, scores, v):
    m_new = np.maximum(m, np.max(scores, axis=-1, keepdims=True))
    p = np.exp(scores - _guarded(m_new))
    return m_new, l + p.sum(-1, keepdims=True), acc + p @ v


def update_block_max(m, l, acc, scores, v):
    m_new = scores.max(-1, keepdims=True)
    a = np.exp(m - _guarded(m_new))
    p = np.exp(scores - _guarded(m_new))
    return m_new, a * l + p.sum(-1, keepdims=True), a * acc + p @ v


def update_nan_when_all_masked(m, l, acc, scores, v):
    m_new = np.maximum(m, scores.max(-1, keepdims=True))
    a = np.exp(m - m_new)
    p = np.exp(scores - m_new)
    return m_new, a * l + p.sum(-1, keepdims=True), a * acc + p @ v


def update_guards_alpha_only(m, l, acc, scores, v):
    m_new = np.maximum(m, scores.max(-1, keepdims=True))
    a = np.where(np.isneginf(m), 0.0, np.exp(m - m_new))
    p = np.exp(scores - m_new)
    return m_new, a * l + p.sum(-1, keepdims=True), a * acc + p @ v


def update_exp_unshifted(m, l, acc, scores, v):
    m_new = np.maximum(m, scores.max(-1, keepdims=True))
    a = np.exp(m - _guarded(m_new))
    p = np.exp(scores)
    return m_new, a * l + p.sum(-1, keepdims=True), a * acc + p @ v


def update_alpha_inverted(m, l, acc, scores, v):
    m_new = np.maximum(m, scores.max(-1, keepdims=True))
    a = np.exp(_guarded(m_new) - m)
    p = np.exp(scores - _guarded(m_new))
    return m_new, a * l + p.sum(-1, keepdims=True), a * acc + p @ v


def update_returns_old_max(m, l, acc, scores, v):
    m_new = np.maximum(m, scores.max(-1, keepdims=True))
    a = np.exp(m - _guarded(m_new))
    p = np.exp(scores - _guarded(m_new))
    return m, a * l + p.sum(-1, keepdims=True), a * acc + p @ v


def update_l_in_place(m, l, acc, scores, v):
    m_new = np.maximum(m, scores.max(-1, keepdims=True))
    a = np.exp(m - _guarded(m_new))
    p = np.exp(scores - _guarded(m_new))
    l *= a
    l += p.sum(-1, keepdims=True)
    return m_new, l, a * acc + p @ v


# --- 04.blocked_attention ----------------------------------------------------------------------

def _blocked(q, k, v, block_size, step):
    """A learner's loop; ``step(m, l, acc, m_new, p, v_block)`` returns the new (m, l, acc)."""
    m = np.full((*q.shape[:-1], 1), -np.inf)
    l, acc = np.zeros((*q.shape[:-1], 1)), np.zeros((*q.shape[:-1], v.shape[-1]))
    for start in range(0, k.shape[-2], block_size):
        s = q @ np.swapaxes(k[..., start:start + block_size, :], -1, -2) / np.sqrt(q.shape[-1])
        m_new = np.maximum(m, s.max(-1, keepdims=True))
        m, l, acc = step(m, l, acc, m_new, np.exp(s - m_new), v[..., start:start + block_size, :])
    return acc / l


def blocked_output_not_rescaled(q, k, v, block_size=3):  # the code the exercise starts with
    return _blocked(q, k, v, block_size,
                    lambda m, l, acc, m_new, p, vb: (m_new, np.exp(m - m_new) * l + p.sum(-1, keepdims=True),
                                                     acc + p @ vb))


def blocked_sum_not_rescaled(q, k, v, block_size=3):
    return _blocked(q, k, v, block_size,
                    lambda m, l, acc, m_new, p, vb: (m_new, l + p.sum(-1, keepdims=True),
                                                     np.exp(m - m_new) * acc + p @ vb))


def blocked_nothing_rescaled(q, k, v, block_size=3):
    return _blocked(q, k, v, block_size,
                    lambda m, l, acc, m_new, p, vb: (m_new, l + p.sum(-1, keepdims=True), acc + p @ vb))


def blocked_alpha_inverted(q, k, v, block_size=3):
    return _blocked(q, k, v, block_size,
                    lambda m, l, acc, m_new, p, vb: (m_new, np.exp(m_new - m) * l + p.sum(-1, keepdims=True),
                                                     np.exp(m_new - m) * acc + p @ vb))


def blocked_not_divided(q, k, v, block_size=3):
    m = np.full((*q.shape[:-1], 1), -np.inf)
    l, acc = np.zeros((*q.shape[:-1], 1)), np.zeros((*q.shape[:-1], v.shape[-1]))
    for start in range(0, k.shape[-2], block_size):
        s = q @ np.swapaxes(k[..., start:start + block_size, :], -1, -2) / np.sqrt(q.shape[-1])
        m_new = np.maximum(m, s.max(-1, keepdims=True))
        p, alpha = np.exp(s - m_new), np.exp(m - m_new)
        l, acc, m = alpha * l + p.sum(-1, keepdims=True), alpha * acc + p @ v[..., start:start + block_size, :], m_new
    return acc


def blocked_whole_blocks_only(q, k, v, block_size=3):
    m = np.full((*q.shape[:-1], 1), -np.inf)
    l, acc = np.zeros((*q.shape[:-1], 1)), np.zeros((*q.shape[:-1], v.shape[-1]))
    for b in range(k.shape[-2] // block_size):
        keys = slice(b * block_size, (b + 1) * block_size)
        s = q @ np.swapaxes(k[..., keys, :], -1, -2) / np.sqrt(q.shape[-1])
        m_new = np.maximum(m, s.max(-1, keepdims=True))
        p, alpha = np.exp(s - m_new), np.exp(m - m_new)
        l, acc, m = alpha * l + p.sum(-1, keepdims=True), alpha * acc + p @ v[..., keys, :], m_new
    return acc / l


def blocked_max_never_updated(q, k, v, block_size=3):
    return _blocked(q, k, v, block_size,
                    lambda m, l, acc, m_new, p, vb: (m, np.exp(m - m_new) * l + p.sum(-1, keepdims=True),
                                                     np.exp(m - m_new) * acc + p @ vb))


# --- 04.merge_states ---------------------------------------------------------------------------

def merge_added(m1, l1, o1, m2, l2, o2):
    return np.maximum(m1, m2), l1 + l2, o1 + o2


def merge_factors_inverted(m1, l1, o1, m2, l2, o2):
    m = np.maximum(m1, m2)
    s = np.where(np.isinf(m), 0.0, m)
    return m, np.exp(s - m1) * l1 + np.exp(s - m2) * l2, np.exp(s - m1) * o1 + np.exp(s - m2) * o2


def merge_keeps_larger_half(m1, l1, o1, m2, l2, o2):
    one = m1 > m2
    return np.maximum(m1, m2), np.where(one, l1, l2), np.where(one, o1, o2)


def merge_o_not_rescaled(m1, l1, o1, m2, l2, o2):
    m = np.maximum(m1, m2)
    s = np.where(np.isinf(m), 0.0, m)
    return m, np.exp(m1 - s) * l1 + np.exp(m2 - s) * l2, o1 + o2


def merge_nan_when_all_masked(m1, l1, o1, m2, l2, o2):
    m = np.maximum(m1, m2)
    return m, np.exp(m1 - m) * l1 + np.exp(m2 - m) * l2, np.exp(m1 - m) * o1 + np.exp(m2 - m) * o2


# --- 04.block_backward -------------------------------------------------------------------------

def _learner_block_bwd(q, k, v, out, lse, d_out, weights=None, delta=None, combine=None, grad_scale=True,
                       score_scale=True):
    """A learner's block backward; each keyword swaps in one wrongly written step."""
    d = q.shape[-1]
    s = q @ k.swapaxes(-1, -2)
    if score_scale:
        s = s / np.sqrt(d)
    p = weights(s) if weights else np.exp(s - lse[..., None])
    dp = d_out @ v.swapaxes(-1, -2)
    D = delta(p, dp) if delta else np.sum(d_out * out, axis=-1, keepdims=True)
    ds = combine(p, dp, D) if combine else p * (dp - D)
    c = 1 / np.sqrt(d) if grad_scale else 1
    return c * (ds @ k), c * (ds.swapaxes(-1, -2) @ q), p.swapaxes(-1, -2) @ d_out


def bwd_delta_from_block(q, k, v, out, lse, d_out):
    return _learner_block_bwd(q, k, v, out, lse, d_out, delta=lambda p, dp: np.sum(p * dp, axis=-1, keepdims=True))


def bwd_exp_without_lse(q, k, v, out, lse, d_out):
    return _learner_block_bwd(q, k, v, out, lse, d_out, weights=np.exp)


def bwd_softmax_of_block(q, k, v, out, lse, d_out):
    def softmax(s):
        e = np.exp(s - s.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)
    return _learner_block_bwd(q, k, v, out, lse, d_out, weights=softmax)


def bwd_plus_delta(q, k, v, out, lse, d_out):
    return _learner_block_bwd(q, k, v, out, lse, d_out, combine=lambda p, dp, D: p * (dp + D))


def bwd_no_delta(q, k, v, out, lse, d_out):
    return _learner_block_bwd(q, k, v, out, lse, d_out, combine=lambda p, dp, D: p * dp)


def bwd_grads_unscaled(q, k, v, out, lse, d_out):
    return _learner_block_bwd(q, k, v, out, lse, d_out, grad_scale=False)


def bwd_scores_unscaled(q, k, v, out, lse, d_out):
    return _learner_block_bwd(q, k, v, out, lse, d_out, score_scale=False)



# --- 05.nearest_code ---------------------------------------------------------------------------

def _sq_distances(z, codebook):
    return (z.unsqueeze(-2) - codebook).pow(2).sum(dim=-1)  # (..., K)


def nearest_farthest(z, codebook):
    return torch.argmax(_sq_distances(z, codebook), dim=-1)


def nearest_by_dot_product(z, codebook):
    return torch.argmax(z @ codebook.t(), dim=-1)


def nearest_expansion_without_code_norms(z, codebook):
    d = (z * z).sum(-1, keepdim=True) - 2 * torch.matmul(z, codebook.T)
    return d.argmin(dim=-1)


def nearest_expansion_without_two(z, codebook):
    d = z.pow(2).sum(-1, keepdim=True) - z @ codebook.T + codebook.pow(2).sum(-1)
    return d.argmin(-1)


def nearest_cross_term_added(z, codebook):
    d = z.pow(2).sum(-1, keepdim=True) + 2 * z @ codebook.T + codebook.pow(2).sum(-1)
    return d.argmin(-1)


def nearest_summed_over_codes(z, codebook):
    diff = z[..., None, :] - codebook[None]  # (..., K, D)
    return (diff ** 2).sum(dim=-2).argmin(dim=-1)


def nearest_returns_codes(z, codebook):
    return codebook[_sq_distances(z, codebook).argmin(-1)]


def nearest_left_flat(z, codebook):
    flat = z.reshape(-1, codebook.shape[1])  # (N, D)
    d = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ codebook.T + codebook.pow(2).sum(1)
    return d.argmin(1)


# --- 05.straight_through -----------------------------------------------------------------------

def straight_no_detach(z, z_q):  # the code the exercise starts with
    return z + (z_q - z)


def straight_returns_z_q(z, z_q):
    return z_q


def straight_z_terms_cancel(z, z_q):  # the given bug, rewritten: z still cancels out of the gradient
    return z_q + z - z


def straight_returns_z(z, z_q):
    return z.clone()


def straight_sign_flipped(z, z_q):
    return z - (z_q - z).detach()


def straight_grad_into_codebook(z, z_q):
    return z_q + z - z.detach()


def straight_all_detached(z, z_q):
    with torch.no_grad():
        return z + (z_q - z)


def straight_only_z_q_detached(z, z_q):  # value z_q; the two z terms cancel, and z_q gets none either
    return z + (z_q.detach() - z)


def straight_z_detached(z, z_q):
    return z.detach() + z_q - z


# --- 05.perplexity -----------------------------------------------------------------------------

def perplexity_log2(counts):
    p = counts[counts > 0] / counts.sum()
    return np.exp(-np.sum(p * np.log2(p)))


def perplexity_unnormalised(counts):
    n = counts[counts > 0]
    return np.exp(-np.sum(n * np.log(n)))


def perplexity_nan(counts):
    p = counts / np.sum(counts)
    return np.exp(-np.sum(p * np.log(p)))


def perplexity_entropy(counts):
    p = counts[counts > 0] / counts.sum()
    return -(p * np.log(p)).sum()


def perplexity_sign(counts):
    p = counts[counts > 0] / counts.sum()
    return np.exp(np.sum(p * np.log(p)))


def perplexity_codes_in_use(counts):
    return np.count_nonzero(counts)


def perplexity_by_K(counts):
    p = counts / len(counts)
    p = p[p > 0]
    return np.exp(-(p * np.log(p)).sum())


def perplexity_zeros_replaced_in_place(counts):
    counts[counts == 0] = 1
    p = counts / counts.sum()
    return np.exp(-(p * np.log(p)).sum())


# --- 06.decoder_block ---------------------------------------------------------------------------

def decoder_block_post_norm(x, context, context_mask, block):
    x = block.norm1(x + block.self_attention(x))
    x = block.norm2(x + block.cross_attention(x, context, context_mask))
    return block.norm3(x + block.mlp(x))


def decoder_block_cross_replaces_x(x, context, context_mask, block):
    x = x + block.self_attention(block.norm1(x))
    x = block.cross_attention(block.norm2(x), context, context_mask)
    return x + block.mlp(block.norm3(x))


def decoder_block_normed_residual(x, context, context_mask, block):
    x = x + block.self_attention(block.norm1(x))
    h = block.norm2(x)
    x = h + block.cross_attention(h, context, context_mask)
    return x + block.mlp(block.norm3(x))


def decoder_block_attends_to_itself(x, context, context_mask, block):
    x = x + block.self_attention(block.norm1(x))
    h = block.norm2(x)
    x = x + block.cross_attention(h, h)
    return x + block.mlp(block.norm3(x))


def decoder_block_caption_normed(x, context, context_mask, block):
    x = x + block.self_attention(block.norm1(x))
    x = x + block.cross_attention(block.norm2(x), block.norm2(context), context_mask)
    return x + block.mlp(block.norm3(x))


def decoder_block_without_mask(x, context, context_mask, block):
    x = x + block.self_attention(block.norm1(x))
    x = x + block.cross_attention(block.norm2(x), context)
    return x + block.mlp(block.norm3(x))


def decoder_block_cross_first(x, context, context_mask, block):
    x = x + block.cross_attention(block.norm2(x), context, context_mask)
    x = x + block.self_attention(block.norm1(x))
    return x + block.mlp(block.norm3(x))


def decoder_block_norms_swapped(x, context, context_mask, block):
    x = x + block.self_attention(block.norm2(x))
    x = x + block.cross_attention(block.norm1(x), context, context_mask)
    return x + block.mlp(block.norm3(x))


def decoder_block_parallel(x, context, context_mask, block):
    updates = [block.self_attention(block.norm1(x)), block.cross_attention(block.norm2(x), context, context_mask),
               block.mlp(block.norm3(x))]
    return x + sum(updates)


def decoder_block_in_place(x, context, context_mask, block):
    x.add_(block.self_attention(block.norm1(x)))
    x.add_(block.cross_attention(block.norm2(x), context, context_mask))
    return x.add_(block.mlp(block.norm3(x)))


# --- 06.teacher_forcing ------------------------------------------------------------------------

def forcing_no_shift(image_tokens, start_id):
    return image_tokens, image_tokens


def forcing_like_a_language_model(image_tokens, start_id):
    return image_tokens[:, :-1], image_tokens[:, 1:]


def forcing_start_prepended_to_all(image_tokens, start_id):
    start = torch.full((image_tokens.shape[0], 1), start_id, dtype=image_tokens.dtype)
    return torch.cat([start, image_tokens], dim=1), image_tokens


def forcing_rolled_backwards(image_tokens, start_id):
    inputs = torch.roll(image_tokens, shifts=-1, dims=1)
    inputs[:, -1] = start_id
    return inputs, image_tokens


def forcing_zero_start(image_tokens, start_id):
    return F.pad(image_tokens[:, :-1], (1, 0), value=0), image_tokens


def forcing_both_shifted(image_tokens, start_id):
    shifted = F.pad(image_tokens[:, :-1], (1, 0), value=start_id)
    return shifted, shifted


def forcing_last_target_dropped(image_tokens, start_id):
    return F.pad(image_tokens[:, :-1], (1, 0), value=start_id), image_tokens[:, :-1]


def forcing_in_place(image_tokens, start_id):
    targets = image_tokens.clone()
    image_tokens.copy_(torch.roll(image_tokens, shifts=1, dims=1))
    image_tokens[:, 0] = start_id
    return image_tokens, targets


# --- 06.drop_captions --------------------------------------------------------------------------

def _null_caption(text_tokens, context_mask, null_id, pad_id):
    tokens = torch.full_like(text_tokens, pad_id)
    tokens[:, 0] = null_id
    mask = torch.zeros_like(context_mask)
    mask[:, 0] = True
    return tokens, mask


def drop_by_masking(text_tokens, context_mask, drop, null_id, pad_id=0):  # the code the exercise starts with
    keep = context_mask & ~drop[:, None]
    return text_tokens, keep


def drop_null_masked(text_tokens, context_mask, drop, null_id, pad_id=0):
    null_tokens, _ = _null_caption(text_tokens, context_mask, null_id, pad_id)
    tokens = torch.where(drop.unsqueeze(1), null_tokens, text_tokens)
    return tokens, torch.where(drop.unsqueeze(1), torch.zeros_like(context_mask), context_mask)


def drop_inverted(text_tokens, context_mask, drop, null_id, pad_id=0):
    null_tokens, null_mask = _null_caption(text_tokens, context_mask, null_id, pad_id)
    keep = drop[:, None]
    return torch.where(keep, text_tokens, null_tokens), torch.where(keep, context_mask, null_mask)


def drop_mask_forgotten(text_tokens, context_mask, drop, null_id, pad_id=0):
    tokens = text_tokens.clone()
    tokens[drop] = pad_id
    tokens[drop, 0] = null_id
    return tokens, context_mask


def drop_first_token_only(text_tokens, context_mask, drop, null_id, pad_id=0):
    tokens, mask = text_tokens.clone(), context_mask.clone()
    tokens[drop, 0] = null_id
    mask[drop] = False
    mask[drop, 0] = True
    return tokens, mask


def drop_mask_all_true(text_tokens, context_mask, drop, null_id, pad_id=0):
    tokens, mask = text_tokens.clone(), context_mask.clone()
    tokens[drop] = pad_id
    tokens[drop, 0] = null_id
    mask[drop] = True
    return tokens, mask


def drop_to_pads(text_tokens, context_mask, drop, null_id, pad_id=0):
    tokens, mask = text_tokens.clone(), context_mask.clone()
    tokens[drop] = pad_id
    mask[drop] = torch.arange(mask.shape[1]) == 0
    return tokens, mask


def drop_in_place(text_tokens, context_mask, drop, null_id, pad_id=0):
    for b in range(len(drop)):
        if drop[b]:
            text_tokens[b] = pad_id
            text_tokens[b, 0] = null_id
            context_mask[b] = False
            context_mask[b, 0] = True
    return text_tokens, context_mask


# --- 06.guidance -------------------------------------------------------------------------------

def guidance_swapped(cond_logits, uncond_logits, scale):
    return cond_logits + scale * (uncond_logits - cond_logits)


def guidance_sign_flipped(cond_logits, uncond_logits, scale):
    return uncond_logits - scale * (cond_logits - uncond_logits)


def guidance_scales_cond(cond_logits, uncond_logits, scale):
    return cond_logits * scale


def guidance_averaged(cond_logits, uncond_logits, scale):
    return 0.5 * (cond_logits + uncond_logits)


def guidance_difference_only(cond_logits, uncond_logits, scale):
    return scale * (cond_logits - uncond_logits)


def guidance_from_cond(cond_logits, uncond_logits, scale):
    return cond_logits + scale * (cond_logits - uncond_logits)


def guidance_on_probabilities(cond_logits, uncond_logits, scale):
    p_c, p_u = F.softmax(cond_logits, dim=-1), F.softmax(uncond_logits, dim=-1)
    return p_u + scale * (p_c - p_u)


# --- 06.top_k ----------------------------------------------------------------------------------

def _kth_largest(logits, k):
    return logits.sort(dim=-1, descending=True).values[..., k - 1:k]  # (..., 1)


def top_k_smallest(logits, k):
    kth_smallest = logits.sort(dim=-1).values[..., k - 1:k]
    return logits.masked_fill(logits > kth_smallest, float("-inf"))


def top_k_plus_one(logits, k):
    kth = logits.sort(dim=-1, descending=True).values[..., k:k + 1]
    return logits.masked_fill(logits < kth, float("-inf"))


def top_k_minus_one(logits, k):
    return logits.masked_fill(logits <= _kth_largest(logits, k), float("-inf"))


def top_k_zeros(logits, k):
    return torch.where(logits >= _kth_largest(logits, k), logits, torch.zeros_like(logits))


def top_k_large_negative(logits, k):
    return logits.masked_fill(logits < _kth_largest(logits, k), -1e9)


def top_k_positive_inf(logits, k):
    return logits.masked_fill(logits < _kth_largest(logits, k), float("inf"))


def top_k_threshold_without_axis(logits, k):
    kth = torch.topk(logits, k).values[..., -1]
    return logits.masked_fill(logits < kth, float("-inf"))


def top_k_dim_0(logits, k):
    values, indices = logits.topk(k, dim=0)
    out = torch.full_like(logits, float("-inf"))
    return out.scatter(0, indices, values)


def top_k_whole_tensor(logits, k):
    kth = logits.flatten().topk(k).values[-1]
    return logits.masked_fill(logits < kth, float("-inf"))


def top_k_in_place(logits, k):
    logits[logits < _kth_largest(logits, k)] = float("-inf")
    return logits


# --- 06.sampling_probs -------------------------------------------------------------------------

def _filtered(logits, top_k):
    return logits if top_k is None else top_k_filter_ok(logits, top_k)


def top_k_filter_ok(logits, k):  # exactly k per row, even with ties (masking logits < the k-th keeps them all)
    values, indices = torch.topk(logits, k, dim=-1)
    return torch.full_like(logits, float("-inf")).scatter(-1, indices, values)


def _greedy(logits):
    return F.one_hot(logits.argmax(dim=-1), num_classes=logits.shape[-1]).double()


def probs_times_temperature(logits, temperature=1.0, top_k=None):
    if temperature == 0:
        return _greedy(logits)
    return F.softmax(_filtered(logits, top_k) * temperature, dim=-1)


def probs_temperature_after_softmax(logits, temperature=1.0, top_k=None):
    if temperature == 0:
        return _greedy(logits)
    return F.softmax(_filtered(logits, top_k), dim=-1) / temperature


def probs_top_k_ignored(logits, temperature=1.0, top_k=None):
    if temperature == 0:
        return _greedy(logits)
    return F.softmax(logits / temperature, dim=-1)


def probs_no_greedy(logits, temperature=1.0, top_k=None):
    return torch.softmax(_filtered(logits, top_k) / temperature, dim=-1)


def probs_greedy_index(logits, temperature=1.0, top_k=None):
    if temperature == 0:
        return torch.argmax(logits, dim=-1)
    return F.softmax(_filtered(logits, top_k) / temperature, dim=-1)


def probs_top_k_after_softmax(logits, temperature=1.0, top_k=None):
    if temperature == 0:
        return _greedy(logits)
    p = F.softmax(logits / temperature, dim=-1)
    if top_k is not None:
        p = p.masked_fill(logits < _kth_largest(logits, top_k), 0.0)
    return p


def probs_over_batch(logits, temperature=1.0, top_k=None):
    if temperature == 0:
        return _greedy(logits)
    return F.softmax(_filtered(logits, top_k) / temperature, dim=0)



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
        "with batch dims, k.T or np.dot mixes the batch axes in": attention_k_dot_T,
        "weights multiplied with k instead of v": attention_weights_at_k,
        "returns (weights, out) instead of (out, weights)": attention_returns_weights_first,
        "softmax without max subtraction": attention_naive_softmax,
        IN_PLACE: attention_scales_q_in_place,
    },
    "01.masked_attention": {
        "mask applied after the softmax": masked_after_softmax,
        "hidden scores set to 0 instead of −inf": masked_fill_zero,
        "inverted mask (True treated as 'ignore')": masked_inverted,
        "mask not applied": masked_ignored,
        "a query that may see no key gets NaN": masked_nan_rows,
        "a query that may see no key gets uniform weights": masked_large_negative,
    },
    "02.project": {
        "keys and values projected from x (self-attention), not from the context": project_self_attention,
        "x and context swapped: the context asks and x answers": project_swapped,
        "queries projected from the context": project_q_from_context,
        "keys and values swapped (W_K and W_V, or the order returned)": project_k_v_swapped,
    },
    "02.cross_attention": {
        "no 1/√d_k scaling": cross_unscaled,
        "scaled by √query_dim (the width of x) instead of √d_k": cross_by_query_dim,
        "scaled by √context_dim (the width of the context) instead of √d_k": cross_by_context_dim,
        "softmax over the wrong axis (the queries, not the keys)": cross_softmax_over_queries,
        "forgot W_O: the output is left in the values' width d_v": cross_without_W_O,
        "x and context swapped: the context asks and x answers": cross_context_asks,
        "keys and values projected from x (self-attention), not from the context": cross_self_attention,
    },
    "02.padded_cross_attention": {
        "inverted mask (True treated as 'ignore')": padded_inverted,
        "hidden scores set to 0 instead of −inf": padded_fill_zero,
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
    "03.forward": {
        "no 1/√head_dim scaling": forward_unscaled,
        "scaled by √(num_heads * head_dim) instead of √head_dim": forward_by_inner_dim,
        "scaled by √query_dim (the width of x) instead of √head_dim": forward_by_query_dim,
        "softmax over the wrong axis (the queries, not the keys)": forward_softmax_over_queries,
        "inverted mask (True treated as 'ignore')": forward_mask_inverted,
        "mask not applied": forward_mask_ignored,
        "forgot to_out: the output is left num_heads * head_dim wide": forward_without_to_out,
        "keys and values projected from x (self-attention), not from the context": forward_self_attention,
        "heads split without a transpose": forward_split_without_transpose,
        "heads merged in the wrong order: reshaped without moving the head axis back": forward_merge_without_transpose,
    },
    "03.mha_mask": {
        "key_padding_mask not inverted (it means True = ignore)": mha_mask_not_inverted,
        "mask not applied": mha_without_mask,
        "biases not copied": mha_without_biases,
        "to_q.weight copied transposed": mha_q_transposed,
        "to_k and to_v swapped": mha_k_v_swapped,
        "weights averaged over the heads (average_attn_weights=True)": mha_averaged_weights,
    },
    "03.gated_block": {
        "the gate does not start closed: a new block must return x unchanged": GatedOpenAtStart,
        "sigmoid instead of tanh: sigmoid(0) = 1/2, so the gate starts half open": GatedSigmoid,
        "the raw gate multiplies the update, without tanh": GatedRaw,
        "no gate: the update is added at full strength": GatedWithoutGate,
        "the gate also scales the residual: tanh(gate) · (x + update)": GatedWholeSum,
        "forgot the residual: y = tanh(gate) · update": GatedNoResidual,
        "residual added to the normalised stream": GatedResidualFromNormed,
        "post-norm: the layer norm after the sum": GatedPostNorm,
        "no layer norm before the attention": GatedNoNorm,
        "normalised the context as well as x": GatedNormsContext,
        "context_mask not passed on": GatedDropsMask,
    },
    "04.online_update": {
        "acc not rescaled to the new maximum (l is)": update_acc_not_rescaled,
        "l not rescaled to the new maximum (acc is)": update_l_not_rescaled,
        "neither l nor acc rescaled to the new maximum": update_not_rescaled,
        "used the block's maximum instead of the running maximum": update_block_max,
        "NaN on a row with no unmasked key: -inf - (-inf)": update_nan_when_all_masked,
        "the block's exponentials not measured from the new maximum (np.exp(scores))": update_exp_unshifted,
        "the rescale factor inverted for l and acc: e^(m_new - m) instead of α = e^(m - m_new)":
            update_alpha_inverted,
        "the maximum is not carried forward: the old m is returned, or m = m_new is missing":
            update_returns_old_max,
        IN_PLACE: update_l_in_place,
    },
    "04.blocked_attention": {
        "acc not rescaled to the new maximum (l is)": blocked_output_not_rescaled,
        "l not rescaled to the new maximum (acc is)": blocked_sum_not_rescaled,
        "neither l nor acc rescaled to the new maximum": blocked_nothing_rescaled,
        "NaN from the first block: e^(… - m) with m = -inf (alpha inverted, or p measured from the old m)":
            blocked_alpha_inverted,
        "no final division by l": blocked_not_divided,
        "the last, shorter block is skipped": blocked_whole_blocks_only,
        "the maximum is not carried forward: the old m is returned, or m = m_new is missing":
            blocked_max_never_updated,
    },
    "04.merge_states": {
        "neither l nor o rescaled to the new maximum": merge_added,
        "the rescale factor inverted for l and o: e^(m - m_i) instead of e^(m_i - m)": merge_factors_inverted,
        "kept only the half with the larger maximum": merge_keeps_larger_half,
        "o not rescaled to the new maximum (l is)": merge_o_not_rescaled,
        "NaN on a row with no unmasked key: -inf - (-inf)": merge_nan_when_all_masked,
    },
    "04.block_backward": {
        "D from this block only: rowsum(P ∘ dP) over the block's keys": bwd_delta_from_block,
        "P not recomputed from the lse: np.exp(scores)": bwd_exp_without_lse,
        "P renormalised over the block (a softmax of the block's scores alone)": bwd_softmax_of_block,
        "D's sign flipped: P ∘ (dP + D)": bwd_plus_delta,
        "D left out: dS = P ∘ dP": bwd_no_delta,
        "dq and dk not scaled by 1/√d_k": bwd_grads_unscaled,
        "the scores not scaled by 1/√d_k before recomputing P": bwd_scores_unscaled,
    },
    "05.nearest_code": {
        "argmax of the distances: the farthest code": nearest_farthest,
        "the largest dot product z · e_k instead of the smallest distance (or ‖e_k‖² left out of the "
        "expansion)": nearest_by_dot_product,
        "the expansion without the factor 2: ‖z‖² - z · e_k + ‖e_k‖²": nearest_expansion_without_two,
        "the cross term's sign flipped: ‖z‖² + 2 z · e_k + ‖e_k‖² (that is the distance to -z)":
            nearest_cross_term_added,
        "squared differences summed over the codes axis instead of the code width D": nearest_summed_over_codes,
        "returns the codes z_q instead of their indices": nearest_returns_codes,
        "the indices are left flat: not reshaped back to z's leading shape": nearest_left_flat,
    },
    "05.straight_through": {
        "no .detach(): the two z cancel, and the encoder gets no gradient": straight_no_detach,
        "returns z_q alone: the decoder gets the codes, but the encoder gets no gradient": straight_returns_z_q,
        "returns z: the decoder gets the unquantised vectors": straight_returns_z,
        "sign flipped: z - (z_q - z).detach()": straight_sign_flipped,
        "the decoder's gradient also flows into z_q (the codebook)": straight_grad_into_codebook,
        "nothing gets a gradient: the whole result is detached, or the two z terms still cancel "
        "(as in z + (z_q.detach() - z))": straight_all_detached,
        "detached z instead of the difference: the encoder's gradient is reversed": straight_z_detached,
    },
    "05.perplexity": {
        "mixed bases: log base 2 inside, e outside": perplexity_log2,
        "counts not normalised: p must be a fraction of the tokens": perplexity_unnormalised,
        "NaN from the dead codes: 0 · log 0": perplexity_nan,
        "returned the entropy, not its exponential": perplexity_entropy,
        "the entropy's sign flipped: exp(+Σ p log p) = 1 / perplexity": perplexity_sign,
        "counted the codes in use": perplexity_codes_in_use,
        "divided the counts by the number of codes, not by the number of tokens": perplexity_by_K,
        IN_PLACE: perplexity_zeros_replaced_in_place,
    },
    "06.decoder_block": {
        "post-norm: each LayerNorm after its residual, not before its sub-layer": decoder_block_post_norm,
        "no residual around the cross-attention: its output replaced x": decoder_block_cross_replaces_x,
        "the residual adds the normalised x: norm2(x) + cross_attention(...)": decoder_block_normed_residual,
        "keys and values from the image tokens: the cross-attention became a second self-attention":
            decoder_block_attends_to_itself,
        "the caption normalised with the image stream's norm2": decoder_block_caption_normed,
        "the padding mask left out: image tokens read the padding words": decoder_block_without_mask,
        "cross-attention before the self-attention": decoder_block_cross_first,
        "norm1 and norm2 swapped": decoder_block_norms_swapped,
        "parallel sub-layers: all three read the block's input x": decoder_block_parallel,
        IN_PLACE: decoder_block_in_place,
    },
    "06.teacher_forcing": {
        "no shift: the inputs are the targets, so the decoder learns to copy its input": forcing_no_shift,
        "no <start>: the first image token is never predicted": forcing_like_a_language_model,
        "<start> prepended, but the last token kept: the inputs are one longer than the targets":
            forcing_start_prepended_to_all,
        "shifted the wrong way: input i is token i + 1, from the future": forcing_rolled_backwards,
        "0 as <start>: 0 is a real image code": forcing_zero_start,
        "the targets shifted too: they equal the inputs": forcing_both_shifted,
        "the last token dropped from the targets too: it is never trained": forcing_last_target_dropped,
        IN_PLACE: forcing_in_place,
    },
    "06.drop_captions": {
        "dropped captions by masking all their words: a row with nothing to attend to": drop_by_masking,
        "the null token is masked too: its row of the mask is all False": drop_null_masked,
        "drop inverted: the kept captions were replaced": drop_inverted,
        "the mask was not changed: the null caption keeps the old caption's mask": drop_mask_forgotten,
        "only the first token replaced: the rest of the old caption is still there": drop_first_token_only,
        "the null caption's mask is all True: it attends to its padding": drop_mask_all_true,
        "replaced by padding only: no null token": drop_to_pads,
        IN_PLACE: drop_in_place,
    },
    "06.guidance": {
        "cond and uncond swapped: cond + s · (uncond - cond) pushes towards no caption": guidance_swapped,
        "sign flipped: uncond - s · (cond - uncond) pushes away from the caption": guidance_sign_flipped,
        "scaled the conditional logits only: s · cond": guidance_scales_cond,
        "averaged cond and uncond": guidance_averaged,
        "forgot to add uncond back: s · (cond - uncond)": guidance_difference_only,
        "cond + s · (cond - uncond): that is guidance with scale s + 1": guidance_from_cond,
        "combined the probabilities, not the logits": guidance_on_probabilities,
    },
    "06.top_k": {
        "kept the k smallest logits": top_k_smallest,
        "kept k + 1 logits per row (off by one)": top_k_plus_one,
        "kept k - 1 logits per row (off by one)": top_k_minus_one,
        "set the others to 0 instead of -inf": top_k_zeros,
        "set the others to a large negative number (such as -1e9) instead of -inf": top_k_large_negative,
        "set the others to +inf instead of -inf: the dropped tokens become the most likely": top_k_positive_inf,
        "the threshold lost its axis: compared with the k-th largest of another row": top_k_threshold_without_axis,
        "top k over the wrong axis (dim=0)": top_k_dim_0,
        "kept the k largest of the whole tensor, not of each row": top_k_whole_tensor,
        IN_PLACE: top_k_in_place,
    },
    "06.sampling_probs": {
        "multiplied the logits by the temperature instead of dividing": probs_times_temperature,
        "temperature applied after the softmax": probs_temperature_after_softmax,
        "top_k ignored": probs_top_k_ignored,
        "no greedy case: at temperature 0, ℓ / 0 gives inf and then NaN": probs_no_greedy,
        "at temperature 0, returned the argmax instead of a distribution": probs_greedy_index,
        "top-k applied to the probabilities without renormalising": probs_top_k_after_softmax,
        "softmax over the batch axis, not the vocabulary": probs_over_batch,
    },
}
LEARNER_MISTAKES.update(LEARNER_MISTAKES_02B)
LEARNER_MISTAKES.update(LEARNER_MISTAKES_07)
for task_id, more in (*LEARNER_MISTAKES_ATTENTION.items(), *LEARNER_MISTAKES_06.items()):
    LEARNER_MISTAKES.setdefault(task_id, {}).update(more)
for task_id, more in LEARNER_MISTAKES_0405.items():
    LEARNER_MISTAKES.setdefault(task_id, {}).update(more)

# Other ways to make a catalogued mistake, which must get the same name.
VARIANTS = [
    ("01.masked_attention", "mask applied after the softmax, then renormalised: a hidden key with a large score "
     "leaves the others 0", masked_renormalised),
    ("03.gated_block", "the gate does not start closed: a new block must return x unchanged", GatedOnesAtStart),
    ("03.mha_mask", "key_padding_mask not inverted (it means True = ignore)", mha_mask_not_inverted_copy),
    ("04.online_update", "NaN on a row with no unmasked key: -inf - (-inf)", update_guards_alpha_only),
    ("05.nearest_code", "the largest dot product z · e_k instead of the smallest distance (or ‖e_k‖² left out of "
     "the expansion)", nearest_expansion_without_code_norms),
    ("05.straight_through", "no .detach(): the two z cancel, and the encoder gets no gradient",
     straight_z_terms_cancel),
    ("05.straight_through", "nothing gets a gradient: the whole result is detached, or the two z terms still cancel "
     "(as in z + (z_q.detach() - z))", straight_only_z_q_detached),
]
VARIANTS += VARIANTS_0405

VARIANTS += VARIANTS_06

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


RIGHT_ANSWERS = RIGHT_ANSWERS_02B + RIGHT_ANSWERS_0405 + RIGHT_ANSWERS_06 + RIGHT_ANSWERS_07 + RIGHT_ANSWERS_ATTENTION


@pytest.mark.parametrize("task_id, fn", RIGHT_ANSWERS, ids=[f"{t}: {fn.__name__}" for t, fn in RIGHT_ANSWERS])
def test_a_right_answer_written_unusually_passes(task_id, fn):
    task = get_task(task_id)
    for seed in SEEDS:
        result = judge(task, fn, seed)
        assert result.status == PASSED, result.text()


@pytest.mark.parametrize("task", FUNCTION_TASKS, ids=lambda t: t.id)
def test_the_catalogues_own_version_of_each_mistake_is_named_as_itself(task):
    for mistake in task.mistakes:
        for impl in (mistake.impl, *mistake.also) if mistake.impl is not None else ():  # `raises` ones: above
            for seed in SEEDS:
                assert judge(task, impl, seed).mistake == mistake.name, (task.id, mistake.name, seed)


@pytest.mark.parametrize("task", FUNCTION_TASKS, ids=lambda t: t.id)
def test_a_constant_output_fails(task):
    case = task.cases(np.random.default_rng(0))[0]
    outputs = task.reference(*case.fresh()[0], **case.fresh()[1])  # as the answer returns them (no harness)
    constant = tuple(np.full(np.shape(o), 0.5) for o in (outputs if isinstance(outputs, tuple) else (outputs,)))

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
