"""Tests for t2i_jax.eval.fid: streaming statistics, the Fréchet distance, the .npz cache."""

import numpy as np
import pytest
import scipy.linalg

from t2i_jax.eval import fid


def _gaussian(rng, n, d, shift=0.0, scale=1.0):
  mixing = rng.normal(size=(d, d)) / np.sqrt(d)
  return shift + scale * rng.normal(size=(n, d)) @ mixing


def pytorch_fid_formula(mu1, sigma1, mu2, sigma2):
  """pytorch-fid's calculate_frechet_distance, transcribed without its fallbacks."""
  diff = mu1 - mu2
  covmean = scipy.linalg.sqrtm(sigma1.dot(sigma2)).real
  return diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean)


def eigen_formula(mu1, sigma1, mu2, sigma2):
  """Same distance through tr sqrt(S1 S2) = sum of sqrt(eigenvalues of S1 S2), all >= 0."""
  eigenvalues = np.linalg.eigvals(sigma1 @ sigma2).real.clip(min=0)
  diff = mu1 - mu2
  return diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.sqrt(eigenvalues).sum()


def _stats(features):
  return fid.GaussianStats(features.mean(0), np.cov(features, rowvar=False), len(features))


def test_streaming_stats_equal_numpy_mean_and_cov():
  rng = np.random.default_rng(0)
  features = _gaussian(rng, 257, 16, shift=300.0).astype(np.float32)  # large mean: cancellation
  running = fid.RunningStats()
  for start, stop in [(0, 1), (1, 100), (100, 100), (100, 257)]:  # uneven, one empty
    running.update(features[start:stop])
  stats = running.result()
  reference = features.astype(np.float64)
  assert stats.count == 257
  np.testing.assert_allclose(stats.mu, reference.mean(0), rtol=1e-12)
  np.testing.assert_allclose(stats.sigma, np.cov(reference, rowvar=False), rtol=1e-9, atol=1e-9)
  with pytest.raises(ValueError, match="Feature size"):
    running.update(np.zeros((2, 3)))
  with pytest.raises(ValueError, match="at least 2"):
    fid.stats_from_features([np.zeros((1, 4))])


def test_frechet_distance_matches_independent_implementations():
  rng = np.random.default_rng(1)
  a = _stats(_gaussian(rng, 500, 64))
  b = _stats(_gaussian(rng, 400, 64, shift=0.3, scale=1.5))
  ours = fid.frechet_distance(a.mu, a.sigma, b.mu, b.sigma)
  for reference in (pytorch_fid_formula, eigen_formula):
    expected = reference(a.mu, a.sigma, b.mu, b.sigma)
    assert ours == pytest.approx(expected, rel=1e-6)
  assert fid.run(a, b) == {"fid": ours}


def test_identical_sets_give_zero_and_disjoint_sets_give_large():
  rng = np.random.default_rng(2)
  features = _gaussian(rng, 300, 32)
  a = _stats(features)
  assert abs(fid.run(a, a)["fid"]) < 1e-8 * np.trace(a.sigma)
  far = _stats(_gaussian(rng, 300, 32, shift=10.0))
  assert fid.run(a, far)["fid"] > 0.9 * 32 * 10.0**2


def test_rank_deficient_covariances_stay_finite():
  rng = np.random.default_rng(3)
  a = _stats(_gaussian(rng, 10, 32))  # rank 9 of 32: sqrtm of a singular product
  b = _stats(_gaussian(rng, 10, 32, shift=1.0))
  ours = fid.frechet_distance(a.mu, a.sigma, b.mu, b.sigma)
  assert ours == pytest.approx(eigen_formula(a.mu, a.sigma, b.mu, b.sigma), rel=1e-3)
  with pytest.raises(ValueError, match="Shapes differ"):
    fid.frechet_distance(a.mu, a.sigma, b.mu[:3], b.sigma[:3, :3])


def test_non_finite_root_retries_with_eps_and_imaginary_diagonal_raises(monkeypatch):
  rng = np.random.default_rng(5)
  a, b = _stats(_gaussian(rng, 100, 8)), _stats(_gaussian(rng, 100, 8, shift=0.5))
  sqrtm, seen = scipy.linalg.sqrtm, []  # the real one: patching replaces scipy.linalg's

  def nan_first(matrix):
    seen.append(matrix)
    return np.full_like(matrix, np.nan) if len(seen) == 1 else sqrtm(matrix)

  monkeypatch.setattr(fid.scipy.linalg, "sqrtm", nan_first)
  ours = fid.frechet_distance(a.mu, a.sigma, b.mu, b.sigma)
  offset = 1e-6 * np.eye(8)
  np.testing.assert_allclose(seen[1], (a.sigma + offset) @ (b.sigma + offset))
  assert ours == pytest.approx(pytorch_fid_formula(a.mu, a.sigma, b.mu, b.sigma), rel=1e-5)
  monkeypatch.setattr(fid.scipy.linalg, "sqrtm", lambda m: sqrtm(m) + 0.01j)
  with pytest.raises(ValueError, match="Imaginary component"):
    fid.frechet_distance(a.mu, a.sigma, b.mu, b.sigma)
  monkeypatch.setattr(fid.scipy.linalg, "sqrtm", lambda m: sqrtm(m) + 1e-5j)
  assert fid.frechet_distance(a.mu, a.sigma, b.mu, b.sigma) == pytest.approx(ours, rel=1e-5)


def test_stats_save_load_and_cache(tmp_path):
  rng = np.random.default_rng(4)
  stats = _stats(_gaussian(rng, 50, 8))
  path = tmp_path / "ref.npz"
  calls = []

  def compute():
    calls.append(1)
    return stats

  first = fid.cached_stats(path, compute)
  second = fid.cached_stats(path, compute)
  assert len(calls) == 1 and path.is_file() and list(tmp_path.iterdir()) == [path]
  for loaded in (first, second):
    np.testing.assert_array_equal(loaded.mu, stats.mu)
    np.testing.assert_array_equal(loaded.sigma, stats.sigma)
    assert loaded.count == 50
  assert set(np.load(path)) == {"mu", "sigma", "count"}


@pytest.mark.parametrize(
  "arrays, message",
  [
    (dict(mu=np.zeros(4), count=np.int64(9)), r"missing keys \['sigma'\]"),
    (dict(mu=np.zeros(4), sigma=np.eye(3), count=np.int64(9)), "are not"),
    (dict(mu=np.zeros(3), sigma=np.eye(3), count=np.float64(9)), "count must be"),
    (dict(mu=np.full(3, np.nan), sigma=np.eye(3), count=np.int64(9)), "non-finite"),
  ],
)
def test_malformed_stats_files_raise(tmp_path, arrays, message):
  path = tmp_path / "bad.npz"
  np.savez(path, **arrays)
  with pytest.raises(ValueError, match=message):
    fid.load_stats(path)


def test_non_npz_and_missing_files_raise(tmp_path):
  junk = tmp_path / "junk.npz"
  junk.write_bytes(b"not a zip")
  with pytest.raises(ValueError, match="not a statistics .npz"):
    fid.load_stats(junk)
  with pytest.raises(FileNotFoundError):
    fid.load_stats(tmp_path / "absent.npz")
