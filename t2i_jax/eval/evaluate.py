"""`evaluate(workdir, num_samples)`: every sample metric of a run's newest checkpoint, as JSON.

Restores the run (its config.json, or a given config), generates N images for N fixed eval
captions with the model's own sampler and runs the `t2i_jax.eval.suite` metrics over them. The
result is written to `<workdir>/eval/step_<step>.json` (beside `checkpoints/`) and printed:
{"step", "num_samples", and every metric key of the suite's docstring}.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence

import jax
import ml_collections

from t2i_jax.convert.fid_inception import InceptionWeightsError
from t2i_jax.eval import suite
from t2i_jax.train import restore
from t2i_jax.train.checkpoint import CheckpointMismatchError
from t2i_jax.train.task import UnsupportedPromptsError

EVAL_DIR = "eval"

# Errors whose message tells a user what to fix; the entry point prints them without a traceback.
USER_ERRORS = (
  suite.EvaluationError,
  UnsupportedPromptsError,
  InceptionWeightsError,
  CheckpointMismatchError,
  FileNotFoundError,  # no workdir, checkpoint, weight file or dataset; the message says which
)


def results_path(workdir: str, step: int) -> str:
  return os.path.join(os.path.abspath(workdir), EVAL_DIR, f"step_{step:06d}.json")


def evaluate(
  config: ml_collections.ConfigDict | None,
  workdir: str,
  num_samples: int,
  *,
  metrics: str | Sequence[str] | None = None,
  inception_weights: str | None = None,
  clip_checkpoint: str | None = None,
  classifier_checkpoint: str | None = None,
  cache_dir: str | None = None,
  inception_params=None,
) -> dict[str, float]:
  """Evaluates the newest checkpoint in `workdir` on `num_samples` generated images.

  Args:
    config: the config to build the model from; None reads `workdir/config.json`.
    workdir: a training run's folder (config.json, checkpoints/).
    num_samples: N, the number of generated and of real images.
    metrics: names (see `suite.METRICS`), e.g. "fid,kid"; None/empty: every metric whose weights
      are configured (config.eval.metrics chooses only what runs during training).
    inception_weights, clip_checkpoint, classifier_checkpoint: weight paths overriding
      config.eval's fields of the same names.
    cache_dir: reference statistics cache; None: config.eval.cache_dir or <workdir>/eval/cache.
    inception_params: an Inception params tree to use instead of a weights file.

  Returns:
    {"step": ..., "num_samples": ..., metric keys: values}, also written as JSON and printed.
  """
  run = restore.restore_latest(workdir, config)
  config = run.config
  metric_suite = suite.MetricSuite(
    config,
    metrics,
    num_samples,
    cache_dir=cache_dir or suite.default_cache_dir(config, workdir),
    inception_weights=inception_weights,
    clip_checkpoint=clip_checkpoint,
    classifier_checkpoint=classifier_checkpoint,
    inception_params=inception_params,
  )
  sampler = suite.CaptionSampler(run.task, config.eval.batch_size)
  logging.info(
    "Evaluating step %d of %s on %d samples: %s.",
    run.step,
    workdir,
    num_samples,
    ", ".join(metric_suite.metrics),
  )
  results = {"step": run.step, "num_samples": num_samples} | metric_suite(run.state, sampler)
  if jax.process_index() == 0:
    path = results_path(workdir, run.step)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
      json.dump(results, f, indent=2)
    print(json.dumps(results, indent=2))  # noqa: T201 (the entry point's output)
    logging.info("Wrote %s", path)
  return results
