"""Text-conditioned latent-diffusion UNet in the design of diffusers' ``UNet2DConditionModel``.

conv_in -> down levels (``layers_per_block`` x [ResnetBlock (+ SpatialTransformer)], then a
stride-2 conv except at the last level) -> mid (ResnetBlock, SpatialTransformer, ResnetBlock) ->
up levels (``layers_per_block + 1`` x [concat skip, ResnetBlock (+ SpatialTransformer)], then 2x
upsampling except at level 0) -> GroupNorm-SiLU-conv_out. A sinusoidal timestep embedding passes
through an MLP into every ResnetBlock. The defaults are Stable Diffusion 1.x's UNet
(``SD1_UNET``); ``t2i_jax.convert.diffusers_unet`` loads diffusers checkpoints into it.

Params (level 0 = full resolution, for down and up alike; diffusers numbers up blocks from the
deepest level, the converter maps between the two):

  conv_in, time_embedding/{linear_1, linear_2}
  down_{l}_resnet_{j}/{norm1, conv1, time_emb_proj, norm2, conv2[, conv_shortcut]}
  down_{l}_attn_{j}/{norm, proj_in, block_{k}/{norm1, attn1, norm2, attn2, norm3, ff}, proj_out}
  down_{l}_downsample/conv
  mid_resnet_0, mid_attn_0, mid_resnet_1
  up_{l}_resnet_{j}, up_{l}_attn_{j}, up_{l}_upsample/conv
  norm_out, conv_out

Extension point for video (temporal layers without a fork): ``layer_hook`` is a factory called
once per spatial unit, ``layer_hook(stage, level, index, channels, name=...)`` with stage "down" /
"mid" / "up"; it returns a module (or None for no layer) that the UNet applies right after that
unit: after each ResnetBlock(+SpatialTransformer) pair of the down and up levels and after the
mid block's transformer, as AnimateDiff's motion modules and VideoLDM's temporal layers sit. It is
called as ``layer(h [B, H, W, C], temb=[B, T], context=[B, S, D], **hook_kwargs)`` with the
``hook_kwargs`` given to ``__call__`` (e.g. ``num_frames`` for a video UNet that folds frames into
the batch). Its params land beside the spatial ones (``down_0_hook_1/...``), so a pretrained
image checkpoint still converts into the spatial params and the temporal ones are initialised.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from t2i_jax.layers.conv import Downsample, Upsample, conv2d
from t2i_jax.layers.norms import group_norm
from t2i_jax.layers.resblock import ResnetBlock
from t2i_jax.layers.spatial_transformer import SpatialTransformer
from t2i_jax.layers.timestep import TimestepEmbedding, timestep_embedding

Dtype = Any
LayerHook = Callable[..., nn.Module | None]

# Stable Diffusion 1.x (CompVis / runwayml v1-4, v1-5): the UNet's defaults, spelled out.
SD1_UNET = dict(
  out_channels=4,
  block_out_channels=(320, 640, 1280, 1280),
  cross_attention=(True, True, True, False),
  layers_per_block=2,
  num_heads=8,
  transformer_depth=1,
  norm_num_groups=32,
)
# Tests and smoke runs: initialises in well under a second on CPU (latents 8x8x4, any context).
TINY_UNET = dict(
  out_channels=4,
  block_out_channels=(16, 32),
  cross_attention=(True, True),
  layers_per_block=1,
  num_heads=2,
  transformer_depth=1,
  norm_num_groups=8,
)


def per_level(value: int | tuple[int, ...], levels: int, name: str) -> tuple[int, ...]:
  """An int for every level, or a tuple with one entry per level (checked)."""
  if isinstance(value, int):
    return (value,) * levels
  if len(value) != levels:
    raise ValueError(f"{name}={value} needs one entry per level ({levels}).")
  return tuple(value)


class UNet(nn.Module):
  """Noise-prediction UNet conditioned on a timestep and text encoder hidden states.

  Attributes:
    out_channels: Output channels (4 latent channels in SD). Input channels come from ``x``.
    block_out_channels: Channels per level; the latents are downsampled by 2^(levels - 1).
    cross_attention: Per level, whether each ResnetBlock is followed by a SpatialTransformer
      (diffusers ``CrossAttnDownBlock2D`` / ``CrossAttnUpBlock2D``) or not (``DownBlock2D`` /
      ``UpBlock2D``). The up path mirrors the down path.
    layers_per_block: ResnetBlocks per down level (up levels have one more).
    num_heads: Attention heads, one int or one per level; the mid block uses the last level's.
      (diffusers' SD configs call this ``attention_head_dim``; it is the number of heads.)
    transformer_depth: TransformerBlocks per SpatialTransformer, one int or one per level.
    mid_block: Whether there is a mid block (ResnetBlock, SpatialTransformer, ResnetBlock).
    norm_num_groups: GroupNorm groups everywhere; divides every level's channels.
    norm_eps: Epsilon of the ResnetBlocks' and the output GroupNorms.
    flip_sin_to_cos: Timestep features as [cos, sin] (SD) rather than [sin, cos].
    freq_shift: diffusers' ``freq_shift`` of the timestep features.
    time_embed_dim: Width of the timestep embedding; None is 4 x block_out_channels[0].
    dropout: ResnetBlock dropout rate, applied when ``train=True`` (needs a "dropout" rng).
    remat: Rematerialise each ResnetBlock and SpatialTransformer in the backward pass.
    dtype: Computation dtype (e.g. bfloat16); params and the output stay float32.
    attention_implementation: ``jax.nn.dot_product_attention``'s (None: XLA; "cudnn" on GPU).
    layer_hook: Optional factory of extra layers after each spatial unit (see module docs).
  """

  out_channels: int = 4
  block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
  cross_attention: tuple[bool, ...] = (True, True, True, False)
  layers_per_block: int = 2
  num_heads: int | tuple[int, ...] = 8
  transformer_depth: int | tuple[int, ...] = 1
  mid_block: bool = True
  norm_num_groups: int = 32
  norm_eps: float = 1e-5
  flip_sin_to_cos: bool = True
  freq_shift: float = 0.0
  time_embed_dim: int | None = None
  dropout: float = 0.0
  remat: bool = False
  dtype: Dtype = jnp.float32
  attention_implementation: str | None = None
  layer_hook: LayerHook | None = None

  @nn.compact
  def __call__(
    self,
    x: jax.Array,
    t: jax.Array,
    context: jax.Array,
    context_mask: jax.Array | None = None,
    *,
    train: bool = False,
    hook_kwargs: dict[str, Any] | None = None,
  ) -> jax.Array:
    """Predicts the noise (or whatever the checkpoint was trained on) of noisy latents.

    Args:
      x: float[B, H, W, C_in] noisy latents; H and W divisible by 2^(levels - 1).
      t: int or float[B] timesteps (a scalar is broadcast over the batch).
      context: float[B, S, D_ctx] text encoder hidden states.
      context_mask: Optional bool[B, S], True at tokens cross-attention may look at.
      train: Enables dropout.
      hook_kwargs: Keyword arguments for the ``layer_hook`` layers.

    Returns:
      float32[B, H, W, out_channels].
    """
    levels = len(self.block_out_channels)
    if len(self.cross_attention) != levels:
      raise ValueError(f"cross_attention={self.cross_attention} needs one entry per level.")
    factor = 2 ** (levels - 1)
    if x.ndim != 4 or x.shape[1] % factor or x.shape[2] % factor:
      raise ValueError(f"x must be [B, H, W, C] with H and W divisible by {factor}; got {x.shape}.")
    if context.ndim != 3 or context.shape[0] != x.shape[0]:
      raise ValueError(f"context must be [B={x.shape[0]}, S, D]; got {context.shape}.")
    heads = per_level(self.num_heads, levels, "num_heads")
    depth = per_level(self.transformer_depth, levels, "transformer_depth")
    channels = self.block_out_channels
    t = jnp.broadcast_to(jnp.asarray(t), (x.shape[0],))
    features = timestep_embedding(
      t, channels[0], flip_sin_to_cos=self.flip_sin_to_cos, freq_shift=self.freq_shift
    )
    temb = TimestepEmbedding(
      self.time_embed_dim or 4 * channels[0], dtype=self.dtype, name="time_embedding"
    )(features)

    Res = nn.remat(ResnetBlock, static_argnums=(3,)) if self.remat else ResnetBlock
    Attn = nn.remat(SpatialTransformer) if self.remat else SpatialTransformer

    def resnet(features: int, name: str, h: jax.Array) -> jax.Array:
      block = Res(
        features, self.norm_num_groups, self.norm_eps, self.dropout, self.dtype, name=name
      )
      return block(h, temb, not train)

    def transformer(level: int, name: str, h: jax.Array) -> jax.Array:
      layer = Attn(
        heads[level],
        depth[level],
        self.norm_num_groups,
        self.dtype,
        self.attention_implementation,
        name=name,
      )
      return layer(h, context, context_mask)

    def hook(stage: str, level: int, index: int, h: jax.Array) -> jax.Array:
      if self.layer_hook is None:
        return h
      name = f"{stage}_hook_{index}" if stage == "mid" else f"{stage}_{level}_hook_{index}"
      layer = self.layer_hook(stage, level, index, h.shape[-1], name=name)
      if layer is None:
        return h
      return layer(h, temb=temb, context=context, **(hook_kwargs or {}))

    def unit(stage: str, level: int, index: int, h: jax.Array) -> jax.Array:
      h = resnet(channels[level], f"{stage}_{level}_resnet_{index}", h)
      if self.cross_attention[level]:
        h = transformer(level, f"{stage}_{level}_attn_{index}", h)
      h = hook(stage, level, index, h)
      return nn.with_logical_constraint(h, ("batch", None, None, None))

    h = conv2d(channels[0], 3, dtype=self.dtype, name="conv_in")(x)
    skips = [h]
    for level in range(levels):
      for index in range(self.layers_per_block):
        h = unit("down", level, index, h)
        skips.append(h)
      if level < levels - 1:
        h = Downsample(channels[level], dtype=self.dtype, name=f"down_{level}_downsample")(h)
        skips.append(h)

    if self.mid_block:
      h = resnet(channels[-1], "mid_resnet_0", h)
      h = transformer(levels - 1, "mid_attn_0", h)
      h = hook("mid", levels - 1, 0, h)
      h = resnet(channels[-1], "mid_resnet_1", h)

    for level in reversed(range(levels)):
      for index in range(self.layers_per_block + 1):
        h = unit("up", level, index, jnp.concatenate([h, skips.pop()], axis=-1))
      if level > 0:
        h = Upsample(channels[level], dtype=self.dtype, name=f"up_{level}_upsample")(h)

    h = nn.silu(group_norm(self.norm_num_groups, self.norm_eps, self.dtype, "norm_out")(h))
    return conv2d(self.out_channels, 3, dtype=self.dtype, name="conv_out")(h).astype(jnp.float32)
