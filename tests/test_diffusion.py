"""The latent diffusion model (crossmodal_edu.diffusion), checked against what each part must do
by construction: the flow's algebra, a sampler that reaches the data exactly when given the exact
velocity, a denoiser that reads the caption and ignores padding, an injection of a run's own maps
that changes nothing, training that resumes step for step."""
import numpy as np
import pytest
import torch

from crossmodal_edu import world
from crossmodal_edu.dalle import load_tokenizer, null_captions
from crossmodal_edu.diffusion import (
    AttentionInjection,
    AttentionReweight,
    AttentionStore,
    DiffusionConfig,
    DiffusionTrainConfig,
    LatentSpace,
    build_denoiser,
    euler_step,
    generate,
    guided_velocity,
    noisy_latents,
    sample_latents,
    sample_times,
    swapped_word,
    time_grid,
    train_diffusion,
    velocity_target,
)
from crossmodal_edu.diffusion.denoiser import attend_with
from crossmodal_edu.diffusion.train import load_text_to_image

SMALL = dict(d_model=32, num_heads=4, text_layers=1, layers=2)


def _model(conditioning="cross-attention", seed=0):
    torch.manual_seed(seed)
    model = build_denoiser(DiffusionConfig(conditioning=conditioning, **SMALL))
    # Zero-initialised gates and output (adaLN-Zero) make a fresh model ignore everything; give
    # every parameter random values so that what a test changes can show in the output.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return model.eval().requires_grad_(False)


def _inputs(B=3, L=8, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, 16, 8, 8, generator=g)
    t = torch.rand(B, generator=g)
    tokens = torch.randint(1, 25, (B, L), generator=g)
    mask = torch.ones(B, L, dtype=torch.bool)
    mask[0, 5:] = False  # a shorter caption, padded
    tokens[~mask] = 0
    return x, t, tokens, mask


# --- the flow ------------------------------------------------------------------------------------


def test_the_path_starts_at_the_data_ends_at_the_noise_and_its_derivative_is_the_target():
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(4, 16, 8, 8, generator=g, dtype=torch.float64), torch.randn(4, 16, 8, 8, generator=g, dtype=torch.float64)
    assert torch.equal(noisy_latents(x0, noise, torch.zeros(4, dtype=torch.float64)), x0)
    assert torch.equal(noisy_latents(x0, noise, torch.ones(4, dtype=torch.float64)), noise)
    t, h = torch.rand(4, generator=g, dtype=torch.float64) * 0.8 + 0.1, 1e-6
    derivative = (noisy_latents(x0, noise, t + h) - noisy_latents(x0, noise, t - h)) / (2 * h)  # finite differences
    torch.testing.assert_close(derivative, velocity_target(x0, noise), rtol=1e-6, atol=1e-6)


def test_euler_with_the_exact_velocity_of_one_data_point_lands_on_it_for_any_step_count():
    # If the data are one point x0, the path through x_t points at x0: v(x_t, t) = (x_t - x0) / t.
    g = torch.Generator().manual_seed(3)
    x0 = torch.randn(2, 16, 8, 8, generator=g, dtype=torch.float64)
    for steps in (1, 3, 20):
        x, times = torch.randn(2, 16, 8, 8, generator=g, dtype=torch.float64), time_grid(steps).double()
        for i in range(steps):
            x = euler_step(x, (x - x0) / times[i], float(times[i]), float(times[i + 1]))
        torch.testing.assert_close(x, x0)


def test_guidance_is_the_line_through_the_two_velocities():
    a, b = torch.randn(5), torch.randn(5)
    assert torch.equal(guided_velocity(a, b, 0.0), a)
    torch.testing.assert_close(guided_velocity(a, b, 1.0), b)
    torch.testing.assert_close(guided_velocity(a, b, 3.0), a + 3 * (b - a))
    with pytest.raises(ValueError, match="finite"):
        guided_velocity(a, b, float("nan"))


def test_training_times_lie_inside_the_path_and_logit_normal_favours_the_middle():
    g = torch.Generator().manual_seed(0)
    uniform, logit = sample_times(20000, g, "uniform"), sample_times(20000, g, "logit-normal")
    for t in (uniform, logit):
        assert float(t.min()) > 0 and float(t.max()) < 1
    middle = lambda t: float(((t > 0.25) & (t < 0.75)).float().mean())  # noqa: E731
    assert middle(uniform) == pytest.approx(0.5, abs=0.02)
    assert middle(logit) > 0.6  # P(|u| < logit(0.75) = 1.0986) for u ~ N(0, 1) is 0.728
    with pytest.raises(ValueError, match="uniform"):
        sample_times(3, g, "cosine")


def test_the_flow_says_what_was_wrong():
    with pytest.raises(ValueError, match="same shape"):
        noisy_latents(torch.zeros(2, 3), torch.zeros(2, 4), torch.zeros(2))
    with pytest.raises(ValueError, match="one time per latent"):
        noisy_latents(torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(3))
    with pytest.raises(ValueError, match="positive int"):
        time_grid(0)


# --- the latent space ----------------------------------------------------------------------------


def test_the_latent_space_is_standardised_and_its_round_trip_is_read_right_by_the_oracle():
    space = LatentSpace.measure(load_tokenizer(), num_images=400)
    data = world.make_dataset(200, 1, seed=123)
    latents = space.encode(data.images)
    assert latents.shape == (200, 16, 8, 8)
    assert abs(float(latents.mean())) < 0.2 and 0.6 < float(latents.std()) < 1.4
    from crossmodal_edu.world.fidelity import image_fidelity

    assert image_fidelity(data.captions, space.decode(latents))["all"] >= 0.97
    with pytest.raises(ValueError, match=r"latents must have shape \(B, 16, 8, 8\)"):
        space.decode(torch.zeros(2, 8, 8, 16))


# --- the denoiser --------------------------------------------------------------------------------


@pytest.mark.parametrize("conditioning", ["cross-attention", "mmdit"])
def test_the_denoiser_reads_the_caption_and_ignores_its_padding(conditioning):
    model = _model(conditioning)
    x, t, tokens, mask = _inputs()
    base = model(x, t, tokens, mask).velocity
    assert base.shape == x.shape
    other = tokens.clone()
    other[1, 2] = (other[1, 2] % 24) + 1  # another real word in caption 1
    changed = model(x, t, other, mask).velocity
    assert not torch.allclose(changed[1], base[1]) and torch.equal(changed[[0, 2]], base[[0, 2]])
    padded = tokens.clone()
    padded[0, 5:] = 7  # what a padding slot holds must not matter
    torch.testing.assert_close(model(x, t, padded, mask).velocity, base)


def test_the_ablation_never_reads_the_caption():
    model = _model("none")
    x, t, tokens, mask = _inputs()
    other = torch.randint(1, 25, tokens.shape)
    assert torch.equal(model(x, t, tokens, mask).velocity, model(x, t, other, torch.ones_like(mask)).velocity)


@pytest.mark.parametrize("conditioning", ["cross-attention", "mmdit", "none"])
def test_every_latent_sees_every_other_no_causal_mask(conditioning):
    model = _model(conditioning)
    x, t, tokens, mask = _inputs()
    moved = x.clone()
    moved[:, :, 7, 7] += 1.0  # the last latent position in raster order
    difference = (model(moved, t, tokens, mask).velocity - model(x, t, tokens, mask).velocity).abs()
    assert float(difference[:, :, 0, 0].max()) > 1e-4  # the first position felt it


def test_the_time_changes_the_prediction():
    model = _model()
    x, t, tokens, mask = _inputs()
    assert not torch.allclose(model(x, t, tokens, mask).velocity, model(x, 1 - t, tokens, mask).velocity)


def test_the_mmdit_caption_stream_reads_the_latents_two_way():
    model = _model("mmdit")
    x, t, tokens, mask = _inputs()
    context = model.encode_text(tokens, mask)
    block = model.blocks[0]
    h = model.latent_in(x.flatten(2).transpose(1, 2)) + model.position_embedding
    c = model.time_embedding(t)
    _, e1, _ = block(h, c, context, mask)
    _, e2, _ = block(h + 1.0, c, context, mask)
    assert not torch.allclose(e1, e2), "the caption stream should change when the latents do"


@pytest.mark.parametrize("conditioning", ["cross-attention", "mmdit"])
def test_the_maps_are_attention_over_the_real_words(conditioning):
    model = _model(conditioning)
    x, t, tokens, mask = _inputs()
    weights = model(x, t, tokens, mask, need_weights=True).cross_weights
    assert len(weights) == 2 and weights[0].shape == (3, 4, 64, 8)
    for w in weights:
        assert float(w[0, :, :, 5:].abs().max()) == 0.0  # padding gets nothing
        total = w.sum(-1)
        if conditioning == "cross-attention":
            torch.testing.assert_close(total, torch.ones_like(total))
        else:  # the words' share of a joint softmax over words and latents
            assert float(total.max()) <= 1 + 1e-5 and float(total.min()) >= 0.0 and float(total.mean()) < 0.99


def test_reading_through_the_layers_own_weights_gives_its_own_output():
    model = _model()
    attention = model.blocks[0].cross_attention
    g = torch.Generator().manual_seed(5)
    x, context = torch.randn(2, 64, 32, generator=g), torch.randn(2, 8, 32, generator=g)
    mask = torch.ones(2, 8, dtype=torch.bool)
    mask[1, 3:] = False
    out, weights = attention(x, context, mask, need_weights=True)
    torch.testing.assert_close(attend_with(attention, weights, context), out)


def test_an_encoded_caption_passed_in_gives_what_encoding_it_again_gives():
    model = _model()
    x, t, tokens, mask = _inputs()
    context = model.encode_text(tokens, mask)
    torch.testing.assert_close(model(x, t, tokens, mask, context=context).velocity, model(x, t, tokens, mask).velocity)


def test_bad_inputs_get_clear_errors():
    model = _model()
    x, t, tokens, mask = _inputs()
    with pytest.raises(ValueError, match=r"x_t must have shape \(B, 16, 8, 8\)"):
        model(x.permute(0, 2, 3, 1), t, tokens, mask)
    with pytest.raises(ValueError, match=r"t must lie in \[0, 1\]"):
        model(x, t * 1000, tokens, mask)
    with pytest.raises(ValueError, match="one time per latent"):
        model(x, t[:2], tokens, mask)
    with pytest.raises(ValueError, match="integer word ids"):
        model(x, t, tokens.float(), mask)
    with pytest.raises(ValueError, match="bool"):
        model(x, t, tokens, mask.long())
    with pytest.raises(ValueError, match="0..25"):
        model(x, t, tokens + 40, mask)
    with pytest.raises(ValueError, match="conditioning"):
        DiffusionConfig(conditioning="concat")
    with pytest.raises(ValueError, match="joint attention"):
        _model("mmdit")(x, t, tokens, mask, attention_control=lambda layer, w: w)


# --- sampling and attention control --------------------------------------------------------------


def _sample(model, captions, seed=0, **kwargs):
    vocab = world.Vocab()
    tokens, mask = vocab.encode_batch(captions, max_len=8)
    noise = torch.randn(len(captions), 16, 8, 8, generator=torch.Generator().manual_seed(seed))
    return sample_latents(model, torch.from_numpy(tokens), torch.from_numpy(mask), noise, steps=4, **kwargs)


def test_injecting_a_runs_own_maps_changes_nothing_and_a_factor_of_one_changes_nothing():
    model = _model()
    captions = ["a small red circle at the top left", "a large blue square in the middle"]
    store = AttentionStore()
    plain, _, _ = _sample(model, captions, attention_control=store)
    assert len(store.maps) == 4 * 2
    injected, _, _ = _sample(model, captions, attention_control=AttentionInjection(store, steps=4))
    torch.testing.assert_close(injected, plain)
    same, _, _ = _sample(model, captions, attention_control=AttentionReweight([3], 1.0))
    torch.testing.assert_close(same, plain)


def test_injecting_another_captions_maps_changes_the_result_and_only_while_asked():
    model = _model()
    source, target = ["a small red circle at the top left"], ["a small blue circle at the top left"]
    store = AttentionStore()
    _sample(model, source, attention_control=store)
    plain, _, _ = _sample(model, target)
    injected, _, _ = _sample(model, target, attention_control=AttentionInjection(store, steps=2))
    assert not torch.allclose(injected, plain)
    zero, _, _ = _sample(model, target, attention_control=AttentionInjection(store, steps=0))
    # (the step-by-step softmax a control needs and the fused kernel differ by float32 rounding)
    torch.testing.assert_close(zero, plain, rtol=1e-4, atol=1e-4)


def test_a_word_swap_is_one_word_at_one_place():
    assert swapped_word("a small red circle", "a small blue circle") == 2
    with pytest.raises(ValueError, match="exactly one word"):
        swapped_word("a small red circle", "a big blue circle")
    with pytest.raises(ValueError, match="keeps the length"):
        swapped_word("a red circle", "a small red circle")


def test_generate_is_reproducible_and_guidance_zero_ignores_the_caption():
    model = _model()
    captions = ["a small red circle at the top left", "a large blue square in the middle"]
    from crossmodal_edu.dalle import load_tokenizer

    tokenizer = load_tokenizer()
    one = generate(model, tokenizer, captions, steps=3, seed=4, attention_maps=True)
    two = generate(model, tokenizer, captions, steps=3, seed=4)
    assert one.images.shape == (2, 32, 32, 3) and np.array_equal(one.images, two.images)
    assert one.weights.shape == (2, 3, 2, 4, 64, 8) and one.word_maps.shape == (2, 8, 8, 8)
    assert float(one.images.min()) >= 0 and float(one.images.max()) <= 1
    # s = 0: the velocity is the null caption's alone, so two captions from the same noise agree.
    unguided = generate(model, tokenizer, [captions[0], captions[1]], steps=3, seed=4, guidance_scale=0.0, batch_size=1)
    same_noise = generate(model, tokenizer, [captions[1]], steps=3, seed=4, guidance_scale=0.0, batch_size=1)
    np.testing.assert_allclose(unguided.latents[0], same_noise.latents[0], atol=1e-5)
    with pytest.raises(ValueError, match="list of captions"):
        generate(model, tokenizer, captions[0])
    with pytest.raises(ValueError, match="positive int"):
        generate(model, tokenizer, captions, steps=0)
    with pytest.raises(ValueError, match="never reads the caption"):
        generate(_model("none"), tokenizer, captions, steps=2, attention_maps=True)


def test_the_null_caption_is_the_decoders():
    tokens, mask = null_captions(2, DiffusionConfig())
    assert tokens[0, 0] == 25 and mask[0].tolist() == [True] + [False] * 7


# --- training ------------------------------------------------------------------------------------


def _train(tmp_path, steps, resume=False, out="run.pt"):
    return train_diffusion(
        DiffusionConfig(**SMALL), DiffusionTrainConfig(steps=steps, batch_size=8, warmup_steps=2, checkpoint_every=2, device="cpu"),
        out=tmp_path / out, resume=resume, progress=False,
    )


def test_a_resumed_run_ends_where_the_uninterrupted_one_does(tmp_path):
    straight = _train(tmp_path, 4, out="straight.pt")
    _train(tmp_path, 2, out="resumed.pt")
    resumed = _train(tmp_path, 4, resume=True, out="resumed.pt")
    assert resumed.step == 4 and resumed.history["loss"] == pytest.approx(straight.history["loss"])
    for a, b in zip(straight.model.state_dict().values(), resumed.model.state_dict().values()):
        torch.testing.assert_close(a, b)
    model, _ = load_text_to_image(tmp_path / "straight.pt")
    for a, b in zip(straight.model.state_dict().values(), model.state_dict().values()):
        torch.testing.assert_close(a, b)


def test_training_lowers_the_velocity_error(tmp_path):
    result = train_diffusion(
        DiffusionConfig(**SMALL), DiffusionTrainConfig(steps=60, batch_size=16, warmup_steps=5, lr=3e-3, device="cpu"),
        progress=False,
    )
    loss = result.history["loss"]
    # An untrained model predicts v = 0, whose error is E||eps - x0||^2 per number, about 2
    # (the latents are standardised); learning the average direction alone takes it well below.
    assert np.mean(loss[:5]) > 1.5 and np.mean(loss[-10:]) < 0.8 * np.mean(loss[:5])


# --- the command line and the shipped checkpoint ------------------------------------------------


def test_the_command_line_trains_releases_evaluates_and_samples(tmp_path, capsys):
    from crossmodal_edu.diffusion.__main__ import main

    out = tmp_path / "tiny.pt"
    assert main(["train", "--out", str(out), "--steps", "2", "--batch-size", "4", "--warmup-steps", "1", "--d-model", "32",
                 "--layers", "1", "--text-layers", "1", "--eval-prompts", "4", "--sampling-steps", "2", "--release"]) == 0
    checkpoint = load_checkpoint_plain(out)
    assert "optimizer" not in checkpoint and "trained" not in checkpoint
    assert checkpoint["model"]["blocks.0.mlp.0.weight"].dtype == torch.float16 and checkpoint["model"]["latent_std"].dtype == torch.float32
    assert main(["eval", "--checkpoint", str(out), "--eval-prompts", "4", "--sampling-steps", "2"]) == 0
    assert '"tier1_all"' in capsys.readouterr().out
    assert main(["sample", "a small red circle at the top left", "--checkpoint", str(out), "--per-caption", "2",
                 "--sampling-steps", "2", "--out", str(tmp_path / "red.png")]) == 0
    assert (tmp_path / "red.png").stat().st_size > 0
    damaged = tmp_path / "damaged.pt"
    damaged.write_bytes(out.read_bytes()[:1000])
    assert main(["eval", "--checkpoint", str(damaged)]) == 1  # a clear error, not a traceback


def load_checkpoint_plain(path):
    from crossmodal_edu.dalle.checkpoint import load_checkpoint

    return load_checkpoint(path)


def test_the_shipped_denoiser_draws_what_one_object_prompts_ask_for():
    from crossmodal_edu.diffusion.train import CHECKPOINT
    from crossmodal_edu.world.fidelity import image_fidelity

    assert CHECKPOINT.stat().st_size < 5_000_000
    model, tokenizer = load_text_to_image()
    assert model.config.conditioning == "cross-attention"
    # Fresh prompts of a seed of their own (not the evaluation's). The target is 95% on 500;
    # 80 prompts give a standard error of about 2.5 points, so 85% leaves room for the sample alone.
    from crossmodal_edu.dalle.evaluate import evaluation_prompts

    captions = evaluation_prompts(80, "tier1", model.config.held_out_pairs, seed=4242)
    assert image_fidelity(captions, generate(model, tokenizer, captions, guidance_scale=3.0, seed=9).images)["all"] >= 0.85
