"""DPM-Solver++(2M) (Lu et al. 2022): second-order multistep solver of the diffusion ODE in x_0.

One jittable function, the loop a `lax.scan` carrying (x, previous x0_pred). It reproduces
diffusers 0.42.1 `DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_order=2,
solver_type="midpoint", lower_order_final=True, final_sigmas_type="zero")`, its defaults: the
first step is first order (no history yet) and so is the last (its target sigma is zero, which
diffusers always takes with a first-order step), the rest second order. Zero-terminal-SNR schedules
read alpha_bar_{T-1} = 0 as 2^-24, as diffusers does. Unsupported: Karras / exponential / beta /
Lu sigmas, SDE variants, lambda_min_clipped, orders other than 2.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from t2i_jax.diffusion import predictions, schedules, timesteps
from t2i_jax.diffusion.sampler_loop import ModelFn, call_model, run_steps
from t2i_jax.diffusion.schedules import Schedule


def _alpha_sigma(sigma: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(alpha_t, sigma_t) of VE noise level sigma: 1 / sqrt(sigma^2 + 1) and sigma / sqrt(...)."""
  alpha = 1 / ((sigma**2 + 1) ** 0.5)
  return alpha, sigma * alpha


def dpmpp_2m(
  model_fn: ModelFn,
  schedule: Schedule,
  noise: jax.Array,
  rng: jax.Array | None = None,
  *,
  num_steps: int,
  spacing: str = "leading",
  steps_offset: int = 1,
  prediction_type: str = "epsilon",
  dynamic_threshold: tuple[float, float] | None = None,
  return_trajectory: bool = False,
):
  """Deterministic DPM-Solver++(2M) from x_T = noise to x_0.

  With lambda = log(alpha_t / sigma_t) and h = lambda_next - lambda_t, one step is
    x_next = (sigma_next / sigma_t) x - alpha_next (e^{-h} - 1) (D0 + D1 / 2),
    D0 = x0_pred,  D1 = (x0_pred - x0_pred_prev) / r,  r = (lambda_t - lambda_prev) / h
  (Lu et al. 2022, Algorithm 2, "midpoint" form); first-order steps drop D1.

  Args:
    model_fn: (x: float[B, ...], t: float32[B]) -> output float[B, ...] of `prediction_type`.
    schedule: the training schedule tables.
    noise: float[B, ...] standard normal, used as x_T (init_noise_sigma is 1).
    rng: unused (the solver is deterministic); accepted for the common sampler signature.
    num_steps, spacing, steps_offset: static (timesteps.dpm_solver_timesteps).
    dynamic_threshold: optional (ratio, max_value) applied to x0_pred (predictions.clip_x0).

  Returns:
    x_0: float[B, ...], or (x_0, xs) with xs: [N, B, ...] after each step if return_trajectory.
  """
  del rng
  ts = timesteps.dpm_solver_timesteps(
    schedule.num_train_timesteps, num_steps, spacing, steps_offset
  )
  n = len(ts)
  ts = jnp.asarray(ts, jnp.int32)
  sigma_table = schedules.sigmas(schedule)
  step_sigmas = jnp.append(sigma_table[ts], 0.0)  # diffusers' final_sigmas_type="zero"

  def step(i, state):
    x, x0_prev = state
    alpha_s0, sigma_s0 = _alpha_sigma(step_sigmas[i])
    alpha_t, sigma_t = _alpha_sigma(step_sigmas[i + 1])
    alpha_s1, sigma_s1 = _alpha_sigma(step_sigmas[jnp.maximum(i - 1, 0)])
    output = call_model(model_fn, x, ts[i])
    x0, _ = predictions.to_x0_eps(prediction_type, output, x, alpha_s0, sigma_s0)
    x0 = predictions.clip_x0(x0, dynamic_threshold=dynamic_threshold)
    # At the last step sigma_t = 0: lambda_t = +inf, e^{-h} = 0 and the update returns x0.
    lambda_t = jnp.log(alpha_t) - jnp.log(sigma_t)
    lambda_s0 = jnp.log(alpha_s0) - jnp.log(sigma_s0)
    lambda_s1 = jnp.log(alpha_s1) - jnp.log(sigma_s1)
    h = lambda_t - lambda_s0
    second_order = (i > 0) & (i < n - 1)
    # r0 is only finite for second-order steps; 1 elsewhere keeps the unused D1 term finite.
    r0 = jnp.where(second_order, (lambda_s0 - lambda_s1) / h, 1.0)
    d1 = (1.0 / r0) * (x0 - x0_prev)
    d1_weight = jnp.where(second_order, 0.5, 0.0)
    x = (
      (sigma_t / sigma_s0) * x
      - (alpha_t * (jnp.exp(-h) - 1.0)) * x0
      - d1_weight * (alpha_t * (jnp.exp(-h) - 1.0)) * d1
    )
    return x, x0

  return run_steps(step, (noise, jnp.zeros_like(noise)), n, return_trajectory)
