"""Tests for t2i_jax.models.dcgan.

Numeric tests use resolution 32 / width 8 with module-scoped, jitted inits; shape tests at every
resolution use jax.eval_shape, which traces without compiling.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from t2i_jax.models.dcgan import Discriminator, Generator
from t2i_jax.models.text_encoder import WordTextEncoder

NZ, B, L, NUM_CLASSES = 16, 4, 6, 10
TEXT_ENCODER = WordTextEncoder(vocab_size=20, embed_dim=16, num_layers=1, num_heads=2, max_length=L)
CONDS = {
  "none": None,
  "label": jnp.array([0, 1, 2, 3], jnp.int32),
  "text": jnp.array([[3, 4, 5, 2, 0, 0]] * 2 + [[6, 7, 2, 0, 0, 0]] * 2, jnp.int32),
}
OTHER_CONDS = {"label": CONDS["label"][::-1], "text": CONDS["text"][::-1]}
Z = jax.random.normal(jax.random.key(42), (B, NZ))


def _models(condition, resolution=32, width=8):
  kwargs = dict(resolution=resolution, width=width, condition=condition, num_classes=NUM_CLASSES)
  kwargs["text_encoder"] = TEXT_ENCODER if condition == "text" else None
  return Generator(cond_dim=16, **kwargs), Discriminator(**kwargs)


def _image(resolution):
  return jnp.zeros((B, resolution, resolution, 3), jnp.float32)


@pytest.fixture(scope="module", params=["none", "label", "text"])
def tiny(request):
  """(condition, G, D, G variables, D variables) at resolution 32, width 8."""
  condition = request.param
  g, d = _models(condition)
  cond = CONDS[condition]
  g_vars = jax.jit(lambda k: g.init(k, Z, cond, train=False))(jax.random.key(0))
  d_vars = jax.jit(lambda k: d.init(k, _image(32), cond, train=False))(jax.random.key(1))
  return condition, g, d, nn.unbox(g_vars), nn.unbox(d_vars)


@pytest.mark.parametrize("condition", ["none", "label", "text"])
@pytest.mark.parametrize("resolution", [32, 64, 128])
def test_output_shapes(resolution, condition):
  g, d = _models(condition, resolution)
  cond = CONDS[condition]
  key = jax.random.key(0)
  g_vars = jax.eval_shape(lambda: g.init(key, Z, cond, train=False))
  images = jax.eval_shape(lambda v: g.apply(v, Z, cond, train=False), g_vars)
  assert images.shape == (B, resolution, resolution, 3) and images.dtype == jnp.float32
  d_vars = jax.eval_shape(lambda: d.init(key, _image(resolution), cond, train=False))
  logits = jax.eval_shape(lambda v: d.apply(v, _image(resolution), cond, train=False), d_vars)
  assert logits.shape == (B,) and logits.dtype == jnp.float32


def test_bfloat16_compute_keeps_float32_io():
  g, d = _models("label")
  g = g.clone(dtype=jnp.bfloat16)
  d = d.clone(dtype=jnp.bfloat16)
  cond = CONDS["label"]
  key = jax.random.key(0)
  g_vars = jax.eval_shape(lambda: g.init(key, Z, cond, train=False))
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(nn.unbox(g_vars)))
  images = jax.eval_shape(lambda v: g.apply(v, Z, cond, train=False), g_vars)
  d_vars = jax.eval_shape(lambda: d.init(key, _image(32), cond, train=False))
  logits = jax.eval_shape(lambda v: d.apply(v, _image(32), cond, train=False), d_vars)
  assert images.dtype == jnp.float32 and logits.dtype == jnp.float32


def test_paper_channel_progression():
  g, d = Generator(resolution=64, width=64), Discriminator(resolution=64, width=64)
  g_params = jax.eval_shape(lambda: g.init(jax.random.key(0), Z, train=False))["params"]
  g_params = nn.unbox(g_params)
  assert g_params["project"]["kernel"].shape == (NZ, 4 * 4 * 512)
  assert [g_params[f"up_{i}"]["kernel"].shape[-1] for i in range(3)] == [256, 128, 64]
  assert g_params["to_image"]["kernel"].shape == (4, 4, 64, 3)
  d_params = nn.unbox(
    jax.eval_shape(lambda: d.init(jax.random.key(0), _image(64), train=False))["params"]
  )
  assert [d_params[f"down_{i}"]["kernel"].shape[-1] for i in range(4)] == [64, 128, 256, 512]
  assert "bn_down_0" not in d_params  # no BatchNorm on D's first layer


def test_generator_output_in_tanh_range(tiny):
  condition, g, _, g_vars, _ = tiny
  images = jax.jit(lambda v, z: g.apply(v, z, CONDS[condition], train=False))(g_vars, 30.0 * Z)
  assert images.shape == (B, 32, 32, 3)
  assert np.all(np.abs(np.asarray(images)) <= 1.0)
  assert np.std(np.asarray(images)) > 0


def test_batch_norm_stats_update_only_in_train_mode(tiny):
  condition, g, d, g_vars, d_vars = tiny
  cond = CONDS[condition]

  @jax.jit
  def run(g_vars, d_vars):
    out = {}
    for train in (True, False):
      images, g_upd = g.apply(g_vars, Z, cond, train=train, mutable=["batch_stats"])
      _, d_upd = d.apply(d_vars, images, cond, train=train, mutable=["batch_stats"])
      out[train] = (g_upd["batch_stats"], d_upd["batch_stats"])
    return out

  out = run(g_vars, d_vars)
  before = (g_vars["batch_stats"], d_vars["batch_stats"])
  eval_equal = jax.tree.map(np.array_equal, out[False], before)
  assert all(jax.tree.leaves(eval_equal))
  train_equal = jax.tree.map(np.array_equal, out[True], before)
  assert not any(jax.tree.leaves(train_equal))  # every mean/var moved


def test_conditioning_changes_outputs(tiny):
  condition, g, d, g_vars, d_vars = tiny
  images = jax.random.uniform(jax.random.key(3), (B, 32, 32, 3), minval=-1.0, maxval=1.0)

  @jax.jit
  def outputs(cond):
    return g.apply(g_vars, Z, cond, train=False), d.apply(d_vars, images, cond, train=False)

  if condition == "none":  # unconditional models ignore a condition they are handed
    g_none, d_none = outputs(None)
    g_label, d_label = outputs(CONDS["label"])
    np.testing.assert_array_equal(g_none, g_label)
    np.testing.assert_array_equal(d_none, d_label)
    return
  g_a, d_a = outputs(CONDS[condition])
  g_b, d_b = outputs(OTHER_CONDS[condition])
  assert not np.allclose(g_a, g_b)
  assert not np.allclose(d_a, d_b, rtol=0, atol=1e-7)


def test_param_tree_top_level_names(tiny):
  condition, _, _, g_vars, d_vars = tiny
  assert set(g_vars) == {"params", "batch_stats"} and set(d_vars) == {"params", "batch_stats"}
  g_extra = {"none": set(), "label": {"label_embed"}, "text": {"text_encoder", "text_proj"}}
  assert (
    set(g_vars["params"])
    == {
      "project",
      "bn_project",
      "up_0",
      "bn_up_0",
      "up_1",
      "bn_up_1",
      "to_image",
    }
    | g_extra[condition]
  )
  assert (
    set(d_vars["params"])
    == {
      "down_0",
      "down_1",
      "bn_down_1",
      "down_2",
      "bn_down_2",
      "head",
    }
    | g_extra[condition]
  )


def test_init_statistics_width_64():
  d = Discriminator(resolution=32, width=64)
  params = jax.jit(lambda k: d.init(k, _image(32), train=False))(jax.random.key(0))["params"]
  kernel = np.asarray(nn.unbox(params["down_2"]["kernel"]))  # 4x4x128x256
  assert abs(kernel.mean()) < 1e-3
  np.testing.assert_allclose(kernel.std(), 0.02, rtol=0.02)
  scale = np.asarray(nn.unbox(params["bn_down_2"]["scale"]))
  np.testing.assert_allclose(scale.mean(), 1.0, atol=0.01)
  np.testing.assert_allclose(scale.std(), 0.02, rtol=0.3)
  np.testing.assert_array_equal(np.asarray(nn.unbox(params["bn_down_2"]["bias"])), 0.0)


@pytest.mark.parametrize("condition", ["none", "label", "text"])
def test_every_param_has_partition_spec(condition):
  g, d = _models(condition)
  cond = CONDS[condition]
  for model, x in ((g, Z), (d, _image(32))):
    abstract = jax.eval_shape(lambda m=model, x=x: m.init(jax.random.key(0), x, cond, train=False))
    boxed = jax.tree.leaves(abstract["params"], is_leaf=lambda v: isinstance(v, nn.Partitioned))
    assert all(isinstance(v, nn.Partitioned) for v in boxed)
    specs = nn.get_partition_spec(abstract)["params"]
    flat = jax.tree_util.tree_flatten_with_path(
      specs, is_leaf=lambda v: isinstance(v, jax.sharding.PartitionSpec)
    )[0]
    for path, spec in flat:
      assert isinstance(spec, jax.sharding.PartitionSpec), path
      if jax.tree_util.keystr(path).endswith("['kernel']"):
        assert len(spec) in (2, 4) and any(a is not None for a in spec), path


def test_conv_kernel_axis_names():
  g, d = _models("label")
  g_specs = nn.get_partition_spec(
    jax.eval_shape(lambda: g.init(jax.random.key(0), Z, CONDS["label"], train=False))
  )["params"]
  assert tuple(g_specs["up_0"]["kernel"]) == ("conv_h", "conv_w", "conv_in", "conv_out")
  assert tuple(g_specs["project"]["kernel"]) == ("embed", "mlp")
  assert tuple(g_specs["label_embed"]["embedding"]) == ("vocab", "embed")
  assert tuple(g_specs["bn_up_0"]["scale"]) == ("conv_out",)


@pytest.mark.parametrize(
  ("kwargs", "match"),
  [
    (dict(resolution=48), "resolution must be one of"),
    (dict(condition="caption"), "condition must be one of"),
    (dict(condition="text"), "requires a text_encoder"),
  ],
)
@pytest.mark.parametrize("cls", [Generator, Discriminator])
def test_invalid_config_raises(cls, kwargs, match):
  with pytest.raises(ValueError, match=match):
    cls(**kwargs)


@pytest.mark.parametrize("condition", ["label", "text"])
def test_missing_condition_raises(condition):
  g, d = _models(condition)
  with pytest.raises(ValueError, match="requires cond"):
    jax.eval_shape(lambda: g.init(jax.random.key(0), Z, None, train=False))
  with pytest.raises(ValueError, match="requires cond"):
    jax.eval_shape(lambda: d.init(jax.random.key(0), _image(32), None, train=False))


def test_wrong_image_size_raises():
  _, d = _models("none")
  with pytest.raises(ValueError, match="expects"):
    jax.eval_shape(lambda: d.init(jax.random.key(0), _image(64), train=False))


@pytest.mark.parametrize("norm", ["layer", "none"])
def test_discriminator_without_batch_norm_is_per_example(norm):
  _, d = _models("label")
  d = d.clone(norm=norm)
  x = _image(32)
  variables = jax.jit(lambda: d.init(jax.random.key(0), x, CONDS["label"], train=True))()
  assert "batch_stats" not in variables
  logits = d.apply(variables, x, CONDS["label"], train=True)
  # No coupling between examples: scoring one image alone gives the same logit.
  alone = d.apply(variables, x[:1], CONDS["label"][:1], train=True)
  np.testing.assert_allclose(logits[:1], alone, rtol=1e-5, atol=1e-5)


def test_unknown_discriminator_norm_raises():
  with pytest.raises(ValueError, match="Unknown discriminator norm 'group'; valid: batch, layer"):
    Discriminator(resolution=32, width=8, norm="group")
