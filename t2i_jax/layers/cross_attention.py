"""Multi-head attention of a token sequence over a context sequence (or over itself).

The attention of diffusers' ``Attention`` processor: separate q/k/v/out projections, softmax
scaled by head_dim^-1/2, computed by ``jax.nn.dot_product_attention`` (XLA here; cuDNN's fused
kernel with ``implementation="cudnn"`` on GPUs in half precision). Kernels are plain 2-D
``[in, out]`` matrices with ``("embed", "mlp")`` / ``("mlp", "embed")`` logical axes, like
``t2i_jax.layers.attention.SelfAttention``.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from t2i_jax.layers.conv import fan_in_normal

Dtype = Any


class CrossAttention(nn.Module):
  """Queries from ``x``, keys and values from ``context`` (``x`` itself when None).

  Attributes:
    num_heads: Heads; must divide the width D of ``x``.
    qkv_bias: Biases on the q/k/v projections (False in SD's transformer blocks, True in the
      autoencoder's mid-block attention). The output projection always has one.
    dtype: Computation dtype; the softmax runs in float32 regardless.
    implementation: ``jax.nn.dot_product_attention``'s: None (XLA) or "cudnn".
  """

  num_heads: int
  qkv_bias: bool = False
  dtype: Dtype = jnp.float32
  implementation: str | None = None

  @nn.compact
  def __call__(
    self, x: jax.Array, context: jax.Array | None = None, mask: jax.Array | None = None
  ) -> jax.Array:
    """Attends.

    Args:
      x: float[B, T, D] queries.
      context: Optional float[B, S, D_ctx] keys/values source (text states); None attends over x.
      mask: Optional bool[B, S], True where a context token may be attended to (a caption's
        padding mask). Rows of all-False give a uniform average rather than NaN.

    Returns:
      ``dtype``[B, T, D].
    """
    batch, length, width = x.shape
    if width % self.num_heads:
      raise ValueError(f"Width {width} is not divisible by num_heads={self.num_heads}.")
    head_dim = width // self.num_heads
    context = x if context is None else context

    def dense(name: str, use_bias: bool, axes: tuple[str, str]) -> nn.Dense:
      return nn.Dense(
        width,
        use_bias=use_bias,
        dtype=self.dtype,
        kernel_init=nn.with_logical_partitioning(fan_in_normal(), axes),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), axes[1:]),
        name=name,
      )

    def heads(t: jax.Array) -> jax.Array:
      return t.reshape(t.shape[0], t.shape[1], self.num_heads, head_dim)

    q = heads(dense("query", self.qkv_bias, ("embed", "mlp"))(x))
    k = heads(dense("key", self.qkv_bias, ("embed", "mlp"))(context))
    v = heads(dense("value", self.qkv_bias, ("embed", "mlp"))(context))
    if mask is not None:
      mask = mask.astype(bool)[:, None, None, :]  # [B, 1 (heads), 1 (queries), S]
    y = jax.nn.dot_product_attention(q, k, v, mask=mask, implementation=self.implementation)
    return dense("out", True, ("mlp", "embed"))(y.reshape(batch, length, width))
