"""Multi-head self-attention with logically partitioned parameters.

Written out (rather than using ``nn.MultiHeadDotProductAttention``) so every kernel is a plain 2-D
``[in, out]`` matrix with ``("embed", "mlp")`` / ``("mlp", "embed")`` logical axes, which the
sharding rules understand; the fused ``DenseGeneral`` kernels there are 3-D.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from t2i_jax.layers import initializers

Dtype = Any


def padding_mask(token_ids: jax.Array, pad_id: int) -> jax.Array:
  """Key-padding attention mask.

  Args:
    token_ids: int32[B, L].
    pad_id: Id of the padding token.

  Returns:
    bool[B, 1, 1, L], True where the key position is a real token; broadcasts against
    ``[B, heads, L_q, L_k]`` attention logits.
  """
  return (token_ids != pad_id)[:, None, None, :]


class SelfAttention(nn.Module):
  """Multi-head scaled dot-product self-attention.

  Attributes:
    num_heads: Number of heads; must divide the model width D.
    dtype: Computation dtype (params stay float32).
    kernel_init: Initializer for the q/k/v/out kernels; N(0, 0.02) as in GPT-2 / BERT.
  """

  num_heads: int
  dtype: Dtype = jnp.float32
  kernel_init: nn.initializers.Initializer = initializers.normal(0.02)

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Applies self-attention.

    Args:
      x: float[B, L, D] inputs.
      mask: Optional bool array broadcastable to [B, num_heads, L, L]; False entries are not
        attended to (e.g. ``padding_mask`` or a causal mask).

    Returns:
      ``dtype``[B, L, D].
    """
    batch, length, width = x.shape
    if width % self.num_heads:
      raise ValueError(f"Width {width} is not divisible by num_heads={self.num_heads}.")
    head_dim = width // self.num_heads

    def dense(name: str, names: tuple[str, str]) -> nn.Dense:
      return nn.Dense(
        width,
        dtype=self.dtype,
        kernel_init=nn.with_logical_partitioning(self.kernel_init, names),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), names[1:]),
        name=name,
      )

    def split_heads(t: jax.Array) -> jax.Array:
      return t.reshape(batch, length, self.num_heads, head_dim)

    q = split_heads(dense("query", ("embed", "mlp"))(x))
    k = split_heads(dense("key", ("embed", "mlp"))(x))
    v = split_heads(dense("value", ("embed", "mlp"))(x))
    # Flax replaces masked logits by a large negative finite value, so rows whose keys are all
    # masked (all-pad captions) give a uniform average instead of NaN.
    y = nn.dot_product_attention(q, k, v, mask=mask, dtype=self.dtype)
    y = y.reshape(batch, length, width)
    return dense("out", ("mlp", "embed"))(y)
