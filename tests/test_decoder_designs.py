"""Every way text can enter the miniature DALL-E (``DecoderConfig.conditioning``), held to the
same specification: causal over image tokens, reading the caption (or provably not, for the
ablation), blind to padding, the same logits with and without the KV cache, about equal
parameters at equal width, and trainable and sampleable through the package's one loop. The
designs that take token shift are held to the same specification with it on
(``"cross-attention+token-shift"`` and so on)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crossmodal_edu import world
from crossmodal_edu.dalle.config import CONDITIONINGS, TOKEN_SHIFT_CONDITIONINGS, DecoderConfig
from crossmodal_edu.dalle.decoder import ImageTokenDecoder, build_decoder
from crossmodal_edu.dalle.designs import matched_config, parameter_count
from crossmodal_edu.dalle.sampling import generate, generate_tokens

SMALL = dict(d_model=32, num_heads=4, layers=2, text_layers=2, mlp_ratio=2)
CAPTIONS = ["a small red circle at the top left", "a blue square left of a green triangle"]
VARIANTS = [*CONDITIONINGS, *(f"{c}+token-shift" for c in TOKEN_SHIFT_CONDITIONINGS)]
READS_TEXT = [v for v in VARIANTS if not v.startswith("none")]


def config_of(variant: str, **overrides) -> DecoderConfig:
    """``"joint"`` -> that design; ``"cross-attention+token-shift"`` -> that design with token shift."""
    conditioning, _, shift = variant.partition("+")
    return DecoderConfig(**{**SMALL, **overrides}, conditioning=conditioning, token_shift=shift == "token-shift")


def design(variant: str, seed: int = 0, **overrides) -> torch.nn.Module:
    torch.manual_seed(seed)
    decoder = build_decoder(config_of(variant, **overrides)).eval()
    with torch.no_grad():  # random weights of a useful size (adaLN starts at zero), so every input matters
        for p in decoder.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return decoder


def captions_batch(captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    tokens, mask = world.Vocab().encode_batch(captions, max_len=8)
    return torch.from_numpy(tokens), torch.from_numpy(mask)


def image_tokens(shape: tuple[int, int], seed: int) -> torch.Tensor:
    return torch.randint(0, 256, shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("conditioning", CONDITIONINGS)
def test_build_decoder_builds_the_named_design(conditioning):
    decoder = build_decoder(DecoderConfig(**SMALL, conditioning=conditioning))
    assert decoder.config.conditioning == conditioning and decoder.supports_kv_cache


@pytest.mark.parametrize("conditioning", VARIANTS)
def test_a_change_to_image_token_t_changes_no_logit_before_t_plus_1(conditioning):
    decoder = design(conditioning)
    text, mask = captions_batch(CAPTIONS)
    tokens = image_tokens((2, 63), 1)
    changed = tokens.clone()
    changed[:, 30] = (changed[:, 30] + 1) % 256  # token 30 is the input at position 31
    with torch.no_grad():
        a, b = decoder(tokens, text, mask).logits, decoder(changed, text, mask).logits
    torch.testing.assert_close(a[:, :31], b[:, :31], rtol=0, atol=1e-6)
    assert (a[:, 31] - b[:, 31]).abs().max() > 1e-3


@pytest.mark.parametrize("conditioning", READS_TEXT)
def test_the_logits_change_with_the_caption(conditioning):
    decoder = design(conditioning)
    text, mask = captions_batch(CAPTIONS)
    other = text.clone()
    other[:, 2] = torch.where(other[:, 2] == 3, 4, 3)  # another word in third place (a colour or a shape)
    tokens = image_tokens((2, 10), 2)
    with torch.no_grad():
        change = (decoder(tokens, other, mask).logits - decoder(tokens, text, mask).logits).abs().amax(dim=-1)  # (B, T)
    assert (change > 1e-4).all()  # at every position, the first one included


def test_without_conditioning_the_logits_cannot_depend_on_the_caption():
    decoder = design("none")
    tokens = image_tokens((2, 20), 2)
    text_a, mask_a = captions_batch(CAPTIONS)
    text_b, mask_b = captions_batch(list(reversed(CAPTIONS)))
    with torch.no_grad():
        assert torch.equal(decoder(tokens, text_a, mask_a).logits, decoder(tokens, text_b, mask_b).logits)


@pytest.mark.parametrize("conditioning", VARIANTS)
def test_padded_word_ids_change_nothing(conditioning):
    if conditioning.startswith("single-stream"):
        pytest.skip("the single stream keeps padding words in its sequence, as DALL-E 1 did (see single_stream.py)")
    decoder = design(conditioning)
    text, mask = captions_batch(["a red circle above a blue square", "a small red circle at the top left"])
    assert (~mask).any()  # the first caption has 7 words of 8: one padded place
    padded = text.clone()
    padded[~mask] = 7  # a real word's id where the mask says padding
    tokens = image_tokens((2, 12), 3)
    with torch.no_grad():
        torch.testing.assert_close(decoder(tokens, padded, mask).logits, decoder(tokens, text, mask).logits, rtol=0, atol=1e-6)


@pytest.mark.parametrize("conditioning", VARIANTS)
def test_the_kv_cache_gives_the_logits_of_a_full_pass(conditioning):
    decoder = design(conditioning)
    text, mask = captions_batch(CAPTIONS)
    tokens = image_tokens((2, 64), 9)
    with torch.no_grad():
        full = decoder(tokens[:, :-1], text, mask).logits  # (B, 64, K)
        context = decoder.encode_text(text, mask)
        caches = [{} for _ in decoder.blocks]
        for t in range(64):
            step = decoder.decode_step(tokens[:, t - 1] if t else None, t, context, mask, caches)
            torch.testing.assert_close(step, full[:, t], rtol=0, atol=1e-5, msg=f"position {t}")


@pytest.mark.parametrize("conditioning", VARIANTS)
def test_sampling_with_and_without_the_cache_draws_the_same_tokens(conditioning):
    decoder = design(conditioning)
    text, mask = captions_batch(CAPTIONS)
    plain = generate_tokens(decoder, text, mask, 1.5, top_k=50, generator=torch.Generator().manual_seed(5))
    cached = generate_tokens(decoder, text, mask, 1.5, top_k=50, generator=torch.Generator().manual_seed(5), use_cache=True)
    assert plain.shape == (2, 64) and torch.equal(plain, cached)


# Per design, the layer that turns the caption into something the image tokens read.
CAPTION_PROJECTIONS = {
    "cross-attention": ["cross_attention.to_k", "cross_attention.to_v"],
    "layerwise": ["cross_attention.to_k", "cross_attention.to_v"],
    "joint": ["text_kv"],
    "mmdit": ["context_qkv", "context_kv"],
    "adaln": ["modulation"],
}


@pytest.mark.parametrize("conditioning", sorted(CAPTION_PROJECTIONS))
def test_cached_sampling_projects_the_caption_once_per_sample(conditioning):
    decoder = design(conditioning)
    calls, hooked = [], 0
    for block in decoder.blocks:
        for name, module in block.named_modules():
            if name in CAPTION_PROJECTIONS[conditioning]:
                module.register_forward_hook(lambda *_: calls.append(1))
                hooked += 1
    assert hooked >= len(decoder.blocks)
    text, mask = captions_batch(CAPTIONS)
    generate_tokens(decoder, text, mask, 1.5, generator=torch.Generator().manual_seed(0), use_cache=True)
    assert len(calls) == hooked  # each once for all 64 steps (captions and null captions in one batch), not 64 times


def test_a_model_without_a_kv_cache_refuses_use_cache():
    class NoCacheBlock(torch.nn.Module):  # a block written without a cache path (no supports_kv_cache)
        def forward(self, x, context, context_mask, need_weights=False, cache=None):
            return x, None

    decoder = design("cross-attention")
    decoder.blocks[1] = NoCacheBlock()
    text, mask = captions_batch(CAPTIONS)
    with pytest.raises(ValueError, match="no KV cache.*use_cache=False"):
        generate_tokens(decoder, text, mask, use_cache=True)
    assert generate_tokens(decoder, text, mask, use_cache=False).shape == (2, 64)


def test_a_class_refuses_a_conditioning_it_does_not_build():
    with pytest.raises(ValueError, match="build_decoder"):
        ImageTokenDecoder(DecoderConfig(conditioning="joint"))
    with pytest.raises(ValueError, match="text_layers == layers"):
        build_decoder(DecoderConfig(conditioning="layerwise", text_layers=2, layers=3))


@pytest.mark.parametrize("conditioning", CONDITIONINGS)
def test_matched_configs_have_parameters_within_ten_percent_at_the_default_width(conditioning):
    reference = DecoderConfig()
    config = matched_config(conditioning, reference)
    assert config.d_model == reference.d_model and config.conditioning == conditioning
    ratio = parameter_count(config) / parameter_count(reference)
    assert 0.9 <= ratio <= 1.1, f"{conditioning}: {ratio:.3f} of the reference's parameters"
    counted = sum(p.numel() for p in build_decoder(config).parameters())  # the meta-device count is the real one
    assert counted == parameter_count(config)


@pytest.mark.parametrize("conditioning", VARIANTS)
def test_every_design_trains_through_train_decoder_and_samples_through_generate(conditioning):
    from crossmodal_edu.dalle.train_decoder import DecoderTrainConfig, train_decoder

    torch.manual_seed(0)
    model = build_decoder(config_of(conditioning))
    before = [p.detach().clone() for p in model.parameters()]
    train = DecoderTrainConfig(steps=3, batch_size=4, warmup_steps=1, device="cpu")
    result = train_decoder(None, train, model=model, progress=False)
    assert result.decoder is model and result.step == 3
    assert np.isfinite(result.history["loss"]).all() and abs(result.history["loss"][0] - np.log(256)) < 0.2
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    images = generate(model, result.tokenizer, CAPTIONS, guidance_scale=1.5, seed=0)
    assert images.images.shape == (2, 32, 32, 3) and images.image_tokens.shape == (2, 8, 8)


def test_train_decoder_refuses_a_config_that_is_not_the_models():
    from crossmodal_edu.dalle.train_decoder import DecoderTrainConfig, train_decoder

    model = build_decoder(DecoderConfig(**SMALL, conditioning="joint"))
    with pytest.raises(ValueError, match=r"differ in conditioning \('cross-attention' vs the model's 'joint'\)"):
        train_decoder(DecoderConfig(**SMALL), DecoderTrainConfig(steps=1, batch_size=2), model=model, progress=False)
    with pytest.raises(ValueError, match="DecoderConfig as .config"):
        train_decoder(None, DecoderTrainConfig(steps=1, batch_size=2), model=torch.nn.Linear(2, 2), progress=False)


def test_generate_refuses_empty_requests_and_non_finite_settings():
    from crossmodal_edu.dalle.train import load_tokenizer

    decoder, tokenizer = design("cross-attention"), load_tokenizer()
    with pytest.raises(ValueError, match="at least one caption"):
        generate(decoder, tokenizer, [])
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        generate(decoder, tokenizer, CAPTIONS, batch_size=0)
    for name, value in (("guidance_scale", float("nan")), ("guidance_scale", float("inf")), ("temperature", float("nan"))):
        with pytest.raises(ValueError, match=f"{name} must be a finite number"):
            generate(decoder, tokenizer, CAPTIONS, **{name: value})


ASKS_WORDS = ["cross-attention", "layerwise", "joint", "mmdit", "single-stream"]


@pytest.mark.parametrize("conditioning", ["joint", "mmdit", "single-stream", "single-stream+token-shift"])
def test_the_joint_designs_return_the_words_part_of_their_one_softmax_without_changing_the_logits(conditioning):
    decoder = design(conditioning)
    text, mask = captions_batch(CAPTIONS)
    tokens = image_tokens((2, 63), 2)
    with torch.no_grad():
        plain = decoder(tokens, text, mask)
        weighed = decoder(tokens, text, mask, need_weights=True)
    torch.testing.assert_close(weighed.logits, plain.logits, rtol=1e-5, atol=1e-5)
    weights = torch.stack(weighed.cross_weights, dim=1)  # (B, layers, H, 64, L)
    assert weights.shape == (2, SMALL["layers"], SMALL["num_heads"], 64, mask.shape[1])
    if not conditioning.startswith("single-stream"):  # in one stream, padding words are ordinary tokens
        assert (weights[~mask[:, None, None, None, :].expand_as(weights)] == 0).all()  # padded words get nothing
    share = weights.sum(-1)  # the part of each row that went to the words: the rest went to image tokens
    assert (share > 0).all() and (share < 1).all()  # each token also sees itself (and <start>), so never all of it


def test_the_joint_blocks_words_weights_are_its_softmax_written_out_in_float64():
    from crossmodal_edu.dalle.joint import joint_attention_mask

    decoder = design("joint")
    block = decoder.blocks[0]
    text, mask = captions_batch(CAPTIONS)
    rng = np.random.default_rng(3)
    B, T, L, d, H = 2, 7, mask.shape[1], SMALL["d_model"], SMALL["num_heads"]
    x = torch.from_numpy(rng.normal(size=(B, T, d)).astype(np.float32))
    context = torch.from_numpy(rng.normal(size=(B, L, d)).astype(np.float32))
    with torch.no_grad():
        _, got = block(x, context, mask, need_weights=True)
        normed = block.norm1(x).double().numpy()
    W, b = block.qkv.weight.detach().double().numpy(), block.qkv.bias.detach().double().numpy()
    Wt, bt = block.text_kv.weight.detach().double().numpy(), block.text_kv.bias.detach().double().numpy()
    q_all = normed @ W.T + b  # (B, T, 3d): q, k, v side by side, heads inside each
    q, k = q_all[..., :d], q_all[..., d:2 * d]
    text_k = (context.double().numpy() @ Wt.T + bt)[..., :d]
    hd = d // H
    split = lambda a: a.reshape(a.shape[0], a.shape[1], H, hd).transpose(0, 2, 1, 3)  # (B, H, n, hd)
    keys = np.concatenate([split(text_k), split(k)], axis=2)  # (B, H, L + T, hd)
    scores = split(q) @ keys.transpose(0, 1, 3, 2) / np.sqrt(hd)
    allowed = joint_attention_mask(mask, T)[:, L:].numpy()[:, None]  # (B, 1, T, L + T)
    scores = np.where(allowed, scores, -np.inf)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    np.testing.assert_allclose(got.double().numpy(), weights[..., :L], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("conditioning", ["single-stream", "single-stream+token-shift"])
def test_the_single_streams_words_weights_are_its_causal_softmax_written_out_in_float64(conditioning):
    from crossmodal_edu.dalle.single_stream import words_part_of_attention
    from crossmodal_edu.dalle.token_shift import grid_width, shift_tokens

    decoder = design(conditioning)
    rng = np.random.default_rng(4)
    B, L, T, d, H = 2, 5, 9, SMALL["d_model"], SMALL["num_heads"]  # T: <start> and 8 image tokens
    x = torch.from_numpy(rng.normal(size=(B, L + T, d)).astype(np.float32))
    for block in decoder.blocks:
        with torch.no_grad():
            got = words_part_of_attention(block, x, L)
            normed = block.norm1(x)
            if decoder.config.token_shift:  # the attention reads the shifted stream (tested in test_token_shift.py)
                normed = shift_tokens(normed, grid_width(decoder.config.num_image_tokens), text_len=L)
        h = normed.double().numpy()
        W, b = block.self_attention.qkv.weight.detach().double().numpy(), block.self_attention.qkv.bias.detach().double().numpy()
        qkv = h @ W.T + b  # (B, L + T, 3d)
        hd = d // H
        split = lambda a: a.reshape(B, L + T, H, hd).transpose(0, 2, 1, 3)  # (B, H, S, hd)
        q, k = split(qkv[..., :d]), split(qkv[..., d:2 * d])
        scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(hd)  # (B, H, S, S)
        later = np.arange(L + T)[None, :] > np.arange(L + T)[:, None]
        scores = np.where(later, -np.inf, scores)
        weights = np.exp(scores - scores.max(-1, keepdims=True))
        weights /= weights.sum(-1, keepdims=True)
        assert got.shape == (B, H, T, L)
        np.testing.assert_allclose(got.double().numpy(), weights[:, :, L:, :L], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("conditioning", CONDITIONINGS)
def test_word_maps_come_from_every_design_whose_image_tokens_ask_the_words(conditioning):
    from crossmodal_edu.dalle.train_decoder import DecoderTrainConfig, train_decoder

    model = build_decoder(DecoderConfig(**SMALL, conditioning=conditioning))
    tokenizer = train_decoder(None, DecoderTrainConfig(steps=1, batch_size=2, device="cpu"), model=model, progress=False).tokenizer
    if conditioning in ASKS_WORDS:
        made = generate(model, tokenizer, CAPTIONS, seed=0, attention_maps=True)
        assert made.word_maps.shape == (2, 8, 8, 8) and np.isfinite(made.word_maps).all()
    else:
        with pytest.raises(ValueError, match="do not attend to the words"):
            generate(model, tokenizer, CAPTIONS, seed=0, attention_maps=True)
