"""OpenAI CLIP byte-level BPE tokenizer, built on the Rust ``tokenizers`` library.

The pipeline is the one transformers 5 ``CLIPTokenizer`` (= ``CLIPTokenizerFast``) builds, so ids
match it exactly for any text:

1. Normalise: Unicode NFC, every run of whitespace (``\\s+``) -> one space, lower-case.
2. Pre-tokenise with CLIP's regex (``<|startoftext|>``, ``<|endoftext|>``, the contractions
   ``'s 't 're 've 'm 'll 'd``, runs of letters, single digits, runs of other non-space
   characters), dropping whitespace; then map each piece's UTF-8 bytes to printable characters
   (GPT-2 byte-level alphabet).
3. BPE with the ``</w>`` end-of-word suffix on the last symbol of each piece.

OpenAI's own ``clip.simple_tokenizer`` additionally runs ``ftfy.fix_text`` (mojibake repair, then
NFC) and ``html.unescape`` twice; transformers does neither when ``ftfy`` is absent and neither do
we, so e.g. ``"&amp;"`` stays three tokens (``&``, ``amp``, ``;``) instead of becoming ``&``.
Three further corner cases follow transformers rather than OpenAI's Python: lower-casing is per
character (Greek final ``Σ`` -> ``σ``, not ``ς``), ``\\x1c``-``\\x1f`` are not whitespace, and
special-token literals are matched before lower-casing (``<|ENDOFTEXT|>`` is ordinary text). For
ordinary captions all agree (the tests check both references).

Sequences are laid out as ``clip.tokenize(truncate=True)`` does: ``[SOT] + tokens + [EOT]``,
truncated so EOT is always kept as the last real token, then padded with id 0. HF pads openai
checkpoints with EOT instead; CLIP text towers pool at the *first* EOT (OpenAI takes the argmax id,
which is EOT; HF takes the first ``eos_token_id``), so either padding gives the same embeddings.
Note id 0 is also the ordinary token ``"!"``; it is only padding after the first EOT. Models that
read the hidden states *after* the EOT (Stable Diffusion's UNet attends to all 77) depend on the
padding id, so ``from_hf_files`` takes the checkpoint's pad token (SD 1.x: EOT; SD 2.x: ``"!"``).

Literal ``<|startoftext|>`` / ``<|endoftext|>`` in a caption map to the special ids, as in both
OpenAI's and HF's tokenizers.
"""

from __future__ import annotations

import functools
import gzip
import json
import os
from collections.abc import Sequence

import numpy as np
import tokenizers
from tokenizers import Regex, decoders, models, normalizers, pre_tokenizers

from t2i_jax.text.ids import as_id_batch

SOT_TOKEN = "<|startoftext|>"
EOT_TOKEN = "<|endoftext|>"
END_OF_WORD = "</w>"
# OpenAI keeps the first 49152 - 256 - 2 merges so that bytes (256) + merges + 2 specials fill a
# 49152-entry table before the </w> byte variants (another 256) are added: 49408 tokens in all.
NUM_OPENAI_MERGES = 49152 - 256 - 2
PACKAGED_MERGES_PATH = os.path.join(
  os.path.dirname(os.path.abspath(__file__)), "assets", "bpe_simple_vocab_16e6.txt.gz"
)
# Identical to transformers' CLIPTokenizer; the special tokens come first so they are never split.
_CLIP_PATTERN = (
  r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"
)

Vocab = dict[str, int]
Merges = list[tuple[str, str]]


def bytes_to_unicode() -> dict[int, str]:
  """GPT-2/CLIP map from each byte to a printable character (printable Latin-1 bytes map to
  themselves, the rest to code points from 256 up), in the order that defines CLIP's byte ids."""
  bs = (
    list(range(ord("!"), ord("~") + 1))
    + list(range(ord("¡"), ord("¬") + 1))
    + list(range(ord("®"), ord("ÿ") + 1))
  )
  cs = bs[:]
  n = 0
  for b in range(256):
    if b not in bs:
      bs.append(b)
      cs.append(256 + n)
      n += 1
  return dict(zip(bs, (chr(c) for c in cs), strict=True))


def read_openai_merges(path: str | os.PathLike) -> Merges:
  """Reads an OpenAI-format merge table (``.gz`` or plain text) as CLIP's ``SimpleTokenizer`` does.

  The first line is a header; the next :data:`NUM_OPENAI_MERGES` lines (or fewer, if the file is
  shorter) are ``"left right"`` merges in priority order.
  """
  with open(path, "rb") as f:
    raw = f.read()
  if raw[:2] == b"\x1f\x8b":  # gzip magic, so the extension does not matter.
    raw = gzip.decompress(raw)
  lines = raw.decode("utf-8").split("\n")[1 : NUM_OPENAI_MERGES + 1]
  merges = []
  for lineno, line in enumerate(lines, start=2):
    if not line:
      continue
    parts = line.split()
    if len(parts) != 2:
      raise ValueError(f"{os.fspath(path)!r} line {lineno}: want 'left right', got {line!r}.")
    merges.append((parts[0], parts[1]))
  return merges


def openai_vocab(merges: Merges) -> Vocab:
  """CLIP's vocabulary: bytes, bytes + ``</w>``, one token per merge, then SOT and EOT."""
  byte_chars = list(bytes_to_unicode().values())
  tokens = byte_chars + [c + END_OF_WORD for c in byte_chars]
  tokens += [a + b for a, b in merges]
  tokens += [SOT_TOKEN, EOT_TOKEN]
  return {t: i for i, t in enumerate(tokens)}


@functools.lru_cache(maxsize=1)
def _packaged_vocab_and_merges() -> tuple[Vocab, Merges]:
  # Cached: every default ClipTokenizer shares one parsed copy (about 0.1 s to read).
  merges = read_openai_merges(PACKAGED_MERGES_PATH)
  return openai_vocab(merges), merges


def build_backend(vocab: Vocab, merges: Merges) -> tokenizers.Tokenizer:
  """The ``tokenizers`` pipeline of transformers' ``CLIPTokenizer`` (no post-processor: we add
  SOT/EOT ourselves so truncation can keep EOT)."""
  tok = tokenizers.Tokenizer(
    models.BPE(
      vocab=vocab,
      merges=merges,
      dropout=None,
      continuing_subword_prefix="",
      end_of_word_suffix=END_OF_WORD,
      fuse_unk=False,
      unk_token=EOT_TOKEN,
    )
  )
  tok.normalizer = normalizers.Sequence(
    [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
  )
  tok.pre_tokenizer = pre_tokenizers.Sequence(
    [
      pre_tokenizers.Split(Regex(_CLIP_PATTERN), behavior="removed", invert=True),
      pre_tokenizers.ByteLevel(add_prefix_space=False),
    ]
  )
  tok.decoder = decoders.ByteLevel()
  # Matched on the raw text before normalisation, as transformers registers them.
  tok.add_special_tokens(
    [tokenizers.AddedToken(t, special=True, normalized=False) for t in (SOT_TOKEN, EOT_TOKEN)]
  )
  return tok


class ClipTokenizer:
  """OpenAI CLIP BPE tokenizer producing fixed-length int32 id sequences.

  Picklable and cheap to pickle (the packaged vocabulary is re-read, not serialised), so it can be
  shipped to data-loader worker processes.
  """

  def __init__(self, context_length: int = 77, merges_path: str | os.PathLike | None = None):
    """Builds the tokenizer from an OpenAI-format merge table.

    Args:
      context_length: Default sequence length L of :meth:`encode` (77 for OpenAI CLIP).
      merges_path: OpenAI ``bpe_simple_vocab_16e6.txt.gz``-style merge table; None uses the copy
        packaged with t2i_jax.
    """
    if merges_path is None or _same_file(merges_path, PACKAGED_MERGES_PATH):
      vocab, merges = _packaged_vocab_and_merges()
      self._init(context_length, vocab, merges, packaged=True)
    else:
      merges = read_openai_merges(merges_path)
      self._init(context_length, openai_vocab(merges), merges, packaged=False)

  def _init(
    self, context_length: int, vocab: Vocab, merges: Merges, packaged: bool, pad_id: int = 0
  ) -> None:
    _check_length(context_length, "context_length")
    for special in (SOT_TOKEN, EOT_TOKEN):
      if special not in vocab:
        raise ValueError(f"The vocabulary has no {special!r} token.")
    self._context_length = int(context_length)
    self._vocab = vocab
    self._merges = merges
    self._packaged = packaged
    self._backend = build_backend(vocab, merges)
    self._sot_id = vocab[SOT_TOKEN]
    self._eos_id = vocab[EOT_TOKEN]
    self._vocab_size = max(vocab.values()) + 1
    if not 0 <= pad_id < self._vocab_size:
      raise ValueError(f"pad_id={pad_id} is outside the vocabulary [0, {self._vocab_size}).")
    self._pad_id = int(pad_id)

  @classmethod
  def _from_vocab(
    cls, vocab: Vocab, merges: Merges, context_length: int, pad_id: int = 0
  ) -> ClipTokenizer:
    self = cls.__new__(cls)
    self._init(context_length, vocab, merges, packaged=False, pad_id=pad_id)
    return self

  @classmethod
  def from_hf_files(
    cls,
    vocab_json: str | os.PathLike,
    merges_txt: str | os.PathLike,
    context_length: int = 77,
    pad_token: str | None = None,
  ) -> ClipTokenizer:
    """Builds the tokenizer from a HF checkpoint's ``vocab.json`` and ``merges.txt``.

    Both files are parsed by ``tokenizers`` exactly as transformers parses them (a leading
    ``#version`` line is skipped). The vocabulary must contain ``<|startoftext|>`` and
    ``<|endoftext|>``; their ids become :attr:`sot_id` and :attr:`eos_id`. ``pad_token`` (the
    checkpoint's ``tokenizer_config.json`` ``pad_token``) pads rows as transformers does; None
    pads with id 0 as ``clip.tokenize``.
    """
    vocab, merges = models.BPE.read_file(os.fspath(vocab_json), os.fspath(merges_txt))
    if pad_token is not None and pad_token not in vocab:
      raise ValueError(f"The pad token {pad_token!r} is not in {os.fspath(vocab_json)!r}.")
    pad_id = 0 if pad_token is None else vocab[pad_token]
    return cls._from_vocab(dict(vocab), [tuple(m) for m in merges], context_length, pad_id)

  @property
  def context_length(self) -> int:
    return self._context_length

  @property
  def vocab_size(self) -> int:
    """Number of ids (49408 for the packaged vocabulary), i.e. 1 + the largest id."""
    return self._vocab_size

  @property
  def pad_id(self) -> int:
    """0, as in ``clip.tokenize`` (also the token ``"!"``), unless ``from_hf_files`` got a
    ``pad_token`` (see the module docstring)."""
    return self._pad_id

  @property
  def sot_id(self) -> int:
    """Id of ``<|startoftext|>`` (49406 for the packaged vocabulary)."""
    return self._sot_id

  @property
  def eos_id(self) -> int:
    """Id of ``<|endoftext|>`` (49407 for the packaged vocabulary)."""
    return self._eos_id

  def tokenize(self, text: str) -> list[str]:
    """The BPE tokens of one text, without SOT/EOT (e.g. ``["a</w>", "cat</w>"]``)."""
    return self._backend.encode(text, add_special_tokens=False).tokens

  def encode(self, texts: Sequence[str], max_length: int | None = None) -> np.ndarray:
    """Encodes a batch of captions.

    Each row is ``[SOT] + tokens[: L - 2] + [EOT]`` followed by ``pad_id`` up to L, which is what
    ``clip.tokenize(texts, L, truncate=True)`` returns.

    Args:
      texts: B captions.
      max_length: Sequence length L, at least 2; None uses ``context_length``.

    Returns:
      int32[B, L] token ids.
    """
    if isinstance(texts, str):
      raise TypeError("encode expects a sequence of captions; wrap a single caption in a list.")
    texts = list(texts)
    for text in texts:
      if not isinstance(text, str):
        raise TypeError(f"encode expects str captions, got {type(text).__name__}.")
    length = self._context_length if max_length is None else max_length
    _check_length(length, "max_length")
    out = np.full((len(texts), length), self.pad_id, dtype=np.int32)
    for row, enc in enumerate(self._backend.encode_batch(texts, add_special_tokens=False)):
      ids = enc.ids[: length - 2]
      out[row, 0] = self._sot_id
      out[row, 1 : len(ids) + 1] = ids
      out[row, len(ids) + 1] = self._eos_id
    return out

  def decode(self, ids: np.ndarray | Sequence[Sequence[int]] | Sequence[int]) -> list[str]:
    """Decodes id sequences back to text, like HF ``CLIPTokenizer.decode``.

    Decoding stops at the first EOT (so padding is never read) and skips SOT. Words are
    space-separated (``"a cat, sitting"`` comes back as ``"a cat , sitting"``) and the text is
    lower-cased and whitespace-normalised.

    Args:
      ids: int[B, L] ids, or int[L] for a single sequence (treated as a batch of one).

    Returns:
      B strings.
    """
    arr = as_id_batch(ids, self.vocab_size)
    rows = []
    for row in arr.tolist():
      end = row.index(self._eos_id) if self._eos_id in row else len(row)
      rows.append([i for i in row[:end] if i != self._sot_id])
    texts = self._backend.decode_batch(rows, skip_special_tokens=False)
    # The ByteLevel decoder leaves the suffix in place; HF turns it into spaces the same way.
    return [t.replace(END_OF_WORD, " ").strip() for t in texts]

  def _config(self) -> dict:
    data: dict = {"type": "clip_bpe", "context_length": self._context_length}
    if not self._packaged:
      data["vocab"] = self._vocab
      data["merges"] = [list(m) for m in self._merges]
      if self._pad_id:
        data["pad_id"] = self._pad_id
    return data

  def save(self, path: str | os.PathLike) -> None:
    """Writes the tokenizer as JSON.

    ``{"type": "clip_bpe", "context_length": L}`` for the packaged vocabulary; otherwise the
    vocabulary (``{token: id}``), merges (``[[left, right], ...]``) and a non-zero ``pad_id``
    are written too.
    """
    with open(path, "w", encoding="utf-8") as f:
      json.dump(self._config(), f, ensure_ascii=False)

  @classmethod
  def _from_config(cls, data: dict, where: str) -> ClipTokenizer:
    if not isinstance(data, dict) or data.get("type") != "clip_bpe":
      raise ValueError(f"{where} is not a CLIP BPE tokenizer file (want type 'clip_bpe').")
    context_length = data.get("context_length", 77)
    has_vocab, has_merges = "vocab" in data, "merges" in data
    if has_vocab != has_merges:
      raise ValueError(f"{where} must have both 'vocab' and 'merges' or neither.")
    if not has_vocab:
      return cls(context_length)
    merges = [tuple(m) for m in data["merges"]]
    return cls._from_vocab(dict(data["vocab"]), merges, context_length, data.get("pad_id", 0))

  @classmethod
  def load(cls, path: str | os.PathLike) -> ClipTokenizer:
    """Reads a tokenizer written by :meth:`save`."""
    with open(path, encoding="utf-8") as f:
      data = json.load(f)
    return cls._from_config(data, repr(os.fspath(path)))

  def __reduce__(self):
    return _unpickle, (self._config(),)

  def __eq__(self, other: object) -> bool:
    if not isinstance(other, ClipTokenizer):
      return False
    if (self._context_length, self._pad_id) != (other._context_length, other._pad_id):
      return False
    # Identity first: tokenizers on the packaged vocabulary share the cached objects.
    same_vocab = self._vocab is other._vocab or self._vocab == other._vocab
    same_merges = self._merges is other._merges or self._merges == other._merges
    return same_vocab and same_merges

  def __hash__(self) -> int:
    return hash((self._context_length, self._vocab_size, len(self._merges)))

  def __repr__(self) -> str:
    return (
      f"ClipTokenizer(vocab_size={self.vocab_size}, context_length={self.context_length}, "
      f"packaged={self._packaged})"
    )


def _unpickle(config: dict) -> ClipTokenizer:
  return ClipTokenizer._from_config(config, "pickled state")


def _check_length(length: int, name: str) -> None:
  if isinstance(length, bool) or not isinstance(length, (int, np.integer)):
    raise TypeError(f"{name} must be an int, got {type(length).__name__}.")
  if length < 2:
    raise ValueError(
      f"{name} must be >= 2 to hold <|startoftext|> and <|endoftext|>, got {length}."
    )


def _same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
  try:
    return os.path.samefile(a, b)
  except OSError:
    return False
