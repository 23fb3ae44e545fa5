"""diffusers ``UNet2DConditionModel`` folder -> ``t2i_jax.models.unet.UNet`` kwargs and params.

Covers Stable Diffusion 1.x and 2.x UNets: CrossAttnDownBlock2D / DownBlock2D levels mirrored by
UpBlock2D / CrossAttnUpBlock2D, a UNetMidBlock2DCrossAttn (or none), conv 1x1 or linear
``proj_in`` / ``proj_out`` (``use_linear_projection``), per-level heads and transformer depth.
Any other option (class / addition embeddings, other block types, scale-shift ResnetBlocks, ...)
raises ``CheckpointConversionError`` naming it.

Heads: diffusers' ``attention_head_dim`` is, for these UNets, the number of heads (see the comment
in ``UNet2DConditionModel.__init__``, diffusers issue #2011); it becomes ``UNet.num_heads``.

Every tensor is placed by ``unet_name_table``; a missing, unexpected or mis-shaped tensor raises
naming all of them.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import traverse_util

from t2i_jax.convert.diffusers_common import (
  CheckpointConversionError,
  add_conv,
  add_linear,
  add_norm,
  check_config,
  convert_state,
  load_safetensors,
  read_config,
)
from t2i_jax.models.unet import UNet, per_level

CLASS_NAME = "UNet2DConditionModel"

# Every option of diffusers 0.42's UNet2DConditionModel with its default.
_DEFAULTS = dict(
  sample_size=None,
  in_channels=4,
  out_channels=4,
  center_input_sample=False,
  flip_sin_to_cos=True,
  freq_shift=0,
  down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
  mid_block_type="UNetMidBlock2DCrossAttn",
  up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
  only_cross_attention=False,
  block_out_channels=(320, 640, 1280, 1280),
  layers_per_block=2,
  downsample_padding=1,
  mid_block_scale_factor=1,
  dropout=0.0,
  act_fn="silu",
  norm_num_groups=32,
  norm_eps=1e-5,
  cross_attention_dim=1280,
  transformer_layers_per_block=1,
  reverse_transformer_layers_per_block=None,
  encoder_hid_dim=None,
  encoder_hid_dim_type=None,
  attention_head_dim=8,
  num_attention_heads=None,
  dual_cross_attention=False,
  use_linear_projection=False,
  class_embed_type=None,
  addition_embed_type=None,
  addition_time_embed_dim=None,
  num_class_embeds=None,
  upcast_attention=False,  # precision only: our softmax always runs in float32
  resnet_time_scale_shift="default",
  resnet_skip_time_act=False,
  resnet_out_scale_factor=1.0,
  time_embedding_type="positional",
  time_embedding_dim=None,
  time_embedding_act_fn=None,
  timestep_post_act=None,
  time_cond_proj_dim=None,
  conv_in_kernel=3,
  conv_out_kernel=3,
  projection_class_embeddings_input_dim=None,
  attention_type="default",
  class_embeddings_concat=False,
  mid_block_only_cross_attention=None,
  cross_attention_norm=None,
  addition_embed_type_num_heads=64,
)
# Options whose other values select features UNet does not implement.
_REQUIRED = dict(
  center_input_sample=False,
  only_cross_attention=False,
  downsample_padding=1,
  mid_block_scale_factor=1,
  act_fn="silu",
  reverse_transformer_layers_per_block=None,
  encoder_hid_dim=None,
  encoder_hid_dim_type=None,
  num_attention_heads=None,
  dual_cross_attention=False,
  class_embed_type=None,
  addition_embed_type=None,
  num_class_embeds=None,
  resnet_time_scale_shift="default",
  resnet_skip_time_act=False,
  resnet_out_scale_factor=1.0,
  time_embedding_type="positional",
  time_embedding_act_fn=None,
  timestep_post_act=None,
  time_cond_proj_dim=None,
  conv_in_kernel=3,
  conv_out_kernel=3,
  attention_type="default",
  class_embeddings_concat=False,
  mid_block_only_cross_attention=None,
  cross_attention_norm=None,
)
_DOWN = {"CrossAttnDownBlock2D": True, "DownBlock2D": False}
_UP = {"CrossAttnUpBlock2D": True, "UpBlock2D": False}
_MID = {"UNetMidBlock2DCrossAttn": True, None: False}


def _uniform(value: Any, name: str, problems: list[str]) -> Any:
  """One value for every level (diffusers allows per-level lists for some options)."""
  if isinstance(value, list | tuple):
    if len(set(value)) != 1:
      problems.append(f"{name}={list(value)} differs per level (one value is implemented)")
    return value[0]
  return value


def unet_kwargs_from_diffusers_config(config: dict[str, Any]) -> dict[str, Any]:
  """Maps a ``UNet2DConditionModel`` config dict to ``UNet`` kwargs (JSON-serialisable).

  Raises:
    CheckpointConversionError: an option ``UNet`` does not implement, listing all of them.
  """
  c = check_config(config, _DEFAULTS, _REQUIRED, CLASS_NAME)
  down, up = list(c["down_block_types"]), list(c["up_block_types"])
  channels = tuple(int(ch) for ch in c["block_out_channels"])
  problems = []
  unknown = [t for t in down if t not in _DOWN] + [t for t in up if t not in _UP]
  if unknown:
    problems.append(f"block types {unknown} (implemented: {sorted(_DOWN) + sorted(_UP)})")
  if c["mid_block_type"] not in _MID:
    problems.append(f"mid_block_type={c['mid_block_type']!r} (implemented: {list(_MID)})")
  if not (len(down) == len(up) == len(channels)):
    problems.append(f"{len(down)} down blocks, {len(up)} up blocks, {len(channels)} channels")
  elif not unknown and [_UP[t] for t in reversed(up)] != [_DOWN[t] for t in down]:
    problems.append(f"up_block_types {up} do not mirror down_block_types {down}")
  layers = _uniform(c["layers_per_block"], "layers_per_block", problems)
  _uniform(c["cross_attention_dim"], "cross_attention_dim", problems)
  depth = c["transformer_layers_per_block"]
  if isinstance(depth, list | tuple) and any(isinstance(d, list | tuple) for d in depth):
    problems.append(f"transformer_layers_per_block={depth} varies within a level")
  if c["norm_num_groups"] is None:
    problems.append("norm_num_groups=None (no output GroupNorm) is not implemented")
  if problems:
    raise CheckpointConversionError(
      f"Unsupported {CLASS_NAME} config: " + "; ".join(problems) + "."
    )

  def ints(value: Any) -> int | tuple[int, ...]:
    return int(value) if isinstance(value, int) else tuple(int(v) for v in value)

  return dict(
    out_channels=int(c["out_channels"]),
    block_out_channels=channels,
    cross_attention=tuple(_DOWN[t] for t in down),
    layers_per_block=int(layers),
    num_heads=ints(c["attention_head_dim"]),
    transformer_depth=ints(depth),
    mid_block=_MID[c["mid_block_type"]],
    norm_num_groups=int(c["norm_num_groups"]),
    norm_eps=float(c["norm_eps"]),
    flip_sin_to_cos=bool(c["flip_sin_to_cos"]),
    freq_shift=float(c["freq_shift"]),
    time_embed_dim=None if c["time_embedding_dim"] is None else int(c["time_embedding_dim"]),
    dropout=float(c["dropout"]),
  )


def _resnet(table: dict, hf: str, ours: str, in_channels: int, out_channels: int) -> None:
  add_norm(table, f"{hf}.norm1", f"{ours}/norm1")
  add_conv(table, f"{hf}.conv1", f"{ours}/conv1")
  add_linear(table, f"{hf}.time_emb_proj", f"{ours}/time_emb_proj")
  add_norm(table, f"{hf}.norm2", f"{ours}/norm2")
  add_conv(table, f"{hf}.conv2", f"{ours}/conv2")
  if in_channels != out_channels:
    add_conv(table, f"{hf}.conv_shortcut", f"{ours}/conv_shortcut")


def _transformer(table: dict, hf: str, ours: str, depth: int) -> None:
  add_norm(table, f"{hf}.norm", f"{ours}/norm")
  add_linear(table, f"{hf}.proj_in", f"{ours}/proj_in")  # conv 1x1 or linear
  add_linear(table, f"{hf}.proj_out", f"{ours}/proj_out")
  for k in range(depth):
    b, o = f"{hf}.transformer_blocks.{k}", f"{ours}/block_{k}"
    for i in (1, 2, 3):
      add_norm(table, f"{b}.norm{i}", f"{o}/norm{i}")
    for attn in ("attn1", "attn2"):
      for hf_proj, proj in (("to_q", "query"), ("to_k", "key"), ("to_v", "value")):
        add_linear(table, f"{b}.{attn}.{hf_proj}", f"{o}/{attn}/{proj}", bias=False)
      add_linear(table, f"{b}.{attn}.to_out.0", f"{o}/{attn}/out")
    add_linear(table, f"{b}.ff.net.0.proj", f"{o}/ff/proj")
    add_linear(table, f"{b}.ff.net.2", f"{o}/ff/out")


def unet_name_table(unet_kwargs: dict[str, Any]) -> dict[str, tuple[str, str]]:
  """Every diffusers tensor name -> (our '/'-joined param path, layout).

  Channel bookkeeping follows ``UNet2DConditionModel.__init__``: a ResnetBlock has a 1x1
  ``conv_shortcut`` exactly when its input and output channels differ (always in the up path,
  whose inputs are concatenated with skips).
  """
  channels = unet_kwargs["block_out_channels"]
  levels, layers = len(channels), unet_kwargs["layers_per_block"]
  cross = unet_kwargs["cross_attention"]
  depth = per_level(unet_kwargs["transformer_depth"], levels, "transformer_depth")
  table: dict[str, tuple[str, str]] = {}
  add_conv(table, "conv_in", "conv_in")
  add_linear(table, "time_embedding.linear_1", "time_embedding/linear_1")
  add_linear(table, "time_embedding.linear_2", "time_embedding/linear_2")
  for level in range(levels):
    hf, ours = f"down_blocks.{level}", f"down_{level}"
    for j in range(layers):
      cin = channels[max(level - 1, 0)] if j == 0 else channels[level]
      _resnet(table, f"{hf}.resnets.{j}", f"{ours}_resnet_{j}", cin, channels[level])
      if cross[level]:
        _transformer(table, f"{hf}.attentions.{j}", f"{ours}_attn_{j}", depth[level])
    if level < levels - 1:
      add_conv(table, f"{hf}.downsamplers.0.conv", f"{ours}_downsample/conv")
  if unet_kwargs["mid_block"]:
    for j in range(2):
      _resnet(table, f"mid_block.resnets.{j}", f"mid_resnet_{j}", channels[-1], channels[-1])
    _transformer(table, "mid_block.attentions.0", "mid_attn_0", depth[-1])
  for level in reversed(range(levels)):
    hf, ours = f"up_blocks.{levels - 1 - level}", f"up_{level}"
    previous = channels[min(level + 1, levels - 1)]  # the deeper level's (or mid block's) output
    for j in range(layers + 1):
      skip = channels[max(level - 1, 0)] if j == layers else channels[level]
      cin = (previous if j == 0 else channels[level]) + skip
      _resnet(table, f"{hf}.resnets.{j}", f"{ours}_resnet_{j}", cin, channels[level])
      if cross[level]:
        _transformer(table, f"{hf}.attentions.{j}", f"{ours}_attn_{j}", depth[level])
    if level > 0:
      add_conv(table, f"{hf}.upsamplers.0.conv", f"{ours}_upsample/conv")
  add_norm(table, "conv_norm_out", "norm_out")
  add_conv(table, "conv_out", "conv_out")
  return table


def abstract_params(
  unet_kwargs: dict[str, Any], in_channels: int, context_dim: int
) -> dict[str, jax.ShapeDtypeStruct]:
  """Flat {'/'-joined path: ShapeDtypeStruct} of ``UNet(**unet_kwargs)`` params (eval_shape)."""
  size = 2 ** (len(unet_kwargs["block_out_channels"]) - 1)
  variables = jax.eval_shape(
    UNet(**unet_kwargs).init,
    jax.random.key(0),
    jnp.zeros((1, size, size, in_channels)),
    jnp.zeros((1,), jnp.int32),
    jnp.zeros((1, 1, context_dim)),
  )
  return traverse_util.flatten_dict(nn.unbox(variables["params"]), sep="/")


def load_diffusers_unet(folder: str) -> tuple[dict[str, Any], dict[str, Any]]:
  """Reads a folder written by ``UNet2DConditionModel.save_pretrained``.

  Args:
    folder: Holds config.json and diffusion_pytorch_model.safetensors (or a sharded index), e.g.
      the "unet" folder of a Stable Diffusion 1.x / 2.x pipeline.

  Returns:
    (unet_kwargs, params): ``UNet(**unet_kwargs)`` kwargs (JSON-serialisable) and its params tree
    (float32 numpy arrays), so ``UNet(**unet_kwargs).apply({"params": params}, x, t, context)``
    reproduces the diffusers model on NHWC inputs.

  Raises:
    CheckpointConversionError: a missing file, an unsupported config, or any key problem.
  """
  config = read_config(folder, CLASS_NAME)
  unet_kwargs = unet_kwargs_from_diffusers_config(config)
  c = _DEFAULTS | config
  context_dim = c["cross_attention_dim"]
  context_dim = context_dim[0] if isinstance(context_dim, list | tuple) else context_dim
  what = f"a UNet with {unet_kwargs}"
  try:
    expected = abstract_params(unet_kwargs, int(c["in_channels"]), int(context_dim))
  except ValueError as error:  # e.g. heads that do not divide a level's channels
    raise CheckpointConversionError(f"Cannot build {what}: {error}") from error
  params = convert_state(
    load_safetensors(folder), unet_name_table(unet_kwargs), expected, folder, what
  )
  return unet_kwargs, params
