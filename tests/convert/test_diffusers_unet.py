"""Tests for t2i_jax.convert.diffusers_unet against diffusers' UNet2DConditionModel.

The fixtures (made by tests/fixtures/make_diffusers_fixture.py with torch and diffusers) hold tiny
random UNets and their outputs, and the tensor shapes of the released SD 1.5 / 2.1 UNets; these
tests need neither library.
"""

import functools
import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from child_process import REPO_ROOT
from safetensors.numpy import load_file, save_file

from t2i_jax.convert.diffusers_common import WEIGHTS_NAME, CheckpointConversionError, check_shapes
from t2i_jax.convert.diffusers_unet import (
  abstract_params,
  load_diffusers_unet,
  unet_kwargs_from_diffusers_config,
  unet_name_table,
)
from t2i_jax.models.unet import SD1_UNET, UNet

FIXTURES = REPO_ROOT / "tests" / "fixtures"
SD1 = FIXTURES / "diffusers_tiny_unet"  # SD 1.x block layout, conv 1x1 proj_in/out, int t
LINEAR = FIXTURES / "diffusers_tiny_unet_linear"  # SD 2.x options, per-level heads, float t
TOLERANCE = 1e-4


@functools.partial(jax.jit, static_argnums=0)
def _outputs(model, params, sample, t, context, mask):
  """(out, out_masked) from one compiled call: an all-True mask is no mask."""
  b = sample.shape[0]
  y = model.apply(
    {"params": params},
    jnp.concatenate([sample, sample]),
    jnp.concatenate([t, t]),
    jnp.concatenate([context, context]),
    jnp.concatenate([jnp.ones_like(mask), mask]),
  )
  return y[:b], y[b:]


@pytest.mark.parametrize("folder", [SD1, LINEAR], ids=["sd1_layout", "linear_projection"])
def test_reproduces_diffusers_outputs(folder):
  unet_kwargs, params = load_diffusers_unet(str(folder))
  json.dumps(unet_kwargs)
  ref = np.load(folder / "outputs.npz")
  out, out_masked = _outputs(
    UNet(**unet_kwargs),
    params,
    ref["sample"],
    ref["timesteps"],
    ref["context"],
    ref["context_mask"],
  )
  diffs = {
    "out": float(np.abs(np.asarray(out) - ref["out"]).max()),
    "out_masked": float(np.abs(np.asarray(out_masked) - ref["out_masked"]).max()),
  }
  print(folder.name, diffs)
  assert max(diffs.values()) < TOLERANCE, diffs


def _config(folder) -> dict:
  return json.loads((folder / "config.json").read_text())


def test_config_mapping():
  sd1 = unet_kwargs_from_diffusers_config(_config(SD1))
  # diffusers' attention_head_dim is the number of heads; the fixture's 2 heads of 4 or 8
  # channels (not 2 channels per head) is what the parity test above reproduces.
  assert sd1["num_heads"] == 2 and sd1["cross_attention"] == (True, True, True, False)
  linear = unet_kwargs_from_diffusers_config(_config(LINEAR))
  assert linear["num_heads"] == (4, 2, 2) and linear["transformer_depth"] == 2
  assert (linear["flip_sin_to_cos"], linear["freq_shift"]) == (False, 1.0)


def test_name_table_covers_every_param_once():
  config = _config(SD1)
  unet_kwargs = unet_kwargs_from_diffusers_config(config)
  table = unet_name_table(unet_kwargs)
  paths = [path for path, _ in table.values()]
  assert len(paths) == len(set(paths))
  assert set(paths) == set(abstract_params(unet_kwargs, 4, config["cross_attention_dim"]))
  assert set(table) == set(load_file(SD1 / WEIGHTS_NAME))


@pytest.mark.parametrize("name", ["sd15_unet", "sd21_unet"])
def test_released_stable_diffusion_unets_fit(name):
  entry = json.loads((FIXTURES / "diffusers_sd_shapes.json").read_text())[name]
  config = entry["config"]
  unet_kwargs = unet_kwargs_from_diffusers_config(config)
  if name == "sd15_unet":
    assert {k: unet_kwargs[k] for k in SD1_UNET} == SD1_UNET
  else:  # SD 2.x: linear projections, per-level heads, 1024-wide OpenCLIP context
    assert unet_kwargs["num_heads"] == (5, 10, 20, 20)
  expected = abstract_params(unet_kwargs, config["in_channels"], config["cross_attention_dim"])
  check_shapes(entry["shapes"], unet_name_table(unet_kwargs), expected, name, "UNet")


def _copy_with(tmp_path, edit_tensors=None, edit_config=None):
  folder = tmp_path / "unet"
  shutil.copytree(SD1, folder)
  if edit_tensors:
    tensors = load_file(SD1 / WEIGHTS_NAME)
    edit_tensors(tensors)
    save_file(tensors, str(folder / WEIGHTS_NAME))
  if edit_config:
    config = json.loads((SD1 / "config.json").read_text())
    edit_config(config)
    (folder / "config.json").write_text(json.dumps(config))
  return str(folder)


def test_missing_unexpected_and_misshaped_keys_all_named(tmp_path):
  dropped = "up_blocks.1.attentions.2.transformer_blocks.0.attn2.to_k.weight"
  extra = "down_blocks.3.attentions.0.norm.weight"  # DownBlock2D has no attention
  reshaped = "mid_block.resnets.1.conv1.weight"

  def edit(tensors):
    del tensors[dropped]
    tensors[extra] = np.ones(16, np.float32)
    tensors[reshaped] = np.zeros((16, 16, 3, 1), np.float32)

  with pytest.raises(CheckpointConversionError) as info:
    load_diffusers_unet(_copy_with(tmp_path, edit))
  message = str(info.value)
  assert f"missing keys (1): {dropped}" in message
  assert f"unexpected keys (1): {extra}" in message
  assert f"{reshaped}: expected (16, 16, 3, 3), found (16, 16, 3, 1)" in message


@pytest.mark.parametrize(
  "edit, match",
  [
    (lambda t: t.pop("conv_in.bias"), "missing keys.*conv_in.bias"),
    (lambda t: t.update(extra=np.zeros(3, np.float32)), "unexpected keys.*extra"),
    (
      lambda t: t.update({"time_embedding.linear_1.weight": np.zeros((8, 32), np.float32)}),
      r"time_embedding.linear_1.weight: expected \(32, 8\), found \(8, 32\)",
    ),
  ],
)
def test_each_key_problem_raises(tmp_path, edit, match):
  with pytest.raises(CheckpointConversionError, match=match):
    load_diffusers_unet(_copy_with(tmp_path, edit))


@pytest.mark.parametrize(
  "edit, match",
  [
    (
      lambda c: c.update(down_block_types=["SimpleCrossAttnDownBlock2D"] * 4),
      r"block types \['SimpleCrossAttnDownBlock2D'",
    ),
    (
      lambda c: c.update(up_block_types=["CrossAttnUpBlock2D"] * 4),
      "do not mirror down_block_types",
    ),
    (
      lambda c: c.update(class_embed_type="timestep", resnet_time_scale_shift="scale_shift"),
      "class_embed_type='timestep'.*resnet_time_scale_shift='scale_shift'",
    ),
    (lambda c: c.update(mid_block_type="UNetMidBlock2D"), "mid_block_type='UNetMidBlock2D'"),
    (lambda c: c.update(layers_per_block=[1, 2, 2, 2]), r"layers_per_block=\[1, 2, 2, 2\]"),
    (lambda c: c.update(shiny_new_option=True), "unknown option shiny_new_option=True"),
    (lambda c: c.update(_class_name="UNet3DConditionModel"), "describes a UNet3DConditionModel"),
    (lambda c: c.update(attention_head_dim=3), "Cannot build.*not divisible"),
  ],
)
def test_config_problems(tmp_path, edit, match):
  with pytest.raises(CheckpointConversionError, match=match):
    load_diffusers_unet(_copy_with(tmp_path, edit_config=edit))


def test_folder_problems(tmp_path):
  with pytest.raises(CheckpointConversionError, match="no config.json"):
    load_diffusers_unet(str(tmp_path))
  folder = tmp_path / "unet"
  folder.mkdir()
  shutil.copy(SD1 / "config.json", folder / "config.json")
  with pytest.raises(CheckpointConversionError, match="no diffusion_pytorch_model.safetensors"):
    load_diffusers_unet(str(folder))
  (folder / WEIGHTS_NAME).write_bytes(b"not a safetensors file")
  with pytest.raises(CheckpointConversionError, match="Cannot read"):
    load_diffusers_unet(str(folder))
