"""Pre-LayerNorm transformer pieces shared by the word text encoder and CLIP.

Parameter names (``ln_attn``, ``attn/{query,key,value,out}``, ``ln_mlp``, ``mlp/{fc1,fc2}``) are
part of the checkpoint format: ``t2i_jax.convert.hf_clip`` maps Hugging Face names onto them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from t2i_jax.layers import initializers
from t2i_jax.layers.attention import SelfAttention

Dtype = Any

# N(0, 0.02) for every kernel, as in GPT-2 / BERT / CLIP.
_INIT = initializers.normal(0.02)


def quick_gelu(x: jax.Array) -> jax.Array:
  """x * sigmoid(1.702 x): the sigmoid GELU approximation OpenAI CLIP was trained with."""
  return x * jax.nn.sigmoid(1.702 * x)


# Names follow Hugging Face ``hidden_act`` where one exists, so converted configs pass through.
ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
  "quick_gelu": quick_gelu,
  "gelu": lambda x: nn.gelu(x, approximate=False),  # exact erf GELU (PyTorch / HF "gelu")
  "gelu_tanh": lambda x: nn.gelu(x, approximate=True),  # Flax's default tanh approximation
}


def layer_norm(dtype: Dtype, name: str, epsilon: float = 1e-5) -> nn.LayerNorm:
  """LayerNorm over the last axis with ``("embed",)``-partitioned scale and bias."""
  return nn.LayerNorm(
    epsilon=epsilon,
    dtype=dtype,
    scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(), ("embed",)),
    bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("embed",)),
    name=name,
  )


class MlpBlock(nn.Module):
  """Two-layer MLP, D -> mlp_ratio * D -> D.

  Attributes:
    mlp_ratio: Hidden width as a multiple of the input width.
    activation: A key of ``ACTIVATIONS``.
    dtype: Computation dtype.
  """

  mlp_ratio: int = 4
  activation: str = "gelu_tanh"
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Maps float[B, L, D] to ``dtype``[B, L, D]."""
    if self.activation not in ACTIVATIONS:
      raise ValueError(
        f"Unknown activation {self.activation!r}; choose from {sorted(ACTIVATIONS)}."
      )
    width = x.shape[-1]
    h = nn.Dense(
      self.mlp_ratio * width,
      dtype=self.dtype,
      kernel_init=nn.with_logical_partitioning(_INIT, ("embed", "mlp")),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("mlp",)),
      name="fc1",
    )(x)
    h = ACTIVATIONS[self.activation](h)
    return nn.Dense(
      width,
      dtype=self.dtype,
      kernel_init=nn.with_logical_partitioning(_INIT, ("mlp", "embed")),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("embed",)),
      name="fc2",
    )(h)


class TransformerBlock(nn.Module):
  """Pre-LayerNorm transformer block: x + Attn(LN(x)), then x + MLP(LN(x)).

  Attributes:
    num_heads: Attention heads.
    activation: MLP activation, a key of ``ACTIVATIONS``.
    layer_norm_eps: Epsilon of both LayerNorms.
    dtype: Computation dtype.
  """

  num_heads: int
  activation: str = "gelu_tanh"
  layer_norm_eps: float = 1e-5
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Applies the block.

    Args:
      x: float[B, L, D].
      mask: Optional bool broadcastable to [B, heads, L, L], False where a query must not attend
        to a key: a causal mask, a ``padding_mask``, or both combined with ``nn.combine_masks``.

    Returns:
      float[B, L, D] (the residual stream keeps the dtype of ``x`` promoted with ``dtype``).
    """
    h = layer_norm(self.dtype, "ln_attn", self.layer_norm_eps)(x)
    x = x + SelfAttention(self.num_heads, dtype=self.dtype, name="attn")(h, mask)
    h = layer_norm(self.dtype, "ln_mlp", self.layer_norm_eps)(x)
    return x + MlpBlock(activation=self.activation, dtype=self.dtype, name="mlp")(h)
