"""The denoiser training loss (Ho et al. 2020) with min-SNR weighting and condition dropout.

One pure function: sample t ~ U{0..T-1} and eps ~ N(0, I), noise x_0 to x_t, regress the
prediction-type target, weight per example, and (for classifier-free guidance, Ho & Salimans 2022)
replace the condition by the caller's unconditional one with probability p.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from t2i_jax.diffusion import predictions, schedules
from t2i_jax.diffusion.schedules import Schedule

WEIGHTINGS = ("uniform", "min_snr")


def loss_weight(
  prediction_type: str, snr: jax.Array, weighting: str = "uniform", min_snr_gamma: float = 5.0
) -> jax.Array:
  """Per-example weights float32[B] of the prediction-space MSE at SNR snr: float[B].

  "min_snr" (Hang et al. 2023) weights every prediction type like an x_0 loss clamped at SNR
  gamma: min(snr, gamma) for x_0, min(snr, gamma) / snr for eps and min(snr, gamma) / (snr + 1)
  for v. The eps form is written min(1, gamma / snr), its value (1) at snr = 0 too, where a
  zero-terminal-SNR schedule ends.
  """
  predictions.check_prediction_type(prediction_type)
  if weighting == "uniform":
    return jnp.ones_like(snr, jnp.float32)
  if weighting != "min_snr":
    raise ValueError(f"Unknown loss weighting {weighting!r}; valid weightings are {WEIGHTINGS}.")
  snr = snr.astype(jnp.float32)
  clipped = jnp.minimum(snr, min_snr_gamma)
  if prediction_type == "epsilon":
    return jnp.minimum(1.0, min_snr_gamma / snr)
  if prediction_type == "v_prediction":
    return clipped / (snr + 1)
  return clipped


def drop_condition(cond: Any, uncond: Any, drop: jax.Array) -> Any:
  """Per example, uncond where drop: bool[B] else cond (pytrees; uncond's leading dim B or 1)."""

  def select(c, u):
    mask = drop.reshape(drop.shape + (1,) * (c.ndim - 1))
    return jnp.where(mask, jnp.broadcast_to(u, c.shape).astype(c.dtype), c)

  return jax.tree.map(select, cond, uncond)


def diffusion_loss(
  model_fn: Callable[[jax.Array, jax.Array, Any], jax.Array],
  schedule: Schedule,
  x0: jax.Array,
  cond: Any,
  rng: jax.Array,
  *,
  prediction_type: str = "epsilon",
  weighting: str = "uniform",
  min_snr_gamma: float = 5.0,
  uncond: Any = None,
  cond_drop_prob: float | jax.Array = 0.0,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Denoising loss for one batch; pure, so `jax.value_and_grad(..., has_aux=True)` applies.

  Args:
    model_fn: (x_t [B, ...], t float32[B], cond) -> prediction [B, ...]; bind the params first,
      e.g. `lambda x, t, c: model.apply(params, x, t, c)`. Gets the same t as the samplers give.
    schedule: noise-schedule tables (T = schedule.num_train_timesteps).
    x0: float[B, ...] clean data (images or latents, channels-last).
    cond: condition pytree, leading dim B (None for an unconditional model).
    rng: key; split into t, noise and dropout keys.
    prediction_type: "epsilon", "v_prediction" or "sample".
    weighting: "uniform" or "min_snr" (see `loss_weight`), with min_snr_gamma.
    uncond: the condition standing for "no condition" (e.g. the empty caption's encoding), same
      structure as cond, leading dim B or 1. None disables condition dropout.
    cond_drop_prob: probability an example's cond is replaced by uncond (0.1 is typical for
      classifier-free guidance); may be traced.

  Returns:
    (loss float32 scalar, metrics): "loss" (the weighted loss), "mse" (unweighted),
    "cond_drop_rate" (fraction of examples trained unconditionally).
  """
  t_rng, noise_rng, drop_rng = jax.random.split(rng, 3)
  batch = x0.shape[0]
  t = jax.random.randint(t_rng, (batch,), 0, schedule.num_train_timesteps)
  noise = jax.random.normal(noise_rng, x0.shape, x0.dtype)
  x_t = schedules.add_noise(schedule, x0, noise, t)
  drop = jnp.zeros((batch,), bool)
  if uncond is not None:
    drop = jax.random.bernoulli(drop_rng, cond_drop_prob, (batch,))
    cond = drop_condition(cond, uncond, drop)
  output = model_fn(x_t, t.astype(jnp.float32), cond).astype(jnp.float32)
  target = predictions.training_target(prediction_type, schedule, x0, noise, t)
  mse = jnp.mean((output - target.astype(jnp.float32)) ** 2, axis=tuple(range(1, x0.ndim)))
  weight = loss_weight(prediction_type, schedules.snr(schedule, t), weighting, min_snr_gamma)
  loss = jnp.mean(weight * mse)
  metrics = {"loss": loss, "mse": jnp.mean(mse), "cond_drop_rate": jnp.mean(drop)}
  return loss, metrics
