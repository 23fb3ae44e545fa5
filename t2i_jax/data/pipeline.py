"""One deterministic, resumable input pipeline for every random-access data source.

A source is anything with `__len__` and `__getitem__(i) -> dict` whose records hold at least
`image` (uint8[H, W, 3]), `caption` (str) and `label` (int); an optional
`get_batch(indices) -> dict` is used instead of per-record reads when present.

The order of examples is a pure function of `(seed, step)`: global example `k = step * B + j`
lives in epoch `k // N` at position `k % N` and reads record `perm_{seed, epoch}(k % N)`. Resuming at
step `s` therefore needs nothing but `s`, and every process computes its own slice of the global
batch without talking to the others.

Host side: `Batches` loads local numpy batches ahead on grain's threads, in step order.
Device side: `to_global_batch` assembles a global `jax.Array` from each process's slice and
`DevicePrefetch` keeps a few of those in flight.
"""

from __future__ import annotations

import atexit
import functools
import inspect
import queue
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent import futures
from typing import Any

import grain
import jax
import numpy as np

Batch = dict[str, np.ndarray]
_NO_END = 2**62  # steps are endless; grain wants a range end

# Numpy dtype kinds that cannot live on an accelerator (str, bytes, Python objects).
_HOST_ONLY_KINDS = frozenset("OUS")


@functools.lru_cache(maxsize=8)
def _epoch_permutation(num_records: int, seed: int, epoch: int) -> np.ndarray:
  """Returns the record order of one epoch: a permutation int64[num_records].

  Cached because consecutive steps almost always fall in the same epoch; a 1M-record permutation
  costs ~10 ms and 8 MB, so recomputing it per step would dominate small-batch loading. A few
  entries cover steps that straddle an epoch boundary and concurrent loader threads.
  """
  perm = np.random.default_rng([seed, epoch]).permutation(num_records).astype(np.int64)
  perm.flags.writeable = False  # Shared between callers through the cache.
  return perm


def local_batch_indices(
  step: int,
  *,
  global_batch_size: int,
  num_records: int,
  seed: int,
  process_index: int,
  process_count: int,
) -> np.ndarray:
  """Returns the record indices this process loads at `step`.

  Global example `k = step * global_batch_size + j` (j in [0, global_batch_size)) reads record
  `perm_{seed, k // num_records}(k % num_records)`: every epoch visits each record exactly once, in
  an order that differs between epochs and seeds. Process `p` takes the contiguous slice
  `j in [p * Bl, (p + 1) * Bl)`, `Bl = global_batch_size // process_count`, so concatenating the
  slices of all processes in process order gives the single-process global batch.

  Args:
    step: Training step, >= 0.
    global_batch_size: Examples per step over all processes (B).
    num_records: Length of the source (N), >= 1.
    seed: Shuffle seed.
    process_index: This process, in [0, process_count).
    process_count: Number of processes; must divide `global_batch_size`.

  Returns:
    int64[global_batch_size // process_count] record indices in [0, num_records).

  Raises:
    ValueError: On a non-positive batch size or record count, a negative step, a batch size not
      divisible by `process_count`, or an out-of-range `process_index`.
  """
  if global_batch_size < 1:
    raise ValueError(f"global_batch_size must be >= 1, got {global_batch_size}.")
  if process_count < 1 or global_batch_size % process_count:
    raise ValueError(
      f"global_batch_size={global_batch_size} must be divisible by process_count={process_count}."
    )
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index={process_index} not in [0, {process_count}).")
  if num_records < 1:
    raise ValueError(f"num_records must be >= 1, got {num_records}.")
  if step < 0:
    raise ValueError(f"step must be >= 0, got {step}.")
  local_size = global_batch_size // process_count
  start = step * global_batch_size + process_index * local_size
  k = np.arange(start, start + local_size, dtype=np.int64)
  epochs, positions = np.divmod(k, num_records)
  out = np.empty(local_size, dtype=np.int64)
  # A batch spans more than one epoch only at an epoch boundary (or when B > N).
  for epoch in np.unique(epochs):
    mask = epochs == epoch
    out[mask] = _epoch_permutation(num_records, seed, int(epoch))[positions[mask]]
  return out


def _to_column(values: Sequence[Any]) -> np.ndarray:
  """Stacks per-record values into one array with a leading batch axis.

  Strings and ragged/structured values (e.g. lists of attribute dicts) become object arrays of
  shape [n]; numpy builds nothing nested from them because each element is assigned separately.
  """
  if all(isinstance(v, np.ndarray | np.generic | int | float | bool) for v in values):
    return np.stack([np.asarray(v) for v in values])
  column = np.empty(len(values), dtype=object)
  for i, v in enumerate(values):
    column[i] = v
  return column


def _normalize_batch(batch: Mapping[str, Any], size: int) -> Batch:
  """Converts a source's batch dict to numpy arrays with the documented dtypes."""
  out = {}
  for key, value in batch.items():
    column = value if isinstance(value, np.ndarray) else _to_column(list(value))
    if len(column) != size:
      raise ValueError(f"Source returned {len(column)} values for {key!r}, expected {size}.")
    out[key] = column
  if "image" in out:
    out["image"] = np.asarray(out["image"], dtype=np.uint8)
  if "label" in out:
    out["label"] = np.asarray(out["label"], dtype=np.int32)
  if "caption" in out:
    out["caption"] = _to_column([str(c) for c in out["caption"]])
  return out


def to_global_batch(
  local_batch: Mapping[str, np.ndarray], sharding: jax.sharding.NamedSharding
) -> dict[str, jax.Array]:
  """Assembles global device arrays from every process's local slice of the batch.

  Args:
    local_batch: This process's batch; numeric arrays have leading dim `Bl` (e.g. image
      uint8[Bl, H, W, 3], label int32[Bl], tokens int32[Bl, L]).
    sharding: How to lay out each global array, e.g. `NamedSharding(mesh, P("data"))`, which
      splits dim 0 over the "data" axis and replicates the rest whatever the leaf's rank.

  Returns:
    The numeric entries as `jax.Array`s of global shape `[Bl * process_count, ...]` with
    `sharding`; str/object arrays (captions, attributes) are left out: they cannot live on device.
  """
  return {
    key: jax.make_array_from_process_local_data(sharding, value)
    for key, value in local_batch.items()
    if np.asarray(value).dtype.kind not in _HOST_ONLY_KINDS
  }


class Batches:
  """Endless host-side iterator of this process's batches, for steps `start_step, +1, ...`.

  Each step is loaded by `get(step)`, a pure function of the step, so the yielded sequence is the
  same whatever the threading and resuming at step `s` reproduces the tail of an uninterrupted run.
  `prefetch` steps are loaded ahead by a grain `MapDataset` over steps; sources without `get_batch` also read the
  records of one step in parallel on a record pool of `num_threads` threads (JPEG decoding and PIL
  resizing release the GIL, so threads give real speed-ups there).

  Yields:
    dict with `image` uint8[Bl, H, W, 3], `label` int32[Bl], `caption` object[Bl] of str and any
    other source fields as arrays with leading dim Bl (ragged ones as object arrays), where
    `Bl = global_batch_size // process_count`; then passed through `preprocess` if given.
  """

  def __init__(
    self,
    source: Any,
    *,
    global_batch_size: int,
    seed: int,
    start_step: int = 0,
    process_index: int = 0,
    process_count: int = 1,
    preprocess: Callable[[Batch], Batch] | None = None,
    num_threads: int = 4,
    prefetch: int = 2,
  ):
    """Initializes the iterator; loading starts on the first `next()`.

    Args:
      source: Random-access source (`__len__`, `__getitem__`, optionally `get_batch`).
      global_batch_size: Examples per step over all processes.
      seed: Shuffle seed (see `local_batch_indices`).
      start_step: First step to yield, e.g. the restored training step.
      process_index: This process, usually `jax.process_index()`.
      process_count: Number of processes, usually `jax.process_count()`.
      preprocess: Host-side `batch -> batch` function, e.g. caption tokenization.
      num_threads: Record-reading threads per step for sources without `get_batch`; <= 1 reads
        sequentially.
      prefetch: Steps loaded ahead of the consumer; 0 loads synchronously in `next()`.
    """
    if prefetch < 0:
      raise ValueError(f"prefetch must be >= 0, got {prefetch}.")
    self._source = source
    self._num_records = len(source)
    self._index_kwargs = dict(
      global_batch_size=global_batch_size,
      num_records=self._num_records,
      seed=seed,
      process_index=process_index,
      process_count=process_count,
    )
    self.indices(start_step)  # Validates the arguments now rather than on a worker thread.
    self._preprocess = preprocess
    get_batch = getattr(source, "get_batch", None)
    self._draws_per_step = get_batch is not None and (
      "draw_seed" in inspect.signature(get_batch).parameters
    )
    self._next_step = start_step
    self._closed = False
    self._record_pool = None
    if num_threads > 1 and not hasattr(source, "get_batch"):
      self._record_pool = futures.ThreadPoolExecutor(num_threads, thread_name_prefix="t2i-records")
    # grain loads whole steps ahead on `prefetch` threads and yields them in step order.
    self._steps = None
    if prefetch > 0:
      steps = grain.MapDataset.range(start_step, _NO_END).map(self.get)
      self._steps = iter(
        steps.to_iter_dataset(
          grain.ReadOptions(num_threads=prefetch, prefetch_buffer_size=prefetch)
        )
      )

  @property
  def local_batch_size(self) -> int:
    """Examples per step on this process."""
    return self._index_kwargs["global_batch_size"] // self._index_kwargs["process_count"]

  @property
  def next_step(self) -> int:
    """The step the next `next()` call returns."""
    return self._next_step

  def indices(self, step: int) -> np.ndarray:
    """Returns int64[Bl]: the record indices of this process's batch at `step`."""
    return local_batch_indices(step, **self._index_kwargs)

  def get(self, step: int) -> Batch:
    """Loads this process's batch of `step` synchronously (same result as iteration gives)."""
    indices = self.indices(step)
    if self._draws_per_step:
      # e.g. CUB: a fresh caption (and crop) per step, still a pure function of the step.
      raw = self._source.get_batch(indices, draw_seed=step)
    elif hasattr(self._source, "get_batch"):
      raw = self._source.get_batch(indices)
    else:
      keys = [int(i) for i in indices]
      if self._record_pool is None:
        records = [self._source[i] for i in keys]
      else:
        records = list(self._record_pool.map(self._source.__getitem__, keys))
      raw = {key: [r[key] for r in records] for key in records[0]}
    batch = _normalize_batch(raw, len(indices))
    if self._preprocess is not None:
      batch = self._preprocess(batch)
    return batch

  def __iter__(self) -> Batches:
    return self

  def __next__(self) -> Batch:
    if self._closed:
      raise StopIteration
    batch = self.get(self._next_step) if self._steps is None else next(self._steps)
    self._next_step += 1
    return batch

  def close(self) -> None:
    """Cancels queued loads and stops the threads (waits for loads already running)."""
    if self._closed:
      return
    self._closed = True
    # Steps first: a running step may still submit to the record pool.
    if self._steps is not None:
      self._steps.close()
    if self._record_pool is not None:
      self._record_pool.shutdown(wait=True, cancel_futures=True)

  def __enter__(self) -> Batches:
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()


class _PrefetchWorker:
  """The background half of `DevicePrefetch`: holds no reference to it, so it can be collected."""

  def __init__(self, iterator: Iterator[Batch], sharding: jax.sharding.NamedSharding, size: int):
    self.queue: queue.Queue = queue.Queue(maxsize=size)
    self.stop = threading.Event()
    self._iterator = iterator
    self._sharding = sharding
    # Daemon, so a consumer that forgets close() cannot keep the interpreter alive; the atexit hook
    # below still stops it before finalization.
    self.thread = threading.Thread(target=self._run, name="t2i-device-prefetch", daemon=True)

  def _put(self, item: tuple[str, Any]) -> bool:
    """Blocks until `item` is queued or `stop` is set; returns whether it was queued."""
    while not self.stop.is_set():
      try:
        self.queue.put(item, timeout=0.1)
        return True
      except queue.Full:
        pass
    return False

  def _run(self) -> None:
    try:
      for local_batch in self._iterator:
        if self.stop.is_set() or not self._put(
          ("batch", to_global_batch(local_batch, self._sharding))
        ):
          return
    except BaseException as e:  # Handed to the consumer, which re-raises it.
      self._put(("error", e))
      return
    finally:
      _LIVE_WORKERS.discard(self)
    self._put(("end", None))

  def start(self) -> None:
    _LIVE_WORKERS.add(self)
    self.thread.start()

  def shutdown(self, timeout: float) -> None:
    self.stop.set()
    # Free queue slots so a worker blocked in put() sees the stop flag promptly.
    while True:
      try:
        self.queue.get_nowait()
      except queue.Empty:
        break
    if self.thread.is_alive() and self.thread is not threading.current_thread():
      self.thread.join(timeout)


_LIVE_WORKERS: set[_PrefetchWorker] = set()


@atexit.register
def _shutdown_live_workers() -> None:
  """Stops prefetch threads nobody closed while the interpreter is still intact.

  Finalization kills daemon threads when they next take the GIL; one that is inside a JAX transfer
  then unwinds through C++ frames and aborts the process ("FATAL: exception not rethrown").
  Registered after `import jax`, so it runs before JAX's own atexit cleanup.
  """
  for worker in list(_LIVE_WORKERS):
    worker.shutdown(timeout=10.0)


class DevicePrefetch:
  """Moves local host batches to global device arrays on a background thread, in order.

  At most `size` device batches wait in the queue (plus one being transferred), which overlaps
  host-to-device copies with the training step. An exception raised by the wrapped iterator or by
  the transfer is re-raised by the `next()` call that would have returned that batch.
  """

  def __init__(
    self,
    iterator: Iterator[Batch],
    sharding: jax.sharding.NamedSharding,
    *,
    size: int = 2,
  ):
    """Starts the background thread.

    Args:
      iterator: Local numpy batches, e.g. a `Batches`.
      sharding: Passed to `to_global_batch`, e.g. `NamedSharding(mesh, P("data"))`.
      size: Number of ready device batches to keep, >= 1.
    """
    if size < 1:
      raise ValueError(f"size must be >= 1, got {size}.")
    self._finished = False
    self._worker = _PrefetchWorker(iter(iterator), sharding, size)
    self._worker.start()

  def __iter__(self) -> DevicePrefetch:
    return self

  def __next__(self) -> dict[str, jax.Array]:
    if self._finished:
      raise StopIteration
    kind, value = self._worker.queue.get()
    if kind == "batch":
      return value
    self._finished = True
    if kind == "error":
      raise value
    raise StopIteration

  def close(self, timeout: float = 10.0) -> None:
    """Stops the background thread (the wrapped iterator is not closed)."""
    self._finished = True
    self._worker.shutdown(timeout)

  def __del__(self) -> None:
    # No join here: __del__ may run on any thread, at any time.
    worker = getattr(self, "_worker", None)
    if worker is not None:
      worker.stop.set()

  def __enter__(self) -> DevicePrefetch:
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()
