"""One interface over the caption tokenizers, and loading a saved one by its ``type``.

Every tokenizer saves itself as a JSON object whose ``"type"`` field names its class in
:data:`TOKENIZERS`, so :func:`load_tokenizer` can rebuild whichever one a run used.

Note this module is ``t2i_jax.text.tokenizers``; the Rust library is the top-level ``tokenizers``
package (absolute imports keep them apart).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from t2i_jax.text.clip_tokenizer import ClipTokenizer
from t2i_jax.text.word_tokenizer import WordTokenizer


@runtime_checkable
class Tokenizer(Protocol):
  """What models and pipelines may rely on from a caption tokenizer.

  Every encoded row holds ``eos_id`` as its last real token, followed by ``pad_id`` padding (which
  may be ``eos_id`` itself, as for Stable Diffusion 1.x's tokenizer), so text towers can pool at
  the first ``eos_id``.
  """

  @property
  def vocab_size(self) -> int:
    """Number of ids; every id is in ``[0, vocab_size)``."""
    ...

  @property
  def pad_id(self) -> int: ...

  @property
  def eos_id(self) -> int: ...

  def encode(self, texts: Sequence[str], max_length: int) -> np.ndarray:
    """Encodes B captions to int32[B, max_length] ids."""
    ...

  def decode(self, ids: np.ndarray | Sequence[Sequence[int]] | Sequence[int]) -> list[str]:
    """Decodes int[B, L] (or int[L]) ids up to the first ``eos_id`` to B strings."""
    ...

  def save(self, path: str | os.PathLike) -> None:
    """Writes a JSON file that :func:`load_tokenizer` reads back."""
    ...


TOKENIZERS: dict[str, type] = {"word": WordTokenizer, "clip_bpe": ClipTokenizer}


def load_tokenizer(path: str | os.PathLike) -> Tokenizer:
  """Loads a tokenizer written by any tokenizer's ``save``, dispatching on its ``"type"`` field.

  Raises:
    FileNotFoundError: If ``path`` does not exist.
    ValueError: If the file is not JSON or its ``type`` is missing or unknown.
  """
  where = repr(os.fspath(path))
  if not os.path.isfile(path):
    raise FileNotFoundError(f"No tokenizer file at {where}.")
  with open(path, encoding="utf-8") as f:
    try:
      data = json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f"Tokenizer file {where} is not valid JSON: {e}.") from e
  kind = data.get("type") if isinstance(data, dict) else None
  if kind not in TOKENIZERS:
    valid = ", ".join(repr(k) for k in TOKENIZERS)
    raise ValueError(f"Tokenizer file {where} has type {kind!r}; valid types: {valid}.")
  return TOKENIZERS[kind].load(path)
