"""Specification of the image tokenizer (VQ-VAE) of the miniature DALL-E: quantisation, the
straight-through gradient, codebook restarts, and the shipped checkpoint's round trip."""

import numpy as np
import pytest
import torch

from crossmodal_edu import world
from crossmodal_edu.dalle import (
    ImageTokenizer,
    TokenizerConfig,
    codebook_usage,
    images_to_tensor,
    load_tokenizer,
    nearest_code,
    perplexity,
    pretrained_path,
    straight_through,
    tensor_to_images,
)
from crossmodal_edu.dalle.tokenizer import VectorQuantizer

TINY = TokenizerConfig(channels=8, decoder_res_blocks=1, codebook_size=16, code_dim=4)
# Seeds never used for training (hashed per step) nor for the checkpoint's own evaluation.
FRESH_SEEDS = {1: 60_601, 2: 60_602}


@pytest.fixture(scope="module")
def shipped():
    return load_tokenizer()


# --- nearest code -------------------------------------------------------------------------------


def test_nearest_code_matches_a_brute_force_loop():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(3, 7, 5, generator=g, dtype=torch.float64)  # (B, L, D)
    codebook = torch.randn(11, 5, generator=g, dtype=torch.float64)  # (K, D), K != L != D
    expected = torch.empty(3, 7, dtype=torch.int64)
    for b in range(3):
        for i in range(7):
            distances = [sum((z[b, i, d] - codebook[k, d]) ** 2 for d in range(5)) for k in range(11)]
            expected[b, i] = int(np.argmin(distances))
    assert torch.equal(nearest_code(z, codebook), expected)


def test_nearest_code_of_a_code_is_itself():
    codebook = torch.randn(9, 4, generator=torch.Generator().manual_seed(1))
    assert torch.equal(nearest_code(codebook, codebook), torch.arange(9))


def test_nearest_code_names_mismatched_widths():
    with pytest.raises(ValueError, match=r"code width D.*z has shape \(2, 3\).*codebook has shape \(5, 4\)"):
        nearest_code(torch.zeros(2, 3), torch.zeros(5, 4))


# --- straight-through estimator ----------------------------------------------------------------


def _grad_through(make_input):
    """Gradient reaching z when a fixed random function of make_input(z, z_q) is minimised,
    and the gradient at that function's input itself."""
    g = torch.Generator().manual_seed(2)
    z = torch.randn(2, 4, 3, 3, generator=g, requires_grad=True)
    z_q = torch.randn(2, 4, 3, 3, generator=g)
    weight = torch.randn(2, 4, 3, 3, generator=g)
    decoder_input = make_input(z, z_q)
    decoder_input.retain_grad()
    (torch.sin(decoder_input) * weight).sum().backward()
    return z, z_q, decoder_input


def test_straight_through_passes_the_decoder_input_gradient_to_the_encoder():
    z, z_q, decoder_input = _grad_through(straight_through)
    assert torch.equal(decoder_input.detach(), z + (z_q - z))  # the value is the code ...
    torch.testing.assert_close(decoder_input.detach(), z_q)
    assert torch.equal(z.grad, decoder_input.grad)  # ... the gradient is copied to z unchanged
    assert z.grad.abs().min() > 0


def test_straight_through_without_detach_gives_the_encoder_no_gradient():
    z, _, decoder_input = _grad_through(lambda z, z_q: z + (z_q - z))  # the bug: no detach
    assert decoder_input.grad.abs().min() > 0
    assert torch.count_nonzero(z.grad) == 0


def test_encoder_output_gets_the_decoder_input_gradient_in_the_tokenizer():
    torch.manual_seed(3)
    model = ImageTokenizer(TINY).eval()
    captured = {}

    def catch(name):
        def hook(grad):
            captured[name] = grad
        return hook

    def on_encoder_output(module, inputs, z):
        z.register_hook(catch("z"))

    def on_decoder_input(module, inputs):
        inputs[0].register_hook(catch("z_q"))

    model.encoder.register_forward_hook(on_encoder_output)
    model.decoder.register_forward_pre_hook(on_decoder_input)
    images = images_to_tensor(world.make_dataset(4, 2, seed=3).images)
    out = model(images)
    (out.reconstruction - images).square().mean().backward()  # no commitment term: pure STE
    assert captured["z_q"].abs().sum() > 0
    torch.testing.assert_close(captured["z"], captured["z_q"], rtol=0, atol=0)


# --- codebook: EMA, restarts, usage ------------------------------------------------------------


def _clustered_vectors(seed: int, n: int = 512) -> torch.Tensor:
    """Vectors in 8 tight clusters, shaped like an encoder output (B, D=4, h, w)."""
    centres = torch.randn(8, 4, generator=torch.Generator().manual_seed(1234)) * 3
    g = torch.Generator().manual_seed(seed)
    picks = torch.randint(8, (n,), generator=g)
    vectors = centres[picks] + 0.05 * torch.randn(n, 4, generator=g)  # (n, D)
    return vectors.reshape(8, n // 64, 8, 4).permute(0, 3, 1, 2).contiguous()  # (B, D, h, w)


def _collapsed_quantizer(restart: bool) -> VectorQuantizer:
    """All 16 codes at one point far from the data: one code wins everything, 15 are dead."""
    quantizer = VectorQuantizer(16, 4, ema_decay=0.9, restart_dead_codes=restart).train()
    quantizer.codebook.fill_(10.0)
    quantizer.ema_count.fill_(1.0)
    quantizer.ema_sum.fill_(10.0)
    quantizer.generator = torch.Generator().manual_seed(0)
    return quantizer


@pytest.mark.parametrize("restart", [False, True])
def test_dead_code_restart_revives_unused_codes(restart):
    quantizer = _collapsed_quantizer(restart)
    for step in range(20):
        quantizer(_clustered_vectors(seed=step))
    tokens = quantizer.quantize(_clustered_vectors(seed=99))[1]
    used = int((codebook_usage(tokens, 16) > 0).sum())
    if restart:
        assert used >= 8  # every cluster got a code of its own
    else:
        assert used == 1  # collapse: the first winner keeps everything


def test_ema_moves_a_code_to_the_mean_of_its_vectors():
    quantizer = VectorQuantizer(2, 3, ema_decay=0.5, restart_dead_codes=False).train()
    quantizer.codebook.copy_(torch.tensor([[0.0, 0, 0], [100.0, 100, 100]]))
    z = torch.tensor([[1.0, 2, 3], [3.0, 2, 1]]).T.reshape(1, 3, 1, 2)  # (B, D, h, w): two vectors
    for _ in range(30):
        quantizer(z)
    torch.testing.assert_close(quantizer.codebook[0], torch.tensor([2.0, 2, 2]))


def test_perplexity_counts_equally_used_codes():
    assert perplexity(np.array([5, 0, 0])) == pytest.approx(1.0)
    assert perplexity(np.array([3, 3, 3, 3, 0])) == pytest.approx(4.0)
    assert perplexity(np.array([1, 3])) < 2.0


# --- shapes and conversions -------------------------------------------------------------------


def test_world_images_convert_to_tensors_and_back():
    images = world.make_dataset(3, 2, seed=4).images  # (B, H, W, 3)
    tensor = images_to_tensor(images)
    assert tuple(tensor.shape) == (3, 3, 32, 32)
    assert np.array_equal(tensor_to_images(tensor), images)


def test_tokenizer_shapes_and_flat_token_sequences():
    torch.manual_seed(5)
    model = ImageTokenizer(TINY).eval()
    images = images_to_tensor(world.make_dataset(2, 1, seed=5).images)
    tokens = model.encode(images)
    assert tuple(tokens.shape) == (2, 8, 8) and tokens.dtype == torch.int64
    decoded = model.decode(tokens)
    assert tuple(decoded.shape) == (2, 3, 32, 32) and 0 <= decoded.min() and decoded.max() <= 1
    assert torch.equal(model.decode(tokens.reshape(2, 64)), decoded)  # raster order, as a transformer emits


def test_tokenizer_names_the_layout_mistake():
    model = ImageTokenizer(TINY)
    with pytest.raises(ValueError, match=r"\(B, 3, 32, 32\).*\(2, 32, 32, 3\).*images_to_tensor"):
        model.encode(torch.zeros(2, 32, 32, 3))
    with pytest.raises(ValueError, match=r"\(B, 8, 8\) or \(B, 64\)"):
        model.decode(torch.zeros(2, 63, dtype=torch.int64))


def test_each_token_sees_only_its_block_and_4_px_around_it():
    torch.manual_seed(6)
    model = ImageTokenizer(TINY).double()
    images = torch.rand(1, 3, 32, 32, dtype=torch.float64, requires_grad=True)
    for r, c in [(0, 0), (3, 5), (7, 7)]:
        images.grad = None
        model.encoder(images)[0, :, r, c].square().sum().backward()
        seen = images.grad[0].abs().sum(0) > 0  # (32, 32) pixels that move z[r, c]
        window = torch.zeros(32, 32, dtype=torch.bool)
        window[max(4 * r - 4, 0) : 4 * r + 8, max(4 * c - 4, 0) : 4 * c + 8] = True
        assert not (seen & ~window).any()  # nothing outside the 12 x 12 window ...
        assert seen[4 * r : 4 * r + 4, 4 * c : 4 * c + 4].all()  # ... and all of its own block


def test_far_from_objects_every_token_is_the_empty_image_token(shipped):
    data = world.make_dataset(50, 2, seed=FRESH_SEEDS[2])
    empty = shipped.tokenize(np.zeros((1, 32, 32, 3), np.float32))[0]
    assert len(np.unique(empty)) == 1  # an empty image is one code, repeated
    lit = torch.from_numpy(data.images.max(-1) > 0).float()[:, None]  # (B, 1, 32, 32)
    near = torch.nn.functional.max_pool2d(lit, 12, stride=4, padding=4)[:, 0].numpy() > 0  # (B, 8, 8)
    assert (shipped.tokenize(data.images)[~near] == empty[0, 0]).all()


# --- the shipped checkpoint ---------------------------------------------------------------------


def test_shipped_checkpoint_is_small_and_loads_without_code():
    path = pretrained_path("tokenizer")
    assert path.stat().st_size < 2_000_000
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    assert checkpoint["kind"] == "image_tokenizer" and checkpoint["config"]["codebook_size"] >= 32


@pytest.mark.parametrize("num_objects", [1, 2])
def test_shipped_tokenizer_round_trip_keeps_every_attribute(shipped, num_objects):
    data = world.make_dataset(400, num_objects, seed=FRESH_SEEDS[num_objects])
    reconstructions = shipped.reconstruct(data.images)
    accuracy = world.scene_accuracy(world.read_scenes(reconstructions), data.scenes)
    assert accuracy["all"] >= 0.98, accuracy


def test_shipped_tokenizer_uses_much_of_its_codebook(shipped):
    tokens = shipped.tokenize(world.make_dataset(200, 2, seed=FRESH_SEEDS[2]).images)
    counts = codebook_usage(tokens, shipped.config.codebook_size)
    assert (counts > 0).sum() >= shipped.config.codebook_size // 2
    assert perplexity(counts) > 4


# --- GPU ------------------------------------------------------------------------------------------


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU in this runtime")
def test_shipped_tokenizer_gives_the_same_tokens_on_cuda(shipped):
    images = world.make_dataset(200, 2, seed=FRESH_SEEDS[2]).images
    cpu_tokens = shipped.tokenize(images)
    cuda_tokens = load_tokenizer(device="cuda").tokenize(images)
    assert (cpu_tokens == cuda_tokens).mean() > 0.99  # TF32 convolutions may flip a near tie
