"""The residual block of the latent-diffusion UNet and autoencoder (diffusers ``ResnetBlock2D``).

Parameter names (``norm1``, ``conv1``, ``time_emb_proj``, ``norm2``, ``conv2``, ``conv_shortcut``)
match diffusers' so the converters' name tables stay one-to-one.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from t2i_jax.layers.conv import conv2d, fan_in_normal
from t2i_jax.layers.norms import group_norm

Dtype = Any


class ResnetBlock(nn.Module):
  """GroupNorm-SiLU-conv twice, a timestep embedding added after the first conv, plus a skip.

  h = conv1(silu(norm1(x))) + time_emb_proj(silu(temb));  y = skip(x) + conv2(dropout(silu(norm2(h))))

  The skip is a 1x1 conv when the channel count changes, else the identity. ``conv2`` starts at
  zero (as in the original LDM code) so a freshly initialised block is the identity map.

  Attributes:
    features: Output channels.
    norm_num_groups: GroupNorm groups; must divide the input and output channels.
    epsilon: GroupNorm epsilon (1e-5 in the SD UNet, 1e-6 in its autoencoder).
    dropout: Dropout rate before conv2, active only when ``deterministic`` is False.
    dtype: Computation dtype (params stay float32).
  """

  features: int
  norm_num_groups: int = 32
  epsilon: float = 1e-6
  dropout: float = 0.0
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(
    self, x: jax.Array, temb: jax.Array | None = None, deterministic: bool = True
  ) -> jax.Array:
    """Applies the block.

    Args:
      x: float[B, H, W, C_in].
      temb: Optional float[B, T] timestep embedding (the autoencoder has none).
      deterministic: False applies dropout (needs a "dropout" rng).

    Returns:
      ``dtype``[B, H, W, features].
    """
    h = nn.silu(group_norm(self.norm_num_groups, self.epsilon, self.dtype, "norm1")(x))
    h = conv2d(self.features, 3, dtype=self.dtype, name="conv1")(h)
    if temb is not None:
      t = nn.Dense(
        self.features,
        dtype=self.dtype,
        kernel_init=nn.with_logical_partitioning(fan_in_normal(), ("embed", "conv_out")),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("conv_out",)),
        name="time_emb_proj",
      )(nn.silu(temb))
      h = h + t[:, None, None, :]
    h = nn.silu(group_norm(self.norm_num_groups, self.epsilon, self.dtype, "norm2")(h))
    h = nn.Dropout(self.dropout)(h, deterministic=deterministic)
    h = conv2d(self.features, 3, dtype=self.dtype, zero_init=True, name="conv2")(h)
    if x.shape[-1] != self.features:
      x = conv2d(self.features, 1, dtype=self.dtype, name="conv_shortcut")(x)
    return x + h
