"""DCGAN generator and discriminator (Radford et al., 2016), optionally class- or text-conditional.

Conditioning follows common practice for conditional DCGANs:
  * Generator: the condition embedding is concatenated to the noise vector z.
  * Discriminator: projection discriminator (Miyato & Koyama, 2018),
    ``logit = w^T phi(x) + <embed(c), phi(x)>``, where phi(x) is the global sum pool of the final
    4x4 feature map (as in SNGAN / the projection paper), so phi_dim = final channel count.

Parameters carry logical axis names (mapped to mesh axes by ``t2i_jax.sharding``). Dimensions whose
size is fixed by the data rather than the model width (the image channels at G's output and D's
input, and the single logit) are named None: they are tiny and never worth sharding.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from t2i_jax.layers.gan_layers import (
  WEIGHT_INIT,
  batch_norm,
  conv_kernel_init,
  dense_kernel_init,
  project_to_4x4,
)

Dtype = Any

RESOLUTIONS = (32, 64, 128)
CONDITIONS = ("none", "label", "text")
# Discriminator normalisation: "batch" (paper) couples the examples of a batch; "layer" (per
# example, over H, W, C) and "none" do not.
D_NORMS = ("batch", "layer", "none")

_LEAK = 0.2


def _num_stages(resolution: int) -> int:
  """Number of factor-2 resampling stages between 4x4 and ``resolution``."""
  if resolution not in RESOLUTIONS:
    raise ValueError(f"resolution must be one of {RESOLUTIONS}, got {resolution}.")
  return resolution.bit_length() - 3  # log2(resolution / 4)


def _check_condition(
  module_name: str,
  condition: str,
  text_encoder: nn.Module | None,
  cond: jax.Array | None,
  check_cond: bool = True,
) -> None:
  if condition not in CONDITIONS:
    raise ValueError(f"{module_name}: condition must be one of {CONDITIONS}, got {condition!r}.")
  if condition == "text" and text_encoder is None:
    raise ValueError(f"{module_name}: condition='text' requires a text_encoder module.")
  if not check_cond or condition == "none":
    return
  if cond is None:
    kind = "int32 labels [B]" if condition == "label" else "int32 token ids [B, L]"
    raise ValueError(f"{module_name}: condition={condition!r} requires cond ({kind}), got None.")
  if condition == "label" and cond.ndim != 1:
    raise ValueError(f"{module_name}: labels must have shape [B], got {cond.shape}.")
  if condition == "text" and cond.ndim != 2:
    raise ValueError(f"{module_name}: token ids must have shape [B, L], got {cond.shape}.")


class Generator(nn.Module):
  """DCGAN generator: z (+ condition) -> 4x4 map -> stride-2 transposed convs -> tanh image.

  For resolution 64 and width 64 the channels are 512 -> 256 -> 128 -> 64 -> out_channels, as in
  the paper; each extra/fewer resolution doubling adds/removes one stage at the top.

  Attributes:
    resolution: Output height and width: 32, 64 or 128.
    width: Channels of the last hidden stage (ngf); the 4x4 stage has width * 2^(stages - 1).
    out_channels: Image channels.
    condition: "none", "label" (class ids) or "text" (token ids through ``text_encoder``).
    num_classes: Label vocabulary size for condition="label".
    cond_dim: Size of the condition embedding concatenated to z.
    text_encoder: Module mapping int32[B, L] to (hidden [B, L, D], pooled [B, D]); required for
      condition="text". Its params live under "text_encoder" in this module's tree.
    dtype: Computation dtype; params and output are float32.
  """

  resolution: int = 64
  width: int = 64
  out_channels: int = 3
  condition: str = "none"
  num_classes: int = 32
  cond_dim: int = 128
  text_encoder: nn.Module | None = None
  dtype: Dtype = jnp.float32

  def __post_init__(self) -> None:
    # Fail at construction (e.g. while building from a config), not at the first trace.
    _num_stages(self.resolution)
    _check_condition("Generator", self.condition, self.text_encoder, None, check_cond=False)
    super().__post_init__()

  @nn.compact
  def __call__(self, z: jax.Array, cond: jax.Array | None = None, *, train: bool) -> jax.Array:
    """Generates images.

    Args:
      z: float32[B, nz] noise.
      cond: int32[B] labels (condition="label"), int32[B, L] token ids (condition="text"), or
        None (condition="none"; ignored otherwise).
      train: Whether BatchNorm uses (and updates) batch statistics.

    Returns:
      float32[B, resolution, resolution, out_channels] in [-1, 1].
    """
    stages = _num_stages(self.resolution)
    _check_condition("Generator", self.condition, self.text_encoder, cond)

    h = z.astype(self.dtype)
    if self.condition == "label":
      emb = nn.Embed(
        self.num_classes,
        self.cond_dim,
        dtype=self.dtype,
        embedding_init=nn.with_logical_partitioning(WEIGHT_INIT, ("vocab", "embed")),
        name="label_embed",
      )(cond)
      h = jnp.concatenate([h, emb], axis=-1)
    elif self.condition == "text":
      _, pooled = self.text_encoder(cond)
      emb = nn.Dense(
        self.cond_dim,
        dtype=self.dtype,
        kernel_init=dense_kernel_init(),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("mlp",)),
        name="text_proj",
      )(pooled)
      h = jnp.concatenate([h, nn.leaky_relu(emb, _LEAK)], axis=-1)

    channels = self.width * 2 ** (stages - 1)
    h = project_to_4x4(h, channels, train, self.dtype)

    for i in range(stages - 1):
      channels //= 2
      h = nn.ConvTranspose(
        channels,
        (4, 4),
        strides=(2, 2),
        padding="SAME",  # k4 s2 'SAME' doubles H and W exactly, like PyTorch padding=1
        use_bias=False,
        dtype=self.dtype,
        kernel_init=conv_kernel_init(),
        name=f"up_{i}",
      )(h)
      h = nn.relu(batch_norm(train, self.dtype, f"bn_up_{i}")(h))

    h = nn.ConvTranspose(
      self.out_channels,
      (4, 4),
      strides=(2, 2),
      padding="SAME",
      use_bias=False,
      dtype=self.dtype,
      kernel_init=conv_kernel_init(out_name=None),
      name="to_image",
    )(h)
    return jnp.tanh(h.astype(jnp.float32))


class Discriminator(nn.Module):
  """DCGAN discriminator with a projection head for conditioning.

  Stride-2 4x4 convs (padding 1) with LeakyReLU(0.2) and BatchNorm on all but the first, channels
  width, 2*width, ... down to a 4x4 map with width * 2^(stages - 1) channels (8*width at 64px).

  Attributes:
    resolution: Input height and width: 32, 64 or 128.
    width: Channels of the first conv (ndf).
    condition: "none", "label" or "text".
    num_classes: Label vocabulary size for condition="label".
    text_encoder: Module mapping int32[B, L] to (hidden, pooled); required for condition="text".
    norm: normalisation after every conv but the first, one of D_NORMS.
    dtype: Computation dtype; params and logits are float32.
  """

  resolution: int = 64
  width: int = 64
  condition: str = "none"
  num_classes: int = 32
  text_encoder: nn.Module | None = None
  norm: str = "batch"
  dtype: Dtype = jnp.float32

  def __post_init__(self) -> None:
    # Fail at construction (e.g. while building from a config), not at the first trace.
    _num_stages(self.resolution)
    _check_condition("Discriminator", self.condition, self.text_encoder, None, check_cond=False)
    if self.norm not in D_NORMS:
      raise ValueError(f"Unknown discriminator norm {self.norm!r}; valid: {', '.join(D_NORMS)}.")
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array, cond: jax.Array | None = None, *, train: bool) -> jax.Array:
    """Scores images.

    Args:
      x: float32[B, resolution, resolution, C] images in [-1, 1].
      cond: int32[B] labels, int32[B, L] token ids, or None, matching ``condition``.
      train: Whether BatchNorm uses (and updates) batch statistics.

    Returns:
      float32[B] logits; positive means "real (and matching the condition)".
    """
    stages = _num_stages(self.resolution)
    _check_condition("Discriminator", self.condition, self.text_encoder, cond)
    if x.ndim != 4 or x.shape[1:3] != (self.resolution, self.resolution):
      raise ValueError(
        f"Discriminator expects [B, {self.resolution}, {self.resolution}, C] images, "
        f"got shape {x.shape}."
      )

    h = x.astype(self.dtype)
    for i in range(stages):
      h = nn.Conv(
        self.width * 2**i,
        (4, 4),
        strides=(2, 2),
        padding=((1, 1), (1, 1)),  # (H + 2 - 4) / 2 + 1 = H / 2, as in the paper
        use_bias=False,
        dtype=self.dtype,
        # The first conv's input is image channels: never shard that dimension.
        kernel_init=conv_kernel_init(in_name=None if i == 0 else "conv_in"),
        name=f"down_{i}",
      )(h)
      if i > 0 and self.norm == "batch":  # No normalisation on the first layer (paper).
        h = batch_norm(train, self.dtype, f"bn_down_{i}")(h)
      elif i > 0 and self.norm == "layer":
        h = nn.LayerNorm(
          reduction_axes=(-3, -2, -1),
          dtype=self.dtype,
          scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(), ("conv_out",)),
          bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("conv_out",)),
          name=f"ln_down_{i}",
        )(h)
      h = nn.leaky_relu(h, _LEAK)

    phi = h.astype(jnp.float32).sum(axis=(1, 2))  # float32[B, phi_dim], global sum pool
    phi_dim = phi.shape[-1]
    logits = nn.Dense(
      1,
      kernel_init=dense_kernel_init(out_name=None),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), (None,)),
      name="head",
    )(phi)[:, 0]

    if self.condition == "label":
      emb = nn.Embed(
        self.num_classes,
        phi_dim,
        embedding_init=nn.with_logical_partitioning(WEIGHT_INIT, ("vocab", "embed")),
        name="label_embed",
      )(cond)
      logits = logits + jnp.sum(emb * phi, axis=-1)
    elif self.condition == "text":
      _, pooled = self.text_encoder(cond)
      emb = nn.Dense(
        phi_dim,
        kernel_init=dense_kernel_init(),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("mlp",)),
        name="text_proj",
      )(pooled.astype(jnp.float32))
      logits = logits + jnp.sum(emb * phi, axis=-1)
    return logits
