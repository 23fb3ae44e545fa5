"""Tests for t2i_jax.convert.stable_diffusion, load_hf_clip_text and experiments/convert.py's
diffusers flags against a tiny random diffusers StableDiffusionPipeline.

tests/fixtures/tiny_sd_pipeline (made by make_sd_pipeline_fixture.py with torch, diffusers and
transformers) is the pipeline folder plus reference.npz: diffusers' token ids, text states, final
latents and decoded images for a fixed prompt, negative prompt and initial latents (DDIM, 3
steps, guidance 7.5). These tests need none of those libraries.
"""

import functools
import json
import pathlib
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from child_process import REPO_ROOT, run_python
from PIL import Image
from safetensors.numpy import load_file, save_file

from t2i_jax.convert.diffusers_vae import load_diffusers_vae
from t2i_jax.convert.exports import export_diffusers_vae, export_hf_clip
from t2i_jax.convert.hf_clip import (
  CheckpointConversionError,
  abstract_text_params,
  hf_name_table,
  hf_text_name_table,
  load_hf_clip_text,
  text_kwargs_from_hf_config,
)
from t2i_jax.convert.stable_diffusion import (
  check_parts,
  convert_stable_diffusion,
  default_resolution,
  read_stable_diffusion,
  read_tokenizer,
  schedule_from_config,
)
from t2i_jax.diffusion import timesteps
from t2i_jax.ldm.parts import sample_latents
from t2i_jax.ldm.task import clip_text_kwargs
from t2i_jax.models.clip import TextTransformer
from t2i_jax.pipelines import TextToImage
from t2i_jax.vae.export import load_vae

FIXTURE = REPO_ROOT / "tests" / "fixtures" / "tiny_sd_pipeline"
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def reference():
  return dict(np.load(FIXTURE / "reference.npz"))


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
  return convert_stable_diffusion(str(FIXTURE), str(tmp_path_factory.mktemp("sd") / "pipeline"))


def _copy(tmp_path):
  """A writable copy of the fixture folder."""
  folder = tmp_path / "sd"
  shutil.copytree(FIXTURE, folder, ignore=shutil.ignore_patterns("reference.npz"))
  return folder


def _edit_json(path, **changes):
  path.write_text(json.dumps(json.loads(path.read_text()) | changes))


@functools.partial(jax.jit, static_argnums=0)
def _text_states(module, params, tokens):
  return module.apply({"params": params}, tokens)[0]


def test_clip_text_model_matches_transformers(reference):
  kwargs, params = load_hf_clip_text(str(FIXTURE / "text_encoder"))
  # The kwargs t2i_jax.ldm.task builds for a CLIP's text tower; legacy eos_token_id=2 -> argmax.
  clip = dict(vocab_size=544, context_length=77, text_width=32, text_layers=2, text_heads=4)
  assert kwargs == clip_text_kwargs(clip | dict(eos_id=None))
  tokens = np.concatenate([reference["input_ids"], reference["negative_input_ids"]])
  hidden = np.asarray(_text_states(TextTransformer(**kwargs), params, tokens))
  expected = np.concatenate([reference["prompt_embeds"], reference["negative_prompt_embeds"]])
  assert np.abs(hidden - expected).max() < TOLERANCE
  # SD's UNet reads the states after the EOT too, so the padding id matters: zero-padding (as
  # clip.tokenize) instead of SD 1.x's <|endoftext|> changes them.
  eos_rows, columns = np.nonzero(tokens == 543)
  first = np.array([columns[eos_rows == row].min() for row in range(len(tokens))])
  zero_padded = np.where(np.arange(tokens.shape[1]) > first[:, None], 0, tokens)
  hidden = np.asarray(_text_states(TextTransformer(**kwargs), params, zero_padded))
  assert np.abs(hidden - expected).max() > 0.1


def test_clip_text_model_key_layouts(tmp_path):
  _, params = load_hf_clip_text(str(FIXTURE / "text_encoder"))
  folder = tmp_path / "text_encoder"
  shutil.copytree(FIXTURE / "text_encoder", folder)
  tensors = load_file(folder / "model.safetensors")
  # transformers 5 saves CLIPTextModel without the "text_model." prefix.
  save_file(
    {k.removeprefix("text_model."): v for k, v in tensors.items()}, folder / "model.safetensors"
  )
  _, unprefixed = load_hf_clip_text(str(folder))
  jax.tree.map(np.testing.assert_array_equal, unprefixed, params)

  tensors["text_projection.weight"] = np.zeros((16, 32), np.float32)  # CLIPTextModelWithProjection
  del tensors["text_model.final_layer_norm.bias"]
  save_file(tensors, folder / "model.safetensors")
  with pytest.raises(CheckpointConversionError) as info:
    load_hf_clip_text(str(folder))
  message = str(info.value)
  assert "missing keys (1): text_model.final_layer_norm.bias" in message
  assert "unexpected keys (1): text_projection.weight" in message
  _edit_json(folder / "config.json", model_type="clip")
  with pytest.raises(CheckpointConversionError, match="model_type='clip'.*load_hf_clip"):
    load_hf_clip_text(str(folder))


def test_pipeline_matches_diffusers(converted, reference):
  pipe = TextToImage.from_export(converted)
  assert (pipe.resolution, pipe.context_length, pipe.parts.context_mask) == (16, 77, False)
  assert pipe.parts.text_kind == "clip" and pipe.parts.prediction_type == "epsilon"
  # The prompt tokenizer is the folder's BPE, padding with <|endoftext|> as SD 1.x's does.
  tokens = pipe.tokenizer.encode([str(reference["prompt"])], pipe.context_length)
  uncond = pipe.tokenizer.encode([str(reference["negative_prompt"])], pipe.context_length)
  np.testing.assert_array_equal(tokens, reference["input_ids"])
  np.testing.assert_array_equal(uncond, reference["negative_input_ids"])

  num_steps = int(reference["num_steps"])
  # diffusers' DDIM with SD's config: "leading" spacing, steps_offset=1 (our samplers' default).
  np.testing.assert_array_equal(
    timesteps.discrete_timesteps(1000, num_steps, "leading", 1), reference["timesteps"]
  )
  latents = jax.jit(
    functools.partial(sample_latents, parts=pipe.parts, sampler="ddim", num_steps=num_steps)
  )(
    pipe.params,
    pipe.schedule,
    tokens,
    uncond,
    reference["noise"],
    jax.random.key(0),
    jnp.float32(reference["guidance_scale"]),
  )
  assert np.abs(np.asarray(latents) - reference["latents"]).max() < TOLERANCE
  images = jax.jit(pipe.parts.decode_latents)(pipe.params["vae"], latents)
  # diffusers' output_type="np": (decoded / 2 + 0.5) clamped to [0, 1].
  assert np.abs((np.asarray(images) + 1) / 2 - reference["images"]).max() < TOLERANCE


def test_record(converted):
  record = json.loads((pathlib.Path(converted) / "ldm_config.json").read_text())
  assert record["schedule"] == dict(
    kind="scaled_linear",
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    rescale_zero_terminal_snr=False,
  )
  # SD 1.x's PNDMScheduler has no sampler of ours; DDIM is the default.
  assert record["sampler"] == {"name": "ddim", "num_steps": 50, "guidance_scale": 7.5}
  assert record["unet"]["cross_attention"] == [True, True, False]
  assert record["vae"]["scaling_factor"] == pytest.approx(0.18215)
  with pytest.raises(FileExistsError, match="already holds an export"):
    convert_stable_diffusion(str(FIXTURE), converted)


def test_tokenizer_pad_token(tmp_path):
  folder = shutil.copytree(FIXTURE / "tokenizer", tmp_path / "tokenizer")
  assert read_tokenizer(str(folder), 77).pad_id == 543  # <|endoftext|>, as SD 1.x
  _edit_json(folder / "tokenizer_config.json", pad_token="!", model_max_length=20)
  tokenizer = read_tokenizer(str(folder), 77)  # SD 2.x pads with "!" (id 0)
  assert (tokenizer.pad_id, tokenizer.context_length) == (0, 20)
  for name in ("tokenizer_config.json", "special_tokens_map.json"):
    (folder / name).unlink()
  assert read_tokenizer(str(folder), 77).pad_id == 543  # transformers' default pad token
  (folder / "special_tokens_map.json").write_text(json.dumps({"pad_token": "<pad>"}))
  with pytest.raises(CheckpointConversionError, match="pad token '<pad>'"):
    read_tokenizer(str(folder), 77)


@pytest.mark.parametrize(
  "remove, match",
  [
    ("text_encoder", r"missing text_encoder/\. A diffusers Stable Diffusion folder .* holds "),
    ("tokenizer/merges.txt", "missing tokenizer/merges.txt"),
    (
      "unet/diffusion_pytorch_model.safetensors",
      "missing unet/diffusion_pytorch_model.safetensors [|] unet/.*index.json",
    ),
  ],
)
def test_missing_parts_named(tmp_path, remove, match):
  folder = _copy(tmp_path)
  path = folder / remove
  shutil.rmtree(path) if path.is_dir() else path.unlink()
  with pytest.raises(CheckpointConversionError, match=match):
    read_stable_diffusion(str(folder))


def test_unsupported_scheduler_options_all_named(tmp_path):
  folder = _copy(tmp_path)
  _edit_json(
    folder / "scheduler" / "scheduler_config.json",
    trained_betas=[0.1, 0.2],
    beta_schedule="sigmoid",
    timestep_spacing="trailing",
  )
  with pytest.raises(CheckpointConversionError) as info:
    read_stable_diffusion(str(folder))
  message = str(info.value)
  assert "Unsupported scheduler config" in message and "trained_betas" in message
  assert "beta_schedule='sigmoid'" in message and "timestep_spacing='trailing'" in message
  _edit_json(
    folder / "scheduler" / "scheduler_config.json", _class_name="FlowMatchEulerDiscreteScheduler"
  )
  with pytest.raises(CheckpointConversionError, match="FlowMatchEulerDiscreteScheduler"):
    read_stable_diffusion(str(folder))


def test_mismatched_parts(tmp_path):
  folder = _copy(tmp_path)
  _edit_json(folder / "text_encoder" / "config.json", hidden_size=48, intermediate_size=192)
  _edit_json(folder / "unet" / "config.json", in_channels=9)  # an inpainting UNet
  with pytest.raises(CheckpointConversionError) as info:
    read_stable_diffusion(str(folder))
  message = str(info.value)
  assert "hidden_size=48 differs from the UNet's cross_attention_dim=32" in message
  assert "in_channels, out_channels=(9, 4)" in message


def test_other_pipelines_rejected(tmp_path):
  folder = _copy(tmp_path)
  _edit_json(
    folder / "model_index.json",
    text_encoder_2=["transformers", "CLIPTextModelWithProjection"],
    text_encoder=["transformers", "T5EncoderModel"],
  )
  with pytest.raises(CheckpointConversionError) as info:
    read_stable_diffusion(str(folder))
  message = str(info.value)
  assert "text_encoder is ('transformers', 'T5EncoderModel')" in message
  assert "extra component text_encoder_2" in message


# Released Stable Diffusion configs (text_encoder/ and scheduler/ of v1-5 and 2-1).
SD15_TEXT = dict(
  architectures=["CLIPTextModel"],
  bos_token_id=0,
  eos_token_id=2,
  hidden_act="quick_gelu",
  hidden_size=768,
  intermediate_size=3072,
  layer_norm_eps=1e-05,
  max_position_embeddings=77,
  model_type="clip_text_model",
  num_attention_heads=12,
  num_hidden_layers=12,
  pad_token_id=1,
  projection_dim=768,
  vocab_size=49408,
)
SD21_TEXT = SD15_TEXT | dict(
  hidden_act="gelu", hidden_size=1024, intermediate_size=4096, num_attention_heads=16,
  num_hidden_layers=23, projection_dim=512,
)  # fmt: skip
SD15_SCHEDULER = dict(
  _class_name="PNDMScheduler",
  beta_end=0.012,
  beta_schedule="scaled_linear",
  beta_start=0.00085,
  clip_sample=False,
  num_train_timesteps=1000,
  set_alpha_to_one=False,
  skip_prk_steps=True,
  steps_offset=1,
  trained_betas=None,
)
SD21_SCHEDULER = SD15_SCHEDULER | dict(_class_name="DDIMScheduler", prediction_type="v_prediction")


def test_released_sd_configs():
  shapes = json.loads((REPO_ROOT / "tests" / "fixtures" / "diffusers_sd_shapes.json").read_text())
  vae = shapes["sd15_vae"]["config"]
  for unet, text, scheduler, size, prediction, sampler in (
    (shapes["sd15_unet"]["config"], SD15_TEXT, SD15_SCHEDULER, 512, "epsilon", "ddim"),
    (shapes["sd21_unet"]["config"], SD21_TEXT, SD21_SCHEDULER, 768, "v_prediction", "ddim"),
  ):
    check_parts(unet, vae, text, "sd")
    assert default_resolution(unet, vae) == size
    schedule, prediction_type, default_sampler = schedule_from_config(scheduler, "scheduler")
    assert (prediction_type, default_sampler) == (prediction, sampler)
    assert schedule["kind"] == "scaled_linear" and schedule["beta_end"] == 0.012
  with pytest.raises(
    CheckpointConversionError, match="hidden_size=1024 differs .*cross_attention_dim=768"
  ):
    check_parts(shapes["sd15_unet"]["config"], vae, SD21_TEXT, "sd")
  # SD 1.x's CLIP ViT-L/14 text tower: 123,060,480 parameters in transformers.
  kwargs = text_kwargs_from_hf_config(SD15_TEXT)
  assert kwargs["eos_id"] is None and kwargs["activation"] == "quick_gelu"
  expected = abstract_text_params(kwargs)
  assert sum(int(np.prod(s.shape)) for s in expected.values()) == 123_060_480
  assert sorted(path for path, _ in hf_text_name_table(12).values()) == sorted(expected)
  # One table: CLIPModel's text entries are CLIPTextModel's, nested under "text/".
  clip_text = {k: v for k, v in hf_name_table(12, 1).items() if v[0].startswith("text/")}
  assert clip_text == {k: (f"text/{p}", how) for k, (p, how) in hf_text_name_table(12).items()}


def test_vae_export(tmp_path):
  out = tmp_path / "vae"
  export_diffusers_vae(str(FIXTURE / "vae"), str(out))
  vae, params = load_vae(str(out))
  kwargs, expected = load_diffusers_vae(str(FIXTURE / "vae"))
  assert vae.block_out_channels == kwargs["block_out_channels"] and vae.downsampling_factor == 2
  jax.tree.map(np.testing.assert_array_equal, params, expected)


@pytest.mark.parametrize("convert", ["sd", "vae", "clip"])
def test_converters_never_write_into_a_non_empty_folder(tmp_path, convert):
  """E.g. --out=<a training workdir>: its tokenizer.json would be replaced. Nothing is touched."""
  workdir = tmp_path / "run"
  workdir.mkdir()
  (workdir / "tokenizer.json").write_text("the run's own tokenizer")
  source = {
    "sd": FIXTURE,
    "vae": FIXTURE / "vae",
    "clip": REPO_ROOT / "tests/fixtures/hf_clip_tiny",
  }
  fn = {"sd": convert_stable_diffusion, "vae": export_diffusers_vae, "clip": export_hf_clip}
  with pytest.raises(FileExistsError, match="exists and is not empty"):
    fn[convert](str(source[convert]), str(workdir))
  assert sorted(p.name for p in workdir.iterdir()) == ["tokenizer.json"]
  assert (workdir / "tokenizer.json").read_text() == "the run's own tokenizer"
  fn[convert](str(source[convert]), str(tmp_path / "empty"))  # an absent folder is fine


@pytest.mark.slow
def test_cli_convert_and_sample(tmp_path):
  out = tmp_path / "sd"
  result = run_python(["-m", "experiments.convert", f"--diffusers_sd={FIXTURE}", f"--out={out}"])
  assert result.returncode == 0, result.stderr[-3000:]
  samples = tmp_path / "samples"
  result = run_python(
    [
      "-m",
      "experiments.sample",
      f"--workdir={out}",
      "--prompt=a red circle",
      "--negative_prompt=blue square",
      "--num_steps=2",
      f"--out={samples}",
    ]
  )
  assert result.returncode == 0, result.stderr[-3000:]
  pngs = sorted(p.name for p in samples.glob("*.png"))
  assert pngs == ["000_a_red_circle.png", "grid.png"]
  assert Image.open(samples / pngs[0]).size == (16, 16)

  bad = run_python(["-m", "experiments.convert", f"--diffusers_sd={tmp_path}", f"--out={out}_2"])
  assert bad.returncode != 0 and "Traceback" not in bad.stderr
  assert "error:" in bad.stderr and "missing model_index.json" in bad.stderr
