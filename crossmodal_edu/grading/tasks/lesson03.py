r"""Exercises 03 · Cross-attention in PyTorch: the module's forward pass from its four ``nn.Linear``
layers -> (predict) how many parameters it has -> a mask that crosses over to
``nn.MultiheadAttention`` correctly -> Flamingo's gated residual block, an ``nn.Module`` whose gate
starts closed.

Inputs are float64 tensors (and float64 ``nn.Linear`` layers), so that answers are compared with
the package to float64 rounding. Building a case never touches the learner's torch random state.

Solutions: solutions/03_cross_attention_in_pytorch.ipynb. References: crossmodal_edu/torch_attention.py
(``MultiHeadCrossAttention``, and ``CrossAttentionBlock(gated=True)`` for the gated block).
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
from torch import nn

from crossmodal_edu import numpy_attention as np_reference
from crossmodal_edu.compare import to_numpy
from crossmodal_edu.grading.spec import Case, FunctionTask, Mistake, PredictionTask, Property
from crossmodal_edu.grading.tasks.attention_slips import TORCH_WORDS, attention_mistakes, torch_attention
from crossmodal_edu.grading.tasks.lesson01 import distinct
from crossmodal_edu.grading.tasks.properties import (
    a_number,
    finite,
    first,
    first_value,
    has_shapes,
    sums_to_one,
)
from crossmodal_edu.torch_attention import CrossAttentionBlock, MultiHeadCrossAttention


def tensor(array: np.ndarray) -> torch.Tensor:
    """A float64 (or bool) tensor holding ``array``."""
    return torch.from_numpy(np.ascontiguousarray(array))


def _linear(rng: np.random.Generator, n_in: int, n_out: int) -> nn.Linear:
    """A float64 ``nn.Linear`` with weights drawn from ``rng`` (scaled so that scores stay near 1)."""
    layer = nn.utils.skip_init(nn.Linear, n_in, n_out, dtype=torch.float64)  # no init: no torch RNG used
    with torch.no_grad():
        layer.weight.copy_(tensor(rng.normal(size=(n_out, n_in)) / np.sqrt(n_in)))  # (out, in)
        layer.bias.copy_(tensor(0.5 * rng.normal(size=n_out)))
    return layer


def _padding(rng: np.random.Generator, B: int, Lk: int, full_first: bool = False) -> torch.Tensor:
    """``(B, Lk)`` bool, True = real word. Every caption has a real word and (unless ``full_first``,
    for caption 0) a pad, so that an inverted mask still leaves each query something to see."""
    lengths = rng.integers(1, Lk, size=B)
    if full_first:
        lengths[0] = Lk
    return tensor(np_reference.padding_mask(lengths, Lk))


def _split_view_only(t, num_heads):
    B, L, D = t.shape
    return t.view(B, num_heads, L, D // num_heads)


def _merge_reshape_only(t):
    B, H, L, hd = t.shape
    return t.reshape(B, L, H * hd)


# ---------------------------------------------------------------------------------------------
# 03.forward
# ---------------------------------------------------------------------------------------------


def _forward_case(rng, B, Lq, Lk, query_dim, context_dim, H, hd, masked, note="", full_first=False):
    inner = H * hd
    return Case({"x": tensor(rng.normal(size=(B, Lq, query_dim))),
                 "context": tensor(rng.normal(size=(B, Lk, context_dim))),
                 "to_q": _linear(rng, query_dim, inner), "to_k": _linear(rng, context_dim, inner),
                 "to_v": _linear(rng, context_dim, inner), "to_out": _linear(rng, inner, query_dim),
                 "num_heads": H, "context_mask": _padding(rng, B, Lk, full_first) if masked else None},
                note=f"num_heads = {H}, head_dim = {hd}" + (f"; {note}" if note else ""))


def _forward_cases(rng: np.random.Generator) -> list[Case]:
    def sizes():
        H = int(rng.choice([2, 3]))
        hd = int(rng.choice([d for d in (2, 3, 5) if d != H]))
        widths = [w for w in range(3, 11) if w not in (H * hd, hd)]
        query_dim, context_dim = (int(w) for w in rng.choice(widths, size=2, replace=False))
        Lq, Lk = distinct(rng, 2, 3, 7)  # at least 3 words: a padded caption still has a choice to make
        return Lq, Lk, query_dim, context_dim, H, hd

    Lq, Lk, query_dim, context_dim, H, hd = sizes()
    Lq2, Lk2, query_dim2, context_dim2, H2, hd2 = sizes()
    Lq3, Lk3, width, _, H3, hd3 = sizes()
    return [
        _forward_case(rng, int(rng.integers(2, 4)), Lq, Lk, query_dim, context_dim, H, hd, True,
                      "padded captions", full_first=True),
        _forward_case(rng, int(rng.integers(2, 4)), Lq2, Lk2, query_dim2, context_dim2, H2, hd2, False,
                      "no mask"),
        # query_dim = context_dim only here: the one case on which keys from x run, so it can be named.
        _forward_case(rng, 2, Lq3, Lk3, width, width, H3, hd3, False, "query_dim = context_dim, no mask"),
        _in_float32(_forward_case(rng, int(rng.integers(2, 4)), Lq, Lk, query_dim, context_dim, H, hd, True,
                                  "in float32, padded captions")),
    ]


def _in_float32(case: Case) -> Case:
    """``case`` with its tensors and layers in float32, compared with float32's tolerances (the
    hidden test runs the module in float32: an answer that only works in float64 fails here first)."""
    def single(value):
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            return value.float()
        if isinstance(value, nn.Module):
            return copy.deepcopy(value).float()
        return value

    return Case({name: single(value) for name, value in case.inputs.items()}, case.options, case.note,
                rtol=1e-4, atol=1e-5)


def _module_holding(to_q, to_k, to_v, to_out, num_heads) -> MultiHeadCrossAttention:
    """The package's module, holding these four layers."""
    with torch.random.fork_rng(devices=[]):  # its own init would draw from the learner's torch RNG
        layer = MultiHeadCrossAttention(to_q.in_features, to_k.in_features, num_heads,
                                        head_dim=to_q.out_features // num_heads).double()
    layer.to_q, layer.to_k, layer.to_v, layer.to_out = to_q, to_k, to_v, to_out
    return layer


def _forward_reference(x, context, to_q, to_k, to_v, to_out, num_heads, context_mask=None):
    layer = _module_holding(to_q, to_k, to_v, to_out, num_heads)
    with torch.no_grad():
        return layer(x, context, context_mask, need_weights=True)


def _split(t, H):
    B, L, _ = t.shape
    return t.view(B, L, H, -1).transpose(1, 2)  # (B, H, L, hd)


def _merge(t):
    B, H, L, hd = t.shape
    return t.transpose(1, 2).reshape(B, L, H * hd)  # (B, L, H * hd)


def _forward(x, context, to_q, to_k, to_v, to_out, H, context_mask, scale=None, dim=-1, keep=None,
             source=None, split=_split, merge=_merge, project_out=True):
    """The forward pass with one thing changed: ``scale(hd, x, inner)``, the softmax's ``dim``,
    which keys to ``keep`` (from the mask), where keys and values come ``source``-d from, how heads
    are split and merged, and whether ``to_out`` is applied."""
    source = context if source is None else source
    q, k, v = split(to_q(x), H), split(to_k(source), H), split(to_v(source), H)  # (B, H, L, hd)
    hd, inner = q.shape[-1], to_q.out_features
    factor = 1 / math.sqrt(hd) if scale is None else scale(hd, x, inner)
    scores = q @ k.transpose(-2, -1) * factor  # (B, H, Lq, Lk)
    if context_mask is not None:
        allowed = context_mask if keep is None else keep(context_mask)
        if allowed is not None:
            scores = scores.masked_fill(~allowed[:, None, None, :], float("-inf"))
    weights = scores.softmax(dim=dim)  # (B, H, Lq, Lk)
    heads = merge(weights @ v)  # (B, Lq, H * hd)
    return (to_out(heads) if project_out else heads), weights


def _fw_slip(slip):
    """``cross_attention_forward`` with the shared slip ``slip`` planted
    (crossmodal_edu/grading/tasks/attention_slips.py)."""

    def forward(x, context, to_q, to_k, to_v, to_out, num_heads, context_mask=None):
        q, k, v = _split(to_q(x), num_heads), _split(to_k(context), num_heads), _split(to_v(context), num_heads)
        mask = None if context_mask is None else context_mask[:, None, None, :]  # (B, 1, 1, Lk)
        heads, weights = torch_attention(q, k, v, mask, slip=slip, query_dim=x.shape[-1],
                                         context_dim=context.shape[-1], inner=to_q.out_features, num_heads=num_heads)
        return to_out(_merge(heads)), weights

    return forward


def _fw_no_to_out(x, context, to_q, to_k, to_v, to_out, num_heads, context_mask=None):
    return _forward(x, context, to_q, to_k, to_v, to_out, num_heads, context_mask, project_out=False)


def _fw_kv_from_x(x, context, to_q, to_k, to_v, to_out, num_heads, context_mask=None):
    return _forward(x, context, to_q, to_k, to_v, to_out, num_heads, context_mask, source=x)


def _fw_split_view_only(x, context, to_q, to_k, to_v, to_out, num_heads, context_mask=None):
    return _forward(x, context, to_q, to_k, to_v, to_out, num_heads, context_mask,
                    split=lambda t, H: _split_view_only(t, H))


def _split_order_swapped(t, H):
    B, L, D = t.shape
    return t.view(B, L, D // H, H).permute(0, 3, 1, 2)  # (B, H, L, hd), the features taken in the wrong order


def _fw_weights_averaged(x, context, to_q, to_k, to_v, to_out, num_heads, context_mask=None):
    out, weights = _forward(x, context, to_q, to_k, to_v, to_out, num_heads, context_mask)
    return out, weights.mean(dim=1)


def _fw_kv_swapped(x, context, to_q, to_k, to_v, to_out, num_heads, context_mask=None):
    return _forward(x, context, to_q, to_v, to_k, to_out, num_heads, context_mask)


def _fw_split_and_merge_view_only(x, context, to_q, to_k, to_v, to_out, num_heads, context_mask=None):
    return _forward(x, context, to_q, to_k, to_v, to_out, num_heads, context_mask,
                    split=lambda t, H: _split_view_only(t, H), merge=_merge_reshape_only)


def _fw_split_order_swapped(x, context, to_q, to_k, to_v, to_out, num_heads, context_mask=None):
    return _forward(x, context, to_q, to_k, to_v, to_out, num_heads, context_mask, split=_split_order_swapped)


def _fw_merge_reshape_only(x, context, to_q, to_k, to_v, to_out, num_heads, context_mask=None):
    return _forward(x, context, to_q, to_k, to_v, to_out, num_heads, context_mask, merge=_merge_reshape_only)


def _forward_shapes(case: Case):
    x, context, H = case.inputs["x"], case.inputs["context"], case.inputs["num_heads"]
    return tuple(x.shape), (x.shape[0], H, x.shape[1], context.shape[1])


def _padded_words_zero(fn, case, outputs):
    mask = case.inputs["context_mask"]
    if mask is None:
        return None
    weights = outputs[1]
    pad = np.broadcast_to(~to_numpy(mask)[:, None, None, :], weights.shape)
    bad = pad & (np.abs(weights) > 1e-12)
    if bad.any():
        return f"a padded word gets weight {first_value(weights, bad):.3g} at index {first(bad)}"
    return None


FORWARD = FunctionTask(
    id="03.forward",
    title="The module's forward pass",
    points=3,
    name="cross_attention_forward",
    signature="cross_attention_forward(x, context, to_q, to_k, to_v, to_out, num_heads, context_mask=None) "
              "-> (out, weights)",
    cases=_forward_cases,
    reference=_forward_reference,
    outputs=("out", "weights"),
    properties=(
        has_shapes(_forward_shapes, "out (B, Lq, query_dim), weights (B, num_heads, Lq, Lk)"),
        finite(1, "weights"),
        sums_to_one(1, lambda case: -1, "each query's weights must sum to 1 over the keys (the last axis)",
                    "the weights of query"),
        Property("padded words must get zero weight", _padded_words_zero),
    ),
    mistakes=(
        *attention_mistakes(
            "03.forward", _fw_slip, has={"scale", "softmax", "mask", "project", "heads"},
            words={**TORCH_WORDS, "d_k": "head_dim", "d_k_is": "q.shape[-1] = to_q.out_features // num_heads"},
            not_here={"by_d_v": "every head's values are head_dim wide, like its keys"}),
        Mistake("forgot to_out: the output is left num_heads * head_dim wide",
                "after merging the heads, project back to the query stream's width: to_out(heads).",
                _fw_no_to_out),
        Mistake("keys and values projected from x (self-attention), not from the context",
                "only the queries come from x: k = to_k(context), v = to_v(context).", _fw_kv_from_x),
        Mistake("heads split without a transpose",
                "view as (B, L, num_heads, head_dim), then .transpose(1, 2), as lesson 02's split_heads does.",
                _fw_split_view_only, also=(_fw_split_and_merge_view_only,)),
        Mistake("to_k and to_v swapped",
                "keys are what the queries are compared with: k = to_k(context); values are what is averaged: "
                "v = to_v(context).", _fw_kv_swapped),
        Mistake("weights averaged over the heads",
                "return every head's weights, (B, num_heads, Lq, Lk): the heads attend differently, and an "
                "average hides that.", _fw_weights_averaged),
        Mistake("heads merged in the wrong order: reshaped without moving the head axis back",
                "(B, num_heads, Lq, head_dim) needs .transpose(1, 2) before the reshape, as lesson 02's "
                "merge_heads does.", _fw_merge_reshape_only),
        Mistake("heads split as (head_dim, num_heads): each head gets every num_heads-th feature",
                "a head's features are side by side: view as (B, L, num_heads, head_dim), then move the heads "
                "forward with .transpose(1, 2).", _fw_split_order_swapped),
        Mistake(".view() after a transpose",
                "a transposed tensor is not contiguous in memory, so .view() cannot regroup it: use .reshape(), "
                "or .contiguous().view().", raises=r"view size is not compatible with input tensor's size and stride"),
    ),
)

# ---------------------------------------------------------------------------------------------
# 03.parameters (predict, then run)
# ---------------------------------------------------------------------------------------------


def _same_count(a, b) -> bool:
    return float(a) == float(b)


PARAMETERS = PredictionTask(
    id="03.parameters",
    title="Predict: how many parameters?",
    points=1,
    name="predicted_parameters",
    expects="a whole number",
    read=a_number,
    answer=3944,
    accept=lambda value: _same_count(value, 3944),
    explanation="inner = num_heads * head_dim = 24. to_q: 32·24 + 24 = 792; to_k and to_v: 48·24 + 24 = "
                "1176 each; to_out: 24·32 + 32 = 800. Total 3944, whatever the split into heads.",
    mistakes=(
        Mistake("forgot the biases",
                "every nn.Linear has a bias by default, one number per output feature: 24 + 24 + 24 + 32 more.",
                value=3840),
        Mistake("the projections are num_heads * head_dim = 24 wide, not query_dim = 32",
                "to_q, to_k and to_v map to the inner width num_heads * head_dim; only to_out returns to query_dim.",
                value=5248),
        Mistake("that is one head's projections",
                "the four heads share each nn.Linear: one layer 4 · 6 = 24 features wide, not 6.", value=1010),
        Mistake("heads do not multiply the parameters",
                "4 heads of width 6 are one 24-wide projection cut into pieces, not four full projections.",
                value=15776),
        Mistake("to_k and to_v read the context, whose width is context_dim = 48",
                "keys and values are projected from the context: nn.Linear(48, 24), not nn.Linear(32, 24).",
                value=3176),
        Mistake("forgot to_out's bias", "to_out is an nn.Linear too: 24·32 weights and 32 biases.", value=3912),
        Mistake("forgot to_k or to_v: both read the context",
                "a layer has four projections: to_q (from x), to_k and to_v (both from the context), to_out.",
                value=2768),
        Mistake("forgot to_out", "the heads are projected back to query_dim by to_out: 24·32 + 32 more.",
                value=3144),
    ),
    same=_same_count,
)

# ---------------------------------------------------------------------------------------------
# 03.mha_mask (fix the bug)
# ---------------------------------------------------------------------------------------------


def _mha_case(rng, B, Lq, Lk, H, hd, context_dim, full_first, note):
    query_dim = H * hd  # nn.MultiheadAttention's embed_dim: its heads are embed_dim // num_heads wide
    with torch.random.fork_rng(devices=[]):
        layer = MultiHeadCrossAttention(query_dim, context_dim, H, head_dim=hd).double()
    with torch.no_grad():
        for name, n_in in (("to_q", query_dim), ("to_k", context_dim), ("to_v", context_dim), ("to_out", query_dim)):
            getattr(layer, name).load_state_dict(_linear(rng, n_in, query_dim).state_dict())
    return Case({"x": tensor(rng.normal(size=(B, Lq, query_dim))),
                 "context": tensor(rng.normal(size=(B, Lk, context_dim))), "layer": layer,
                 "context_mask": _padding(rng, B, Lk, full_first)},
                note=f"num_heads = {H}, query_dim = {query_dim}, context_dim = {context_dim}; {note}")


def _mha_cases(rng: np.random.Generator) -> list[Case]:
    cases = []
    for full_first, note in ((True, "caption 0 has no padding"), (False, "every caption padded")):
        H, hd = int(rng.choice([2, 3])), int(rng.choice([2, 3, 4]))
        context_dim = int(rng.choice([w for w in range(3, 10) if w != H * hd]))
        Lq, Lk = distinct(rng, 2, 2, 7)
        cases.append(_mha_case(rng, int(rng.integers(2, 4)), Lq, Lk, H, hd, context_dim, full_first, note))
    return cases


def _mha_reference(x, context, layer, context_mask):
    with torch.no_grad():
        return layer(x, context, context_mask, need_weights=True)


def _mha(x, context, layer, key_padding_mask, *, transpose_q=False, biases=True, swap_kv=False,
         average=False):
    """``layer`` rebuilt as ``nn.MultiheadAttention``, called with ``key_padding_mask`` as given;
    the keywords plant one mistake in copying the weights or in calling it. (Leaving out_proj's
    weight uncopied is no catalogued mistake: its random init cannot be reproduced here.)"""
    with torch.random.fork_rng(devices=[]):
        mha = nn.MultiheadAttention(layer.query_dim, layer.num_heads, kdim=layer.context_dim,
                                    vdim=layer.context_dim, batch_first=True, dtype=x.dtype)
    with torch.no_grad():
        mha.q_proj_weight.copy_(layer.to_q.weight.T if transpose_q else layer.to_q.weight)
        to_k, to_v = (layer.to_v, layer.to_k) if swap_kv else (layer.to_k, layer.to_v)
        mha.k_proj_weight.copy_(to_k.weight)
        mha.v_proj_weight.copy_(to_v.weight)
        mha.out_proj.weight.copy_(layer.to_out.weight)
        if biases:  # nn.MultiheadAttention starts with zero biases
            mha.in_proj_bias.copy_(torch.cat([layer.to_q.bias, to_k.bias, to_v.bias]))
            mha.out_proj.bias.copy_(layer.to_out.bias)
        return mha(x, context, context, key_padding_mask=key_padding_mask, average_attn_weights=average)


def _mha_slip(slip):
    """``attend_with_mha`` with the shared slip ``slip`` made in nn.MultiheadAttention's terms: its
    key_padding_mask left out, or given as numbers (a float mask is added to the scores)."""

    if "/" in slip:  # nn.MultiheadAttention's own softmax: no second way to treat an empty row
        return None

    def attend(x, context, layer, context_mask):
        keep = context_mask.to(x.dtype)
        padding = {"mask_ignored": None, "mask_added": keep, "mask_times_inf": (1 - keep) * float("-inf"),
                   "mask_inverted_added": 1 - keep}[slip]
        return _mha(x, context, layer, padding)

    return attend


def _mha_not_inverted(x, context, layer, context_mask):
    return _mha(x, context, layer, context_mask)


def _mha_no_biases(x, context, layer, context_mask):
    return _mha(x, context, layer, ~context_mask, biases=False)


def _mha_q_transposed(x, context, layer, context_mask):
    return _mha(x, context, layer, ~context_mask, transpose_q=True)


def _mha_kv_swapped(x, context, layer, context_mask):
    return _mha(x, context, layer, ~context_mask, swap_kv=True)


def _mha_averaged(x, context, layer, context_mask):
    return _mha(x, context, layer, ~context_mask, average=True)


def _mha_shapes(case: Case):
    x, context, layer = case.inputs["x"], case.inputs["context"], case.inputs["layer"]
    return tuple(x.shape), (x.shape[0], layer.num_heads, x.shape[1], context.shape[1])


MHA_MASK = FunctionTask(
    id="03.mha_mask",
    title="Fix the key_padding_mask",
    points=3,
    name="attend_with_mha",
    signature="attend_with_mha(x, context, layer, context_mask) -> (out, weights)",
    cases=_mha_cases,
    reference=_mha_reference,
    outputs=("out", "weights"),
    properties=(
        has_shapes(_mha_shapes, "out (B, Lq, query_dim), weights (B, num_heads, Lq, Lk)"),
        Property("padded words must get zero weight", _padded_words_zero),
        finite(0, "out"),
    ),
    mistakes=(
        Mistake("key_padding_mask not inverted (it means True = ignore)",
                "nn.MultiheadAttention's key_padding_mask is True where a word must be IGNORED, the opposite "
                "of context_mask: pass key_padding_mask=~context_mask.", _mha_not_inverted),
        *attention_mistakes(
            "03.mha_mask", _mha_slip, has={"mask"}, words=TORCH_WORDS,
            not_here={"mask_inverted": "nn.MultiheadAttention's own convention is True = ignore: passing "
                                       "context_mask as it is, this task's planted bug, is named in its terms",
                      "mask_zero": "nn.MultiheadAttention takes no scores to fill",
                      "mask_after_softmax": "nn.MultiheadAttention applies its mask itself, before its softmax"},
            hints={"mask_ignored": "padded words must be hidden: pass key_padding_mask=~context_mask.",
                   "mask_added": "a float key_padding_mask is ADDED to the scores: context_mask.float() adds 1 "
                                 "to the real words and 0 to the padding, which keeps its weight. Pass the "
                                 "boolean ~context_mask, which hides the padding.",
                   "mask_times_inf": "(~context_mask) * float('-inf') is NaN wherever the mask is True (0 times "
                                     "infinity); pass the boolean key_padding_mask=~context_mask.",
                   "mask_inverted_added": "a float key_padding_mask is ADDED to the scores: (~context_mask).float() "
                                          "raises the padding by 1 instead of hiding it. Pass the boolean "
                                          "~context_mask: True (ignore) hides a word."}),
        Mistake("an integer key_padding_mask",
                "nn.MultiheadAttention takes a bool key_padding_mask (True = ignore) or a float one (added to the "
                "scores): pass ~context_mask.", raises=r"only bool and floating types of key_padding_mask"),
        Mistake("context_mask passed as attn_mask",
                "attn_mask is a mask per (query, key) pair, (Lq, Lk) or (B * num_heads, Lq, Lk), True = "
                "hidden; a mask per caption word goes into key_padding_mask=~context_mask.",
                raises=r"attn_mask"),
        Mistake("biases not copied",
                "nn.MultiheadAttention starts with zero biases: copy in_proj_bias (q, k, v concatenated) "
                "and out_proj.bias from the layer.", _mha_no_biases),
        Mistake("to_q.weight copied transposed",
                "nn.Linear and nn.MultiheadAttention both store (out_features, in_features): copy "
                "layer.to_q.weight as it is, no .T.", _mha_q_transposed),
        Mistake("to_k and to_v swapped",
                "keys are compared with the queries, values are averaged: k_proj_weight gets to_k.weight, "
                "v_proj_weight gets to_v.weight, and their biases follow the same order (q, k, v).",
                _mha_kv_swapped),
        Mistake("weights averaged over the heads (average_attn_weights=True)",
                "by default nn.MultiheadAttention returns the mean of the heads' weights, (B, Lq, Lk); pass "
                "average_attn_weights=False for one matrix per head.", _mha_averaged),
    ),
    planted="key_padding_mask not inverted (it means True = ignore)",
)

# ---------------------------------------------------------------------------------------------
# 03.gated_block (write an nn.Module)
# ---------------------------------------------------------------------------------------------


def _layer_norm(rng: np.random.Generator, width: int) -> nn.LayerNorm:
    """A float64 ``nn.LayerNorm`` with weights and biases away from 1 and 0, so that normalising
    with its affine part, without it, or the wrong tensor all give different numbers."""
    norm = nn.LayerNorm(width, dtype=torch.float64)
    with torch.no_grad():
        norm.weight.copy_(tensor(1.0 + 0.4 * rng.normal(size=width)))
        norm.bias.copy_(tensor(0.3 * rng.normal(size=width)))
    return norm


def _gated_case(rng, B, Lq, Lk, query_dim, context_dim, H, masked, note):
    with torch.random.fork_rng(devices=[]):
        attention = MultiHeadCrossAttention(query_dim, context_dim, H).double()
    with torch.no_grad():
        inner = attention.to_q.out_features
        for name, n_in, n_out in (("to_q", query_dim, inner), ("to_k", context_dim, inner),
                                  ("to_v", context_dim, inner), ("to_out", inner, query_dim)):
            getattr(attention, name).load_state_dict(_linear(rng, n_in, n_out).state_dict())
    # A gate the training would have opened, away from 0 (where tanh, sigmoid - 1/2 and the raw
    # value part) and from saturation, positive or negative.
    gate = float(rng.choice([-1, 1]) * rng.uniform(0.4, 1.2))
    weights = {"norm": _layer_norm(rng, query_dim).state_dict(), "attention": attention.state_dict(),
               "gate": torch.tensor(gate, dtype=torch.float64)}
    # Shifted, scaled streams, so that a layer norm in the wrong place shows.
    return Case({"x": tensor(2.0 + 1.5 * rng.normal(size=(B, Lq, query_dim))),
                 "context": tensor(-1.0 + 2.0 * rng.normal(size=(B, Lk, context_dim))),
                 "context_mask": _padding(rng, B, Lk) if masked else None,
                 "num_heads": H, "trained weights": weights},
                note=f"query_dim = {query_dim}, context_dim = {context_dim}, num_heads = {H}, "
                     f"trained gate = {gate:.2f}; {note}")


def _gated_cases(rng: np.random.Generator) -> list[Case]:
    def sizes():
        H = int(rng.choice([1, 2]))
        query_dim, context_dim = (int(H * w) for w in rng.choice(np.arange(2, 6), size=2, replace=False))
        Lq, Lk = distinct(rng, 2, 2, 7)
        return Lq, Lk, query_dim, context_dim, H

    Lq, Lk, query_dim, context_dim, H = sizes()
    Lq2, Lk2, query_dim2, context_dim2, H2 = sizes()
    return [
        _gated_case(rng, int(rng.integers(2, 4)), Lq, Lk, query_dim, context_dim, H, True, "padded captions"),
        # query_dim = context_dim only here: the one case on which x's norm applied to the context runs.
        _gated_case(rng, 2, Lq2, Lk2, query_dim2, query_dim2, H2, False, "query_dim = context_dim, no mask"),
    ]


def _gated_harness(cls):
    """Build the learner's block (it must start as the identity), then give it the case's trained
    weights and gate, and run it. Returns ``(y, starts closed, gate trains)``: the output with the trained
    weights; 1.0 if the freshly built block returned ``x`` exactly, else 0.0; 1.0 if its gate is an
    ``nn.Parameter`` that gets a gradient while closed, else 0.0. All three are measured here, where the
    learner's block lives (in the class grader, their kernel): only numbers leave."""

    def run(x, context, context_mask, num_heads, weights):
        with torch.random.fork_rng(devices=[]):  # its init must not draw from the learner's torch RNG
            torch.manual_seed(0)
            block = cls(x.shape[-1], context.shape[-1], num_heads)
        missing = [name for name in ("norm", "attention", "gate") if not hasattr(block, name)]
        if missing:
            raise AttributeError(f"the block needs the attributes norm, attention and gate; it has no "
                                 f"{', '.join(missing)}")
        block = block.double()
        with torch.no_grad():
            fresh = block(x, context, context_mask)
            starts_closed = torch.tensor(float(isinstance(fresh, torch.Tensor) and torch.equal(fresh, x)))
        if isinstance(block.gate, torch.Tensor) and block.gate.numel() != 1:
            raise ValueError(f"the gate must be one number, shape (), but it has shape {tuple(block.gate.shape)}: "
                             f"one gate opens the whole update, as in Flamingo")
        gate_trains = torch.tensor(0.0)
        if isinstance(block.gate, nn.Parameter) and block.gate.requires_grad:
            with torch.enable_grad():
                probe = block(x, context, context_mask)
                if isinstance(probe, torch.Tensor) and probe.requires_grad:
                    (grad,) = torch.autograd.grad(probe.square().sum(), [block.gate], allow_unused=True)
                    gate_trains = torch.tensor(float(grad is not None and bool(grad.abs().sum() > 0)))
        with torch.no_grad():
            for name in ("norm", "attention"):
                try:
                    getattr(block, name).load_state_dict(weights[name])
                except RuntimeError as error:  # its shapes are not the reference's: say which, in one line
                    lines = [line.strip() for line in str(error).splitlines() if "size mismatch" in line or "key" in line]
                    raise ValueError(f"your block's {name} is not built like the reference's "
                                     f"({lines[0] if lines else str(error).splitlines()[0]}): build "
                                     f"nn.LayerNorm(query_dim) and MultiHeadCrossAttention(query_dim, context_dim, "
                                     f"num_heads) with their default arguments") from None
            if isinstance(block.gate, torch.Tensor):
                block.gate.copy_(weights["gate"].expand_as(block.gate))
            else:
                block.gate = float(weights["gate"])
            return block(x, context, context_mask), starts_closed, gate_trains

    return run


class _GatedReference(nn.Module):
    """The package's gated block, ``CrossAttentionBlock(gated=True)``, with its MLP's gate kept at 0:
    then it is exactly ``x + tanh(gate) * attention(norm(x), context)``."""

    def __init__(self, query_dim, context_dim, num_heads):
        super().__init__()
        self.block = CrossAttentionBlock(query_dim, context_dim, num_heads, gated=True)
        self.norm, self.attention, self.gate = self.block.norm1, self.block.attention, self.block.attn_gate

    def forward(self, x, context, context_mask=None):
        return self.block(x, context, context_mask)


def _gated_reference(*args):
    """The reference answer. Called as the learner's class is, ``(query_dim, context_dim, num_heads)``,
    it builds the package's block; called with a case's inputs (as the catalogue's generic tests call
    every reference), it returns what the harness returns for that block."""
    if len(args) == 3 and all(isinstance(a, int) for a in args):
        return _GatedReference(*args)
    return _gated_harness(_GatedReference)(*args)


def _gated_mistake(gate_init=0.0, squash=torch.tanh, norm_context=False, norm_x=True, norm_out=False,
                   residual="x", gate_all=False, pass_mask=True, squash_product=False, norm_update=False,
                   squash_sum=False):
    """A learner's block with one thing wrong: the gate's initial value, the function that
    squashes it, which tensors are normalised, what the update is added to, whether the gate
    also scales the residual, and whether the mask reaches the attention."""

    class Block(nn.Module):
        def __init__(self, query_dim, context_dim, num_heads):
            super().__init__()
            self.norm = nn.LayerNorm(query_dim)
            self.attention = MultiHeadCrossAttention(query_dim, context_dim, num_heads)
            self.gate = nn.Parameter(torch.tensor(float(gate_init)))

        def forward(self, x, context, context_mask=None):
            h = self.norm(x) if norm_x else x
            source = self.norm(context) if norm_context else context
            update = self.attention(h, source, context_mask if pass_mask else None)
            if norm_update:
                update = self.norm(update)
            if squash_product:
                return x + torch.tanh(self.gate * update)
            if squash_sum:
                return torch.tanh(x + self.gate * update)
            gate = 1.0 if squash is None else squash(self.gate)
            base = {"x": x, "normed": self.norm(x), "none": torch.zeros_like(x)}[residual]
            y = gate * (base + update) if gate_all else base + gate * update
            return self.norm(y) if norm_out else y

    return Block


def _gate_raw(g):
    return g


def _gated_shapes(case: Case):
    return (tuple(case.inputs["x"].shape), (), ())


def _starts_closed(fn, case, outputs):
    if outputs[1] != 1.0:
        return "a block just built (gate at its initial value) does not return x exactly"
    return None


def _gate_trains(fn, case, outputs):
    if outputs[2] != 1.0:
        return ("the gate of a block just built is not an nn.Parameter that gets a gradient: "
                "self.gate = nn.Parameter(torch.zeros(())), used as torch.tanh(self.gate) in forward")
    return None


GATED_BLOCK = FunctionTask(
    id="03.gated_block",
    title="The gated block (Flamingo)",
    points=3,
    name="GatedCrossAttention",
    signature="GatedCrossAttention(query_dim, context_dim, num_heads): an nn.Module with .norm, .attention "
              "and .gate, whose forward(x, context, context_mask=None) returns y (B, Lq, query_dim)",
    cases=_gated_cases,
    reference=_gated_reference,
    outputs=("y", "starts as the identity", "the gate trains"),
    harness=_gated_harness,
    unreported=("starts as the identity", "the gate trains"),
    properties=(
        has_shapes(_gated_shapes, "y like x (B, Lq, query_dim)"),
        Property("a new block must be the identity: its gate starts closed", _starts_closed),
        Property("the gate must be a parameter that training can open", _gate_trains),
    ),
    mistakes=(
        Mistake("the gate does not start closed: a new block must return x unchanged",
                "initialise the gate at 0, self.gate = nn.Parameter(torch.zeros(())), so that tanh(gate) = 0 "
                "and the block inserted into a trained network changes nothing until training opens it.",
                _gated_mistake(gate_init=1.0)),
        Mistake("sigmoid instead of tanh: sigmoid(0) = 1/2, so the gate starts half open",
                "Flamingo squashes the gate with tanh, which is 0 at 0 (closed) and can open either way, "
                "to -1 or 1: torch.tanh(self.gate).", _gated_mistake(squash=torch.sigmoid)),
        Mistake("the raw gate multiplies the update, without tanh",
                "squash the gate, torch.tanh(self.gate): it keeps the update's scale within ±1 however far "
                "training pushes the gate.", _gated_mistake(squash=_gate_raw)),
        Mistake("tanh applied to gate × update, not to the gate alone",
                "tanh squashes the gate only: y = x + tanh(gate) · update. tanh(gate · update) also squashes "
                "the update itself, so a fully open gate no longer passes it through.",
                _gated_mistake(squash_product=True)),
        Mistake("tanh applied to the whole sum, x + gate · update",
                "tanh squashes the gate only; the residual x must pass through untouched: "
                "y = x + tanh(gate) · update.", _gated_mistake(squash_sum=True)),
        Mistake("the layer norm applied to the update, not to the attention's input",
                "pre-norm normalises what the attention reads: attention(self.norm(x), context); its output is "
                "added as it is.", _gated_mistake(norm_x=False, norm_update=True)),
        Mistake("no gate: the update is added at full strength",
                "multiply the attention's output by torch.tanh(self.gate) before adding it to x.",
                _gated_mistake(squash=None)),
        Mistake("the gate also scales the residual: tanh(gate) · (x + update)",
                "only the new branch is gated: y = x + tanh(gate) · attention(norm(x), context). The "
                "residual x passes through untouched.", _gated_mistake(gate_all=True)),
        Mistake("forgot the residual: y = tanh(gate) · update",
                "add the gated update to the stream: y = x + tanh(gate) · attention(norm(x), context).",
                _gated_mistake(residual="none")),
        Mistake("residual added to the normalised stream",
                "add the update to x itself, not to norm(x): the stream keeps its own scale.",
                _gated_mistake(residual="normed")),
        Mistake("post-norm: the layer norm after the sum",
                "this block normalises first: y = x + tanh(gate) · attention(norm(x), context), and leaves "
                "the sum unnormalised (then a closed gate returns x exactly).",
                _gated_mistake(norm_x=False, norm_out=True)),
        Mistake("no layer norm before the attention",
                "normalise the stream that asks: attention(self.norm(x), context, context_mask).",
                _gated_mistake(norm_x=False)),
        Mistake("normalised the context as well as x",
                "self.norm belongs to the query stream x (its width is query_dim); the context comes from "
                "another model and is passed as it is.", _gated_mistake(norm_context=True)),
        Mistake("normalised the context instead of x",
                "self.norm goes on x, the stream being updated: attention(self.norm(x), context, ...); the "
                "context is passed as it is.", _gated_mistake(norm_x=False, norm_context=True)),
        Mistake("context_mask not passed on",
                "pass context_mask to the attention, or padded words take part.", _gated_mistake(pass_mask=False)),
    ),
)

TASKS = (FORWARD, PARAMETERS, MHA_MASK, GATED_BLOCK)
