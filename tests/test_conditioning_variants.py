"""The blocks of the designs between cross-attention and the single stream (joint attention,
MM-DiT, adaptive LayerNorm), each recomputed by hand in float64 from its equations, and the
joint-attention mask against a loop over its definition. The properties every design shares
(causal, reads the caption, ignores padding, cache == no cache) are in test_decoder_designs.py."""

from __future__ import annotations

import ast
from pathlib import Path

import torch

from crossmodal_edu import world
from crossmodal_edu.dalle.config import DecoderConfig
from crossmodal_edu.dalle.decoder import build_decoder
from crossmodal_edu.dalle.joint import joint_attention_mask

SMALL = dict(d_model=32, num_heads=4, layers=2, text_layers=2, mlp_ratio=2)
B, T, L, d, H = 2, 5, 8, 32, 4
CAPTIONS = ["a red circle above a blue square", "a blue square left of a green triangle"]  # 7 and 8 words


def variant(name: str, seed: int = 0):
    torch.manual_seed(seed)
    decoder = build_decoder(DecoderConfig(**SMALL, conditioning=name)).eval()
    with torch.no_grad():  # random weights of a useful size, so every input matters
        for p in decoder.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return decoder.double()


def captions_batch(captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    tokens, mask = world.Vocab().encode_batch(captions, max_len=8)
    return torch.from_numpy(tokens), torch.from_numpy(mask)


def attend(q, k, v, allowed):
    """Multi-head attention in float64, head by head: q (B, n, d), k and v (B, m, d), allowed (B, n, m)."""
    heads = []
    for h in range(H):
        part = slice(h * d // H, (h + 1) * d // H)
        scores = q[..., part] @ k[..., part].transpose(1, 2) / (d // H) ** 0.5  # (B, n, m)
        heads.append(torch.softmax(scores.masked_fill(~allowed, float("-inf")), -1) @ v[..., part])
    return torch.cat(heads, -1)  # (B, n, d)


def random_stream(n: int, seed: int) -> torch.Tensor:
    return torch.randn(B, n, d, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def test_the_joint_attention_mask_is_words_for_everyone_and_causal_among_image_tokens():
    _, mask = captions_batch(CAPTIONS)
    got = joint_attention_mask(mask, T)
    assert got.shape == (B, L + T, L + T)
    for b in range(B):
        for i in range(L + T):
            for j in range(L + T):
                if j < L:  # a word: every row may read it if it is real; a word row also reads itself
                    expected = bool(mask[b, j]) or i == j
                else:  # an image token: only image rows, and only up to themselves
                    expected = i >= L and j <= i
                assert bool(got[b, i, j]) == expected, (b, i, j)


def test_the_joint_block_is_one_softmax_over_caption_and_image_prefix():
    # Block 0 of the joint decoder by hand: scores against [words ; image prefix], padding and
    # future positions at -inf, one softmax per row.
    decoder = variant("joint")
    block = decoder.blocks[0]
    text, mask = captions_batch(CAPTIONS)
    context = decoder.encode_text(text, mask)  # (B, L, d)
    x = random_stream(T, 3)
    got, _ = block(x, context, mask)

    q, k, v = block.qkv(block.norm1(x)).split(d, dim=-1)
    tk, tv = block.text_kv(context).split(d, dim=-1)
    allowed = torch.cat([mask[:, None, :].expand(B, T, L), torch.ones(T, T).tril().bool().expand(B, T, T)], 2)
    h = x + block.out(attend(q, torch.cat([tk, k], 1), torch.cat([tv, v], 1), allowed))
    expected = h + block.mlp(block.norm3(h))
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


def test_an_mmdit_block_updates_both_streams_and_the_caption_never_reads_the_image():
    decoder = variant("mmdit")
    block = decoder.blocks[0]
    assert not block.last and decoder.blocks[-1].last
    text, mask = captions_batch(CAPTIONS)
    context = decoder.encode_text(text, mask)  # (B, L, d)
    x = random_stream(T, 4)
    got_x, got_context = block(x, context, mask)

    q, k, v = block.qkv(block.norm1(x)).split(d, dim=-1)  # the image stream's own weights
    cq, ck, cv = block.context_qkv(block.context_norm1(context)).split(d, dim=-1)  # the caption's own
    keys, values = torch.cat([ck, k], 1), torch.cat([cv, v], 1)  # (B, L + T, d)
    # Image rows: real words and the causal image prefix. Caption rows: real words (and themselves) only.
    image_rows = torch.cat([mask[:, None, :].expand(B, T, L), torch.ones(T, T).tril().bool().expand(B, T, T)], 2)
    caption_rows = torch.cat([mask[:, None, :].expand(B, L, L) | torch.eye(L, dtype=torch.bool), torch.zeros(B, L, T, dtype=torch.bool)], 2)
    h = x + block.out(attend(q, keys, values, image_rows))
    expected_x = h + block.mlp(block.norm2(h))
    c = context + block.context_out(attend(cq, keys, values, caption_rows))
    expected_context = c + block.context_mlp(block.context_norm2(c))
    torch.testing.assert_close(got_x, expected_x, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(got_context, expected_context, rtol=1e-10, atol=1e-10)
    _, other_context = block(random_stream(T, 5), context, mask)  # other image tokens: the same caption stream
    torch.testing.assert_close(other_context, got_context, rtol=0, atol=0)


def test_an_adaln_block_scales_and_shifts_its_norms_with_the_mean_of_the_real_words():
    decoder = variant("adaln")
    block = decoder.blocks[0]
    text, mask = captions_batch(CAPTIONS)
    context = decoder.encode_text(text, mask)  # (B, L, d)
    x = random_stream(T, 6)
    got, _ = block(x, context, mask)

    pooled = torch.stack([context[b, mask[b]].mean(0) for b in range(B)])  # (B, d): real words only
    linear = block.modulation[1]
    shift1, scale1, gate1, shift2, scale2, gate2 = (torch.nn.functional.silu(pooled) @ linear.weight.T + linear.bias).split(d, -1)

    def norm(z):  # LayerNorm without weights of its own
        return (z - z.mean(-1, keepdim=True)) / torch.sqrt(z.var(-1, unbiased=False, keepdim=True) + 1e-5)

    attention = block.self_attention
    q, k, v = attention.qkv(norm(x) * (1 + scale1[:, None]) + shift1[:, None]).view(B, T, 3, d).unbind(2)
    h = x + gate1[:, None] * attention.out(attend(q, k, v, torch.ones(T, T).tril().bool().expand(B, T, T)))
    expected = h + gate2[:, None] * block.mlp(norm(h) * (1 + scale2[:, None]) + shift2[:, None])
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


def test_a_fresh_adaln_decoder_starts_with_every_block_the_identity():
    decoder = build_decoder(DecoderConfig(**SMALL, conditioning="adaln"))
    text, mask = captions_batch(CAPTIONS)
    x = torch.randn(B, T, d)
    for block in decoder.blocks:
        torch.testing.assert_close(block(x, decoder.encode_text(text, mask), mask)[0], x, rtol=0, atol=0)


def test_the_benchmark_defines_no_model():
    source = Path(__file__).resolve().parents[1] / "benchmarks" / "conditioning_variants.py"
    classes = [node.name for node in ast.walk(ast.parse(source.read_text())) if isinstance(node, ast.ClassDef)]
    assert classes == []
