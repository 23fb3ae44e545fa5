"""FID Inception feature extraction throughput and the cost of FID on 10k feature vectors.

Extraction: `inception.features` on uint8 299x299 images (no resize), with the real weights when
the file exists (random weights otherwise; the printout says which). Compile time is reported
separately from images/s. FID: streaming statistics of two sets of random 2048-d features in
batches of 1000, then `frechet_distance` (scipy sqrtm of a 2048x2048 product).

  python benchmarks/fid_throughput.py [--batch_size=64 --iters=10 --fid_samples=10000]
  python benchmarks/fid_throughput.py --iters 2   # quick check
"""

import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from t2i_jax.convert import fid_inception
from t2i_jax.eval import fid, inception

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_DEFAULT_WEIGHTS = os.path.join(
  os.path.dirname(_REPO), "shared", "data", "fid_inception", "inception-2015-12-05.pt"
)
_WEIGHTS = flags.DEFINE_string("weights", _DEFAULT_WEIGHTS, "FID Inception .pt/.pth file.")
_BATCH = flags.DEFINE_integer("batch_size", 64, "Images per forward pass.")
_ITERS = flags.DEFINE_integer("iters", 10, "Timed forward passes.")
_WARMUP = flags.DEFINE_integer("warmup", 1, "Untimed forward passes after compilation.")
_FID_SAMPLES = flags.DEFINE_integer("fid_samples", 10_000, "Feature vectors per set for FID.")


def _params():
  """(params, description): the real weights if the file exists, else a random init."""
  path = _WEIGHTS.value
  if os.path.isfile(path):
    t0 = time.perf_counter()
    params = fid_inception.load_inception_params(path)
    return params, f"real weights {path} (loaded in {time.perf_counter() - t0:.2f} s)"
  x = jnp.zeros((1, inception.INPUT_SIZE, inception.INPUT_SIZE, 3), jnp.float32)
  params = jax.jit(inception.InceptionV3().init)(jax.random.key(0), x)["params"]
  return params, f"RANDOM weights: no file at {path}"


def _extraction(params) -> tuple[float, float]:
  """(compile seconds, images per second) of `inception.features`."""
  b = _BATCH.value
  images = jnp.asarray(
    np.random.default_rng(0).integers(0, 256, (b, inception.INPUT_SIZE, inception.INPUT_SIZE, 3)),
    jnp.uint8,
  )
  params = jax.device_put(params)
  t0 = time.perf_counter()
  compiled = inception.features.lower(params, images).compile()
  compile_s = time.perf_counter() - t0
  out = None
  for _ in range(_WARMUP.value):
    out = compiled(params, images)
  jax.block_until_ready(out)
  t0 = time.perf_counter()
  for _ in range(_ITERS.value):
    out = compiled(params, images)
  jax.block_until_ready(out)
  return compile_s, b * _ITERS.value / (time.perf_counter() - t0)


def _fid_cost() -> tuple[float, float, float]:
  """(seconds for both sets' statistics, seconds for the Fréchet distance, the FID value)."""
  rng = np.random.default_rng(1)
  n, d = _FID_SAMPLES.value, inception.FEATURE_DIM
  t0 = time.perf_counter()
  stats = []
  for shift in (0.0, 0.1):
    running = fid.RunningStats()
    for start in range(0, n, 1000):
      running.update(rng.random((min(1000, n - start), d), np.float32) + shift)
    stats.append(running.result())
  stats_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  value = fid.run(*stats)["fid"]
  return stats_s, time.perf_counter() - t0, value


def main(argv):
  del argv
  params, weights = _params()
  compile_s, images_per_s = _extraction(params)
  stats_s, distance_s, value = _fid_cost()
  print(f"device: {jax.devices()[0].device_kind} x {jax.device_count()} ({jax.default_backend()})")
  print(f"Inception: {weights}")
  print(
    f"features, batch {_BATCH.value} of 299x299 uint8: compile {compile_s:.2f} s, "
    f"{images_per_s:.1f} images/s ({_ITERS.value} timed passes)"
  )
  print(
    f"FID of 2 x {_FID_SAMPLES.value} random 2048-d features: statistics {stats_s:.2f} s, "
    f"Fréchet distance (sqrtm) {distance_s:.2f} s, total {stats_s + distance_s:.2f} s "
    f"(FID {value:.3f})"
  )


if __name__ == "__main__":
  app.run(main)
