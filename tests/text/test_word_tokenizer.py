"""Tests for t2i_jax.text.word_tokenizer."""

import numpy as np
import pytest

from t2i_jax.text.word_tokenizer import WordTokenizer


@pytest.fixture
def tok():
  return WordTokenizer(["a", "red", "circle", "on", "the", "left", "."])


def test_specials_come_first(tok):
  assert (tok.PAD_ID, tok.UNK_ID, tok.EOS_ID) == (0, 1, 2)
  assert tok.pad_id == 0
  assert tok.vocab_size == 3 + 7
  assert tok.decode([[3, 4, 2]]) == ["a red"]


def test_split_words_lowercases_and_splits_punctuation():
  assert WordTokenizer.split_words("A Red-bird's  nest, 42!") == [
    "a",
    "red",
    "-",
    "bird's",
    "nest",
    ",",
    "42",
    "!",
  ]
  assert WordTokenizer.split_words("   ") == []


def test_encode_layout(tok):
  ids = tok.encode(["A red circle.", ""], max_length=6)
  assert ids.dtype == np.int32 and ids.shape == (2, 6)
  np.testing.assert_array_equal(ids[0], [3, 4, 5, 9, 2, 0])
  np.testing.assert_array_equal(ids[1], [2, 0, 0, 0, 0, 0])


def test_round_trip(tok):
  text = "The red circle on the left."
  ids = tok.encode([text], max_length=16)
  assert tok.decode(ids) == [" ".join(tok.split_words(text))]
  assert tok.decode(ids[0]) == ["the red circle on the left ."]  # 1-D input is one sequence


def test_unknown_words_map_to_unk(tok):
  ids = tok.encode(["a blue square"], max_length=5)
  np.testing.assert_array_equal(ids[0], [3, tok.UNK_ID, tok.UNK_ID, tok.EOS_ID, tok.PAD_ID])
  assert tok.decode(ids) == ["a <unk> <unk>"]


def test_truncation_keeps_eos(tok):
  ids = tok.encode(["a red circle on the left"], max_length=3)
  np.testing.assert_array_equal(ids[0], [3, 4, tok.EOS_ID])
  exact = tok.encode(["a red"], max_length=3)
  np.testing.assert_array_equal(exact[0], [3, 4, tok.EOS_ID])


def test_encode_errors(tok):
  with pytest.raises(ValueError, match="max_length must be >= 2"):
    tok.encode(["a"], max_length=1)
  with pytest.raises(TypeError, match="sequence of captions"):
    tok.encode("a red circle", max_length=4)


def test_decode_rejects_out_of_range(tok):
  with pytest.raises(ValueError, match="ids must lie in"):
    tok.decode([[3, 99]])


def test_constructor_validation():
  with pytest.raises(ValueError, match="special tokens"):
    WordTokenizer(["a", "<eos>"])
  with pytest.raises(ValueError, match="duplicate"):
    WordTokenizer(["a", "b", "a"])


def test_save_load_identity(tok, tmp_path):
  path = tmp_path / "tok.json"
  tok.save(path)
  loaded = WordTokenizer.load(path)
  assert loaded == tok
  assert loaded.vocab == tok.vocab
  texts = ["the red circle", "nothing known here"]
  np.testing.assert_array_equal(loaded.encode(texts, 8), tok.encode(texts, 8))


def test_load_rejects_other_types(tmp_path):
  path = tmp_path / "bpe.json"
  path.write_text('{"type": "bpe", "vocab": []}')
  with pytest.raises(ValueError, match="not a word tokenizer"):
    WordTokenizer.load(path)


def test_from_corpus_frequency_then_alphabetical():
  corpus = ["b a c", "a b", "a d", "c"]  # a:3, b:2, c:2, d:1
  tok = WordTokenizer.from_corpus(corpus)
  assert tok.vocab == ["a", "b", "c", "d"]
  assert WordTokenizer.from_corpus(corpus, min_count=2).vocab == ["a", "b", "c"]
  assert WordTokenizer.from_corpus(corpus, max_size=2).vocab == ["a", "b"]
  # Independent of corpus order.
  assert WordTokenizer.from_corpus(list(reversed(corpus))) == tok
  assert WordTokenizer.from_corpus(iter(corpus)) == tok
