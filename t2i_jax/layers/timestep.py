"""Sinusoidal timestep features and the MLP that embeds them (diffusers-compatible)."""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from t2i_jax.layers.conv import fan_in_normal

Dtype = Any


def timestep_embedding(
  t: jax.Array,
  dim: int,
  *,
  flip_sin_to_cos: bool = True,
  freq_shift: float = 0.0,
  max_period: float = 10000.0,
) -> jax.Array:
  """DDPM sinusoidal features of (possibly fractional) timesteps, as diffusers' ``Timesteps``.

  With half = dim // 2 and frequencies f_i = max_period^(-i / (half - freq_shift)), i < half:
  [sin(t f), cos(t f)], or [cos(t f), sin(t f)] when ``flip_sin_to_cos`` (SD's UNet). Odd dims
  are zero-padded at the end.

  Args:
    t: int or float[B] timesteps.
    dim: Feature size.
    flip_sin_to_cos: Put the cosines first.
    freq_shift: diffusers' ``downscale_freq_shift`` (0 in SD, 1 in the original DDPM code).
    max_period: Longest period.

  Returns:
    float32[B, dim].
  """
  half = dim // 2
  # Computed in float32 exactly as diffusers does, so fractional and large t match to ~1e-6.
  exponent = -math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / (half - freq_shift)
  angles = jnp.asarray(t).astype(jnp.float32)[:, None] * jnp.exp(exponent)[None, :]
  sin, cos = jnp.sin(angles), jnp.cos(angles)
  emb = jnp.concatenate([cos, sin] if flip_sin_to_cos else [sin, cos], axis=-1)
  if dim % 2:
    emb = jnp.pad(emb, ((0, 0), (0, 1)))
  return emb


class TimestepEmbedding(nn.Module):
  """linear_1 -> SiLU -> linear_2 on sinusoidal features (diffusers ``TimestepEmbedding``).

  Attributes:
    features: Output (and hidden) width; 4 x the UNet's first block width in SD.
    dtype: Computation dtype.
  """

  features: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, emb: jax.Array) -> jax.Array:
    """float[B, D] (``timestep_embedding``) -> ``dtype``[B, features]."""
    h = nn.Dense(
      self.features,
      dtype=self.dtype,
      kernel_init=nn.with_logical_partitioning(fan_in_normal(), ("embed", "mlp")),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("mlp",)),
      name="linear_1",
    )(emb)
    return nn.Dense(
      self.features,
      dtype=self.dtype,
      kernel_init=nn.with_logical_partitioning(fan_in_normal(), ("mlp", "embed")),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("embed",)),
      name="linear_2",
    )(nn.silu(h))
