"""Evaluates a trained model: `python -m experiments.evaluate --workdir=DIR --num_samples=N`.

Generates N images for N eval captions with the run's newest checkpoint and writes every metric
(FID, KID, precision/recall, Inception Score, CLIP score, shapes attribute accuracy) to
`DIR/eval/step_<step>.json`, and prints it. Weight paths come from the flags or config.eval.
"""

from absl import app, flags
from ml_collections import config_flags

from t2i_jax import cli
from t2i_jax.eval.evaluate import USER_ERRORS, evaluate

_CONFIG = config_flags.DEFINE_config_file(
  "config", None, "Config to build the model from (default: DIR/config.json).", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "The training run's folder.")
_NUM_SAMPLES = flags.DEFINE_integer("num_samples", 1_000, "Generated (and real) images.")
_METRICS = flags.DEFINE_string(
  "metrics", None, "Comma-separated, e.g. fid,kid (default: every metric whose weights are given)."
)
_INCEPTION = flags.DEFINE_string("inception_weights", None, "FID Inception weights file.")
_CLIP = flags.DEFINE_string("clip_checkpoint", None, "Exported CLIP folder (CLIP score).")
_CLASSIFIER = flags.DEFINE_string(
  "classifier_checkpoint", None, "Exported shapes attribute classifier folder."
)
_CACHE = flags.DEFINE_string("cache_dir", None, "Real reference cache (default: DIR/eval/cache).")
flags.mark_flags_as_required(["workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  cli.run(
    lambda: evaluate(
      _CONFIG.value,
      _WORKDIR.value,
      _NUM_SAMPLES.value,
      metrics=_METRICS.value,
      inception_weights=_INCEPTION.value,
      clip_checkpoint=_CLIP.value,
      classifier_checkpoint=_CLASSIFIER.value,
      cache_dir=_CACHE.value,
    ),
    USER_ERRORS,
  )


if __name__ == "__main__":
  app.run(main)
