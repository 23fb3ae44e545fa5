"""The shapes attribute classifier: model shapes at any resolution, training through the one loop,
its export, config checks, and (slow) near-perfect accuracy on clean renders."""

import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import shapes_classifier
from t2i_jax.classifier import export
from t2i_jax.data import shapes
from t2i_jax.eval import shapes_attributes
from t2i_jax.models.shapes_classifier import HEADS, ShapesClassifier
from t2i_jax.train import loop
from t2i_jax.train.families import build_task


def test_any_resolution_gives_one_logit_row_per_image_and_head():
  model = ShapesClassifier(image_size=32, width=4, hidden=8)
  variables = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 32, 32, 3), jnp.uint8))
  params = nn.unbox(variables)["params"]
  for resolution in (32, 64, 128):
    logits = model.apply({"params": params}, jnp.zeros((2, resolution, resolution, 3), jnp.uint8))
    assert {head: v.shape for head, v in logits.items()} == {
      head: (2, len(classes)) for head, classes in HEADS.items()
    }


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("classifier")
  return loop.train_and_evaluate(shapes_classifier.get_config("tiny"), str(workdir)), workdir


def test_tiny_trains_and_exports(tiny_run):
  state, workdir = tiny_run
  assert int(state.step) == 4
  model, params = export.load_classifier(str(workdir))  # the workdir finds its export/
  assert (model.image_size, model.width, model.hidden) == (32, 8, 16)
  for got, want in zip(jax.tree.leaves(params), jax.tree.leaves(state.net.params), strict=True):
    np.testing.assert_array_equal(got, want)
  # Rerunning the finished run leaves the export as it is.
  mtime = os.path.getmtime(workdir / "export" / export.CONFIG_FILE)
  loop.train_and_evaluate(shapes_classifier.get_config("tiny"), str(workdir))
  assert os.path.getmtime(workdir / "export" / export.CONFIG_FILE) == mtime


def test_eval_reports_every_attribute_overall_and_on_the_report_pairs(tiny_run):
  config = shapes_classifier.get_config("tiny")
  task = build_task(config)
  state, _ = tiny_run
  source = shapes.CaptionedShapes(resolution=32, split="test", heldout_pairs=())
  batch = task.preprocess(source.get_batch(range(64)))
  sums = jax.device_get(task.eval_step(state, batch, jax.random.key(0)))
  results = task.finalize_eval({k: float(v) for k, v in sums.items()})
  names = [*HEADS, "all"]
  assert set(results) == {f"eval/{n}_accuracy" for n in names} | {
    f"eval/heldout_pairs_{n}_accuracy" for n in names
  }
  assert all(0.0 <= v <= 1.0 for v in results.values())


def test_config_errors_are_clear(tmp_path):
  config = shapes_classifier.get_config("tiny")
  config.data.heldout_pairs = (("red", "triangle"),)
  with pytest.raises(ValueError, match="heldout_pairs=\\(\\)"):
    build_task(config)
  config = shapes_classifier.get_config("tiny")
  config.data.max_objects = 2
  with pytest.raises(ValueError, match="max_objects=1"):
    build_task(config)
  with pytest.raises(FileNotFoundError, match="configs/shapes_classifier.py"):
    export.load_classifier(str(tmp_path))


@pytest.mark.slow
def test_short_training_reads_clean_renders_almost_perfectly(tmp_path):
  """A shortened full config (~2 min on 2 CPU cores) on held-out test renders at 32 and 64 px,
  including the generators' held-out colour-shape pairs."""
  config = shapes_classifier.get_config()
  config.train.update(num_steps=300, eval_every=300, ckpt_every=300)
  loop.train_and_evaluate(config, str(tmp_path))
  model, params = export.load_classifier(str(tmp_path))
  for resolution in (32, 64):
    for split in ("test", "heldout"):
      source = shapes.CaptionedShapes(resolution=resolution, split=split)
      batch = source.get_batch(range(400))
      result = shapes_attributes.run(model, params, batch["image"], batch["caption"])
      assert min(result.values()) >= 0.97, (resolution, split, result)
