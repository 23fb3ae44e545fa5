"""Kernel Inception Distance (Bińkowski et al. 2018): unbiased MMD² with a cubic polynomial kernel.

Reference: torch-fidelity's `metric_kid.py` (from the MMD-GAN code): for each of `subsets` rounds,
`subset_size` real and fake features are drawn without replacement by
`np.random.RandomState(seed).choice` (real first, then fake), and

  k(x, y) = (x . y / D + 1)^3,
  MMD² = sum_{i != j} k(x_i, x_j) / (m (m - 1)) + sum_{i != j} k(y_i, y_j) / (m (m - 1))
         - 2 sum_{i, j} k(x_i, y_j) / m².

Returns the mean and the (population, ddof=0) standard deviation over subsets. Same defaults as
torch-fidelity (100 subsets of 1000, seed 2020), so the draws are identical; the kernels are
computed in float64 here (torch-fidelity: in the features' float32).
"""

from __future__ import annotations

import logging

import numpy as np

SUBSETS = 100
SUBSET_SIZE = 1000
SEED = 2020  # torch-fidelity's default rng_seed


def polynomial_kernel(x: np.ndarray, y: np.ndarray, degree: int = 3, coef0: float = 1.0):
  """(x @ y.T / D + coef0) ** degree for x [n, D], y [m, D] -> float64[n, m]."""
  return (np.asarray(x, np.float64) @ np.asarray(y, np.float64).T / x.shape[1] + coef0) ** degree


def mmd2_unbiased(k_xx: np.ndarray, k_xy: np.ndarray, k_yy: np.ndarray) -> float:
  """Unbiased MMD² from kernel matrices [m, m] (diagonals of k_xx and k_yy excluded)."""
  m = k_xx.shape[0]
  within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
  return float(within - 2 * k_xy.sum() / (m * m))


def kid(
  real: np.ndarray,
  fake: np.ndarray,
  subsets: int = SUBSETS,
  subset_size: int = SUBSET_SIZE,
  seed: int = SEED,
) -> tuple[float, float, int]:
  """KID of real [N1, D] vs fake [N2, D] features.

  A `subset_size` larger than either set is capped at the smaller set's size (torch-fidelity
  raises instead), with a warning: the estimate stays unbiased, only noisier.

  Returns:
    (mean, std, subset size used).
  """
  real, fake = np.asarray(real), np.asarray(fake)
  if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
    raise ValueError(f"Expected features [N1, D] and [N2, D], got {real.shape}, {fake.shape}.")
  n1, n2 = len(real), len(fake)
  m = min(subset_size, n1, n2)
  if m < 2:
    raise ValueError(f"KID needs at least 2 features per set, got {n1} real and {n2} fake.")
  if m < subset_size:
    logging.warning("kid: subset_size %d capped at %d (real %d, fake %d).", subset_size, m, n1, n2)
  rng = np.random.RandomState(seed)
  mmds = np.zeros(subsets)
  for i in range(subsets):
    x = real[rng.choice(n1, m, replace=False)]
    y = fake[rng.choice(n2, m, replace=False)]
    mmds[i] = mmd2_unbiased(
      polynomial_kernel(x, x), polynomial_kernel(x, y), polynomial_kernel(y, y)
    )
  return float(np.mean(mmds)), float(np.std(mmds)), m


def run(
  real: np.ndarray,
  fake: np.ndarray,
  subsets: int = SUBSETS,
  subset_size: int = SUBSET_SIZE,
  seed: int = SEED,
) -> dict[str, float]:
  """{"kid_mean", "kid_std", "kid_subset_size"} of real [N1, D] vs fake [N2, D] features."""
  mean, std, m = kid(real, fake, subsets, subset_size, seed)
  return {"kid_mean": mean, "kid_std": std, "kid_subset_size": float(m)}
