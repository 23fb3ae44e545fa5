"""Reads PyTorch checkpoints without torch: tensors become numpy arrays.

Three layouts, all pickles whose persistent ids name raw storages:
  * zip (``torch.save`` since 1.6, and ``torch.jit.save``): ``<root>/data.pkl`` plus one file per
    storage under ``<root>/data/<key>``;
  * legacy (``torch.save(..., _use_new_zipfile_serialization=False)``, the default before 1.6): a
    stream of pickles (magic number, protocol version, system info, the object, the storage keys)
    followed by each storage as an int64 element count and its raw bytes;
  * TorchScript (``torch.jit.save``): a zip whose data.pkl pickles the module tree. Each scripted
    module becomes a ``ScriptObject`` holding its attributes (tensors, ints, submodules).

Only the classes a checkpoint needs are resolved (tensor rebuilders, storage types,
``OrderedDict``, TorchScript module classes); any other global raises, so loading a file never runs
code from it. Tensors are rebuilt as C-contiguous numpy arrays in the stored dtype.
"""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from collections import OrderedDict
from typing import Any

import numpy as np

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001

# torch.<Name>Storage -> little-endian numpy dtype of its elements.
_STORAGE_DTYPES = {
  "DoubleStorage": np.dtype("<f8"),
  "FloatStorage": np.dtype("<f4"),
  "HalfStorage": np.dtype("<f2"),
  "LongStorage": np.dtype("<i8"),
  "IntStorage": np.dtype("<i4"),
  "ShortStorage": np.dtype("<i2"),
  "CharStorage": np.dtype("i1"),
  "ByteStorage": np.dtype("u1"),
  "BoolStorage": np.dtype("?"),
}


class TorchArchiveError(ValueError):
  """A file is not a PyTorch checkpoint this reader understands."""


class ScriptObject:
  """One TorchScript module or object: its pickled attributes, and its TorchScript class name."""

  qualified_name = ""

  def __setstate__(self, state: dict[str, Any]) -> None:
    self.__dict__.update(state)

  def __repr__(self) -> str:
    return f"ScriptObject({self.qualified_name}, {sorted(self.__dict__)})"


class _StorageType:
  """Stands in for ``torch.FloatStorage`` etc. in persistent ids: just the element dtype."""

  def __init__(self, name: str):
    self.name = name
    self.dtype = _STORAGE_DTYPES[name]


def _rebuild_tensor(storage, storage_offset, size, stride, *unused):
  """``torch._utils._rebuild_tensor_v2``: a strided view of a 1-D storage, copied."""
  del unused  # requires_grad, backward hooks, metadata
  size, stride = tuple(size), tuple(stride)
  if not size:
    return np.array(storage[storage_offset], dtype=storage.dtype)
  # An element past the end of the storage would make as_strided read garbage.
  last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
  if min(size) > 0 and last >= storage.size:
    raise TorchArchiveError(f"Tensor {size} (stride {stride}) overruns its storage.")
  if min(size) == 0:
    return np.zeros(size, storage.dtype)
  item = storage.itemsize
  view = np.lib.stride_tricks.as_strided(
    storage[storage_offset:], size, tuple(s * item for s in stride), writeable=False
  )
  return np.ascontiguousarray(view)


def _rebuild_parameter(data, *unused):
  """``torch._utils._rebuild_parameter(_with_state)``: a Parameter is its data here."""
  del unused
  return data


_TORCH_GLOBALS = {
  ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
  ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
  ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
  ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
  ("collections", "OrderedDict"): OrderedDict,
  # TorchScript wraps typed list attributes (e.g. List[int] paddings) and type-tagged containers.
  ("torch.jit._pickle", "build_intlist"): list,
  ("torch.jit._pickle", "build_doublelist"): list,
  ("torch.jit._pickle", "build_boollist"): list,
  ("torch.jit._pickle", "build_tensorlist"): list,
  ("torch.jit._pickle", "restore_type_tag"): lambda value, type_str: value,
}


class _Unpickler(pickle.Unpickler):
  """Resolves torch globals to numpy stand-ins; storages come from `load_storage(key, type)`."""

  def __init__(self, file, load_storage):
    super().__init__(file)
    self._load_storage = load_storage
    self._script_classes: dict[str, type] = {}

  def find_class(self, module: str, name: str):
    if (module, name) in _TORCH_GLOBALS:
      return _TORCH_GLOBALS[module, name]
    if module == "torch" and name in _STORAGE_DTYPES:
      return _StorageType(name)
    if module == "__torch__" or module.startswith("__torch__."):
      qualified = f"{module}.{name}"
      if qualified not in self._script_classes:
        self._script_classes[qualified] = type(name, (ScriptObject,), {"qualified_name": qualified})
      return self._script_classes[qualified]
    raise TorchArchiveError(f"Refusing to load global {module}.{name} from a checkpoint.")

  def persistent_load(self, pid):
    if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
      raise TorchArchiveError(f"Unsupported persistent id {pid!r}.")
    storage_type, key, _, numel = pid[1:5]
    if not isinstance(storage_type, _StorageType):
      raise TorchArchiveError(f"Unsupported storage type {storage_type!r}.")
    if len(pid) > 5 and pid[5] is not None:
      raise TorchArchiveError("Storage views (pre-1.0 torch.save) are not supported.")
    return self._load_storage(str(key), storage_type.dtype, int(numel))


def _load_zip(path: str) -> Any:
  with zipfile.ZipFile(path) as archive:
    pickles = [n for n in archive.namelist() if n.endswith("data.pkl") and n.count("/") == 1]
    if len(pickles) != 1:
      raise TorchArchiveError(f"{path} is a zip without exactly one <root>/data.pkl: {pickles}.")
    root = pickles[0][: -len("data.pkl")]
    names = set(archive.namelist())
    byteorder = root + "byteorder"
    if byteorder in names and archive.read(byteorder).strip() not in (b"little", b""):
      raise TorchArchiveError(f"{path} stores big-endian tensors.")
    storages: dict[str, np.ndarray] = {}

    def load_storage(key: str, dtype: np.dtype, numel: int) -> np.ndarray:
      if key not in storages:
        member = f"{root}data/{key}"
        if member not in names:
          raise TorchArchiveError(f"{path} lacks storage {member}.")
        raw = archive.read(member)
        if len(raw) < numel * dtype.itemsize:
          raise TorchArchiveError(f"{path}: {member} holds {len(raw)} bytes, need {numel}.")
        storages[key] = np.frombuffer(raw, dtype, count=numel)
      return storages[key]

    return _Unpickler(io.BytesIO(archive.read(pickles[0])), load_storage).load()


def _load_legacy(path: str) -> Any:
  with open(path, "rb") as f:
    try:
      magic = pickle.load(f)
      protocol = pickle.load(f)
      pickle.load(f)  # sys_info: sizes and endianness of the writer
    except Exception as error:
      raise TorchArchiveError(f"{path} is not a PyTorch checkpoint: {error}") from error
    if magic != _LEGACY_MAGIC or protocol != _LEGACY_PROTOCOL:
      raise TorchArchiveError(f"{path} is not a PyTorch checkpoint (bad magic number/protocol).")
    start = f.tell()
    # The storages' bytes follow the object: a first pass only learns each storage's size.
    specs: dict[str, tuple[np.dtype, int]] = {}

    def record(key: str, dtype: np.dtype, numel: int) -> np.ndarray:
      specs[key] = (dtype, numel)
      return np.zeros(numel, dtype)

    _Unpickler(f, record).load()
    storages = {}
    for key in map(str, pickle.load(f)):
      dtype, numel = specs[key]
      stored = np.frombuffer(f.read(8), "<i8")
      raw = f.read(numel * dtype.itemsize)
      if stored.size != 1 or int(stored[0]) != numel or len(raw) != numel * dtype.itemsize:
        raise TorchArchiveError(f"{path}: storage {key} is truncated or the wrong size.")
      storages[key] = np.frombuffer(raw, dtype)
    f.seek(start)
    return _Unpickler(f, lambda key, dtype, numel: storages[key]).load()


def load(path: str | os.PathLike) -> Any:
  """Unpickles a PyTorch checkpoint (zip, legacy or TorchScript) with numpy arrays for tensors.

  Returns:
    What was saved: e.g. a state dict {name: ndarray}, or for TorchScript the root
    ``ScriptObject``.

  Raises:
    FileNotFoundError: no such file.
    TorchArchiveError: not a PyTorch checkpoint, or it needs a global this reader does not allow.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(path)
  if zipfile.is_zipfile(path):
    return _load_zip(path)
  return _load_legacy(path)


def named_tensors(obj: Any, prefix: str = "") -> dict[str, np.ndarray]:
  """Every array inside `obj` under its dotted name, as ``Module.state_dict()`` names them.

  Walks dicts and ``ScriptObject`` attributes; other values (ints, lists, None) are skipped.
  """
  if isinstance(obj, np.ndarray):
    return {prefix: obj}
  if isinstance(obj, ScriptObject):
    items = obj.__dict__.items()
  elif isinstance(obj, dict):
    items = obj.items()
  else:
    return {}
  out = {}
  for name, value in items:
    out.update(named_tensors(value, f"{prefix}.{name}" if prefix else str(name)))
  return out
