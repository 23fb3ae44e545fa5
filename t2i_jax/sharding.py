"""The one place that builds device meshes and NamedShardings.

Models annotate params with logical axis names (below); a config maps logical names to mesh axes with
`sharding_rules`. Data parallelism is the default (every param replicated, the batch split over
"data"); FSDP is a rule change, e.g. `("conv_out", "data")`, `("mlp", "data")`.
"""

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

# Logical axis names used by models in t2i_jax.
LOGICAL_AXES = (
  "batch",
  "conv_h",
  "conv_w",
  "conv_in",
  "conv_out",
  "embed",
  "mlp",
  "vocab",
  "heads",
  "length",
)

DATA_PARALLEL_RULES = (("batch", "data"),)
# Shards each large weight over its output features; dims not divisible by the axis stay replicated.
FSDP_RULES = (("batch", "data"), ("conv_out", "data"), ("mlp", "data"), ("vocab", "data"))


def make_mesh(axes: Sequence[str], shape: Sequence[int], devices=None) -> Mesh:
  """A mesh over all (or the given) devices; at most one size may be -1 (takes what is left).

  Axes are `Auto` (classic GSPMD propagation), not the `Explicit` default of `jax.make_mesh`.
  """
  axes, shape = tuple(axes), list(shape)
  devices = jax.devices() if devices is None else list(devices)
  if len(axes) != len(shape):
    raise ValueError(f"mesh.axes {axes} and mesh.shape {tuple(shape)} must have the same length.")
  if shape.count(-1) > 1:
    raise ValueError(f"mesh.shape {tuple(shape)} may contain at most one -1.")
  known = int(np.prod([s for s in shape if s != -1]))
  if -1 in shape:
    if len(devices) % known:
      raise ValueError(f"mesh.shape {tuple(shape)} does not divide the {len(devices)} devices.")
    shape[shape.index(-1)] = len(devices) // known
  if int(np.prod(shape)) != len(devices):
    raise ValueError(
      f"mesh.shape {tuple(shape)} needs {int(np.prod(shape))} devices but {len(devices)} are "
      "available; use -1 for one axis to take the rest."
    )
  return jax.make_mesh(tuple(shape), axes, axis_types=(AxisType.Auto,) * len(axes), devices=devices)


def batch_sharding(mesh: Mesh, rules: Sequence[tuple[str, Any]]) -> NamedSharding:
  """Sharding of a batch: leading dim over the mesh axis that "batch" maps to."""
  return NamedSharding(mesh, nn.logical_to_mesh_axes(("batch",), rules))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def _fit_spec(spec: PartitionSpec, shape: tuple[int, ...], mesh: Mesh) -> PartitionSpec:
  """Drops mesh axes from dims they do not divide (e.g. a 3-channel output conv under FSDP)."""
  fitted = []
  for dim, axis in zip(shape, tuple(spec) + (None,) * (len(shape) - len(spec)), strict=True):
    names = (axis,) if isinstance(axis, str) else tuple(axis or ())
    size = int(np.prod([mesh.shape[n] for n in names])) if names else 1
    fitted.append(axis if names and dim % size == 0 else None)
  return PartitionSpec(*fitted)


def state_shardings(abstract_boxed_state: Any, mesh: Mesh, rules: Sequence[tuple[str, Any]]):
  """NamedShardings for every leaf of the *unboxed* state.

  Args:
    abstract_boxed_state: `jax.eval_shape` of an init that returns params still wrapped in
      `nn.LogicallyPartitioned` boxes (un-annotated leaves are replicated).
  """
  logical_specs = nn.get_partition_spec(abstract_boxed_state)
  mesh_specs = nn.logical_to_mesh(logical_specs, rules)
  abstract = nn.unbox(abstract_boxed_state)
  return jax.tree.map(
    # Leaf-less placeholders (optax's MaskedNode for frozen params) pass through as they are.
    lambda spec, leaf: (
      NamedSharding(mesh, _fit_spec(spec, tuple(leaf.shape), mesh))
      if hasattr(leaf, "shape")
      else leaf
    ),
    mesh_specs,
    abstract,
    is_leaf=lambda x: isinstance(x, PartitionSpec),
  )


def abstract_state(init_fn, rng: jax.Array, mesh: Mesh, rules: Sequence[tuple[str, Any]]):
  """Shapes and shardings of `init_fn(rng)` (a boxed state) without computing it.

  Returns:
    (abstract, shardings): the unboxed state as `jax.ShapeDtypeStruct`s that carry their
    shardings (a restore target), and the NamedSharding tree.
  """
  boxed = jax.eval_shape(init_fn, rng)
  shardings = state_shardings(boxed, mesh, rules)
  abstract = jax.tree.map(
    lambda leaf, s: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=s),
    nn.unbox(boxed),
    shardings,
  )
  return abstract, shardings


def init_sharded(init_fn, rng: jax.Array, shardings):
  """Runs `init_fn(rng)` (returning a boxed state) straight into its shardings (no host copy)."""
  return jax.jit(lambda r: nn.unbox(init_fn(r)), out_shardings=shardings)(rng)


def rules_from_config(rules) -> tuple[tuple[str, Any], ...]:
  """Config lists (`[["batch", "data"], ...]`) -> tuple of pairs; unknown logical names raise."""
  pairs = []
  for rule in rules:
    name, axis = tuple(rule)
    if name not in LOGICAL_AXES:
      raise ValueError(
        f"Unknown logical axis {name!r} in sharding_rules; valid names: {', '.join(LOGICAL_AXES)}."
      )
    pairs.append((name, tuple(axis) if isinstance(axis, list) else axis))
  return tuple(pairs)
