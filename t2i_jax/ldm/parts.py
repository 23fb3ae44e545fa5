"""The modules of a latent-diffusion text-to-image model and the one sampling function.

`LDMParts` holds the static pieces (UNet, autoencoder, text encoder, prediction type); params
travel separately as `{"unet", "vae", "text"}`. Training (t2i_jax/ldm/steps.py), the sample grids
and the public `TextToImage` API all generate through `generate` below, so there is one sampler
path: encode the prompt and the negative prompt -> a guided sampler over the latents (one batched
UNet call per step; `sample_latents`) -> decode.
"""

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from t2i_jax.diffusion import samplers
from t2i_jax.diffusion.schedules import Schedule
from t2i_jax.models.clip import text_padding_mask
from t2i_jax.models.unet import UNet
from t2i_jax.models.vae import AutoencoderKL

TEXT_KINDS = ("word", "clip")


@dataclasses.dataclass(frozen=True)
class LDMParts:
  """Static modules of a text-to-image latent-diffusion model.

  Attributes:
    unet: Denoiser over latents [B, h, w, C].
    vae: Autoencoder between images [B, H, W, 3] in [-1, 1] and latents.
    text_kind: "word" (a WordTextEncoder trained with the UNet) or "clip" (a CLIP text tower,
      `TextTransformer`: ours, or Stable Diffusion's converted CLIPTextModel).
    text_encoder: The text module (`WordTextEncoder` or `TextTransformer`).
    pad_id, eos_id: The tokenizer's padding and end-of-text ids.
    context_mask: Mask padding tokens out of cross-attention. Stable Diffusion does not (its UNet
      attends to all 77 CLIP states), so converted SD checkpoints keep it off.
    prediction_type: What the UNet predicts: "epsilon", "v_prediction" or "sample".
  """

  unet: UNet
  vae: AutoencoderKL
  text_kind: str
  text_encoder: nn.Module
  pad_id: int
  eos_id: int | None
  context_mask: bool
  prediction_type: str

  def __post_init__(self):
    if self.text_kind not in TEXT_KINDS:
      raise ValueError(f"Unknown text encoder kind {self.text_kind!r}; valid: {TEXT_KINDS}.")

  def encode_text(self, text_params, tokens: jax.Array) -> dict[str, jax.Array]:
    """tokens int32[B, L] -> the UNet's condition {"context": float32[B, L, D], "mask": bool[B, L]}.

    The mask is all True when `context_mask` is off.
    """
    hidden, _ = self.text_encoder.apply({"params": text_params}, tokens)
    if self.text_kind == "clip":
      mask = text_padding_mask(tokens, self.eos_id)
    else:
      mask = tokens != self.pad_id
    if not self.context_mask:
      mask = jnp.ones_like(mask)
    return {"context": hidden.astype(jnp.float32), "mask": mask}

  def denoise(self, unet_params, x: jax.Array, t: jax.Array, cond, train: bool = False):
    """x [B, h, w, C], t float32[B], cond from `encode_text` -> UNet output [B, h, w, C]."""
    return self.unet.apply(
      {"params": unet_params}, x, t, cond["context"], cond["mask"], train=train
    )

  def encode_images(self, vae_params, images: jax.Array, rng: jax.Array | None) -> jax.Array:
    """float32[B, H, W, 3] in [-1, 1] -> scaled latents (a posterior sample when rng is given)."""
    return self.vae.apply({"params": vae_params}, images, rng, method=AutoencoderKL.encode_latents)

  def decode_latents(self, vae_params, latents: jax.Array) -> jax.Array:
    """Scaled latents -> float32[B, H, W, 3] images clipped to [-1, 1]."""
    images = self.vae.apply({"params": vae_params}, latents, method=AutoencoderKL.decode_latents)
    return jnp.clip(images, -1.0, 1.0)

  def latent_shape(self, height: int, width: int) -> tuple[int, int, int]:
    """(h, w, C) of the latents of a height x width image; raises if the sizes do not fit."""
    f = self.vae.downsampling_factor
    multiple = f * 2 ** (len(self.unet.block_out_channels) - 1)  # the UNet halves levels - 1 times
    if height % multiple or width % multiple or height <= 0 or width <= 0:
      raise ValueError(
        f"height and width must be positive multiples of {multiple} (the autoencoder's factor {f} "
        f"x the UNet's {multiple // f}); got {height}x{width}."
      )
    return height // f, width // f, self.vae.latent_channels


def sample_latents(
  params: dict[str, Any],
  schedule: Schedule,
  tokens: jax.Array,
  uncond_tokens: jax.Array,
  noise: jax.Array,
  rng: jax.Array,
  guidance_scale: jax.Array,
  *,
  parts: LDMParts,
  sampler: str,
  num_steps: int,
  **options,
) -> jax.Array:
  """Text -> latents with classifier-free guidance; jit it with everything after `*` bound.

  Args:
    params: {"unet", "vae", "text"} params ("vae" unused here).
    schedule: The training noise schedule.
    tokens: int32[B, L] prompts; uncond_tokens: int32[B or 1, L] negative prompts (the empty
      prompt for plain guidance).
    noise: float32[B, h, w, C] standard normal initial latents.
    rng: Key of the stochastic samplers' per-step noise.
    guidance_scale: Scalar (traced, so changing it does not recompile).
    parts: The model's modules. sampler, num_steps, options: see `t2i_jax.diffusion.samplers`.

  Returns:
    float32[B, h, w, C] scaled latents (what `decode_latents` takes; diffusers'
    output_type="latent").
  """
  cond = parts.encode_text(params["text"], tokens)
  uncond = parts.encode_text(params["text"], uncond_tokens)

  def denoise(x, t, c):
    return parts.denoise(params["unet"], x, t, c)

  return samplers.sample(
    sampler,
    denoise,
    schedule,
    noise,
    cond,
    uncond,
    rng,
    num_steps=num_steps,
    guidance_scale=guidance_scale,
    prediction_type=parts.prediction_type,
    **options,
  )


def generate(
  params: dict[str, Any],
  schedule: Schedule,
  tokens: jax.Array,
  uncond_tokens: jax.Array,
  noise: jax.Array,
  rng: jax.Array,
  guidance_scale: jax.Array,
  *,
  parts: LDMParts,
  **sampling,
) -> jax.Array:
  """Text -> images: `sample_latents` (same arguments; sampler, num_steps, options), then decode.

  Returns:
    float32[B, H, W, 3] images in [-1, 1].
  """
  latents = sample_latents(
    params, schedule, tokens, uncond_tokens, noise, rng, guidance_scale, parts=parts, **sampling
  )
  return parts.decode_latents(params["vae"], latents)
