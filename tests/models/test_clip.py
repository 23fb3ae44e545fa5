"""Tests for t2i_jax.models.clip and the shared pre-LN block (t2i_jax.layers.transformer)."""

import functools
import math
import textwrap

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from child_process import run_python

from t2i_jax.layers import transformer
from t2i_jax.models.clip import (
  CLIP,
  CLIP_MEAN,
  CLIP_STD,
  MAX_LOG_LOGIT_SCALE,
  clip_contrastive_loss,
  encode_text,
  normalize_images,
)
from t2i_jax.sharding import LOGICAL_AXES

EOS = 5  # inside the vocabulary, and below other ids so first-EOT and argmax pooling differ
KWARGS = dict(
  vocab_size=64,
  context_length=12,
  text_width=32,
  text_layers=2,
  text_heads=4,
  image_size=16,
  patch_size=8,
  vision_width=24,
  vision_layers=1,
  vision_heads=2,
  projection_dim=16,
  eos_id=EOS,
)
B, L = 3, 10
# SOT (1), words, EOT, then padding: zeros in row 0, EOT ids in row 1 (as HF pads), and a larger
# id after the EOT in row 2 so argmax pooling would pick a different position.
TOKENS = jnp.array(
  [
    [1, 30, 31, EOS, 0, 0, 0, 0, 0, 0],
    [1, 40, 41, 42, 43, EOS, EOS, EOS, EOS, EOS],
    [1, 20, EOS, 60, 0, 0, 0, 0, 0, 0],
  ],
  jnp.int32,
)
IMAGES = jax.random.normal(jax.random.key(1), (B, 16, 16, 3))


@functools.partial(jax.jit, static_argnums=0)
def _run_all(model, params, token_ids, images):
  """Every method in one compiled function (each distinct jit costs seconds on CPU)."""
  variables = {"params": params}
  return {
    "encode_text": model.apply(variables, token_ids, method=CLIP.encode_text),
    "encode_image": model.apply(variables, images, method=CLIP.encode_image),
    "embed_text": model.apply(variables, token_ids, method=CLIP.embed_text),
    "embed_image": model.apply(variables, images, method=CLIP.embed_image),
    "call": model.apply(variables, token_ids, images),
  }


@pytest.fixture(scope="module")
def model_and_params():
  model = CLIP(**KWARGS)
  params = nn.unbox(jax.jit(model.init)(jax.random.key(0), TOKENS, IMAGES)["params"])
  return model, params


@pytest.fixture(scope="module")
def outputs(model_and_params):
  model, params = model_and_params
  return _run_all(model, params, TOKENS, IMAGES)


def test_shapes_and_dtypes(outputs):
  hidden, pooled = outputs["encode_text"]
  assert hidden.shape == (B, L, 32) and pooled.shape == (B, 32)
  hidden, pooled = outputs["encode_image"]
  assert hidden.shape == (B, (16 // 8) ** 2 + 1, 24) and pooled.shape == (B, 24)
  assert outputs["embed_text"].shape == (B, 16) and outputs["embed_image"].shape == (B, 16)
  call = outputs["call"]
  assert call["text_embeds"].shape == call["image_embeds"].shape == (B, 16)
  assert call["logit_scale"].shape == ()
  assert call["logits_per_image"].shape == call["logits_per_text"].shape == (B, B)
  for leaf in jax.tree.leaves(outputs):
    assert leaf.dtype == jnp.float32 and np.all(np.isfinite(leaf))


def test_params_layout(model_and_params):
  _, params = model_and_params
  assert set(params) == {"text", "vision", "text_projection", "vision_projection", "logit_scale"}
  assert params["text_projection"]["kernel"].shape == (32, 16)
  assert params["vision_projection"]["kernel"].shape == (24, 16)
  assert params["vision"]["patch_embed"]["kernel"].shape == (8, 8, 3, 24)
  assert "bias" not in params["vision"]["patch_embed"]
  assert set(params["text"]["block_0"]) == {"ln_attn", "attn", "ln_mlp", "mlp"}
  np.testing.assert_allclose(params["logit_scale"], math.log(1 / 0.07), rtol=1e-4)


def test_embeddings_normalised_and_logits(outputs, model_and_params):
  _, params = model_and_params
  call = outputs["call"]
  np.testing.assert_allclose(np.linalg.norm(call["text_embeds"], axis=-1), 1.0, rtol=1e-5)
  np.testing.assert_allclose(np.linalg.norm(call["image_embeds"], axis=-1), 1.0, rtol=1e-5)
  text = outputs["embed_text"] / np.linalg.norm(outputs["embed_text"], axis=-1, keepdims=True)
  np.testing.assert_allclose(call["text_embeds"], text, rtol=1e-5, atol=1e-6)
  # Projection has no bias: embed_text is pooled @ kernel.
  projected = outputs["encode_text"][1] @ params["text_projection"]["kernel"]
  np.testing.assert_allclose(outputs["embed_text"], projected, rtol=1e-5, atol=1e-5)
  scale = call["logit_scale"]
  expected = scale * call["image_embeds"] @ call["text_embeds"].T
  np.testing.assert_allclose(call["logits_per_image"], expected, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(call["logits_per_text"], call["logits_per_image"].T)


def test_logit_scale_is_exp_and_clamped(model_and_params):
  model, params = model_and_params
  for raw, expected in ((1.0, math.e), (MAX_LOG_LOGIT_SCALE - 0.1, 100 * math.exp(-0.1))):
    out = _run_all(model, params | {"logit_scale": jnp.float32(raw)}, TOKENS, IMAGES)
    np.testing.assert_allclose(out["call"]["logit_scale"], expected, rtol=1e-5)
  out = _run_all(model, params | {"logit_scale": jnp.float32(10.0)}, TOKENS, IMAGES)
  np.testing.assert_allclose(out["call"]["logit_scale"], 100.0, rtol=1e-6)

  def scale_of(raw):
    return model.apply({"params": params | {"logit_scale": raw}}, TOKENS, IMAGES)["logit_scale"]

  grad = jax.jit(jax.grad(scale_of))(jnp.float32(10.0))
  assert grad == 0.0  # clamped: the optimizer cannot push the temperature further


def test_causal_mask(outputs, model_and_params):
  model, params = model_and_params
  changed = TOKENS.at[:, 4].set(50)
  hidden, _ = _run_all(model, params, changed, IMAGES)["encode_text"]
  before, _ = outputs["encode_text"]
  np.testing.assert_allclose(hidden[:, :4], before[:, :4], rtol=1e-5, atol=1e-6)
  assert np.all(np.abs(hidden[:, 4:] - before[:, 4:]).max(axis=-1) > 1e-4)


def test_pools_at_first_eot_and_padding_is_inert(outputs, model_and_params):
  model, params = model_and_params
  hidden, pooled = outputs["encode_text"]
  first_eot = [3, 5, 2]
  np.testing.assert_array_equal(pooled, hidden[np.arange(B), first_eot])
  # Whatever follows the EOT (other pads, other ids) cannot reach the pooled feature.
  repadded = TOKENS.at[:, 6:].set(jnp.array([9, 63, 0, 7], jnp.int32))
  _, pooled_repadded = _run_all(model, params, repadded, IMAGES)["encode_text"]
  np.testing.assert_allclose(pooled_repadded, pooled, rtol=1e-5, atol=1e-6)


def test_argmax_pooling_without_eos_id_and_encode_text_helper(outputs, model_and_params):
  _, params = model_and_params
  model = CLIP(**(KWARGS | {"eos_id": None}))  # same params: eos_id only changes pooling
  hidden, pooled = jax.jit(functools.partial(encode_text, model))(params, TOKENS)
  np.testing.assert_allclose(hidden, outputs["encode_text"][0], rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(pooled, hidden[np.arange(B), [2, 4, 3]])  # largest id per row


def test_input_checks():
  model = CLIP(**KWARGS)
  with pytest.raises(ValueError, match="exceeds context_length"):
    jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 13), jnp.int32), IMAGES)
  with pytest.raises(ValueError, match="images must be"):
    jax.eval_shape(model.init, jax.random.key(0), TOKENS, jnp.zeros((1, 32, 32, 3)))


def test_every_param_has_logical_axes():
  abstract = jax.eval_shape(CLIP(**KWARGS).init, jax.random.key(0), TOKENS, IMAGES)["params"]
  leaves = jax.tree.leaves(abstract, is_leaf=lambda x: isinstance(x, nn.Partitioned))
  assert len(leaves) == len(jax.tree.leaves(nn.unbox(abstract)))
  for leaf in leaves:
    assert isinstance(leaf, nn.Partitioned) and len(leaf.names) == leaf.value.ndim
    assert set(leaf.names) <= set(LOGICAL_AXES)
  specs = nn.get_partition_spec(abstract)
  assert tuple(specs["text"]["token_embed"]["embedding"]) == ("vocab", "embed")
  assert tuple(specs["vision"]["block_0"]["mlp"]["fc1"]["kernel"]) == ("embed", "mlp")
  assert tuple(specs["vision"]["patch_embed"]["kernel"]) == ("conv_h", "conv_w", "conv_in", "embed")


def test_normalize_images():
  white = np.full((1, 2, 2, 3), 255, np.uint8)
  expected = (1.0 - np.asarray(CLIP_MEAN)) / np.asarray(CLIP_STD)
  np.testing.assert_allclose(normalize_images(white)[0, 0, 0], expected, rtol=1e-6)
  np.testing.assert_allclose(normalize_images(white / 255.0), normalize_images(white), rtol=1e-6)
  assert normalize_images(white).dtype == jnp.float32


ACTS = ("quick_gelu", "gelu")


def test_activations():
  x = jnp.linspace(-4.0, 4.0, 9)
  np.testing.assert_allclose(transformer.quick_gelu(x), x / (1 + np.exp(-1.702 * x)), rtol=1e-5)
  exact = transformer.ACTIVATIONS["gelu"](x)
  np.testing.assert_allclose(exact[4:], [0.0, 0.8413447, 1.9544997, 2.9959502, 3.9998733], 1e-5)
  h = jax.random.normal(jax.random.key(2), (2, 5, 16))
  tanh = 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))
  np.testing.assert_allclose(transformer.ACTIVATIONS["gelu_tanh"](x), tanh, rtol=1e-5, atol=1e-6)
  blocks = {a: transformer.TransformerBlock(num_heads=2, activation=a) for a in ACTS}
  variables = jax.jit(blocks["gelu"].init)(jax.random.key(3), h)  # params do not depend on it
  outs = {a: jax.jit(block.apply)(variables, h) for a, block in blocks.items()}
  assert np.abs(outs["quick_gelu"] - outs["gelu"]).max() > 1e-4
  with pytest.raises(ValueError, match="Unknown activation"):
    block = transformer.TransformerBlock(num_heads=2, activation="relu6")
    jax.eval_shape(block.init, jax.random.key(3), h)


_loss = jax.jit(clip_contrastive_loss)


def _reference_loss(image, text, scale):
  logits = scale * np.asarray(image, np.float64) @ np.asarray(text, np.float64).T

  def ce(z):
    z = z - z.max(axis=1, keepdims=True)
    return -np.mean(np.diag(z) - np.log(np.exp(z).sum(axis=1)))

  return 0.5 * (ce(logits) + ce(logits.T))


def test_contrastive_loss_closed_forms():
  loss, metrics = _loss(jnp.ones((6, 4)) / 2, jnp.ones((6, 4)) / 2, 30.0)
  np.testing.assert_allclose(loss, math.log(6), rtol=1e-6)  # identical embeddings: chance
  eye = jnp.eye(4)
  loss, metrics = _loss(eye, eye, 5.0)
  np.testing.assert_allclose(loss, math.log(1 + 3 * math.exp(-5.0)), rtol=1e-5)
  assert metrics == {"i2t_accuracy": 1.0, "t2i_accuracy": 1.0}
  _, metrics = _loss(eye, eye[::-1], 5.0)
  assert metrics == {"i2t_accuracy": 0.0, "t2i_accuracy": 0.0}


def test_contrastive_loss_symmetric_and_matches_reference():
  image, text = jax.random.normal(jax.random.key(4), (2, 8, 6))
  image = image / jnp.linalg.norm(image, axis=-1, keepdims=True)
  text = text / jnp.linalg.norm(text, axis=-1, keepdims=True)
  loss, metrics = _loss(image, text, 7.0)
  swapped, swapped_metrics = _loss(text, image, 7.0)
  np.testing.assert_allclose(loss, swapped, rtol=1e-6)
  assert metrics["i2t_accuracy"] == swapped_metrics["t2i_accuracy"]
  np.testing.assert_allclose(loss, _reference_loss(image, text, 7.0), rtol=1e-5)


def test_loss_over_global_batch_on_8_devices():
  code = textwrap.dedent(
    """
    import re
    import jax, numpy as np
    from jax.sharding import NamedSharding, PartitionSpec as P
    from t2i_jax import sharding
    from t2i_jax.models.clip import clip_contrastive_loss
    assert jax.device_count() == 8
    mesh = sharding.make_mesh(("data",), (-1,))
    batch, dim = 16, 12
    image, text = np.random.default_rng(0).standard_normal((2, batch, dim)).astype(np.float32)
    image /= np.linalg.norm(image, axis=1, keepdims=True)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    text[:4] = image[:4]  # a few matching pairs, so accuracies are not trivially 0
    loss_fn = jax.jit(clip_contrastive_loss)
    local, local_metrics = loss_fn(image, text, np.float32(10.0))
    data = NamedSharding(mesh, P("data"))
    args = (jax.device_put(image, data), jax.device_put(text, data), np.float32(10.0))
    assert len(args[0].addressable_shards) == 8
    sharded, sharded_metrics = loss_fn(*args)
    np.testing.assert_allclose(sharded, local, rtol=1e-6)
    for key in local_metrics:
      np.testing.assert_allclose(sharded_metrics[key], local_metrics[key])
    hlo = loss_fn.lower(*args).compile().as_text()
    gathers = re.findall(r"f32\\[(\\d+),(\\d+)\\]\\{[0-9,]*\\} all-gather", hlo)
    assert any(sorted(map(int, g)) == [dim, batch] for g in gathers), gathers
    print("OK", float(local), float(sharded))
    """
  )
  result = run_python(["-c", code], num_devices=8, timeout=120)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "OK" in result.stdout


def test_text_padding_mask_ends_at_the_first_end_of_text():
  from t2i_jax.models.clip import text_padding_mask  # noqa: PLC0415

  tokens = jnp.asarray([[5, 7, 2, 0, 0], [5, 2, 0, 2, 0]])
  np.testing.assert_array_equal(
    text_padding_mask(tokens, eos_id=2),
    [[True, True, True, False, False], [True, True, False, False, False]],
  )
  openai_style = jnp.asarray([[49406, 320, 49407, 0]])
  np.testing.assert_array_equal(text_padding_mask(openai_style, None), [[True, True, True, False]])
