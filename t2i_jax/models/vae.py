"""KL-regularised autoencoder of latent diffusion (Rombach et al. 2022), as diffusers' AutoencoderKL.

Encoder: conv_in -> levels of ``layers_per_block`` ResnetBlocks with a stride-2 conv between
levels (bottom/right padding) -> mid (ResnetBlock, single-head self-attention, ResnetBlock) ->
GroupNorm-SiLU-conv_out to 2 x latent_channels, then ``quant_conv`` (1x1) splits into the mean and
log-variance of a diagonal Gaussian. Decoder: ``post_quant_conv`` (1x1) -> conv_in -> mid -> levels
of ``layers_per_block + 1`` ResnetBlocks with nearest 2x upsampling + conv between levels ->
GroupNorm-SiLU-conv_out. GroupNorm epsilon is 1e-6 throughout. Downsampling factor
2^(levels - 1): 8 for SD's four levels (``SD_VAE``), 4 for three.

Params (level 0 = full resolution; diffusers numbers decoder up blocks from the deepest level):

  encoder/{conv_in, down_{l}_resnet_{j}, down_{l}_downsample/conv, mid_resnet_0,
           mid_attn/{norm, attn/{query,key,value,out}}, mid_resnet_1, norm_out, conv_out}
  quant_conv, post_quant_conv
  decoder/{conv_in, mid_resnet_0, mid_attn, mid_resnet_1, up_{l}_resnet_{j},
           up_{l}_upsample/conv, norm_out, conv_out}

Training losses (reconstruction, KL, patch discriminator) are in ``t2i_jax.models.vae_losses``.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from t2i_jax.layers.conv import Downsample, Upsample, conv2d
from t2i_jax.layers.cross_attention import CrossAttention
from t2i_jax.layers.norms import group_norm
from t2i_jax.layers.resblock import ResnetBlock

Dtype = Any

EPS = 1e-6  # every GroupNorm of the autoencoder (diffusers hard-codes it)
LOGVAR_RANGE = (-30.0, 20.0)  # diffusers' DiagonalGaussianDistribution clamp

# Stable Diffusion 1.x / 2.x autoencoder (stabilityai/sd-vae-ft-mse and the v1-5 "vae" folder).
SD_VAE = dict(
  out_channels=3,
  block_out_channels=(128, 256, 512, 512),
  layers_per_block=2,
  latent_channels=4,
  norm_num_groups=32,
  scaling_factor=0.18215,
)
# Tests and smoke runs: factor 4, initialises in a fraction of a second once compiled.
TINY_VAE = dict(
  out_channels=3,
  block_out_channels=(16, 32, 32),
  layers_per_block=1,
  latent_channels=4,
  norm_num_groups=8,
  scaling_factor=0.18215,
)


class AttentionBlock(nn.Module):
  """x + SelfAttn(GroupNorm(x)) over the H*W pixels, one head (the autoencoder's mid block).

  Attributes:
    norm_num_groups: GroupNorm groups.
    dtype: Computation dtype.
  """

  norm_num_groups: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """float[B, H, W, C] -> ``dtype``[B, H, W, C]."""
    b, h, w, c = x.shape
    y = group_norm(self.norm_num_groups, EPS, self.dtype, "norm")(x).reshape(b, h * w, c)
    y = CrossAttention(1, qkv_bias=True, dtype=self.dtype, name="attn")(y)
    return x + y.reshape(b, h, w, c)


def _mid_block(x: jax.Array, groups: int, attention: bool, dtype: Dtype) -> jax.Array:
  """ResnetBlock, attention, ResnetBlock; call inside the owning module's ``@nn.compact``."""
  channels = x.shape[-1]
  x = ResnetBlock(channels, groups, EPS, dtype=dtype, name="mid_resnet_0")(x)
  if attention:
    x = AttentionBlock(groups, dtype=dtype, name="mid_attn")(x)
  return ResnetBlock(channels, groups, EPS, dtype=dtype, name="mid_resnet_1")(x)


class Encoder(nn.Module):
  """Images -> 2 x latent_channels moments (before ``quant_conv``).

  Attributes:
    block_out_channels: Channels per level.
    layers_per_block: ResnetBlocks per level.
    latent_channels: Latent channels (the output has twice as many: mean and log-variance).
    norm_num_groups: GroupNorm groups.
    mid_attention: Whether the mid block has its self-attention (diffusers'
      ``mid_block_add_attention``).
    dtype: Computation dtype.
  """

  block_out_channels: tuple[int, ...]
  layers_per_block: int
  latent_channels: int
  norm_num_groups: int
  mid_attention: bool = True
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """float[B, H, W, C] -> ``dtype``[B, H / f, W / f, 2 x latent_channels], f = 2^(levels - 1)."""
    channels, groups = self.block_out_channels, self.norm_num_groups
    h = conv2d(channels[0], 3, dtype=self.dtype, name="conv_in")(x)
    for level, features in enumerate(channels):
      for index in range(self.layers_per_block):
        h = ResnetBlock(
          features, groups, EPS, dtype=self.dtype, name=f"down_{level}_resnet_{index}"
        )(h)
      if level < len(channels) - 1:
        h = Downsample(
          features, asymmetric=True, dtype=self.dtype, name=f"down_{level}_downsample"
        )(h)
    h = _mid_block(h, groups, self.mid_attention, self.dtype)
    h = nn.silu(group_norm(groups, EPS, self.dtype, "norm_out")(h))
    return conv2d(2 * self.latent_channels, 3, dtype=self.dtype, name="conv_out")(h)


class Decoder(nn.Module):
  """Latents (after ``post_quant_conv``) -> images.

  Attributes:
    block_out_channels: Channels per level (as the encoder's; traversed deepest first).
    layers_per_block: The encoder's; each decoder level has one more ResnetBlock.
    out_channels: Image channels.
    norm_num_groups: GroupNorm groups.
    mid_attention: Whether the mid block has its self-attention.
    dtype: Computation dtype.
  """

  block_out_channels: tuple[int, ...]
  layers_per_block: int
  out_channels: int
  norm_num_groups: int
  mid_attention: bool = True
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    """float[B, h, w, latent] -> ``dtype``[B, h f, w f, out_channels], f = 2^(levels - 1)."""
    channels, groups = self.block_out_channels, self.norm_num_groups
    h = conv2d(channels[-1], 3, dtype=self.dtype, name="conv_in")(z)
    h = _mid_block(h, groups, self.mid_attention, self.dtype)
    for level in reversed(range(len(channels))):
      for index in range(self.layers_per_block + 1):
        h = ResnetBlock(
          channels[level], groups, EPS, dtype=self.dtype, name=f"up_{level}_resnet_{index}"
        )(h)
      if level > 0:
        h = Upsample(channels[level], dtype=self.dtype, name=f"up_{level}_upsample")(h)
    h = nn.silu(group_norm(groups, EPS, self.dtype, "norm_out")(h))
    return conv2d(self.out_channels, 3, dtype=self.dtype, name="conv_out")(h)


def sample_latent(mean: jax.Array, logvar: jax.Array, rng: jax.Array) -> jax.Array:
  """z = mean + exp(logvar / 2) * eps, eps ~ N(0, I): a reparameterised draw, float32[like mean]."""
  eps = jax.random.normal(rng, mean.shape, jnp.float32)
  return mean + jnp.exp(0.5 * logvar) * eps


class AutoencoderKL(nn.Module):
  """KL autoencoder: ``encode`` to a diagonal Gaussian over latents, ``decode`` latents to images.

  The diffusion model works on ``encode_latents`` = (z - shift_factor) * scaling_factor, which
  gives latents of about unit variance; ``decode_latents`` undoes it.

  Attributes:
    out_channels: Image channels produced (input channels come from the data).
    block_out_channels: Channels per level; downsampling factor 2^(levels - 1).
    layers_per_block: ResnetBlocks per encoder level (decoder levels have one more).
    latent_channels: Channels of z.
    norm_num_groups: GroupNorm groups; divides every level's channels.
    mid_attention: Self-attention in the encoder's and decoder's mid blocks.
    use_quant_conv: The 1x1 conv on the encoder's moments (False in some newer VAEs).
    use_post_quant_conv: The 1x1 conv before the decoder.
    scaling_factor: Latent scale for the diffusion model (0.18215 in SD 1.x / 2.x).
    shift_factor: Latent shift subtracted before scaling (0 in SD; used by SD3-style VAEs).
    dtype: Computation dtype; params and outputs are float32.
  """

  out_channels: int = 3
  block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
  layers_per_block: int = 2
  latent_channels: int = 4
  norm_num_groups: int = 32
  mid_attention: bool = True
  use_quant_conv: bool = True
  use_post_quant_conv: bool = True
  scaling_factor: float = 0.18215
  shift_factor: float = 0.0
  dtype: Dtype = jnp.float32

  def setup(self):
    # setup rather than @nn.compact: encode / decode / __call__ share these.
    self.encoder = Encoder(
      self.block_out_channels,
      self.layers_per_block,
      self.latent_channels,
      self.norm_num_groups,
      self.mid_attention,
      self.dtype,
    )
    self.decoder = Decoder(
      self.block_out_channels,
      self.layers_per_block,
      self.out_channels,
      self.norm_num_groups,
      self.mid_attention,
      self.dtype,
    )
    if self.use_quant_conv:
      self.quant_conv = conv2d(2 * self.latent_channels, 1, dtype=self.dtype)
    if self.use_post_quant_conv:
      self.post_quant_conv = conv2d(self.latent_channels, 1, dtype=self.dtype)

  @property
  def downsampling_factor(self) -> int:
    return 2 ** (len(self.block_out_channels) - 1)

  def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Posterior of images.

    Args:
      x: float[B, H, W, C] images in [-1, 1]; H and W divisible by ``downsampling_factor``.

    Returns:
      (mean, logvar): float32[B, H / f, W / f, latent_channels], logvar clipped to [-30, 20].
    """
    factor = self.downsampling_factor
    if x.ndim != 4 or x.shape[1] % factor or x.shape[2] % factor:
      raise ValueError(f"x must be [B, H, W, C] with H, W divisible by {factor}; got {x.shape}.")
    moments = self.encoder(x)
    if self.use_quant_conv:
      moments = self.quant_conv(moments)
    mean, logvar = jnp.split(moments.astype(jnp.float32), 2, axis=-1)
    return mean, jnp.clip(logvar, *LOGVAR_RANGE)

  def decode(self, z: jax.Array) -> jax.Array:
    """float[B, h, w, latent_channels] (unscaled) -> float32[B, h f, w f, out_channels]."""
    if self.use_post_quant_conv:
      z = self.post_quant_conv(z)
    return self.decoder(z).astype(jnp.float32)

  def __call__(self, x: jax.Array, rng: jax.Array | None = None) -> dict[str, jax.Array]:
    """Reconstructs images through a posterior sample (the mean when ``rng`` is None).

    Returns:
      recon: float32[B, H, W, out_channels]; mean, logvar: float32[B, h, w, latent_channels].
    """
    mean, logvar = self.encode(x)
    z = mean if rng is None else sample_latent(mean, logvar, rng)
    return {"recon": self.decode(z), "mean": mean, "logvar": logvar}

  def encode_latents(self, x: jax.Array, rng: jax.Array | None = None) -> jax.Array:
    """Images -> diffusion latents (z - shift_factor) * scaling_factor, z a posterior sample
    (the mean when ``rng`` is None). float32[B, h, w, latent_channels]."""
    mean, logvar = self.encode(x)
    z = mean if rng is None else sample_latent(mean, logvar, rng)
    return (z - self.shift_factor) * self.scaling_factor

  def decode_latents(self, latents: jax.Array) -> jax.Array:
    """Diffusion latents -> images: ``decode(latents / scaling_factor + shift_factor)``."""
    return self.decode(latents / self.scaling_factor + self.shift_factor)
