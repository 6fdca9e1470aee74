r"""Exercises 03 · Cross-attention in PyTorch: split the heads -> merge them back -> the module's
forward pass from its four ``nn.Linear`` layers -> (predict) how many parameters it has -> a mask
that crosses over to ``nn.MultiheadAttention`` correctly.

Inputs are float64 tensors (and float64 ``nn.Linear`` layers), so that answers are compared with
the package to float64 rounding. Building a case never touches the learner's torch random state.

Solutions: solutions/03_cross_attention_in_pytorch.ipynb. References: crossmodal_edu/torch_attention.py
(``MultiHeadCrossAttention``) and the NumPy ``split_heads`` / ``merge_heads`` of
crossmodal_edu/numpy_attention.py.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from crossmodal_edu import numpy_attention as np_reference
from crossmodal_edu.compare import to_numpy
from crossmodal_edu.grading.spec import Case, FunctionTask, Mistake, PredictionTask, Property
from crossmodal_edu.grading.tasks.lesson01 import distinct
from crossmodal_edu.grading.tasks.properties import (
    a_number,
    finite,
    first,
    first_value,
    has_shapes,
    sums_to_one,
)
from crossmodal_edu.torch_attention import MultiHeadCrossAttention


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


# ---------------------------------------------------------------------------------------------
# 03.split_heads
# ---------------------------------------------------------------------------------------------


def _split_cases(rng: np.random.Generator) -> list[Case]:
    cases = []
    for note in ("", "other sizes"):
        B, L, H, hd = distinct(rng, 4, 2, 7)
        cases.append(Case({"t": tensor(rng.normal(size=(B, L, H * hd)))}, {"num_heads": H}, note=note))
    return cases


def _split_reference(t, num_heads):
    return tensor(np_reference.split_heads(to_numpy(t), num_heads))


def _split_view_only(t, num_heads):
    B, L, D = t.shape
    return t.view(B, num_heads, L, D // num_heads)


def _split_interleaved(t, num_heads):
    B, L, D = t.shape
    return t.view(B, L, D // num_heads, num_heads).permute(0, 3, 1, 2)


def _split_last_two(t, num_heads):
    B, L, D = t.shape
    return t.view(B, L, num_heads, D // num_heads).transpose(-1, -2)


def _split_sizes_swapped(t, num_heads):
    B, L, D = t.shape
    return t.view(B, L, D // num_heads, num_heads).transpose(1, 2)


def _split_shapes(case: Case):
    B, L, D = case.inputs["t"].shape
    H = case.options["num_heads"]
    return ((B, H, L, D // H),)


SPLIT_HEADS = FunctionTask(
    id="03.split_heads",
    title="Split the heads",
    points=2,
    name="split_heads",
    signature="split_heads(t, num_heads) -> (B, num_heads, L, head_dim)",
    cases=_split_cases,
    reference=_split_reference,
    outputs=("heads",),
    properties=(has_shapes(_split_shapes, "(B, num_heads, L, head_dim)"),),
    mistakes=(
        Mistake("viewed as (B, num_heads, L, head_dim) without a transpose",
                "a view only re-reads the same memory: (B, num_heads, L, head_dim) cut straight from "
                "(B, L, num_heads * head_dim) mixes tokens into heads. View as (B, L, num_heads, head_dim), "
                "then .transpose(1, 2).", _split_view_only),
        Mistake("heads interleaved: each head takes every num_heads-th feature",
                "head 0 is the first head_dim features, head 1 the next head_dim, and so on: view as "
                "(B, L, num_heads, head_dim), heads first, not (B, L, head_dim, num_heads).",
                _split_interleaved),
        Mistake("transposed the last two axes instead of the tokens and the heads",
                "after .view(B, L, num_heads, head_dim) swap axes 1 (tokens) and 2 (heads): .transpose(1, 2).",
                _split_last_two),
        Mistake("num_heads and head_dim swapped in the view",
                "view as (B, L, num_heads, head_dim): num_heads comes first, and head_dim = width // num_heads.",
                _split_sizes_swapped),
    ),
)

# ---------------------------------------------------------------------------------------------
# 03.merge_heads
# ---------------------------------------------------------------------------------------------


def _merge_cases(rng: np.random.Generator) -> list[Case]:
    B, H, L, hd = distinct(rng, 4, 2, 7)
    B1, L1, hd1 = distinct(rng, 3, 2, 7)
    return [
        Case({"t": tensor(rng.normal(size=(B, H, L, hd)))}),
        # One head: the only shape on which .view after .transpose runs, so that it can be named.
        Case({"t": tensor(rng.normal(size=(B1, 1, L1, hd1)))}, note="one head"),
    ]


def _merge_reference(t):
    return tensor(np_reference.merge_heads(to_numpy(t)))


def _merge_reshape_only(t):
    B, H, L, hd = t.shape
    return t.reshape(B, L, H * hd)


def _merge_view_after_transpose(t):
    B, H, L, hd = t.shape
    return t.transpose(1, 2).view(B, L, H * hd)


def _merge_interleaved(t):
    B, H, L, hd = t.shape
    return t.permute(0, 2, 3, 1).reshape(B, L, H * hd)


def _merge_last_two(t):
    B, H, L, hd = t.shape
    return t.transpose(-1, -2).reshape(B, L, H * hd)


def _merge_along_tokens(t):
    B, H, L, hd = t.shape
    return t.reshape(B, H * L, hd)


def _merge_undoes_split(fn, case, outputs):
    B, H, L, hd = case.inputs["t"].shape
    original = tensor(np.random.default_rng(0).normal(size=(B, L, H * hd)))
    back = to_numpy(fn(_split_reference(original, H)))
    if back.shape != original.shape or not np.allclose(back, to_numpy(original)):
        return "merge_heads(split_heads(t, num_heads)) does not give t back"
    return None


MERGE_HEADS = FunctionTask(
    id="03.merge_heads",
    title="Merge the heads",
    points=2,
    name="merge_heads",
    signature="merge_heads(t) -> (B, L, num_heads * head_dim)",
    cases=_merge_cases,
    reference=_merge_reference,
    outputs=("merged",),
    properties=(
        has_shapes(lambda c: ((c.inputs["t"].shape[0], c.inputs["t"].shape[2],
                               c.inputs["t"].shape[1] * c.inputs["t"].shape[3]),),
                   "(B, L, num_heads * head_dim)"),
        Property("merge_heads must undo split_heads", _merge_undoes_split),
    ),
    mistakes=(
        Mistake("heads merged in the wrong order: reshaped without moving the head axis back",
                "t is (B, num_heads, L, head_dim): .transpose(1, 2) to (B, L, num_heads, head_dim) first, "
                "then reshape; a reshape alone mixes tokens across heads.", _merge_reshape_only),
        Mistake(".view after .transpose: the transposed tensor is not contiguous",
                "a transpose only changes the strides, and .view needs memory in order: use "
                ".reshape(B, L, num_heads * head_dim), or .contiguous().view(...).",
                _merge_view_after_transpose),
        Mistake("heads interleaved: each feature's heads side by side, not each head's features",
                "the merged width is head after head, [head 0 | head 1 | ...]: bring the tokens forward "
                "with .transpose(1, 2), to (B, L, num_heads, head_dim), not the features before the heads.",
                _merge_interleaved),
        Mistake("transposed the last two axes instead of the heads and the tokens",
                "swap axes 1 (heads) and 2 (tokens): .transpose(1, 2).", _merge_last_two),
        Mistake("heads stacked along the tokens axis",
                "the heads go side by side in the feature axis: (B, L, num_heads * head_dim).",
                _merge_along_tokens),
    ),
)

# ---------------------------------------------------------------------------------------------
# 03.forward
# ---------------------------------------------------------------------------------------------


def _forward_case(rng, B, Lq, Lk, query_dim, context_dim, H, hd, masked, note=""):
    inner = H * hd
    return Case({"x": tensor(rng.normal(size=(B, Lq, query_dim))),
                 "context": tensor(rng.normal(size=(B, Lk, context_dim))),
                 "to_q": _linear(rng, query_dim, inner), "to_k": _linear(rng, context_dim, inner),
                 "to_v": _linear(rng, context_dim, inner), "to_out": _linear(rng, inner, query_dim),
                 "num_heads": H, "context_mask": _padding(rng, B, Lk) if masked else None},
                note=f"num_heads = {H}, head_dim = {hd}" + (f"; {note}" if note else ""))


def _forward_cases(rng: np.random.Generator) -> list[Case]:
    def sizes():
        H = int(rng.choice([2, 3]))
        hd = int(rng.choice([d for d in (2, 3, 5) if d != H]))
        widths = [w for w in range(3, 11) if w not in (H * hd, hd)]
        query_dim, context_dim = (int(w) for w in rng.choice(widths, size=2, replace=False))
        Lq, Lk = distinct(rng, 2, 2, 7)
        return Lq, Lk, query_dim, context_dim, H, hd

    Lq, Lk, query_dim, context_dim, H, hd = sizes()
    Lq2, Lk2, query_dim2, context_dim2, H2, hd2 = sizes()
    Lq3, Lk3, width, _, H3, hd3 = sizes()
    return [
        _forward_case(rng, int(rng.integers(2, 4)), Lq, Lk, query_dim, context_dim, H, hd, True,
                      "padded captions"),
        _forward_case(rng, int(rng.integers(2, 4)), Lq2, Lk2, query_dim2, context_dim2, H2, hd2, False,
                      "no mask"),
        # query_dim = context_dim only here: the one case on which keys from x run, so it can be named.
        _forward_case(rng, 2, Lq3, Lk3, width, width, H3, hd3, False, "query_dim = context_dim, no mask"),
    ]


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


def _fw_no_scale(x, context, to_q, to_k, to_v, to_out, num_heads, context_mask=None):
    return _forward(x, context, to_q, to_k, to_v, to_out, num_heads, context_mask,
                    scale=lambda hd, x, inner: 1.0)


def _fw_by_inner(x, context, to_q, to_k, to_v, to_out, num_heads, context_mask=None):
    return _forward(x, context, to_q, to_k, to_v, to_out, num_heads, context_mask,
                    scale=lambda hd, x, inner: 1 / math.sqrt(inner))


def _fw_by_query_dim(x, context, to_q, to_k, to_v, to_out, num_heads, context_mask=None):
    return _forward(x, context, to_q, to_k, to_v, to_out, num_heads, context_mask,
                    scale=lambda hd, x, inner: 1 / math.sqrt(x.shape[-1]))


def _fw_softmax_queries(x, context, to_q, to_k, to_v, to_out, num_heads, context_mask=None):
    return _forward(x, context, to_q, to_k, to_v, to_out, num_heads, context_mask, dim=-2)


def _fw_mask_inverted(x, context, to_q, to_k, to_v, to_out, num_heads, context_mask=None):
    return _forward(x, context, to_q, to_k, to_v, to_out, num_heads, context_mask, keep=lambda m: ~m)


def _fw_mask_ignored(x, context, to_q, to_k, to_v, to_out, num_heads, context_mask=None):
    return _forward(x, context, to_q, to_k, to_v, to_out, num_heads, context_mask, keep=lambda m: None)


def _fw_no_to_out(x, context, to_q, to_k, to_v, to_out, num_heads, context_mask=None):
    return _forward(x, context, to_q, to_k, to_v, to_out, num_heads, context_mask, project_out=False)


def _fw_kv_from_x(x, context, to_q, to_k, to_v, to_out, num_heads, context_mask=None):
    return _forward(x, context, to_q, to_k, to_v, to_out, num_heads, context_mask, source=x)


def _fw_split_view_only(x, context, to_q, to_k, to_v, to_out, num_heads, context_mask=None):
    return _forward(x, context, to_q, to_k, to_v, to_out, num_heads, context_mask,
                    split=lambda t, H: _split_view_only(t, H))


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
        Mistake("no 1/√head_dim scaling",
                "divide the scores by math.sqrt(head_dim), the width of one head: q.shape[-1].", _fw_no_scale),
        Mistake("scaled by √(num_heads * head_dim) instead of √head_dim",
                "each head has its own softmax over its own head_dim-wide dot products: divide by "
                "math.sqrt(head_dim), not by the width of all heads together.", _fw_by_inner),
        Mistake("scaled by √query_dim instead of √head_dim",
                "head_dim is the width of one head after the projection, q.shape[-1], not x.shape[-1].",
                _fw_by_query_dim),
        Mistake("softmax over the wrong axis (the queries, not the keys)",
                "each query spreads its attention over the context: .softmax(dim=-1) on (B, num_heads, Lq, Lk).",
                _fw_softmax_queries),
        Mistake("inverted mask (True treated as 'ignore')",
                "context_mask is True for real words: fill the scores where it is False, "
                "scores.masked_fill(~context_mask[:, None, None, :], float('-inf')).", _fw_mask_inverted),
        Mistake("mask not applied",
                "when context_mask is given, padded words must get -inf scores before the softmax.",
                _fw_mask_ignored),
        Mistake("forgot to_out: the output is left num_heads * head_dim wide",
                "after merging the heads, project back to the query stream's width: to_out(heads).",
                _fw_no_to_out),
        Mistake("keys and values projected from x (self-attention), not from the context",
                "only the queries come from x: k = to_k(context), v = to_v(context).", _fw_kv_from_x),
        Mistake("heads split without a transpose",
                "view as (B, L, num_heads, head_dim), then .transpose(1, 2): your split_heads from task 1.",
                _fw_split_view_only),
        Mistake("heads merged in the wrong order: reshaped without moving the head axis back",
                "(B, num_heads, Lq, head_dim) needs .transpose(1, 2) before the reshape: your merge_heads "
                "from task 2.", _fw_merge_reshape_only),
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


def _mha_not_inverted(x, context, layer, context_mask):
    return _mha(x, context, layer, context_mask)


def _mha_no_mask(x, context, layer, context_mask):
    return _mha(x, context, layer, None)


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
        Mistake("mask not passed",
                "padded words must be hidden: pass key_padding_mask=~context_mask.", _mha_no_mask),
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

TASKS = (SPLIT_HEADS, MERGE_HEADS, FORWARD, PARAMETERS, MHA_MASK)
