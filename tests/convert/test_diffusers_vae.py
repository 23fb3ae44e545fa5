"""Tests for t2i_jax.convert.diffusers_vae against diffusers' AutoencoderKL.

The fixtures (made by tests/fixtures/make_diffusers_fixture.py with torch and diffusers) hold a
tiny random autoencoder with Stable Diffusion's structure and its outputs, and the tensor shapes of
the released SD 1.5 autoencoder; these tests need neither library.
"""

import functools
import json
import shutil

import jax
import numpy as np
import pytest
from child_process import REPO_ROOT
from safetensors.numpy import load_file, save_file

from t2i_jax.convert.diffusers_common import WEIGHTS_NAME, CheckpointConversionError, check_shapes
from t2i_jax.convert.diffusers_vae import (
  abstract_params,
  load_diffusers_vae,
  vae_kwargs_from_diffusers_config,
  vae_name_table,
)
from t2i_jax.models.vae import SD_VAE, AutoencoderKL

FIXTURES = REPO_ROOT / "tests" / "fixtures"
TINY = FIXTURES / "diffusers_tiny_vae"
TOLERANCE = 1e-4
ATTENTION = "decoder.mid_block.attentions.0"


@functools.partial(jax.jit, static_argnums=0)
def _outputs(model, params, images, latents):
  variables = {"params": params}
  mean, logvar = model.apply(variables, images, method=AutoencoderKL.encode)
  decoded = model.apply(variables, latents, method=AutoencoderKL.decode)
  return {"mean": mean, "logvar": logvar, "decoded": decoded}


def test_reproduces_diffusers_encode_and_decode():
  vae_kwargs, params = load_diffusers_vae(str(TINY))
  json.dumps(vae_kwargs)
  assert vae_kwargs["block_out_channels"] == (8, 16, 16, 16)
  ref = np.load(TINY / "outputs.npz")
  out = _outputs(AutoencoderKL(**vae_kwargs), params, ref["images"], ref["latents"])
  diffs = {k: float(np.abs(np.asarray(v) - ref[k]).max()) for k, v in out.items()}
  print(diffs)
  assert max(diffs.values()) < TOLERANCE, diffs


def test_name_table_covers_every_param_once():
  vae_kwargs = vae_kwargs_from_diffusers_config(json.loads((TINY / "config.json").read_text()))
  table = vae_name_table(vae_kwargs)
  paths = [path for path, _ in table.values()]
  assert len(paths) == len(set(paths))
  assert set(paths) == set(abstract_params(vae_kwargs, 3))
  assert set(table) == set(load_file(TINY / WEIGHTS_NAME))


def test_released_stable_diffusion_vae_fits():
  entry = json.loads((FIXTURES / "diffusers_sd_shapes.json").read_text())["sd15_vae"]
  vae_kwargs = vae_kwargs_from_diffusers_config(entry["config"])
  assert {k: vae_kwargs[k] for k in SD_VAE} == SD_VAE
  expected = abstract_params(vae_kwargs, 3)
  check_shapes(entry["shapes"], vae_name_table(vae_kwargs), expected, "sd15_vae", "VAE")


def _copy_with(tmp_path, edit_tensors=None, edit_config=None):
  folder = tmp_path / "vae"
  shutil.copytree(TINY, folder)
  if edit_tensors:
    tensors = load_file(TINY / WEIGHTS_NAME)
    edit_tensors(tensors)
    save_file(tensors, str(folder / WEIGHTS_NAME))
  if edit_config:
    config = json.loads((TINY / "config.json").read_text())
    edit_config(config)
    (folder / "config.json").write_text(json.dumps(config))
  return str(folder)


def test_legacy_attention_names_and_conv_layout(tmp_path):
  """query/key/value/proj_attn names and [C, C, 1, 1] conv weights give the same params."""

  def edit(tensors):
    for old, new in (
      ("query", "to_q"),
      ("key", "to_k"),
      ("value", "to_v"),
      ("proj_attn", "to_out.0"),
    ):
      weight = tensors.pop(f"{ATTENTION}.{new}.weight")
      tensors[f"{ATTENTION}.{old}.weight"] = weight[:, :, None, None]
      tensors[f"{ATTENTION}.{old}.bias"] = tensors.pop(f"{ATTENTION}.{new}.bias")

  _, legacy = load_diffusers_vae(_copy_with(tmp_path, edit))
  _, params = load_diffusers_vae(str(TINY))
  for a, b in zip(jax.tree.leaves(legacy), jax.tree.leaves(params), strict=True):
    np.testing.assert_array_equal(a, b)
  assert jax.tree.structure(legacy) == jax.tree.structure(params)


def test_missing_unexpected_and_misshaped_keys_all_named(tmp_path):
  dropped = "encoder.down_blocks.2.resnets.1.norm2.bias"
  extra = "encoder.down_blocks.3.downsamplers.0.conv.weight"  # the last level has none
  reshaped = f"{ATTENTION}.to_k.weight"

  def edit(tensors):
    del tensors[dropped]
    tensors[extra] = np.zeros((16, 16, 3, 3), np.float32)
    tensors[reshaped] = np.zeros((16, 8), np.float32)

  with pytest.raises(CheckpointConversionError) as info:
    load_diffusers_vae(_copy_with(tmp_path, edit))
  message = str(info.value)
  assert f"missing keys (1): {dropped}" in message
  assert f"unexpected keys (1): {extra}" in message
  assert f"{reshaped}: expected (16, 16), found (16, 8)" in message


@pytest.mark.parametrize(
  "edit, match",
  [
    (lambda t: t.pop("quant_conv.bias"), "missing keys.*quant_conv.bias"),
    (lambda t: t.update(extra=np.zeros(3, np.float32)), "unexpected keys.*extra"),
    (
      lambda t: t.update({"decoder.conv_out.weight": np.zeros((3, 8, 3, 3, 1), np.float32)}),
      r"decoder.conv_out.weight: expected \(3, 8, 3, 3\), found \(3, 8, 3, 3, 1\)",
    ),
  ],
)
def test_each_key_problem_raises(tmp_path, edit, match):
  with pytest.raises(CheckpointConversionError, match=match):
    load_diffusers_vae(_copy_with(tmp_path, edit))


@pytest.mark.parametrize(
  "edit, match",
  [
    (
      lambda c: c.update(down_block_types=["AttnDownEncoderBlock2D"] * 4),
      "block types.*AttnDownEncoderBlock2D",
    ),
    (lambda c: c.update(act_fn="gelu", latents_mean=[0.0] * 4), "act_fn='gelu'.*latents_mean"),
    (lambda c: c.update(up_block_types=["UpDecoderBlock2D"] * 3), "4 down blocks, 3 up blocks"),
    (lambda c: c.update(norm_num_groups=3), "Cannot build"),
    (lambda c: c.update(_class_name="VQModel"), "describes a VQModel"),
  ],
)
def test_config_problems(tmp_path, edit, match):
  with pytest.raises(CheckpointConversionError, match=match):
    load_diffusers_vae(_copy_with(tmp_path, edit_config=edit))


def test_quant_convs_are_optional(tmp_path):
  def edit_config(config):
    config.update(use_quant_conv=False, use_post_quant_conv=False)

  def edit_tensors(tensors):
    for name in ("quant_conv", "post_quant_conv"):
      del tensors[f"{name}.weight"], tensors[f"{name}.bias"]

  vae_kwargs, params = load_diffusers_vae(_copy_with(tmp_path, edit_tensors, edit_config))
  assert not vae_kwargs["use_quant_conv"] and "quant_conv" not in params
