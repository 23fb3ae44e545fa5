"""Tests for t2i_jax.models.text_encoder."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from t2i_jax.models.text_encoder import WordTextEncoder

VOCAB, DIM, MAX_LEN = 20, 16, 8
# Two captions ending in <eos> (2) then <pad> (0), plus an all-pad row.
TOKENS = jnp.array([[5, 6, 7, 2, 0], [9, 2, 0, 0, 0], [0, 0, 0, 0, 0]], jnp.int32)


def _encoder(**kwargs):
  kwargs = (
    dict(vocab_size=VOCAB, embed_dim=DIM, num_layers=1, num_heads=2, max_length=MAX_LEN) | kwargs
  )
  return WordTextEncoder(**kwargs)


@pytest.fixture(scope="module")
def encoder_and_vars():
  enc = _encoder()
  variables = jax.jit(enc.init)(jax.random.key(0), TOKENS)
  return enc, variables


def _apply(enc, variables, tokens):
  return jax.jit(enc.apply)(variables, tokens)


def test_shapes_and_dtypes(encoder_and_vars):
  enc, variables = encoder_and_vars
  hidden, pooled = _apply(enc, variables, TOKENS)
  assert hidden.shape == (3, 5, DIM) and hidden.dtype == jnp.float32
  assert pooled.shape == (3, DIM) and pooled.dtype == jnp.float32
  assert np.all(np.isfinite(hidden)) and np.all(np.isfinite(pooled))


def test_pooled_is_masked_mean(encoder_and_vars):
  enc, variables = encoder_and_vars
  hidden, pooled = _apply(enc, variables, TOKENS)
  np.testing.assert_allclose(pooled[0], hidden[0, :4].mean(0), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(pooled[1], hidden[1, :2].mean(0), rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(pooled[2], np.zeros(DIM))  # all-pad row: zeros, not NaN


def test_extra_padding_changes_nothing(encoder_and_vars):
  enc, variables = encoder_and_vars
  longer = jnp.pad(TOKENS, ((0, 0), (0, MAX_LEN - TOKENS.shape[1])))  # pads with pad_id 0
  hidden, pooled = _apply(enc, variables, TOKENS)
  hidden_long, pooled_long = _apply(enc, variables, longer)
  np.testing.assert_allclose(pooled_long, pooled, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(hidden_long[:2, :4], hidden[:2, :4], rtol=1e-5, atol=1e-6)


def test_tokens_change_output(encoder_and_vars):
  enc, variables = encoder_and_vars
  _, pooled = _apply(enc, variables, TOKENS)
  _, other = _apply(enc, variables, TOKENS.at[0, 0].set(11))
  assert not np.allclose(pooled[0], other[0])
  np.testing.assert_allclose(pooled[1], other[1], rtol=1e-5, atol=1e-6)  # rows independent


def test_bfloat16_compute_returns_float32(encoder_and_vars):
  _, variables = encoder_and_vars
  hidden, pooled = _apply(_encoder(dtype=jnp.bfloat16), variables, TOKENS)
  assert hidden.dtype == jnp.float32 and pooled.dtype == jnp.float32


def test_zero_layers_is_bag_of_words():
  enc = _encoder(num_layers=0)
  variables = jax.jit(enc.init)(jax.random.key(1), TOKENS)
  assert set(variables["params"]) == {"token_embed", "position_embed", "ln_final"}
  hidden, pooled = _apply(enc, variables, TOKENS)
  assert hidden.shape == (3, 5, DIM) and pooled.shape == (3, DIM)


def test_every_param_has_logical_axes():
  abstract = jax.eval_shape(_encoder(num_layers=2).init, jax.random.key(0), TOKENS)
  leaves = jax.tree_util.tree_leaves(
    abstract["params"], is_leaf=lambda x: isinstance(x, nn.Partitioned)
  )
  assert leaves and all(isinstance(x, nn.Partitioned) for x in leaves)
  for leaf in leaves:
    assert len(leaf.names) == leaf.value.ndim
  specs = nn.get_partition_spec(abstract)["params"]
  assert tuple(specs["token_embed"]["embedding"]) == ("vocab", "embed")
  assert tuple(specs["block_1"]["mlp"]["fc1"]["kernel"]) == ("embed", "mlp")


def test_too_long_input_raises():
  with pytest.raises(ValueError, match="exceeds max_length"):
    jax.eval_shape(_encoder().init, jax.random.key(0), jnp.zeros((1, MAX_LEN + 1), jnp.int32))
