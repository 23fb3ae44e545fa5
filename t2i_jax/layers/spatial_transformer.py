"""The UNet's text-conditioned transformer over feature-map pixels (diffusers ``Transformer2DModel``).

SpatialTransformer: GroupNorm -> proj_in -> ``depth`` x TransformerBlock over the H*W pixels ->
proj_out, plus the input. TransformerBlock (diffusers ``BasicTransformerBlock``): pre-LayerNorm
self-attention, cross-attention to the text states, and a GEGLU feed-forward, each residual.

proj_in / proj_out are Dense layers on the channel axis. A 1x1 conv (SD 1.x,
``use_linear_projection=False``) and a Linear (SD 2.x) compute the same map on NHWC pixels, so
both checkpoint layouts convert into this one module (the converter reshapes the 1x1 kernels).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from t2i_jax.layers.conv import fan_in_normal
from t2i_jax.layers.cross_attention import CrossAttention
from t2i_jax.layers.norms import group_norm
from t2i_jax.layers.transformer import layer_norm

Dtype = Any


def _dense(features: int, axes: tuple[str, str], dtype: Dtype, name: str, zero_init=False):
  kernel_init = nn.initializers.zeros_init() if zero_init else fan_in_normal()
  return nn.Dense(
    features,
    dtype=dtype,
    kernel_init=nn.with_logical_partitioning(kernel_init, axes),
    bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), axes[1:]),
    name=name,
  )


class GEGLUFeedForward(nn.Module):
  """D -> 2 x mult D -> (a * gelu(g)) -> D, the gated-GELU MLP of Shazeer (2020).

  ``proj`` holds the value half first and the gate half second, as diffusers' ``GEGLU``.

  Attributes:
    mult: Hidden width as a multiple of D.
    dtype: Computation dtype.
  """

  mult: int = 4
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """float[B, L, D] -> ``dtype``[B, L, D]."""
    width = x.shape[-1]
    hidden, gate = jnp.split(
      _dense(2 * self.mult * width, ("embed", "mlp"), self.dtype, "proj")(x), 2, axis=-1
    )
    h = hidden * nn.gelu(gate, approximate=False)  # exact erf GELU, as torch's F.gelu
    return _dense(width, ("mlp", "embed"), self.dtype, "out")(h)


class TransformerBlock(nn.Module):
  """x + SelfAttn(LN(x)); x + CrossAttn(LN(x), context); x + GEGLU(LN(x)).

  Attributes:
    num_heads: Heads of both attentions; must divide D.
    dtype: Computation dtype.
    implementation: ``jax.nn.dot_product_attention`` implementation (None: XLA; "cudnn").
  """

  num_heads: int
  dtype: Dtype = jnp.float32
  implementation: str | None = None

  @nn.compact
  def __call__(
    self, x: jax.Array, context: jax.Array, context_mask: jax.Array | None = None
  ) -> jax.Array:
    """float[B, L, D], text states float[B, S, D_ctx], bool[B, S] mask -> [B, L, D]."""

    def attention(name: str) -> CrossAttention:
      return CrossAttention(
        self.num_heads, dtype=self.dtype, implementation=self.implementation, name=name
      )

    x = x + attention("attn1")(layer_norm(self.dtype, "norm1")(x))
    x = x + attention("attn2")(layer_norm(self.dtype, "norm2")(x), context, context_mask)
    return x + GEGLUFeedForward(dtype=self.dtype, name="ff")(layer_norm(self.dtype, "norm3")(x))


class SpatialTransformer(nn.Module):
  """Transformer blocks over the pixels of a feature map, conditioned on text states.

  ``proj_out`` starts at zero (as in the original LDM code) so a fresh layer is the identity.

  Attributes:
    num_heads: Attention heads; must divide the channels C.
    depth: TransformerBlocks (diffusers ``transformer_layers_per_block``).
    norm_num_groups: Groups of the input GroupNorm (epsilon 1e-6, as diffusers).
    dtype: Computation dtype.
    implementation: ``jax.nn.dot_product_attention`` implementation.
  """

  num_heads: int
  depth: int = 1
  norm_num_groups: int = 32
  dtype: Dtype = jnp.float32
  implementation: str | None = None

  @nn.compact
  def __call__(
    self, x: jax.Array, context: jax.Array, context_mask: jax.Array | None = None
  ) -> jax.Array:
    """Applies the layer.

    Args:
      x: float[B, H, W, C].
      context: float[B, S, D_ctx] text encoder hidden states.
      context_mask: Optional bool[B, S], True at real (non-padding) text tokens.

    Returns:
      ``dtype``[B, H, W, C].
    """
    b, h, w, c = x.shape
    y = group_norm(self.norm_num_groups, 1e-6, self.dtype, "norm")(x)
    y = _dense(c, ("embed", "mlp"), self.dtype, "proj_in")(y).reshape(b, h * w, c)
    for i in range(self.depth):
      y = TransformerBlock(
        self.num_heads, dtype=self.dtype, implementation=self.implementation, name=f"block_{i}"
      )(y, context, context_mask)
    y = _dense(c, ("mlp", "embed"), self.dtype, "proj_out", zero_init=True)(y)
    return x + y.reshape(b, h, w, c)
