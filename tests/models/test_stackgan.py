"""Tests for t2i_jax.models.stackgan.

Numeric tests use width 4 at 64 / 128 px with module-scoped, jitted inits; 256 px and reference
widths are checked with jax.eval_shape, which traces without compiling.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from t2i_jax.models.stackgan import (
  Stage1Discriminator,
  Stage1Generator,
  Stage2Discriminator,
  Stage2Generator,
)

B, E, NZ, COND, W = 4, 16, 16, 8, 4
TEXT = jax.random.normal(jax.random.key(1), (B, E))
Z = jax.random.normal(jax.random.key(2), (B, NZ))
IMG64 = jax.random.uniform(jax.random.key(3), (B, 64, 64, 3), minval=-1.0, maxval=1.0)
IMG128 = jax.random.uniform(jax.random.key(4), (B, 128, 128, 3), minval=-1.0, maxval=1.0)

G1 = Stage1Generator(width=W, cond_dim=COND, z_dim=NZ)
D1 = Stage1Discriminator(width=W, cond_dim=COND)
G2 = Stage2Generator(width=W, cond_dim=COND, num_residual=1, out_resolution=128)
D2 = Stage2Discriminator(width=W, cond_dim=COND, resolution=128)
# (module, first input) for each model at test size.
MODELS = {"g1": (G1, Z), "d1": (D1, IMG64), "g2": (G2, IMG64), "d2": (D2, IMG128)}


@pytest.fixture(scope="module")
def variables():
  """Unboxed variables of each model in MODELS, initialised under jit."""
  out = {}
  for i, (name, (model, x)) in enumerate(MODELS.items()):
    init = jax.jit(lambda k, model=model, x=x: model.init(k, x, TEXT, train=False))
    out[name] = nn.unbox(init(jax.random.key(i)))
  return out


def test_generator_outputs(variables):
  for name, resolution in (("g1", 64), ("g2", 128)):
    model, x = MODELS[name]
    images, mu, logvar = jax.jit(lambda v, model=model, x=x: model.apply(v, x, TEXT, train=False))(
      variables[name]
    )
    assert images.shape == (B, resolution, resolution, 3) and images.dtype == jnp.float32
    assert mu.shape == logvar.shape == (B, COND)
    assert mu.dtype == logvar.dtype == jnp.float32
    assert np.all(np.abs(np.asarray(images)) <= 1.0) and np.all(np.isfinite(images))


def test_discriminator_outputs(variables):
  for name in ("d1", "d2"):
    model, x = MODELS[name]
    logits = jax.jit(lambda v, model=model, x=x: model.apply(v, x, TEXT, train=False))(
      variables[name]
    )
    assert logits.shape == (B,) and logits.dtype == jnp.float32
    assert np.all(np.isfinite(logits))


@pytest.mark.parametrize("name", ["g1", "d1", "g2", "d2"])
def test_batch_stats_update_only_in_train_mode(variables, name):
  model, x = MODELS[name]
  v = variables[name]
  rngs = {"noise": jax.random.key(5)}

  def run(train):
    _, updates = model.apply(v, x, TEXT, train=train, mutable=["batch_stats"], rngs=rngs)
    return updates["batch_stats"]

  changed = jax.tree.map(lambda a, b: bool(np.any(a != b)), v["batch_stats"], run(True))
  assert all(jax.tree.leaves(changed))
  jax.tree.map(np.testing.assert_array_equal, v["batch_stats"], run(False))


@pytest.mark.parametrize("name", ["d1", "d2"])
def test_discriminator_depends_on_text(variables, name):
  model, x = MODELS[name]
  apply = jax.jit(
    lambda t: model.apply(variables[name], x, t, train=True, mutable=["batch_stats"])[0]
  )
  assert not np.allclose(apply(TEXT), apply(TEXT[::-1]), rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ["d1", "d2"])
def test_projection_discriminator_scores_text_by_inner_product(name):
  """condition="projection": logit = head(phi) + <text_proj(text), phi>, no text in the convs."""
  model, x = MODELS[name]
  model = model.clone(condition="projection")
  v = nn.unbox(jax.jit(lambda k: model.init(k, x, TEXT, train=False))(jax.random.key(7)))
  assert v["params"]["joint"]["kernel"].shape == (3, 3, 8 * W, 8 * W)  # image features only
  apply = jax.jit(lambda v, t: model.apply(v, x, t, train=False))
  logits = apply(v, TEXT)
  assert logits.shape == (B,) and logits.dtype == jnp.float32
  assert not np.allclose(logits, apply(v, TEXT[::-1]), rtol=0, atol=1e-6)
  no_text = jax.tree.map(jnp.zeros_like, v["params"]["text_proj"])
  v_no_text = {**v, "params": {**v["params"], "text_proj": no_text}}
  np.testing.assert_allclose(apply(v_no_text, TEXT), apply(v_no_text, TEXT[::-1]), atol=1e-6)
  # With a zero unconditional head, the logit is exactly the text's inner product with phi.
  head = jax.tree.map(jnp.zeros_like, v["params"]["head"])
  v_text_only = {**v, "params": {**v["params"], "head": head}}
  np.testing.assert_allclose(apply(v_text_only, 0.0 * TEXT), 0.0, atol=1e-6)


def test_generator_noise_sampling(variables):
  """CA samples from the "noise" stream in train mode and is deterministic in eval mode."""

  def run(train, seed):
    out, _ = G1.apply(
      variables["g1"], Z, TEXT, train=train, mutable=["batch_stats"], rngs={"noise": seed}
    )
    return out[0]

  a, b = run(True, jax.random.key(0)), run(True, jax.random.key(1))
  assert not np.allclose(a, b)
  np.testing.assert_array_equal(run(False, jax.random.key(0)), run(False, jax.random.key(1)))


def test_stage2_depends_on_stage1_image_but_not_its_gradient(variables):
  def out(stage1):
    # Train mode: BatchNorm rescales activations, so at init the output is not ~0.
    (images, _, _), _ = G2.apply(
      variables["g2"], stage1, TEXT, train=True, sample=False, mutable=["batch_stats"]
    )
    return images

  a, b = jax.jit(out)(IMG64), jax.jit(out)(-IMG64)
  assert not np.allclose(a, b, rtol=1e-3, atol=1e-6)
  grad = jax.grad(lambda s: jnp.sum(out(s)))(IMG64)  # reference detaches the Stage-I image
  assert not np.any(np.asarray(grad))


def _eval_shape_init(model, x):
  return jax.eval_shape(lambda: model.init(jax.random.key(0), x, TEXT, train=False))


@pytest.mark.parametrize("name", ["g1", "d1", "g2", "d2"])
def test_every_weight_has_partition_spec(name):
  model, x = MODELS[name]
  boxed = _eval_shape_init(model, x)["params"]
  specs = nn.get_partition_spec(boxed)
  shapes = nn.unbox(boxed)
  flat_specs = jax.tree_util.tree_flatten_with_path(
    specs, is_leaf=lambda s: isinstance(s, jax.sharding.PartitionSpec)
  )[0]
  assert flat_specs
  shape_of = dict(jax.tree_util.tree_flatten_with_path(shapes)[0])
  for path, spec in flat_specs:
    assert isinstance(spec, jax.sharding.PartitionSpec), path
    assert len(spec) == shape_of[path].ndim, (path, spec)
  kernels = [path for path, _ in flat_specs if path[-1].key == "kernel"]
  assert len(kernels) >= 6


def test_shapes_at_256():
  g2 = G2.clone(out_resolution=256)
  d2 = D2.clone(resolution=256)
  g_vars = _eval_shape_init(g2, IMG64)
  images, mu, logvar = jax.eval_shape(lambda v: g2.apply(v, IMG64, TEXT, train=False), g_vars)
  assert images.shape == (B, 256, 256, 3) and mu.shape == logvar.shape == (B, COND)
  img256 = jnp.zeros((B, 256, 256, 3))
  d_vars = _eval_shape_init(d2, img256)
  logits = jax.eval_shape(lambda v: d2.apply(v, img256, TEXT, train=False), d_vars)
  assert logits.shape == (B,) and logits.dtype == jnp.float32


def test_reference_channel_widths():
  g1 = Stage1Generator(width=128, cond_dim=128)
  z = jnp.zeros((B, 100))
  params = nn.unbox(_eval_shape_init(g1, z)["params"])
  assert params["project"]["kernel"].shape == (228, 4 * 4 * 1024)  # ngf = 128 * 8
  assert params["to_image"]["kernel"].shape == (3, 3, 64, 3)
  d2 = Stage2Discriminator(width=64, cond_dim=128, resolution=256)
  params = nn.unbox(_eval_shape_init(d2, jnp.zeros((B, 256, 256, 3)))["params"])
  assert params["down_5"]["kernel"].shape == (4, 4, 1024, 2048)  # ndf * 32 at 4x4
  assert params["reduce_0"]["kernel"].shape == (3, 3, 2048, 1024)
  assert params["reduce_1"]["kernel"].shape == (3, 3, 1024, 512)
  assert params["joint"]["kernel"].shape == (3, 3, 512 + 128, 512)


@pytest.mark.parametrize(
  "make, match",
  [
    (lambda: Stage1Generator(width=3), "width"),
    (lambda: Stage1Discriminator(width=0), "width"),
    (lambda: Stage2Generator(width=6), "width"),
    (lambda: Stage2Generator(out_resolution=64), "resolution"),
    (lambda: Stage2Generator(num_residual=-1), "num_residual"),
    (lambda: Stage2Discriminator(resolution=512), "resolution"),
    (lambda: Stage1Discriminator(condition="sum"), "condition must be one of"),
    (lambda: Stage2Discriminator(condition="sum"), "condition must be one of"),
  ],
)
def test_invalid_fields_raise(make, match):
  with pytest.raises(ValueError, match=match):
    make()


@pytest.mark.parametrize(
  "name, x, text, match",
  [
    ("g1", jnp.zeros((B, NZ + 1)), TEXT, "z of shape"),
    ("g1", Z, TEXT[:2], "text embedding"),
    ("d1", IMG128, TEXT, r"\[B, 64, 64, 3\]"),
    ("g2", IMG128, TEXT, r"\[B, 64, 64, 3\]"),
    ("d2", IMG64, TEXT, r"\[B, 128, 128, 3\]"),
    ("d2", IMG128, TEXT[0], "text embedding"),
  ],
)
def test_invalid_inputs_raise(name, x, text, match):
  model, _ = MODELS[name]
  with pytest.raises(ValueError, match=match):
    jax.eval_shape(lambda: model.init(jax.random.key(0), x, text, train=False))
