"""The shared attention slips (crossmodal_edu/grading/tasks/attention_slips.py), written the way a
learner would write them in each task that computes attention, lessons 01-03 (imported by
tests/test_grading_mistakes.py).

Independent of the catalogue's code: each function below is one learner's whole answer, in that
lesson's idiom (NumPy and their own softmax in 01-02, PyTorch in 03), with one thing wrong. The
same slip must get the same name in every task.
"""
import math

import numpy as np
import torch
from torch import nn


def _softmax(z, axis=-1):  # the learner's own softmax from task 01.softmax: NaN on an all -inf row
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


# --- 01.softmax --------------------------------------------------------------------------------

def softmax_minus_min(z, axis=-1):
    shifted = z - np.min(z, axis=axis, keepdims=True)
    return np.exp(shifted) / np.exp(shifted).sum(axis=axis, keepdims=True)


def softmax_minus_mean(z, axis=-1):
    e = np.exp(z - z.mean(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def softmax_shift_on_top_only(z, axis=-1):
    top = np.exp(z - np.max(z, axis=axis, keepdims=True))
    bottom = np.sum(np.exp(z), axis=axis, keepdims=True)
    return top / bottom


def softmax_max_of_rows(z, axis=-1):
    z = z - z.max(-1, keepdims=True)
    return np.exp(z) / np.exp(z).sum(axis, keepdims=True)


def softmax_axis_zero(z, axis=0):
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


# --- 01.attention ------------------------------------------------------------------------------

def attention_times_sqrt(q, k, v):
    w = _softmax(q @ np.swapaxes(k, -1, -2) * math.sqrt(q.shape[-1]))
    return w @ v, w


def attention_by_Lq(q, k, v):
    w = _softmax(q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-2]))
    return w @ v, w


def attention_weights_scaled(q, k, v):
    w = _softmax(q @ np.swapaxes(k, -1, -2)) / np.sqrt(q.shape[-1])
    return w @ v, w


def attention_softmax_axis0(q, k, v):
    w = _softmax(q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1]), axis=0)
    return w @ v, w


def attention_with_np_dot(q, k, v):
    w = _softmax(np.dot(q, np.swapaxes(k, -1, -2)) / np.sqrt(q.shape[-1]))
    return np.matmul(w, v), w


def attention_by_first_dim(q, k, v):
    w = _softmax(q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[0]))
    return w @ v, w


# --- 01.masked_attention: the learner's fixed version, with one other thing wrong ----------------

def _masked(q, k, v, mask, scale=None, axis=-1):
    s = q @ np.swapaxes(k, -1, -2) * (1 / np.sqrt(q.shape[-1]) if scale is None else scale)
    s = np.where(mask, s, -np.inf)
    w = _softmax(s, axis=axis)
    w = np.where(np.isnan(w), 0.0, w)  # the row that may see nothing
    return w @ v, w


def masked_no_scale(q, k, v, mask):
    return _masked(q, k, v, mask, scale=1.0)


def masked_by_d_k(q, k, v, mask):
    return _masked(q, k, v, mask, scale=1 / q.shape[-1])


def masked_times_sqrt(q, k, v, mask):
    return _masked(q, k, v, mask, scale=q.shape[-1] ** 0.5)


def masked_by_d_v(q, k, v, mask):
    return _masked(q, k, v, mask, scale=1 / math.sqrt(v.shape[-1]))


def masked_by_Lk(q, k, v, mask):
    return _masked(q, k, v, mask, scale=k.shape[-2] ** -0.5)


def masked_by_Lq(q, k, v, mask):
    return _masked(q, k, v, mask, scale=q.shape[-2] ** -0.5)


def masked_softmax_queries(q, k, v, mask):
    return _masked(q, k, v, mask, axis=-2)


def masked_weights_scaled(q, k, v, mask):
    out, w = _masked(q, k, v, mask, scale=1.0)
    w = w / np.sqrt(q.shape[-1])
    return w @ v, w


def masked_softmax_axis0(q, k, v, mask):
    return _masked(q, k, v, mask, axis=0)


def masked_indexed(q, k, v, mask):
    s = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])
    s[~mask] = -np.inf
    w = np.nan_to_num(_softmax(s))
    return w @ v, w


def masked_by_first_dim(q, k, v, mask):
    return _masked(q, k, v, mask, scale=1 / np.sqrt(len(q)))


def masked_renormalised_with_eps(q, k, v, mask):
    w = _softmax(q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])) * mask
    w = w / (w.sum(axis=-1, keepdims=True) + 1e-9)
    return w @ v, w


def masked_scores_times_mask(q, k, v, mask):
    s = (q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])) * mask
    w = _softmax(s)
    return w @ v, w


def masked_plus_mask(q, k, v, mask):
    s = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1]) + mask.astype(float)
    w = _softmax(s)
    return w @ v, w


def masked_plus_mask_minus_one(q, k, v, mask):
    s = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1]) + (mask - 1)
    w = _softmax(s)
    return w @ v, w


def masked_times_inf(q, k, v, mask):
    s = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1]) + (~mask) * -np.inf
    w = _softmax(s)
    return w @ v, w


def masked_negated(q, k, v, mask):
    s = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])
    s = s + 1e9 * -(~mask)
    w = _softmax(s)
    return w @ v, w


def masked_bool_minus_bool(q, k, v, mask):
    s = q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1])
    hidden = np.ones_like(mask) - mask
    w = _softmax(np.where(hidden, -np.inf, s))
    return w @ v, w


# --- 02.cross_attention ------------------------------------------------------------------------

def _cross(x, c, W_Q, W_K, W_V, W_O, divide_by):
    q, k, v = x @ W_Q, c @ W_K, c @ W_V
    w = _softmax(q @ k.swapaxes(-1, -2) / divide_by(q, k, v))
    return w @ v @ W_O, w


def cross_by_d_k(x, c, W_Q, W_K, W_V, W_O):
    return _cross(x, c, W_Q, W_K, W_V, W_O, lambda q, k, v: q.shape[-1])


def cross_times_sqrt(x, c, W_Q, W_K, W_V, W_O):
    return _cross(x, c, W_Q, W_K, W_V, W_O, lambda q, k, v: 1 / np.sqrt(W_Q.shape[1]))


def cross_by_d_v(x, c, W_Q, W_K, W_V, W_O):
    return _cross(x, c, W_Q, W_K, W_V, W_O, lambda q, k, v: np.sqrt(W_V.shape[1]))


def cross_by_Lk(x, c, W_Q, W_K, W_V, W_O):
    return _cross(x, c, W_Q, W_K, W_V, W_O, lambda q, k, v: np.sqrt(c.shape[-2]))


def cross_by_first_dim(x, c, W_Q, W_K, W_V, W_O):
    return _cross(x, c, W_Q, W_K, W_V, W_O, lambda q, k, v: np.sqrt(q.shape[0]))


def cross_by_Lq(x, c, W_Q, W_K, W_V, W_O):
    return _cross(x, c, W_Q, W_K, W_V, W_O, lambda q, k, v: np.sqrt(len(x) if x.ndim == 2 else x.shape[1]))


def cross_weights_scaled(x, c, W_Q, W_K, W_V, W_O):
    q, k, v = x @ W_Q, c @ W_K, c @ W_V
    w = _softmax(q @ k.swapaxes(-1, -2)) * W_Q.shape[1] ** -0.5
    return w @ v @ W_O, w


def cross_softmax_axis0(x, c, W_Q, W_K, W_V, W_O):
    q, k, v = x @ W_Q, c @ W_K, c @ W_V
    w = _softmax(q @ k.swapaxes(-1, -2) / np.sqrt(q.shape[-1]), axis=0)
    return w @ v @ W_O, w


def cross_with_residual(x, c, W_Q, W_K, W_V, W_O):
    q, k, v = x @ W_Q, c @ W_K, c @ W_V
    w = _softmax(q @ k.swapaxes(-1, -2) / np.sqrt(q.shape[-1]))
    return x + (w @ v) @ W_O, w


# --- 02.padded_cross_attention: fixed, with one other thing wrong ---------------------------------

def _padded(x, c, W_Q, W_K, W_V, W_O, context_mask, scale=None, axis=-1, hide=None):
    q, k, v = x @ W_Q, c @ W_K, c @ W_V
    s = q @ k.swapaxes(-1, -2) * (1 / np.sqrt(W_K.shape[1]) if scale is None else scale)
    m = context_mask[:, None, :]
    s = np.where(m, s, -np.inf) if hide is None else hide(s, m)
    w = _softmax(s, axis=axis)
    return w @ v @ W_O, w


def padded_no_scale(x, c, W_Q, W_K, W_V, W_O, context_mask):
    return _padded(x, c, W_Q, W_K, W_V, W_O, context_mask, scale=1)


def padded_by_d_k(x, c, W_Q, W_K, W_V, W_O, context_mask):
    return _padded(x, c, W_Q, W_K, W_V, W_O, context_mask, scale=1 / W_Q.shape[1])


def padded_times_sqrt(x, c, W_Q, W_K, W_V, W_O, context_mask):
    return _padded(x, c, W_Q, W_K, W_V, W_O, context_mask, scale=np.sqrt(W_Q.shape[1]))


def padded_by_d_v(x, c, W_Q, W_K, W_V, W_O, context_mask):
    return _padded(x, c, W_Q, W_K, W_V, W_O, context_mask, scale=1 / np.sqrt(W_V.shape[1]))


def padded_by_Lk(x, c, W_Q, W_K, W_V, W_O, context_mask):
    return _padded(x, c, W_Q, W_K, W_V, W_O, context_mask, scale=1 / np.sqrt(context_mask.shape[1]))


def padded_by_Lq(x, c, W_Q, W_K, W_V, W_O, context_mask):
    return _padded(x, c, W_Q, W_K, W_V, W_O, context_mask, scale=1 / np.sqrt(x.shape[1]))


def padded_by_query_dim(x, c, W_Q, W_K, W_V, W_O, context_mask):
    return _padded(x, c, W_Q, W_K, W_V, W_O, context_mask, scale=1 / np.sqrt(x.shape[-1]))


def padded_by_context_dim(x, c, W_Q, W_K, W_V, W_O, context_mask):
    return _padded(x, c, W_Q, W_K, W_V, W_O, context_mask, scale=1 / np.sqrt(c.shape[-1]))


def padded_softmax_queries(x, c, W_Q, W_K, W_V, W_O, context_mask):
    return _padded(x, c, W_Q, W_K, W_V, W_O, context_mask, axis=1)


def padded_weights_scaled(x, c, W_Q, W_K, W_V, W_O, context_mask):
    out, w = _padded(x, c, W_Q, W_K, W_V, W_O, context_mask, scale=1.0)
    w = w / np.sqrt(W_Q.shape[1])
    return w @ (c @ W_V) @ W_O, w


def padded_softmax_axis0(x, c, W_Q, W_K, W_V, W_O, context_mask):
    return _padded(x, c, W_Q, W_K, W_V, W_O, context_mask, axis=0)


def padded_with_residual(x, c, W_Q, W_K, W_V, W_O, context_mask):
    out, w = _padded(x, c, W_Q, W_K, W_V, W_O, context_mask)
    return out + x, w


def padded_indexed(x, c, W_Q, W_K, W_V, W_O, context_mask):
    q, k, v = x @ W_Q, c @ W_K, c @ W_V
    s = q @ k.swapaxes(-1, -2) / np.sqrt(q.shape[-1])
    s[~context_mask[:, None, :]] = -np.inf
    w = _softmax(s)
    return w @ v @ W_O, w


def padded_by_first_dim(x, c, W_Q, W_K, W_V, W_O, context_mask):
    return _padded(x, c, W_Q, W_K, W_V, W_O, context_mask, scale=x.shape[0] ** -0.5)


def padded_renormalised(x, c, W_Q, W_K, W_V, W_O, context_mask):
    q, k, v = x @ W_Q, c @ W_K, c @ W_V
    w = _softmax(q @ k.swapaxes(-1, -2) / np.sqrt(W_Q.shape[1])) * context_mask[:, None, :]
    w = w / w.sum(-1, keepdims=True)
    return w @ v @ W_O, w


def padded_plus_mask(x, c, W_Q, W_K, W_V, W_O, context_mask):
    return _padded(x, c, W_Q, W_K, W_V, W_O, context_mask, hide=lambda s, m: s + m)


def padded_times_inf(x, c, W_Q, W_K, W_V, W_O, context_mask):
    return _padded(x, c, W_Q, W_K, W_V, W_O, context_mask, hide=lambda s, m: s + np.where(m, 0, 1) * -np.inf)


def padded_negated(x, c, W_Q, W_K, W_V, W_O, context_mask):
    return _padded(x, c, W_Q, W_K, W_V, W_O, context_mask, hide=lambda s, m: np.where(-m, -np.inf, s))


def padded_bool_minus_bool(x, c, W_Q, W_K, W_V, W_O, context_mask):
    return _padded(x, c, W_Q, W_K, W_V, W_O, context_mask, hide=lambda s, m: s - 1e9 * (True - m))


# --- 02.block ----------------------------------------------------------------------------------

def block_normalises_both(x, context, attention, context_mask=None):
    from crossmodal_edu.numpy_attention import layer_norm
    h, c = layer_norm(x), layer_norm(context)
    update, weights = attention(h, c, context_mask=context_mask)
    return x + update, weights


def block_own_norm_over_tokens(x, context, attention, context_mask=None):
    mu, var = np.mean(x, axis=1, keepdims=True), np.var(x, axis=1, keepdims=True)
    update, weights = attention((x - mu) / np.sqrt(var + 1e-5), context, context_mask)
    return x + update, weights


# --- 03.gated_block ------------------------------------------------------------------------------

class GatedNormalisesTheContextNotX(nn.Module):
    def __init__(self, query_dim, context_dim, num_heads):
        super().__init__()
        from crossmodal_edu.torch_attention import MultiHeadCrossAttention
        self.norm = nn.LayerNorm(query_dim)
        self.attention = MultiHeadCrossAttention(query_dim, context_dim, num_heads)
        self.gate = nn.Parameter(torch.zeros(()))

    def forward(self, x, context, context_mask=None):
        update = self.attention(x, self.norm(context), context_mask)
        return x + self.gate.tanh() * update


class GatedTanhOfTheProduct(GatedNormalisesTheContextNotX):
    def forward(self, x, context, context_mask=None):
        return x + torch.tanh(self.gate * self.attention(self.norm(x), context, context_mask))


class GatedTanhOfTheSum(GatedNormalisesTheContextNotX):
    def forward(self, x, context, context_mask=None):
        return torch.tanh(x + self.gate * self.attention(self.norm(x), context, context_mask))


class GatedNormalisesTheUpdate(GatedNormalisesTheContextNotX):
    def forward(self, x, context, context_mask=None):
        return x + torch.tanh(self.gate) * self.norm(self.attention(x, context, context_mask))


# --- 03.forward: in PyTorch --------------------------------------------------------------------

def _fw(x, context, to_q, to_k, to_v, to_out, num_heads, context_mask, divide_by=None, hide=None):
    B, Lq, _ = x.shape
    def heads(t):
        return t.reshape(B, t.shape[1], num_heads, -1).permute(0, 2, 1, 3)
    q, k, v = heads(to_q(x)), heads(to_k(context)), heads(to_v(context))
    s = torch.matmul(q, k.transpose(2, 3)) / (math.sqrt(q.size(-1)) if divide_by is None else divide_by(q, x, context))
    if context_mask is not None:
        m = context_mask.view(B, 1, 1, -1)
        s = s.masked_fill(m.logical_not(), -math.inf) if hide is None else hide(s, m)
    w = torch.softmax(s, dim=-1)
    return to_out((w @ v).permute(0, 2, 1, 3).reshape(B, Lq, -1)), w


def forward_by_d_k(x, context, to_q, to_k, to_v, to_out, num_heads, context_mask=None):
    return _fw(x, context, to_q, to_k, to_v, to_out, num_heads, context_mask, lambda q, x, c: q.shape[-1])


def forward_times_sqrt(x, context, to_q, to_k, to_v, to_out, num_heads, context_mask=None):
    return _fw(x, context, to_q, to_k, to_v, to_out, num_heads, context_mask, lambda q, x, c: q.shape[-1] ** -0.5)


def forward_by_Lk(x, context, to_q, to_k, to_v, to_out, num_heads, context_mask=None):
    return _fw(x, context, to_q, to_k, to_v, to_out, num_heads, context_mask, lambda q, x, c: math.sqrt(c.shape[1]))


def forward_by_Lq(x, context, to_q, to_k, to_v, to_out, num_heads, context_mask=None):
    return _fw(x, context, to_q, to_k, to_v, to_out, num_heads, context_mask, lambda q, x, c: math.sqrt(x.shape[1]))


def forward_by_first_dim(x, context, to_q, to_k, to_v, to_out, num_heads, context_mask=None):
    return _fw(x, context, to_q, to_k, to_v, to_out, num_heads, context_mask, lambda q, x, c: math.sqrt(q.shape[0]))


def forward_head_dim_from_x(x, context, to_q, to_k, to_v, to_out, num_heads, context_mask=None):
    head_dim = x.shape[-1] // num_heads  # a learner's "head_dim": x's width shared among the heads
    return _fw(x, context, to_q, to_k, to_v, to_out, num_heads, context_mask,
               lambda q, x, c: math.sqrt(x.shape[-1] / num_heads))


def forward_softmax_over_heads(x, context, to_q, to_k, to_v, to_out, num_heads, context_mask=None):
    B, Lq, _ = x.shape
    q = to_q(x).view(B, Lq, num_heads, -1).transpose(1, 2)
    k = to_k(context).view(B, context.shape[1], num_heads, -1).transpose(1, 2)
    v = to_v(context).view(B, context.shape[1], num_heads, -1).transpose(1, 2)
    s = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if context_mask is not None:
        s = s.masked_fill(~context_mask[:, None, None, :], float("-inf"))
    w = torch.softmax(s, dim=1)
    return to_out((w @ v).transpose(1, 2).reshape(B, Lq, -1)), w


def forward_keys_from_to_v(x, context, to_q, to_k, to_v, to_out, num_heads, context_mask=None):
    return _fw(x, context, to_q, to_v, to_k, to_out, num_heads, context_mask)


def forward_split_and_merge_without_transpose(x, context, to_q, to_k, to_v, to_out, num_heads, context_mask=None):
    B, Lq, _ = x.shape
    q = to_q(x).view(B, num_heads, Lq, -1)
    k = to_k(context).view(B, num_heads, context.shape[1], -1)
    v = to_v(context).view(B, num_heads, context.shape[1], -1)
    s = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if context_mask is not None:
        s = s.masked_fill(~context_mask[:, None, None, :], float("-inf"))
    w = s.softmax(-1)
    return to_out((w @ v).reshape(B, Lq, -1)), w


def forward_by_context_dim(x, context, to_q, to_k, to_v, to_out, num_heads, context_mask=None):
    return _fw(x, context, to_q, to_k, to_v, to_out, num_heads, context_mask, lambda q, x, c: math.sqrt(c.shape[-1]))


def forward_weights_scaled(x, context, to_q, to_k, to_v, to_out, num_heads, context_mask=None):
    B, Lq, _ = x.shape
    q = to_q(x).view(B, Lq, num_heads, -1).transpose(1, 2)
    k = to_k(context).view(B, context.shape[1], num_heads, -1).transpose(1, 2)
    v = to_v(context).view(B, context.shape[1], num_heads, -1).transpose(1, 2)
    s = q @ k.transpose(-1, -2)
    if context_mask is not None:
        s = s.masked_fill(~context_mask[:, None, None, :], float("-inf"))
    w = s.softmax(dim=-1) / math.sqrt(q.shape[-1])
    return to_out((w @ v).transpose(1, 2).reshape(B, Lq, -1)), w


def forward_softmax_dim0(x, context, to_q, to_k, to_v, to_out, num_heads, context_mask=None):
    B, Lq, _ = x.shape
    q = to_q(x).view(B, Lq, num_heads, -1).transpose(1, 2)
    k = to_k(context).view(B, context.shape[1], num_heads, -1).transpose(1, 2)
    v = to_v(context).view(B, context.shape[1], num_heads, -1).transpose(1, 2)
    s = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if context_mask is not None:
        s = s.masked_fill(~context_mask[:, None, None, :], float("-inf"))
    w = torch.softmax(s, 0)
    return to_out((w @ v).transpose(1, 2).reshape(B, Lq, -1)), w


def forward_indexed(x, context, to_q, to_k, to_v, to_out, num_heads, context_mask=None):
    B, Lq, _ = x.shape
    q = to_q(x).view(B, Lq, num_heads, -1).transpose(1, 2)
    k = to_k(context).view(B, context.shape[1], num_heads, -1).transpose(1, 2)
    v = to_v(context).view(B, context.shape[1], num_heads, -1).transpose(1, 2)
    s = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if context_mask is not None:
        s[~context_mask[:, None, None, :]] = float("-inf")
    w = torch.softmax(s, -1)
    return to_out((w @ v).transpose(1, 2).reshape(B, Lq, -1)), w


def forward_heads_wrong_order(x, context, to_q, to_k, to_v, to_out, num_heads, context_mask=None):
    B, Lq, _ = x.shape
    def split(t):
        return t.reshape(B, t.shape[1], -1, num_heads).permute(0, 3, 1, 2)
    q, k, v = split(to_q(x)), split(to_k(context)), split(to_v(context))
    s = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if context_mask is not None:
        s = s.masked_fill(~context_mask[:, None, None, :], float("-inf"))
    w = s.softmax(-1)
    return to_out((w @ v).transpose(1, 2).reshape(B, Lq, -1)), w


def forward_view_after_transpose(x, context, to_q, to_k, to_v, to_out, num_heads, context_mask=None):
    B, Lq, _ = x.shape
    q = to_q(x).view(B, Lq, num_heads, -1).transpose(1, 2)
    k = to_k(context).view(B, context.shape[1], num_heads, -1).transpose(1, 2)
    v = to_v(context).view(B, context.shape[1], num_heads, -1).transpose(1, 2)
    s = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if context_mask is not None:
        s = s.masked_fill(~context_mask[:, None, None, :], float("-inf"))
    w = s.softmax(-1)
    return to_out((w @ v).transpose(1, 2).view(B, Lq, -1)), w


def forward_after_softmax(x, context, to_q, to_k, to_v, to_out, num_heads, context_mask=None):
    B, Lq, _ = x.shape
    q = to_q(x).view(B, Lq, num_heads, -1).transpose(1, 2)
    k = to_k(context).view(B, context.shape[1], num_heads, -1).transpose(1, 2)
    v = to_v(context).view(B, context.shape[1], num_heads, -1).transpose(1, 2)
    w = (q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])).softmax(dim=-1)
    if context_mask is not None:
        w = w * context_mask[:, None, None, :]
    return to_out((w @ v).transpose(1, 2).reshape(B, Lq, -1)), w


def forward_masked_with_zero(x, context, to_q, to_k, to_v, to_out, num_heads, context_mask=None):
    return _fw(x, context, to_q, to_k, to_v, to_out, num_heads, context_mask, hide=lambda s, m: s.masked_fill(~m, 0.0))


def forward_plus_mask(x, context, to_q, to_k, to_v, to_out, num_heads, context_mask=None):
    return _fw(x, context, to_q, to_k, to_v, to_out, num_heads, context_mask, hide=lambda s, m: s + m.float())


def forward_times_inf(x, context, to_q, to_k, to_v, to_out, num_heads, context_mask=None):
    return _fw(x, context, to_q, to_k, to_v, to_out, num_heads, context_mask,
               hide=lambda s, m: s + (~m).to(s.dtype) * float("-inf"))


def forward_negated(x, context, to_q, to_k, to_v, to_out, num_heads, context_mask=None):
    return _fw(x, context, to_q, to_k, to_v, to_out, num_heads, context_mask,
               hide=lambda s, m: s.masked_fill(-m, float("-inf")))


def forward_one_minus_mask(x, context, to_q, to_k, to_v, to_out, num_heads, context_mask=None):
    return _fw(x, context, to_q, to_k, to_v, to_out, num_heads, context_mask,
               hide=lambda s, m: s - 1e9 * (1 - m))


# --- 03.mha_mask: nn.MultiheadAttention ----------------------------------------------------------

def _mha(layer, dtype):
    mha = nn.MultiheadAttention(layer.query_dim, layer.num_heads, kdim=layer.context_dim, vdim=layer.context_dim,
                                batch_first=True, dtype=dtype)
    with torch.no_grad():
        mha.q_proj_weight.copy_(layer.to_q.weight)
        mha.k_proj_weight.copy_(layer.to_k.weight)
        mha.v_proj_weight.copy_(layer.to_v.weight)
        mha.in_proj_bias.copy_(torch.cat([layer.to_q.bias, layer.to_k.bias, layer.to_v.bias]))
        mha.out_proj.weight.copy_(layer.to_out.weight)
        mha.out_proj.bias.copy_(layer.to_out.bias)
    return mha


def mha_float_mask(x, context, layer, context_mask):
    return _mha(layer, x.dtype)(x, context, context, key_padding_mask=context_mask.to(x.dtype),
                                average_attn_weights=False)


def mha_mask_minus_one(x, context, layer, context_mask):
    return _mha(layer, x.dtype)(x, context, context, key_padding_mask=context_mask.double() - 1,
                                average_attn_weights=False)


def mha_times_inf(x, context, layer, context_mask):
    return _mha(layer, x.dtype)(x, context, context, key_padding_mask=(~context_mask).to(x.dtype) * float("-inf"),
                                average_attn_weights=False)


def mha_negated(x, context, layer, context_mask):
    return _mha(layer, x.dtype)(x, context, context, key_padding_mask=-context_mask, average_attn_weights=False)


def mha_one_minus(x, context, layer, context_mask):
    return _mha(layer, x.dtype)(x, context, context, key_padding_mask=1 - context_mask, average_attn_weights=False)


def mha_inverted_float(x, context, layer, context_mask):
    return _mha(layer, x.dtype)(x, context, context, key_padding_mask=(~context_mask).to(x.dtype),
                                average_attn_weights=False)


def mha_int_mask(x, context, layer, context_mask):
    return _mha(layer, x.dtype)(x, context, context, key_padding_mask=1 - context_mask.int(),
                                average_attn_weights=False)


def masked_plus_inverted(q, k, v, mask):
    w = _softmax(q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1]) + (1 - mask))
    return w @ v, w


def padded_plus_inverted(x, c, W_Q, W_K, W_V, W_O, context_mask):
    return _padded(x, c, W_Q, W_K, W_V, W_O, context_mask, hide=lambda s, m: s + np.logical_not(m))


def forward_plus_inverted(x, context, to_q, to_k, to_v, to_out, num_heads, context_mask=None):
    return _fw(x, context, to_q, to_k, to_v, to_out, num_heads, context_mask, hide=lambda s, m: s + (~m).to(s.dtype))


def mha_as_attn_mask(x, context, layer, context_mask):
    return _mha(layer, x.dtype)(x, context, context, attn_mask=~context_mask, average_attn_weights=False)


def project_scales_q(x, context, W_Q, W_K, W_V):
    d_k = W_Q.shape[-1]
    return (x @ W_Q) / math.sqrt(d_k), context @ W_K, context @ W_V


def cross_returns_scores(x, c, W_Q, W_K, W_V, W_O):
    q, k, v = x @ W_Q, c @ W_K, c @ W_V
    s = q @ k.swapaxes(-1, -2) / np.sqrt(q.shape[-1])
    return _softmax(s) @ v @ W_O, s


def forward_mean_weights(x, context, to_q, to_k, to_v, to_out, num_heads, context_mask=None):
    out, w = _fw(x, context, to_q, to_k, to_v, to_out, num_heads, context_mask)
    return out, w.mean(1)


SCALE = {
    "01": {"no 1/√d_k scaling": masked_no_scale, "divided by d_k instead of √d_k": masked_by_d_k,
           "multiplied by √d_k instead of dividing by it": masked_times_sqrt,
           "scaled by √d_v (the values' width) instead of √d_k": masked_by_d_v,
           "scaled by √Lk (the number of keys) instead of √d_k": masked_by_Lk,
           "scaled by √Lq (the number of queries) instead of √d_k": masked_by_Lq},
}
ADDED = "the mask added to the scores as a number (1/0 or 0/−1), not as −inf"
TIMES_INF = "−inf multiplied by the mask: 0 · (−inf) is NaN"
NEGATED = "negated a boolean mask with `-`"
ARITHMETIC = "arithmetic on a boolean mask (`mask - 1`, `1 - mask`)"

LEARNER_MISTAKES_ATTENTION = {
    "02.project": {"q already divided by √d_k": project_scales_q},
    "01.softmax": {"subtracted the minimum (or the mean), not the maximum": softmax_minus_min,
                   "the maximum subtracted in the numerator only": softmax_shift_on_top_only,
                   "the maximum taken along the last axis, the sum along `axis`": softmax_max_of_rows,
                   "the default is not axis=-1": softmax_axis_zero},
    "01.attention": {
        "multiplied by √d_k instead of dividing by it": attention_times_sqrt,
        "scaled by √Lq (the number of queries) instead of √d_k": attention_by_Lq,
        "scaled by √(q.shape[0]) instead of √d_k": attention_by_first_dim,
        "scaled the weights after the softmax, not the scores before it": attention_weights_scaled, "softmax over the first axis (axis=0), not the keys": attention_softmax_axis0,
    },
    "01.masked_attention": {
        **SCALE["01"], "scaled by √(q.shape[0]) instead of √d_k": masked_by_first_dim,
        "mask applied after the softmax, then renormalised: a hidden key with a large score leaves the others 0":
            masked_renormalised_with_eps,
        "softmax over the wrong axis (the queries, not the keys)": masked_softmax_queries,
        "scaled the weights after the softmax, not the scores before it": masked_weights_scaled, "softmax over the first axis (axis=0), not the keys": masked_softmax_axis0, "indexed the scores with a mask of another shape": masked_indexed,
        "the inverted mask added as a number: hidden keys gain 1 instead of −inf": masked_plus_inverted,
        ADDED: masked_plus_mask, TIMES_INF: masked_times_inf, NEGATED: masked_negated, ARITHMETIC: masked_bool_minus_bool,
    },
    "02.cross_attention": {
        "divided by d_k instead of √d_k": cross_by_d_k,
        "multiplied by √d_k instead of dividing by it": cross_times_sqrt,
        "scaled by √d_v (the values' width) instead of √d_k": cross_by_d_v,
        "scaled by √Lk (the number of keys) instead of √d_k": cross_by_Lk,
        "scaled by √Lq (the number of queries) instead of √d_k": cross_by_Lq,
        "scaled by √(q.shape[0]) instead of √d_k": cross_by_first_dim,
        "returned the scores as the weights, not their softmax": cross_returns_scores,
        "scaled the weights after the softmax, not the scores before it": cross_weights_scaled, "softmax over the first axis (axis=0), not the keys": cross_softmax_axis0, "added x to the output: the residual belongs to the block (task 6), not to the attention": cross_with_residual,
    },
    "02.padded_cross_attention": {
        "no 1/√d_k scaling": padded_no_scale, "divided by d_k instead of √d_k": padded_by_d_k,
        "multiplied by √d_k instead of dividing by it": padded_times_sqrt,
        "scaled by √d_v (the values' width) instead of √d_k": padded_by_d_v,
        "scaled by √Lk (the number of keys) instead of √d_k": padded_by_Lk,
        "scaled by √Lq (the number of queries) instead of √d_k": padded_by_Lq,
        "scaled by √(q.shape[0]) instead of √d_k": padded_by_first_dim,
        "mask applied after the softmax, then renormalised: a hidden key with a large score leaves the others 0":
            padded_renormalised,
        "scaled by √query_dim (the width of x) instead of √d_k": padded_by_query_dim,
        "scaled by √context_dim (the width of the context) instead of √d_k": padded_by_context_dim,
        "softmax over the wrong axis (the queries, not the keys)": padded_softmax_queries,
        "scaled the weights after the softmax, not the scores before it": padded_weights_scaled, "softmax over the first axis (axis=0), not the keys": padded_softmax_axis0, "added x to the output: the residual belongs to the block (task 6), not to the attention": padded_with_residual,
        "indexed the scores with a mask of another shape": padded_indexed,
        "the inverted mask added as a number: hidden keys gain 1 instead of −inf": padded_plus_inverted,
        ADDED: padded_plus_mask, TIMES_INF: padded_times_inf, NEGATED: padded_negated, ARITHMETIC: padded_bool_minus_bool,
    },
    "02.block": {
        "normalised the context as well as x": block_normalises_both,
        "layer norm over the tokens axis, not over each token's features": block_own_norm_over_tokens,
    },
    "03.gated_block": {"normalised the context instead of x": GatedNormalisesTheContextNotX,
                       "tanh applied to gate × update, not to the gate alone": GatedTanhOfTheProduct,
                       "the layer norm applied to the update, not to the attention's input": GatedNormalisesTheUpdate,
                       "tanh applied to the whole sum, x + gate · update": GatedTanhOfTheSum},
    "03.forward": {
        "divided by head_dim instead of √head_dim": forward_by_d_k,
        "multiplied by √head_dim instead of dividing by it": forward_times_sqrt,
        "scaled by √Lk (the number of keys) instead of √head_dim": forward_by_Lk,
        "scaled by √Lq (the number of queries) instead of √head_dim": forward_by_Lq,
        "scaled by √(q.shape[0]) instead of √head_dim": forward_by_first_dim,
        "scaled by √(query_dim / num_heads) instead of √head_dim": forward_head_dim_from_x,
        "softmax over the heads axis (dim=1), not the keys": forward_softmax_over_heads,
        "to_k and to_v swapped": forward_keys_from_to_v,
        "weights averaged over the heads": forward_mean_weights,
        "scaled by √context_dim (the width of the context) instead of √head_dim": forward_by_context_dim,
        "mask applied after the softmax": forward_after_softmax,
        "hidden scores set to 0 instead of −inf": forward_masked_with_zero,
        "scaled the weights after the softmax, not the scores before it": forward_weights_scaled, "softmax over the first axis (axis=0), not the keys": forward_softmax_dim0, "indexed the scores with a mask of another shape": forward_indexed,
        "heads split as (head_dim, num_heads): each head gets every num_heads-th feature": forward_heads_wrong_order,
        ".view() after a transpose": forward_view_after_transpose,
        "the inverted mask added as a number: hidden keys gain 1 instead of −inf": forward_plus_inverted,
        ADDED: forward_plus_mask, TIMES_INF: forward_times_inf, NEGATED: forward_negated, ARITHMETIC: forward_one_minus_mask,
    },
    "03.mha_mask": {
        "the inverted mask added as a number: hidden keys gain 1 instead of −inf": mha_inverted_float, "an integer key_padding_mask": mha_int_mask,
        ADDED: mha_float_mask, TIMES_INF: mha_times_inf, NEGATED: mha_negated, ARITHMETIC: mha_one_minus,
        "context_mask passed as attn_mask": mha_as_attn_mask,
    },
}

# Other ways to write a slip above (or a catalogued one), which must get the same name.
def project_returns_q_v_k(x, context, W_Q, W_K, W_V):
    q, k, v = x @ W_Q, context @ W_K, context @ W_V
    return q, v, k


VARIANTS_ATTENTION = [
    ("01.attention", "with batch dims, k.T or np.dot mixes the batch axes in", attention_with_np_dot),
    ("03.forward", "heads split without a transpose", forward_split_and_merge_without_transpose),
    ("02.project", "keys and values swapped (W_K and W_V, or the order returned)", project_returns_q_v_k),
    ("01.softmax", "subtracted the minimum (or the mean), not the maximum", softmax_minus_mean),
    ("01.masked_attention", "hidden scores set to 0 instead of −inf", masked_scores_times_mask),
    ("01.masked_attention", ADDED, masked_plus_mask_minus_one),

    ("03.mha_mask", ADDED, mha_mask_minus_one),
]


# --- right answers written unusually: they must pass ----------------------------------------------

def softmax_by_logsumexp(z, axis=-1):
    top = np.max(z, axis=axis, keepdims=True)
    log_total = top + np.log(np.sum(np.exp(z - top), axis=axis, keepdims=True))
    return np.exp(z - log_total)


def softmax_moving_the_axis(z, axis=-1):
    moved = np.moveaxis(z, axis, -1)
    e = np.exp(moved - moved.max(-1)[..., None])
    return np.moveaxis(e / e.sum(-1)[..., None], -1, axis)


def attention_by_einsum(q, k, v):
    s = np.einsum("...id,...jd->...ij", q, k) / np.sqrt(q.shape[-1])
    w = softmax_by_logsumexp(s)
    return np.einsum("...ij,...jd->...id", w, v), w


def masked_with_large_negative_and_zeroed_rows(q, k, v, mask):
    s = np.where(mask, q @ np.swapaxes(k, -1, -2) / math.sqrt(q.shape[-1]), -1e30)
    w = _softmax(s) * mask  # hidden keys get exactly 0 ...
    total = w.sum(-1, keepdims=True)
    w = np.divide(w, total, out=np.zeros_like(w), where=total > 0)  # ... and a blind row stays all 0
    return w @ v, w


def cross_attention_v_times_W_O_first(x, c, W_Q, W_K, W_V, W_O):
    s = (x @ W_Q) @ np.swapaxes(c @ W_K, -1, -2) / np.sqrt(W_K.shape[-1])
    w = softmax_by_logsumexp(s)
    return w @ (c @ W_V @ W_O), w


def padded_with_minus_1e9(x, c, W_Q, W_K, W_V, W_O, context_mask):
    s = (x @ W_Q) @ np.swapaxes(c @ W_K, -1, -2) / np.sqrt(W_Q.shape[1])
    s = s + np.where(context_mask, 0.0, -1e9)[:, None, :]
    w = _softmax(s)
    return w @ c @ W_V @ W_O, w


def forward_with_einsum_and_F_softmax(x, context, to_q, to_k, to_v, to_out, num_heads, context_mask=None):
    q, k, v = (t.unflatten(-1, (num_heads, -1)) for t in (to_q(x), to_k(context), to_v(context)))  # (B, L, H, hd)
    s = torch.einsum("bqhd,bkhd->bhqk", q, k) * q.shape[-1] ** -0.5
    if context_mask is not None:
        s = torch.where(context_mask[:, None, None, :], s, torch.finfo(s.dtype).min)
    w = torch.nn.functional.softmax(s, dim=-1)
    return to_out(torch.einsum("bhqk,bkhd->bqhd", w, v).flatten(-2)), w


def mha_with_in_proj_weight(x, context, layer, context_mask):
    mha = nn.MultiheadAttention(layer.query_dim, layer.num_heads, kdim=layer.context_dim, vdim=layer.context_dim,
                                batch_first=True).to(x.dtype)
    with torch.no_grad():
        for mine, theirs in ((mha.q_proj_weight, layer.to_q), (mha.k_proj_weight, layer.to_k),
                             (mha.v_proj_weight, layer.to_v)):
            mine.copy_(theirs.weight)
        mha.in_proj_bias.copy_(torch.cat([layer.to_q.bias, layer.to_k.bias, layer.to_v.bias]))
        mha.out_proj.load_state_dict(layer.to_out.state_dict())
    return mha(x, context, context, key_padding_mask=context_mask.logical_not(), need_weights=True,
               average_attn_weights=False)


RIGHT_ANSWERS_ATTENTION = [
    ("01.softmax", softmax_by_logsumexp),
    ("01.softmax", softmax_moving_the_axis),
    ("01.attention", attention_by_einsum),
    ("01.masked_attention", masked_with_large_negative_and_zeroed_rows),
    ("02.cross_attention", cross_attention_v_times_W_O_first),
    ("02.padded_cross_attention", padded_with_minus_1e9),
    ("03.forward", forward_with_einsum_and_F_softmax),
    ("03.mha_mask", mha_with_in_proj_weight),
]


def masked_naive_softmax(q, k, v, mask):
    s = np.where(mask, q @ np.swapaxes(k, -1, -2) / np.sqrt(q.shape[-1]), -np.inf)
    w = np.exp(s) / np.exp(s).sum(-1, keepdims=True)
    w = np.where(np.isnan(w), 0.0, w)  # the row that may see nothing ... and, unseen, the underflowing ones
    return w @ v, w


LEARNER_MISTAKES_ATTENTION["01.masked_attention"]["softmax without max subtraction"] = masked_naive_softmax
