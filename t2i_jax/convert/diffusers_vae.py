"""diffusers ``AutoencoderKL`` folder -> ``t2i_jax.models.vae.AutoencoderKL`` kwargs and params.

Covers Stable Diffusion's autoencoders (DownEncoderBlock2D / UpDecoderBlock2D levels, SiLU,
mid-block attention); other block types or options raise ``CheckpointConversionError``.

The mid-block attention has had three layouts, all accepted: ``to_q / to_k / to_v / to_out.0``
Linear weights (diffusers >= 0.14), the same under the old names ``query / key / value /
proj_attn`` (renamed on load, as diffusers' ``_fix_state_dict_keys_on_load`` does), and either
as 1x1-conv weights [C, C, 1, 1] (the original LDM layout). All map onto Dense kernels [C, C].

Every tensor is placed by ``vae_name_table``; a missing, unexpected or mis-shaped tensor raises
naming all of them.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
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
from t2i_jax.models.vae import AutoencoderKL

CLASS_NAME = "AutoencoderKL"

# Every option of diffusers 0.42's AutoencoderKL with its default.
_DEFAULTS = dict(
  in_channels=3,
  out_channels=3,
  down_block_types=("DownEncoderBlock2D",),
  up_block_types=("UpDecoderBlock2D",),
  block_out_channels=(64,),
  layers_per_block=1,
  act_fn="silu",
  latent_channels=4,
  norm_num_groups=32,
  sample_size=32,
  scaling_factor=0.18215,
  shift_factor=None,
  latents_mean=None,
  latents_std=None,
  force_upcast=True,  # a pipeline precision hint: irrelevant to the weights
  use_quant_conv=True,
  use_post_quant_conv=True,
  mid_block_add_attention=True,
)
# Per-channel latent statistics are applied by pipelines, not the model; unsupported here so
# they are not silently dropped.
_REQUIRED = dict(act_fn="silu", latents_mean=None, latents_std=None)

# Old names of the mid-block attention projections -> current ones.
_LEGACY_ATTENTION = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def vae_kwargs_from_diffusers_config(config: dict[str, Any]) -> dict[str, Any]:
  """Maps an ``AutoencoderKL`` config dict to ``AutoencoderKL`` kwargs (JSON-serialisable).

  Raises:
    CheckpointConversionError: an option the model does not implement, listing all of them.
  """
  c = check_config(config, _DEFAULTS, _REQUIRED, CLASS_NAME)
  channels = tuple(int(ch) for ch in c["block_out_channels"])
  problems = []
  down, up = list(c["down_block_types"]), list(c["up_block_types"])
  if any(t != "DownEncoderBlock2D" for t in down) or any(t != "UpDecoderBlock2D" for t in up):
    problems.append(
      f"block types {down} / {up} (implemented: DownEncoderBlock2D / UpDecoderBlock2D)"
    )
  if not (len(down) == len(up) == len(channels)):
    problems.append(f"{len(down)} down blocks, {len(up)} up blocks, {len(channels)} channels")
  if problems:
    raise CheckpointConversionError(
      f"Unsupported {CLASS_NAME} config: " + "; ".join(problems) + "."
    )
  return dict(
    out_channels=int(c["out_channels"]),
    block_out_channels=channels,
    layers_per_block=int(c["layers_per_block"]),
    latent_channels=int(c["latent_channels"]),
    norm_num_groups=int(c["norm_num_groups"]),
    mid_attention=bool(c["mid_block_add_attention"]),
    use_quant_conv=bool(c["use_quant_conv"]),
    use_post_quant_conv=bool(c["use_post_quant_conv"]),
    scaling_factor=float(c["scaling_factor"]),
    shift_factor=float(c["shift_factor"] or 0.0),
  )


def _resnet(table: dict, hf: str, ours: str, in_channels: int, out_channels: int) -> None:
  add_norm(table, f"{hf}.norm1", f"{ours}/norm1")
  add_conv(table, f"{hf}.conv1", f"{ours}/conv1")
  add_norm(table, f"{hf}.norm2", f"{ours}/norm2")
  add_conv(table, f"{hf}.conv2", f"{ours}/conv2")
  if in_channels != out_channels:
    add_conv(table, f"{hf}.conv_shortcut", f"{ours}/conv_shortcut")


def _mid_block(table: dict, hf: str, ours: str, channels: int, attention: bool) -> None:
  for j in range(2):
    _resnet(table, f"{hf}.resnets.{j}", f"{ours}/mid_resnet_{j}", channels, channels)
  if attention:
    a, o = f"{hf}.attentions.0", f"{ours}/mid_attn"
    add_norm(table, f"{a}.group_norm", f"{o}/norm")
    for hf_proj, proj in (
      ("to_q", "query"),
      ("to_k", "key"),
      ("to_v", "value"),
      ("to_out.0", "out"),
    ):
      add_linear(table, f"{a}.{hf_proj}", f"{o}/attn/{proj}")


def vae_name_table(vae_kwargs: dict[str, Any]) -> dict[str, tuple[str, str]]:
  """Every diffusers tensor name (current attention names) -> (our param path, layout)."""
  channels = vae_kwargs["block_out_channels"]
  levels, layers = len(channels), vae_kwargs["layers_per_block"]
  attention = vae_kwargs["mid_attention"]
  table: dict[str, tuple[str, str]] = {}
  add_conv(table, "encoder.conv_in", "encoder/conv_in")
  for level in range(levels):
    hf, ours = f"encoder.down_blocks.{level}", f"encoder/down_{level}"
    for j in range(layers):
      cin = channels[max(level - 1, 0)] if j == 0 else channels[level]
      _resnet(table, f"{hf}.resnets.{j}", f"{ours}_resnet_{j}", cin, channels[level])
    if level < levels - 1:
      add_conv(table, f"{hf}.downsamplers.0.conv", f"{ours}_downsample/conv")
  _mid_block(table, "encoder.mid_block", "encoder", channels[-1], attention)
  add_norm(table, "encoder.conv_norm_out", "encoder/norm_out")
  add_conv(table, "encoder.conv_out", "encoder/conv_out")
  if vae_kwargs["use_quant_conv"]:
    add_conv(table, "quant_conv", "quant_conv")
  if vae_kwargs["use_post_quant_conv"]:
    add_conv(table, "post_quant_conv", "post_quant_conv")
  add_conv(table, "decoder.conv_in", "decoder/conv_in")
  _mid_block(table, "decoder.mid_block", "decoder", channels[-1], attention)
  for level in reversed(range(levels)):
    hf, ours = f"decoder.up_blocks.{levels - 1 - level}", f"decoder/up_{level}"
    previous = channels[min(level + 1, levels - 1)]  # the deeper level's (or mid block's) output
    for j in range(layers + 1):
      cin = previous if j == 0 else channels[level]
      _resnet(table, f"{hf}.resnets.{j}", f"{ours}_resnet_{j}", cin, channels[level])
    if level > 0:
      add_conv(table, f"{hf}.upsamplers.0.conv", f"{ours}_upsample/conv")
  add_norm(table, "decoder.conv_norm_out", "decoder/norm_out")
  add_conv(table, "decoder.conv_out", "decoder/conv_out")
  return table


def rename_legacy_attention(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Renames old mid-block attention keys (``...attentions.0.query.weight`` -> ``to_q``)."""
  renamed = {}
  for name, array in state.items():
    prefix, _, rest = name.partition(".attentions.0.")
    projection, dot, param = rest.rpartition(".")
    if "mid_block" in prefix and dot and projection in _LEGACY_ATTENTION:
      name = f"{prefix}.attentions.0.{_LEGACY_ATTENTION[projection]}.{param}"
    renamed[name] = array
  return renamed


def abstract_params(
  vae_kwargs: dict[str, Any], in_channels: int
) -> dict[str, jax.ShapeDtypeStruct]:
  """Flat {'/'-joined path: ShapeDtypeStruct} of ``AutoencoderKL(**vae_kwargs)`` params."""
  size = 2 ** (len(vae_kwargs["block_out_channels"]) - 1)
  variables = jax.eval_shape(
    AutoencoderKL(**vae_kwargs).init, jax.random.key(0), jnp.zeros((1, size, size, in_channels))
  )
  return traverse_util.flatten_dict(nn.unbox(variables["params"]), sep="/")


def load_diffusers_vae(folder: str) -> tuple[dict[str, Any], dict[str, Any]]:
  """Reads a folder written by ``AutoencoderKL.save_pretrained``.

  Args:
    folder: Holds config.json and diffusion_pytorch_model.safetensors (or a sharded index), e.g.
      the "vae" folder of a Stable Diffusion pipeline.

  Returns:
    (vae_kwargs, params): ``AutoencoderKL(**vae_kwargs)`` kwargs (JSON-serialisable) and its
    params tree (float32 numpy arrays), reproducing diffusers' encode / decode on NHWC inputs.

  Raises:
    CheckpointConversionError: a missing file, an unsupported config, or any key problem.
  """
  config = read_config(folder, CLASS_NAME)
  vae_kwargs = vae_kwargs_from_diffusers_config(config)
  what = f"an AutoencoderKL with {vae_kwargs}"
  try:
    expected = abstract_params(vae_kwargs, int((_DEFAULTS | config)["in_channels"]))
  except ValueError as error:  # e.g. groups that do not divide the channels
    raise CheckpointConversionError(f"Cannot build {what}: {error}") from error
  state = rename_legacy_attention(load_safetensors(folder))
  params = convert_state(state, vae_name_table(vae_kwargs), expected, folder, what)
  return vae_kwargs, params
