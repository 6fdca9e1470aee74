"""The decoders between cross-attention and the single stream (benchmarks/conditioning_variants.py),
whose measurements lesson 06 quotes: each must be a fair text-to-image decoder (causal, reading the
caption, ignoring padding), or its numbers would mean nothing."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from crossmodal_edu import world
from crossmodal_edu.dalle.config import DecoderConfig
from crossmodal_edu.dalle.sampling import generate_tokens

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from conditioning_variants import VARIANTS, JointDecoder  # noqa: E402

SMALL = dict(d_model=32, num_heads=4, layers=2, text_layers=2, mlp_ratio=2)
CAPTIONS = ["a small red circle at the top left", "a blue square left of a green triangle"]


def variant(name: str, seed: int = 0):
    torch.manual_seed(seed)
    decoder = VARIANTS[name](DecoderConfig(**SMALL)).eval()
    with torch.no_grad():  # random weights of a useful size, so every input matters
        for p in decoder.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return decoder


def captions_batch(captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    tokens, mask = world.Vocab().encode_batch(captions, max_len=8)
    return torch.from_numpy(tokens), torch.from_numpy(mask)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_a_variant_is_causal_over_image_tokens(name):
    decoder = variant(name)
    text, mask = captions_batch(CAPTIONS)
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, 256, (2, 63), generator=g)
    changed = tokens.clone()
    changed[:, 30:] = torch.randint(0, 256, (2, 33), generator=g)
    a, b = decoder(tokens, text, mask).logits, decoder(changed, text, mask).logits
    torch.testing.assert_close(a[:, :31], b[:, :31], rtol=0, atol=1e-6)
    assert (a[:, 31:] - b[:, 31:]).abs().max() > 1e-3


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_a_variant_reads_the_caption_and_ignores_padding(name):
    decoder = variant(name)
    text, mask = captions_batch(CAPTIONS)
    tokens = torch.randint(0, 256, (2, 10), generator=torch.Generator().manual_seed(2))
    base = decoder(tokens, text, mask).logits
    other = text.clone()
    other[:, 1] = torch.where(other[:, 1] == 3, 4, 3)  # another word in second place
    assert (decoder(tokens, other, mask).logits - base).abs().max() > 1e-3
    padded = text.clone()
    padded[~mask] = 7  # a real word's id where the mask says padding
    torch.testing.assert_close(decoder(tokens, padded, mask).logits, base, rtol=0, atol=1e-6)


def test_the_joint_block_is_one_softmax_over_caption_and_image_prefix():
    # Recompute block 0 of the joint decoder by hand in float64: scores against [words ; image prefix],
    # padding and future positions at -inf, one softmax per row.
    decoder = variant("joint").double()
    block = decoder.blocks[0]
    text, mask = captions_batch(CAPTIONS)
    context = decoder.encode_text(text, mask)  # (B, L, d)
    x = torch.randn(2, 5, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    got, _ = block(x, context, mask)

    B, T, d, H = 2, 5, 32, 4
    q, k, v = block.qkv(block.norm1(x)).split(d, dim=-1)
    tk, tv = block.text_kv(context).split(d, dim=-1)
    keys, values = torch.cat([tk, k], 1), torch.cat([tv, v], 1)  # (B, L + T, d)
    heads = []
    for h in range(H):
        part = slice(h * d // H, (h + 1) * d // H)
        scores = q[..., part] @ keys[..., part].transpose(1, 2) / (d // H) ** 0.5  # (B, T, L + T)
        allowed = torch.cat([mask[:, None, :].expand(B, T, 8), torch.ones(T, T).tril().bool().expand(B, T, T)], 2)
        heads.append(torch.softmax(scores.masked_fill(~allowed, float("-inf")), -1) @ values[..., part])
    h = x + block.out(torch.cat(heads, -1))
    expected = h + block.mlp(block.norm3(h))
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


def test_a_joint_decoder_samples_without_a_cache():
    decoder = variant("joint")
    assert isinstance(decoder, JointDecoder)
    text, mask = captions_batch(CAPTIONS)
    a = generate_tokens(decoder, text, mask, guidance_scale=1.5, generator=torch.Generator().manual_seed(0))
    b = generate_tokens(decoder, text, mask, guidance_scale=1.5, generator=torch.Generator().manual_seed(0))
    assert a.shape == (2, 64) and torch.equal(a, b)


def test_train_decoder_trains_the_variant_it_is_given():
    from crossmodal_edu.dalle.train_decoder import DecoderTrainConfig, train_decoder

    config = DecoderConfig(**SMALL)
    model = JointDecoder(config)
    before = [p.detach().clone() for p in model.parameters()]
    result = train_decoder(config, DecoderTrainConfig(steps=3, batch_size=4, warmup_steps=1), model=model, progress=False)
    assert result.decoder is model and result.step == 3
    assert all(torch.isfinite(torch.tensor(result.history["loss"])))
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
