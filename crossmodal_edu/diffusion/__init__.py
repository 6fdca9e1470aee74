"""A miniature latent diffusion model: the same cross-attention as the DALL-E decoder, inside a
denoiser that turns noise into the tokenizer's latents (the family of Stable Diffusion).

- ``config``: ``DiffusionConfig``, ``DiffusionTrainConfig``
- ``latents``: ``LatentSpace`` (images <-> standardised tokenizer latents)
- ``flow``: rectified flow: ``noisy_latents``, ``velocity_target``, ``sample_times``,
  ``time_grid``, ``euler_step``, ``guided_velocity``
- ``denoiser``: ``Denoiser`` (adaLN for time, cross-attention for the caption),
  ``build_denoiser`` (every design, by ``DiffusionConfig.conditioning``); ``mmdit``:
  ``MMDiTDenoiser`` (SD3's two-way joint attention)
- ``sampling``: ``generate`` (captions -> images, maps, trajectory), ``sample_latents``
- ``control``: prompt-to-prompt editing: ``AttentionStore``, ``AttentionInjection``,
  ``AttentionReweight``, ``prompt_to_prompt``
- ``train``: ``train_diffusion``, ``load_text_to_image``; ``evaluate``: ``evaluate_diffusion``

Command line: ``python -m crossmodal_edu.diffusion --help``. Lesson 07.
"""

from crossmodal_edu.diffusion.config import DiffusionConfig, DiffusionTrainConfig
from crossmodal_edu.diffusion.control import (
    AttentionInjection,
    AttentionReweight,
    AttentionStore,
    prompt_to_prompt,
    swapped_word,
)
from crossmodal_edu.diffusion.denoiser import Denoiser, build_denoiser
from crossmodal_edu.diffusion.evaluate import evaluate_diffusion, standard_error
from crossmodal_edu.diffusion.flow import (
    euler_step,
    guided_velocity,
    noisy_latents,
    sample_times,
    time_grid,
    velocity_target,
)
from crossmodal_edu.diffusion.latents import LatentSpace
from crossmodal_edu.diffusion.mmdit import MMDiTDenoiser
from crossmodal_edu.diffusion.sampling import DiffusionGeneration, generate, sample_latents
from crossmodal_edu.diffusion.train import load_text_to_image, train_diffusion

__all__ = [
    "AttentionInjection", "AttentionReweight", "AttentionStore", "Denoiser", "DiffusionConfig",
    "DiffusionGeneration", "DiffusionTrainConfig", "LatentSpace", "MMDiTDenoiser", "build_denoiser",
    "euler_step", "evaluate_diffusion", "generate", "guided_velocity", "load_text_to_image",
    "noisy_latents", "prompt_to_prompt", "sample_latents", "sample_times", "standard_error",
    "swapped_word", "time_grid", "train_diffusion", "velocity_target",
]
