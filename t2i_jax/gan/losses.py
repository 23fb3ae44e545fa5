"""GAN losses on discriminator logits, plus real/fake classification metrics for D.

All functions are pure jnp and safe to call under ``jax.jit``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

LOSS_KINDS = ("nonsaturating", "hinge")


def _check_kind(kind: str) -> None:
  if kind not in LOSS_KINDS:
    raise ValueError(f"Unknown GAN loss kind {kind!r}; valid kinds are {LOSS_KINDS}.")


def discriminator_loss(
  real_logits: jax.Array, fake_logits: jax.Array, kind: str = "nonsaturating"
) -> jax.Array:
  """Discriminator loss: `discriminator_term(real, True) + discriminator_term(fake, False)`.

  "nonsaturating" is binary cross-entropy with real=1, fake=0, written with softplus for numerical
  stability: ``-log sigmoid(r) = softplus(-r)`` and ``-log(1 - sigmoid(f)) = softplus(f)``.
  "hinge" is ``mean relu(1 - r) + mean relu(1 + f)``.

  Args:
    real_logits: float[B_real] logits on real (matching) samples.
    fake_logits: float[B_fake] logits on fake (or mismatched) samples.
    kind: One of ``LOSS_KINDS``.

  Returns:
    float32 scalar.
  """
  return discriminator_term(real_logits, kind, is_real=True) + discriminator_term(
    fake_logits, kind, is_real=False
  )


def discriminator_term(
  logits: jax.Array, kind: str = "nonsaturating", *, is_real: bool, weights=None
) -> jax.Array:
  """One side of the discriminator loss: the (weighted) mean push of `logits` to real or fake.

  Args:
    logits: float[B].
    is_real: whether these samples should be scored real.
    weights: optional float[B] per-example weights (e.g. 0 for a "mismatched" caption that
      happens to match); the mean is over the total weight.
  """
  _check_kind(kind)
  signed = -logits.astype(jnp.float32) if is_real else logits.astype(jnp.float32)
  per_example = jax.nn.softplus(signed) if kind == "nonsaturating" else jax.nn.relu(1.0 + signed)
  if weights is None:
    return jnp.mean(per_example)
  return jnp.sum(per_example * weights) / jnp.maximum(jnp.sum(weights), 1.0)


def generator_loss(fake_logits: jax.Array, kind: str = "nonsaturating") -> jax.Array:
  """Generator loss.

  "nonsaturating" is ``mean softplus(-f) = -mean log sigmoid(f)`` (Goodfellow et al. 2014's
  non-saturating heuristic); "hinge" is ``-mean f`` (Lim & Ye 2017 / Miyato et al. 2018).

  Args:
    fake_logits: float[B] discriminator logits on generated samples.
    kind: One of ``LOSS_KINDS``.

  Returns:
    float32 scalar.
  """
  _check_kind(kind)
  fake = fake_logits.astype(jnp.float32)
  if kind == "nonsaturating":
    return jnp.mean(jax.nn.softplus(-fake))
  return -jnp.mean(fake)


def real_fake_confusion(real_logits: jax.Array, fake_logits: jax.Array) -> dict[str, jax.Array]:
  """Confusion counts of D as a real-vs-fake classifier (positive = real, logit > 0).

  Args:
    real_logits: float[B_real] logits on real samples.
    fake_logits: float[B_fake] logits on fake samples.

  Returns:
    Dict of float32 scalars: true_pos (real called real), false_neg (real called fake),
    false_pos (fake called real), true_neg (fake called fake). Float so they can be summed
    across batches / devices and averaged without casts.
  """
  real_pos = (real_logits > 0).astype(jnp.float32)
  fake_pos = (fake_logits > 0).astype(jnp.float32)
  return {
    "true_pos": real_pos.sum(),
    "false_neg": (1.0 - real_pos).sum(),
    "false_pos": fake_pos.sum(),
    "true_neg": (1.0 - fake_pos).sum(),
  }


def _safe_div(num: jax.Array, den: jax.Array) -> jax.Array:
  # 0.0 when the denominator is 0 (e.g. D calls nothing real, so precision is undefined).
  den = jnp.asarray(den, jnp.float32)
  return jnp.where(den > 0, jnp.asarray(num, jnp.float32) / jnp.where(den > 0, den, 1.0), 0.0)


def classifier_metrics(counts: dict[str, jax.Array | float]) -> dict[str, jax.Array]:
  """Accuracy / precision / recall / F1 from ``real_fake_confusion`` counts.

  Args:
    counts: Dict with true_pos, false_neg, false_pos, true_neg (floats or scalar arrays, e.g.
      summed over an epoch).

  Returns:
    Dict of float32 scalars: accuracy_real = TP / (TP + FN), accuracy_fake = TN / (TN + FP),
    precision = TP / (TP + FP), recall = TP / (TP + FN) and f1; each is 0.0 where its
    denominator is 0.
  """
  tp, fn = counts["true_pos"], counts["false_neg"]
  fp, tn = counts["false_pos"], counts["true_neg"]
  precision = _safe_div(tp, tp + fp)
  recall = _safe_div(tp, tp + fn)
  return {
    "accuracy_real": recall,
    "accuracy_fake": _safe_div(tn, tn + fp),
    "precision": precision,
    "recall": recall,
    "f1": _safe_div(2.0 * precision * recall, precision + recall),
  }
