"""Trains a model: `python -m experiments.train --config=configs/cgan_shapes.py --workdir=DIR`.

Override any config field with `--config.train.num_steps=200`; rerunning with the same workdir
resumes from its last checkpoint.
"""

from absl import app, flags
from ml_collections import config_flags

from t2i_jax import cli
from t2i_jax.train.loop import USER_ERRORS, train_and_evaluate

_CONFIG = config_flags.DEFINE_config_file(
  "config", None, "Path to a config file, e.g. configs/cgan_shapes.py[:tiny].", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, logs and samples go.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  cli.run(lambda: train_and_evaluate(_CONFIG.value, _WORKDIR.value), USER_ERRORS)


if __name__ == "__main__":
  app.run(main)
