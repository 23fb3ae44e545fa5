"""Tests for KID, improved precision/recall and Inception Score against plain numpy references."""

import numpy as np
import pytest

from t2i_jax.eval import inception_score, kid, precision_recall

# --- KID ---------------------------------------------------------------------------------------


def kid_reference(real, fake, subsets, subset_size, seed):
  """torch-fidelity's KID written out term by term: explicit sums over i != j and all (i, j)."""
  rng = np.random.RandomState(seed)
  d = real.shape[1]
  kernel = lambda a, b: (a @ b / d + 1.0) ** 3  # noqa: E731
  mmds = []
  for _ in range(subsets):
    x = real[rng.choice(len(real), subset_size, replace=False)].astype(np.float64)
    y = fake[rng.choice(len(fake), subset_size, replace=False)].astype(np.float64)
    m = subset_size
    xx = sum(kernel(x[i], x[j]) for i in range(m) for j in range(m) if i != j)
    yy = sum(kernel(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
    xy = sum(kernel(x[i], y[j]) for i in range(m) for j in range(m))
    mmds.append(xx / (m * (m - 1)) + yy / (m * (m - 1)) - 2 * xy / m**2)
  return np.mean(mmds), np.std(mmds)


def test_kid_matches_reference():
  rng = np.random.default_rng(0)
  real = rng.normal(size=(40, 6)).astype(np.float32)
  fake = (rng.normal(size=(35, 6)) * 1.3 + 0.2).astype(np.float32)
  out = kid.run(real, fake, subsets=5, subset_size=20, seed=7)
  mean, std = kid_reference(real, fake, 5, 20, 7)
  assert out["kid_mean"] == pytest.approx(mean, rel=1e-10)
  assert out["kid_std"] == pytest.approx(std, rel=1e-8)
  assert out["kid_subset_size"] == 20


def test_kid_is_near_zero_for_one_distribution_and_large_for_two():
  rng = np.random.default_rng(1)
  a, b = rng.normal(size=(300, 16)), rng.normal(size=(300, 16))
  same = kid.run(a, b, subsets=20, subset_size=100)
  assert abs(same["kid_mean"]) < 3 * same["kid_std"] + 1e-3
  shifted = kid.run(a, b + 2.0, subsets=20, subset_size=100)
  assert shifted["kid_mean"] > 10 * same["kid_std"] and shifted["kid_mean"] > 0.5


def test_kid_caps_the_subset_size_with_a_warning(caplog):
  rng = np.random.default_rng(2)
  real, fake = rng.normal(size=(30, 4)), rng.normal(size=(25, 4))
  with caplog.at_level("WARNING"):
    out = kid.run(real, fake, subsets=3)
  assert out["kid_subset_size"] == 25 and "capped at 25" in caplog.text
  assert out["kid_mean"] == pytest.approx(kid_reference(real, fake, 3, 25, kid.SEED)[0])
  with pytest.raises(ValueError, match="at least 2"):
    kid.run(real, fake[:1])


# --- Precision and recall -----------------------------------------------------------------------


def pr_reference(real, fake, k):
  """Brute force on full distance matrices in float64."""
  dist = lambda a, b: np.sqrt(((a[:, None] - b[None]) ** 2).sum(-1))  # noqa: E731
  radii_real = np.sort(dist(real, real), axis=1)[:, k]
  radii_fake = np.sort(dist(fake, fake), axis=1)[:, k]
  precision = np.mean((dist(fake, real) <= radii_real[None]).any(axis=1))
  recall = np.mean((dist(real, fake) <= radii_fake[None]).any(axis=1))
  return precision, recall


def test_precision_recall_match_brute_force_across_blocks():
  rng = np.random.default_rng(3)
  real = rng.normal(size=(70, 8)).astype(np.float32)
  fake = (rng.normal(size=(53, 8)) * 0.7 + 0.6).astype(np.float32)  # partly overlapping
  expected = pr_reference(real.astype(np.float64), fake.astype(np.float64), 3)
  assert 0 < expected[0] < 1 and 0 < expected[1] < 1
  for block_size in (16, 1024):  # several padded blocks; one block
    out = precision_recall.run(real, fake, k=3, block_size=block_size)
    assert (out["precision"], out["recall"]) == pytest.approx(expected, abs=1e-12)


def test_precision_recall_of_identical_and_disjoint_sets():
  rng = np.random.default_rng(4)
  real = rng.normal(size=(50, 16)).astype(np.float32)
  assert precision_recall.run(real, real.copy()) == {"precision": 1.0, "recall": 1.0}
  assert precision_recall.run(real, real + 100.0) == {"precision": 0.0, "recall": 0.0}
  with pytest.raises(ValueError, match="more than 3 points"):
    precision_recall.run(real, real[:3])


def test_radii_exclude_the_point_itself():
  points = np.array([[0.0], [1.0], [3.0], [6.0], [10.0]], np.float32)
  radii = precision_recall.manifold_radii_sq(points, k=1)
  np.testing.assert_allclose(np.sqrt(radii), [1, 1, 2, 3, 4])


# --- Inception Score -----------------------------------------------------------------------------


def is_reference(logits, splits):
  """The original improved-gan loop over splits (no shuffle)."""
  p = np.exp(logits - logits.max(1, keepdims=True))
  p /= p.sum(1, keepdims=True)
  n, scores = len(p), []
  for i in range(splits):
    part = p[i * n // splits : (i + 1) * n // splits]
    kl = part * (np.log(part) - np.log(part.mean(0, keepdims=True)))
    scores.append(np.exp(kl.sum(1).mean()))
  return np.mean(scores), np.std(scores)


def test_inception_score_matches_reference_and_shuffles_like_torch_fidelity():
  logits = np.random.default_rng(5).normal(size=(103, 12)) * 3
  out = inception_score.run(logits, splits=4, shuffle=False)
  assert (out["is_mean"], out["is_std"]) == pytest.approx(is_reference(logits, 4), rel=1e-10)
  permuted = logits[np.random.RandomState(2020).permutation(103)]
  shuffled = inception_score.inception_score(logits, splits=4)
  assert shuffled == pytest.approx(is_reference(permuted, 4), rel=1e-10)


def test_inception_score_of_uniform_and_one_hot_predictions():
  num_classes = 7
  uniform = inception_score.run(np.zeros((50, num_classes)))
  assert uniform["is_mean"] == pytest.approx(1.0) and uniform["is_std"] == pytest.approx(0.0)
  # Each contiguous split holds every class once, predicted with certainty: IS = C.
  one_hot = np.tile(np.eye(num_classes) * 100.0, (10, 1))
  out = inception_score.run(one_hot, splits=10, shuffle=False)
  assert out["is_mean"] == pytest.approx(num_classes, rel=1e-9)
  with pytest.raises(ValueError, match="cannot make 10 splits"):
    inception_score.run(one_hot[:5])
