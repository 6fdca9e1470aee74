"""Exercises 06's catalogued mistakes that the first catalogue lacked, written the way a learner would write
them, and right answers written in unusual ways, which must pass (imported by
tests/test_grading_mistakes.py, next to the first catalogue's learner versions there).

Independent of the catalogue's own versions in crossmodal_edu/grading/tasks/lesson06.py: each function
here is what one of a class of 30 might hand in, with that learner's idioms.
"""
import numpy as np
import torch
import torch.nn.functional as F

from crossmodal_edu.grading.spec import IN_PLACE


# --- 06.decoder_block ---------------------------------------------------------------------------

def block_without_norm1(x, context, context_mask, block):
    x = x + block.self_attention(x)
    x = x + block.cross_attention(block.norm2(x), context, context_mask)
    return x + block.mlp(block.norm3(x))


def block_without_norm2(x, context, context_mask, block):
    x = x + block.self_attention(block.norm1(x))
    x = x + block.cross_attention(x, context, context_mask)
    return x + block.mlp(block.norm3(x))


def block_without_norm3(x, context, context_mask, block):
    h = x + block.self_attention(block.norm1(x))
    h = h + block.cross_attention(block.norm2(h), context, context_mask)
    return h + block.mlp(h)


def block_one_norm(x, context, context_mask, block):
    norm = block.norm1
    x = x + block.self_attention(norm(x))
    x = x + block.cross_attention(norm(x), context, context_mask)
    return x + block.mlp(norm(x))


def block_norms_2_3_swapped(x, context, context_mask, block):
    x = x + block.self_attention(block.norm1(x))
    x = x + block.cross_attention(block.norm3(x), context, context_mask)
    return x + block.mlp(block.norm2(x))


def block_self_attention_replaces_x(x, context, context_mask, block):
    h = block.self_attention(block.norm1(x))
    h = h + block.cross_attention(block.norm2(h), context, context_mask)
    return h + block.mlp(block.norm3(h))


def block_mlp_replaces_x(x, context, context_mask, block):
    x = x + block.self_attention(block.norm1(x))
    x = x + block.cross_attention(block.norm2(x), context, context_mask)
    x = block.mlp(block.norm3(x))
    return x


def block_mask_inverted(x, context, context_mask, block):
    padding = ~context_mask  # "the mask says which words to hide"
    x = x + block.self_attention(block.norm1(x))
    x = x + block.cross_attention(block.norm2(x), context, padding)
    return x + block.mlp(block.norm3(x))


def block_mask_as_padding(x, context, context_mask, block):  # the same slip, written as a comparison
    x = x + block.self_attention(block.norm1(x))
    x = x + block.cross_attention(block.norm2(x), context, context_mask == False)  # noqa: E712
    return x + block.mlp(block.norm3(x))


def block_mlp_second(x, context, context_mask, block):
    x = x + block.self_attention(block.norm1(x))
    x = x + block.mlp(block.norm3(x))
    return x + block.cross_attention(block.norm2(x), context, context_mask)


def block_with_steps(x, context, context_mask, block):  # right: one step per line, torch.add
    steps = [(block.norm1, lambda h: block.self_attention(h)),
             (block.norm2, lambda h: block.cross_attention(h, context, context_mask)),
             (block.norm3, lambda h: block.mlp(h))]
    for norm, sublayer in steps:
        x = torch.add(x, sublayer(norm(x)))
    return x


def block_cloned_then_in_place(x, context, context_mask, block):  # right: in place on a copy
    out = x.clone()
    out += block.self_attention(block.norm1(out))
    out += block.cross_attention(block.norm2(out), context, context_mask)
    out += block.mlp(block.norm3(out))
    return out


# --- 06.teacher_forcing ------------------------------------------------------------------------

def forcing_start_over_first_token(image_tokens, start_id):
    inputs = image_tokens.clone()
    inputs[:, 0] = start_id
    return inputs, image_tokens


def forcing_start_last(image_tokens, start_id):
    start = torch.tensor([[start_id]] * image_tokens.shape[0])
    return torch.cat((image_tokens[:, :-1], start), dim=1), image_tokens


def forcing_rolled(image_tokens, start_id):
    return image_tokens.roll(1, dims=-1), image_tokens.clone()


def forcing_rolled_over_the_batch(image_tokens, start_id):
    inputs = torch.roll(image_tokens, shifts=1, dims=0)
    inputs[:, 0] = start_id
    return inputs, image_tokens


def forcing_padded(image_tokens, start_id):  # right: F.pad on the left
    return F.pad(image_tokens, (1, -1), value=start_id), image_tokens.clone()


def forcing_flat_roll(image_tokens, start_id):  # right: a roll of the flattened tokens, then <start>
    inputs = torch.roll(image_tokens, 1)  # no dims: the last token of each row moves to the next row's front
    inputs[:, 0] = start_id
    return inputs, image_tokens


def forcing_new_full(image_tokens, start_id):  # right: build, then copy in
    B, N = image_tokens.shape
    inputs = image_tokens.new_full((B, N), start_id)
    inputs[:, 1:] = image_tokens[:, : N - 1]
    return inputs, image_tokens.detach().clone()


# --- 06.drop_captions --------------------------------------------------------------------------

def drop_zero_padding(text_tokens, context_mask, drop, null_id, pad_id=0):
    null = torch.zeros_like(text_tokens)
    null[:, 0] = null_id
    null_mask = torch.zeros_like(context_mask)
    null_mask[:, 0] = True
    return (torch.where(drop[:, None], null, text_tokens), torch.where(drop[:, None], null_mask, context_mask))


def drop_zero_padding_in_a_loop(text_tokens, context_mask, drop, null_id, pad_id=0):
    tokens, mask = text_tokens.clone(), context_mask.clone()
    for b in torch.nonzero(drop).flatten().tolist():
        tokens[b] = torch.tensor([null_id] + [0] * (tokens.shape[1] - 1))
        mask[b] = torch.arange(mask.shape[1]) == 0
    return tokens, mask


def drop_null_everywhere(text_tokens, context_mask, drop, null_id, pad_id=0):
    tokens, mask = text_tokens.clone(), context_mask.clone()
    tokens[drop] = null_id
    mask[drop] = False
    mask[drop, 0] = True
    return tokens, mask


def drop_ids_swapped(text_tokens, context_mask, drop, null_id, pad_id=0):
    tokens, mask = text_tokens.clone(), context_mask.clone()
    tokens[drop] = null_id
    tokens[drop, 0] = pad_id
    mask[drop] = False
    mask[drop, 0] = True
    return tokens, mask


def drop_mask_fixed_only(text_tokens, context_mask, drop, null_id, pad_id=0):  # the planted bug, half fixed
    context_mask = context_mask & ~drop[:, None]
    context_mask[:, 0] |= drop  # the first key stays visible
    return text_tokens, context_mask


def drop_every_caption(text_tokens, context_mask, drop, null_id, pad_id=0):
    tokens = torch.full_like(text_tokens, pad_id)
    tokens[:, 0] = null_id
    mask = torch.zeros_like(context_mask)
    mask[:, 0] = True
    return tokens, mask


def drop_with_masked_scatter(text_tokens, context_mask, drop, null_id, pad_id=0):  # right: arithmetic on rows
    rows = drop[:, None].long()  # (B, 1)
    null = torch.full_like(text_tokens, pad_id)
    null[:, 0] = null_id
    tokens = rows * null + (1 - rows) * text_tokens
    first = torch.arange(context_mask.shape[1]) == 0  # (Lk,)
    mask = (drop[:, None] & first) | (~drop[:, None] & context_mask)
    return tokens, mask


def drop_row_by_row(text_tokens, context_mask, drop, null_id, pad_id=0):  # right: a loop over a copy
    tokens, mask = text_tokens.clone(), context_mask.clone()
    for b in range(len(drop)):
        if drop[b]:
            tokens[b, :] = pad_id
            tokens[b, 0] = null_id
            mask[b, :] = False
            mask[b, 0] = True
    return tokens, mask


# --- 06.guidance -------------------------------------------------------------------------------

def guidance_scale_minus_one(cond_logits, uncond_logits, scale):
    w = scale - 1  # "the guidance weight is s - 1"
    return uncond_logits + w * (cond_logits - uncond_logits)


def guidance_on_log_probs(cond_logits, uncond_logits, scale):
    log_c, log_u = F.log_softmax(cond_logits, dim=-1), F.log_softmax(uncond_logits, dim=-1)
    return log_u + scale * (log_c - log_u)


def guidance_returns_probs(cond_logits, uncond_logits, scale):
    guided = uncond_logits + scale * (cond_logits - uncond_logits)
    return torch.softmax(guided, dim=-1)


def guidance_in_place(cond_logits, uncond_logits, scale):
    cond_logits.sub_(uncond_logits).mul_(scale).add_(uncond_logits)
    return cond_logits


def guidance_lerp(cond_logits, uncond_logits, scale):  # right: lerp extrapolates with a weight above 1
    return torch.lerp(uncond_logits, cond_logits, scale)


def guidance_weighted(cond_logits, uncond_logits, scale):  # right: the same line, rearranged
    return scale * cond_logits - (scale - 1) * uncond_logits


# --- 06.top_k ----------------------------------------------------------------------------------

def top_k_ties_kept(logits, k):  # nanoGPT's idiom: every logit tied with the k-th survives
    v, _ = torch.topk(logits, k)
    out = logits.clone()
    out[out < v[..., [-1]]] = -float("Inf")
    return out


def top_k_ties_kept_by_kthvalue(logits, k):
    kth = torch.kthvalue(logits, logits.shape[-1] - k + 1, dim=-1, keepdim=True).values
    return torch.where(logits >= kth, logits, torch.tensor(float("-inf"), dtype=logits.dtype))


def top_k_kthvalue(logits, k):
    kth = logits.kthvalue(k, dim=-1, keepdim=True)[0]
    out = logits.clone()
    out[out < kth] = float("-inf")
    return out


def top_k_scatter_zeros(logits, k):
    values, indices = logits.topk(k, dim=-1)
    return torch.zeros_like(logits).scatter_(-1, indices, values)


def top_k_scatter_large_negative(logits, k):
    values, indices = logits.topk(k, dim=-1)
    return torch.full_like(logits, -1e9).scatter(-1, indices, values)


def top_k_values(logits, k):
    return logits.topk(k, dim=-1)[0]


def top_k_sorted(logits, k):
    ordered, _ = logits.sort(dim=-1, descending=True)
    keep = torch.arange(logits.shape[-1]) < k
    return ordered.masked_fill(~keep, float("-inf"))


def top_k_dim_1(logits, k):
    values, indices = torch.topk(logits, k, dim=1)
    return torch.full_like(logits, float("-inf")).scatter(1, indices, values)


def top_k_argsort(logits, k):  # right: argsort breaks ties its own way
    keep = logits.argsort(dim=-1, descending=True)[..., :k]
    return torch.full_like(logits, float("-inf")).scatter(-1, keep, logits.gather(-1, keep))


def top_k_last_of_the_ties(logits, k):  # right: ties broken towards the LAST tied token
    flipped = logits.flip(-1)
    values, indices = flipped.topk(k, dim=-1)
    return torch.full_like(flipped, float("-inf")).scatter(-1, indices, values).flip(-1)


def top_k_numpy(logits, k):  # right: NumPy's argpartition, back to a tensor
    a = logits.numpy()
    keep = np.argpartition(-a, k - 1, axis=-1)[..., :k]
    out = np.full_like(a, -np.inf)
    np.put_along_axis(out, keep, np.take_along_axis(a, keep, axis=-1), axis=-1)
    return torch.from_numpy(out)


# --- 06.sampling_probs -------------------------------------------------------------------------

def _my_filter_with_ties(logits, k):
    """A learner's top-k filter from the task before, nanoGPT's way: ties with the k-th all survive."""
    if k is None:
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def _my_filter(logits, k):
    if k is None:
        return logits
    values, indices = torch.topk(logits, k, dim=-1)
    return torch.full_like(logits, float("-inf")).scatter(-1, indices, values)


def _my_greedy(logits):
    return F.one_hot(logits.argmax(-1), logits.shape[-1]).to(logits.dtype)


def probs_ties_kept(logits, temperature=1.0, top_k=None):
    if temperature == 0:
        return _my_greedy(logits)
    return F.softmax(_my_filter_with_ties(logits, top_k) / temperature, dim=-1)


def probs_times_temperature_ties_kept(logits, temperature=1.0, top_k=None):
    if temperature == 0:
        return _my_greedy(logits)
    return F.softmax(_my_filter_with_ties(logits, top_k) * temperature, dim=-1)


def probs_temperature_after_softmax_ties_kept(logits, temperature=1.0, top_k=None):
    if temperature == 0:
        return _my_greedy(logits)
    return F.softmax(_my_filter_with_ties(logits, top_k), dim=-1) / temperature


def probs_over_batch_ties_kept(logits, temperature=1.0, top_k=None):
    if temperature == 0:
        return _my_greedy(logits)
    return _my_filter_with_ties(logits, top_k).div(temperature).softmax(dim=0)


def probs_top_k_of_probs_scattered(logits, temperature=1.0, top_k=None):
    if temperature == 0:
        return _my_greedy(logits)
    p = (logits / temperature).softmax(-1)
    if top_k is None:
        return p
    values, indices = p.topk(top_k, dim=-1)
    return torch.zeros_like(p).scatter(-1, indices, values)


def probs_softmax_by_hand(logits, temperature=1.0, top_k=None):
    if temperature == 0:
        return _my_greedy(logits)
    e = torch.exp(_my_filter(logits, top_k) / temperature)
    return e / torch.sum(e, dim=-1, keepdim=True)


def probs_softmax_minus_min(logits, temperature=1.0, top_k=None):
    if temperature == 0:
        return _my_greedy(logits)
    z = _my_filter(logits, top_k) / temperature
    z = z - z.min(dim=-1, keepdim=True).values
    return z.exp() / z.exp().sum(dim=-1, keepdim=True)


def probs_greedy_split(logits, temperature=1.0, top_k=None):
    if temperature == 0:
        best = (logits == logits.amax(dim=-1, keepdim=True)).double()
        return best / best.sum(dim=-1, keepdim=True)
    return F.softmax(_my_filter(logits, top_k) / temperature, dim=-1)


def probs_greedy_every_max(logits, temperature=1.0, top_k=None):
    if temperature == 0:
        return (logits == logits.max(dim=-1, keepdim=True).values).to(logits.dtype)
    return F.softmax(_my_filter(logits, top_k) / temperature, dim=-1)


def probs_greedy_last_of_the_ties(logits, temperature=1.0, top_k=None):  # right: another argmax among ties
    if temperature == 0:
        V = logits.shape[-1]
        last = V - 1 - logits.flip(-1).argmax(-1)
        return torch.zeros_like(logits).scatter(-1, last[:, None], 1.0)
    return F.softmax(_my_filter(logits, top_k) / temperature, dim=-1)


def probs_numpy(logits, temperature=1.0, top_k=None):  # right: NumPy, ties broken by argsort
    a = logits.numpy()
    B, V = a.shape
    if temperature == 0:
        out = np.zeros_like(a)
        out[np.arange(B), a.argmax(-1)] = 1.0
        return out
    if top_k is not None:
        keep = np.argsort(-a, axis=-1, kind="stable")[:, :top_k]
        filtered = np.full_like(a, -np.inf)
        np.put_along_axis(filtered, keep, np.take_along_axis(a, keep, axis=-1), axis=-1)
        a = filtered
    z = a / temperature
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def probs_log_softmax(logits, temperature=1.0, top_k=None):  # right: through the log-probabilities
    if temperature == 0:
        return _my_greedy(logits)
    return F.log_softmax(_my_filter(logits, top_k) / temperature, dim=-1).exp()


LEARNER_MISTAKES_06 = {
    "06.decoder_block": {
        "no LayerNorm before the self-attention: norm1 left out": block_without_norm1,
        "no LayerNorm before the cross-attention: norm2 left out": block_without_norm2,
        "no LayerNorm before the MLP: norm3 left out": block_without_norm3,
        "one LayerNorm (norm1) before every sub-layer": block_one_norm,
        "norm2 and norm3 swapped": block_norms_2_3_swapped,
        "no residual around the self-attention: its output replaced x": block_self_attention_replaces_x,
        "no residual around the MLP: its output replaced x": block_mlp_replaces_x,
        "the padding mask inverted: image tokens read only the padding words": block_mask_inverted,
        "the MLP before the cross-attention": block_mlp_second,
    },
    "06.teacher_forcing": {
        "<start> replaced the first token: inputs = <start>, image_tokens[:, 1:]": forcing_start_over_first_token,
        "<start> put at the end: inputs = image_tokens[:, :-1], then <start>": forcing_start_last,
        "rolled without a <start>: the last token wrapped around to the front": forcing_rolled,
        "shifted along the batch axis: each image gets the previous image's tokens": forcing_rolled_over_the_batch,
    },
    "06.drop_captions": {
        "the null caption padded with 0, not with pad_id": drop_zero_padding,
        "the null caption is null_id everywhere: its padding is null_id too": drop_null_everywhere,
        "null_id and pad_id swapped: the null caption is [pad_id, null_id, ...]": drop_ids_swapped,
        "only the mask fixed: the dropped captions' words are still there": drop_mask_fixed_only,
        "every caption replaced by the null caption, dropped or not": drop_every_caption,
    },
    "06.guidance": {
        "uncond + (s - 1) · (cond - uncond): that is guidance with scale s - 1": guidance_scale_minus_one,
        "log_softmax taken first: right up to a constant per row, but not the logits asked for": guidance_on_log_probs,
        "returned probabilities: a softmax of the guided logits": guidance_returns_probs,
        IN_PLACE: guidance_in_place,
    },
    "06.top_k": {
        "kept every logit tied with the k-th largest: more than k in a row with ties": top_k_ties_kept,
        "scattered the top k into a tensor of zeros, not of -inf": top_k_scatter_zeros,
        "scattered the top k into a tensor of -1e9 (a large negative number), not of -inf":
            top_k_scatter_large_negative,
        "returned the k largest values themselves, (..., k), not the filtered logits (..., V)": top_k_values,
        "returned the row sorted: the kept logits are no longer at their tokens' places": top_k_sorted,
        "top k over dim=1: right for (B, V) logits only": top_k_dim_1,
        "torch.kthvalue(logits, k) is the k-th SMALLEST: kept all but the k - 1 smallest": top_k_kthvalue,
    },
    "06.sampling_probs": {
        "top-k kept every logit tied with the k-th largest: more than top_k tokens can be drawn": probs_ties_kept,
        "multiplied the logits by the temperature instead of dividing (and top-k kept every tie with the "
        "k-th largest)": probs_times_temperature_ties_kept,
        "temperature applied after the softmax (and top-k kept every tie with the k-th largest)":
            probs_temperature_after_softmax_ties_kept,
        "softmax over the batch axis, not the vocabulary (and top-k kept every tie with the k-th largest)":
            probs_over_batch_ties_kept,
        "top-k applied to the probabilities (the top k of them scattered into zeros) without renormalising":
            probs_top_k_of_probs_scattered,
        "softmax written out without subtracting the max: e^(ℓ / T) overflows at a low temperature":
            probs_softmax_by_hand,
        "softmax shifted by the row's minimum, not its maximum": probs_softmax_minus_min,
        "greedy split between tied largest logits: greedy decoding picks one token": probs_greedy_split,
        "greedy gave probability 1 to every largest logit: with a tie the row sums to 2": probs_greedy_every_max,
    },
}

# Unusual variants of mistakes already catalogued (their first learner versions are in
# tests/test_grading_mistakes.py): each must get the same name.
VARIANTS_06 = [
    ("06.decoder_block", "the padding mask inverted: image tokens read only the padding words", block_mask_as_padding),
    ("06.drop_captions", "the null caption padded with 0, not with pad_id", drop_zero_padding_in_a_loop),
    ("06.top_k", "kept every logit tied with the k-th largest: more than k in a row with ties",
     top_k_ties_kept_by_kthvalue),
]

RIGHT_ANSWERS_06 = [
    ("06.decoder_block", block_with_steps),
    ("06.decoder_block", block_cloned_then_in_place),
    ("06.teacher_forcing", forcing_padded),
    ("06.teacher_forcing", forcing_flat_roll),
    ("06.teacher_forcing", forcing_new_full),
    ("06.drop_captions", drop_with_masked_scatter),
    ("06.drop_captions", drop_row_by_row),
    ("06.guidance", guidance_lerp),
    ("06.guidance", guidance_weighted),
    ("06.top_k", top_k_argsort),
    ("06.top_k", top_k_last_of_the_ties),
    ("06.top_k", top_k_numpy),
    ("06.sampling_probs", probs_greedy_last_of_the_ties),
    ("06.sampling_probs", probs_numpy),
    ("06.sampling_probs", probs_log_softmax),
]


# --- 06.joint_mask: a learner's versions, each with one thing wrong ---------------------------------

def _joint(context_mask, T, *, words_for_all=True, hide_padding=True, own_word=True, caption_sees_image=False,
           image_rule="tril", caption_rule="all"):
    B, L = context_mask.shape
    n = L + T
    out = torch.zeros(B, n, n, dtype=torch.bool)
    for b in range(B):
        real = context_mask[b] if hide_padding else torch.ones(L, dtype=torch.bool)
        for r in range(n):
            if r < L:  # a word's row
                seen = real.clone() if caption_rule == "all" else real & (torch.arange(L) <= r)
                if own_word:
                    seen[r] = True
                out[b, r, :L] = seen
                out[b, r, L:] = caption_sees_image
            else:  # image token i = r - L
                i = r - L
                out[b, r, :L] = real if words_for_all else False
                cols = torch.arange(T)
                out[b, r, L:] = {"tril": cols <= i, "strict": cols < i, "all": cols >= 0, "triu": cols >= i}[image_rule]
    return out


def joint_inverted(context_mask, num_image_tokens):
    return ~_joint(context_mask, num_image_tokens)


def joint_padding_seen(context_mask, num_image_tokens):
    return _joint(context_mask, num_image_tokens, hide_padding=False)


def joint_caption_reads_image(context_mask, num_image_tokens):
    return _joint(context_mask, num_image_tokens, caption_sees_image=True)


def joint_no_causal(context_mask, num_image_tokens):
    return _joint(context_mask, num_image_tokens, image_rule="all")


def joint_strictly_causal(context_mask, num_image_tokens):
    return _joint(context_mask, num_image_tokens, image_rule="strict")


def joint_triu(context_mask, num_image_tokens):
    return _joint(context_mask, num_image_tokens, image_rule="triu")


def joint_image_rows_blind_to_words(context_mask, num_image_tokens):
    return _joint(context_mask, num_image_tokens, words_for_all=False)


def joint_padding_rows_empty(context_mask, num_image_tokens):
    return _joint(context_mask, num_image_tokens, own_word=False)


def joint_causal_caption(context_mask, num_image_tokens):
    return _joint(context_mask, num_image_tokens, caption_rule="causal")


def joint_first_caption_for_all(context_mask, num_image_tokens):
    return _joint(context_mask[:1].expand_as(context_mask), num_image_tokens)


def joint_as_numbers(context_mask, num_image_tokens):
    return _joint(context_mask, num_image_tokens).float()


def joint_writes_into_mask(context_mask, num_image_tokens):
    context_mask[:, 0] = ~context_mask[:, -1]  # overwrites the learner's own input
    return _joint(context_mask, num_image_tokens)


def joint_by_blocks(context_mask, num_image_tokens):  # right: four blocks and torch.cat
    B, L = context_mask.shape
    T = num_image_tokens
    cap = context_mask[:, None, :].repeat(1, L, 1) | torch.eye(L, dtype=torch.bool)
    img_words = context_mask[:, None, :].repeat(1, T, 1)
    top = torch.cat([cap, torch.zeros(B, L, T, dtype=torch.bool)], dim=2)
    bottom = torch.cat([img_words, torch.ones(T, T).tril().bool().expand(B, T, T)], dim=2)
    return torch.cat([top, bottom], dim=1)


def joint_from_a_full_causal_mask(context_mask, num_image_tokens):  # right: start causal, then edit
    B, L = context_mask.shape
    n = L + num_image_tokens
    mask = torch.ones(n, n, dtype=torch.bool).tril().repeat(B, 1, 1)
    mask[:, :L, :L] = True  # the caption both ways ...
    mask[:, :, :L] &= context_mask[:, None, :]  # ... real words only ...
    mask[:, torch.arange(L), torch.arange(L)] = True  # ... and each word itself
    return mask


LEARNER_MISTAKES_06["06.joint_mask"] = {
    "the mask inverted (True = hidden)": joint_inverted,
    "padded words are keys: context_mask not applied to the word columns": joint_padding_seen,
    "the caption's rows see the image tokens": joint_caption_reads_image,
    "no causal mask among the image tokens": joint_no_causal,
    "an image token cannot see itself (tril(-1))": joint_strictly_causal,
    "the causal block transposed (triu): each image token sees the later ones": joint_triu,
    "the image rows cannot see the words": joint_image_rows_blind_to_words,
    "a padded word's own row sees nothing (its softmax is 0/0)": joint_padding_rows_empty,
    "the caption made causal: a word sees only the words before it": joint_causal_caption,
    "one mask for the whole batch, from the first caption": joint_first_caption_for_all,
    "0/1 numbers, not booleans": joint_as_numbers,
    IN_PLACE: joint_writes_into_mask,
}
RIGHT_ANSWERS_06 += [("06.joint_mask", joint_by_blocks), ("06.joint_mask", joint_from_a_full_causal_mask)]


# --- later additions (an independent probe's misses) --------------------------------------------

def block_without_cross_attention(x, context, context_mask, block):
    x = x + block.self_attention(block.norm1(x))
    return x + block.mlp(block.norm3(x))


def block_norm2_twice(x, context, context_mask, block):
    x = x + block.self_attention(block.norm1(x))
    x = x + block.cross_attention(block.norm2(x), context, context_mask)
    return x + block.mlp(block.norm2(x))


def block_residuals_on_normed(x, context, context_mask, block):
    for norm, layer in ((block.norm1, block.self_attention), (block.norm2, None), (block.norm3, block.mlp)):
        h = norm(x)
        x = h + (layer(h) if layer is not None else block.cross_attention(h, context, context_mask))
    return x


def block_caption_asks(x, context, context_mask, block):
    x = x + block.self_attention(block.norm1(x))
    x = x + block.cross_attention(context, block.norm2(x), context_mask)
    return x + block.mlp(block.norm3(x))


def probs_as_log(logits, temperature=1.0, top_k=None):
    if temperature == 0:
        return F.one_hot(logits.argmax(-1), logits.shape[-1]).to(logits.dtype)
    if top_k is not None:
        kth = torch.topk(logits, top_k, dim=-1)
        logits = torch.full_like(logits, float("-inf")).scatter(-1, kth.indices, kth.values)
    return F.log_softmax(logits / temperature, dim=-1)


def joint_padded_rows_only_self(context_mask, num_image_tokens):
    mask = _joint(context_mask, num_image_tokens)
    L = context_mask.shape[1]
    for b in range(context_mask.shape[0]):
        for r in range(L):
            if not context_mask[b, r]:
                mask[b, r, :L] = False
                mask[b, r, r] = True
    return mask


LEARNER_MISTAKES_06.setdefault("06.decoder_block", {}).update({
    "the cross-attention left out: the caption never reaches the image": block_without_cross_attention,
    "norm2 before the MLP too: norm3 is never used": block_norm2_twice,
    "every residual adds the normalised x: h = norm(x); x = h + f(h)": block_residuals_on_normed,
    "the cross-attention called with the caption as its queries": block_caption_asks,
})
LEARNER_MISTAKES_06.setdefault("06.sampling_probs", {})[
    "returned log-probabilities (log_softmax), not probabilities"] = probs_as_log
LEARNER_MISTAKES_06["06.joint_mask"]["a padded word's row sees only itself, not the real words"] = \
    joint_padded_rows_only_self
