"""Euler and Euler-ancestral samplers (Karras et al. 2022, k-diffusion) over the VE sigmas.

They integrate dx/dsigma = (x - x0_pred) / sigma on x = x_t / alpha_t, whose noise level is
sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t) (schedules.sigmas), interpolated linearly at the
(possibly fractional) inference timesteps. The model sees the VP sample x / sqrt(sigma^2 + 1) and
the timestep, so it is the same denoiser the DDPM-family samplers call.

Each reproduces diffusers 0.42.1 `EulerDiscreteScheduler` (interpolation_type="linear",
final_sigmas_type="zero", s_churn=0, i.e. no noise) and `EulerAncestralDiscreteScheduler` step
for step; tests/diffusion/test_samplers.py checks whole trajectories against fixtures from them.
Deliberate differences: Euler ancestral also accepts prediction_type="sample" (diffusers raises);
no Karras / exponential / beta sigmas, no s_churn. Zero-terminal-SNR schedules read
alpha_bar_{T-1} = 0 as 2^-24, as diffusers does.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from t2i_jax.diffusion import predictions, schedules, timesteps
from t2i_jax.diffusion.sampler_loop import ModelFn, NoiseFn, call_model, gaussian_noise, run_steps
from t2i_jax.diffusion.schedules import Schedule


def step_sigmas(
  schedule: Schedule, num_steps: int, spacing: str, steps_offset: int
) -> tuple[jax.Array, jax.Array]:
  """(timesteps float32[N], sigmas float32[N + 1]): the visited sigmas and a final 0."""
  t_max = schedule.num_train_timesteps
  ts = jnp.asarray(timesteps.euler_timesteps(t_max, num_steps, spacing, steps_offset))
  sigma = jnp.interp(ts, jnp.arange(t_max, dtype=jnp.float32), schedules.sigmas(schedule))
  return ts, jnp.append(sigma, 0.0)


def init_noise_sigma(
  schedule: Schedule, *, num_steps: int, spacing: str = "leading", steps_offset: int = 1
) -> jax.Array:
  """The std of x_T = init_noise_sigma * noise, as diffusers' `init_noise_sigma`. float scalar.

  sqrt(sigma_max^2 + 1) for "leading" spacing (the std of x = x_0 + sigma eps for unit-variance
  data), just sigma_max for "trailing" and "linspace" (diffusers' rule; almost the same when
  sigma_max is large, as it is when those spacings start at t = T - 1).
  """
  max_sigma = jnp.max(step_sigmas(schedule, num_steps, spacing, steps_offset)[1])
  return (max_sigma**2 + 1) ** 0.5 if spacing == "leading" else max_sigma


def _x0(prediction_type: str, output: jax.Array, x: jax.Array, sigma: jax.Array) -> jax.Array:
  """x0_pred on the VE sample x at noise level sigma, in diffusers' op order."""
  predictions.check_prediction_type(prediction_type)
  if prediction_type == "epsilon":
    return x - sigma * output  # x = x_0 + sigma eps
  if prediction_type == "v_prediction":
    # x_0 = alpha x_vp - sigma_vp v with x_vp = x alpha, alpha = 1 / sqrt(sigma^2 + 1).
    return output * (-sigma / (sigma**2 + 1) ** 0.5) + (x / (sigma**2 + 1))
  return output


def euler(
  model_fn: ModelFn,
  schedule: Schedule,
  noise: jax.Array,
  rng: jax.Array | None = None,
  *,
  num_steps: int,
  spacing: str = "leading",
  steps_offset: int = 1,
  prediction_type: str = "epsilon",
  return_trajectory: bool = False,
):
  """Euler's method on the probability-flow ODE (deterministic).

  x_next = x + (x - x0_pred) / sigma * (sigma_next - sigma).

  Args:
    model_fn: (x: float[B, ...], t: float32[B]) -> output float[B, ...] of `prediction_type`; it
      is given x / sqrt(sigma^2 + 1) and the (maybe fractional) timestep.
    schedule: the training schedule tables.
    noise: float[B, ...] standard normal; x_T = init_noise_sigma(...) * noise.
    rng: unused (deterministic); accepted for the common sampler signature.
    num_steps, spacing, steps_offset: static (timesteps.euler_timesteps).

  Returns:
    x_0: float[B, ...], or (x_0, xs) with xs: [N, B, ...] after each step if return_trajectory.
  """
  del rng
  options = dict(spacing=spacing, steps_offset=steps_offset, prediction_type=prediction_type)
  return _sample(model_fn, schedule, noise, None, None, num_steps, return_trajectory, **options)


def euler_ancestral(
  model_fn: ModelFn,
  schedule: Schedule,
  noise: jax.Array,
  rng: jax.Array,
  *,
  num_steps: int,
  spacing: str = "leading",
  steps_offset: int = 1,
  prediction_type: str = "epsilon",
  noise_fn: NoiseFn = gaussian_noise,
  return_trajectory: bool = False,
):
  """Euler ancestral: an Euler step down to sigma_down, then fresh noise of std sigma_up.

  sigma_up = sqrt(sigma_next^2 (sigma^2 - sigma_next^2) / sigma^2) (DDPM's posterior std, in
  k-diffusion terms eta = 1) and sigma_down = sqrt(sigma_next^2 - sigma_up^2), so the sample
  arrives at noise level sigma_next. Arguments and return as `euler`; rng keys the per-step noise
  `noise_fn(rng, i, shape, dtype)`.
  """
  options = dict(spacing=spacing, steps_offset=steps_offset, prediction_type=prediction_type)
  return _sample(model_fn, schedule, noise, rng, noise_fn, num_steps, return_trajectory, **options)


def _sample(
  model_fn,
  schedule,
  noise,
  rng,
  noise_fn,
  num_steps,
  return_trajectory,
  *,
  spacing,
  steps_offset,
  prediction_type,
):
  """The shared loop; noise_fn=None is plain Euler, otherwise Euler ancestral."""
  ts, sigmas = step_sigmas(schedule, num_steps, spacing, steps_offset)
  scale = init_noise_sigma(
    schedule, num_steps=num_steps, spacing=spacing, steps_offset=steps_offset
  )

  def step(i, state):
    (x,) = state
    sigma, sigma_next = sigmas[i], sigmas[i + 1]
    output = call_model(model_fn, x / ((sigma**2 + 1) ** 0.5), ts[i])
    derivative = (x - _x0(prediction_type, output, x, sigma)) / sigma
    if noise_fn is None:
      return (x + derivative * (sigma_next - sigma),)
    sigma_up = (sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2) ** 0.5
    sigma_down = jnp.maximum(sigma_next**2 - sigma_up**2, 0.0) ** 0.5  # >= 0 up to rounding
    x = x + derivative * (sigma_down - sigma)
    return (x + noise_fn(rng, i, x.shape, x.dtype) * sigma_up,)

  return run_steps(step, (noise * scale,), len(ts), return_trajectory)
