"""StackGAN through the one train loop on built-in shapes: Stage I, its export, Stage II on it."""

import json
import shutil

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import clip_shapes, stackgan_shapes
from t2i_jax.clip import export
from t2i_jax.clip.task import clip_kwargs_from_config, make_tokenizer
from t2i_jax.gan import stackgan_steps, stackgan_task
from t2i_jax.gan.conditioning import kl_divergence
from t2i_jax.models.clip import CLIP
from t2i_jax.train import export as export_folder
from t2i_jax.train import loop, summaries
from t2i_jax.train.families import build_task


@pytest.fixture(scope="module")
def clip_export(tmp_path_factory):
  """A random-init tiny shapes CLIP, exported (what configs/clip_shapes.py writes)."""
  config = clip_shapes.get_config("tiny")
  tokenizer = make_tokenizer(config)
  kwargs = clip_kwargs_from_config(config, tokenizer)
  model = CLIP(**kwargs)
  tokens = jnp.ones((1, kwargs["context_length"]), jnp.int32)
  images = jnp.zeros((1, kwargs["image_size"], kwargs["image_size"], 3))
  params = nn.unbox(jax.jit(model.init)(jax.random.key(0), tokens, images))["params"]
  path = tmp_path_factory.mktemp("clip") / "export"
  export.save_clip(str(path), kwargs, params, tokenizer)
  return path


def stage1_config(clip_path):
  config = stackgan_shapes.get_config("tiny")
  config.model.text_encoder.checkpoint = str(clip_path)
  return config


@pytest.fixture(scope="module")
def stage1_run(clip_export, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("stage1")
  state = loop.train_and_evaluate(stage1_config(clip_export), str(workdir))
  return state, workdir


@pytest.fixture(scope="module")
def stage2_run(stage1_run, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("stage2")
  config = stackgan_shapes.get_config("stage2_tiny")
  config.model.stage1_checkpoint = str(stage1_run[1])  # the workdir: its export/ is found
  state = loop.train_and_evaluate(config, str(workdir))
  return state, workdir, config


def test_stage1_trains_samples_and_exports_its_generator(stage1_run, clip_export):
  state, workdir = stage1_run
  assert int(state.step) == 2
  assert (workdir / "samples" / "step_000002.png").exists()
  record = json.loads((workdir / "export" / stackgan_task.STAGE1_CONFIG_FILE).read_text())
  assert record["text_encoder"] == {"name": "clip", "checkpoint": str(clip_export)}
  assert record["generator"] == {"width": 8, "cond_dim": 8, "z_dim": 8}
  saved = export_folder.load_tree(str(workdir / "export"))
  for got, want in zip(
    jax.tree.leaves(saved["params"]), jax.tree.leaves(state.ema_params), strict=True
  ):
    np.testing.assert_array_equal(got, want)
  # The frozen CLIP text tower is in the state (vision tower left out) and did not train.
  _, clip_params, _ = export.load_clip(str(clip_export))
  assert set(state.frozen["text"]) == {k for k in clip_params if not k.startswith("vision")}
  np.testing.assert_array_equal(
    state.frozen["text"]["text_projection"]["kernel"], clip_params["text_projection"]["kernel"]
  )


def test_generator_loss_adds_the_weighted_kl(clip_export):
  config = stage1_config(clip_export)
  config.model.kl_weight = 3.0
  task = build_task(config)
  state = jax.jit(lambda r: nn.unbox(task.init(r)))(jax.random.key(0))
  batch = {
    "image": np.zeros((4, 64, 64, 3), np.uint8),
    "tokens": task.sample_inputs["tokens"][:4],
  }
  _, metrics = jax.jit(task.train_step)(state, batch, jax.random.key(1))
  assert metrics["train/kl"] > 0
  np.testing.assert_allclose(
    metrics["train/g_loss"],
    metrics["train/g_adversarial_loss"] + 3.0 * metrics["train/kl"],
    rtol=1e-5,
  )


def test_stage2_refines_the_frozen_stage1_side_by_side(stage1_run, stage2_run):
  state, workdir, config = stage2_run
  assert int(state.step) == 2 and (workdir / "samples" / "step_000002.png").exists()
  stage1_vars = export_folder.load_tree(str(stage1_run[1] / "export"))
  for got, want in zip(
    jax.tree.leaves(state.frozen["stage1"]), jax.tree.leaves(stage1_vars), strict=True
  ):
    np.testing.assert_array_equal(got, want)  # Stage I did not train

  task = build_task(config)
  images = jax.jit(task.sample)(state, task.sample_inputs, jax.random.key(0))
  n = len(task.sample_inputs["z"])
  assert images.shape == (2 * n, 128, 128, 3) and task.grid_columns == 8
  first = task.sample_captions[0]
  assert first.startswith("I: ") and task.sample_captions[1] == "II: " + first[3:]
  # Every first cell of a pair is the frozen Stage-I image (CA at its mean) upsampled.
  setup_text = stackgan_steps.text_embedding(
    task.train_step.keywords["setup"], state.frozen, task.sample_inputs
  )
  stage1 = stackgan_task._load_stage1(str(stage1_run[1]))
  low, _, _ = stage1["generator"].apply(
    stage1_vars, task.sample_inputs["z"], setup_text, train=False, sample=False
  )
  expected = jax.image.resize(low, (n, 128, 128, 3), "bilinear")
  np.testing.assert_allclose(images[0::2], expected, atol=1e-5)
  assert not np.allclose(images[1::2], images[0::2], atol=1e-3)
  # The grid's sharpness comes with the real images' as its scale.
  metrics = task.evaluate_samples(summaries.to_uint8(np.asarray(images)))
  assert metrics["eval/samples_sharpness_stage2"] >= 0
  real, via_64 = (metrics[f"eval/samples_sharpness_{k}"] for k in ("real", "real_via_64px"))
  assert real > 4 * via_64 > 0


def test_generate_gives_final_images_for_any_captions(stage2_run):
  """The evaluator's path (Task.prompt_inputs + generate): Stage II's refined images only."""
  state, _, config = stage2_run
  task = build_task(config)
  captions = ["a large red triangle in the top left", "a small blue star in the center"]
  inputs = task.prompt_inputs(captions, 0)
  assert inputs["z"].shape == (2, 8) and inputs["tokens"].shape[0] == 2
  images = np.asarray(jax.jit(task.generate)(state, inputs, jax.random.key(0)))
  assert images.shape == (2, 128, 128, 3) and np.all(np.abs(images) <= 1.0)


def test_stage2_inherits_the_text_encoder_and_checks_it(stage1_run, clip_export, tmp_path):
  config = stackgan_shapes.get_config("stage2_tiny")
  config.model.stage1_checkpoint = str(stage1_run[1] / "export")
  setup = build_task(config).train_step.keywords["setup"]
  assert setup.text_source == "clip" and setup.embed_dim == 8
  # A CLIP with another embedding size than Stage I's is refused.
  other = clip_shapes.get_config("tiny")
  other.model.projection_dim = 12
  tokenizer = make_tokenizer(other)
  kwargs = clip_kwargs_from_config(other, tokenizer)
  tokens = jnp.ones((1, kwargs["context_length"]), jnp.int32)
  images = jnp.zeros((1, kwargs["image_size"], kwargs["image_size"], 3))
  params = nn.unbox(CLIP(**kwargs).init(jax.random.key(0), tokens, images))["params"]
  export.save_clip(str(tmp_path / "other"), kwargs, params, tokenizer)
  config.model.text_encoder.checkpoint = str(tmp_path / "other")
  with pytest.raises(ValueError, match="8-d text embeddings but this text encoder gives 12-d"):
    build_task(config)


def test_bad_stage1_exports_are_named(stage1_run, tmp_path):
  config = stackgan_shapes.get_config("stage2_tiny")
  with pytest.raises(ValueError, match="Stage II needs config.model.stage1_checkpoint"):
    build_task(config)
  config.model.stage1_checkpoint = str(tmp_path / "nowhere")
  with pytest.raises(FileNotFoundError, match="is not a Stage-I export: missing"):
    build_task(config)
  bad = tmp_path / "bad"
  shutil.copytree(stage1_run[1] / "export", bad)
  record = json.loads((bad / stackgan_task.STAGE1_CONFIG_FILE).read_text())
  record["generator"]["width"] = 16
  (bad / stackgan_task.STAGE1_CONFIG_FILE).write_text(json.dumps(record))
  config.model.stage1_checkpoint = str(bad)
  with pytest.raises(ValueError, match="does not match its recorded generator.*shape"):
    build_task(config)


def test_config_errors_are_clear(clip_export):
  config = stackgan_shapes.get_config("tiny")
  with pytest.raises(ValueError, match="set config.model.text_encoder.checkpoint"):
    build_task(config)
  config = stage1_config(clip_export)
  config.data.resolution = 128
  with pytest.raises(ValueError, match=r"Stage 1 trains at config.data.resolution in \(64,\)"):
    build_task(config)
  config = stage1_config(clip_export)
  config.model.text_encoder.name = "char_cnn_rnn"
  with pytest.raises(ValueError, match="char-CNN-RNN embeddings exist for CUB only"):
    build_task(config)
  config = stage1_config(clip_export)
  config.model.d_condition = "sum"
  with pytest.raises(ValueError, match="Unknown config.model.d_condition 'sum'; valid: concat"):
    build_task(config)
  with pytest.raises(ValueError, match="Unknown config argument 'stage3'"):
    stackgan_shapes.get_config("stage3")


def test_runs_from_before_d_condition_build_the_papers_discriminator(clip_export):
  config = stage1_config(clip_export)
  assert config.model.d_condition == "projection"  # the shapes configs' choice
  del config.model["d_condition"]  # a config.json written before the option existed
  setup = build_task(config).train_step.keywords["setup"]
  assert setup.discriminator.condition == "concat"


def test_kl_metric_of_eval_matches_the_generator(stage1_run, clip_export):
  state, _ = stage1_run
  task = build_task(stage1_config(clip_export))
  batch = {"image": np.zeros((4, 64, 64, 3), np.uint8), "tokens": task.sample_inputs["tokens"][:4]}
  sums = jax.jit(task.eval_step)(state, batch, jax.random.key(0))
  setup = task.train_step.keywords["setup"]
  embed = stackgan_steps.text_embedding(setup, state.frozen, batch)
  z = jnp.zeros((4, setup.z_dim))
  _, mu, logvar = setup.generator.apply(
    state.generator.variables(), z, embed, train=False, sample=False
  )
  np.testing.assert_allclose(sums["kl_sum"] / 4, kl_divergence(mu, logvar), rtol=1e-5)
  results = task.finalize_eval(jax.device_get(sums))
  assert {"eval/kl", "eval/d_loss", "eval/d_mismatch_accuracy"} <= set(results)
