"""Improved precision and recall (Kynkäänniemi et al. 2019) with k-NN manifolds of features.

Reference: NVIDIA's StyleGAN2-ADA/StyleGAN3 `metrics/precision_recall.py` and torch-fidelity's
`metric_prc.py`. Each point of a set gets a radius: its distance to the k-th nearest other point
of the same set (the (k+1)-th smallest distance, the point itself being the first). A point is
covered by a set if it lies within the radius (<=) of at least one of the set's points;

  precision = fraction of fake points covered by the real set,
  recall    = fraction of real points covered by the fake set.

Distances are computed in blocks of `block_size` rows against a whole set ([block, N] at a time,
never [N, N]) as jitted float32 squared distances (like torch-fidelity's float32 `cdist`); counts
are summed on host.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

K = 3
BLOCK_SIZE = 1024


def _sq_dists(rows: jax.Array, points: jax.Array) -> jax.Array:
  """|a - b|^2 for rows [b, D] and points [N, D] -> [b, N], clipped at 0 against rounding."""
  cross = jnp.dot(rows, points.T, precision="highest")
  sq = jnp.sum(rows * rows, axis=1)[:, None] + jnp.sum(points * points, axis=1)[None, :]
  return jnp.maximum(sq - 2 * cross, 0.0)


@functools.partial(jax.jit, static_argnames="k")
def _kth_neighbour_sq(rows: jax.Array, points: jax.Array, k: int) -> jax.Array:
  """[b]: squared distance of each row to its k-th nearest point, not counting itself."""
  neg_smallest, _ = jax.lax.top_k(-_sq_dists(rows, points), k + 1)
  return -neg_smallest[:, k]


@jax.jit
def _covered(rows: jax.Array, points: jax.Array, radii_sq: jax.Array) -> jax.Array:
  """bool[b]: whether each row lies within some point's radius."""
  return jnp.any(_sq_dists(rows, points) <= radii_sq[None, :], axis=1)


def _map_blocks(fn, rows: np.ndarray, block_size: int, *args) -> np.ndarray:
  """Concatenated `fn(block, *args)` over fixed-size row blocks (the last zero-padded)."""
  block_size = min(block_size, len(rows))
  out = []
  for start in range(0, len(rows), block_size):
    block = rows[start : start + block_size]
    n = len(block)
    block = np.pad(block, ((0, block_size - n), (0, 0)))  # one compiled shape
    out.append(np.asarray(fn(jnp.asarray(block), *args))[:n])
  return np.concatenate(out)


def manifold_radii_sq(features: np.ndarray, k: int = K, block_size: int = BLOCK_SIZE):
  """float32[N]: squared k-NN radius (self excluded) of every point of features [N, D]."""
  if len(features) <= k:
    raise ValueError(f"A k={k} neighbourhood needs more than {k} points, got {len(features)}.")
  points = jnp.asarray(features, jnp.float32)
  return _map_blocks(
    functools.partial(_kth_neighbour_sq, k=k), np.asarray(features, np.float32), block_size, points
  )


def coverage(
  queries: np.ndarray, features: np.ndarray, k: int = K, block_size: int = BLOCK_SIZE
) -> float:
  """Fraction of queries [M, D] inside the k-NN manifold of features [N, D]."""
  radii = jnp.asarray(manifold_radii_sq(features, k, block_size))
  points = jnp.asarray(features, jnp.float32)
  inside = _map_blocks(_covered, np.asarray(queries, np.float32), block_size, points, radii)
  return float(np.mean(inside, dtype=np.float64))


def run(
  real: np.ndarray, fake: np.ndarray, k: int = K, block_size: int = BLOCK_SIZE
) -> dict[str, float]:
  """{"precision", "recall"} of fake [N2, D] against real [N1, D] features."""
  real, fake = np.asarray(real), np.asarray(fake)
  if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
    raise ValueError(f"Expected features [N1, D] and [N2, D], got {real.shape}, {fake.shape}.")
  return {
    "precision": coverage(fake, real, k, block_size),
    "recall": coverage(real, fake, k, block_size),
  }
