"""Tests for t2i_jax.models.unet and its layers (timestep embedding, attention masks, hooks).

Parity with diffusers' UNet2DConditionModel is tested in tests/convert/test_diffusers_unet.py.
"""

import functools
import math
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from t2i_jax import sharding
from t2i_jax.layers.timestep import timestep_embedding
from t2i_jax.models.unet import SD1_UNET, TINY_UNET, UNet
from t2i_jax.sharding import LOGICAL_AXES

B, S, D = 2, 5, 12
X = jax.random.normal(jax.random.key(1), (B, 8, 8, 4))
T = jnp.array([3, 999])
CONTEXT = jax.random.normal(jax.random.key(2), (B, S, D))
# One level: the cheapest UNet that still has every kind of layer (for the gradient tests).
MICRO = dict(TINY_UNET, block_out_channels=(8,), cross_attention=(True,), norm_num_groups=4)


def _random_params(model: UNet, seed: int = 3):
  """Random params of ``model`` drawn on the host from ``jax.eval_shape(init)``.

  Compiling ``init`` costs seconds per model on CPU (one PRNG fold-in and draw per kernel), and
  its zero-initialised residual branches (conv2, proj_out) would hide the attention and timestep
  paths from the tests; N(0, 1 / fan_in) kernels and noisy norms do neither.
  """
  shapes = nn.unbox(jax.eval_shape(model.init, jax.random.key(0), X, T, CONTEXT)["params"])
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    noise = rng.standard_normal(leaf.shape).astype(np.float32)
    if len(leaf.shape) > 1:
      return jnp.asarray(noise / np.sqrt(math.prod(leaf.shape[:-1])))
    return jnp.asarray((path[-1].key == "scale") + 0.1 * noise)

  return jax.tree_util.tree_map_with_path(draw, shapes)


@functools.partial(jax.jit, static_argnums=0)
def _apply(model, params, x, t, context, mask=None):
  return model.apply({"params": params}, x, t, context, mask)


@pytest.fixture(scope="module")
def tiny():
  """(model, abstract boxed variables, random params)."""
  model = UNet(**TINY_UNET)
  variables = jax.eval_shape(model.init, jax.random.key(0), X, T, CONTEXT)
  return model, variables, _random_params(model)


def test_timestep_embedding_matches_closed_form():
  t = np.array([0.0, 1.0, 17.5, 999.0])
  for flip, shift, dim in ((True, 0.0, 8), (False, 1.0, 7)):
    half = dim // 2
    freqs = np.exp(-math.log(10000.0) * np.arange(half) / (half - shift))
    angles = t[:, None] * freqs[None]
    parts = [np.cos(angles), np.sin(angles)] if flip else [np.sin(angles), np.cos(angles)]
    want = np.concatenate(parts + [np.zeros((len(t), dim % 2))], axis=1)
    got = timestep_embedding(jnp.asarray(t), dim, flip_sin_to_cos=flip, freq_shift=shift)
    assert got.shape == (len(t), dim) and got.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(got), want, atol=2e-4)


def test_micro_init_runs_and_starts_residual_branches_at_zero():
  model = UNet(**MICRO)
  start = time.perf_counter()
  params = nn.unbox(jax.jit(model.init)(jax.random.key(0), X, T, CONTEXT)["params"])
  jax.block_until_ready(params)
  print(f"UNet(**MICRO) jitted init incl. compilation: {time.perf_counter() - start:.2f} s")
  assert not np.any(params["down_0_resnet_0"]["conv2"]["kernel"])
  assert not np.any(params["down_0_attn_0"]["proj_out"]["kernel"])
  assert np.std(params["conv_in"]["kernel"]) > 0


def test_tiny_shapes_names_and_logical_axes(tiny):
  model, variables, params = tiny
  out = _apply(model, params, X, T, CONTEXT)
  assert out.shape == (B, 8, 8, 4) and out.dtype == jnp.float32
  assert bool(jnp.all(jnp.isfinite(out)))
  # Level 0 = full resolution in both paths; up levels have layers_per_block + 1 units.
  assert {
    "down_0_downsample",
    "down_1_attn_0",
    "mid_attn_0",
    "up_0_resnet_1",
    "up_1_upsample",
  } <= set(params)
  assert "down_1_downsample" not in params and "up_0_upsample" not in params
  specs = nn.get_partition_spec(variables)["params"]
  assert specs["conv_in"]["kernel"] == jax.sharding.PartitionSpec(
    "conv_h", "conv_w", "conv_in", "conv_out"
  )
  attn = specs["down_0_attn_0"]["block_0"]["attn2"]
  assert attn["query"]["kernel"] == jax.sharding.PartitionSpec("embed", "mlp")
  assert attn["out"]["kernel"] == jax.sharding.PartitionSpec("mlp", "embed")
  names = {
    n
    for s in jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
    for n in s
  }
  assert names - {None} <= set(LOGICAL_AXES)


def test_fsdp_is_a_rule_change(tiny):
  _, variables, _ = tiny
  mesh = sharding.make_mesh(("data",), (-1,))
  data_parallel = sharding.state_shardings(variables, mesh, sharding.DATA_PARALLEL_RULES)
  fsdp = sharding.state_shardings(variables, mesh, sharding.FSDP_RULES)
  P = jax.sharding.PartitionSpec
  assert data_parallel["params"]["down_1_resnet_0"]["conv1"]["kernel"].spec == P(
    None, None, None, None
  )
  assert fsdp["params"]["down_1_resnet_0"]["conv1"]["kernel"].spec == P(None, None, None, "data")
  assert fsdp["params"]["mid_attn_0"]["block_0"]["ff"]["proj"]["kernel"].spec == P(None, "data")


def test_timestep_and_context_change_the_output(tiny):
  model, _, params = tiny
  base = _apply(model, params, X, T, CONTEXT)
  assert float(jnp.abs(base - _apply(model, params, X, T + 100, CONTEXT)).max()) > 1e-3
  assert float(jnp.abs(base - _apply(model, params, X, T, -CONTEXT)).max()) > 1e-3
  # A scalar timestep is broadcast over the batch.
  np.testing.assert_allclose(
    _apply(model, params, X, jnp.array(7), CONTEXT),
    _apply(model, params, X, jnp.array([7, 7]), CONTEXT),
    atol=1e-6,
  )


def test_context_mask(tiny):
  model, _, params = tiny
  all_true = jnp.ones((B, S), bool)
  mask = all_true.at[0, 3:].set(False)
  np.testing.assert_allclose(
    _apply(model, params, X, T, CONTEXT, all_true), _apply(model, params, X, T, CONTEXT), atol=1e-5
  )
  masked = _apply(model, params, X, T, CONTEXT, mask)
  assert float(jnp.abs(masked[0] - _apply(model, params, X, T, CONTEXT)[0]).max()) > 1e-3
  # What sits at masked positions does not matter.
  scrambled = CONTEXT.at[0, 3:].set(100.0)
  np.testing.assert_allclose(_apply(model, params, X, T, scrambled, mask), masked, atol=1e-5)


def test_bfloat16_compute_float32_params(tiny):
  model, _, params = tiny
  bf16 = UNet(**TINY_UNET, dtype=jnp.bfloat16)
  out = _apply(bf16, params, X, T, CONTEXT)
  assert out.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(out)))
  ref = _apply(model, params, X, T, CONTEXT)
  assert float(jnp.abs(out - ref).max()) < 0.1 * float(jnp.abs(ref).max())
  shapes = jax.eval_shape(bf16.init, jax.random.key(0), X, T, CONTEXT)
  assert {leaf.dtype for leaf in jax.tree.leaves(nn.unbox(shapes))} == {jnp.dtype(jnp.float32)}


def test_bad_inputs_raise(tiny):
  model, _, params = tiny
  with pytest.raises(ValueError, match="divisible by 2"):
    model.apply({"params": params}, X[:, :7], T, CONTEXT)
  with pytest.raises(ValueError, match="context must be"):
    model.apply({"params": params}, X, T, CONTEXT[0])
  with pytest.raises(ValueError, match="num_heads"):
    jax.eval_shape(
      UNet(**dict(TINY_UNET, num_heads=(2, 2, 2))).init, jax.random.key(0), X, T, CONTEXT
    )


def test_remat_gives_the_same_output_and_gradients(tiny):
  model, _, params = tiny
  remat = UNet(**TINY_UNET, remat=True)
  assert jax.tree.structure(params) == jax.tree.structure(
    nn.unbox(jax.eval_shape(remat.init, jax.random.key(0), X, T, CONTEXT)["params"])
  )
  np.testing.assert_allclose(
    _apply(remat, params, X, T, CONTEXT), _apply(model, params, X, T, CONTEXT), atol=1e-6
  )

  # Gradients on the one-level UNet without a mid block (each backward pass compiles for seconds).
  config = dict(MICRO, mid_block=False)
  plain, remat = UNet(**config), UNet(**config, remat=True)
  params = _random_params(plain)

  def loss(model, p):
    return jnp.mean(model.apply({"params": p}, X, T, CONTEXT) ** 2)

  jaxpr = str(jax.make_jaxpr(jax.grad(functools.partial(loss, remat)))(params))
  assert "remat" in jaxpr or "checkpoint" in jaxpr
  (l0, g0), (l1, g1) = (
    jax.jit(jax.value_and_grad(functools.partial(loss, m)))(params) for m in (plain, remat)
  )
  np.testing.assert_allclose(l0, l1, rtol=1e-6)
  for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


class _ScaledDense(nn.Module):
  """A stand-in temporal layer: h + Dense(h) * scale, Dense zero-initialised."""

  @nn.compact
  def __call__(self, h, *, temb, context, scale):
    assert temb.shape[0] == h.shape[0] and context.ndim == 3
    return h + scale * nn.Dense(h.shape[-1], kernel_init=nn.initializers.zeros_init())(h)


def test_layer_hook_adds_layers_after_each_spatial_unit():
  calls = []

  def hook(stage, level, index, channels, name):
    calls.append((stage, level, index, channels, name))
    return _ScaledDense(name=name)

  hooked = UNet(**MICRO, layer_hook=hook)
  variables = jax.eval_shape(
    functools.partial(hooked.init, hook_kwargs={"scale": 1.0}), jax.random.key(0), X, T, CONTEXT
  )
  names = [c[-1] for c in calls]
  assert names == ["down_0_hook_0", "mid_hook_0", "up_0_hook_0", "up_0_hook_1"]
  assert set(names) <= set(variables["params"])
  assert {c[3] for c in calls} == {8}

  # The spatial params are those of the hook-free UNet (a 2-D checkpoint still loads), and a
  # zero-initialised hook leaves the output unchanged.
  plain = UNet(**MICRO)
  params = _random_params(plain)
  hook_params = {n: nn.unbox(variables["params"][n]) for n in names}
  hook_params = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), hook_params)
  out = hooked.apply({"params": params | hook_params}, X, T, CONTEXT, hook_kwargs={"scale": 2.0})
  np.testing.assert_allclose(out, plain.apply({"params": params}, X, T, CONTEXT), atol=1e-5)


def test_sd1_config_parameter_count():
  shapes = jax.eval_shape(
    UNet(**SD1_UNET).init,
    jax.random.key(0),
    jnp.zeros((1, 8, 8, 4)),
    jnp.zeros((1,), jnp.int32),
    jnp.zeros((1, 77, 768)),
  )
  count = sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(nn.unbox(shapes)))
  assert count == 859_520_964  # Stable Diffusion 1.x's UNet
