"""CLIP through the one train loop: metrics, export, and plugging into a GAN as a frozen encoder."""

import os

import jax
import numpy as np
import pytest

from configs import cgan_shapes, clip_shapes
from t2i_jax.clip import export, frozen
from t2i_jax.eval import clip_score
from t2i_jax.train import loop


@pytest.fixture(scope="module")
def trained_tiny_clip(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("clip")
  state = loop.train_and_evaluate(clip_shapes.get_config("tiny"), str(workdir))
  return state, workdir


def test_tiny_clip_trains_evaluates_and_exports(trained_tiny_clip):
  state, workdir = trained_tiny_clip
  assert int(state.step) == 4
  assert os.listdir(workdir / "checkpoints")
  model, params, tokenizer = export.load_clip(str(workdir / "export"))
  for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(state.clip.params), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert tokenizer.encode(["a small red circle in the center"], model.context_length).shape == (
    1,
    model.context_length,
  )


def test_eval_reports_retrieval_and_zero_shot_on_both_splits(trained_tiny_clip, monkeypatch):
  state, workdir = trained_tiny_clip
  logged = {}
  monkeypatch.setattr(loop.summaries, "log_metrics", lambda step, m: logged.update(m))
  config = clip_shapes.get_config("tiny")
  config.train.num_steps = 6  # resume two more steps, then evaluate
  loop.train_and_evaluate(config, str(workdir))
  for prefix in ("eval/", "eval_heldout/"):
    for key in ("i2t_r1", "i2t_r5", "t2i_r1", "t2i_r5", "zero_shot_color", "zero_shot_shape"):
      assert 0.0 <= logged[prefix + key] <= 1.0, prefix + key
    assert 0.0 <= logged[prefix + "zero_shot_size"] <= 1.0
    assert 0.0 <= logged[prefix + "zero_shot_position"] <= 1.0


def test_exported_clip_is_a_frozen_text_encoder_for_the_gan(trained_tiny_clip, tmp_path):
  _, workdir = trained_tiny_clip
  config = cgan_shapes.get_config("tiny")
  config.model.text_encoder.update(name="clip", checkpoint=str(workdir / "export"))
  state = loop.train_and_evaluate(config, str(tmp_path))
  _, clip_params, _ = export.load_clip(str(workdir / "export"))
  for network in (state.generator, state.discriminator):
    tower = network.params["text_encoder"][frozen.FROZEN_MODULE]
    for key in tower:
      for a, b in zip(jax.tree.leaves(tower[key]), jax.tree.leaves(clip_params[key]), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # loaded, never trained
  labels = frozen.frozen_labels(state.generator.params)
  assert "frozen" in jax.tree.leaves(labels) and "train" in jax.tree.leaves(labels)


def test_clip_text_encoder_needs_a_checkpoint(tmp_path):
  config = cgan_shapes.get_config("tiny")
  config.model.text_encoder.name = "clip"
  with pytest.raises(ValueError, match="text_encoder.checkpoint"):
    loop.train_and_evaluate(config, str(tmp_path))
  config.model.text_encoder.checkpoint = str(tmp_path / "nowhere")
  with pytest.raises(FileNotFoundError, match="not an exported CLIP folder"):
    loop.train_and_evaluate(config, str(tmp_path))


def test_clip_score_and_r_precision(trained_tiny_clip):
  _, workdir = trained_tiny_clip
  model, params, tokenizer = export.load_clip(str(workdir / "export"))
  from t2i_jax.data.shapes import CaptionedShapes  # noqa: PLC0415

  batch = CaptionedShapes(resolution=64, split="test").get_batch(range(10))
  scores = clip_score.run(model, params, tokenizer, batch["image"], batch["caption"], batch_size=4)
  assert 0.0 <= scores["clip_score"] <= 100.0
  assert 0.0 <= scores["clip_r_precision"] <= 1.0


def test_clip_score_formulas_on_known_embeddings():
  unit = np.eye(3)
  assert clip_score.clip_score_from_embeddings(unit, unit) == pytest.approx(100.0)
  assert clip_score.clip_score_from_embeddings(unit, -unit) == 0.0  # the mean is clamped at 0
  half = np.array([[1.0, 0.0], [0.0, 1.0]])
  tilted = np.array([[np.cos(1.0), np.sin(1.0)], [0.0, 1.0]])
  expected = 100.0 * (np.cos(1.0) + 1.0) / 2
  assert clip_score.clip_score_from_embeddings(half, tilted) == pytest.approx(expected)
  assert clip_score.r_precision_from_embeddings(unit, unit, num_candidates=3) == 1.0
  assert clip_score.r_precision_from_embeddings(unit, unit[[1, 2, 0]], num_candidates=3) == 0.0
