"""The real side of the sample metrics: N fixed eval images and their captions, read in batches,
and their Inception features cached on disk.

The N records are the first N of a permutation of the eval split seeded by `config.eval.seed`, so
every evaluation of every run on the same data compares against the same images and generates for
the same captions. The cache file (`.npz`: mu, sigma, count as `t2i_jax.eval.fid.save_stats`
writes them, plus features [N, 2048] for KID / precision-recall and the N captions) is keyed by
the data config, the split, N, the seed and a fingerprint of the Inception weights.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import jax
import numpy as np

from t2i_jax.data import shapes
from t2i_jax.eval import fid

# Data-config fields that change only how fast batches are built, not which images they hold.
_RUNTIME_FIELDS = ("batch_size", "num_threads", "prefetch")


@dataclasses.dataclass(frozen=True)
class Reference:
  """N real eval captions and, when Inception metrics run, their features [N, 2048] and stats."""

  captions: list[str]
  features: np.ndarray | None = None
  stats: fid.GaussianStats | None = None


def record_indices(num_records: int, num_samples: int, seed: int) -> np.ndarray:
  """int64[num_samples]: the first num_samples of a seeded permutation of a split's records."""
  if num_samples > num_records:
    raise ValueError(f"num_samples={num_samples} exceeds the split's {num_records} examples.")
  return np.random.default_rng(seed).permutation(num_records)[:num_samples]


def read_batches(
  source: Any, indices: np.ndarray, batch_size: int
) -> Iterator[tuple[np.ndarray, list[str]]]:
  """(uint8 images [b, H, W, 3], b captions) of `source[indices]`, batch_size records at a time."""
  for start in range(0, len(indices), batch_size):
    chunk = [int(i) for i in indices[start : start + batch_size]]
    if hasattr(source, "get_batch"):
      batch = source.get_batch(chunk)
    else:
      records = [source[i] for i in chunk]
      batch = {k: [r[k] for r in records] for k in ("image", "caption")}
    yield np.asarray(batch["image"], np.uint8), [str(c) for c in batch["caption"]]


def read_captions(source: Any, indices: np.ndarray, batch_size: int) -> list[str]:
  """The captions of `source[indices]`; captioned shapes give them without rendering."""
  if isinstance(source, shapes.CaptionedShapes):
    return [shapes.caption_of(source.attributes(int(i))) for i in indices]
  return [c for _, captions in read_batches(source, indices, batch_size) for c in captions]


def params_fingerprint(params) -> str:
  """sha256 (16 hex digits) of a params tree's paths, shapes and values: tells weight files apart."""
  digest = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_leaves_with_path(params):
    leaf = np.ascontiguousarray(leaf)
    digest.update(f"{jax.tree_util.keystr(path)}{leaf.shape}{leaf.dtype}".encode())
    digest.update(leaf.tobytes())
  return digest.hexdigest()[:16]


def cache_path(
  cache_dir: str, data_config, split: str, num_samples: int, seed: int, fingerprint: str
) -> str:
  """`<cache_dir>/real_<data>_<split>_<res>px_n<N>_<hash>.npz` for this exact real set."""
  data = data_config.to_dict() if hasattr(data_config, "to_dict") else dict(data_config)
  data = {k: v for k, v in data.items() if k not in _RUNTIME_FIELDS}
  key = json.dumps([data, split, num_samples, seed, fingerprint], sort_keys=True, default=str)
  digest = hashlib.sha256(key.encode()).hexdigest()[:16]
  name = f"real_{data.get('name')}_{split}_{data.get('resolution')}px_n{num_samples}_{digest}.npz"
  return os.path.join(os.path.abspath(os.path.expanduser(cache_dir)), name)


def _save(path: str, reference: Reference) -> None:
  """Atomic write (a temporary file, then a rename) so concurrent readers never see half a file."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  tmp = f"{path}.tmp{os.getpid()}"
  stats = reference.stats
  with open(tmp, "wb") as f:
    np.savez(
      f,
      mu=stats.mu,
      sigma=stats.sigma,
      count=np.int64(stats.count),
      features=reference.features,
      captions=np.asarray(reference.captions, dtype=str),
    )
  os.replace(tmp, path)


def _load(path: str) -> Reference:
  stats = fid.load_stats(path)  # validates mu, sigma, count
  with np.load(path, allow_pickle=False) as data:
    if "features" not in data or "captions" not in data:
      raise ValueError(f"{path} is not a reference cache: it lacks features or captions.")
    features, captions = np.asarray(data["features"]), [str(c) for c in data["captions"]]
  return Reference(captions, features, stats)


def inception_reference(
  source: Any,
  indices: np.ndarray,
  batch_size: int,
  extract: Callable[[np.ndarray], Iterable[np.ndarray]],
  path: str,
) -> Reference:
  """The real set's captions, features and stats: from the cache at `path`, else computed from
  images streamed in batches (never all in memory) and written there.

  `extract`: uint8 images [b, H, W, 3] -> their pool3 features as chunks [c, 2048].
  """
  if os.path.exists(path):
    reference = _load(path)
    if len(reference.captions) == len(indices):
      return reference
    logging.warning("Reference cache %s holds another sample count; recomputing.", path)
  logging.info("Computing Inception features of %d real images (cached in %s).", len(indices), path)
  captions, features, running = [], [], fid.RunningStats()
  for images, batch_captions in read_batches(source, indices, batch_size):
    for chunk in extract(images):
      running.update(chunk)
      features.append(chunk)
    captions += batch_captions
  reference = Reference(captions, np.concatenate(features), running.result())
  if jax.process_index() == 0:
    _save(path, reference)
  return reference


def chunks(items: Sequence[str], size: int) -> Iterator[list[str]]:
  """Consecutive lists of `size` items (the last may be shorter)."""
  for start in range(0, len(items), size):
    yield list(items[start : start + size])
