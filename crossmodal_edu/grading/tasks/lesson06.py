r"""Exercises 06 · Text to image: the decoder block's cross-attention (pre-norm, queries from the image
stream) -> the teacher-forcing shift -> fix a caption dropout that leaves rows with nothing to attend to
-> classifier-free guidance -> top-k filtering -> the probabilities a sampler draws from, with temperature
and greedy decoding.

Every function here is self-contained (tensors in, tensors out; the decoder block task gets the block's
layers as an argument), so the exercises do not depend on the rest of the decoder's API. Logits are
float64 tensors; ``text_tokens`` and ``image_tokens`` are int64 and masks bool tensors, **True = real token**.

Solutions: solutions/06_text_to_image.ipynb. References: ``DecoderBlock.forward`` and
``ImageTokenDecoder.loss`` in crossmodal_edu/dalle/decoder.py (the block and the shift),
crossmodal_edu/dalle/guidance.py (``top_k_filter``, ``classifier_free_guidance``; ``sample_from_logits``
draws from :func:`sampling_probs_reference`, which tests/test_grading.py checks) and
:func:`drop_captions_reference` below (the decoder's caption dropout, in crossmodal_edu/dalle/).
"""

from __future__ import annotations

import numpy as np
import torch

from crossmodal_edu.compare import to_numpy
from crossmodal_edu.dalle import guidance as reference
from crossmodal_edu.dalle.config import DecoderConfig
from crossmodal_edu.dalle.decoder import DecoderBlock
from crossmodal_edu.grading.spec import IN_PLACE, Case, FunctionTask, Mistake, Property
from crossmodal_edu.grading.tasks.lesson01 import distinct
from crossmodal_edu.grading.tasks.lesson03 import tensor
from crossmodal_edu.grading.tasks.properties import (
    between_0_and_1,
    finite,
    first,
    first_value,
    has_shapes,
    sums_to_one,
    where,
)
from crossmodal_edu.numpy_attention import padding_mask

NEG_INF = float("-inf")
POS_INF = float("inf")

# ---------------------------------------------------------------------------------------------
# 06.decoder_block
# ---------------------------------------------------------------------------------------------


def _random_block(rng: np.random.Generator, d: int, H: int) -> DecoderBlock:
    """A float64 ``DecoderBlock`` (cross-attention) whose every weight is drawn from ``rng``, the three
    LayerNorms' scales and shifts included, so that using one norm for another shows."""
    with torch.random.fork_rng(devices=[]):  # its own init would draw from the learner's torch RNG
        block = DecoderBlock(DecoderConfig(d_model=d, num_heads=H, mlp_ratio=2)).double().eval()
    with torch.no_grad():
        for name, p in block.named_parameters():
            if name.endswith("bias"):
                values = 0.3 * rng.normal(size=p.shape)
            elif p.ndim == 1:  # a LayerNorm's scale
                values = 1.0 + 0.5 * rng.normal(size=p.shape)
            else:  # a Linear's weight, (out, in)
                values = rng.normal(size=p.shape) / np.sqrt(p.shape[1])
            p.copy_(torch.from_numpy(values))
    return block.requires_grad_(False)


def _block_cases(rng: np.random.Generator) -> list[Case]:
    """Captions padded at the end (one row padded, one fully real, as in the hidden test), and one case
    whose masks have holes anywhere (the statement only says True = real word), each row with a real word."""
    cases = []
    for note in ("padded captions, one of them fully real", "other sizes", "padding anywhere, not only at the end"):
        H = int(rng.choice([2, 3]))
        d = H * int(rng.choice([2, 3, 5]))
        B = int(rng.integers(2, 4))
        T, L = distinct(rng, 2, 3, 7)
        lengths = rng.integers(1, L + 1, size=B)
        lengths[0] = int(rng.integers(1, L))  # at least one padded word
        lengths[-1] = L  # and one caption with every word real
        mask = padding_mask(lengths, L)  # (B, L)
        if note.startswith("padding anywhere"):
            mask = rng.permuted(mask, axis=1)  # (B, L): the same number of real words per row, anywhere
            mask[0, 0], mask[0, -1] = False, True  # a padded first word and a real last one
        cases.append(Case({"x": tensor(rng.normal(size=(B, T, d))), "context": tensor(rng.normal(size=(B, L, d))),
                           "context_mask": torch.from_numpy(mask), "block": _random_block(rng, d, H)},
                          note=f"d_model = {d}, num_heads = {H}; {note}"))
    return cases


def decoder_block_reference(x, context, context_mask, block):
    """``DecoderBlock.forward``: ``x`` ``(B, T, d_model)`` image tokens, ``context`` ``(B, L, d_model)``
    encoded caption, ``context_mask`` ``(B, L)`` -> ``(B, T, d_model)``."""
    return block(x, context, context_mask)[0]


def _sublayers(x, context, context_mask, block, order=("self", "cross", "mlp"), post_norm=False, residual=None,
               cross_input=None, norms=None):
    """The block with one thing changed: the ``order`` of its sub-layers, norms after the residual
    (``post_norm``), what the cross-attention's residual adds (``residual(x, normed)``), what the
    cross-attention reads (``cross_input(normed, context, context_mask, block) -> (queries, keys, mask)``),
    or which norm goes before which sub-layer (``norms``)."""
    norms = norms or {"self": block.norm1, "cross": block.norm2, "mlp": block.norm3}
    for name in order:
        norm = norms[name]
        inner = (lambda h: h) if post_norm else norm
        normed = inner(x)
        if name == "self":
            update = block.self_attention(normed)
        elif name == "mlp":
            update = block.mlp(normed)
        else:
            queries, keys, mask = (normed, context, context_mask) if cross_input is None else \
                cross_input(normed, context, context_mask, block)
            update = block.cross_attention(queries, keys, mask)
        if name == "cross" and residual is not None:
            x = residual(x, normed, update)
        else:
            x = x + update
        if post_norm:
            x = norm(x)
    return x


def _db_post_norm(x, context, context_mask, block):
    return _sublayers(x, context, context_mask, block, post_norm=True)


def _db_no_residual(x, context, context_mask, block):
    return _sublayers(x, context, context_mask, block, residual=lambda x, normed, update: update)


def _db_normed_residual(x, context, context_mask, block):
    return _sublayers(x, context, context_mask, block, residual=lambda x, normed, update: normed + update)


def _db_image_keys(x, context, context_mask, block):
    return _sublayers(x, context, context_mask, block, cross_input=lambda n, c, m, b: (n, n, None))


def _db_caption_normed(x, context, context_mask, block):
    return _sublayers(x, context, context_mask, block, cross_input=lambda n, c, m, b: (n, b.norm2(c), m))


def _db_no_mask(x, context, context_mask, block):
    return _sublayers(x, context, context_mask, block, cross_input=lambda n, c, m, b: (n, c, None))


def _db_cross_first(x, context, context_mask, block):
    return _sublayers(x, context, context_mask, block, order=("cross", "self", "mlp"))


def _db_no_cross(x, context, context_mask, block):
    return _sublayers(x, context, context_mask, block, order=("self", "mlp"))


def _db_norm2_for_mlp(x, context, context_mask, block):
    return _sublayers(x, context, context_mask, block, norms={"self": block.norm1, "cross": block.norm2, "mlp": block.norm2})


def _db_every_residual_normed(x, context, context_mask, block):
    h = block.norm1(x)
    x = h + block.self_attention(h)
    h = block.norm2(x)
    x = h + block.cross_attention(h, context, context_mask)
    h = block.norm3(x)
    return h + block.mlp(h)


def _db_norms_swapped(x, context, context_mask, block):
    return _sublayers(x, context, context_mask, block, norms={"self": block.norm2, "cross": block.norm1, "mlp": block.norm3})


def _db_parallel(x, context, context_mask, block):
    return (x + block.self_attention(block.norm1(x)) + block.cross_attention(block.norm2(x), context, context_mask)
            + block.mlp(block.norm3(x)))


def _db_norm_left_out(name):
    def answer(x, context, context_mask, block):
        norms = {"self": block.norm1, "cross": block.norm2, "mlp": block.norm3}
        norms[name] = lambda h: h
        return _sublayers(x, context, context_mask, block, norms=norms)

    return answer


def _db_norm1_everywhere(x, context, context_mask, block):
    return _sublayers(x, context, context_mask, block, norms={"self": block.norm1, "cross": block.norm1,
                                                              "mlp": block.norm1})


def _db_norms_2_3_swapped(x, context, context_mask, block):
    norms = {"self": block.norm1, "cross": block.norm3, "mlp": block.norm2}
    return _sublayers(x, context, context_mask, block, norms=norms)


def _db_no_residual_self(x, context, context_mask, block):
    x = block.self_attention(block.norm1(x))
    x = x + block.cross_attention(block.norm2(x), context, context_mask)
    return x + block.mlp(block.norm3(x))


def _db_no_residual_mlp(x, context, context_mask, block):
    x = x + block.self_attention(block.norm1(x))
    x = x + block.cross_attention(block.norm2(x), context, context_mask)
    return block.mlp(block.norm3(x))


def _db_mask_inverted(x, context, context_mask, block):
    return _sublayers(x, context, context_mask, block, cross_input=lambda n, c, m, b: (n, c, ~m))


def _db_mlp_before_cross(x, context, context_mask, block):
    return _sublayers(x, context, context_mask, block, order=("self", "mlp", "cross"))


def _db_in_place(x, context, context_mask, block):
    x += block.self_attention(block.norm1(x))
    x += block.cross_attention(block.norm2(x), context, context_mask)
    x += block.mlp(block.norm3(x))
    return x


def _padding_ignored(fn, case, outputs):
    args, options = case.fresh()
    context, context_mask = args[1], args[2]
    noise = torch.from_numpy(np.random.default_rng(0).normal(size=tuple(context.shape)))
    args[1] = torch.where(context_mask[..., None], context, 10 * noise)  # other vectors at the padded places
    changed = np.abs(np.asarray(fn(*args, **options), dtype=np.float64) - outputs[0]).max()
    if changed > 1e-6:
        return f"changing the padded words' vectors changes the output by up to {changed:.3g}"
    return None


def _causal(fn, case, outputs):
    args, options = case.fresh()
    args[0] = args[0].clone()
    args[0][:, -1] += 1.0  # change the last image token only
    changed = np.abs(np.asarray(fn(*args, **options), dtype=np.float64)[:, :-1] - outputs[0][:, :-1]).max()
    if changed > 1e-9:
        return f"changing the last image token changes earlier tokens' outputs by up to {changed:.3g}"
    return None


DECODER_BLOCK = FunctionTask(
    id="06.decoder_block",
    title="The decoder block",
    points=3,
    name="decoder_block",
    signature="decoder_block(x, context, context_mask, block) -> x",
    cases=_block_cases,
    reference=decoder_block_reference,
    outputs=("x",),
    properties=(
        has_shapes(lambda c: (tuple(c.inputs["x"].shape),), "(B, T, d_model), that of x"),
        finite(0, "x"),
        Property("the padded words of the caption must not matter", _padding_ignored),
        Property("an image token's output must not depend on later image tokens", _causal),
    ),
    mistakes=(
        Mistake("post-norm: each LayerNorm after its residual, not before its sub-layer",
                "this decoder is pre-norm: x = x + sublayer(norm(x)). The residual stream x itself is never "
                "normalised, so what a sub-layer adds passes unchanged to the next.", _db_post_norm),
        Mistake("no residual around the cross-attention: its output replaced x",
                "add the update to the stream: x = x + block.cross_attention(block.norm2(x), context, context_mask); "
                "replacing x throws away everything the self-attention computed.", _db_no_residual),
        Mistake("the residual adds the normalised x: norm2(x) + cross_attention(...)",
                "normalise only what goes into the sub-layer; the residual is the stream x as it came: "
                "x = x + block.cross_attention(block.norm2(x), ...).", _db_normed_residual),
        Mistake("keys and values from the image tokens: the cross-attention became a second self-attention",
                "the image tokens ask (queries from block.norm2(x)) and the caption answers: pass context as the "
                "second argument, block.cross_attention(block.norm2(x), context, context_mask).", _db_image_keys),
        Mistake("the caption normalised with the image stream's norm2",
                "norm2 belongs to the image stream, the queries' side; the text encoder already normalised the "
                "caption: pass context as it comes.", _db_caption_normed),
        Mistake("the padding mask left out: image tokens read the padding words",
                "pass context_mask to the cross-attention, so that padding words get weight 0.", _db_no_mask),
        Mistake("cross-attention before the self-attention",
                "the order in this decoder is self-attention (norm1), cross-attention (norm2), MLP (norm3).",
                _db_cross_first),
        Mistake("norm1 and norm2 swapped",
                "each sub-layer has its own LayerNorm: norm1 before the self-attention, norm2 before the "
                "cross-attention, norm3 before the MLP.", _db_norms_swapped),
        Mistake("parallel sub-layers: all three read the block's input x",
                "the sub-layers run one after the other: the cross-attention reads x after the self-attention "
                "has added to it, and the MLP reads x after both.", _db_parallel),
        Mistake("no LayerNorm before the self-attention: norm1 left out",
                "pre-norm means every sub-layer reads a normalised copy of the stream: "
                "x = x + block.self_attention(block.norm1(x)).", _db_norm_left_out("self")),
        Mistake("no LayerNorm before the cross-attention: norm2 left out",
                "the queries come from a normalised copy of the stream: "
                "block.cross_attention(block.norm2(x), context, context_mask).", _db_norm_left_out("cross")),
        Mistake("no LayerNorm before the MLP: norm3 left out",
                "the MLP reads a normalised copy of the stream too: x = x + block.mlp(block.norm3(x)).",
                _db_norm_left_out("mlp")),
        Mistake("one LayerNorm (norm1) before every sub-layer",
                "each sub-layer has its own LayerNorm, with its own scale and shift: norm1 before the "
                "self-attention, norm2 before the cross-attention, norm3 before the MLP.", _db_norm1_everywhere),
        Mistake("norm2 and norm3 swapped",
                "each sub-layer has its own LayerNorm: norm2 before the cross-attention, norm3 before the MLP.",
                _db_norms_2_3_swapped),
        Mistake("no residual around the self-attention: its output replaced x",
                "add the update to the stream: x = x + block.self_attention(block.norm1(x)); replacing x throws "
                "away the image tokens themselves.", _db_no_residual_self),
        Mistake("no residual around the MLP: its output replaced x",
                "add the MLP's update to the stream too: return x + block.mlp(block.norm3(x)).", _db_no_residual_mlp),
        Mistake("the padding mask inverted: image tokens read only the padding words",
                "context_mask is True for REAL words, as the cross-attention expects: pass it as it comes, "
                "without ~ (a fully real caption then has no key left to read).", _db_mask_inverted),
        Mistake("the MLP before the cross-attention",
                "the order in this decoder is self-attention (norm1), cross-attention (norm2), MLP (norm3).",
                _db_mlp_before_cross),
        Mistake("the cross-attention left out: the caption never reaches the image",
                "the block has three sub-layers; the middle one, x + cross_attention(norm2(x), context, "
                "context_mask), is where the image tokens ask the caption.", _db_no_cross),
        Mistake("norm2 before the MLP too: norm3 is never used",
                "each sub-layer has its own LayerNorm: norm1 before the self-attention, norm2 before the "
                "cross-attention, norm3 before the MLP.", _db_norm2_for_mlp),
        Mistake("every residual adds the normalised x: h = norm(x); x = h + f(h)",
                "the residual stream is x itself: x = x + f(norm(x)). Adding to norm(x) throws away x's scale "
                "at every sub-layer.", _db_every_residual_normed),
        Mistake("the cross-attention called with the caption as its queries",
                "cross_attention(queries, context, context_mask): the queries are the image stream, norm2(x); "
                "the caption is the context, whose words are the keys and values.",
                raises=r"context_mask must have shape \(B, Lk\)"),
        Mistake(IN_PLACE, "", _db_in_place, in_place=True),
    ),
    rtol=1e-7,
    atol=1e-9,
)

# ---------------------------------------------------------------------------------------------
# 06.teacher_forcing
# ---------------------------------------------------------------------------------------------


def teacher_forcing_reference(image_tokens: torch.Tensor, start_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """What ``ImageTokenDecoder.loss`` feeds the decoder and what it compares with: ``image_tokens`` ``(B, N)``
    -> ``inputs`` ``(B, N)`` = ``<start>`` then ``image_tokens[:, :-1]``, and ``targets`` = ``image_tokens``,
    so that position ``i`` sees tokens ``0..i-1`` and is graded on token ``i``."""
    start = torch.full_like(image_tokens[:, :1], start_id)  # (B, 1)
    return torch.cat([start, image_tokens[:, :-1]], dim=1), image_tokens.clone()  # (B, N) each


def _forcing_cases(rng: np.random.Generator) -> list[Case]:
    """Codes ``0..K-1`` with ``start_id = K``, or a ``start_id`` above ``K`` (a vocabulary with other special
    ids: the statement only says codes are below start_id); and one image alone (B = 1), as in the hidden test."""
    cases = []
    for note, extra in (("a batch of images", 0), ("other sizes, start_id above the codebook", 3)):
        B, N = distinct(rng, 2, 2, 8)
        K = int(rng.integers(5, 20))
        start_id = K + int(rng.integers(1, 4)) * (extra > 0)
        cases.append(Case({"image_tokens": torch.from_numpy(rng.integers(0, K, size=(B, N)))}, {"start_id": start_id},
                          note=f"codebook of {K} codes, start_id = {start_id}; {note}"))
    K, N = int(rng.integers(5, 20)), int(rng.choice([3, 5, 6]))
    cases.append(Case({"image_tokens": torch.from_numpy(rng.integers(0, K, size=(1, N)))}, {"start_id": K},
                      note=f"codebook of {K} codes, start_id = {K}; one image"))
    return cases


def _start(image_tokens, start_id, value=None):
    return torch.full_like(image_tokens[:, :1], start_id if value is None else value)


def _tf_no_shift(image_tokens, start_id):
    return image_tokens.clone(), image_tokens.clone()


def _tf_no_start(image_tokens, start_id):
    return image_tokens[:, :-1].clone(), image_tokens[:, 1:].clone()


def _tf_one_longer(image_tokens, start_id):
    return torch.cat([_start(image_tokens, start_id), image_tokens], dim=1), image_tokens.clone()


def _tf_from_the_future(image_tokens, start_id):
    return torch.cat([image_tokens[:, 1:], _start(image_tokens, start_id)], dim=1), image_tokens.clone()


def _tf_zero_start(image_tokens, start_id):
    return torch.cat([_start(image_tokens, start_id, 0), image_tokens[:, :-1]], dim=1), image_tokens.clone()


def _tf_targets_shifted_too(image_tokens, start_id):
    inputs = torch.cat([_start(image_tokens, start_id), image_tokens[:, :-1]], dim=1)
    return inputs, inputs.clone()


def _tf_last_target_dropped(image_tokens, start_id):
    return torch.cat([_start(image_tokens, start_id), image_tokens[:, :-1]], dim=1), image_tokens[:, :-1].clone()


def _tf_start_over_first(image_tokens, start_id):
    return torch.cat([_start(image_tokens, start_id), image_tokens[:, 1:]], dim=1), image_tokens.clone()


def _tf_start_at_the_end(image_tokens, start_id):
    return torch.cat([image_tokens[:, :-1], _start(image_tokens, start_id)], dim=1), image_tokens.clone()


def _tf_rolled(image_tokens, start_id):
    return torch.roll(image_tokens, 1, dims=1), image_tokens.clone()


def _tf_batch_axis(image_tokens, start_id):
    inputs = torch.roll(image_tokens, 1, dims=0)
    inputs[:, 0] = start_id
    return inputs, image_tokens.clone()


def _tf_in_place(image_tokens, start_id):
    targets = image_tokens.clone()
    image_tokens[:, 1:] = targets[:, :-1]
    image_tokens[:, 0] = start_id
    return image_tokens, targets


def _starts_with_start(fn, case, outputs):
    start_id = case.options["start_id"]
    bad = outputs[0][:, 0] != start_id
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        return f"the inputs of image {row} begin with {outputs[0][row, 0]:.0f}, not start_id = {start_id}"
    return None


def _one_step_behind(fn, case, outputs):
    inputs, targets = outputs
    bad = inputs[:, 1:] != targets[:, :-1]
    if bad.any():
        row, i = np.unravel_index(int(np.flatnonzero(bad)[0]), bad.shape)
        return f"inputs[{row}, {i + 1}] is {inputs[row, i + 1]:.0f}, but targets[{row}, {i}] is {targets[row, i]:.0f}"
    return None


TEACHER_FORCING = FunctionTask(
    id="06.teacher_forcing",
    title="Teacher forcing",
    points=2,
    name="teacher_forcing",
    signature="teacher_forcing(image_tokens, start_id) -> (inputs, targets)",
    cases=_forcing_cases,
    reference=teacher_forcing_reference,
    outputs=("inputs", "targets"),
    properties=(
        has_shapes(lambda c: (tuple(c.inputs["image_tokens"].shape),) * 2, "(B, N) both, that of image_tokens"),
        Property("the inputs must begin with start_id", _starts_with_start),
        Property("input i + 1 must be target i (the token before)", _one_step_behind),
    ),
    mistakes=(
        Mistake("no shift: the inputs are the targets, so the decoder learns to copy its input",
                "position i must not see token i, the one it is graded on: inputs = <start> followed by "
                "image_tokens[:, :-1].", _tf_no_shift),
        Mistake("no <start>: the first image token is never predicted",
                "a language model's habit, inputs tokens[:, :-1] and targets tokens[:, 1:], never trains token 0, "
                "and sampling must begin from something: put start_id in front, "
                "inputs = cat([start_id column, image_tokens[:, :-1]]), targets = image_tokens.", _tf_no_start),
        Mistake("<start> prepended, but the last token kept: the inputs are one longer than the targets",
                "the inputs must be as long as the targets: <start> then image_tokens[:, :-1], dropping the last "
                "token, which no position needs to see.", _tf_one_longer),
        Mistake("shifted the wrong way: input i is token i + 1, from the future",
                "input i is the token BEFORE target i: <start> in front, then image_tokens[:, :-1].",
                _tf_from_the_future),
        Mistake("0 as <start>: 0 is a real image code",
                "codes 0..K-1 are image tokens; <start> is its own id, start_id: "
                "torch.full_like(image_tokens[:, :1], start_id).", _tf_zero_start),
        Mistake("the targets shifted too: they equal the inputs",
                "only the inputs move one step; the targets are image_tokens themselves.", _tf_targets_shifted_too),
        Mistake("the last token dropped from the targets too: it is never trained",
                "targets are all N image tokens, image_tokens itself; only the inputs lose their last one.",
                _tf_last_target_dropped),
        Mistake("<start> replaced the first token: inputs = <start>, image_tokens[:, 1:]",
                "then position i >= 1 sees token i, the one it is graded on. Shift everything one step: "
                "<start> then image_tokens[:, :-1], dropping the LAST token.", _tf_start_over_first),
        Mistake("<start> put at the end: inputs = image_tokens[:, :-1], then <start>",
                "<start> comes FIRST, so that position i reads token i - 1: "
                "inputs = cat([start_id column, image_tokens[:, :-1]], dim=1).", _tf_start_at_the_end),
        Mistake("rolled without a <start>: the last token wrapped around to the front",
                "torch.roll moves the last token to position 0, so position 0 sees the image's end. Put start_id "
                "at position 0 instead (or build the inputs with torch.cat).", _tf_rolled),
        Mistake("shifted along the batch axis: each image gets the previous image's tokens",
                "the shift is along the sequence, dim 1 of (B, N): every image keeps its own tokens, one step later.",
                _tf_batch_axis),
        Mistake(IN_PLACE, "", _tf_in_place, in_place=True),
    ),
    rtol=0.0,
    atol=0.0,
)

# ---------------------------------------------------------------------------------------------
# 06.drop_captions (fix the bug)
# ---------------------------------------------------------------------------------------------


def null_captions(text_tokens: torch.Tensor, context_mask: torch.Tensor, null_id: int, pad_id: int):
    """Null captions shaped like ``text_tokens`` ``(B, Lk)``: tokens ``[null_id, pad_id, ..., pad_id]``,
    mask ``[True, False, ..., False]``."""
    tokens = torch.full_like(text_tokens, pad_id)  # (B, Lk)
    tokens[:, 0] = null_id
    mask = torch.zeros_like(context_mask)  # (B, Lk)
    mask[:, 0] = True
    return tokens, mask


def drop_captions_reference(text_tokens, context_mask, drop, null_id, pad_id=0):
    """Replace the captions where ``drop`` ``(B,)`` is True by the null caption, a single learned token
    ``null_id`` padded with ``pad_id``, whose mask is ``[True, False, ..., False]`` (so that the
    cross-attention of an uncaptioned image still has one key to read). New tensors, inputs unchanged."""
    null_tokens, null_mask = null_captions(text_tokens, context_mask, null_id, pad_id)
    keep = ~drop[:, None]  # (B, 1)
    return torch.where(keep, text_tokens, null_tokens), torch.where(keep, context_mask, null_mask)


def _caption_case(rng, B, Lk, vocab, drop, pad_id, note):
    """``B`` captions padded to ``Lk`` with ``pad_id`` (``None``: the default, 0, left out of the call). Of
    the dropped ones (if any), one fills its row, so that nothing of the old caption hides behind padding,
    and another (if there are two) is padded, so that a mask set all True differs from the old one."""
    lengths = rng.integers(1, Lk + 1, size=B)
    dropped = rng.permutation(np.flatnonzero(drop))
    if len(dropped) > 0:
        lengths[dropped[0]] = Lk
    if len(dropped) > 1:
        lengths[dropped[1]] = rng.integers(1, Lk)
    mask = padding_mask(lengths, Lk)  # (B, Lk)
    words = np.array([t for t in range(vocab) if t != (pad_id or 0)])  # the real words: every id but pad_id
    tokens = np.where(mask, rng.choice(words, size=(B, Lk)), pad_id or 0)  # (B, Lk)
    options = {"null_id": vocab} if pad_id is None else {"null_id": vocab, "pad_id": pad_id}
    return Case({"text_tokens": torch.from_numpy(tokens.astype(np.int64)), "context_mask": torch.from_numpy(mask),
                 "drop": torch.from_numpy(drop)}, options,
                note=f"{note}; pad_id = {pad_id or 0}" + (" (the default)" if pad_id is None else ""))


def _caption_cases(rng: np.random.Generator) -> list[Case]:
    """pad_id is not always 0 (the hidden test pads with 1), and the default is used once; one caption alone,
    dropped, with every word real, as in the hidden test."""
    cases = []
    for note, pad_id in (("some captions dropped", int(rng.integers(1, 6))), ("other sizes", 0)):
        B, Lk = distinct(rng, 2, 3, 8)
        drop = rng.random(B) < 0.5
        drop[rng.choice(B, size=3, replace=False)] = [True, True, False]  # two dropped, one kept, at least
        cases.append(_caption_case(rng, B, Lk, int(rng.integers(10, 30)), drop, pad_id, note))
    B, Lk = distinct(rng, 2, 2, 7)
    cases.append(_caption_case(rng, B, Lk, int(rng.integers(10, 30)), np.zeros(B, bool), None, "nothing dropped"))
    Lk = int(rng.choice([3, 5, 6]))
    cases.append(_caption_case(rng, 1, Lk, int(rng.integers(10, 30)), np.ones(1, bool), int(rng.integers(1, 6)),
                               "one caption, dropped"))
    return cases


def _drop_by_masking(text_tokens, context_mask, drop, null_id, pad_id=0):
    return text_tokens.clone(), context_mask & ~drop[:, None]


def _drop_null_masked(text_tokens, context_mask, drop, null_id, pad_id=0):
    tokens, _ = drop_captions_reference(text_tokens, context_mask, drop, null_id, pad_id)
    return tokens, context_mask & ~drop[:, None]


def _drop_inverted(text_tokens, context_mask, drop, null_id, pad_id=0):
    return drop_captions_reference(text_tokens, context_mask, ~drop, null_id, pad_id)


def _drop_mask_unchanged(text_tokens, context_mask, drop, null_id, pad_id=0):
    tokens, _ = drop_captions_reference(text_tokens, context_mask, drop, null_id, pad_id)
    return tokens, context_mask.clone()


def _drop_first_token_only(text_tokens, context_mask, drop, null_id, pad_id=0):
    _, mask = drop_captions_reference(text_tokens, context_mask, drop, null_id, pad_id)
    tokens = text_tokens.clone()
    tokens[drop, 0] = null_id
    return tokens, mask


def _drop_mask_all_true(text_tokens, context_mask, drop, null_id, pad_id=0):
    tokens, _ = drop_captions_reference(text_tokens, context_mask, drop, null_id, pad_id)
    return tokens, context_mask | drop[:, None]


def _drop_pads_only(text_tokens, context_mask, drop, null_id, pad_id=0):
    _, mask = drop_captions_reference(text_tokens, context_mask, drop, null_id, pad_id)
    return torch.where(drop[:, None], torch.full_like(text_tokens, pad_id), text_tokens), mask


def _drop_padded_with_0(text_tokens, context_mask, drop, null_id, pad_id=0):
    return drop_captions_reference(text_tokens, context_mask, drop, null_id, 0)


def _drop_all_null(text_tokens, context_mask, drop, null_id, pad_id=0):
    return drop_captions_reference(text_tokens, context_mask, drop, null_id, null_id)


def _drop_ids_swapped(text_tokens, context_mask, drop, null_id, pad_id=0):
    return drop_captions_reference(text_tokens, context_mask, drop, pad_id, null_id)


def _drop_mask_only(text_tokens, context_mask, drop, null_id, pad_id=0):
    _, mask = drop_captions_reference(text_tokens, context_mask, drop, null_id, pad_id)
    return text_tokens.clone(), mask


def _drop_everything(text_tokens, context_mask, drop, null_id, pad_id=0):
    return drop_captions_reference(text_tokens, context_mask, torch.ones_like(drop), null_id, pad_id)


def _drop_in_place(text_tokens, context_mask, drop, null_id, pad_id=0):
    text_tokens[drop] = pad_id
    text_tokens[drop, 0] = null_id
    context_mask[drop] = False
    context_mask[drop, 0] = True
    return text_tokens, context_mask


def _no_empty_row(fn, case, outputs):
    empty = ~outputs[1].astype(bool).any(axis=-1)  # (B,)
    if empty.any():
        return f"the mask of caption {int(np.flatnonzero(empty)[0])} is all False"
    return None


def _kept_unchanged(fn, case, outputs):
    keep = ~case.inputs["drop"].numpy()
    for name, got, given in zip(("text_tokens", "context_mask"), outputs, (case.inputs["text_tokens"],
                                                                          case.inputs["context_mask"])):
        bad = keep[:, None] & (got != given.numpy())
        if bad.any():
            row, column = np.unravel_index(int(np.flatnonzero(bad)[0]), bad.shape)
            return f"kept caption {row} changed: its `{name}` at position {column}"
    return None


def _dropped_is_null(fn, case, outputs):
    drop = case.inputs["drop"].numpy()
    null_id, pad_id = case.options["null_id"], case.options.get("pad_id", 0)
    Lk = outputs[0].shape[-1]
    want_tokens = np.full(Lk, pad_id)
    want_tokens[0] = null_id
    want_mask = np.arange(Lk) == 0
    for b in np.flatnonzero(drop):
        if not np.array_equal(outputs[0][b], want_tokens) or not np.array_equal(outputs[1][b], want_mask):
            return (f"dropped caption {b} became tokens {outputs[0][b].astype(int).tolist()}, mask "
                    f"{outputs[1][b].astype(bool).tolist()}")
    return None


DROP_CAPTIONS = FunctionTask(
    id="06.drop_captions",
    title="Fix the caption dropout",
    points=3,
    name="drop_captions",
    signature="drop_captions(text_tokens, context_mask, drop, null_id, pad_id=0) -> (text_tokens, context_mask)",
    cases=_caption_cases,
    reference=drop_captions_reference,
    outputs=("text_tokens", "context_mask"),
    properties=(
        has_shapes(lambda c: (tuple(c.inputs["text_tokens"].shape),) * 2, "(B, Lk), those of the inputs"),
        Property("every caption must keep at least one key to attend to", _no_empty_row),
        Property("a caption that is not dropped must come back unchanged", _kept_unchanged),
        Property("a dropped caption must become the null caption: tokens [null_id, pad_id, ...], "
                 "mask [True, False, ...]", _dropped_is_null),
    ),
    mistakes=(
        Mistake("dropped captions by masking all their words: a row with nothing to attend to",
                "with every key masked, each image token's cross-attention row is all -inf: NaN (or, in a "
                "guarded kernel, zeros that carry nothing to learn). Replace the caption by the null caption "
                "instead: tokens [null_id, pad_id, ...], mask [True, False, ...].", _drop_by_masking),
        Mistake("the null token is masked too: its row of the mask is all False",
                "the null caption must be visible: its mask is [True, False, ..., False], so attention has one "
                "key, the null token, to read.", _drop_null_masked),
        Mistake("drop inverted: the kept captions were replaced",
                "drop is True for the captions to REPLACE: torch.where(drop[:, None], null, caption).",
                _drop_inverted),
        Mistake("the mask was not changed: the null caption keeps the old caption's mask",
                "the mask must describe the new caption: [True, False, ..., False] for a dropped one.",
                _drop_mask_unchanged),
        Mistake("only the first token replaced: the rest of the old caption is still there",
                "the null caption is one token followed by padding: every token after the first is pad_id.",
                _drop_first_token_only),
        Mistake("the null caption's mask is all True: it attends to its padding",
                "only the null token is real: mask [True, False, ..., False].", _drop_mask_all_true),
        Mistake("replaced by padding only: no null token",
                "the first token of a dropped caption is null_id, a learned token that stands for 'no caption'.",
                _drop_pads_only),
        Mistake("the null caption padded with 0, not with pad_id",
                "pad_id is an argument because a tokenizer may pad with any id: fill the null caption with "
                "pad_id itself (torch.full_like(text_tokens, pad_id)), not with zeros.", _drop_padded_with_0),
        Mistake("the null caption is null_id everywhere: its padding is null_id too",
                "only the first token is null_id; the rest of a null caption is padding, pad_id.", _drop_all_null),
        Mistake("null_id and pad_id swapped: the null caption is [pad_id, null_id, ...]",
                "a null caption starts with the null token and is padded after it: [null_id, pad_id, ..., pad_id].",
                _drop_ids_swapped),
        Mistake("only the mask fixed: the dropped captions' words are still there",
                "with mask [True, False, ...] the first WORD of the old caption is read as if it meant 'no "
                "caption': replace the tokens too, by [null_id, pad_id, ..., pad_id].", _drop_mask_only),
        Mistake("every caption replaced by the null caption, dropped or not",
                "replace only the rows where drop is True (torch.where(drop[:, None], null, caption)); the others "
                "come back as they were.", _drop_everything),
        Mistake(IN_PLACE, "", _drop_in_place, in_place=True),
    ),
    planted="dropped captions by masking all their words: a row with nothing to attend to",
)

# ---------------------------------------------------------------------------------------------
# 06.guidance
# ---------------------------------------------------------------------------------------------


def _guidance_case(rng, shape, scale, note):
    return Case({"cond_logits": tensor(2.0 * rng.normal(size=shape)),
                 "uncond_logits": tensor(2.0 * rng.normal(size=shape))}, {"scale": scale}, note=note)


def _guidance_cases(rng: np.random.Generator) -> list[Case]:
    B, L, V = int(rng.integers(2, 5)), int(rng.integers(2, 6)), int(rng.integers(5, 13))
    return [
        _guidance_case(rng, (B, V), round(float(rng.uniform(1.5, 6.0)), 2), "logits (B, V)"),
        _guidance_case(rng, (2, L, V), round(float(rng.uniform(0.2, 0.8)), 2), "logits (B, L, V), scale below 1"),
        _guidance_case(rng, (V,), round(float(rng.uniform(2.0, 8.0)), 2), "one row of logits"),
    ]


def _cfg_swapped(cond_logits, uncond_logits, scale):
    return cond_logits + scale * (uncond_logits - cond_logits)


def _cfg_sign(cond_logits, uncond_logits, scale):
    return uncond_logits - scale * (cond_logits - uncond_logits)


def _cfg_cond_only(cond_logits, uncond_logits, scale):
    return scale * cond_logits


def _cfg_average(cond_logits, uncond_logits, scale):
    return (cond_logits + uncond_logits) / 2


def _cfg_no_uncond(cond_logits, uncond_logits, scale):
    return scale * (cond_logits - uncond_logits)


def _cfg_from_cond(cond_logits, uncond_logits, scale):
    return cond_logits + scale * (cond_logits - uncond_logits)


def _cfg_probabilities(cond_logits, uncond_logits, scale):
    p_cond, p_uncond = cond_logits.softmax(-1), uncond_logits.softmax(-1)
    return p_uncond + scale * (p_cond - p_uncond)


def _cfg_scale_minus_one(cond_logits, uncond_logits, scale):
    return uncond_logits + (scale - 1) * (cond_logits - uncond_logits)


def _cfg_log_softmax_first(cond_logits, uncond_logits, scale):
    cond, uncond = cond_logits.log_softmax(-1), uncond_logits.log_softmax(-1)
    return uncond + scale * (cond - uncond)


def _cfg_softmax_after(cond_logits, uncond_logits, scale):
    return (uncond_logits + scale * (cond_logits - uncond_logits)).softmax(-1)


def _cfg_in_place(cond_logits, uncond_logits, scale):
    uncond_logits += scale * (cond_logits - uncond_logits)
    return uncond_logits


def _at_scale(scale: float, expected: str):
    def test(fn, case, outputs):
        (cond, uncond), _ = case.fresh()
        got = np.asarray(torch.as_tensor(fn(cond, uncond, scale=scale)).detach(), dtype=float)
        want = (cond if expected == "cond_logits" else uncond).numpy()
        if got.shape != want.shape or not np.allclose(got, want, rtol=1e-9, atol=1e-12):
            return f"with scale = {scale:g} it does not return {expected}"
        return None

    return Property(f"scale {scale:g} must give {expected}", test)


GUIDANCE = FunctionTask(
    id="06.guidance",
    title="Classifier-free guidance",
    points=2,
    name="classifier_free_guidance",
    signature="classifier_free_guidance(cond_logits, uncond_logits, scale) -> logits",
    cases=_guidance_cases,
    reference=reference.classifier_free_guidance,
    outputs=("logits",),
    properties=(
        has_shapes(lambda c: (tuple(c.inputs["cond_logits"].shape),), "those of the logits, (..., V)"),
        _at_scale(1.0, "cond_logits"),
        _at_scale(0.0, "uncond_logits"),
    ),
    mistakes=(
        Mistake("cond and uncond swapped: cond + s · (uncond - cond) pushes towards no caption",
                "start from the unconditional logits and move towards the caption: "
                "uncond + s · (cond - uncond).", _cfg_swapped),
        Mistake("sign flipped: uncond - s · (cond - uncond) pushes away from the caption",
                "add the difference: uncond + s · (cond - uncond).", _cfg_sign),
        Mistake("scaled the conditional logits only: s · cond",
                "s · cond is a lower temperature, not guidance: what matters is how the caption CHANGES the "
                "logits, cond - uncond: uncond + s · (cond - uncond).", _cfg_cond_only),
        Mistake("averaged cond and uncond",
                "guidance extrapolates, it does not average: uncond + s · (cond - uncond), with s > 1 going "
                "beyond cond.", _cfg_average),
        Mistake("forgot to add uncond back: s · (cond - uncond)",
                "the difference is a direction; start from the unconditional logits: uncond + s · (cond - uncond).",
                _cfg_no_uncond),
        Mistake("cond + s · (cond - uncond): that is guidance with scale s + 1",
                "with this course's scale, s = 1 must give the conditional logits: uncond + s · (cond - uncond).",
                _cfg_from_cond),
        Mistake("combined the probabilities, not the logits",
                "guidance works on logits (log-probabilities up to a constant); mixing softmaxed probabilities "
                "gives negative numbers for s > 1. Combine the logits themselves.", _cfg_probabilities),
        Mistake("uncond + (s - 1) · (cond - uncond): that is guidance with scale s - 1",
                "with this course's scale, s = 1 must give the conditional logits and s = 0 the unconditional "
                "ones: uncond + s · (cond - uncond).", _cfg_scale_minus_one),
        Mistake("log_softmax taken first: right up to a constant per row, but not the logits asked for",
                "the guided logits are built from the logits themselves: uncond + s · (cond - uncond), without "
                "normalising either first (the sampler's softmax does that later).", _cfg_log_softmax_first),
        Mistake("returned probabilities: a softmax of the guided logits",
                "return the guided LOGITS, (..., V); the sampler applies the temperature, top-k and softmax after.",
                _cfg_softmax_after),
        Mistake(IN_PLACE, "", _cfg_in_place, in_place=True),
    ),
)

# ---------------------------------------------------------------------------------------------
# 06.top_k
# ---------------------------------------------------------------------------------------------


def _ties_sorted(fn):
    """The harness of the tasks whose right answer is one of several when logits tie (06.top_k,
    06.sampling_probs): ``fn``'s output with its values sorted (largest first) within each group of equal
    logits of a row, so that every right way to break a tie gives the same canonical output. Keeping
    *which* of two equal logits is no mistake; keeping both where only one may stay still is. An output
    of another shape or kind comes back as it is, for the judge to describe."""

    def run(logits, *args, **options):
        key = to_numpy(logits).astype(np.float64)  # (..., V), read before the call: it may change its input
        out = fn(logits, *args, **options)
        try:
            got = to_numpy(out)
        except Exception:
            return out
        if got.shape != key.shape or got.dtype.kind not in "biuf" or key.ndim == 0:
            return out
        return _sorted_within_ties(key, got.astype(np.float64))

    return run


def _sorted_within_ties(key: np.ndarray, values: np.ndarray) -> np.ndarray:
    rows, V = key.reshape(-1, key.shape[-1]), key.shape[-1]
    out = values.reshape(-1, V).copy()  # (rows, V)
    for r, row in enumerate(rows):
        _, group, counts = np.unique(row, return_inverse=True, return_counts=True)
        for g in np.flatnonzero(counts > 1):
            places = np.flatnonzero(group.reshape(-1) == g)
            out[r, places] = np.sort(out[r, places])[::-1]
    return out.reshape(values.shape)


def _tied_logits(rng: np.random.Generator, B: int, V: int, k: int, whole_tensor: bool = True) -> np.ndarray:
    """``(B, V)`` logits in which every row's k-th and (k + 1)-th largest are equal, and no other two
    entries of the tensor are: so keeping the tie is the only difference a tie makes, and the mistakes
    whose cut falls elsewhere (k - 1, k + 1, the k smallest, and with ``whole_tensor`` the whole
    tensor's top k) see no tie."""
    while True:
        rows = []
        for b in range(B):
            values = np.sort(rng.choice(np.arange(-48, 48), size=V, replace=False) / 4 + b / 64)[::-1]  # (V,)
            values[k] = values[k - 1]
            rows.append(rng.permutation(values))
        logits = np.stack(rows)  # (B, V)
        flat = np.sort(logits.reshape(-1))[::-1]
        if not whole_tensor or flat[k - 1] != flat[k]:  # the whole tensor's k-th largest is not tied
            return logits


def _top_k_cases(rng: np.random.Generator) -> list[Case]:
    L, V = int(rng.integers(2, 6)), int(rng.integers(6, 13))  # L < V
    B2, V2 = int(rng.integers(2, 5)), int(rng.integers(5, 12))  # B2 < V2
    n = int(rng.integers(5, 9))
    V4 = int(rng.integers(5, 12))
    k5 = int(rng.integers(2, 5))
    B5, V5 = int(rng.choice([b for b in (2, 3) if b != k5] or [2])), 2 * k5 + int(rng.integers(1, 4))
    normal = rng.normal
    return [
        Case({"logits": tensor(2.0 * normal(size=(2, L, V)))}, {"k": int(rng.integers(2, V - 1))},
             note="logits (B, L, V)"),
        Case({"logits": tensor(2.0 * normal(size=(B2, V2)))}, {"k": 1}, note="k = 1: only the largest"),
        # A square matrix: the one shape on which a threshold without its axis runs, so it can be named.
        Case({"logits": tensor(2.0 * normal(size=(n, n)))}, {"k": int(rng.integers(2, n - 1))},
             note="a square matrix"),
        Case({"logits": tensor(2.0 * normal(size=V4))}, {"k": int(rng.integers(2, V4 - 1))}, note="one row"),
        # Either of the two tied logits may stay (the harness accepts both), but only one of them.
        Case({"logits": tensor(_tied_logits(rng, B5, V5, k5))}, {"k": k5},
             note=f"ties: in every row the {k5}-th and {k5 + 1}-th largest logits are equal"),
    ]


def _keep_from(logits, kth, strict=False, fill=NEG_INF):
    keep = logits > kth if strict else logits >= kth
    return torch.where(keep, logits, torch.full_like(logits, fill))


def _tk_smallest(logits, k):
    top = torch.topk(logits, k, dim=-1, largest=False)
    return torch.full_like(logits, NEG_INF).scatter(-1, top.indices, top.values)


def _tk_k_plus_one(logits, k):
    return _keep_from(logits, torch.topk(logits, k + 1, dim=-1).values[..., -1:])


def _tk_k_minus_one(logits, k):
    return _keep_from(logits, torch.topk(logits, k, dim=-1).values[..., -1:], strict=True)


def _tk_zeros(logits, k):
    return _keep_from(logits, torch.topk(logits, k, dim=-1).values[..., -1:], fill=0.0)


def _tk_large_negative(logits, k):
    return _keep_from(logits, torch.topk(logits, k, dim=-1).values[..., -1:], fill=-1e9)


def _tk_positive_inf(logits, k):
    return _keep_from(logits, torch.topk(logits, k, dim=-1).values[..., -1:], fill=POS_INF)


def _tk_threshold_axis(logits, k):
    return _keep_from(logits, torch.topk(logits, k, dim=-1).values[..., -1])


def _tk_dim0(logits, k):
    top = torch.topk(logits, k, dim=0)
    return torch.full_like(logits, NEG_INF).scatter(0, top.indices, top.values)


def _tk_whole_tensor(logits, k):
    top = torch.topk(logits.reshape(-1), k)
    return torch.full_like(logits, NEG_INF).reshape(-1).scatter(0, top.indices, top.values).reshape(logits.shape)


def _tk_ties_kept(logits, k):
    return _keep_from(logits, torch.topk(logits, k, dim=-1).values[..., -1:])


def _scattered(logits, k, fill):
    top = torch.topk(logits, k, dim=-1)
    return torch.full_like(logits, fill).scatter(-1, top.indices, top.values)


def _tk_scattered_into_zeros(logits, k):
    return _scattered(logits, k, 0.0)


def _tk_scattered_into_large_negative(logits, k):
    return _scattered(logits, k, -1e9)


def _tk_values_only(logits, k):
    return torch.topk(logits, k, dim=-1).values


def _tk_sorted(logits, k):
    values = torch.sort(logits, dim=-1, descending=True).values
    values[..., k:] = NEG_INF
    return values


def _tk_dim1(logits, k):
    top = torch.topk(logits, k, dim=1)
    return torch.full_like(logits, NEG_INF).scatter(1, top.indices, top.values)


def _tk_kthvalue_smallest(logits, k):
    return _keep_from(logits, torch.kthvalue(logits, k, dim=-1, keepdim=True).values)


def _tk_in_place(logits, k):
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    logits[logits < kth] = NEG_INF
    return logits


def _k_kept(fn, case, outputs):
    k = case.options["k"]
    kept = np.isfinite(outputs[0]).sum(axis=-1)
    bad = kept != k
    if bad.any():
        row = np.unravel_index(int(np.flatnonzero(bad)[0]), bad.shape)
        return f"row {where(row)} keeps {int(kept[row])} logits (finite values), not k = {k}"
    not_minus_inf = ~np.isfinite(outputs[0]) & (outputs[0] != NEG_INF)  # +inf or NaN
    if not_minus_inf.any():
        return f"a dropped logit, at {first(not_minus_inf)}, is {first_value(outputs[0], not_minus_inf)}, not -inf"
    return None


def _largest_unchanged(fn, case, outputs):
    logits = case.inputs["logits"].numpy()
    got = outputs[0]
    kept = np.isfinite(got)
    changed = kept & (got != logits)
    if changed.any():
        return f"the kept logit at {first(changed)} is {first_value(got, changed):.6g}, not the original " \
               f"{first_value(logits, changed):.6g}"
    smallest_kept = np.where(kept, logits, np.inf).min(axis=-1, keepdims=True)
    dropped_above = ~kept & (logits > smallest_kept)
    if dropped_above.any():
        return f"the logit at {first(dropped_above)} is dropped, but a smaller one in its row is kept"
    return None


TOP_K = FunctionTask(
    id="06.top_k",
    title="Top-k filtering",
    points=3,
    name="top_k_filter",
    signature="top_k_filter(logits, k) -> logits",
    cases=_top_k_cases,
    reference=reference.top_k_filter,
    outputs=("logits",),
    properties=(
        has_shapes(lambda c: (tuple(c.inputs["logits"].shape),), "those of the logits, (..., V)"),
        Property("exactly k logits of each row must be kept (the rest -inf)", _k_kept),
        Property("the kept logits must be the k largest of their row, unchanged", _largest_unchanged),
    ),
    harness=_ties_sorted,
    mistakes=(
        Mistake("kept every logit tied with the k-th largest: more than k in a row with ties",
                "logits >= the k-th largest (or masking logits < it) keeps all the ties, and then more than k "
                "tokens can be drawn. Keep exactly k positions: the indices that torch.topk(logits, k, dim=-1) "
                "returns, scattered into a tensor of -inf (any k of the tied ones is right).", _tk_ties_kept),
        Mistake("kept the k smallest logits",
                "keep the k LARGEST: torch.topk(logits, k, dim=-1) returns them (largest=True by default).",
                _tk_smallest),
        Mistake("kept k + 1 logits per row (off by one)",
                "the k-th largest is torch.topk(logits, k, dim=-1).values[..., -1:], index k - 1 of the sorted "
                "values, not index k.", _tk_k_plus_one),
        Mistake("kept k - 1 logits per row (off by one)",
                "the k-th largest itself stays: a cut with > (or masking <=) drops it.", _tk_k_minus_one),
        Mistake("set the others to 0 instead of -inf",
                "a logit of 0 still has probability e^0 / Σ e^ℓ > 0 after the softmax; -inf gives exactly 0: "
                "float('-inf').", _tk_zeros),
        Mistake("set the others to a large negative number (such as -1e9) instead of -inf",
                "-1e9 is a habit from attention masks and almost works, but the filtered logits stay finite and "
                "their probability is tiny, not exactly 0: use float('-inf').", _tk_large_negative),
        Mistake("set the others to +inf instead of -inf: the dropped tokens become the most likely",
                "float('inf') is larger than every logit: the dropped tokens become the most likely ones, and the "
                "softmax turns inf - inf into NaN. Fill them with float('-inf'), which gives probability exactly 0.",
                _tk_positive_inf),
        Mistake("the threshold lost its axis: compared with the k-th largest of another row",
                "topk(...).values[..., -1] has shape (...), one number per row, which broadcasts along the "
                "wrong axis: keep the last axis with values[..., -1:] (or [..., -1, None]).", _tk_threshold_axis),
        Mistake("top k over the wrong axis (dim=0)",
                "the vocabulary is the last axis: torch.topk(logits, k, dim=-1), and scatter along -1.", _tk_dim0),
        Mistake("kept the k largest of the whole tensor, not of each row",
                "every row (every position of every image) gets its own k: topk along dim=-1, no flattening.",
                _tk_whole_tensor),
        Mistake("scattered the top k into a tensor of zeros, not of -inf",
                "a logit of 0 still has probability e^0 / Σ e^ℓ > 0 after the softmax: start from "
                "torch.full_like(logits, float('-inf')).", _tk_scattered_into_zeros),
        Mistake("scattered the top k into a tensor of -1e9 (a large negative number), not of -inf",
                "-1e9 almost works, but the dropped logits stay finite and their probability is tiny, not exactly "
                "0: start from torch.full_like(logits, float('-inf')).", _tk_scattered_into_large_negative),
        Mistake("returned the k largest values themselves, (..., k), not the filtered logits (..., V)",
                "the sampler needs one logit per token of the vocabulary: keep the shape (..., V), with the k "
                "largest where they were and -inf elsewhere.", _tk_values_only),
        Mistake("returned the row sorted: the kept logits are no longer at their tokens' places",
                "position j of a row is token j: keep every logit where it is, and set the others to -inf "
                "(torch.topk's indices say where the k largest are).", _tk_sorted),
        Mistake("torch.kthvalue(logits, k) is the k-th SMALLEST: kept all but the k - 1 smallest",
                "kthvalue counts from the bottom: the k-th largest of V logits is torch.kthvalue(logits, V - k + 1, "
                "dim=-1), and with ties a threshold keeps them all; torch.topk(logits, k, dim=-1) gives the k "
                "largest directly.", _tk_kthvalue_smallest),
        Mistake("top k over dim=1: right for (B, V) logits only",
                "the vocabulary is the LAST axis whatever the shape, (B, V) or (B, L, V): dim=-1.", _tk_dim1),
        Mistake(IN_PLACE, "", _tk_in_place, in_place=True),
    ),
)

# ---------------------------------------------------------------------------------------------
# 06.sampling_probs
# ---------------------------------------------------------------------------------------------


def sampling_probs_reference(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None) -> torch.Tensor:
    r"""The distribution :func:`~crossmodal_edu.dalle.guidance.sample_from_logits` draws each row's token
    from: :math:`p = \operatorname{softmax}(\operatorname{topk}(\ell) / T)`, and at ``temperature=0``
    all the probability on the largest logit (greedy). ``logits`` ``(B, V)`` -> ``(B, V)``."""
    if temperature == 0:
        return torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).to(logits.dtype)  # (B, V)
    return torch.softmax(reference.top_k_filter(logits, top_k) / temperature, dim=-1)  # (B, V)


def _sampling_cases(rng: np.random.Generator) -> list[Case]:
    """Temperatures below and above 1 with and without top-k, greedy, the defaults (left out of the call,
    as the hidden test leaves top_k out), logits already -inf, a low temperature on large logits (where
    ``logits / T`` is in the thousands), and ties at the k-th largest and at the maximum (any of the tied
    tokens may be the one kept: the harness accepts each)."""
    def logits(B=None, scale=2.0):
        B, V = int(rng.integers(2, 5)) if B is None else B, int(rng.integers(6, 13))
        return tensor(scale * rng.normal(size=(B, V))), V

    (l1, V1), (l2, _), (l3, V3), (l4, V4), (l5, _), (l6, V6) = (logits(), logits(), logits(), logits(), logits(1),
                                                                   logits(scale=40.0))
    cool, warm = round(float(rng.uniform(0.3, 0.8)), 2), round(float(rng.uniform(1.5, 3.0)), 2)
    l2[0, rng.choice(l2.shape[1], size=2, replace=False)] = NEG_INF  # tokens ruled out before (a guided -inf)
    k7 = int(rng.integers(2, 4))
    tied = tensor(_tied_logits(rng, int(rng.integers(2, 4)), 2 * k7 + int(rng.integers(1, 4)), k7))
    tied_max = tensor(_tied_logits(rng, int(rng.integers(2, 4)), int(rng.integers(5, 9)), 1, whole_tensor=False))
    return [
        Case({"logits": l1}, {"temperature": cool, "top_k": int(rng.integers(2, V1 - 2))},
             note="below 1: sharper"),
        Case({"logits": l2}, {"temperature": warm, "top_k": None}, note="above 1: flatter; no top-k; two logits -inf"),
        Case({"logits": l3}, {"temperature": 0.0, "top_k": int(rng.integers(2, V3 - 2))}, note="greedy"),
        Case({"logits": l4}, {"temperature": round(float(rng.uniform(1.5, 3.0)), 2),
                              "top_k": int(rng.integers(2, V4 - 2))}, note="above 1, with top-k"),
        Case({"logits": l5}, note="one row; temperature and top_k left at their defaults (1.0 and None)"),
        Case({"logits": l6}, {"temperature": 0.02, "top_k": int(rng.integers(2, V6 - 2))},
             note="large logits at a low temperature: logits / T in the thousands"),
        Case({"logits": tied}, {"temperature": round(float(rng.uniform(0.4, 0.9)), 2), "top_k": k7},
             note=f"ties: the {k7}-th and {k7 + 1}-th largest logits of every row are equal"),
        Case({"logits": tied_max}, {"temperature": 0.0}, note="greedy, with the two largest logits of every row equal"),
    ]


def _one_hot(logits):
    return torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).to(logits.dtype)


def _sp_multiplied(logits, temperature=1.0, top_k=None):
    if temperature == 0:
        return _one_hot(logits)
    return torch.softmax(reference.top_k_filter(logits, top_k) * temperature, dim=-1)


def _sp_after_softmax(logits, temperature=1.0, top_k=None):
    if temperature == 0:
        return _one_hot(logits)
    return torch.softmax(reference.top_k_filter(logits, top_k), dim=-1) / temperature


def _sp_no_top_k(logits, temperature=1.0, top_k=None):
    if temperature == 0:
        return _one_hot(logits)
    return torch.softmax(logits / temperature, dim=-1)


def _sp_log_probs(logits, temperature=1.0, top_k=None):
    if temperature == 0:
        return _one_hot(logits)
    return torch.log_softmax(reference.top_k_filter(logits, top_k) / temperature, dim=-1)


def _sp_no_greedy(logits, temperature=1.0, top_k=None):
    return torch.softmax(reference.top_k_filter(logits, top_k) / temperature, dim=-1)


def _sp_greedy_index(logits, temperature=1.0, top_k=None):
    if temperature == 0:
        return logits.argmax(-1)
    return torch.softmax(reference.top_k_filter(logits, top_k) / temperature, dim=-1)


def _sp_top_k_on_probs(logits, temperature=1.0, top_k=None):
    if temperature == 0:
        return _one_hot(logits)
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_k is None:
        return probs
    kth = torch.topk(probs, top_k, dim=-1).values[..., -1:]
    return torch.where(probs >= kth, probs, torch.zeros_like(probs))


def _sp_batch_axis(logits, temperature=1.0, top_k=None):
    if temperature == 0:
        return _one_hot(logits)
    return torch.softmax(reference.top_k_filter(logits, top_k) / temperature, dim=0)


def _ties_kept_filter(logits, k):
    """A learner's top-k filter that keeps every logit tied with the k-th largest (``logits >= kth``)."""
    return logits if k is None else _keep_from(logits, torch.topk(logits, k, dim=-1).values[..., -1:])


def _sp_ties_kept(logits, temperature=1.0, top_k=None):
    if temperature == 0:
        return _one_hot(logits)
    return torch.softmax(_ties_kept_filter(logits, top_k) / temperature, dim=-1)


def _sp_multiplied_ties_kept(logits, temperature=1.0, top_k=None):
    if temperature == 0:
        return _one_hot(logits)
    return torch.softmax(_ties_kept_filter(logits, top_k) * temperature, dim=-1)


def _sp_after_softmax_ties_kept(logits, temperature=1.0, top_k=None):
    if temperature == 0:
        return _one_hot(logits)
    return torch.softmax(_ties_kept_filter(logits, top_k), dim=-1) / temperature


def _sp_batch_axis_ties_kept(logits, temperature=1.0, top_k=None):
    if temperature == 0:
        return _one_hot(logits)
    return torch.softmax(_ties_kept_filter(logits, top_k) / temperature, dim=0)


def _sp_top_k_on_probs_exactly_k(logits, temperature=1.0, top_k=None):
    if temperature == 0:
        return _one_hot(logits)
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_k is None:
        return probs
    top = torch.topk(probs, top_k, dim=-1)
    return torch.zeros_like(probs).scatter(-1, top.indices, top.values)


def _sp_greedy_split(logits, temperature=1.0, top_k=None):
    if temperature == 0:
        top = (logits == logits.max(-1, keepdim=True).values).to(logits.dtype)
        return top / top.sum(-1, keepdim=True)
    return sampling_probs_reference(logits, temperature, top_k)


def _sp_greedy_every_max(logits, temperature=1.0, top_k=None):
    if temperature == 0:
        return (logits == logits.max(-1, keepdim=True).values).to(logits.dtype)
    return sampling_probs_reference(logits, temperature, top_k)


def _sp_by_hand(logits, temperature=1.0, top_k=None):
    if temperature == 0:
        return _one_hot(logits)
    e = torch.exp(reference.top_k_filter(logits, top_k) / temperature)
    return e / e.sum(-1, keepdim=True)


def _sp_shifted_by_min(logits, temperature=1.0, top_k=None):
    if temperature == 0:
        return _one_hot(logits)
    scaled = reference.top_k_filter(logits, top_k) / temperature
    e = torch.exp(scaled - scaled.min(-1, keepdim=True).values)
    return e / e.sum(-1, keepdim=True)


def _outside_top_k_zero(fn, case, outputs):
    k = case.options.get("top_k")
    if k is None or case.options.get("temperature", 1.0) == 0:
        return None
    logits = case.inputs["logits"].numpy()
    kth = np.sort(logits, axis=-1)[..., -k][..., None]
    bad = (logits < kth) & (outputs[0] != 0)
    if bad.any():
        return f"the token at {first(bad)} is outside the top {k} but gets probability {first_value(outputs[0], bad):.3g}"
    return None


def _greedy_is_argmax(fn, case, outputs):
    if case.options.get("temperature", 1.0) != 0:
        return None
    logits = case.inputs["logits"].numpy()
    on_argmax = np.take_along_axis(outputs[0], logits.argmax(-1)[:, None], axis=-1)[:, 0]
    bad = ~np.isclose(on_argmax, 1.0)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        return f"row {row} gives its largest logit probability {on_argmax[row]:.3g}, not 1"
    return None


SAMPLING_PROBS = FunctionTask(
    id="06.sampling_probs",
    title="Temperature, top-k and greedy",
    points=3,
    name="sampling_probs",
    signature="sampling_probs(logits, temperature=1.0, top_k=None) -> probs",
    cases=_sampling_cases,
    reference=sampling_probs_reference,
    outputs=("probs",),
    harness=_ties_sorted,
    properties=(
        has_shapes(lambda c: (tuple(c.inputs["logits"].shape),), "(B, V), that of the logits"),
        finite(0, "probs"),
        between_0_and_1(0, "probs"),
        sums_to_one(0, lambda c: -1, "each row's probabilities must sum to 1", "the probabilities of row"),
        Property("tokens outside the top k must get probability 0", _outside_top_k_zero),
        Property("at temperature 0 all the probability must be on the largest logit", _greedy_is_argmax),
    ),
    mistakes=(
        Mistake("multiplied the logits by the temperature instead of dividing",
                "p = softmax(ℓ / T): a temperature below 1 must sharpen the distribution, so divide.",
                _sp_multiplied),
        Mistake("returned log-probabilities (log_softmax), not probabilities",
                "a sampler draws from probabilities: softmax, not log_softmax (each row must be positive and "
                "sum to 1).", _sp_log_probs),
        Mistake("temperature applied after the softmax",
                "softmax(ℓ) / T is no longer a distribution (and normalising it again undoes T): divide the "
                "logits, then take the softmax.", _sp_after_softmax),
        Mistake("top_k ignored",
                "when top_k is not None, filter first (logits = top_k_filter(logits, top_k)), then divide by T.",
                _sp_no_top_k),
        Mistake("no greedy case: at temperature 0, ℓ / 0 gives inf and then NaN",
                "temperature 0 means greedy: all the probability on the largest logit, "
                "torch.nn.functional.one_hot(logits.argmax(-1), V), without dividing.", _sp_no_greedy),
        Mistake("at temperature 0, returned the argmax instead of a distribution",
                "return probabilities (B, V) at every temperature: a one-hot row, 1 on the argmax, 0 elsewhere.",
                _sp_greedy_index),
        Mistake("top-k applied to the probabilities without renormalising",
                "zeroing probabilities leaves rows that sum to less than 1: set the logits outside the top k to "
                "-inf BEFORE the softmax.", _sp_top_k_on_probs),
        Mistake("softmax over the batch axis, not the vocabulary",
                "each row is one token's distribution over the vocabulary: softmax(..., dim=-1).", _sp_batch_axis),
        Mistake("top-k kept every logit tied with the k-th largest: more than top_k tokens can be drawn",
                "masking logits < the k-th largest keeps all the ties: keep exactly top_k positions per row, "
                "the indices torch.topk returns (your top_k_filter from the task before, if it passes).",
                _sp_ties_kept),
        Mistake("multiplied the logits by the temperature instead of dividing (and top-k kept every tie with the "
                "k-th largest)",
                "p = softmax(ℓ / T): divide. Then check your top-k on tied logits: it must keep exactly top_k "
                "per row.", _sp_multiplied_ties_kept),
        Mistake("temperature applied after the softmax (and top-k kept every tie with the k-th largest)",
                "divide the logits by T, then take the softmax. Then check your top-k on tied logits: it must "
                "keep exactly top_k per row.", _sp_after_softmax_ties_kept),
        Mistake("softmax over the batch axis, not the vocabulary (and top-k kept every tie with the k-th largest)",
                "softmax(..., dim=-1), over each row's vocabulary. Then check your top-k on tied logits: it must "
                "keep exactly top_k per row.", _sp_batch_axis_ties_kept),
        Mistake("top-k applied to the probabilities (the top k of them scattered into zeros) without renormalising",
                "zeroing probabilities leaves rows that sum to less than 1: set the logits outside the top k to "
                "-inf BEFORE the softmax.", _sp_top_k_on_probs_exactly_k),
        Mistake("softmax written out without subtracting the max: e^(ℓ / T) overflows at a low temperature",
                "ℓ / T reaches the thousands when T is small, and e^1000 is inf in float64: subtract each row's "
                "maximum first, or use torch.softmax(..., dim=-1), which does.", _sp_by_hand),
        Mistake("softmax shifted by the row's minimum, not its maximum",
                "the shift that keeps e^x finite is the MAXIMUM (every exponent <= 0); the minimum is -inf for a "
                "token ruled out, and makes the others overflow: use torch.softmax(..., dim=-1).",
                _sp_shifted_by_min),
        Mistake("greedy split between tied largest logits: greedy decoding picks one token",
                "at temperature 0 the row is one-hot even when two logits are equal: "
                "torch.nn.functional.one_hot(logits.argmax(-1), V) picks one of them.", _sp_greedy_split),
        Mistake("greedy gave probability 1 to every largest logit: with a tie the row sums to 2",
                "(logits == max) is True for every tied maximum: use one_hot(logits.argmax(-1), V), which picks "
                "one.", _sp_greedy_every_max),
    ),
    rtol=1e-5,
    atol=1e-8,
)


# ---------------------------------------------------------------------------------------------
# 06.joint_mask
# ---------------------------------------------------------------------------------------------


def joint_mask_reference(context_mask, num_image_tokens):
    from crossmodal_edu.dalle.joint import joint_attention_mask

    return joint_attention_mask(context_mask, num_image_tokens)


def _joint_case(rng, B, L, T, full_first, note):
    lengths = rng.integers(1, L, size=B) if L > 1 else np.ones(B, dtype=int)
    if full_first:
        lengths[0] = L
    mask = torch.from_numpy(np.arange(L)[None, :] < lengths[:, None])
    return Case({"context_mask": mask, "num_image_tokens": int(T)}, note=note)


def _joint_cases(rng: np.random.Generator) -> list[Case]:
    L, T = distinct(rng, 2, 3, 8)
    L2 = int(rng.integers(3, 7))
    B = int(rng.choice([b for b in (2, 3, 4) if b not in (L, T)]))
    return [
        _joint_case(rng, B, L, T, True, "caption 0 has no padding"),
        _joint_case(rng, 2, L2, L2, False, "as many image tokens as words"),  # L = T: a transpose runs
        _joint_case(rng, 3, L, 1, False, "one image token"),
    ]


def _jm(context_mask, T, words_seen=True, padding_hidden=True, word_itself=True, caption_sees_image=False,
        causal=True, diagonal=0, caption_causal=False, first_caption_only=False, inverted=False):
    """The mask with one thing changed (see the catalogue below)."""
    B, L = context_mask.shape
    keys = context_mask[:1].expand(B, L) if first_caption_only else context_mask
    words = (keys if padding_hidden else torch.ones_like(keys))[:, None, :].expand(B, L + T, L).clone()
    if caption_causal:
        words[:, :L] &= torch.ones(L, L, dtype=torch.bool).tril()
    if word_itself:
        words[:, :L] |= torch.eye(L, dtype=torch.bool)
    if not words_seen:
        words[:, L:] = False
    image = torch.zeros(B, L + T, T, dtype=torch.bool)
    image[:, :L] = caption_sees_image
    image[:, L:] = torch.ones(T, T, dtype=torch.bool).tril(diagonal) if causal else True
    mask = torch.cat([words, image], dim=2)
    return ~mask if inverted else mask


def _jm_padded_rows_see_only_themselves(context_mask, num_image_tokens):
    mask = _jm(context_mask, num_image_tokens)
    L = context_mask.shape[1]
    padded = ~context_mask  # (B, L): rows of padded words
    eye = torch.eye(L, dtype=torch.bool)
    mask[:, :L, :L] = torch.where(padded[:, :, None], eye, mask[:, :L, :L])
    return mask


def _jm_variant(**change):
    return lambda context_mask, num_image_tokens: _jm(context_mask, num_image_tokens, **change)


def _jm_triu(context_mask, num_image_tokens):
    mask = _jm(context_mask, num_image_tokens)
    L = context_mask.shape[1]
    mask[:, L:, L:] = torch.ones(num_image_tokens, num_image_tokens, dtype=torch.bool).triu()
    return mask


def _jm_in_place(context_mask, num_image_tokens):
    words = context_mask  # not a copy: the next line writes into the learner's input
    words[:, -1] = True  # "the last word is always seen"
    return _jm(context_mask, num_image_tokens)


def _joint_shapes(case: Case):
    B, L = case.inputs["context_mask"].shape
    n = L + case.inputs["num_image_tokens"]
    return (B, n, n), ()


def _joint_harness(fn):
    """``(mask, is bool)``: the mask as numbers, and 1.0 if it came as a bool tensor (a float mask would be
    added to the scores, not applied)."""

    def run(context_mask, num_image_tokens):
        mask = fn(context_mask, num_image_tokens)
        return mask, torch.tensor(float(isinstance(mask, torch.Tensor) and mask.dtype == torch.bool))

    return run


def _is_bool(fn, case, outputs):
    if outputs[1] != 1.0:
        return "the mask is not a bool tensor: True = may attend, False = hidden (a float mask is added to the scores)"
    return None


def _jm_numbers(context_mask, num_image_tokens):
    return _jm(context_mask, num_image_tokens).int()


def _no_image_future(fn, case, outputs):
    mask = outputs[0] > 0.5
    L = case.inputs["context_mask"].shape[1]
    image = mask[:, :, L:]  # (B, L + T, T): who sees which image token
    T = image.shape[-1]
    rows = np.arange(L + T)[:, None] - L  # image row i is row L + i
    future = image & (np.arange(T)[None, :] > rows)[None]
    if future.any():
        b, r, j = (int(i) for i in np.argwhere(future)[0])
        who = f"word {r}" if r < L else f"image token {r - L}"
        return f"{who} (row {r} of caption {b}) may see image token {j}, which comes after it"
    return None


def _padding_never_a_key(fn, case, outputs):
    mask = outputs[0] > 0.5
    real = to_numpy(case.inputs["context_mask"]).astype(bool)
    L = real.shape[1]
    seen = mask[:, :, :L] & ~real[:, None, :]  # padded words seen ...
    seen[:, :L] &= ~np.eye(L, dtype=bool)  # ... by a row other than their own
    if seen.any():
        b, r, j = (int(i) for i in np.argwhere(seen)[0])
        return f"row {r} of caption {b} may see word {j}, which is padding"
    return None


JOINT_MASK = FunctionTask(
    id="06.joint_mask",
    title="The joint-attention mask",
    points=3,
    name="joint_attention_mask",
    signature="joint_attention_mask(context_mask, num_image_tokens) -> mask (B, L + T, L + T), True = may attend",
    cases=_joint_cases,
    reference=joint_mask_reference,
    outputs=("mask", "is_bool"),
    unreported=("is_bool",),
    harness=_joint_harness,
    properties=(
        has_shapes(_joint_shapes, "(B, L + T, L + T): one row and one column per word and per image token"),
        Property("the mask must be a bool tensor", _is_bool),
        Property("no row may see an image token that comes after it (the caption's rows see none)", _no_image_future),
        Property("a padded word is never a key (only its own row sees it)", _padding_never_a_key),
    ),
    mistakes=(
        Mistake("the mask inverted (True = hidden)",
                "in this course True means 'may attend', as in scaled_dot_product_attention's boolean attn_mask.",
                _jm_variant(inverted=True)),
        Mistake("padded words are keys: context_mask not applied to the word columns",
                "every row sees the REAL words only: the word columns of each row are context_mask itself, "
                "context_mask[:, None, :], broadcast over the rows.", _jm_variant(padding_hidden=False)),
        Mistake("the caption's rows see the image tokens",
                "a model that draws one token at a time cannot let the caption read the image: those tokens "
                "are the future when the caption is encoded (and at sampling time they do not exist yet). The "
                "caption rows' image columns are all False.", _jm_variant(caption_sees_image=True)),
        Mistake("no causal mask among the image tokens",
                "image token i may see tokens 0..i only: the image block is lower-triangular, "
                "torch.ones(T, T, dtype=torch.bool).tril().", _jm_variant(causal=False)),
        Mistake("an image token cannot see itself (tril(-1))",
                "image token i sees tokens 0..i, itself included: .tril() with the diagonal, not .tril(-1).",
                _jm_variant(diagonal=-1)),
        Mistake("the causal block transposed (triu): each image token sees the later ones",
                "row i is the token that asks: it may see the columns j <= i, the lower triangle (tril).",
                _jm_triu),
        Mistake("the image rows cannot see the words",
                "the whole point of joint attention: each image token's one softmax runs over the real words "
                "and the image tokens before it.", _jm_variant(words_seen=False)),
        Mistake("a padded word's own row sees nothing (its softmax is 0/0)",
                "give each word's row its own word as well (| torch.eye(L)), so that no row is empty, even "
                "for a caption of padding only; no other row sees a padded word.", _jm_variant(word_itself=False)),
        Mistake("a padded word's row sees only itself, not the real words",
                "a padded word's row is like any word's: it sees every real word, and itself so that it is "
                "never empty.", _jm_padded_rows_see_only_themselves),
        Mistake("the caption made causal: a word sees only the words before it",
                "in this decoder the caption is read whole: its rows see every real word, both ways.",
                _jm_variant(caption_causal=True)),
        Mistake("one mask for the whole batch, from the first caption",
                "each caption has its own padding: the word columns come from context_mask[b] for row b of "
                "the batch.", _jm_variant(first_caption_only=True)),
        Mistake("0/1 numbers, not booleans",
                "return a bool tensor (True = may attend): attention adds a float mask to the scores instead of "
                "applying it, and an int mask is refused.", _jm_numbers),
        Mistake(IN_PLACE, "", _jm_in_place, in_place=True),
    ),
)


TASKS = (DECODER_BLOCK, TEACHER_FORCING, DROP_CAPTIONS, GUIDANCE, TOP_K, SAMPLING_PROBS, JOINT_MASK)
