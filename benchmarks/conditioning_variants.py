"""The ways text can enter the miniature DALL-E, side by side: size, training step time and
sampling time of every design in ``crossmodal_edu.dalle`` (``build_decoder``), at about equal
parameters (``designs.matched_config``). It defines no model: every design lives in the package.

How each design reads the caption (``DecoderConfig.conditioning``):

* ``cross-attention``: every block's image tokens ask the text encoder's final output, in a
  softmax of its own, after a causal self-attention over the image prefix.
* ``single-stream`` (DALL-E 1): caption and image tokens in one causal sequence; block ``l``
  reads the caption as processed by ``l`` blocks, with the same weights as the image.
* ``layerwise``: cross-attention, but block ``l`` reads text-encoder layer ``l``.
* ``joint``: one softmax per block over ``[caption ; image prefix]``, the caption's keys and
  values from their own projection of the fixed encoded caption. This is **half** of the joint
  attention of Stable Diffusion 3's MM-DiT (Esser et al. 2024): there text tokens also query the
  image tokens and the text stream is updated in every block, with per-modality weights; here
  only the image asks the text.
* ``mmdit``: that MM-DiT block, as far as a causal model allows: per-modality projections, MLPs
  and norms, the caption stream updated in every block, but caption rows that see only the
  caption (reading image tokens would read the future).
* ``adaln``: no attention to words; the mean of the encoded caption scales and shifts every
  LayerNorm (DiT's adaLN-Zero), the baseline.
* ``none``: the ablation.

The round-4 sweep (``benchmarks/decoder_sweep.py``, results in benchmarks/RESULTS.md) compared
``layerwise`` and ``joint`` with cross-attention and the single stream to find out why the single
stream learned two objects faster.

    python benchmarks/conditioning_variants.py                 # width 128, about the default's parameters
    python benchmarks/conditioning_variants.py --d-model 64 --text-layers 2 --device cuda
"""

from __future__ import annotations

import argparse
import time

import torch

from crossmodal_edu import world
from crossmodal_edu.dalle.config import CONDITIONINGS, DecoderConfig
from crossmodal_edu.dalle.decoder import build_decoder
from crossmodal_edu.dalle.designs import matched_config, parameter_count
from crossmodal_edu.dalle.sampling import generate_tokens
from crossmodal_edu.device import get_device

CAPTIONS = ["a small red circle at the top left", "a blue square left of a green triangle"]


def seconds(fn, repeats: int) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--d-model", type=int, default=128)
    parser.add_argument("--text-layers", type=int, default=4, help="of the cross-attention reference")
    parser.add_argument("--layers", type=int, default=4, help="of the cross-attention reference")
    parser.add_argument("--batch-size", type=int, default=64, help="training batch")
    parser.add_argument("--samples", type=int, default=16, help="images per sampling call")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default=None)
    args = parser.parse_args()
    device = get_device(args.device)
    reference = DecoderConfig(d_model=args.d_model, text_layers=args.text_layers, layers=args.layers)
    target = parameter_count(reference)
    tokens, mask = world.Vocab().encode_batch(CAPTIONS * (args.batch_size // 2), max_len=reference.max_text_len)
    text, mask = torch.from_numpy(tokens).to(device), torch.from_numpy(mask).to(device)
    image = torch.randint(0, reference.codebook_size, (len(text), reference.num_image_tokens), device=device)

    print(f"### Decoder designs at width {args.d_model}, about {target / 1e6:.2f} M parameters, on {device}\n")
    print("| design | text layers | blocks | parameters | vs reference | train s/step | sample s (cache) | sample s (no cache) |")
    print("|---|---|---|---|---|---|---|---|")
    for conditioning in CONDITIONINGS:
        config = matched_config(conditioning, reference)
        torch.manual_seed(0)
        decoder = build_decoder(config).to(device)
        optimizer = torch.optim.AdamW(decoder.parameters(), lr=1e-3)

        def train_step() -> None:
            decoder.train()
            loss = decoder.loss(image, text, mask)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        part = slice(0, args.samples)
        cached = seconds(lambda: generate_tokens(decoder, text[part], mask[part], 1.5, use_cache=True), args.repeats)
        plain = seconds(lambda: generate_tokens(decoder, text[part], mask[part], 1.5, use_cache=False), max(1, args.repeats // 2))
        count = parameter_count(config)
        print(f"| {conditioning} | {config.text_layers} | {config.layers} | {count / 1e6:.2f} M | {count / target - 1:+.1%} | "
              f"{seconds(train_step, args.repeats):.3f} | {cached:.2f} | {plain:.2f} |", flush=True)
    print(f"\nMedian of {args.repeats} calls after a warm-up; sampling: {args.samples} images, guidance 1.5 (batch of "
          f"{2 * args.samples}). The single stream ignores its text-layer count.")


if __name__ == "__main__":
    main()
