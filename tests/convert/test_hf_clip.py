"""Tests for t2i_jax.convert.hf_clip and experiments/convert.py against transformers' CLIPModel.

The fixtures (tests/fixtures/hf_clip_tiny*, made by make_hf_clip_fixture.py with torch and
transformers) hold tiny random CLIPModels and their outputs; these tests need neither library.
"""

import functools
import json
import shutil

import jax
import numpy as np
import pytest
from child_process import REPO_ROOT, run_python
from safetensors.numpy import load_file, save_file

from t2i_jax.clip.export import load_clip
from t2i_jax.convert.hf_clip import (
  IGNORED_HF_KEYS,
  CheckpointConversionError,
  abstract_params,
  hf_name_table,
  load_hf_clip,
)
from t2i_jax.models.clip import CLIP

FIXTURES = REPO_ROOT / "tests" / "fixtures"
TINY = FIXTURES / "hf_clip_tiny"  # quick_gelu, pools at the first eos_token_id, BPE files
TINY_GELU = FIXTURES / "hf_clip_tiny_gelu"  # gelu, legacy eos_token_id=2: pools at argmax
TOLERANCE = 1e-4


@functools.partial(jax.jit, static_argnums=0)
def _outputs(model, params, token_ids, images):
  """Our counterparts of every stored HF output, in one compiled function."""
  variables = {"params": params}
  text_hidden, text_pooled = model.apply(variables, token_ids, method=CLIP.encode_text)
  vision_hidden, vision_pooled = model.apply(variables, images, method=CLIP.encode_image)
  out = model.apply(variables, token_ids, images)
  return {
    "text_last_hidden_state": text_hidden,
    "text_pooler_output": text_pooled,
    "vision_last_hidden_state": vision_hidden,
    "vision_pooler_output": vision_pooled,
    "text_features": model.apply(variables, token_ids, method=CLIP.embed_text),
    "image_features": model.apply(variables, images, method=CLIP.embed_image),
    **{k: out[k] for k in ("text_embeds", "image_embeds", "logits_per_image", "logits_per_text")},
  }


def _max_diffs(model, params, reference) -> dict[str, float]:
  ours = _outputs(model, params, reference["input_ids"], reference["images"])
  return {k: float(np.abs(np.asarray(v) - reference[k]).max()) for k, v in ours.items()}


@pytest.mark.parametrize(
  "folder, activation, eos_id", [(TINY, "quick_gelu", 543), (TINY_GELU, "gelu", None)]
)
def test_reproduces_transformers_outputs(folder, activation, eos_id):
  clip_kwargs, params = load_hf_clip(str(folder))
  assert clip_kwargs["activation"] == activation and clip_kwargs["eos_id"] == eos_id
  json.dumps(clip_kwargs)  # the exported clip_config.json
  reference = np.load(folder / "outputs.npz")
  diffs = _max_diffs(CLIP(**clip_kwargs), params, reference)
  assert max(diffs.values()) < TOLERANCE, diffs


def test_fixture_tells_activations_apart():
  clip_kwargs, params = load_hf_clip(str(TINY_GELU))
  wrong = CLIP(**(clip_kwargs | {"activation": "quick_gelu"}))
  diffs = _max_diffs(wrong, params, np.load(TINY_GELU / "outputs.npz"))
  assert diffs["text_embeds"] > 1e-3 and diffs["image_embeds"] > 1e-3


def test_name_table_covers_every_param_once():
  clip_kwargs, _ = load_hf_clip(str(TINY))
  table = hf_name_table(clip_kwargs["text_layers"], clip_kwargs["vision_layers"])
  paths = [path for path, _ in table.values()]
  assert len(paths) == len(set(paths))
  assert set(paths) == set(abstract_params(clip_kwargs))
  assert set(table) == set(load_file(TINY / "model.safetensors"))


def _copy_with(tmp_path, edit):
  """A copy of the TINY folder whose tensors are edit(dict of tensors)."""
  folder = tmp_path / "hf"
  shutil.copytree(TINY, folder)
  tensors = load_file(TINY / "model.safetensors")
  edit(tensors)
  save_file(tensors, str(folder / "model.safetensors"))
  return str(folder)


def test_missing_unexpected_and_misshaped_keys_all_named(tmp_path):
  dropped = "text_model.encoder.layers.1.self_attn.k_proj.bias"
  reshaped = "vision_model.encoder.layers.0.mlp.fc1.weight"

  def edit(tensors):
    del tensors[dropped]
    tensors["text_model.encoder.layers.2.mlp.fc1.weight"] = np.zeros((128, 32), np.float32)
    tensors[reshaped] = np.zeros((192, 47), np.float32)

  with pytest.raises(CheckpointConversionError) as info:
    load_hf_clip(_copy_with(tmp_path, edit))
  message = str(info.value)
  assert f"missing keys (1): {dropped}" in message
  assert "unexpected keys (1): text_model.encoder.layers.2.mlp.fc1.weight" in message
  assert f"{reshaped}: expected (192, 48), found (192, 47)" in message


@pytest.mark.parametrize(
  "edit, match",
  [
    (lambda t: t.pop("logit_scale"), "missing keys.*logit_scale"),
    (lambda t: t.update(extra=np.zeros(3, np.float32)), "unexpected keys.*extra"),
    (
      lambda t: t.update({"text_projection.weight": np.zeros((32, 24), np.float32)}),
      r"text_projection.weight: expected \(24, 32\), found \(32, 24\)",
    ),
  ],
)
def test_each_key_problem_raises(tmp_path, edit, match):
  with pytest.raises(CheckpointConversionError, match=match):
    load_hf_clip(_copy_with(tmp_path, edit))


def test_position_id_buffers_are_ignored(tmp_path):
  def edit(tensors):
    for name in IGNORED_HF_KEYS:
      tensors[name] = np.arange(20, dtype=np.int64)[None]

  _, params = load_hf_clip(_copy_with(tmp_path, edit))
  assert jax.tree.structure(params) == jax.tree.structure(load_hf_clip(str(TINY))[1])


def test_config_problems(tmp_path):
  folder = tmp_path / "hf"
  shutil.copytree(TINY_GELU, folder)
  config = json.loads((folder / "config.json").read_text())
  config["vision_config"]["hidden_act"] = "quick_gelu"
  config["text_config"]["intermediate_size"] = 100
  (folder / "config.json").write_text(json.dumps(config))
  with pytest.raises(CheckpointConversionError, match="hidden_act.*intermediate_size=100"):
    load_hf_clip(str(folder))
  (folder / "config.json").write_text(json.dumps({"model_type": "siglip"}))
  with pytest.raises(CheckpointConversionError, match="model_type='siglip'"):
    load_hf_clip(str(folder))
  with pytest.raises(CheckpointConversionError, match="no config.json"):
    load_hf_clip(str(tmp_path))
  (folder / "model.safetensors").write_bytes(b"not a safetensors file")
  (folder / "config.json").write_text((TINY_GELU / "config.json").read_text())
  with pytest.raises(CheckpointConversionError, match="Cannot read"):
    load_hf_clip(str(folder))


def test_convert_cli_end_to_end(tmp_path):
  out = tmp_path / "export"
  result = run_python(["-m", "experiments.convert", f"--hf_clip={TINY}", f"--out={out}"])
  assert result.returncode == 0, result.stderr[-3000:]
  model, params, tokenizer = load_clip(str(out))
  reference = np.load(TINY / "outputs.npz")
  diffs = _max_diffs(model, params, reference)
  assert max(diffs.values()) < TOLERANCE, diffs
  # The folder's own BPE files were used: captions encode as transformers encoded them, up to
  # the EOT (HF pads with EOT, we with 0; pooling reads the first EOT either way).
  ids = tokenizer.encode(list(reference["captions"]), reference["input_ids"].shape[1])
  for row, hf_row in zip(ids, reference["input_ids"], strict=True):
    end = int(np.argmax(hf_row == model.eos_id)) + 1
    np.testing.assert_array_equal(row[:end], hf_row[:end])

  bad = run_python(["-m", "experiments.convert", f"--hf_clip={tmp_path}", f"--out={out}_2"])
  assert bad.returncode != 0
  assert "error:" in bad.stderr and "no config.json" in bad.stderr
  assert "Traceback" not in bad.stderr
