"""Prediction-type conversions and x_0 clipping / dynamic thresholding."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from t2i_jax.diffusion import predictions, schedules


@pytest.mark.parametrize("prediction_type", predictions.PREDICTION_TYPES)
def test_target_converts_back_to_x0_and_eps(prediction_type):
  schedule = schedules.make_schedule("linear", rescale_zero_terminal_snr=True)
  k1, k2 = jax.random.split(jax.random.key(0))
  x0 = jax.random.normal(k1, (4, 3, 3, 2))
  eps = jax.random.normal(k2, x0.shape)
  t = jnp.array([0, 300, 700, 900])  # alpha -> 0 near 999 and eps -> x_0 loses all precision
  x_t = schedules.add_noise(schedule, x0, eps, t)
  target = predictions.training_target(prediction_type, schedule, x0, eps, t)
  alpha, sigma = schedules.alpha_sigma(schedule, t, x0.ndim)
  got_x0, got_eps = predictions.to_x0_eps(prediction_type, target, x_t, alpha, sigma)
  # eps from x_0 divides by sigma_0 ~ 0.01, and x_0 from eps by alpha_900 ~ 0.04.
  np.testing.assert_allclose(got_x0, x0, atol=1e-4)
  np.testing.assert_allclose(got_eps, eps, atol=1e-4)


def test_v_prediction_at_zero_terminal_snr():
  """At alpha = 0, x_t is pure noise and v = -x_0: both conversions stay finite and exact."""
  x_t, v = jnp.full((1, 2), 0.3), jnp.full((1, 2), -0.7)
  x0, eps = predictions.to_x0_eps("v_prediction", v, x_t, jnp.float32(0), jnp.float32(1))
  np.testing.assert_allclose(x0, 0.7, rtol=1e-7)
  np.testing.assert_allclose(eps, 0.3, rtol=1e-7)


def test_clip_and_dynamic_threshold():
  x0 = jnp.asarray(np.random.default_rng(0).normal(scale=2.0, size=(3, 4, 4, 2)), jnp.float32)
  assert predictions.clip_x0(x0) is x0  # off by default
  np.testing.assert_array_equal(predictions.clip_x0(x0, clip_sample=1.5), jnp.clip(x0, -1.5, 1.5))
  got = predictions.clip_x0(x0, clip_sample=0.1, dynamic_threshold=(0.9, 2.5))
  flat = np.abs(np.asarray(x0).reshape(3, -1))
  s = np.clip(np.quantile(flat, 0.9, axis=1), 1.0, 2.5).reshape(3, 1, 1, 1)  # linear, as torch
  np.testing.assert_allclose(got, np.clip(x0, -s, s) / s, rtol=1e-6)


def test_unknown_prediction_type():
  with pytest.raises(ValueError, match="v_prediction"):
    predictions.check_prediction_type("flow")
