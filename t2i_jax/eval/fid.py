"""Fréchet Inception Distance (Heusel et al. 2017) from streamed Inception features.

Reference: pytorch-fid (`calculate_frechet_distance`, `calculate_activation_statistics`), which
reproduces TTUR's TF `fid.py`: mu = mean, sigma = np.cov (unbiased, ddof=1) of the pool3
features, and

  FID = |mu1 - mu2|^2 + tr(sigma1) + tr(sigma2) - 2 tr(sqrtm(sigma1 @ sigma2)).

Statistics are accumulated on host in float64 from batches (a running sum and sum of outer
products, shifted by the first batch's mean against cancellation), so no caller ever holds all
features. A dataset's reference statistics are computed once and cached as `.npz` with keys
mu, sigma, count.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import zipfile
from collections.abc import Callable, Iterable

import numpy as np
import scipy.linalg

from t2i_jax.eval import inception


@dataclasses.dataclass(frozen=True)
class GaussianStats:
  """Mean float64[D], covariance float64[D, D] (ddof=1) and number of feature vectors."""

  mu: np.ndarray
  sigma: np.ndarray
  count: int


class RunningStats:
  """Streaming mean and covariance of feature vectors [b, D], in float64."""

  def __init__(self):
    self.count = 0
    self._shift = None  # the first batch's mean: keeps sums small, so S2 - n mu mu^T stays exact
    self._sum = None
    self._outer = None

  def update(self, features: np.ndarray) -> None:
    """Adds a batch of features [b, D] (any float dtype)."""
    x = np.asarray(features, np.float64)
    if x.ndim != 2:
      raise ValueError(f"Expected features [b, D], got shape {x.shape}.")
    if not len(x):
      return
    if self._shift is None:
      self._shift = x.mean(axis=0)
      self._sum = np.zeros_like(self._shift)
      self._outer = np.zeros((x.shape[1], x.shape[1]))
    elif x.shape[1] != self._shift.shape[0]:
      raise ValueError(f"Feature size {x.shape[1]} != {self._shift.shape[0]} of earlier batches.")
    x = x - self._shift
    self.count += len(x)
    self._sum += x.sum(axis=0)
    self._outer += x.T @ x

  def result(self) -> GaussianStats:
    """mu and sigma as np.mean(axis=0) and np.cov(rowvar=False) of everything added."""
    if self.count < 2:
      raise ValueError(f"A covariance needs at least 2 feature vectors, got {self.count}.")
    mean = self._sum / self.count
    sigma = (self._outer - self.count * np.outer(mean, mean)) / (self.count - 1)
    return GaussianStats(mean + self._shift, (sigma + sigma.T) / 2, self.count)


def stats_from_features(batches: Iterable[np.ndarray]) -> GaussianStats:
  """GaussianStats of a stream of feature batches [b, D]."""
  running = RunningStats()
  for batch in batches:
    running.update(batch)
  return running.result()


def stats_from_images(
  params, image_batches: Iterable[np.ndarray], batch_size: int = 64
) -> GaussianStats:
  """GaussianStats of the pool3 features of a stream of uint8 image batches [B, H, W, 3]."""
  return stats_from_features(inception.extract_features(params, image_batches, batch_size))


def save_stats(path: str | os.PathLike, stats: GaussianStats) -> None:
  """Writes `stats` to `path` (.npz with mu, sigma, count), atomically."""
  path = os.fspath(path)
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "wb") as f:
    np.savez(f, mu=stats.mu, sigma=stats.sigma, count=np.int64(stats.count))
  os.replace(tmp, path)


def load_stats(path: str | os.PathLike) -> GaussianStats:
  """Reads statistics written by `save_stats` (or any .npz with mu [D], sigma [D, D], count).

  Raises:
    FileNotFoundError: no file at `path`.
    ValueError: not an .npz, a missing key, inconsistent shapes or non-finite values.
  """
  path = os.fspath(path)
  try:
    with np.load(path, allow_pickle=False) as data:
      arrays = {k: np.asarray(data[k]) for k in ("mu", "sigma", "count") if k in data}
  except FileNotFoundError:
    raise
  except (ValueError, OSError, zipfile.BadZipFile) as error:
    raise ValueError(f"{path} is not a statistics .npz: {error}") from error
  missing = sorted({"mu", "sigma", "count"} - set(arrays))
  if missing:
    raise ValueError(f"{path} is not a statistics .npz: missing keys {missing}.")
  mu, sigma, count = arrays["mu"], arrays["sigma"], arrays["count"]
  d = mu.shape[0] if mu.ndim == 1 else -1
  if mu.ndim != 1 or sigma.shape != (d, d):
    raise ValueError(f"{path}: mu {mu.shape} and sigma {sigma.shape} are not [D] and [D, D].")
  if count.shape != () or not np.issubdtype(count.dtype, np.integer) or count < 2:
    raise ValueError(f"{path}: count must be an integer >= 2, found {count!r}.")
  if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
    raise ValueError(f"{path}: mu or sigma has non-finite values.")
  return GaussianStats(mu.astype(np.float64), sigma.astype(np.float64), int(count))


def cached_stats(path: str | os.PathLike, compute: Callable[[], GaussianStats]) -> GaussianStats:
  """The statistics cached at `path`; computed with `compute()` and saved there when absent."""
  if os.path.exists(path):
    return load_stats(path)
  stats = compute()
  save_stats(path, stats)
  return stats


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
  """pytorch-fid's `calculate_frechet_distance`, step for step, in float64.

  sqrtm(sigma1 @ sigma2); if that is not finite (singular product), both covariances get
  eps * I added and it is retried; an imaginary part of the root's diagonal above 1e-3 raises,
  smaller ones (numerical noise) are dropped. pytorch-fid's `disp=False` only silenced scipy's
  error estimate, which SciPy >= 1.16 deprecates; the root is the same.
  """
  mu1, mu2 = (np.atleast_1d(np.asarray(m, np.float64)) for m in (mu1, mu2))
  sigma1, sigma2 = (np.atleast_2d(np.asarray(s, np.float64)) for s in (sigma1, sigma2))
  if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
    raise ValueError(
      f"Shapes differ: mu {mu1.shape} vs {mu2.shape}, sigma {sigma1.shape} vs {sigma2.shape}."
    )
  if sigma1.shape != (mu1.shape[0],) * 2:
    raise ValueError(f"sigma {sigma1.shape} does not match mu {mu1.shape}.")
  diff = mu1 - mu2
  covmean = scipy.linalg.sqrtm(sigma1 @ sigma2)
  if not np.isfinite(covmean).all():
    logging.warning("fid: sqrtm(sigma1 @ sigma2) is singular; adding %g to the diagonals.", eps)
    offset = np.eye(sigma1.shape[0]) * eps
    covmean = scipy.linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
  if np.iscomplexobj(covmean):
    if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
      raise ValueError(f"Imaginary component {np.max(np.abs(covmean.imag))} in sqrtm.")
    covmean = covmean.real
  return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def run(real: GaussianStats, fake: GaussianStats) -> dict[str, float]:
  """{"fid": FID between two sets' statistics} (see `stats_from_images`, `cached_stats`)."""
  return {"fid": frechet_distance(real.mu, real.sigma, fake.mu, fake.sigma)}
