"""The public text-to-image API.

  from t2i_jax.pipelines import TextToImage
  pipe = TextToImage.from_workdir("runs/ldm_shapes")
  images = pipe.generate("a large red star in the center", num_steps=25, guidance_scale=3.0)

A pipeline is a latent-diffusion model (t2i_jax/ldm/) with its tokenizer and noise schedule,
loaded from a run's export/ folder, from a run's newest checkpoint, or from a converted Stable
Diffusion checkpoint (`python -m experiments.convert --diffusers_sd=DIR --out=DIR`). Each distinct
(batch size, image size, sampler, step count) compiles once; later calls reuse the compiled
function (the guidance scale and the seed are arguments, not constants).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from t2i_jax.diffusion import samplers
from t2i_jax.diffusion.schedules import Schedule
from t2i_jax.ldm import export
from t2i_jax.ldm import steps as ldm_steps
from t2i_jax.ldm.parts import LDMParts, generate
from t2i_jax.text.tokenizers import load_tokenizer
from t2i_jax.train import restore


class TextToImage:
  """Prompts -> PIL images with a latent-diffusion model and classifier-free guidance."""

  def __init__(
    self,
    parts: LDMParts,
    params: dict[str, Any],
    schedule: Schedule,
    tokenizer,
    context_length: int,
    resolution: int,
  ):
    """Prefer the `from_*` constructors.

    Args:
      parts: The model's modules; params: its {"unet", "vae", "text"} params.
      schedule: The noise schedule it was trained with; tokenizer: its prompt tokenizer.
      context_length: Tokens per prompt; resolution: the default image side.
    """
    self.parts, self.schedule, self.tokenizer = parts, schedule, tokenizer
    self.params = jax.device_put(params)
    self.context_length, self.resolution = context_length, resolution
    self._compiled: dict[tuple, Any] = {}

  @classmethod
  def from_export(cls, path: str) -> TextToImage:
    """A pipeline folder (t2i_jax/ldm/export.py): a run's export/ or a converted SD checkpoint."""
    parts, params, schedule, tokenizer, record = export.load_pipeline(path)
    return cls(parts, params, schedule, tokenizer, record["context_length"], record["resolution"])

  @classmethod
  def from_workdir(cls, workdir: str) -> TextToImage:
    """A configs/ldm_* run: its export/ when it has finished, else its newest checkpoint (EMA)."""
    workdir = os.path.abspath(os.path.expanduser(workdir))
    if export.is_export(workdir):  # a pipeline folder itself
      return cls.from_export(workdir)
    if export.is_export(os.path.join(workdir, export.EXPORT_DIR)):
      return cls.from_export(os.path.join(workdir, export.EXPORT_DIR))
    config = restore.load_run_config(workdir)
    if config.model.family != "ldm":
      raise ValueError(
        f"{workdir} holds a {config.model.family!r} run; TextToImage loads latent-diffusion runs "
        "(configs/ldm_*.py) and converted Stable Diffusion checkpoints."
      )
    run = restore.restore_latest(workdir, config)
    setup = run.task.train_step.keywords["setup"]
    params = ldm_steps.all_params(setup, run.state.ema_params, run.state.frozen)
    tokenizer = load_tokenizer(os.path.join(workdir, export.TOKENIZER_FILE))
    return cls(
      setup.parts,
      jax.device_get(params),
      setup.schedule,
      tokenizer,
      setup.cond_length,
      config.data.resolution,
    )

  def _generate_fn(self, sampler: str, num_steps: int, shape: tuple[int, ...], uncond_rows: int):
    key = (sampler, num_steps, shape, uncond_rows)
    if key not in self._compiled:
      self._compiled[key] = jax.jit(
        functools.partial(generate, parts=self.parts, sampler=sampler, num_steps=num_steps)
      )
    return self._compiled[key]

  def generate(
    self,
    prompt: str | Sequence[str],
    negative_prompt: str | Sequence[str] | None = None,
    num_steps: int = 50,
    guidance_scale: float = 7.5,
    sampler: str = "ddim",
    seed: int = 0,
    height: int | None = None,
    width: int | None = None,
  ) -> list[Image.Image]:
    """Generates one image per prompt.

    Args:
      prompt: A prompt or a list of prompts.
      negative_prompt: What to steer away from: one string for all prompts or one per prompt;
        None uses the empty prompt (plain classifier-free guidance).
      num_steps: Sampler steps (UNet evaluations, each on 2B examples).
      guidance_scale: Classifier-free guidance scale s (1 = no guidance).
      sampler: "ddim", "ddpm", "dpmpp_2m", "euler" or "euler_ancestral".
      seed: Seed of the initial noise and of the stochastic samplers.
      height, width: Image size; None = the model's training resolution. Must be multiples of
        the autoencoder's and UNet's combined downsampling.

    Returns:
      A list of RGB PIL images, in prompt order.
    """
    prompts = [prompt] if isinstance(prompt, str) else list(prompt)
    if not prompts or not all(isinstance(p, str) for p in prompts):
      raise ValueError("prompt must be a string or a non-empty list of strings.")
    if sampler not in samplers.SAMPLERS:
      raise ValueError(f"Unknown sampler {sampler!r}; valid: {', '.join(samplers.SAMPLERS)}.")
    if num_steps < 1:
      raise ValueError(f"num_steps must be >= 1, got {num_steps}.")
    negatives = [""] if negative_prompt is None else negative_prompt
    negatives = [negatives] if isinstance(negatives, str) else list(negatives)
    if len(negatives) not in (1, len(prompts)):
      raise ValueError(
        f"{len(negatives)} negative prompts for {len(prompts)} prompts: give one or one per prompt."
      )
    latent = self.parts.latent_shape(height or self.resolution, width or self.resolution)
    tokens = self.tokenizer.encode(prompts, self.context_length)
    uncond = self.tokenizer.encode(negatives, self.context_length)
    noise_rng, sample_rng = jax.random.split(jax.random.key(seed))
    noise = jax.random.normal(noise_rng, (len(prompts), *latent), jnp.float32)
    fn = self._generate_fn(sampler, num_steps, noise.shape, len(negatives))
    images = fn(
      self.params, self.schedule, tokens, uncond, noise, sample_rng, jnp.float32(guidance_scale)
    )
    pixels = np.asarray(jnp.round((images + 1.0) * 127.5).clip(0, 255).astype(jnp.uint8))
    return [Image.fromarray(p) for p in pixels]
