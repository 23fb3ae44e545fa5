"""Word-level tokenizer for small caption datasets.

Captions are lower-cased and split into words (``[a-z0-9']+``) and single-character punctuation
tokens. The vocabulary always starts with the special tokens ``<pad>``, ``<unk>`` and ``<eos>`` so
their ids are fixed (0, 1, 2) regardless of the corpus.
"""

from __future__ import annotations

import collections
import json
import os
import re
from collections.abc import Iterable, Sequence

import numpy as np

from t2i_jax.text.ids import as_id_batch

# One token is either a run of word characters or any single other non-space character, so
# "a red-bird." -> ["a", "red", "-", "bird", "."].
_TOKEN_RE = re.compile(r"[a-z0-9']+|[^\sa-z0-9']")


class WordTokenizer:
  """Maps captions to fixed-length int32 id sequences and back.

  Attributes:
    PAD_ID: Id of ``<pad>``; fills positions after ``<eos>``.
    UNK_ID: Id of ``<unk>``; used for words missing from the vocabulary.
    EOS_ID: Id of ``<eos>``; always present in an encoded sequence.
    SPECIALS: The special tokens, in id order.
  """

  PAD_ID = 0
  UNK_ID = 1
  EOS_ID = 2
  SPECIALS = ("<pad>", "<unk>", "<eos>")

  def __init__(self, vocab: Sequence[str]):
    """Builds a tokenizer.

    Args:
      vocab: The non-special words, in id order; word ``vocab[i]`` gets id ``i + 3``.

    Raises:
      ValueError: If ``vocab`` contains duplicates or special tokens.
    """
    if isinstance(vocab, str):
      raise TypeError("vocab must be a sequence of words, not a single string.")
    words = list(vocab)
    specials = set(self.SPECIALS)
    bad = sorted({w for w in words if w in specials})
    if bad:
      raise ValueError(f"vocab must not contain special tokens; found {bad}.")
    counts = collections.Counter(words)
    dups = sorted(w for w, c in counts.items() if c > 1)
    if dups:
      raise ValueError(f"vocab contains duplicate words: {dups[:10]}.")
    self._id_to_token = list(self.SPECIALS) + words
    self._token_to_id = {t: i for i, t in enumerate(self._id_to_token)}

  @classmethod
  def from_corpus(
    cls, texts: Iterable[str], min_count: int = 1, max_size: int | None = None
  ) -> WordTokenizer:
    """Builds a vocabulary from a corpus.

    Words are ordered by decreasing frequency, ties broken alphabetically, so the result is
    deterministic for a given corpus regardless of iteration order.

    Args:
      texts: Captions.
      min_count: Words seen fewer times than this are left out (they encode as ``<unk>``).
      max_size: Maximum number of non-special words kept (the vocabulary size is then at most
        ``max_size + 3``); None keeps all.

    Returns:
      The tokenizer.
    """
    if min_count < 1:
      raise ValueError(f"min_count must be >= 1, got {min_count}.")
    if max_size is not None and max_size < 0:
      raise ValueError(f"max_size must be >= 0 or None, got {max_size}.")
    counts: collections.Counter[str] = collections.Counter()
    for text in texts:
      counts.update(cls.split_words(text))
    for special in cls.SPECIALS:
      # Specials cannot appear via split_words ("<" is its own token) but guard anyway.
      counts.pop(special, None)
    words = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
    if max_size is not None:
      words = words[:max_size]
    return cls(words)

  @staticmethod
  def split_words(text: str) -> list[str]:
    """Lower-cases ``text`` and splits it into word and punctuation tokens."""
    return _TOKEN_RE.findall(text.lower())

  @property
  def vocab_size(self) -> int:
    """Number of ids, specials included."""
    return len(self._id_to_token)

  @property
  def pad_id(self) -> int:
    return self.PAD_ID

  @property
  def eos_id(self) -> int:
    return self.EOS_ID

  @property
  def vocab(self) -> list[str]:
    """The non-special words, in id order (what the constructor takes)."""
    return self._id_to_token[len(self.SPECIALS) :]

  def token_to_id(self, token: str) -> int:
    return self._token_to_id.get(token, self.UNK_ID)

  def encode(self, texts: Sequence[str], max_length: int) -> np.ndarray:
    """Encodes a batch of captions.

    Each row is the word ids, truncated to ``max_length - 1`` words, then ``<eos>``, then
    ``<pad>`` up to ``max_length``, so every row contains exactly one ``<eos>``.

    Args:
      texts: B captions.
      max_length: Sequence length L, at least 2 (one word plus ``<eos>``).

    Returns:
      int32[B, L] token ids.
    """
    if isinstance(texts, str):
      raise TypeError("encode expects a sequence of captions; wrap a single caption in a list.")
    if max_length < 2:
      raise ValueError(f"max_length must be >= 2 to hold a word and <eos>, got {max_length}.")
    out = np.full((len(texts), max_length), self.PAD_ID, dtype=np.int32)
    for row, text in enumerate(texts):
      ids = [self.token_to_id(w) for w in self.split_words(text)[: max_length - 1]]
      ids.append(self.EOS_ID)
      out[row, : len(ids)] = ids
    return out

  def decode(self, ids: np.ndarray | Sequence[Sequence[int]] | Sequence[int]) -> list[str]:
    """Decodes id sequences back to space-joined text.

    Decoding stops at the first ``<eos>`` and skips ``<pad>``; unknown words come back as
    ``<unk>``. Punctuation is space-separated, so ``decode(encode([t]))`` equals
    ``" ".join(split_words(t))`` for in-vocabulary text that fits.

    Args:
      ids: int[B, L] ids, or int[L] for a single sequence (treated as a batch of one).

    Returns:
      B strings.
    """
    arr = as_id_batch(ids, self.vocab_size)
    texts = []
    for row in arr.tolist():
      tokens = []
      for i in row:
        if i == self.EOS_ID:
          break
        if i != self.PAD_ID:
          tokens.append(self._id_to_token[i])
      texts.append(" ".join(tokens))
    return texts

  def save(self, path: str | os.PathLike) -> None:
    """Writes ``{"type": "word", "vocab": [...]}`` (non-special words) as JSON."""
    with open(path, "w", encoding="utf-8") as f:
      json.dump({"type": "word", "vocab": self.vocab}, f, ensure_ascii=False, indent=0)

  @classmethod
  def load(cls, path: str | os.PathLike) -> WordTokenizer:
    """Reads a tokenizer written by :meth:`save`."""
    with open(path, encoding="utf-8") as f:
      data = json.load(f)
    if not isinstance(data, dict) or data.get("type") != "word" or "vocab" not in data:
      raise ValueError(f"{os.fspath(path)!r} is not a word tokenizer file (want type 'word').")
    return cls(data["vocab"])

  def __eq__(self, other: object) -> bool:
    return isinstance(other, WordTokenizer) and self._id_to_token == other._id_to_token

  def __hash__(self) -> int:
    return hash(tuple(self._id_to_token))

  def __repr__(self) -> str:
    return f"WordTokenizer(vocab_size={self.vocab_size})"
