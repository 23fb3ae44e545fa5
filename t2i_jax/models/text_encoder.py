"""Small trainable transformer text encoder over word-tokenizer ids.

Exposes the same interface as the frozen CLIP text encoder: ``(hidden [B, L, D], pooled [B, D])``,
so conditional models can swap encoders without code changes. The blocks are the shared pre-LN
``t2i_jax.layers.transformer`` ones with the tanh-approximated GELU this encoder always used.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from t2i_jax.layers import initializers
from t2i_jax.layers.attention import padding_mask
from t2i_jax.layers.embeddings import embed_tokens
from t2i_jax.layers.transformer import MlpBlock, TransformerBlock, layer_norm

Dtype = Any

__all__ = ["MlpBlock", "TransformerBlock", "WordTextEncoder"]

# N(0, 0.02) for every embedding, as in GPT-2 / BERT.
_INIT = initializers.normal(0.02)


class WordTextEncoder(nn.Module):
  """Token + learned position embeddings followed by pre-LN transformer blocks.

  Attributes:
    vocab_size: Size of the token embedding table (``WordTokenizer.vocab_size``).
    embed_dim: Model width D.
    num_layers: Transformer blocks; 0 gives a bag of (position-tagged) word embeddings.
    num_heads: Attention heads; must divide ``embed_dim``.
    max_length: Rows in the position table; inputs may be at most this long.
    pad_id: Token id excluded from attention keys and from pooling.
    dtype: Computation dtype; outputs are always float32.
  """

  vocab_size: int
  embed_dim: int = 128
  num_layers: int = 1
  num_heads: int = 4
  max_length: int = 32
  pad_id: int = 0
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, token_ids: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Encodes token ids.

    Args:
      token_ids: int32[B, L] with L <= max_length, padded with ``pad_id``.

    Returns:
      hidden: float32[B, L, D] per-token features (after the final LayerNorm).
      pooled: float32[B, D] mean of ``hidden`` over non-pad positions; zeros for all-pad rows.
    """
    x = embed_tokens(
      self,
      token_ids,
      vocab_size=self.vocab_size,
      width=self.embed_dim,
      max_length=self.max_length,
      position_stddev=0.02,
      dtype=self.dtype,
    )

    valid = token_ids != self.pad_id  # bool[B, L]
    mask = padding_mask(token_ids, self.pad_id)
    for i in range(self.num_layers):
      x = TransformerBlock(
        self.num_heads, activation="gelu_tanh", dtype=self.dtype, name=f"block_{i}"
      )(x, mask)
    hidden = layer_norm(self.dtype, "ln_final")(x).astype(jnp.float32)

    weights = valid.astype(jnp.float32)[..., None]
    count = jnp.maximum(weights.sum(axis=1), 1.0)  # all-pad rows: 0 / 1 = 0, not NaN
    pooled = (hidden * weights).sum(axis=1) / count
    return hidden, pooled
