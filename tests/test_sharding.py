"""Tests for t2i_jax.sharding: meshes, rules, fitted specs and sharded init.

The test process has one CPU device; multi-device behaviour runs once in a child Python with 8
fake devices (module-scoped fixture) that prints its findings as JSON.
"""

import json
import textwrap
import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from child_process import run_python
from jax.sharding import NamedSharding, PartitionSpec

from t2i_jax import sharding

CONV_NAMES = ("conv_h", "conv_w", "conv_in", "conv_out")


class Tiny(nn.Module):
  """Two conv kernels (16 and 3 output channels), an embedding, and an un-annotated param."""

  @nn.compact
  def __call__(self, x):
    init = nn.initializers.normal(1.0)
    wide = self.param("wide", nn.with_logical_partitioning(init, CONV_NAMES), (4, 4, 8, 16))
    narrow = self.param("narrow", nn.with_logical_partitioning(init, CONV_NAMES), (4, 4, 8, 3))
    embed = self.param("embed", nn.with_logical_partitioning(init, ("vocab", "embed")), (12, 8))
    plain = self.param("plain", nn.initializers.ones, (5,))
    return x * (wide.sum() + narrow.sum() + embed.sum() + plain.sum())


def tiny_init(rng):
  return Tiny().init(rng, jnp.ones((2,)))


# --- make_mesh ----------------------------------------------------------------------------------


def test_make_mesh_minus_one_takes_all_devices():
  mesh = sharding.make_mesh(("data",), (-1,))
  assert dict(mesh.shape) == {"data": jax.device_count()}
  assert mesh.axis_names == ("data",)
  assert list(mesh.devices.flat) == jax.devices()
  assert all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types)


def test_make_mesh_explicit_shape_and_devices():
  devices = jax.devices()[:1]
  mesh = sharding.make_mesh(["data", "model"], [1, 1], devices=devices)
  assert dict(mesh.shape) == {"data": 1, "model": 1}
  mesh = sharding.make_mesh(("data", "model"), (-1, 1), devices=devices)
  assert dict(mesh.shape) == {"data": 1, "model": 1}


def test_make_mesh_two_minus_ones():
  with pytest.raises(ValueError, match=r"\(-1, -1\) may contain at most one -1"):
    sharding.make_mesh(("data", "model"), (-1, -1))


def test_make_mesh_length_mismatch():
  with pytest.raises(ValueError, match=r"\('data',\) and mesh.shape \(1, 1\) must have the same"):
    sharding.make_mesh(("data",), (1, 1))


def test_make_mesh_wrong_device_count():
  n = jax.device_count()
  with pytest.raises(ValueError, match=rf"needs {2 * n} devices but {n} are available; use -1"):
    sharding.make_mesh(("data",), (2 * n,))


def test_make_mesh_minus_one_does_not_divide():
  n = jax.device_count()
  with pytest.raises(ValueError, match=rf"\(-1, {n + 1}\) does not divide the {n} devices"):
    sharding.make_mesh(("data", "model"), (-1, n + 1))


# --- rules and specs ----------------------------------------------------------------------------


def test_rules_from_config():
  rules = sharding.rules_from_config(
    [["batch", "data"], ["mlp", ["data", "model"]], ("vocab", None)]
  )
  assert rules == (("batch", "data"), ("mlp", ("data", "model")), ("vocab", None))
  assert sharding.rules_from_config(sharding.FSDP_RULES) == sharding.FSDP_RULES
  assert sharding.rules_from_config(()) == ()


def test_rules_from_config_unknown_name_lists_valid_ones():
  with pytest.raises(ValueError, match=r"'conv_ot'.*valid names: batch, conv_h, .*length"):
    sharding.rules_from_config([["batch", "data"], ["conv_ot", "data"]])


def test_default_rules_use_known_logical_names():
  for rules in (sharding.DATA_PARALLEL_RULES, sharding.FSDP_RULES):
    assert all(name in sharding.LOGICAL_AXES for name, _ in rules)


FAKE_MESH = types.SimpleNamespace(shape={"data": 8, "model": 2})


@pytest.mark.parametrize(
  "spec, shape, want",
  [
    # divides: kept
    (PartitionSpec(None, None, None, "data"), (4, 4, 8, 16), (None, None, None, "data")),
    # 3 channels under an 8-way axis: dropped
    (PartitionSpec(None, None, None, "data"), (4, 4, 8, 3), (None, None, None, None)),
    # short spec: trailing dims replicated
    (PartitionSpec("data"), (16, 3), ("data", None)),
    (PartitionSpec(), (5,), (None,)),
    # several mesh axes on one dim: their product (16) must divide it
    (PartitionSpec(("data", "model"), None), (32, 7), (("data", "model"), None)),
    (PartitionSpec(("data", "model"), "model"), (8, 4), (None, "model")),
    (PartitionSpec("model", "data"), (3, 24), (None, "data")),
  ],
)
def test_fit_spec(spec, shape, want):
  assert tuple(sharding._fit_spec(spec, shape, FAKE_MESH)) == want


def test_fit_spec_on_a_real_mesh():
  mesh = sharding.make_mesh(("data",), (-1,))
  n = jax.device_count()
  spec = sharding._fit_spec(PartitionSpec("data", None), (2 * n, 3), mesh)
  assert tuple(spec) == ("data", None)


def test_batch_sharding_and_replicated():
  mesh = sharding.make_mesh(("data",), (-1,))
  batch = sharding.batch_sharding(mesh, sharding.DATA_PARALLEL_RULES)
  assert isinstance(batch, NamedSharding) and tuple(batch.spec) == ("data",)
  assert sharding.replicated(mesh).spec == PartitionSpec()
  # A rule set without "batch" replicates the batch.
  assert not any(sharding.batch_sharding(mesh, ()).spec)


# --- abstract_state / init_sharded (one device) -------------------------------------------------


def test_abstract_state_and_init_sharded_round_trip():
  mesh = sharding.make_mesh(("data",), (-1,))
  rng = jax.random.key(0)
  abstract, shardings = sharding.abstract_state(tiny_init, rng, mesh, sharding.FSDP_RULES)
  params = abstract["params"]
  assert params["wide"].shape == (4, 4, 8, 16) and params["wide"].dtype == jnp.float32
  assert params["narrow"].shape == (4, 4, 8, 3)
  assert set(params) == {"wide", "narrow", "embed", "plain"}
  for leaf, s in zip(jax.tree.leaves(abstract), jax.tree.leaves(shardings), strict=True):
    assert isinstance(leaf, jax.ShapeDtypeStruct) and leaf.sharding == s
  state = sharding.init_sharded(tiny_init, rng, shardings)
  assert jax.tree.structure(state) == jax.tree.structure(abstract)
  want = jax.jit(lambda r: nn.unbox(tiny_init(r)))(rng)  # the same values, computed plainly
  for got, expected, s in zip(
    jax.tree.leaves(state), jax.tree.leaves(want), jax.tree.leaves(shardings), strict=True
  ):
    assert not isinstance(got, nn.LogicallyPartitioned)
    assert got.sharding == s
    np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))


# --- 8 fake devices (child process) -------------------------------------------------------------

CHILD = textwrap.dedent(
  """
  import json
  import sys
  import flax.linen as nn
  import jax
  import numpy as np
  from t2i_jax import sharding

  sys.path.insert(0, "tests")
  from test_sharding import tiny_init  # the same module as in this file's one-device tests

  def describe(shardings):
    return {
      k: dict(spec=[a for a in s.spec], replicated=s.is_fully_replicated)
      for k, s in shardings["params"].items()
    }

  out = {"devices": jax.device_count()}
  rng = jax.random.key(0)
  mesh = sharding.make_mesh(("data",), (-1,))
  out["mesh"] = dict(mesh.shape)
  boxed = jax.eval_shape(tiny_init, rng)
  out["fsdp"] = describe(sharding.state_shardings(boxed, mesh, sharding.FSDP_RULES))
  out["dp"] = describe(sharding.state_shardings(boxed, mesh, sharding.DATA_PARALLEL_RULES))
  mesh2 = sharding.make_mesh(("data", "model"), (2, -1))
  out["mesh2"] = dict(mesh2.shape)
  rules2 = (("conv_out", ("data", "model")), ("vocab", "data"))
  out["two_axes"] = describe(sharding.state_shardings(boxed, mesh2, rules2))
  try:
    sharding.make_mesh(("data", "model"), (3, -1))
  except ValueError as e:
    out["not_divisible"] = str(e)

  abstract, shardings = sharding.abstract_state(tiny_init, rng, mesh, sharding.FSDP_RULES)
  state = sharding.init_sharded(tiny_init, rng, shardings)
  plain = jax.jit(lambda r: nn.unbox(tiny_init(r)))(rng)
  out["values_equal"] = all(
    np.array_equal(np.asarray(a), np.asarray(b))
    for a, b in zip(jax.tree.leaves(state), jax.tree.leaves(plain), strict=True)
  )
  out["shardings_equal"] = all(
    a.sharding == s for a, s in zip(jax.tree.leaves(state), jax.tree.leaves(shardings))
  )
  out["abstract_shardings_equal"] = all(
    a.sharding == s for a, s in zip(jax.tree.leaves(abstract), jax.tree.leaves(shardings))
  )
  wide = state["params"]["wide"]
  out["wide_shards"] = sorted({tuple(s.data.shape) for s in wide.addressable_shards})
  out["wide_num_shards"] = len(wide.addressable_shards)
  print("RESULT " + json.dumps(out))
  """
)


@pytest.fixture(scope="module")
def eight_devices():
  result = run_python(["-c", CHILD], num_devices=8, timeout=240)
  assert result.returncode == 0, result.stderr[-3000:]
  line = [x for x in result.stdout.splitlines() if x.startswith("RESULT ")][-1]
  return json.loads(line[len("RESULT ") :])


def test_eight_devices_mesh(eight_devices):
  assert eight_devices["devices"] == 8
  assert eight_devices["mesh"] == {"data": 8}
  assert eight_devices["mesh2"] == {"data": 2, "model": 4}
  assert "(3, -1) does not divide the 8 devices" in eight_devices["not_divisible"]


def test_fsdp_shards_divisible_dims_only(eight_devices):
  fsdp = eight_devices["fsdp"]
  assert fsdp["wide"] == dict(spec=[None, None, None, "data"], replicated=False)
  assert fsdp["narrow"]["replicated"] and not any(fsdp["narrow"]["spec"])  # 3 % 8 != 0
  assert fsdp["embed"]["replicated"]  # vocab 12 % 8 != 0
  assert fsdp["plain"]["replicated"]  # no annotation


def test_data_parallel_replicates_every_param(eight_devices):
  assert all(s["replicated"] for s in eight_devices["dp"].values())


def test_two_mesh_axes_on_one_dim(eight_devices):
  two = eight_devices["two_axes"]
  assert two["wide"] == dict(spec=[None, None, None, ["data", "model"]], replicated=False)
  assert two["narrow"]["replicated"]
  assert two["embed"] == dict(spec=["data", None], replicated=False)  # 12 % 2 == 0


def test_init_sharded_on_eight_devices(eight_devices):
  assert eight_devices["values_equal"]
  assert eight_devices["shardings_equal"] and eight_devices["abstract_shardings_equal"]
  assert eight_devices["wide_num_shards"] == 8
  assert eight_devices["wide_shards"] == [[4, 4, 8, 2]]
