"""Tests for t2i_jax.data.pipeline and t2i_jax.data.sources."""

import os
import subprocess
import sys
import textwrap
import threading
import time
import types

import jax
import ml_collections
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from t2i_jax.data import pipeline, sources

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class FakeSource:
  """Record i: an 4x4 image filled with i % 256, caption "record i", label i."""

  def __init__(self, num_records=37, fail_at=None, delay=0.0):
    self.num_records = num_records
    self.fail_at = fail_at
    self.delay = delay

  def __len__(self):
    return self.num_records

  def __getitem__(self, index):
    if index == self.fail_at:
      raise RuntimeError(f"broken record {index}")
    if self.delay:
      # Random sleeps shuffle the completion order of the loader threads.
      time.sleep(self.delay * np.random.default_rng(index).random())
    return {
      "image": np.full((4, 4, 3), index % 256, dtype=np.uint8),
      "caption": f"record {index}",
      "label": index,
    }


class FakeBatchSource(FakeSource):
  """Same records, plus a `get_batch` that Batches must prefer."""

  def __init__(self, **kwargs):
    super().__init__(**kwargs)
    self.get_batch_calls = 0

  def get_batch(self, indices):
    self.get_batch_calls += 1
    records = [self[int(i)] for i in indices]
    return {
      "image": np.stack([r["image"] for r in records]),
      "caption": [r["caption"] for r in records],
      "label": np.array([r["label"] for r in records], dtype=np.int32),
    }


def _indices(step, batch=8, n=37, seed=0, p=0, count=1):
  return pipeline.local_batch_indices(
    step,
    global_batch_size=batch,
    num_records=n,
    seed=seed,
    process_index=p,
    process_count=count,
  )


def test_local_batch_indices_is_deterministic():
  first = _indices(3)
  assert first.dtype == np.int64 and first.shape == (8,)
  pipeline._epoch_permutation.cache_clear()  # Must not depend on what the cache holds.
  np.testing.assert_array_equal(first, _indices(3))


@pytest.mark.parametrize("count", [2, 4])
def test_process_slices_concatenate_to_global_batch(count):
  # n=37 with batch 8: steps 4 and 9 straddle epoch boundaries.
  for step in range(12):
    parts = [_indices(step, p=p, count=count) for p in range(count)]
    assert all(part.shape == (8 // count,) for part in parts)
    np.testing.assert_array_equal(np.concatenate(parts), _indices(step))


@pytest.mark.parametrize("n", [40, 37, 5])
def test_each_epoch_visits_every_record_once(n):
  batch = 8
  num_epochs = 3
  steps = -(-n * num_epochs // batch)
  stream = np.concatenate([_indices(s, batch=batch, n=n) for s in range(steps)])
  epochs = stream[: n * num_epochs].reshape(num_epochs, n)
  for order in epochs:
    np.testing.assert_array_equal(np.sort(order), np.arange(n))
  assert not np.array_equal(epochs[0], epochs[1])  # Reshuffled each epoch.


def test_seeds_give_different_orders():
  assert not np.array_equal(_indices(0, seed=0), _indices(0, seed=1))


def test_large_source_is_fast():
  start = time.perf_counter()
  for step in range(100):
    indices = _indices(step, batch=64, n=1_000_000, seed=7)
  assert time.perf_counter() - start < 2.0
  assert indices.min() >= 0 and indices.max() < 1_000_000


@pytest.mark.parametrize(
  "kwargs",
  [
    dict(batch=0),
    dict(batch=6, count=4),
    dict(p=2, count=2),
    dict(n=0),
    dict(step=-1),
  ],
)
def test_local_batch_indices_rejects_bad_arguments(kwargs):
  step = kwargs.pop("step", 0)
  with pytest.raises(ValueError):
    _indices(step, **kwargs)


def _assert_batches_equal(a, b):
  assert a.keys() == b.keys()
  for key in a:
    np.testing.assert_array_equal(a[key], b[key])


@pytest.mark.parametrize("source_cls", [FakeSource, FakeBatchSource])
def test_batches_resume_matches_uninterrupted_run(source_cls):
  source = source_cls(delay=0.002)
  kwargs = dict(global_batch_size=8, seed=3, num_threads=4, prefetch=3)
  with pipeline.Batches(source, **kwargs) as full:
    run = [next(full) for _ in range(6)]
  with pipeline.Batches(source, start_step=3, **kwargs) as resumed:
    assert resumed.next_step == 3
    tail = [next(resumed) for _ in range(3)]
  for a, b in zip(run[3:], tail, strict=True):
    _assert_batches_equal(a, b)
  # The threaded iterator yields exactly what synchronous loading gives, step by step.
  with pipeline.Batches(source, prefetch=0, num_threads=0, global_batch_size=8, seed=3) as sync:
    for step, batch in enumerate(run):
      _assert_batches_equal(batch, sync.get(step))
  assert run[0]["image"].dtype == np.uint8 and run[0]["image"].shape == (8, 4, 4, 3)
  assert run[0]["label"].dtype == np.int32
  assert run[0]["caption"].dtype == object
  np.testing.assert_array_equal(run[2]["label"], _indices(2, seed=3))
  assert list(run[2]["caption"]) == [f"record {i}" for i in _indices(2, seed=3)]
  if source_cls is FakeBatchSource:
    assert source.get_batch_calls > 0


def test_batches_process_slice_and_preprocess():
  def preprocess(batch):
    batch["tokens"] = np.stack([[len(c), 1] for c in batch["caption"]]).astype(np.int32)
    del batch["caption"]
    return batch

  with pipeline.Batches(
    FakeSource(),
    global_batch_size=8,
    seed=0,
    start_step=5,
    process_index=1,
    process_count=2,
    preprocess=preprocess,
  ) as batches:
    batch = next(batches)
  assert batches.local_batch_size == 4
  assert set(batch) == {"image", "label", "tokens"}
  assert batch["tokens"].shape == (4, 2) and batch["tokens"].dtype == np.int32
  np.testing.assert_array_equal(batch["label"], _indices(5, p=1, count=2))


def test_batches_raise_source_errors_and_close_cleanly():
  # Epoch 0 is steps 0 and 1: the broken record is read by step 1 only.
  source = FakeSource(num_records=16, fail_at=int(_indices(1, n=16)[0]))
  batches = pipeline.Batches(source, global_batch_size=8, seed=0, prefetch=2)
  next(batches)
  with pytest.raises(RuntimeError, match="broken record"):
    next(batches)
  batches.close()
  with pytest.raises(StopIteration):
    next(batches)
  alive = [t.name for t in threading.enumerate() if t.name.startswith("t2i-")]
  assert not alive


def _single_device_sharding():
  mesh = Mesh(np.array(jax.devices()[:1]), ("data",))
  return NamedSharding(mesh, P("data"))


def test_to_global_batch_single_device():
  sharding = _single_device_sharding()
  with pipeline.Batches(FakeSource(), global_batch_size=8, seed=0, prefetch=0) as batches:
    local = batches.get(0)
  local["tokens"] = np.arange(8 * 5, dtype=np.int32).reshape(8, 5)
  out = pipeline.to_global_batch(local, sharding)
  assert set(out) == {"image", "label", "tokens"}  # The caption strings stay on the host.
  for key, value in out.items():
    assert isinstance(value, jax.Array)
    assert value.shape == local[key].shape and value.dtype == local[key].dtype
    assert value.sharding.is_equivalent_to(sharding, value.ndim)
    np.testing.assert_array_equal(np.asarray(value), local[key])


def test_device_prefetch_keeps_order():
  local = [{"x": np.full((2, 3), i, dtype=np.int32), "s": np.array(["a", "b"])} for i in range(7)]
  with pipeline.DevicePrefetch(iter(local), _single_device_sharding(), size=2) as prefetch:
    out = [int(batch["x"][0, 0]) for batch in prefetch]
  assert out == list(range(7))


def test_device_prefetch_propagates_errors():
  def failing():
    yield {"x": np.zeros((2,), np.float32)}
    raise ValueError("loader failed")

  prefetch = pipeline.DevicePrefetch(failing(), _single_device_sharding())
  assert next(prefetch)["x"].shape == (2,)
  with pytest.raises(ValueError, match="loader failed"):
    next(prefetch)
  with pytest.raises(StopIteration):
    next(prefetch)
  prefetch.close()


def test_device_prefetch_close_stops_an_endless_producer():
  batches = pipeline.Batches(FakeSource(), global_batch_size=8, seed=0)
  prefetch = pipeline.DevicePrefetch(batches, _single_device_sharding(), size=2)
  assert next(prefetch)["image"].shape == (8, 4, 4, 3)
  prefetch.close()
  batches.close()
  assert not prefetch._worker.thread.is_alive()


@pytest.mark.parametrize(
  "config",
  [
    {"name": "mnist"},
    ml_collections.ConfigDict({"name": "mnist"}),
    types.SimpleNamespace(name="mnist"),
  ],
)
def test_make_source_rejects_unknown_names(config):
  with pytest.raises(ValueError, match="celeba.*shapes"):
    sources.make_source(config, "train")


def test_config_field_reads_every_config_kind():
  for config in (
    {"resolution": 32},
    ml_collections.ConfigDict({"resolution": 32}),
    types.SimpleNamespace(resolution=32),
  ):
    assert sources.config_field(config, "resolution") == 32
    assert sources.config_field(config, "jitter", True) is True
    with pytest.raises(KeyError):
      sources.config_field(config, "name")


def test_pipeline_over_captioned_shapes():
  shapes = pytest.importorskip("t2i_jax.data.shapes")
  config = ml_collections.ConfigDict(
    dict(
      name="shapes",
      resolution=32,
      max_objects=2,
      heldout_pairs=[list(pair) for pair in shapes.DEFAULT_HELDOUT_PAIRS],
      seed=1,
      data_dir=None,
      jitter=True,
      num_examples=50,
    )
  )
  source = sources.make_source(config, "train")
  assert isinstance(source, shapes.CaptionedShapes) and len(source) == 50
  with pipeline.Batches(source, global_batch_size=4, seed=0, start_step=12) as batches:
    batch = next(batches)  # Step 12 straddles the first epoch boundary (48 < 50 < 52).
  assert batch["image"].shape == (4, 32, 32, 3) and batch["image"].dtype == np.uint8
  assert batch["label"].dtype == np.int32 and batch["caption"].dtype == object
  for row, index in enumerate(_indices(12, batch=4, n=50)):
    record = source[int(index)]
    np.testing.assert_array_equal(batch["image"][row], record["image"])
    assert batch["caption"][row] == record["caption"]
    assert batch["label"][row] == record["label"]
    assert batch["attributes"][row] == record["attributes"]


_EIGHT_DEVICE_SCRIPT = textwrap.dedent(
  """
  import jax
  import numpy as np
  from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
  from t2i_jax.data import pipeline

  assert jax.device_count() == 8, jax.devices()
  sharding = NamedSharding(Mesh(np.array(jax.devices()), ("data",)), P("data"))
  rng = np.random.default_rng(0)
  local = {
    "image": rng.integers(0, 256, (16, 4, 4, 3), dtype=np.uint8),
    "label": np.arange(16, dtype=np.int32),
    "tokens": rng.integers(0, 100, (16, 7)).astype(np.int32),
    "caption": np.array(["c"] * 16, dtype=object),
  }
  out = pipeline.to_global_batch(local, sharding)
  assert set(out) == {"image", "label", "tokens"}
  for key, value in out.items():
    assert value.shape == local[key].shape, (key, value.shape)
    assert len(value.addressable_shards) == 8
    for shard in value.addressable_shards:
      assert shard.data.shape[0] == 2
      np.testing.assert_array_equal(np.asarray(shard.data), local[key][shard.index])

  # Left running on purpose: the interpreter must still exit promptly.
  class Source:
    def __len__(self):
      return 100
    def __getitem__(self, i):
      return {"image": np.zeros((4, 4, 3), np.uint8), "caption": "", "label": i}
  batches = pipeline.Batches(Source(), global_batch_size=16, seed=0)
  prefetch = pipeline.DevicePrefetch(batches, sharding)
  assert next(prefetch)["image"].shape == (16, 4, 4, 3)
  print("OK")
  """
)


def test_to_global_batch_on_eight_devices():
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
  env["PYTHONPATH"] = REPO_ROOT + os.pathsep + env.get("PYTHONPATH", "")
  result = subprocess.run(
    [sys.executable, "-c", _EIGHT_DEVICE_SCRIPT],
    env=env,
    capture_output=True,
    text=True,
    timeout=120,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  assert "OK" in result.stdout
