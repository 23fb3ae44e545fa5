"""Tests for t2i_jax.gan.conditioning (StackGAN Conditioning Augmentation and KL term)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from t2i_jax.gan.conditioning import ConditioningAugmentation, kl_divergence

B, E, D = 4, 16, 8
TEXT = jax.random.normal(jax.random.key(7), (B, E))


def _init(ca):
  return nn.unbox(jax.jit(lambda k: ca.init(k, TEXT, sample=False))(jax.random.key(0)))


def test_kl_zero_at_standard_normal():
  assert float(kl_divergence(jnp.zeros((B, D)), jnp.zeros((B, D)))) == 0.0


def test_kl_matches_hand_computation():
  mu = jnp.array([[1.0, 0.0], [0.0, -2.0]])
  logvar = jnp.array([[0.0, np.log(2.0)], [-1.0, 0.0]])
  # Per element: -0.5 * (1 + logvar - mu^2 - exp(logvar)).
  per_element = [0.5, -0.5 * (1 + np.log(2.0) - 2.0), -0.5 * (1 - 1 - np.exp(-1.0)), 2.0]
  np.testing.assert_allclose(kl_divergence(mu, logvar), np.mean(per_element), rtol=1e-6)
  assert float(kl_divergence(mu, logvar)) > 0


def _fixed_params(mu, logvar):
  """CA params whose output is (mu, logvar) for any input: zero kernel, bias = [mu, logvar]."""
  return {
    "params": {"fc": {"kernel": jnp.zeros((E, 2 * D)), "bias": jnp.concatenate([mu, logvar])}}
  }


def test_sample_statistics_match_mu_and_sigma():
  mu = jnp.linspace(0.0, 2.0, D)  # the relu variant makes mu and logvar >= 0
  logvar = jnp.linspace(0.0, 1.0, D)
  ca = ConditioningAugmentation(cond_dim=D)
  text = jnp.zeros((4096, E))
  c_hat, out_mu, out_logvar = ca.apply(
    _fixed_params(mu, logvar), text, sample=True, rngs={"noise": jax.random.key(1)}
  )
  np.testing.assert_allclose(out_mu[0], mu, atol=1e-6)
  np.testing.assert_allclose(out_logvar[0], logvar, atol=1e-6)
  sigma = np.exp(0.5 * np.asarray(logvar))
  # Standard error of the mean is sigma / 64 <= 0.026; of the std about sigma / 90.
  np.testing.assert_allclose(c_hat.mean(axis=0), mu, atol=0.1)
  np.testing.assert_allclose(c_hat.std(axis=0), sigma, rtol=0.08)


@pytest.mark.parametrize("activation", ["relu", "glu"])
def test_deterministic_without_sampling(activation):
  ca = ConditioningAugmentation(cond_dim=D, activation=activation)
  params = _init(ca)
  c_hat, mu, logvar = ca.apply(params, TEXT, sample=False)  # no rng needed
  assert c_hat.shape == mu.shape == logvar.shape == (B, D)
  assert c_hat.dtype == jnp.float32
  np.testing.assert_array_equal(c_hat, mu)
  again, _, _ = ca.apply(params, TEXT, sample=False)
  np.testing.assert_array_equal(c_hat, again)
  if activation == "relu":
    assert np.all(np.asarray(mu) >= 0) and np.all(np.asarray(logvar) >= 0)


def test_noise_rng_controls_sample():
  ca = ConditioningAugmentation(cond_dim=D)
  params = _init(ca)
  a, mu, _ = ca.apply(params, TEXT, sample=True, rngs={"noise": jax.random.key(1)})
  b, _, _ = ca.apply(params, TEXT, sample=True, rngs={"noise": jax.random.key(2)})
  a2, _, _ = ca.apply(params, TEXT, sample=True, rngs={"noise": jax.random.key(1)})
  np.testing.assert_array_equal(a, a2)
  assert not np.allclose(a, b)
  assert not np.allclose(a, mu)


def test_gradients_flow_through_reparameterisation():
  mu = jnp.full((D,), 0.5)
  logvar = jnp.full((D,), 0.3)
  ca = ConditioningAugmentation(cond_dim=D)

  def loss(mu, logvar):
    c_hat, _, _ = ca.apply(
      _fixed_params(mu, logvar), TEXT, sample=True, rngs={"noise": jax.random.key(3)}
    )
    return jnp.sum(c_hat**2)

  g_mu, g_logvar = jax.grad(loss, argnums=(0, 1))(mu, logvar)
  assert np.all(np.isfinite(g_mu)) and np.all(np.isfinite(g_logvar))
  assert np.any(np.asarray(g_mu) != 0) and np.any(np.asarray(g_logvar) != 0)
  # KL gradient pulls mu towards 0 and logvar towards 0.
  k_mu, k_logvar = jax.grad(kl_divergence, argnums=(0, 1))(mu[None], logvar[None])
  assert np.all(np.asarray(k_mu) > 0) and np.all(np.asarray(k_logvar) > 0)


def test_sampling_needs_noise_rng():
  ca = ConditioningAugmentation(cond_dim=D)
  with pytest.raises(Exception, match="noise"):
    ca.apply(_init(ca), TEXT, sample=True)


@pytest.mark.parametrize(
  "kwargs, match", [({"cond_dim": 0}, "cond_dim"), ({"activation": "tanh"}, "activation")]
)
def test_invalid_fields_raise(kwargs, match):
  with pytest.raises(ValueError, match=match):
    ConditioningAugmentation(**kwargs)


def test_rejects_unpooled_embedding():
  ca = ConditioningAugmentation(cond_dim=D)
  with pytest.raises(ValueError, match=r"\[B, E\]"):
    ca.init(jax.random.key(0), jnp.zeros((B, 3, E)), sample=False)
