"""DCGAN training throughput: one D + one G Adam step per iteration on a fixed device batch.

Defaults follow Radford et al. 2016 / the PyTorch DCGAN example: 64x64 images, nz=100,
ngf=ndf=64, batch 64, Adam(2e-4, b1=0.5). Prints the compile time and images/s after warm-up,
so it can be compared with a PyTorch DCGAN of the same configuration on the same machine.

  python benchmarks/gan_throughput.py [--batch_size=64 --resolution=64 --steps=20]
"""

import time

import jax
import numpy as np
from absl import app, flags

from configs import dcgan_shapes
from t2i_jax import sharding
from t2i_jax.gan.task import build_gan_task

_BATCH = flags.DEFINE_integer("batch_size", 64, "Global batch size.")
_RES = flags.DEFINE_integer("resolution", 64, "Image size: 32, 64 or 128.")
_WIDTH = flags.DEFINE_integer("width", 64, "ngf = ndf.")
_STEPS = flags.DEFINE_integer("steps", 20, "Timed iterations.")
_WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed iterations after compilation.")


def main(argv):
  del argv
  config = dcgan_shapes.get_config()
  config.model.update(g_width=_WIDTH.value, d_width=_WIDTH.value, nz=100)
  config.data.update(resolution=_RES.value, batch_size=_BATCH.value)
  task = build_gan_task(config)
  mesh = sharding.make_mesh(config.mesh.axes, config.mesh.shape)
  rules = sharding.rules_from_config(config.sharding_rules)
  data_sharding = sharding.batch_sharding(mesh, rules)
  repl = sharding.replicated(mesh)
  rng = jax.random.key(0)
  _, shardings = sharding.abstract_state(task.init, rng, mesh, rules)
  state = sharding.init_sharded(task.init, rng, shardings)
  images = np.random.default_rng(0).integers(
    0, 256, (_BATCH.value, _RES.value, _RES.value, 3), dtype=np.uint8
  )
  batch = {"image": jax.device_put(images, data_sharding)}
  step = jax.jit(
    task.train_step,
    in_shardings=(shardings, data_sharding, repl),
    out_shardings=(shardings, repl),
    donate_argnums=0,
  )

  t0 = time.perf_counter()
  compiled = step.lower(state, batch, rng).compile()
  compile_s = time.perf_counter() - t0
  for _ in range(_WARMUP.value):
    state, metrics = compiled(state, batch, rng)
  jax.block_until_ready(metrics)
  t0 = time.perf_counter()
  for _ in range(_STEPS.value):
    state, metrics = compiled(state, batch, rng)
  jax.block_until_ready(metrics)
  elapsed = time.perf_counter() - t0

  print(f"device: {jax.devices()[0].device_kind} x {jax.device_count()} ({jax.default_backend()})")
  print(
    f"DCGAN {_RES.value}x{_RES.value} nz=100 ngf=ndf={_WIDTH.value} batch={_BATCH.value}, "
    "one D + one G Adam step per iteration"
  )
  print(f"compile: {compile_s:.2f} s")
  print(
    f"step: {1e3 * elapsed / _STEPS.value:.1f} ms  ({_STEPS.value} timed after {_WARMUP.value} warm-up)"
  )
  print(f"throughput: {_STEPS.value * _BATCH.value / elapsed:.1f} images/s")


if __name__ == "__main__":
  app.run(main)
