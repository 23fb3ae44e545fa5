"""DDPM (Ho et al. 2020) and DDIM (Song et al. 2021) samplers over discrete timesteps.

Each is one jittable function: the whole loop is a `lax.scan` with a static step count and the
schedule tables as a pytree argument. Every step reproduces diffusers 0.42.1 `DDPMScheduler.step`
(variance_type="fixed_small") and `DDIMScheduler.step` (use_clipped_model_output=False) with
formulas in their op order; tests/diffusion/test_samplers.py checks whole trajectories against
fixtures from those schedulers. Both take standard-normal `noise` as x_T (init_noise_sigma is 1).

Supported options: spacing / steps_offset (see timesteps.py), prediction_type, clip_sample and
dynamic_threshold (both off by default, as SD), DDIM's eta and set_alpha_to_one. Unsupported:
learned variances, custom timestep lists.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from t2i_jax.diffusion import predictions, timesteps
from t2i_jax.diffusion.sampler_loop import ModelFn, NoiseFn, call_model, gaussian_noise, run_steps
from t2i_jax.diffusion.schedules import Schedule


def ddpm(
  model_fn: ModelFn,
  schedule: Schedule,
  noise: jax.Array,
  rng: jax.Array,
  *,
  num_steps: int,
  spacing: str = "leading",
  steps_offset: int = 1,
  prediction_type: str = "epsilon",
  clip_sample: float | None = None,
  dynamic_threshold: tuple[float, float] | None = None,
  noise_fn: NoiseFn = gaussian_noise,
  return_trajectory: bool = False,
):
  """Ancestral sampling from the DDPM posterior q(x_prev | x_t, x0_pred) over strided timesteps.

  mean = sqrt(alpha_bar_prev) beta_t / (1 - alpha_bar_t) x_0
         + sqrt(alpha_t) (1 - alpha_bar_prev) / (1 - alpha_bar_t) x_t         (Ho et al. eq. 7)
  with alpha_t = alpha_bar_t / alpha_bar_prev, beta_t = 1 - alpha_t (the strided step's beta), and
  std = sqrt((1 - alpha_bar_prev) / (1 - alpha_bar_t) beta_t) ("fixed_small"), no noise at t = 0.

  Args:
    model_fn: (x: float[B, ...], t: float32[B]) -> output float[B, ...] of `prediction_type`.
    schedule: the training schedule tables.
    noise: float[B, ...] standard normal, used as x_T.
    rng: key for the per-step noise (drawn by `noise_fn(rng, i, shape, dtype)`).
    num_steps, spacing, steps_offset: the timesteps, static (timesteps.discrete_timesteps).

  Returns:
    x_0: float[B, ...], or (x_0, xs) with xs: [N, B, ...] after each step if return_trajectory.
  """
  ts = timesteps.discrete_timesteps(schedule.num_train_timesteps, num_steps, spacing, steps_offset)
  prev_ts = np.append(ts[1:], -1)  # diffusers' previous_timestep: the next one visited
  ts, prev_ts = jnp.asarray(ts, jnp.int32), jnp.asarray(prev_ts, jnp.int32)
  alphas_cumprod = schedule.alphas_cumprod

  def step(i, state):
    (x,) = state
    t, prev = ts[i], prev_ts[i]
    alpha_bar = alphas_cumprod[t]
    alpha_bar_prev = jnp.where(prev >= 0, alphas_cumprod[jnp.maximum(prev, 0)], 1.0)
    beta_prod = 1 - alpha_bar
    beta_prod_prev = 1 - alpha_bar_prev
    alpha = alpha_bar / alpha_bar_prev
    beta = 1 - alpha
    output = call_model(model_fn, x, t)
    x0, _ = predictions.to_x0_eps(
      prediction_type, output, x, jnp.sqrt(alpha_bar), jnp.sqrt(beta_prod)
    )
    x0 = predictions.clip_x0(x0, clip_sample, dynamic_threshold)
    x0_coeff = (jnp.sqrt(alpha_bar_prev) * beta) / beta_prod
    x_coeff = jnp.sqrt(alpha) * beta_prod_prev / beta_prod
    mean = x0_coeff * x0 + x_coeff * x
    variance = jnp.maximum(beta_prod_prev / beta_prod * beta, 1e-20)
    std = jnp.where(t > 0, jnp.sqrt(variance), 0.0)
    return (mean + std * noise_fn(rng, i, x.shape, x.dtype),)

  return run_steps(step, (noise,), len(ts), return_trajectory)


def ddim(
  model_fn: ModelFn,
  schedule: Schedule,
  noise: jax.Array,
  rng: jax.Array | None = None,
  *,
  num_steps: int,
  spacing: str = "leading",
  steps_offset: int = 1,
  prediction_type: str = "epsilon",
  eta: float = 0.0,
  set_alpha_to_one: bool = False,
  clip_sample: float | None = None,
  dynamic_threshold: tuple[float, float] | None = None,
  noise_fn: NoiseFn = gaussian_noise,
  return_trajectory: bool = False,
):
  """DDIM (Song et al. 2021, eq. 12): deterministic for eta = 0, DDPM-like for eta = 1.

  x_prev = sqrt(alpha_bar_prev) x_0 + sqrt(1 - alpha_bar_prev - std^2) eps + std z,
  std = eta sqrt((1 - alpha_bar_prev) / (1 - alpha_bar_t) (1 - alpha_bar_t / alpha_bar_prev)),
  with prev = t - T // N (diffusers' rule for every spacing). Below t = 0, alpha_bar_prev is 1
  if set_alpha_to_one else alpha_bar_0 (SD's configs: False, the default here).

  Args as `ddpm`; eta is static, rng may be None when eta == 0. Returns as `ddpm`.
  """
  t_max = schedule.num_train_timesteps
  ts = jnp.asarray(timesteps.discrete_timesteps(t_max, num_steps, spacing, steps_offset), jnp.int32)
  stride = t_max // num_steps
  alphas_cumprod = schedule.alphas_cumprod
  final_alpha_bar = 1.0 if set_alpha_to_one else alphas_cumprod[0]

  def step(i, state):
    (x,) = state
    t = ts[i]
    prev = t - stride
    alpha_bar = alphas_cumprod[t]
    alpha_bar_prev = jnp.where(prev >= 0, alphas_cumprod[jnp.maximum(prev, 0)], final_alpha_bar)
    beta_prod = 1 - alpha_bar
    output = call_model(model_fn, x, t)
    x0, eps = predictions.to_x0_eps(
      prediction_type, output, x, jnp.sqrt(alpha_bar), jnp.sqrt(beta_prod)
    )
    x0 = predictions.clip_x0(x0, clip_sample, dynamic_threshold)
    beta_prod_prev = 1 - alpha_bar_prev
    variance = (beta_prod_prev / beta_prod) * (1 - alpha_bar / alpha_bar_prev)
    std = eta * jnp.sqrt(variance)
    direction = jnp.sqrt(1 - alpha_bar_prev - std**2) * eps
    x = jnp.sqrt(alpha_bar_prev) * x0 + direction
    if eta > 0:
      x = x + std * noise_fn(rng, i, x.shape, x.dtype)
    return (x,)

  return run_steps(step, (noise,), len(ts), return_trajectory)
