"""What a denoiser predicts: eps ("epsilon"), v ("v_prediction") or x_0 ("sample").

With x_t = alpha_t x_0 + sigma_t eps (alpha_t = sqrt(alpha_bar_t), sigma_t = sqrt(1 - alpha_bar_t),
so alpha_t^2 + sigma_t^2 = 1) and v = alpha_t eps - sigma_t x_0 (Salimans & Ho 2022), each of the
three determines the other two given x_t. The names are diffusers' `prediction_type` values.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from t2i_jax.diffusion import schedules

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


def check_prediction_type(prediction_type: str) -> None:
  if prediction_type not in PREDICTION_TYPES:
    raise ValueError(
      f"Unknown prediction_type {prediction_type!r}; valid types are {PREDICTION_TYPES}."
    )


def training_target(
  prediction_type: str,
  schedule: schedules.Schedule,
  x0: jax.Array,
  noise: jax.Array,
  t: jax.Array,
) -> jax.Array:
  """The regression target for x_t = add_noise(schedule, x0, noise, t). float[B, ...]; t: int[B]."""
  check_prediction_type(prediction_type)
  if prediction_type == "epsilon":
    return noise
  if prediction_type == "v_prediction":
    return schedules.velocity(schedule, x0, noise, t)
  return x0


def to_x0_eps(
  prediction_type: str,
  model_output: jax.Array,
  x_t: jax.Array,
  alpha_t: jax.Array,
  sigma_t: jax.Array,
) -> tuple[jax.Array, jax.Array]:
  """(x0_pred, eps_pred) from a model output at x_t, with diffusers' formulas and op order.

  model_output, x_t: float[B, ...]; alpha_t, sigma_t: scalars or broadcastable to x_t.
    epsilon:       x_0 = (x_t - sigma_t eps) / alpha_t
    v_prediction:  x_0 = alpha_t x_t - sigma_t v,   eps = alpha_t v + sigma_t x_t
    sample:        eps = (x_t - alpha_t x_0) / sigma_t
  """
  check_prediction_type(prediction_type)
  if prediction_type == "epsilon":
    return (x_t - sigma_t * model_output) / alpha_t, model_output
  if prediction_type == "v_prediction":
    return alpha_t * x_t - sigma_t * model_output, alpha_t * model_output + sigma_t * x_t
  return model_output, (x_t - alpha_t * model_output) / sigma_t


def clip_x0(
  x0: jax.Array,
  clip_sample: float | None = None,
  dynamic_threshold: tuple[float, float] | None = None,
) -> jax.Array:
  """Optionally clip a predicted x_0: float[B, ...] -> same. Both off by default (as SD).

  clip_sample: clip to [-clip_sample, clip_sample] (diffusers' clip_sample + clip_sample_range).
  dynamic_threshold: (ratio, max_value) for Imagen's dynamic thresholding (Saharia et al. 2022):
    per example s = clip(quantile(|x_0|, ratio), 1, max_value) and x_0 -> clip(x_0, -s, s) / s
    (diffusers' thresholding + dynamic_thresholding_ratio + sample_max_value). Takes precedence
    over clip_sample, as in diffusers. Meant for pixel-space models, not latents.
  """
  if dynamic_threshold is not None:
    ratio, max_value = dynamic_threshold
    flat = x0.reshape(x0.shape[0], -1)
    s = jnp.clip(jnp.quantile(jnp.abs(flat), ratio, axis=1), 1.0, max_value)[:, None]
    return (jnp.clip(flat, -s, s) / s).reshape(x0.shape)
  if clip_sample is not None:
    return jnp.clip(x0, -clip_sample, clip_sample)
  return x0
