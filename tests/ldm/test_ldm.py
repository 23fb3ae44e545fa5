"""The autoencoder and latent diffusion through the one train loop, and the TextToImage API."""

import shutil

import jax
import numpy as np
import pytest
from child_process import run_python
from PIL import Image

from configs import cgan_shapes, ldm_shapes, vae_shapes
from t2i_jax.diffusion import samplers
from t2i_jax.ldm import export as ldm_export
from t2i_jax.pipelines import TextToImage
from t2i_jax.train import loop
from t2i_jax.train.families import build_task
from t2i_jax.vae import export as vae_export
from t2i_jax.vae.task import latent_std

PROMPTS = ["a large red star in the center", "a small blue circle in the top left"]


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("vae")
  state = loop.train_and_evaluate(vae_shapes.get_config("tiny"), str(workdir))
  return state, workdir


def ldm_config(vae_workdir):
  config = ldm_shapes.get_config("tiny")
  config.model.vae_checkpoint = str(vae_workdir)
  return config


@pytest.fixture(scope="module")
def ldm_run(vae_run, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("ldm")
  state = loop.train_and_evaluate(ldm_config(vae_run[1]), str(workdir))
  return state, workdir


@pytest.fixture(scope="module")
def pipe(ldm_run):
  return TextToImage.from_workdir(str(ldm_run[1]))


@pytest.fixture(scope="module")
def text_sensitive_pipe(pipe):
  """The tiny pipeline with every UNet weight perturbed. After 2 training steps its zero-initialised
  transformer outputs still ignore the text, so no prompt could change a pixel."""
  leaves, treedef = jax.tree.flatten(pipe.params["unet"])
  keys = jax.random.split(jax.random.key(1), len(leaves))
  noisy = [
    x + 0.2 * jax.random.normal(k, x.shape, x.dtype) for x, k in zip(leaves, keys, strict=True)
  ]
  params = dict(pipe.params, unet=jax.tree.unflatten(treedef, noisy))
  return TextToImage(
    pipe.parts, params, pipe.schedule, pipe.tokenizer, pipe.context_length, pipe.resolution
  )


def test_vae_trains_and_exports_with_a_measured_scaling_factor(vae_run):
  state, workdir = vae_run
  assert int(state.step) == 2 and state.disc is not None  # the tiny config trains its D too
  model, params = vae_export.load_vae(str(workdir))
  assert model.downsampling_factor == 4
  task = build_task(vae_shapes.get_config("tiny"))
  config = vae_shapes.get_config("tiny")
  from t2i_jax.data.sources import make_source  # noqa: PLC0415

  images = make_source(config.data, "train").get_batch(np.arange(256))["image"]
  np.testing.assert_allclose(model.scaling_factor, 1 / latent_std(model, params, images), rtol=1e-5)
  grid = jax.jit(task.sample)(state, task.sample_inputs, jax.random.key(0))
  assert grid.shape == (32, 32, 32, 3)  # each of 16 eval images beside its reconstruction
  np.testing.assert_allclose(grid[0::2], task.sample_inputs["image"] / 127.5 - 1, atol=1e-6)


def test_ldm_trains_with_a_frozen_autoencoder_and_exports_a_pipeline(vae_run, ldm_run):
  state, workdir = ldm_run
  assert int(state.step) == 2 and (workdir / "samples" / "step_000002.png").exists()
  _, vae_params = vae_export.load_vae(str(vae_run[1]))
  for got, want in zip(
    jax.tree.leaves(state.frozen["vae"]), jax.tree.leaves(vae_params), strict=True
  ):
    np.testing.assert_array_equal(got, want)
  assert set(state.net.params) == {"unet", "text"}  # the word encoder trains with the UNet
  parts, params, _, tokenizer, record = ldm_export.load_pipeline(str(workdir))
  assert record["resolution"] == 32 and parts.text_kind == "word"
  for got, want in zip(
    jax.tree.leaves(params["unet"]), jax.tree.leaves(state.ema_params["unet"]), strict=True
  ):
    np.testing.assert_array_equal(got, want)


def test_task_generates_for_any_captions_as_the_evaluator_calls_it(vae_run, ldm_run):
  """The sample metrics' path (t2i_jax/eval/suite.py): a fixed batch, deterministic per seed."""
  from t2i_jax.eval import suite  # noqa: PLC0415

  sampler = suite.CaptionSampler(build_task(ldm_config(vae_run[1])), batch_size=4)
  captions = [*PROMPTS, "a small green square in the bottom right"]
  images = sampler(ldm_run[0], captions, seed=3)
  assert images.shape == (3, 32, 32, 3) and images.dtype == np.uint8
  np.testing.assert_array_equal(images, sampler(ldm_run[0], captions, seed=3))
  assert not np.array_equal(images, sampler(ldm_run[0], captions, seed=4))


def test_pipeline_from_export_equals_pipeline_from_checkpoint(ldm_run, pipe, tmp_path):
  workdir = tmp_path / "run"
  shutil.copytree(ldm_run[1], workdir, ignore=shutil.ignore_patterns("export"))
  from_checkpoint = TextToImage.from_workdir(str(workdir))
  a = pipe.generate(PROMPTS, num_steps=2, guidance_scale=2.0)
  b = from_checkpoint.generate(PROMPTS, num_steps=2, guidance_scale=2.0)
  assert len(a) == 2 and all(isinstance(im, Image.Image) and im.size == (32, 32) for im in a)
  np.testing.assert_array_equal(np.asarray(a[0]), np.asarray(b[0]))


def test_compiles_once_per_shape_steps_and_sampler(text_sensitive_pipe):
  pipe = text_sensitive_pipe
  first = pipe.generate(PROMPTS, num_steps=2, guidance_scale=2.0, seed=0)
  again = pipe.generate(PROMPTS, num_steps=2, guidance_scale=6.0, seed=1)
  assert not np.array_equal(np.asarray(first[0]), np.asarray(again[0]))
  fn = pipe._compiled[("ddim", 2, (2, 8, 8, 4), 1)]
  assert fn._cache_size() == 1  # new scale and seed: same compiled function
  negative = pipe.generate(PROMPTS, negative_prompt="a red star", num_steps=2, guidance_scale=2.0)
  assert not np.array_equal(np.asarray(first[0]), np.asarray(negative[0]))
  assert fn._cache_size() == 1  # one negative prompt for all: the same compiled function
  # Guidance moves the image away from the negative prompt: scale 1 ignores it.
  plain = pipe.generate(PROMPTS, num_steps=2, guidance_scale=1.0, seed=0)
  unguided = pipe.generate(PROMPTS, negative_prompt="a red star", num_steps=2, guidance_scale=1.0)
  np.testing.assert_array_equal(np.asarray(plain[0]), np.asarray(unguided[0]))


@pytest.mark.slow
@pytest.mark.parametrize("sampler", sorted(set(samplers.SAMPLERS) - {"ddim"}))
def test_every_sampler_runs_through_the_api(pipe, sampler):
  images = pipe.generate(PROMPTS[:1], num_steps=2, guidance_scale=3.0, sampler=sampler)
  pixels = np.asarray(images[0])
  assert pixels.shape == (32, 32, 3) and pixels.dtype == np.uint8


@pytest.mark.slow
def test_resolution_control(pipe):
  image = pipe.generate(PROMPTS[0], num_steps=2, height=64, width=32)[0]
  assert image.size == (32, 64)  # PIL: (width, height)


def test_bad_generate_arguments_are_named(pipe):
  with pytest.raises(ValueError, match="Unknown sampler 'plms'"):
    pipe.generate("x", sampler="plms")
  with pytest.raises(ValueError, match="multiples of 8"):
    pipe.generate("x", height=36)
  with pytest.raises(ValueError, match="2 negative prompts for 3 prompts"):
    pipe.generate(["a", "b", "c"], negative_prompt=["x", "y"])
  with pytest.raises(ValueError, match="non-empty list of strings"):
    pipe.generate([])


def test_bad_configs_and_folders_are_named(vae_run, tmp_path):
  config = ldm_shapes.get_config("tiny")
  with pytest.raises(ValueError, match="config.model.vae_checkpoint is required"):
    build_task(config)
  config.model.vae_checkpoint = str(tmp_path / "nowhere")
  with pytest.raises(FileNotFoundError, match="is not an exported autoencoder"):
    build_task(config)
  config = ldm_config(vae_run[1])
  config.model.diffusion.prediction_type = "score"
  with pytest.raises(ValueError, match="score"):
    build_task(config)
  config = ldm_config(vae_run[1])
  config.model.text_encoder.name = "clip"
  with pytest.raises(ValueError, match="needs config.model.text_encoder.checkpoint"):
    build_task(config)
  with pytest.raises(FileNotFoundError, match="is not a training workdir"):
    TextToImage.from_workdir(str(tmp_path))
  gan = tmp_path / "gan"
  gan.mkdir()
  (gan / "config.json").write_text(cgan_shapes.get_config("tiny").to_json())
  with pytest.raises(ValueError, match="holds a 'gan' run"):
    TextToImage.from_workdir(str(gan))


@pytest.mark.slow
def test_sample_script_writes_images_and_a_grid(ldm_run, tmp_path):
  prompts_file = tmp_path / "prompts.txt"
  prompts_file.write_text("a large green square in the center\n\n")
  out = tmp_path / "out"
  result = run_python(
    [
      "-m",
      "experiments.sample",
      f"--workdir={ldm_run[1]}",
      f"--prompt={PROMPTS[0]}",
      f"--prompts_file={prompts_file}",
      "--negative_prompt=a blue star",
      "--num_steps=2",
      "--sampler=dpmpp_2m",
      f"--out={out}",
    ],
    timeout=300,
  )
  assert result.returncode == 0, result.stderr[-2000:]
  names = sorted(p.name for p in out.iterdir())
  assert names == [
    "000_a_large_red_star_in_the_center.png",
    "001_a_large_green_square_in_the_center.png",
    "grid.png",
  ]
  bad = run_python(["-m", "experiments.sample", f"--workdir={ldm_run[1]}", f"--out={out}"])
  assert bad.returncode == 1 and "No prompts" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.slow
def test_ldm_with_a_frozen_clip_text_tower(vae_run, tmp_path):
  import flax.linen as nn  # noqa: PLC0415
  import jax.numpy as jnp  # noqa: PLC0415

  from configs import clip_shapes  # noqa: PLC0415
  from t2i_jax.clip import export as clip_export  # noqa: PLC0415
  from t2i_jax.clip.task import clip_kwargs_from_config, make_tokenizer  # noqa: PLC0415
  from t2i_jax.models.clip import CLIP  # noqa: PLC0415

  clip_config = clip_shapes.get_config("tiny")
  tokenizer = make_tokenizer(clip_config)
  kwargs = clip_kwargs_from_config(clip_config, tokenizer)
  tokens = jnp.ones((1, kwargs["context_length"]), jnp.int32)
  images = jnp.zeros((1, kwargs["image_size"], kwargs["image_size"], 3))
  params = nn.unbox(CLIP(**kwargs).init(jax.random.key(0), tokens, images))["params"]
  clip_export.save_clip(str(tmp_path / "clip"), kwargs, params, tokenizer)

  config = ldm_config(vae_run[1])
  config.model.text_encoder.update(name="clip", checkpoint=str(tmp_path / "clip"))
  state = loop.train_and_evaluate(config, str(tmp_path / "ldm"))
  assert set(state.net.params) == {"unet"}  # the CLIP text tower is frozen
  for got, want in zip(
    jax.tree.leaves(state.frozen["text"]), jax.tree.leaves(params["text"]), strict=True
  ):
    np.testing.assert_array_equal(got, want)
  image = TextToImage.from_workdir(str(tmp_path / "ldm")).generate(PROMPTS[0], num_steps=2)[0]
  assert image.size == (32, 32)
