"""Tests for t2i_jax.convert.torch_archive: PyTorch zip and legacy files read without torch.

The files are written here by a pickler that imitates torch.save (no torch needed), and by
torch.save itself when torch is installed.
"""

import importlib.util
import io
import pickle
import zipfile
from collections import OrderedDict

import numpy as np
import pytest

from t2i_jax.convert import torch_archive

HAS_TORCH = importlib.util.find_spec("torch") is not None


class _Global:
  """Pickles as a reference to `module.name` (e.g. torch._utils._rebuild_tensor_v2)."""

  def __init__(self, module, name):
    self.module, self.name = module, name

  def __reduce__(self):
    return self.name

  def __call__(self, *args):  # pickle only writes callables as reduce functions
    raise TypeError(f"{self.module}.{self.name} stand-in: pickled, never called")


class _Tensor:
  """Pickles like a torch tensor: _rebuild_tensor_v2(storage, offset, size, stride, ...)."""

  def __init__(self, storage, offset, size, stride):
    self.storage, self.args = storage, (offset, tuple(size), tuple(stride))

  def __reduce__(self):
    rebuild = _Global("torch._utils", "_rebuild_tensor_v2")
    return rebuild, (self.storage, *self.args, False, OrderedDict())


class _Storage:
  def __init__(self, key, array):
    self.key, self.array = key, array


class _TorchLikePickler(pickle._Pickler):
  """Writes torch.save's pickle: storages as persistent ids, torch globals by name."""

  def persistent_id(self, obj):
    if isinstance(obj, _Storage):
      kind = {np.float32: "FloatStorage", np.int64: "LongStorage"}[obj.array.dtype.type]
      return ("storage", _Global("torch", kind), obj.key, "cpu", obj.array.size)
    return None

  def save_global(self, obj, name=None):
    if isinstance(obj, _Global):
      self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
      return
    super().save_global(obj, name)


def _pickle(obj) -> bytes:
  buffer = io.BytesIO()
  _TorchLikePickler(buffer, protocol=2).dump(obj)
  return buffer.getvalue()


def _torch_like_state():
  """(state dict of _Tensor views over two storages, the arrays they should load as)."""
  floats = np.arange(24, dtype=np.float32)
  longs = np.array([7, 8, 9], np.int64)
  storages = [_Storage("0", floats), _Storage("1", longs)]
  state = OrderedDict(
    matrix=_Tensor(storages[0], 0, (4, 6), (6, 1)),
    transposed=_Tensor(storages[0], 0, (6, 4), (1, 6)),  # a non-contiguous view
    offset=_Tensor(storages[0], 20, (2, 2), (2, 1)),
    scalar=_Tensor(storages[1], 2, (), ()),
  )
  matrix = floats.reshape(4, 6)
  expected = dict(matrix=matrix, transposed=matrix.T, offset=floats[20:24].reshape(2, 2), scalar=9)
  return state, storages, expected


def test_reader_loads_zip_and_legacy_files_written_without_torch(tmp_path):
  state, storages, expected = _torch_like_state()
  zipped = tmp_path / "zip.pth"
  with zipfile.ZipFile(zipped, "w") as archive:
    archive.writestr("zip/data.pkl", _pickle(state))
    archive.writestr("zip/byteorder", "little")
    for storage in storages:
      archive.writestr(f"zip/data/{storage.key}", storage.array.tobytes())
  legacy = tmp_path / "legacy.pth"
  with open(legacy, "wb") as f:
    for header in (0x1950A86A20F9469CFC6C, 1001, {"little_endian": True}):
      pickle.dump(header, f, protocol=2)
    f.write(_pickle(state))
    pickle.dump([s.key for s in storages], f, protocol=2)
    for storage in storages:
      f.write(np.int64(storage.array.size).tobytes() + storage.array.tobytes())
  for path in (zipped, legacy):
    loaded = torch_archive.load(path)
    assert list(loaded) == list(expected)
    for name, value in expected.items():
      np.testing.assert_array_equal(loaded[name], value)
      assert loaded[name].flags.c_contiguous


def test_reader_refuses_other_globals_and_bad_files(tmp_path):
  evil = tmp_path / "evil.pth"
  with zipfile.ZipFile(evil, "w") as archive:
    archive.writestr("evil/data.pkl", _pickle(_Global("os", "system")))
  with pytest.raises(torch_archive.TorchArchiveError, match="Refusing to load global os.system"):
    torch_archive.load(evil)
  junk = tmp_path / "junk.pth"
  junk.write_bytes(b"not a checkpoint")
  with pytest.raises(torch_archive.TorchArchiveError, match="not a PyTorch checkpoint"):
    torch_archive.load(junk)


@pytest.mark.skipif(not HAS_TORCH, reason="torch is not installed")
def test_reader_matches_torch_save_in_both_formats(tmp_path):
  import torch

  base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
  state = {
    "w": base,
    "t": base.t(),
    "slice": base[1:, 2:5],
    "half": torch.linspace(-2, 2, 5, dtype=torch.float16),
    "count": torch.tensor(3, dtype=torch.int64),
    "param": torch.nn.Parameter(torch.ones(2, 3)),
  }
  for legacy in (False, True):
    path = tmp_path / f"state_{legacy}.pth"
    torch.save(state, path, _use_new_zipfile_serialization=not legacy)
    loaded = torch_archive.load(path)
    assert set(loaded) == set(state)
    for name, tensor in state.items():
      np.testing.assert_array_equal(loaded[name], tensor.detach().numpy())
      assert loaded[name].dtype == tensor.detach().numpy().dtype
