"""CUDA-only: the miniature DALL-E's decoder trains under bfloat16 autocast and samples on a GPU.

The round-1 sweep (benchmarks/decoder_sweep.py on an H200) exercised the same paths at scale; these
tests keep them from breaking. Everything skips cleanly without a GPU (CI has none).
"""
import pytest
import torch

from crossmodal_edu import world
from crossmodal_edu.dalle import DecoderConfig, DecoderTrainConfig, build_decoder, generate, load_tokenizer, train_decoder
from crossmodal_edu.dalle.config import CONDITIONINGS

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU in this runtime")

SMALL = dict(d_model=64, num_heads=4, layers=2, text_layers=2)  # text_layers == layers, as "layerwise" needs


@pytest.mark.parametrize("conditioning", CONDITIONINGS)
def test_training_steps_under_bf16_autocast_are_finite_and_lower_the_loss(conditioning):
    result = train_decoder(DecoderConfig(**SMALL, conditioning=conditioning),
                           DecoderTrainConfig(steps=30, batch_size=16, warmup_steps=3, device="cuda"), progress=False)
    loss = result.history["loss"]
    assert all(torch.isfinite(torch.tensor(loss)))
    assert sum(loss[-5:]) < sum(loss[:5])
    assert next(result.decoder.parameters()).is_cuda


@pytest.mark.parametrize("conditioning", CONDITIONINGS)
def test_cached_decoding_on_the_gpu_matches_the_full_pass(conditioning):
    torch.manual_seed(0)
    decoder = build_decoder(DecoderConfig(**SMALL, conditioning=conditioning)).cuda().eval()
    tokens, mask = world.Vocab().encode_batch(["a small red circle at the top left", "a red circle above a blue square"], max_len=8)
    text, mask = torch.from_numpy(tokens).cuda(), torch.from_numpy(mask).cuda()
    image = torch.randint(0, 256, (2, 64), device="cuda")
    with torch.no_grad():
        full = decoder(image[:, :-1], text, mask).logits
        context = decoder.encode_text(text, mask)
        caches = [{} for _ in decoder.blocks]
        for t in range(64):
            step = decoder.decode_step(image[:, t - 1] if t else None, t, context, mask, caches)
            torch.testing.assert_close(step, full[:, t], rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("conditioning", CONDITIONINGS)
def test_generation_on_the_gpu_is_seeded(conditioning):
    torch.manual_seed(0)
    decoder = build_decoder(DecoderConfig(**SMALL, conditioning=conditioning)).cuda().eval()
    tokenizer = load_tokenizer(device="cuda")
    captions = ["a small red circle at the top left"] * 3
    a = generate(decoder, tokenizer, captions, guidance_scale=1.5, seed=4)
    b = generate(decoder, tokenizer, captions, guidance_scale=1.5, seed=4)
    assert (a.image_tokens == b.image_tokens).all() and a.images.shape == (3, 32, 32, 3)
