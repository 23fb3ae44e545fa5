"""Checks shared by the tokenizers' decoders."""

import numpy as np


def as_id_batch(ids, vocab_size: int) -> np.ndarray:
  """ids int[B, L] or int[L] (a batch of one) -> int[B, L], range-checked against the vocabulary."""
  arr = np.asarray(ids)
  if arr.ndim == 1:
    arr = arr[None]
  if arr.ndim != 2:
    raise ValueError(f"decode expects ids of shape [B, L] or [L], got shape {arr.shape}.")
  if arr.size and (arr.min() < 0 or arr.max() >= vocab_size):
    raise ValueError(f"ids must lie in [0, {vocab_size}); got range [{arr.min()}, {arr.max()}].")
  return arr
