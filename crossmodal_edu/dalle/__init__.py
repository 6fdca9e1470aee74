"""A miniature DALL-E, trained from scratch on the synthetic world.

- ``config``: ``TokenizerConfig``, ``TrainConfig``
- ``tokenizer``: the VQ-VAE ``ImageTokenizer`` (image -> 8 x 8 ``image_tokens`` -> image),
  ``nearest_code``, ``straight_through``, ``perplexity``, ``images_to_tensor``
- ``checkpoint``: atomic, checksummed ``save_checkpoint``, ``load_checkpoint``, ``pretrained_path``,
  ``CheckpointError``
- ``train``: ``train_loop`` (budget, progress bar, checkpoints, Ctrl-C), ``train_tokenizer``,
  ``load_tokenizer``
- ``evaluate``: ``evaluate_tokenizer`` (pixel error, codebook use, oracle accuracy),
  ``evaluate_decoder`` (prompt fidelity, read back by the oracle; images made elsewhere:
  ``crossmodal_edu.world.fidelity.image_fidelity``)
- ``decoder``: ``ImageTokenDecoder`` (text encoder + causal decoder with cross-attention),
  ``build_decoder`` (every design, by ``DecoderConfig.conditioning``), ``null_captions``,
  ``drop_captions``; the other designs, one module each: ``single_stream``
  (``SingleStreamDecoder``, DALL-E 1), ``joint`` (``JointDecoder``, one softmax over caption and
  image prefix), ``mmdit`` (``MMDiTDecoder``, SD3's two-stream block), ``adaln``
  (``AdaLNDecoder``, pooled caption through adaptive LayerNorm), ``layerwise``
  (``LayerwiseDecoder``); ``designs``: ``parameter_count``, ``matched_config`` (equal sizes);
  ``token_shift``: ``shift_tokens`` (``DecoderConfig(token_shift=True)``: image tokens borrow
  channels from their upper and left neighbours, DALLE-pytorch's ``shift_tokens``)
- ``guidance``: ``top_k_filter``, ``classifier_free_guidance``, ``sample_from_logits``
- ``sampling``: ``generate_tokens`` (the loop), ``generate`` (captions -> images + attention maps)
- ``train_decoder``: ``train_decoder``, ``load_text_to_image``

Command line: ``python -m crossmodal_edu.dalle --help``. Lessons 05 and 06.
"""

from crossmodal_edu.dalle.checkpoint import CheckpointError, load_checkpoint, pretrained_path, save_checkpoint
from crossmodal_edu.dalle.config import DecoderConfig, TokenizerConfig, TrainConfig
from crossmodal_edu.dalle.adaln import AdaLNDecoder
from crossmodal_edu.dalle.decoder import ImageTokenDecoder, build_decoder, drop_captions, null_captions
from crossmodal_edu.dalle.designs import matched_config, parameter_count
from crossmodal_edu.dalle.evaluate import evaluate_decoder, evaluate_tokenizer
from crossmodal_edu.dalle.guidance import classifier_free_guidance, sample_from_logits, top_k_filter
from crossmodal_edu.dalle.joint import JointDecoder, joint_attention_mask
from crossmodal_edu.dalle.layerwise import LayerwiseDecoder
from crossmodal_edu.dalle.mmdit import MMDiTDecoder
from crossmodal_edu.dalle.sampling import Generation, generate, generate_tokens
from crossmodal_edu.dalle.single_stream import SingleStreamDecoder
from crossmodal_edu.dalle.token_shift import shift_tokens
from crossmodal_edu.dalle.tokenizer import (
    ImageTokenizer,
    codebook_usage,
    images_to_tensor,
    nearest_code,
    perplexity,
    straight_through,
    tensor_to_images,
)
from crossmodal_edu.dalle.train import load_tokenizer, train_loop, train_tokenizer
from crossmodal_edu.dalle.train_decoder import DecoderTrainConfig, load_text_to_image, train_decoder

__all__ = [
    "AdaLNDecoder",
    "CheckpointError",
    "DecoderConfig",
    "DecoderTrainConfig",
    "Generation",
    "ImageTokenDecoder",
    "ImageTokenizer",
    "JointDecoder",
    "LayerwiseDecoder",
    "MMDiTDecoder",
    "SingleStreamDecoder",
    "TokenizerConfig",
    "TrainConfig",
    "build_decoder",
    "classifier_free_guidance",
    "codebook_usage",
    "drop_captions",
    "evaluate_decoder",
    "generate",
    "generate_tokens",
    "joint_attention_mask",
    "matched_config",
    "parameter_count",
    "load_text_to_image",
    "null_captions",
    "sample_from_logits",
    "top_k_filter",
    "train_decoder",
    "evaluate_tokenizer",
    "images_to_tensor",
    "load_checkpoint",
    "load_tokenizer",
    "nearest_code",
    "perplexity",
    "pretrained_path",
    "save_checkpoint",
    "shift_tokens",
    "straight_through",
    "tensor_to_images",
    "train_loop",
    "train_tokenizer",
]
