"""Latent-diffusion UNet: train-step throughput and DDIM-with-guidance sampling latency.

UNet: channels (64, 128, 128), one ResnetBlock per level, cross-attention at the first two
levels (and the mid block), 8 heads, 32 GroupNorm groups. Train step: batch 8 of 32x32x4 latents
with text states [8, 16, 128]; noise added at uniform random timesteps of SD's scaled-linear
schedule, MSE to the noise, Adam (optax). Sampling: batch 4, DDIM (``t2i_jax.diffusion.samplers``,
eta 0, 50 steps) with classifier-free guidance 7.5, i.e. 50 UNet calls on 8 examples, compiled as
one function. Compile times are reported apart from the steady-state figures.

  python benchmarks/unet_throughput.py [--dtype=bfloat16 --steps=10 --sample_runs=2 --remat]
"""

import functools
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from absl import app, flags

from t2i_jax.diffusion import samplers
from t2i_jax.diffusion.schedules import add_noise, make_schedule
from t2i_jax.models.unet import UNet

_BATCH = flags.DEFINE_integer("batch_size", 8, "Train batch size.")
_SAMPLE_BATCH = flags.DEFINE_integer("sample_batch_size", 4, "Images per sampling run.")
_DDIM_STEPS = flags.DEFINE_integer("ddim_steps", 50, "DDIM steps per sampling run.")
_GUIDANCE = flags.DEFINE_float("guidance_scale", 7.5, "Classifier-free guidance scale.")
_STEPS = flags.DEFINE_integer("steps", 10, "Timed train steps.")
_WARMUP = flags.DEFINE_integer("warmup", 1, "Untimed train steps after compilation.")
_SAMPLE_RUNS = flags.DEFINE_integer("sample_runs", 2, "Timed sampling runs.")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "UNet compute dtype.")
_REMAT = flags.DEFINE_bool("remat", False, "Rematerialise each block in the backward pass.")

LATENT, TEXT_LENGTH, TEXT_DIM = (32, 32, 4), 16, 128
UNET = dict(
  out_channels=4,
  block_out_channels=(64, 128, 128),
  cross_attention=(True, True, False),
  layers_per_block=1,
  num_heads=8,
  norm_num_groups=32,
)


def _timed(fn, *args):
  """(compile seconds, compiled fn)."""
  start = time.perf_counter()
  compiled = jax.jit(fn).lower(*args).compile()
  return time.perf_counter() - start, compiled


def main(argv):
  del argv
  dtype = jnp.dtype(_DTYPE.value)
  unet = UNet(**UNET, dtype=dtype, remat=_REMAT.value)
  schedule = make_schedule("scaled_linear", beta_start=0.00085, beta_end=0.012)
  tx = optax.adam(1e-4)
  b = _BATCH.value
  keys = jax.random.split(jax.random.key(0), 4)
  latents = jax.random.normal(keys[0], (b, *LATENT))
  text = jax.random.normal(keys[1], (b, TEXT_LENGTH, TEXT_DIM))

  start = time.perf_counter()
  params = jax.jit(lambda r: nn.unbox(unet.init(r, latents, jnp.zeros((b,)), text)["params"]))(
    keys[2]
  )
  opt_state = jax.block_until_ready(tx.init(params))
  init_s = time.perf_counter() - start
  count = sum(x.size for x in jax.tree.leaves(params))

  def train_step(params, opt_state, latents, text, rng):
    t_key, n_key = jax.random.split(rng)
    t = jax.random.randint(t_key, (latents.shape[0],), 0, schedule.num_train_timesteps)
    noise = jax.random.normal(n_key, latents.shape)

    def loss_fn(p):
      pred = unet.apply({"params": p}, add_noise(schedule, latents, noise, t), t, text, train=True)
      return jnp.mean(jnp.square(pred - noise))

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  step_compile, step = _timed(train_step, params, opt_state, latents, text, keys[3])
  for i in range(_WARMUP.value):
    params, opt_state, loss = step(params, opt_state, latents, text, jax.random.key(i))
  jax.block_until_ready(loss)
  start = time.perf_counter()
  for i in range(_STEPS.value):
    params, opt_state, loss = step(params, opt_state, latents, text, jax.random.key(i))
  jax.block_until_ready(loss)
  step_s = (time.perf_counter() - start) / _STEPS.value

  sb = _SAMPLE_BATCH.value
  cond, uncond = text[:sb], jnp.zeros((1, TEXT_LENGTH, TEXT_DIM))  # uncond: one "empty" prompt

  def generate(params, noise, cond, uncond):
    denoise = functools.partial(lambda p, x, t, c: unet.apply({"params": p}, x, t, c), params)
    return samplers.sample(
      "ddim",
      denoise,
      schedule,
      noise,
      cond,
      uncond,
      None,
      num_steps=_DDIM_STEPS.value,
      guidance_scale=_GUIDANCE.value,
    )

  noise = jax.random.normal(jax.random.key(7), (sb, *LATENT))
  sample_compile, sample = _timed(generate, params, noise, cond, uncond)
  start = time.perf_counter()
  for _ in range(_SAMPLE_RUNS.value):
    out = sample(params, noise, cond, uncond)
  jax.block_until_ready(out)
  sample_s = (time.perf_counter() - start) / _SAMPLE_RUNS.value

  print(f"device: {jax.devices()[0].device_kind} x {jax.device_count()} ({jax.default_backend()})")
  print(
    f"UNet {UNET['block_out_channels']}, {count / 1e6:.2f} M params, compute {dtype.name}"
    f"{', remat' if _REMAT.value else ''}; init incl. compile {init_s:.1f} s"
  )
  print(
    f"train step (batch {b}, latents {LATENT}, text [{b}, {TEXT_LENGTH}, {TEXT_DIM}], Adam): "
    f"compile {step_compile:.1f} s, {1e3 * step_s:.1f} ms/step, {b / step_s:.1f} images/s, "
    f"loss {float(loss):.4f}"
  )
  print(
    f"DDIM {_DDIM_STEPS.value} steps + CFG {_GUIDANCE.value} (batch {sb}, {2 * sb} per UNet call): "
    f"compile {sample_compile:.1f} s, {sample_s:.2f} s/batch, "
    f"{1e3 * sample_s / _DDIM_STEPS.value:.1f} ms/step, {sb / sample_s:.2f} images/s"
  )


if __name__ == "__main__":
  app.run(main)
