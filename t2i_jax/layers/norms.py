"""GroupNorm over NHWC feature maps with logically partitioned scale and bias."""

from __future__ import annotations

from typing import Any

import flax.linen as nn

Dtype = Any


def group_norm(num_groups: int, epsilon: float, dtype: Dtype, name: str) -> nn.GroupNorm:
  """GroupNorm over H, W and each group of C channels, statistics in float32.

  ``use_fast_variance=False`` computes E[(x - mean)^2] as PyTorch does, not E[x^2] - mean^2,
  which loses precision on large activations (converted checkpoints are compared to 1e-4).
  """
  return nn.GroupNorm(
    num_groups=num_groups,
    epsilon=epsilon,
    dtype=dtype,
    use_fast_variance=False,
    scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(), ("conv_out",)),
    bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("conv_out",)),
    name=name,
  )
