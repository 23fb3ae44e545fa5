"""Tests for t2i_jax.gan.losses."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from t2i_jax.gan import losses

LOG2 = float(np.log(2.0))


def test_nonsaturating_losses_at_zero_logits():
  zeros = jnp.zeros((4,))
  np.testing.assert_allclose(losses.discriminator_loss(zeros, zeros), 2 * LOG2, rtol=1e-6)
  np.testing.assert_allclose(losses.generator_loss(zeros), LOG2, rtol=1e-6)


def test_nonsaturating_matches_bce():
  real = jnp.array([2.0, -1.0, 0.5])
  fake = jnp.array([-3.0, 1.5])
  sig = jax.nn.sigmoid
  want_d = -jnp.mean(jnp.log(sig(real))) - jnp.mean(jnp.log(1 - sig(fake)))
  np.testing.assert_allclose(losses.discriminator_loss(real, fake), want_d, rtol=1e-5)
  np.testing.assert_allclose(losses.generator_loss(fake), -jnp.mean(jnp.log(sig(fake))), rtol=1e-5)


def test_nonsaturating_is_stable_for_large_logits():
  big = jnp.array([1e4, -1e4])
  assert np.isfinite(float(losses.discriminator_loss(big, -big)))
  assert np.isfinite(float(losses.generator_loss(big)))


def test_hinge_closed_form():
  real = jnp.array([2.0, -1.0])  # relu(1 - r) = [0, 2] -> 1
  fake = jnp.array([-2.0, 0.5])  # relu(1 + f) = [0, 1.5] -> 0.75
  np.testing.assert_allclose(losses.discriminator_loss(real, fake, "hinge"), 1.75, rtol=1e-6)
  np.testing.assert_allclose(losses.generator_loss(fake, "hinge"), 0.75, rtol=1e-6)


def test_unknown_kind_names_valid_kinds():
  x = jnp.zeros((2,))
  with pytest.raises(ValueError, match="nonsaturating.*hinge"):
    losses.discriminator_loss(x, x, "wgan")
  with pytest.raises(ValueError, match="valid kinds"):
    losses.generator_loss(x, "lsgan")


def test_confusion_and_metrics():
  real = jnp.array([1.0, -1.0, 0.5])  # 2 called real, 1 called fake
  fake = jnp.array([-1.0, 2.0, -3.0, 0.0])  # 1 called real; logit 0 counts as fake
  counts = jax.jit(losses.real_fake_confusion)(real, fake)
  assert {k: float(v) for k, v in counts.items()} == {
    "true_pos": 2.0,
    "false_neg": 1.0,
    "false_pos": 1.0,
    "true_neg": 3.0,
  }
  metrics = jax.jit(losses.classifier_metrics)(counts)
  want = {
    "accuracy_real": 2 / 3,
    "accuracy_fake": 3 / 4,
    "precision": 2 / 3,
    "recall": 2 / 3,
    "f1": 2 / 3,
  }
  assert set(metrics) == set(want)
  for k, v in want.items():
    np.testing.assert_allclose(float(metrics[k]), v, rtol=1e-6, err_msg=k)


def test_metrics_with_zero_denominators():
  zeros = dict(true_pos=0.0, false_neg=0.0, false_pos=0.0, true_neg=0.0)
  assert all(float(v) == 0.0 for v in losses.classifier_metrics(zeros).values())
  # D calls everything fake: precision undefined -> 0, accuracy_fake perfect.
  metrics = losses.classifier_metrics(
    dict(true_pos=0.0, false_neg=5.0, false_pos=0.0, true_neg=5.0)
  )
  assert float(metrics["precision"]) == 0.0 and float(metrics["f1"]) == 0.0
  assert float(metrics["accuracy_fake"]) == 1.0


def test_metrics_gradient_is_finite_at_zero():
  def f1(tp):
    return losses.classifier_metrics(dict(true_pos=tp, false_neg=0.0, false_pos=0.0, true_neg=1.0))[
      "f1"
    ]

  assert np.isfinite(float(jax.grad(f1)(0.0)))
