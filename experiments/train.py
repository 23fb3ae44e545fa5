"""Trains a model: `python -m experiments.train --config=configs/cgan_shapes.py --workdir=DIR`.

Override any config field with `--config.train.num_steps=200`; rerunning with the same workdir
resumes from its last checkpoint.
"""

import logging as std_logging
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from t2i_jax.train.loop import USER_ERRORS, train_and_evaluate

_CONFIG = config_flags.DEFINE_config_file(
  "config", None, "Path to a config file, e.g. configs/cgan_shapes.py[:tiny].", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, logs and samples go.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  logging.set_verbosity(logging.INFO)
  # Orbax narrates every save at INFO; keep its warnings and everything else.
  logging.get_absl_handler().addFilter(
    lambda record: record.levelno >= std_logging.WARNING or "/orbax/" not in record.pathname
  )
  try:
    train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  except USER_ERRORS as error:
    sys.exit(f"error: {error}")


if __name__ == "__main__":
  app.run(main)
