"""A miniature DALL-E, trained from scratch on the synthetic world.

- ``config``: ``TokenizerConfig``, ``TrainConfig``
- ``tokenizer``: the VQ-VAE ``ImageTokenizer`` (image -> 8 x 8 ``image_tokens`` -> image),
  ``nearest_code``, ``straight_through``, ``perplexity``, ``images_to_tensor``
- ``checkpoint``: atomic ``save_checkpoint``, ``load_checkpoint``, ``pretrained_path``
- ``train``: ``train_loop`` (budget, progress bar, checkpoints, Ctrl-C), ``train_tokenizer``,
  ``load_tokenizer``
- ``evaluate``: ``evaluate_tokenizer`` (pixel error, codebook use, oracle accuracy)

Command line: ``python -m crossmodal_edu.dalle --help``. Lessons 05 and 06.
"""

from crossmodal_edu.dalle.checkpoint import load_checkpoint, pretrained_path, save_checkpoint
from crossmodal_edu.dalle.config import TokenizerConfig, TrainConfig
from crossmodal_edu.dalle.evaluate import evaluate_tokenizer
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

__all__ = [
    "ImageTokenizer",
    "TokenizerConfig",
    "TrainConfig",
    "codebook_usage",
    "evaluate_tokenizer",
    "images_to_tensor",
    "load_checkpoint",
    "load_tokenizer",
    "nearest_code",
    "perplexity",
    "pretrained_path",
    "save_checkpoint",
    "straight_through",
    "tensor_to_images",
    "train_loop",
    "train_tokenizer",
]
