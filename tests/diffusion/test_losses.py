"""Tests for t2i_jax.diffusion.losses."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from t2i_jax.diffusion import losses, predictions, schedules

SCHEDULE = schedules.make_schedule(
  "scaled_linear", beta_start=0.00085, beta_end=0.012, rescale_zero_terminal_snr=True
)


def test_min_snr_weights():
  snr = jnp.array([0.0, 0.5, 5.0, 20.0])
  gamma = 5.0
  want = {
    "epsilon": [1.0, 1.0, 1.0, 0.25],  # min(snr, 5) / snr, 1 in the limit snr -> 0
    "v_prediction": [0.0, 0.5 / 1.5, 5 / 6, 5 / 21],  # min(snr, 5) / (snr + 1)
    "sample": [0.0, 0.5, 5.0, 5.0],  # min(snr, 5)
  }
  for prediction_type, weights in want.items():
    got = losses.loss_weight(prediction_type, snr, "min_snr", gamma)
    np.testing.assert_allclose(got, weights, rtol=1e-6)
    np.testing.assert_array_equal(losses.loss_weight(prediction_type, snr), jnp.ones(4))
  with pytest.raises(ValueError, match="min_snr"):
    losses.loss_weight("epsilon", snr, "p2")


def oracle(x0, prediction_type):
  """A denoiser that knows x_0, so it can read eps off x_t and output the exact target."""

  def model_fn(x_t, t, cond):
    del cond
    t = t.astype(jnp.int32)
    alpha, sigma = schedules.alpha_sigma(SCHEDULE, t, x_t.ndim)
    eps = (x_t - alpha * x0) / sigma
    return predictions.training_target(prediction_type, SCHEDULE, x0, eps, t)

  return model_fn


@pytest.mark.parametrize("prediction_type", predictions.PREDICTION_TYPES)
def test_exact_denoiser_has_zero_loss(prediction_type):
  x0 = jax.random.normal(jax.random.key(0), (64, 2, 2, 3))
  loss, metrics = jax.jit(
    lambda x0, rng: losses.diffusion_loss(
      oracle(x0, prediction_type), SCHEDULE, x0, None, rng,
      prediction_type=prediction_type, weighting="min_snr",
    )
  )(x0, jax.random.key(1))  # fmt: skip
  assert float(loss) < 1e-8 and float(metrics["mse"]) < 1e-8


def test_zero_denoiser_eps_loss_is_noise_power():
  x0 = jnp.ones((512, 4, 4, 1))
  loss, metrics = jax.jit(
    lambda x0, rng: losses.diffusion_loss(
      lambda x, t, c: jnp.zeros_like(x), SCHEDULE, x0, None, rng
    )
  )(x0, jax.random.key(0))
  assert float(loss) == float(metrics["mse"])  # uniform weighting
  np.testing.assert_allclose(loss, 1.0, atol=0.05)  # E[eps^2]


def test_condition_dropout_selects_uncond_per_example():
  """Model output = its condition; with x_0 = 0 and x_0 targets the loss is mean(cond^2)."""
  x0 = jnp.zeros((400, 1, 1, 1))
  cond = {"text": jnp.ones((400, 3))}
  uncond = {"text": jnp.zeros((1, 3))}  # e.g. the empty caption's encoding

  @jax.jit
  def run(p, rng):
    return losses.diffusion_loss(
      lambda x, t, c: jnp.zeros_like(x) + c["text"][:, :1, None, None], SCHEDULE, x0, cond, rng,
      prediction_type="sample", uncond=uncond, cond_drop_prob=p,
    )  # fmt: skip

  for p in (0.0, 0.3, 1.0):
    loss, metrics = run(p, jax.random.key(2))
    np.testing.assert_allclose(metrics["cond_drop_rate"], p, atol=0.07)
    np.testing.assert_allclose(loss, 1.0 - metrics["cond_drop_rate"], rtol=1e-6)


def test_gradients_flow_under_jit():
  x0 = jax.random.normal(jax.random.key(0), (8, 4, 4, 2))

  def loss_fn(w, rng):
    return losses.diffusion_loss(
      lambda x, t, c: w * x + c, SCHEDULE, x0, jnp.ones((8, 1, 1, 1)), rng,
      prediction_type="v_prediction", weighting="min_snr",
      uncond=jnp.zeros((1, 1, 1, 1)), cond_drop_prob=0.1,
    )  # fmt: skip

  (loss, _), grad = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(0.5, jax.random.key(3))
  assert np.isfinite(float(loss)) and np.isfinite(float(grad)) and float(grad) != 0.0
