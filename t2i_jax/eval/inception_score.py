"""Inception Score (Salimans et al. 2016) of any classifier's logits.

Reference: torch-fidelity's `metric_isc.py`, itself the original openai/improved-gan code plus a
seeded shuffle: rows are permuted by `np.random.RandomState(seed).permutation(N)` (skipped with
`shuffle=False`, as in the original), split into `splits` contiguous parts
[i N // splits, (i + 1) N // splits), and per part

  IS = exp(E_x[KL(p(y|x) || p(y))]),  p(y) = mean over the part of p(y|x),

with p(y|x) = softmax(logits) in float64. Returns the mean and population (ddof=0) std over parts.

Logits: the reference feeds the FID Inception's bias-free 1008-way logits (`pool3 @ fc.kernel`,
see `t2i_jax.eval.inception.features_and_logits` with pytorch-fid's weights); any classifier's
logits work, e.g. the shapes attribute classifier.
"""

from __future__ import annotations

import numpy as np
import scipy.special

SPLITS = 10
SEED = 2020  # torch-fidelity's default rng_seed


def inception_score(
  logits: np.ndarray, splits: int = SPLITS, shuffle: bool = True, seed: int = SEED
) -> tuple[float, float]:
  """(mean, std) of the Inception Score over `splits` parts of logits float[N, C]."""
  logits = np.asarray(logits, np.float64)
  if logits.ndim != 2:
    raise ValueError(f"Expected logits [N, C], got shape {logits.shape}.")
  n = len(logits)
  if n < splits:
    raise ValueError(f"{n} samples cannot make {splits} splits.")
  if shuffle:
    logits = logits[np.random.RandomState(seed).permutation(n)]
  p = scipy.special.softmax(logits, axis=1)
  scores = []
  for i in range(splits):
    part = slice(i * n // splits, (i + 1) * n // splits)
    marginal = p[part].mean(axis=0, keepdims=True)
    # rel_entr(p, q) = p log(p / q), and 0 where p = 0 (a class no sample in the part predicts).
    kl = scipy.special.rel_entr(p[part], marginal).sum(axis=1)
    scores.append(np.exp(kl.mean()))
  return float(np.mean(scores)), float(np.std(scores))


def run(
  logits: np.ndarray, splits: int = SPLITS, shuffle: bool = True, seed: int = SEED
) -> dict[str, float]:
  """{"is_mean", "is_std"} of logits [N, C]."""
  mean, std = inception_score(logits, splits, shuffle, seed)
  return {"is_mean": mean, "is_std": std}
