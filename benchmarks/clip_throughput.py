"""CLIP forward and train-step throughput on a tiny config, batch 32.

Text: vocab 1000, width 128, 2 layers, 4 heads, context 32. Vision: image 32, patch 4, width 128,
2 layers, 4 heads. Projection 64. Prints compile times and examples/s after warm-up.

  python benchmarks/clip_throughput.py [--batch_size=32 --steps=20]
"""

import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from t2i_jax.clip import task as clip_task
from t2i_jax.models.clip import CLIP, normalize_images
from t2i_jax.train.optim import make_optimizer

_BATCH = flags.DEFINE_integer("batch_size", 32, "Batch size.")
_STEPS = flags.DEFINE_integer("steps", 20, "Timed iterations.")
_WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed iterations after compilation.")

TINY = dict(
  vocab_size=1000,
  context_length=32,
  text_width=128,
  text_layers=2,
  text_heads=4,
  image_size=32,
  patch_size=4,
  vision_width=128,
  vision_layers=2,
  vision_heads=4,
  projection_dim=64,
  eos_id=999,
)


def _time(fn, *args):
  """(compile seconds, seconds per call after warm-up) of a jitted fn."""
  t0 = time.perf_counter()
  compiled = fn.lower(*args).compile()
  compile_s = time.perf_counter() - t0
  out = None
  for _ in range(_WARMUP.value):
    out = compiled(*args)
  jax.block_until_ready(out)
  t0 = time.perf_counter()
  for _ in range(_STEPS.value):
    out = compiled(*args)
  jax.block_until_ready(out)
  return compile_s, (time.perf_counter() - t0) / _STEPS.value


def main(argv):
  del argv
  b = _BATCH.value
  model = CLIP(**TINY)
  tx = make_optimizer("adamw", 1e-3, 0.9, 0.98, 0.1)
  rng = np.random.default_rng(0)
  tokens = rng.integers(1, 998, (b, 32)).astype(np.int32)
  tokens[:, -1] = 999  # end-of-text
  images = rng.integers(0, 256, (b, 32, 32, 3), dtype=np.uint8)
  batch = {"tokens": jnp.asarray(tokens), "image": jnp.asarray(images)}
  state = jax.jit(
    lambda r: clip_task.init(r, model=model, tx=tx, context_length=32, image_size=32)
  )(jax.random.key(0))

  forward = jax.jit(
    lambda params, t, i: model.apply({"params": params}, t, normalize_images(i))["logits_per_image"]
  )
  fwd_compile, fwd_s = _time(forward, state.clip.params, batch["tokens"], batch["image"])
  step = jax.jit(lambda s, bt, r: clip_task.train_step(s, bt, r, model=model, tx=tx))
  step_compile, step_s = _time(step, state, batch, jax.random.key(1))

  print(f"device: {jax.devices()[0].device_kind} x {jax.device_count()} ({jax.default_backend()})")
  print(f"CLIP tiny (text 128x2, vision 32px/patch 4 128x2, proj 64), batch {b}")
  print(f"forward:    compile {fwd_compile:.2f} s, {1e3 * fwd_s:.2f} ms, {b / fwd_s:.0f} pairs/s")
  print(
    f"train step: compile {step_compile:.2f} s, {1e3 * step_s:.2f} ms, {b / step_s:.0f} pairs/s"
  )


if __name__ == "__main__":
  app.run(main)
