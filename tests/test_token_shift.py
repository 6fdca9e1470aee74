"""Token shift (``crossmodal_edu.dalle.token_shift``): checked against a float64 loop over grid
coordinates, with and without the KV cache, and by what a decoder with it can see. The designs
that take it are also held to every test of ``test_decoder_designs.py`` with it on."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crossmodal_edu.dalle.config import DecoderConfig
from crossmodal_edu.dalle.decoder import build_decoder
from crossmodal_edu.dalle.token_shift import grid_width, shift_tokens, shift_with_cache


def shift_by_grid(x: np.ndarray, width: int, text_len: int) -> np.ndarray:
    """The shift written out one token at a time, from each image token's (row, column)."""
    B, T, d = x.shape
    q = d // 4
    out = x.copy()
    for position in range(T):
        if position < text_len:  # a caption word: half its channels from the word before
            out[:, position, : d // 2] = x[:, position - 1, : d // 2] if position > 0 else 0.0
        elif position > text_len:  # image token j, at row j // width and column j % width
            row, column = divmod(position - text_len - 1, width)
            above = text_len + 1 + (row - 1) * width + column
            left = text_len + 1 + row * width + column - 1
            out[:, position, :q] = x[:, above, :q] if row > 0 else 0.0
            out[:, position, q : 2 * q] = x[:, left, q : 2 * q] if column > 0 else 0.0
    return out


@pytest.mark.parametrize("text_len,image_tokens,width", [(0, 64, 8), (0, 19, 8), (5, 64, 8), (3, 11, 4), (0, 0, 8)])
def test_shift_tokens_moves_each_quarter_from_the_grid_neighbour_it_names(text_len, image_tokens, width):
    rng = np.random.default_rng(text_len * 100 + image_tokens)
    x = rng.normal(size=(2, text_len + 1 + image_tokens, 12))
    got = shift_tokens(torch.from_numpy(x), width, text_len)
    assert got.shape == x.shape and got.dtype == torch.float64
    np.testing.assert_array_equal(got.numpy(), shift_by_grid(x, width, text_len))


@pytest.mark.parametrize("text_len", [0, 4])
def test_the_cached_shift_fed_one_position_at_a_time_equals_the_full_shift(text_len):
    x = torch.from_numpy(np.random.default_rng(1).normal(size=(3, text_len + 1 + 40, 16)))
    full = shift_tokens(x, 8, text_len)
    cache: dict[str, torch.Tensor] = {}
    first = text_len + 1  # the first call feeds the caption and <start> together, as the single stream's sampler does
    pieces = [shift_with_cache(x[:, :first], 8, text_len, cache, "k")]
    pieces += [shift_with_cache(x[:, t : t + 1], 8, text_len, cache, "k") for t in range(first, x.shape[1])]
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=0, atol=0)
    assert shift_with_cache(x, 8, text_len, None, "k").equal(full)


def test_token_shift_leaves_the_input_untouched_and_passes_gradients_to_the_neighbours():
    x = torch.randn(1, 1 + 16, 8, requires_grad=True)
    before = x.detach().clone()
    shift_tokens(x, 4)[0, 1 + 5].sum().backward()  # image token 5: row 1, column 1
    assert torch.equal(x.detach(), before)
    got = {p for p in range(x.shape[1]) if x.grad[0, p].abs().sum() > 0}
    assert got == {1 + 5, 1 + 1, 1 + 4}  # itself, the token above (1), the token to its left (4)


def one_block_decoder(token_shift: bool) -> torch.nn.Module:
    """One block, no caption, self-attention's output zeroed: each position sees only what the
    MLP's input holds, its own token and (with token shift) its two neighbours."""
    torch.manual_seed(0)
    config = DecoderConfig(d_model=32, num_heads=4, layers=1, text_layers=1, mlp_ratio=2, conditioning="none", token_shift=token_shift)
    decoder = build_decoder(config).eval()
    with torch.no_grad():
        for p in decoder.parameters():
            p.add_(0.2 * torch.randn_like(p))
        decoder.blocks[0].self_attention.out.weight.zero_()
        decoder.blocks[0].self_attention.out.bias.zero_()
    return decoder


@pytest.mark.parametrize("token_shift", [False, True])
def test_a_decoder_with_token_shift_reads_the_tokens_above_and_left_of_its_input(token_shift):
    decoder = one_block_decoder(token_shift)
    text = torch.zeros(1, 8, dtype=torch.long)
    text[0, 0] = decoder.config.null_id
    mask = torch.zeros(1, 8, dtype=torch.bool)
    mask[0, 0] = True
    tokens = torch.randint(0, 256, (1, 63), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        base = decoder(tokens, text, mask).logits[0]  # (64, K): position p's input is image token p - 1
        for j in (0, 7, 8, 9, 27, 62):  # the input image token whose logits we watch, at position j + 1
            seen = set()
            for i in range(63):
                changed = tokens.clone()
                changed[0, i] = (changed[0, i] + 1) % 256
                if (decoder(changed, text, mask).logits[0, j + 1] - base[j + 1]).abs().max() > 1e-6:
                    seen.add(i)
            row, column = divmod(j, 8)
            expected = {j}
            if token_shift and row > 0:
                expected.add(j - 8)
            if token_shift and column > 0:
                expected.add(j - 1)
            assert seen == expected, f"input token {j}: reads {sorted(seen)}, expected {sorted(expected)}"


def test_token_shift_is_refused_where_it_is_not_built_and_for_channels_it_cannot_split():
    with pytest.raises(ValueError, match="token_shift is built for conditioning.*got 'joint'"):
        DecoderConfig(conditioning="joint", token_shift=True)
    with pytest.raises(ValueError, match="d_model must be divisible by 4, got 30"):
        DecoderConfig(d_model=30, num_heads=2, token_shift=True)
    with pytest.raises(ValueError, match="square grid.*num_image_tokens=48"):
        DecoderConfig(num_image_tokens=48, token_shift=True)
    with pytest.raises(ValueError, match="divisible by 4"):
        shift_tokens(torch.zeros(1, 3, 6), 2)
    assert grid_width(64) == 8 and DecoderConfig(num_image_tokens=48).token_shift is False  # off: any length is fine


def test_token_shift_adds_no_weights():
    plain, shifted = (build_decoder(DecoderConfig(d_model=32, token_shift=s)) for s in (False, True))
    assert sum(p.numel() for p in plain.parameters()) == sum(p.numel() for p in shifted.parameters())
