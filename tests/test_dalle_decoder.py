"""The text-to-image decoder of the miniature DALL-E: how it samples, and that its checkpoints
reproduce it. What every design may and may not depend on (causal, reads the caption, ignores
padding, cache == no cache) is in test_decoder_designs.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crossmodal_edu import world
from crossmodal_edu.dalle import guidance
from crossmodal_edu.dalle.checkpoint import load_checkpoint, save_checkpoint
from crossmodal_edu.dalle.config import DecoderConfig, TrainConfig
from crossmodal_edu.dalle.decoder import ImageTokenDecoder, build_decoder, drop_captions, null_captions
from crossmodal_edu.dalle.sampling import cross_attention_weights, generate, generate_tokens, word_attention_maps
from crossmodal_edu.dalle.train_decoder import (
    DecoderTrainConfig,
    decoder_checkpoint,
    decoder_from_checkpoint,
    train_decoder,
)

SMALL = dict(d_model=32, num_heads=4, layers=2, text_layers=1, mlp_ratio=2)


def small_decoder(seed: int = 0, **overrides) -> ImageTokenDecoder:
    torch.manual_seed(seed)
    decoder = build_decoder(DecoderConfig(**{**SMALL, **overrides})).eval()
    with torch.no_grad():  # random weights of a useful size, so every input matters
        for p in decoder.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return decoder


def captions_batch(captions: list[str], config: DecoderConfig) -> tuple[torch.Tensor, torch.Tensor]:
    tokens, mask = world.Vocab().encode_batch(captions, max_len=config.max_text_len)
    return torch.from_numpy(tokens), torch.from_numpy(mask)


CAPTIONS = ["a small red circle at the top left", "a blue square left of a green triangle"]


def test_caption_dropout_uses_the_null_caption_and_never_masks_every_key():
    config = DecoderConfig()
    text, mask = captions_batch(CAPTIONS * 2, config)
    drop = torch.tensor([True, False, False, True])
    new_text, new_mask = drop_captions(text, mask, drop, config)
    null_text, null_mask = null_captions(2, config)
    assert torch.equal(new_text[drop], null_text) and torch.equal(new_mask[drop], null_mask)
    assert torch.equal(new_text[~drop], text[~drop]) and torch.equal(new_mask[~drop], mask[~drop])
    assert new_mask.any(dim=1).all()
    assert null_text[0, 0] == config.null_id == len(world.Vocab())
    assert text.equal(captions_batch(CAPTIONS * 2, config)[0])  # inputs untouched


@pytest.mark.parametrize("conditioning", ["cross-attention", "single-stream", "none"])
def test_training_loss_starts_near_log_codebook_size(conditioning):
    decoder = build_decoder(DecoderConfig(**SMALL, conditioning=conditioning))
    text, mask = captions_batch(CAPTIONS, decoder.config)
    tokens = torch.randint(0, 256, (2, 64), generator=torch.Generator().manual_seed(4))
    assert abs(decoder.loss(tokens, text, mask).item() - np.log(256)) < 0.1


def test_decoder_rejects_misshapen_inputs_with_clear_errors():
    decoder = small_decoder()
    text, mask = captions_batch(CAPTIONS, decoder.config)
    with pytest.raises(ValueError, match=r"image_tokens must have shape \(B, t\)"):
        decoder(torch.zeros(2, 64, dtype=torch.long), text, mask)
    with pytest.raises(ValueError, match="text_tokens must have shape"):
        decoder(torch.zeros(3, 5, dtype=torch.long), text, mask)
    with pytest.raises(ValueError, match="context_mask must be a bool tensor"):
        decoder(torch.zeros(2, 5, dtype=torch.long), text, mask.long())


# --- guidance, filtering and sampling ------------------------------------------------------------


def test_top_k_filter_keeps_exactly_the_k_largest():
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(6, 50, generator=g)
    kept = guidance.top_k_filter(logits, 7)
    assert (torch.isfinite(kept).sum(dim=-1) == 7).all()
    threshold = logits.sort(dim=-1, descending=True).values[:, 6:7]  # the 7th largest per row
    torch.testing.assert_close(kept[torch.isfinite(kept)], logits[logits >= threshold])
    assert guidance.top_k_filter(logits, None) is logits and guidance.top_k_filter(logits, 50) is logits
    with pytest.raises(ValueError, match="positive int"):
        guidance.top_k_filter(logits, 0)


def test_sampling_respects_top_k():
    g = torch.Generator().manual_seed(6)
    logits = torch.randn(2000, 30, generator=g)
    top3 = logits.topk(3, dim=-1).indices
    tokens = guidance.sample_from_logits(logits, temperature=2.0, top_k=3, generator=g)
    assert (tokens[:, None] == top3).any(dim=1).all()
    # And a large temperature without top-k does leave the top 3 often.
    tokens = guidance.sample_from_logits(logits, temperature=5.0, generator=g)
    assert (tokens[:, None] != top3).all(dim=1).float().mean() > 0.5


def test_temperature_zero_is_greedy():
    logits = torch.randn(10, 30, generator=torch.Generator().manual_seed(7))
    assert torch.equal(guidance.sample_from_logits(logits, temperature=0), logits.argmax(-1))


def test_classifier_free_guidance_interpolates_and_extrapolates():
    g = torch.Generator().manual_seed(8)
    cond, uncond = torch.randn(4, 9, generator=g), torch.randn(4, 9, generator=g)
    torch.testing.assert_close(guidance.classifier_free_guidance(cond, uncond, 1.0), cond)
    torch.testing.assert_close(guidance.classifier_free_guidance(cond, uncond, 0.0), uncond)
    torch.testing.assert_close(guidance.classifier_free_guidance(cond, uncond, 3.0), uncond + 3 * (cond - uncond))
    with pytest.raises(ValueError, match="same shape"):
        guidance.classifier_free_guidance(cond, uncond[:, :5], 2.0)


def test_sampling_with_guidance_one_equals_plain_sampling():
    decoder = small_decoder()
    text, mask = captions_batch(CAPTIONS, decoder.config)
    plain = generate_tokens(decoder, text, mask, 1.0, generator=torch.Generator().manual_seed(0))
    guided = generate_tokens(decoder, text, mask, 1.0 + 1e-12, generator=torch.Generator().manual_seed(0))
    assert torch.equal(plain, guided)


@pytest.mark.parametrize("conditioning", ["cross-attention", "single-stream"])
def test_generated_tokens_are_valid_and_seeded(conditioning):
    decoder = small_decoder(conditioning=conditioning)
    text, mask = captions_batch(CAPTIONS, decoder.config)
    a = generate_tokens(decoder, text, mask, 2.0, top_k=20, generator=torch.Generator().manual_seed(3))
    b = generate_tokens(decoder, text, mask, 2.0, top_k=20, generator=torch.Generator().manual_seed(3))
    c = generate_tokens(decoder, text, mask, 2.0, top_k=20, generator=torch.Generator().manual_seed(4))
    assert a.shape == (2, 64) and a.dtype == torch.long and 0 <= a.min() and a.max() < 256
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_cross_attention_maps_are_distributions_over_real_words():
    decoder = small_decoder()
    text, mask = captions_batch(CAPTIONS, decoder.config)
    tokens = generate_tokens(decoder, text, mask, generator=torch.Generator().manual_seed(0))
    weights = cross_attention_weights(decoder, tokens, text, mask)  # (B, layers, H, N, L)
    assert weights.shape == (2, 2, 4, 64, 8)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 2, 4, 64))
    assert (weights[1, ..., ~mask[1]] == 0).all()
    maps = word_attention_maps(weights, 8)
    assert maps.shape == (2, 8, 8, 8)
    np.testing.assert_allclose(maps.sum(axis=1), 1.0, rtol=1e-5)


# --- checkpoints, training, evaluation ------------------------------------------------------------


def test_checkpoint_round_trip_gives_identical_samples(tmp_path):
    from crossmodal_edu.dalle.train import load_tokenizer

    decoder, tokenizer = small_decoder(), load_tokenizer()
    path = save_checkpoint(decoder_checkpoint(decoder, tokenizer, None, TrainConfig(), 0, {"loss": [1.0]}, 0.0), tmp_path / "d.pt")
    loaded, loaded_tokenizer = decoder_from_checkpoint(load_checkpoint(path))
    a = generate(decoder, tokenizer, CAPTIONS, guidance_scale=1.5, seed=11)
    b = generate(loaded, loaded_tokenizer, CAPTIONS, guidance_scale=1.5, seed=11)
    assert np.array_equal(a.image_tokens, b.image_tokens) and np.array_equal(a.images, b.images)


def test_generate_names_unknown_words():
    from crossmodal_edu.dalle.train import load_tokenizer

    with pytest.raises(ValueError, match="unknown word 'purple'.*expected one of"):
        generate(small_decoder(), load_tokenizer(), ["a small purple circle at the top"])


def test_training_resumes_to_the_same_weights(tmp_path):
    config = DecoderConfig(**SMALL)
    train = DecoderTrainConfig(steps=6, batch_size=4, checkpoint_every=3, warmup_steps=2, two_object_fraction=0.5)
    straight = train_decoder(config, train, out=tmp_path / "a.pt", progress=False)
    first = DecoderTrainConfig(**{**vars(train), "steps": 3})
    train_decoder(config, first, out=tmp_path / "b.pt", progress=False)
    checkpoint = load_checkpoint(tmp_path / "b.pt")
    assert checkpoint["step"] == 3
    # Resume with the full step budget; the learning-rate schedule follows the new `steps`,
    # so resume with the same config that the straight run had from the start.
    checkpoint["train_config"] = vars(train)
    save_checkpoint(checkpoint, tmp_path / "b.pt")
    resumed = train_decoder(config, train, out=tmp_path / "b.pt", resume=True, progress=False)
    assert resumed.step == 6
    np.testing.assert_allclose(resumed.history["loss"], straight.history["loss"], rtol=1e-5)
    for (name, a), b in zip(straight.decoder.state_dict().items(), resumed.decoder.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def test_training_batches_never_contain_held_out_pairs():
    from crossmodal_edu.dalle.train import load_tokenizer
    from crossmodal_edu.dalle.train_decoder import decoder_batch

    config = DecoderConfig()
    train = DecoderTrainConfig(batch_size=64, two_object_fraction=0.5)
    vocab = world.Vocab()
    held_out = {f"{c} {s}" for c, s in config.held_out_pairs}
    assert len(held_out) == 3
    for step in range(5):
        text, mask, _ = decoder_batch(step, train, config, load_tokenizer(), vocab)
        for caption in (vocab.decode(row) for row in text):
            assert not any(pair in caption for pair in held_out), caption


def test_fidelity_of_real_images_is_near_perfect_and_of_random_tokens_near_chance():
    from crossmodal_edu.dalle.train import load_tokenizer

    tokenizer = load_tokenizer()
    data = world.make_dataset(300, 1, seed=123)
    real = world.caption_fidelity(data.captions, world.read_scenes(tokenizer.reconstruct(data.images)))
    assert real["all"] >= 0.98
    tokens = torch.randint(0, 256, (300, 8, 8), generator=torch.Generator().manual_seed(0))
    from crossmodal_edu.dalle.tokenizer import tensor_to_images

    noise = tensor_to_images(tokenizer.decode(tokens))
    random = world.caption_fidelity(data.captions, world.read_scenes(noise))
    # Random tokens draw clutter: never one object matching all four attributes by luck
    # (chance for a single random object: 1/324).
    assert random["all"] <= 0.02


def test_command_line_trains_evaluates_samples_and_releases_a_decoder(tmp_path, capsys):
    from crossmodal_edu.dalle.__main__ import main

    out = tmp_path / "decoder.pt"
    options = ["--out", str(out), "--d-model", "32", "--layers", "1", "--text-layers", "1", "--batch-size", "4",
               "--warmup-steps", "1", "--eval-prompts", "2", "--checkpoint-every", "2", "--device", "cpu"]
    assert main(["train-decoder", *options, "--steps", "2"]) == 0
    assert main(["train-decoder", *options, "--steps", "3", "--resume", "--release"]) == 0
    checkpoint = load_checkpoint(out)
    assert checkpoint["step"] == 3 and "optimizer" not in checkpoint
    assert {"tier1_all", "tier2_all", "held_out_all", "train_seconds"} <= set(checkpoint["metrics"])
    assert all(v.dtype == torch.float16 for v in checkpoint["model"].values() if v.is_floating_point())
    assert (tmp_path / "decoder_loss.png").is_file()
    assert main(["eval-decoder", "--checkpoint", str(out), "--eval-prompts", "2", "--guidance-scale", "1.5"]) == 0
    png = tmp_path / "samples.png"
    assert main(["sample", "a small red circle at the top left", "--checkpoint", str(out), "--per-caption", "2",
                 "--out", str(png), "--top-k", "5"]) == 0
    assert png.is_file()
    with pytest.raises(ValueError, match="unknown word"):
        main(["sample", "a small purple circle at the top", "--checkpoint", str(out)])


def test_command_line_eval_prompts_zero_skips_evaluation_and_a_negative_count_is_refused(tmp_path, capsys):
    from crossmodal_edu.dalle.__main__ import main

    out = tmp_path / "decoder.pt"
    options = ["--out", str(out), "--d-model", "32", "--layers", "1", "--text-layers", "1", "--batch-size", "4",
               "--warmup-steps", "1", "--steps", "2", "--device", "cpu"]
    assert main(["train-decoder", *options, "--eval-prompts", "0"]) == 0
    assert not load_checkpoint(out).get("metrics")  # trained and saved, nothing graded
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["train-decoder", *options, "--eval-prompts", "-1"])
    assert "at least 0, got -1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["eval-decoder", "--checkpoint", str(out), "--eval-prompts", "0"])
    assert "at least 1, got 0" in capsys.readouterr().err


def test_command_line_trains_tokenizer_then_decoder_from_scratch(tmp_path):
    from crossmodal_edu.dalle.__main__ import main

    options = ["--out-dir", str(tmp_path), "--tokenizer-steps", "2", "--tokenizer-channels", "8",
               "--tokenizer-codebook-size", "16", "--tokenizer-code-dim", "4", "--tokenizer-decoder-res-blocks", "1",
               "--d-model", "32", "--layers", "1", "--text-layers", "1", "--batch-size", "4", "--steps", "2",
               "--warmup-steps", "1", "--eval-prompts", "2", "--device", "cpu", "--release"]
    assert main(["train", *options]) == 0
    decoder, tokenizer = decoder_from_checkpoint(load_checkpoint(tmp_path / "decoder.pt"))
    assert decoder.config.codebook_size == tokenizer.config.codebook_size == 16
    assert (tmp_path / "tokenizer.pt").is_file()
