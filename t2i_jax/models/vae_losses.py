"""Losses for training ``t2i_jax.models.vae.AutoencoderKL`` as in latent diffusion (LDM / taming).

Pure functions on float arrays (safe under ``jax.jit``), plus the optional patch discriminator.
The trainer combines them as rec + kl_weight * kl [+ adversarial_weight * g_adv]; LDM's KL-f8
used kl_weight 1e-6 and started the discriminator after 50k steps.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from t2i_jax.gan import losses as gan_losses
from t2i_jax.layers.conv import conv2d
from t2i_jax.layers.norms import group_norm

Dtype = Any
RECONSTRUCTION_KINDS = ("l1", "l2")


def reconstruction_loss(x: jax.Array, recon: jax.Array, kind: str = "l1") -> jax.Array:
  """Mean absolute ("l1") or squared ("l2") error over every pixel and channel.

  Args:
    x: float[B, H, W, C] targets; recon: float[B, H, W, C] reconstructions.

  Returns:
    float32 scalar.
  """
  if kind not in RECONSTRUCTION_KINDS:
    raise ValueError(
      f"Unknown reconstruction loss {kind!r}; valid kinds are {RECONSTRUCTION_KINDS}."
    )
  diff = x.astype(jnp.float32) - recon.astype(jnp.float32)
  return jnp.mean(jnp.abs(diff)) if kind == "l1" else jnp.mean(jnp.square(diff))


def kl_loss(mean: jax.Array, logvar: jax.Array) -> jax.Array:
  """KL(N(mean, exp(logvar)) || N(0, I)), summed over latent dims, averaged over the batch.

  Per example 0.5 * sum(mean^2 + exp(logvar) - 1 - logvar) over [h, w, c], then the batch mean:
  the reduction of LDM's ``LPIPSWithDiscriminator`` (and diffusers' ``DiagonalGaussianDistribution.kl``
  before its batch mean), which is why LDM's kl_weight is as small as 1e-6.

  Args:
    mean, logvar: float[B, h, w, c] from ``AutoencoderKL.encode``.

  Returns:
    float32 scalar.
  """
  mean, logvar = mean.astype(jnp.float32), logvar.astype(jnp.float32)
  per_example = 0.5 * jnp.sum(
    jnp.square(mean) + jnp.exp(logvar) - 1.0 - logvar, axis=tuple(range(1, mean.ndim))
  )
  return jnp.mean(per_example)


class PatchDiscriminator(nn.Module):
  """PatchGAN discriminator (Isola et al. 2017; taming's ``NLayerDiscriminator``).

  4x4 convs: stride 2 with ``base_channels``, LeakyReLU(0.2); then ``num_layers - 1`` stride-2
  and one stride-1 conv doubling the width (capped at 8x), each GroupNorm + LeakyReLU; then a
  stride-1 conv to one logit per patch. GroupNorm stands in for taming's BatchNorm so the
  discriminator is stateless (no batch statistics to carry in the train state).

  Attributes:
    base_channels: Width of the first conv.
    num_layers: Stride-2 convs (3: a 70x70 receptive field).
    norm_num_groups: GroupNorm groups (capped at each layer's width).
    dtype: Computation dtype.
  """

  base_channels: int = 64
  num_layers: int = 3
  norm_num_groups: int = 32
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """float[B, H, W, C] images -> float32[B, h, w, 1] patch logits (h ~ H / 2^num_layers)."""
    pad = ((1, 1), (1, 1))  # PyTorch padding=1 with a 4x4 kernel
    h = conv2d(self.base_channels, 4, strides=2, padding=pad, dtype=self.dtype, name="conv_0")(x)
    h = nn.leaky_relu(h, 0.2)
    for i in range(1, self.num_layers + 1):
      width = self.base_channels * min(2**i, 8)
      stride = 2 if i < self.num_layers else 1
      h = conv2d(width, 4, strides=stride, padding=pad, dtype=self.dtype, name=f"conv_{i}")(h)
      h = group_norm(min(self.norm_num_groups, width), 1e-5, self.dtype, f"norm_{i}")(h)
      h = nn.leaky_relu(h, 0.2)
    logits = conv2d(1, 4, padding=pad, dtype=self.dtype, name="conv_out")(h)
    return logits.astype(jnp.float32)


def discriminator_hinge_loss(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
  """0.5 * (mean relu(1 - real) + mean relu(1 + fake)) over all patches (taming's hinge_d_loss)."""
  return 0.5 * gan_losses.discriminator_loss(
    real_logits.reshape(-1), fake_logits.reshape(-1), kind="hinge"
  )


def generator_adversarial_loss(fake_logits: jax.Array) -> jax.Array:
  """-mean(fake patch logits): the autoencoder's adversarial term (taming's g_loss)."""
  return gan_losses.generator_loss(fake_logits.reshape(-1), kind="hinge")
