"""Child-process entry for multi-device / multi-host tests: trains a config, saves its params.

python tests/train/tiny_run_main.py --config=configs/cgan_shapes.py:tiny --workdir=D --out=P.npz
"""

import jax
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from t2i_jax.train.loop import train_and_evaluate

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Workdir.")
_OUT = flags.DEFINE_string("out", None, "Where to save the final state's leaves (.npz).")


def main(argv):
  del argv
  state = train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  # Every process holds a full replica of replicated leaves; gather sharded ones (FSDP).
  leaves = [
    np.asarray(jax.experimental.multihost_utils.process_allgather(x, tiled=True))
    for x in jax.tree.leaves(state)
  ]
  shardings = [str(x.sharding.spec) for x in jax.tree.leaves(state)]
  np.savez(_OUT.value, *leaves)
  print("DEVICES", jax.device_count(), "PROCESSES", jax.process_count(), flush=True)
  print("SHARDED_LEAVES", sum("data" in s for s in shardings), flush=True)


if __name__ == "__main__":
  app.run(main)
