"""NHWC convolutions and the 2x resampling layers of the latent-diffusion UNet and autoencoder.

Kernels are ``[kh, kw, in, out]`` with ``("conv_h", "conv_w", "conv_in", "conv_out")`` logical
axes. Layouts and padding follow diffusers' ``Downsample2D`` / ``Upsample2D`` so checkpoints
convert exactly (``t2i_jax.convert.diffusers_*``).
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from t2i_jax.layers import initializers

Dtype = Any

CONV_AXES = ("conv_h", "conv_w", "conv_in", "conv_out")


def fan_in_normal(scale: float = 1.0):
  """N(0, scale^2 / fan_in) with fan_in = prod(shape[:-1]) (conv [kh, kw, in, out], dense [in, out]).

  Drawn flat like ``initializers.normal`` (fast to compile on CPU); unit-variance activations
  for a linear layer at scale 1.
  """

  def init(key: jax.Array, shape: tuple[int, ...], dtype: Dtype = jnp.float32) -> jax.Array:
    return initializers.normal(scale / math.sqrt(math.prod(shape[:-1])))(key, shape, dtype)

  return init


def conv2d(
  features: int,
  kernel_size: int,
  *,
  dtype: Dtype,
  name: str | None = None,
  strides: int = 1,
  padding: Any = "SAME",
  zero_init: bool = False,
) -> nn.Conv:
  """A square conv with bias; ``zero_init`` makes a residual branch start as the identity.

  ``padding="SAME"`` equals PyTorch's ``padding=(k - 1) // 2`` for odd k at stride 1. ``name``
  stays None inside ``setup`` (where the attribute names the module).
  """
  kernel_init = nn.initializers.zeros_init() if zero_init else fan_in_normal()
  return nn.Conv(
    features,
    (kernel_size, kernel_size),
    strides=(strides, strides),
    padding=padding,
    dtype=dtype,
    kernel_init=nn.with_logical_partitioning(kernel_init, CONV_AXES),
    bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("conv_out",)),
    name=name,
  )


class Downsample(nn.Module):
  """Stride-2 3x3 conv halving H and W (diffusers ``Downsample2D(use_conv=True)``).

  Attributes:
    features: Output channels.
    asymmetric: Pad only bottom and right by one, then convolve without padding: the
      autoencoder's layout (diffusers ``padding=0``, from the original LDM/taming code). False pads
      one on every side (the UNet's ``downsample_padding=1``). The two differ in which input
      pixels each output sees, so a checkpoint only works with its own choice.
    dtype: Computation dtype.
  """

  features: int
  asymmetric: bool = False
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """float[B, H, W, C] -> ``dtype``[B, ceil(H / 2), ceil(W / 2), features]."""
    padding = ((0, 1), (0, 1)) if self.asymmetric else ((1, 1), (1, 1))
    return conv2d(self.features, 3, strides=2, padding=padding, dtype=self.dtype, name="conv")(x)


class Upsample(nn.Module):
  """Nearest-neighbour 2x upsampling, then a 3x3 conv (diffusers ``Upsample2D(use_conv=True)``).

  Attributes:
    features: Output channels.
    dtype: Computation dtype.
  """

  features: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """float[B, H, W, C] -> ``dtype``[B, 2H, 2W, features]."""
    b, h, w, c = x.shape
    # Each pixel copied into a 2x2 patch: exactly torch's F.interpolate(mode="nearest", 2.0).
    x = jnp.broadcast_to(x[:, :, None, :, None, :], (b, h, 2, w, 2, c)).reshape(b, 2 * h, 2 * w, c)
    return conv2d(self.features, 3, dtype=self.dtype, name="conv")(x)
