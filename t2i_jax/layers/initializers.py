"""Parameter initializers that compile quickly.

With ``jax_threefry_partitionable`` (the default), drawing random numbers directly in an N-D shape
lowers to an N-D counter iota that XLA:CPU compiles very slowly: measured ~4 s per 4-D conv
kernel versus ~0.2 s for the same count of numbers drawn flat, which made a tiny DCGAN take tens
of seconds to ``init``. Drawing a flat vector and reshaping gives the same distribution.

Trade-off: a flat draw cannot be generated shard-by-shard for a kernel sharded on a trailing
axis, so each device materialises the whole tensor at init. That is irrelevant for models of
DCGAN / small-transformer size; large models may prefer the stock ``nn.initializers``.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

Dtype = Any


def normal(stddev: float, mean: float = 0.0):
  """Initializer drawing i.i.d. N(mean, stddev^2) values.

  Args:
    stddev: Standard deviation.
    mean: Mean (e.g. 1.0 for BatchNorm scales in DCGAN).

  Returns:
    ``init(key, shape, dtype=float32) -> dtype[shape]``, usable wherever a ``jax.nn.initializers``
    initializer is.
  """

  def init(key: jax.Array, shape: tuple[int, ...], dtype: Dtype = jnp.float32) -> jax.Array:
    shape = tuple(shape)
    flat = jax.random.normal(key, (math.prod(shape),), dtype)
    return (mean + stddev * flat).astype(dtype).reshape(shape)

  return init
