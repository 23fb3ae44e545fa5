"""Tests for t2i_jax.text.tokenizers (the common interface and load_tokenizer)."""

import json

import numpy as np
import pytest

from t2i_jax.text.clip_tokenizer import ClipTokenizer
from t2i_jax.text.tokenizers import TOKENIZERS, Tokenizer, load_tokenizer
from t2i_jax.text.word_tokenizer import WordTokenizer

CAPTIONS = ["a red circle on the left.", "", "A Blue square"]


@pytest.fixture(scope="module")
def clip():
  return ClipTokenizer(context_length=12)


@pytest.fixture
def word():
  return WordTokenizer(["a", "red", "circle", "on", "the", "left", "."])


def test_registry():
  assert TOKENIZERS == {"word": WordTokenizer, "clip_bpe": ClipTokenizer}


@pytest.mark.parametrize("name", ["word", "clip"])
def test_common_interface(name, word, clip):
  tok = {"word": word, "clip": clip}[name]
  assert isinstance(tok, Tokenizer)
  ids = tok.encode(CAPTIONS, 8)
  assert ids.dtype == np.int32 and ids.shape == (3, 8)
  assert ((0 <= ids) & (ids < tok.vocab_size)).all()
  for row in ids:
    # Exactly one EOS per row, followed only by padding.
    (eos,) = np.flatnonzero(row == tok.eos_id)
    assert (row[eos + 1 :] == tok.pad_id).all()
  assert len(tok.decode(ids)) == 3


def test_word_eos_id(word):
  assert word.eos_id == WordTokenizer.EOS_ID == 2


@pytest.mark.parametrize("name", ["word", "clip"])
def test_load_tokenizer_dispatch(name, word, clip, tmp_path):
  tok = {"word": word, "clip": clip}[name]
  path = tmp_path / "tokenizer.json"
  tok.save(path)
  loaded = load_tokenizer(path)
  assert type(loaded) is type(tok) and loaded == tok
  np.testing.assert_array_equal(loaded.encode(CAPTIONS, 8), tok.encode(CAPTIONS, 8))


def test_load_tokenizer_custom_clip(tmp_path):
  # A non-packaged vocabulary travels inside the file.
  vocab = {"a</w>": 0, "b</w>": 1, "a": 2, "b": 3, "<|startoftext|>": 4, "<|endoftext|>": 5}
  (tmp_path / "vocab.json").write_text(json.dumps(vocab))
  (tmp_path / "merges.txt").write_text("#version: 0.2\n")
  tiny = ClipTokenizer.from_hf_files(tmp_path / "vocab.json", tmp_path / "merges.txt", 6)
  tiny.save(tmp_path / "tokenizer.json")
  loaded = load_tokenizer(tmp_path / "tokenizer.json")
  assert loaded == tiny and loaded.vocab_size == 6
  np.testing.assert_array_equal(
    loaded.encode(["A b", "ab"]), [[4, 0, 1, 5, 0, 0], [4, 2, 1, 5, 0, 0]]
  )


def test_load_tokenizer_errors(tmp_path):
  with pytest.raises(FileNotFoundError, match="No tokenizer file"):
    load_tokenizer(tmp_path / "missing.json")
  bad = tmp_path / "bad.json"
  bad.write_text("not json")
  with pytest.raises(ValueError, match="not valid JSON"):
    load_tokenizer(bad)
  for content in ('{"type": "sentencepiece"}', '{"vocab": []}', "[1, 2]"):
    bad.write_text(content)
    with pytest.raises(ValueError, match="valid types: 'word', 'clip_bpe'"):
      load_tokenizer(bad)
