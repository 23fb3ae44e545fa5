"""Reading diffusers model folders and placing their tensors by a name table (VAE and UNet).

A diffusers folder (``save_pretrained(..., safe_serialization=True)``) holds config.json and
diffusion_pytorch_model.safetensors (or a sharded ``.safetensors.index.json``). Tensors are read
with ``safetensors.numpy``: no torch or diffusers needed.

Layouts of a name table entry: "copy" (same shape); "linear": a ``nn.Linear`` weight [out, in]
-> ``nn.Dense`` kernel [in, out], also accepting a 1x1-conv weight [out, in, 1, 1] (the same map
on NHWC pixels: SD 1.x's ``proj_in`` / ``proj_out`` and old autoencoder attention checkpoints);
"conv": ``nn.Conv2d`` weight [out, in, kh, kw] -> NHWC kernel [kh, kw, in, out].
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from flax import traverse_util
from safetensors import SafetensorError
from safetensors.numpy import load_file

from t2i_jax.convert import key_check
from t2i_jax.convert.hf_clip import CheckpointConversionError

WEIGHTS_NAME = "diffusion_pytorch_model.safetensors"
INDEX_NAME = "diffusion_pytorch_model.safetensors.index.json"

__all__ = [
  "CheckpointConversionError",
  "add_conv",
  "add_linear",
  "add_norm",
  "check_config",
  "check_shapes",
  "convert_state",
  "load_safetensors",
  "read_config",
]


def read_config(folder: str, class_name: str) -> dict[str, Any]:
  """config.json of a diffusers model folder, checked to be a ``class_name``."""
  path = os.path.join(folder, "config.json")
  if not os.path.isfile(path):
    raise CheckpointConversionError(f"{folder} is not a diffusers model folder: no config.json.")
  with open(path) as f:
    try:
      config = json.load(f)
    except json.JSONDecodeError as error:
      raise CheckpointConversionError(f"{path} is not valid JSON: {error}") from error
  found = config.get("_class_name", class_name)
  if found != class_name:
    raise CheckpointConversionError(f"{path} describes a {found}; expected a {class_name}.")
  return config


def check_config(
  config: Mapping[str, Any], defaults: Mapping[str, Any], required: Mapping[str, Any], what: str
) -> dict[str, Any]:
  """``defaults`` overlaid with ``config``, after checking every option is one we implement.

  Args:
    config: The config.json dict; keys starting with "_" (class name, version) are ignored.
    defaults: Every option the converter knows, with diffusers' default.
    required: Options whose value must equal the given one (a feature we do not implement).
    what: The model class, for the message.

  Raises:
    CheckpointConversionError: naming every unknown option and every unsupported value.
  """
  options = {k: v for k, v in config.items() if not k.startswith("_")}
  merged = dict(defaults) | options
  problems = [f"unknown option {k}={options[k]!r}" for k in sorted(set(options) - set(defaults))]
  for key, value in required.items():
    if merged[key] != value:
      problems.append(f"{key}={merged[key]!r} (only {value!r} is implemented)")
  if problems:
    raise CheckpointConversionError(f"Unsupported {what} config: " + "; ".join(problems) + ".")
  return merged


def add_conv(table: dict, hf: str, ours: str) -> None:
  table[f"{hf}.weight"] = (f"{ours}/kernel", "conv")
  table[f"{hf}.bias"] = (f"{ours}/bias", "copy")


def add_linear(table: dict, hf: str, ours: str, bias: bool = True) -> None:
  table[f"{hf}.weight"] = (f"{ours}/kernel", "linear")
  if bias:
    table[f"{hf}.bias"] = (f"{ours}/bias", "copy")


def add_norm(table: dict, hf: str, ours: str) -> None:
  """GroupNorm / LayerNorm: weight -> scale, bias -> bias."""
  table[f"{hf}.weight"] = (f"{ours}/scale", "copy")
  table[f"{hf}.bias"] = (f"{ours}/bias", "copy")


def _read(path: str) -> dict[str, np.ndarray]:
  try:
    return load_file(path)
  except SafetensorError as error:  # truncated / not a safetensors file
    raise CheckpointConversionError(f"Cannot read {path}: {error}") from error


def load_safetensors(folder: str) -> dict[str, np.ndarray]:
  """Every tensor of the folder's single or sharded diffusers safetensors checkpoint."""
  single, index = os.path.join(folder, WEIGHTS_NAME), os.path.join(folder, INDEX_NAME)
  if os.path.exists(single):
    return _read(single)
  if os.path.exists(index):  # sharded: weight_map lists each tensor's shard
    with open(index) as f:
      shards = sorted(set(json.load(f)["weight_map"].values()))
    state = {}
    for shard in shards:
      state.update(_read(os.path.join(folder, shard)))
    return state
  raise CheckpointConversionError(
    f"{folder} has no {WEIGHTS_NAME} (or {INDEX_NAME}); save the diffusers model with "
    "`save_pretrained(..., safe_serialization=True)`."
  )


def _hf_shapes(shape: tuple[int, ...], layout: str) -> tuple[tuple[int, ...], ...]:
  """The checkpoint shapes our param of ``shape`` may come from (first: the one to report)."""
  if layout == "linear":
    return (shape[::-1], (*shape[::-1], 1, 1))
  if layout == "conv":
    kh, kw, cin, cout = shape
    return ((cout, cin, kh, kw),)
  return (shape,)


def _to_ours(array: np.ndarray, layout: str) -> np.ndarray:
  if layout == "linear":
    return array.reshape(array.shape[:2]).T
  if layout == "conv":
    return array.transpose(2, 3, 1, 0)
  return array


def check_shapes(
  shapes: Mapping[str, tuple[int, ...]],
  table: Mapping[str, tuple[str, str]],
  expected: Mapping[str, jax.ShapeDtypeStruct],
  source: str,
  what: str,
) -> None:
  """Checks checkpoint tensor names and shapes against a name table, without any data.

  Args:
    shapes: {checkpoint name: shape}.
    table: {checkpoint name: (our '/'-joined param path, layout)}.
    expected: Flat {path: ShapeDtypeStruct} of the model's params (``jax.eval_shape`` of init).
    source: Where the tensors come from, for messages.
    what: The model and its kwargs, for messages.

  Raises:
    CheckpointConversionError: listing every missing, unexpected and mis-shaped checkpoint key
      (with expected and found shapes); or a table that does not cover the model's params once
      each (a converter bug rather than a checkpoint problem).
  """
  paths = [path for path, _ in table.values()]
  if sorted(paths) != sorted(expected):
    raise CheckpointConversionError(
      f"The name table does not cover {what}'s params once each: not produced "
      f"{sorted(set(expected) - set(paths))}; not in the model {sorted(set(paths) - set(expected))}."
    )
  problems = key_check.mismatches(
    shapes, table, lambda path, layout: _hf_shapes(tuple(expected[path].shape), layout)
  )
  if problems:
    raise CheckpointConversionError(key_check.report(source, what, problems))


def convert_state(
  state: Mapping[str, np.ndarray],
  table: Mapping[str, tuple[str, str]],
  expected: Mapping[str, jax.ShapeDtypeStruct],
  source: str,
  what: str,
) -> dict[str, Any]:
  """Places checkpoint tensors into a params tree of float32 numpy arrays.

  Arguments as ``check_shapes``, with ``state`` {checkpoint name: array}.

  Raises:
    CheckpointConversionError: any problem ``check_shapes`` finds.
  """
  check_shapes({k: tuple(v.shape) for k, v in state.items()}, table, expected, source, what)
  # After check_shapes every converted array has exactly the shape of its param.
  flat = {
    path: np.array(_to_ours(np.asarray(state[name], np.float32), layout), order="C")
    for name, (path, layout) in table.items()
  }
  return traverse_util.unflatten_dict(flat, sep="/")
