"""Shared by the evaluation tests: a tiny trained conditional GAN run, a tiny trained shapes
classifier export and random FID Inception params (so nothing needs the real weights)."""

import numpy as np
import pytest
from child_process import REPO_ROOT
from flax import traverse_util

from configs import cgan_shapes, shapes_classifier
from t2i_jax.convert import fid_inception
from t2i_jax.train import loop, summaries

INCEPTION_WEIGHTS = (
  REPO_ROOT.parent / "shared" / "data" / "fid_inception" / "inception-2015-12-05.pt"
)
NUM_SAMPLES = 12  # >= suite.MIN_SAMPLES; one full and one padded batch of the tiny eval batch (8)
TRAIN_METRICS = ("shapes_attributes", "inception_score")  # need no Inception weights


@pytest.fixture(scope="session")
def classifier_export(tmp_path_factory):
  """The export/ folder of a 4-step tiny shapes classifier run."""
  workdir = tmp_path_factory.mktemp("classifier")
  loop.train_and_evaluate(shapes_classifier.get_config("tiny"), str(workdir))
  return str(workdir / "export")


@pytest.fixture(scope="session")
def cgan_run(tmp_path_factory, classifier_export):
  """A tiny text-conditional GAN run with sample metrics every 2 steps; (workdir, logged lines)."""
  workdir = tmp_path_factory.mktemp("cgan")
  config = cgan_shapes.get_config("tiny")
  config.eval.update(
    metrics=TRAIN_METRICS,
    metrics_every=2,
    metrics_num_samples=NUM_SAMPLES,
    classifier_checkpoint=classifier_export,
  )
  logged = []
  log_metrics = summaries.log_metrics

  def record(step, metrics):
    logged.append((step, dict(metrics)))
    log_metrics(step, metrics)

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(summaries, "log_metrics", record)
    loop.train_and_evaluate(config, str(workdir))
  return str(workdir), logged


@pytest.fixture(scope="session")
def random_inception_params():
  """He-scaled random convs, unit batch-norm statistics: finite, image-dependent features."""
  rng = np.random.default_rng(0)
  params = {}
  for path, spec in fid_inception.abstract_params().items():
    if path.endswith("/kernel"):
      fan_in = int(np.prod(spec.shape[:-1]))
      value = rng.normal(0, np.sqrt(2 / fan_in), spec.shape)
    elif path.endswith(("/scale", "/var")):
      value = np.ones(spec.shape)
    else:
      value = np.zeros(spec.shape)
    params[path] = value.astype(np.float32)
  return traverse_util.unflatten_dict(params, sep="/")


@pytest.fixture(scope="session")
def real_inception_params():
  if not INCEPTION_WEIGHTS.is_file():
    pytest.skip(f"no FID Inception weights at {INCEPTION_WEIGHTS} (shared data absent)")
  return fid_inception.load_inception_params(INCEPTION_WEIGHTS)
