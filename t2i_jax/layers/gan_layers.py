"""Initialisers and BatchNorm of the DCGAN family (Radford et al. 2016), shared by DCGAN and StackGAN.

All conv / dense / embedding weights ~ N(0, 0.02), BatchNorm scale ~ N(1, 0.02), bias 0, with
logical axis names for sharding.
"""

from typing import Any

import flax.linen as nn

from t2i_jax.layers import initializers

WEIGHT_INIT = initializers.normal(0.02)
BN_SCALE_INIT = initializers.normal(0.02, mean=1.0)
BN_MOMENTUM = 0.9  # PyTorch's momentum=0.1
BN_EPSILON = 1e-5


def conv_kernel_init(in_name: str | None = "conv_in", out_name: str | None = "conv_out"):
  """N(0, 0.02) conv kernel [kh, kw, in, out]; None names dims fixed by the data (RGB)."""
  return nn.with_logical_partitioning(WEIGHT_INIT, ("conv_h", "conv_w", in_name, out_name))


def dense_kernel_init(out_name: str | None = "mlp"):
  """N(0, 0.02) dense kernel [in, out]."""
  return nn.with_logical_partitioning(WEIGHT_INIT, ("embed", out_name))


def batch_norm(train: bool, dtype: Any, name: str) -> nn.BatchNorm:
  """BatchNorm with batch statistics in training and running averages otherwise."""
  return nn.BatchNorm(
    use_running_average=not train,
    momentum=BN_MOMENTUM,
    epsilon=BN_EPSILON,
    dtype=dtype,
    scale_init=nn.with_logical_partitioning(BN_SCALE_INIT, ("conv_out",)),
    bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("conv_out",)),
    name=name,
  )


def project_to_4x4(h, channels: int, train: bool, dtype: Any):
  """[B, F] -> [B, 4, 4, channels]: Dense (no bias) + reshape + BatchNorm + ReLU.

  Equals the papers' 4x4 transposed conv on a 1x1 input. Call inside `@nn.compact`; the params
  are `project` and `bn_project` of the calling module.
  """
  h = nn.Dense(
    4 * 4 * channels,
    use_bias=False,  # followed by BatchNorm
    dtype=dtype,
    kernel_init=dense_kernel_init(),
    name="project",
  )(h)
  h = h.reshape(h.shape[0], 4, 4, channels)
  return nn.relu(batch_norm(train, dtype, "bn_project")(h))
