"""StackGAN-v1 generators and discriminators (Zhang et al., ICCV 2017), NHWC.

Follows the authors' PyTorch StackGAN-v1 ``model.py`` (STAGE1_G/D, STAGE2_G/D), with a pooled text
embedding (e.g. CLIP's, [B, E]) in place of char-CNN-RNN and Conditioning Augmentation from
``t2i_jax.gan.conditioning``. Calling conventions follow ``t2i_jax.models.dcgan``: generators
take ``(input, text_embedding, *, train)`` and also return the CA (mu, logvar) for the KL term;
discriminators take ``(images, text_embedding, *, train)`` and return float32 logits [B] (the
reference's final Sigmoid is left to the loss). Matching-aware training happens in the step.

Deviations from the reference, all deliberate:
  * ``width`` replaces gf_dim / df_dim. Stage-I G has 8*width channels at 4x4, so width=128
    reproduces the reference's 1024 (its GF_DIM=128 * 8); Stage-II G and both Ds match the
    reference at width=128 / 64 respectively (its GF_DIM / DF_DIM).
  * Stage-I G normalises its FC output with per-channel BatchNorm after the 4x4 reshape
    (the reference uses BatchNorm1d over all 4*4*C features).
  * The discriminators project the text embedding with their own Dense(cond_dim) + LeakyReLU
    instead of reusing the generator's detached CA mean, so D needs only (x, text_embedding).
  * Stage-II D: stride-2 convs double channels down to 4x4, then 3x3 convs halve them back to
    8*width, generalising the reference's 256px stack (to 32w, then 16w, 8w) to 128px (16w, 8w).
  * Stage-II G stops the gradient into the Stage-I image, as the reference's ``.detach()``.
  * Optionally (``condition="projection"``) the discriminators score the text by projection
    (Miyato & Koyama, 2018) instead of the reference's concatenation; on captioned shapes only
    the projection D taught Stage I to draw the prompted shapes within a CPU-scale run.

Initialisation and logical axis names are shared with DCGAN: conv / dense weights ~ N(0, 0.02),
BatchNorm scale ~ N(1, 0.02).
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from t2i_jax.gan.conditioning import ConditioningAugmentation
from t2i_jax.layers.gan_layers import (
  batch_norm,
  conv_kernel_init,
  dense_kernel_init,
  project_to_4x4,
)

Dtype = Any

STAGE1_RESOLUTION = 64
STAGE2_RESOLUTIONS = (128, 256)
_LEAK = 0.2
# How the discriminators read the text: "concat" joins it to the image features (reference);
# "projection" scores it by an inner product with them (Miyato & Koyama, 2018).
D_CONDITIONS = ("concat", "projection")
_ENCODED_RESOLUTION = 16  # Stage-II G joins image features and text at 16x16 (reference).


def _check_condition(module_name: str, condition: str) -> None:
  if condition not in D_CONDITIONS:
    raise ValueError(f"{module_name}: condition must be one of {D_CONDITIONS}, got {condition!r}.")


def _check_width(module_name: str, width: int, multiple: int) -> None:
  if width <= 0 or width % multiple:
    raise ValueError(
      f"{module_name}: width must be a positive multiple of {multiple}, got {width}."
    )


def _check_stage2_resolution(module_name: str, resolution: int) -> None:
  if resolution not in STAGE2_RESOLUTIONS:
    raise ValueError(
      f"{module_name}: resolution must be one of {STAGE2_RESOLUTIONS}, got {resolution}."
    )


def _check_images(module_name: str, x: jax.Array, resolution: int) -> None:
  if x.ndim != 4 or x.shape[1:] != (resolution, resolution, 3):
    raise ValueError(
      f"{module_name} expects [B, {resolution}, {resolution}, 3] images, got shape {x.shape}."
    )


def _check_text(module_name: str, text_embedding: jax.Array, batch: int) -> None:
  if text_embedding.ndim != 2 or text_embedding.shape[0] != batch:
    raise ValueError(
      f"{module_name} expects a text embedding of shape [{batch}, E], got {text_embedding.shape}."
    )


def _conv(
  features: int,
  kernel: int,
  dtype: Dtype,
  name: str,
  stride: int = 1,
  in_name: str | None = "conv_in",
  out_name: str | None = "conv_out",
) -> nn.Conv:
  """Bias-free conv (each is followed by BatchNorm or tanh, as in the reference)."""
  return nn.Conv(
    features,
    (kernel, kernel),
    strides=(stride, stride),
    # Padding 1 serves the reference's only two shapes: 3x3 stride 1 keeps H, W; 4x4 stride 2
    # halves them exactly.
    padding=((1, 1), (1, 1)),
    use_bias=False,
    dtype=dtype,
    kernel_init=conv_kernel_init(in_name=in_name, out_name=out_name),
    name=name,
  )


def _up_block(h: jax.Array, features: int, train: bool, dtype: Dtype, name: str) -> jax.Array:
  """Reference ``upBlock``: nearest-neighbour x2, 3x3 conv, BatchNorm, ReLU."""
  h = jnp.repeat(jnp.repeat(h, 2, axis=1), 2, axis=2)
  h = _conv(features, 3, dtype, name)(h)
  return nn.relu(batch_norm(train, dtype, f"bn_{name}")(h))


def _to_image(h: jax.Array, dtype: Dtype) -> jax.Array:
  """3x3 conv to RGB + tanh; float32 output whatever the compute dtype."""
  h = _conv(3, 3, dtype, "to_image", out_name=None)(h)  # RGB: never worth sharding
  return jnp.tanh(h.astype(jnp.float32))


def _tile(c: jax.Array, size: int) -> jax.Array:
  """[B, D] -> [B, size, size, D], the reference's ``view(-1, D, 1, 1).repeat(1, 1, s, s)``."""
  return jnp.broadcast_to(c[:, None, None, :], (c.shape[0], size, size, c.shape[-1]))


def _discriminate(
  module: nn.Module, x: jax.Array, text_embedding: jax.Array, *, train: bool
) -> jax.Array:
  """Shared D body (call inside `module`'s compact method, reading its width, cond_dim, condition
  and dtype): image [B, R, R, 3] + text [B, E] -> logits [B].

  Reference ``encode_img`` (stride-2 4x4 convs to 4x4, channel-reducing 3x3 convs back to
  8*width), then the head of ``condition``: "concat" is ``D_GET_LOGITS`` with bcondition=True
  (concat tiled condition, 3x3 conv + BN + LeakyReLU, 4x4 valid conv to one logit); "projection"
  (Miyato & Koyama, 2018) is the same 3x3 conv without the text, then
  ``w^T phi + <proj(text), phi>`` with phi the 4x4 sum pool, as ``t2i_jax.models.dcgan``.
  """
  width, cond_dim, dtype = module.width, module.cond_dim, module.dtype
  stages = x.shape[1].bit_length() - 3  # log2(R / 4)
  h = x.astype(dtype)
  for i in range(stages):
    in_name = None if i == 0 else "conv_in"  # never shard the RGB input dimension
    h = _conv(width * 2**i, 4, dtype, f"down_{i}", stride=2, in_name=in_name)(h)
    if i > 0:  # No normalisation on the first layer (reference).
      h = batch_norm(train, dtype, f"bn_down_{i}")(h)
    h = nn.leaky_relu(h, _LEAK)
  channels = width * 2 ** (stages - 1)
  i = 0
  while channels > 8 * width:  # Stage-II only: 3x3 convs halving channels to 8*width.
    channels //= 2
    h = _conv(channels, 3, dtype, f"reduce_{i}")(h)
    h = nn.leaky_relu(batch_norm(train, dtype, f"bn_reduce_{i}")(h), _LEAK)
    i += 1

  text = text_embedding.astype(jnp.float32)
  if module.condition == "projection":
    h = _conv(8 * width, 3, dtype, "joint")(h)
    h = nn.leaky_relu(batch_norm(train, dtype, "bn_joint")(h), _LEAK)
    phi = h.astype(jnp.float32).sum(axis=(1, 2))  # float32[B, 8 * width]
    unconditional = nn.Dense(
      1,
      kernel_init=dense_kernel_init(out_name=None),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), (None,)),
      name="head",
    )(phi)[:, 0]
    projected = nn.Dense(
      8 * width,
      kernel_init=dense_kernel_init(),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("mlp",)),
      name="text_proj",
    )(text)
    return unconditional + jnp.sum(projected * phi, axis=-1)

  c = nn.Dense(
    cond_dim,
    dtype=dtype,
    kernel_init=dense_kernel_init(),
    bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("mlp",)),
    name="text_proj",
  )(text)
  h = jnp.concatenate([h, _tile(nn.leaky_relu(c, _LEAK).astype(dtype), 4)], axis=-1)
  h = _conv(8 * width, 3, dtype, "joint")(h)
  h = nn.leaky_relu(batch_norm(train, dtype, "bn_joint")(h), _LEAK)
  logits = nn.Conv(
    1,
    (4, 4),
    padding="VALID",  # 4x4 -> 1x1, the reference's Conv2d(8 * ndf, 1, 4, stride=4)
    dtype=dtype,
    kernel_init=conv_kernel_init(out_name=None),
    bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), (None,)),
    name="logits",
  )(h)
  return logits.astype(jnp.float32).reshape(x.shape[0])


class Stage1Generator(nn.Module):
  """Stage-I G: (z, text) -> 64x64 image. Channels 8w (4x4), 4w, 2w, w, w/2 (64x64), RGB.

  Attributes:
    width: Stage-I base width; 8*width channels at 4x4 (width=128 is the reference's 1024).
      Must be even.
    cond_dim: Conditioning Augmentation size (the paper's N_g = 128).
    z_dim: Noise size (the reference's 100); checked against z.
    dtype: Computation dtype of the convs; CA, params and outputs are float32.
  """

  width: int = 64
  cond_dim: int = 128
  z_dim: int = 100
  dtype: Dtype = jnp.float32

  def __post_init__(self) -> None:
    _check_width("Stage1Generator", self.width, 2)
    super().__post_init__()

  @nn.compact
  def __call__(
    self, z: jax.Array, text_embedding: jax.Array, *, train: bool, sample: bool | None = None
  ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Generates 64x64 images.

    Args:
      z: float32[B, z_dim] noise (the reference's z_dim is 100).
      text_embedding: float[B, E] pooled text embedding.
      train: Whether BatchNorm uses (and updates) batch statistics.
      sample: Whether CA samples c_hat from the "noise" rng stream; defaults to ``train``.

    Returns:
      (images float32[B, 64, 64, 3] in [-1, 1], mu float32[B, cond_dim], logvar float32[B,
      cond_dim]).
    """
    if z.ndim != 2 or z.shape[-1] != self.z_dim:
      raise ValueError(f"Stage1Generator expects z of shape [B, {self.z_dim}], got {z.shape}.")
    _check_text("Stage1Generator", text_embedding, z.shape[0])
    sample = train if sample is None else sample
    c_hat, mu, logvar = ConditioningAugmentation(self.cond_dim, name="ca")(
      text_embedding, sample=sample
    )
    h = jnp.concatenate([z.astype(self.dtype), c_hat.astype(self.dtype)], axis=-1)  # (z, c) order
    channels = 8 * self.width
    h = project_to_4x4(h, channels, train, self.dtype)
    for i in range(4):  # 4 -> 64
      channels //= 2
      h = _up_block(h, channels, train, self.dtype, f"up_{i}")
    return _to_image(h, self.dtype), mu, logvar


class Stage1Discriminator(nn.Module):
  """Stage-I D: 64x64 image + text -> logit. Channels w, 2w, 4w, 8w (4x4), then the joint head.

  Attributes:
    width: Channels of the first conv (the reference's DF_DIM = 64).
    cond_dim: Size of the tiled text projection (the reference's EF_DIM = 128); "concat" only.
    condition: One of D_CONDITIONS: "concat" (reference) or "projection".
    dtype: Computation dtype; params and logits are float32.
  """

  width: int = 64
  cond_dim: int = 128
  condition: str = "concat"
  dtype: Dtype = jnp.float32

  def __post_init__(self) -> None:
    _check_width("Stage1Discriminator", self.width, 1)
    _check_condition("Stage1Discriminator", self.condition)
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array, text_embedding: jax.Array, *, train: bool) -> jax.Array:
    """Scores 64x64 images against a text embedding.

    Args:
      x: float32[B, 64, 64, 3] images in [-1, 1].
      text_embedding: float[B, E] pooled text embedding.
      train: Whether BatchNorm uses (and updates) batch statistics.

    Returns:
      float32[B] logits; positive means "real and matching the text".
    """
    _check_images("Stage1Discriminator", x, STAGE1_RESOLUTION)
    _check_text("Stage1Discriminator", text_embedding, x.shape[0])
    return _discriminate(self, x, text_embedding, train=train)


class Stage2Generator(nn.Module):
  """Stage-II G: (Stage-I 64x64 image, text) -> out_resolution image.

  Encoder w (64x64, 3x3 conv + ReLU), 2w (32x32), 4w (16x16); join with CA tiled to 16x16; 3x3
  conv to 4w; ``num_residual`` residual blocks; upsample blocks 2w, w, w/2 (128px), w/4 (256px).

  Attributes:
    width: The reference's GF_DIM (128). Must be a multiple of 4.
    cond_dim: Conditioning Augmentation size (N_g = 128); this CA is separate from Stage-I's.
    num_residual: Residual blocks at 16x16 (the reference's R_NUM; 2 for birds / COCO configs).
    out_resolution: 128, or 256 as in the reference.
    dtype: Computation dtype of the convs; CA, params and outputs are float32.
  """

  width: int = 128
  cond_dim: int = 128
  num_residual: int = 2
  out_resolution: int = 256
  dtype: Dtype = jnp.float32

  def __post_init__(self) -> None:
    _check_width("Stage2Generator", self.width, 4)
    _check_stage2_resolution("Stage2Generator", self.out_resolution)
    if self.num_residual < 0:
      raise ValueError(f"Stage2Generator: num_residual must be >= 0, got {self.num_residual}.")
    super().__post_init__()

  @nn.compact
  def __call__(
    self,
    stage1_image: jax.Array,
    text_embedding: jax.Array,
    *,
    train: bool,
    sample: bool | None = None,
  ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Refines Stage-I images.

    Args:
      stage1_image: float32[B, 64, 64, 3] in [-1, 1]; no gradient flows back into it.
      text_embedding: float[B, E] pooled text embedding.
      train: Whether BatchNorm uses (and updates) batch statistics.
      sample: Whether CA samples c_hat from the "noise" rng stream; defaults to ``train``.

    Returns:
      (images float32[B, R, R, 3] in [-1, 1] with R = out_resolution, mu float32[B, cond_dim],
      logvar float32[B, cond_dim]).
    """
    _check_images("Stage2Generator", stage1_image, STAGE1_RESOLUTION)
    _check_text("Stage2Generator", text_embedding, stage1_image.shape[0])
    sample = train if sample is None else sample
    w, dtype = self.width, self.dtype
    # Stage-I G is fixed while Stage-II trains (reference: stage1_img.detach()).
    h = jax.lax.stop_gradient(stage1_image).astype(dtype)
    h = nn.relu(_conv(w, 3, dtype, "encode_0", in_name=None)(h))
    for i, features in enumerate((2 * w, 4 * w)):  # 64 -> 16
      h = _conv(features, 4, dtype, f"encode_{i + 1}", stride=2)(h)
      h = nn.relu(batch_norm(train, dtype, f"bn_encode_{i + 1}")(h))

    c_hat, mu, logvar = ConditioningAugmentation(self.cond_dim, name="ca")(
      text_embedding, sample=sample
    )
    h = jnp.concatenate([h, _tile(c_hat.astype(dtype), _ENCODED_RESOLUTION)], axis=-1)
    h = _conv(4 * w, 3, dtype, "joint")(h)
    h = nn.relu(batch_norm(train, dtype, "bn_joint")(h))

    for i in range(self.num_residual):
      r = _conv(4 * w, 3, dtype, f"res_{i}_conv_0")(h)
      r = nn.relu(batch_norm(train, dtype, f"bn_res_{i}_0")(r))
      r = _conv(4 * w, 3, dtype, f"res_{i}_conv_1")(r)
      r = batch_norm(train, dtype, f"bn_res_{i}_1")(r)
      h = nn.relu(h + r)

    channels = 4 * w
    stages = self.out_resolution.bit_length() - _ENCODED_RESOLUTION.bit_length()  # log2(R / 16)
    for i in range(stages):
      channels //= 2
      h = _up_block(h, channels, train, dtype, f"up_{i}")
    return _to_image(h, dtype), mu, logvar


class Stage2Discriminator(nn.Module):
  """Stage-II D: RxR image + text -> logit.

  Stride-2 4x4 convs w, 2w, ... to 4x4 (32w at 256px, 16w at 128px), then 3x3 convs halving the
  channels back to 8w (the reference's channel-reducing convs), then the Stage-I joint head.

  Attributes:
    width: Channels of the first conv (the reference's DF_DIM = 64).
    cond_dim: Size of the tiled text projection (the reference's EF_DIM = 128); "concat" only.
    condition: One of D_CONDITIONS: "concat" (reference) or "projection".
    resolution: Input height and width, 128 or 256 (reference).
    dtype: Computation dtype; params and logits are float32.
  """

  width: int = 64
  cond_dim: int = 128
  condition: str = "concat"
  resolution: int = 256
  dtype: Dtype = jnp.float32

  def __post_init__(self) -> None:
    _check_width("Stage2Discriminator", self.width, 1)
    _check_condition("Stage2Discriminator", self.condition)
    _check_stage2_resolution("Stage2Discriminator", self.resolution)
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array, text_embedding: jax.Array, *, train: bool) -> jax.Array:
    """Scores images against a text embedding.

    Args:
      x: float32[B, resolution, resolution, 3] images in [-1, 1].
      text_embedding: float[B, E] pooled text embedding.
      train: Whether BatchNorm uses (and updates) batch statistics.

    Returns:
      float32[B] logits; positive means "real and matching the text".
    """
    _check_images("Stage2Discriminator", x, self.resolution)
    _check_text("Stage2Discriminator", text_embedding, x.shape[0])
    return _discriminate(self, x, text_embedding, train=train)
