"""Token + learned position embeddings shared by the text encoders."""

import flax.linen as nn
import jax

from t2i_jax.layers import initializers


def embed_tokens(
  module: nn.Module,
  token_ids: jax.Array,
  *,
  vocab_size: int,
  width: int,
  max_length: int,
  position_stddev: float,
  dtype,
  length_field: str = "max_length",
) -> jax.Array:
  """Token embedding plus learned positions, created in `module`'s compact scope.

  The params are `token_embed/embedding [V, D]` and `position_embed [max_length, D]` directly in
  `module` (names that checkpoint converters rely on). Call from inside `@nn.compact`.

  Args:
    token_ids: int32[B, L], L <= max_length (checked).
    length_field: the caller's name for max_length, for the error message.

  Returns:
    [B, L, D] in `dtype`.
  """
  if token_ids.ndim != 2:
    raise ValueError(f"token_ids must be [B, L], got shape {token_ids.shape}.")
  length = token_ids.shape[1]
  if length > max_length:
    raise ValueError(f"Sequence length {length} exceeds {length_field}={max_length}.")
  tokens = nn.Embed(
    vocab_size,
    width,
    dtype=dtype,
    embedding_init=nn.with_logical_partitioning(initializers.normal(0.02), ("vocab", "embed")),
    name="token_embed",
    parent=module,
  )(token_ids)
  positions = module.param(
    "position_embed",
    nn.with_logical_partitioning(initializers.normal(position_stddev), ("length", "embed")),
    (max_length, width),
  )
  return tokens + positions[None, :length].astype(dtype)
