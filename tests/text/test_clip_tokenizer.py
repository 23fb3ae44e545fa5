"""Tests for t2i_jax.text.clip_tokenizer.

Parity is checked against two independent implementations built from the packaged merge table:
transformers 5 ``CLIPTokenizer`` / ``CLIPTokenizerFast`` (a test-only dependency; those tests skip
without it) and a pure-Python port of OpenAI's ``clip.simple_tokenizer`` BPE below.
"""

import gzip
import json
import pickle
import re
import subprocess
import sys
import unicodedata

import numpy as np
import pytest
from child_process import subprocess_env

from t2i_jax.text.clip_tokenizer import PACKAGED_MERGES_PATH, ClipTokenizer

SOT, EOT = 49406, 49407
LONG = " ".join(f"a small bird number {i} with red wings, sitting on a branch." for i in range(12))
TEXTS = [
  "a photo of a cat",
  "A PHOTO OF A CAT",
  "a red bird with a short, pointed beak and black wings.",
  "this bird has a white belly and a grey crown",
  "Hello, world!",
  "what?!... no way!!!",
  "(parenthesised) [bracketed] {braced} <angled>",
  "email me: someone@example.com",
  "http://example.com/path?q=1&x=2#frag",
  "1234567890",
  "3.14159 and 2,718 and -42",
  "100% of 42 birds cost $3.50",
  "don't",
  "it's",
  "we're they've I'm you'll he'd",
  "DON'T IT'S WE'RE",
  "rock'n'roll ''quoted'' \"double\"",
  "tab\tseparated\twords",
  "multiple    spaces   here",
  "new\nline\n\nparagraph",
  "  leading and trailing  ",
  "\r\n windows line\r\n",
  "non\u00a0breaking\u3000spaces",
  "café crème brûlée",
  "naïve façade",
  "Übermäßig große Straße",
  "e\u0301 combining accent (NFC composes it)",
  "日本語のテキスト",
  "中文字符测试",
  "한국어 문장",
  "🐦 bird emoji 🐦🐦",
  "👩‍👩‍👧 family with zero-width joiners",
  "مرحبا بالعالم",
  "Привет, мир!",
  "עברית",
  "हिन्दी",
  "&amp; &lt;b&gt;bold&lt;/b&gt; &quot;q&quot; &#39;",
  "<b>html</b> tags",
  "İstanbul",
  "x² ½ ① ﬁ",
  "snake_case_word and kebab-case",
  "a\u200bzero width space",
  "<|startoftext|>literal specials<|endoftext|>",
  "",
  "   ",
  LONG,
  "🐦" * 60,
]
LENGTHS = (77, 16)
# Where transformers (so this tokenizer) and OpenAI's Python code differ, beyond OpenAI's ftfy and
# html.unescape: Rust lower-cases per character (no Greek final sigma), Python's \s also matches
# \x1c-\x1f, and HF matches special tokens before lower-casing.
OPENAI_DIVERGENT = ["ΟΔΟΣ", "a\x1cb", "<|ENDOFTEXT|>"]


def layout(raw: list[list[int]], length: int, sot: int = SOT, eot: int = EOT) -> np.ndarray:
  """clip.tokenize(truncate=True) applied to raw (special-free) ids: int32[B, length]."""
  out = np.zeros((len(raw), length), np.int32)
  for row, ids in enumerate(raw):
    seq = [sot, *ids][: length - 1] + [eot]
    out[row, : len(seq)] = seq
  return out


def bytes_to_unicode():
  bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), 256)]
  cs = bs[:]
  for b in range(256):
    if b not in bs:
      bs.append(b)
      cs.append(256 + len(cs) - 188)
  return dict(zip(bs, map(chr, cs), strict=True))


@pytest.fixture(scope="module")
def openai_tables():
  """vocab {token: id} and merges, derived here as OpenAI's SimpleTokenizer.__init__ does."""
  with gzip.open(PACKAGED_MERGES_PATH, "rt", encoding="utf-8") as f:
    merges = [tuple(m.split()) for m in f.read().split("\n")[1 : 49152 - 256 - 2 + 1]]
  vocab = list(bytes_to_unicode().values())
  vocab += [v + "</w>" for v in vocab] + ["".join(m) for m in merges]
  vocab += ["<|startoftext|>", "<|endoftext|>"]
  return {v: i for i, v in enumerate(vocab)}, merges


@pytest.fixture(scope="module")
def tok():
  return ClipTokenizer()


@pytest.fixture(scope="module")
def hf_files(tmp_path_factory, openai_tables):
  """HF-style vocab.json + merges.txt derived from the packaged table."""
  vocab, merges = openai_tables
  d = tmp_path_factory.mktemp("hf_clip")
  (d / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
  text = "#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n"
  (d / "merges.txt").write_text(text, encoding="utf-8")
  return d


def hf_tokenizer(name, openai_tables):
  transformers = pytest.importorskip(
    "transformers", reason="transformers is a test-only dependency (parity reference)"
  )
  cls = getattr(transformers, name, None)
  if cls is None:
    pytest.skip(f"transformers {transformers.__version__} has no {name}")
  vocab, merges = openai_tables
  # vocab=/merges=, not vocab_file=/merges_file= (silently wrong in transformers 5).
  return cls(vocab=dict(vocab), merges=list(merges))


@pytest.mark.parametrize("name", ["CLIPTokenizer", "CLIPTokenizerFast"])
def test_parity_with_transformers(tok, openai_tables, name):
  hf = hf_tokenizer(name, openai_tables)
  texts = [*TEXTS, *OPENAI_DIVERGENT]
  raw = [hf(t, add_special_tokens=False)["input_ids"] for t in texts]
  assert len(raw[texts.index(LONG)]) > 100  # Exercises truncation at both lengths.
  for length in LENGTHS:
    ours = tok.encode(texts, length)
    np.testing.assert_array_equal(ours, layout(raw, length))
    # HF's own special tokens and truncation agree too once its EOT padding becomes 0.
    full = hf(texts, padding="max_length", truncation=True, max_length=length, return_tensors="np")
    np.testing.assert_array_equal(ours, np.where(full["attention_mask"] == 1, full["input_ids"], 0))


@pytest.mark.parametrize("name", ["CLIPTokenizer", "CLIPTokenizerFast"])
def test_decode_matches_transformers(tok, openai_tables, name):
  hf = hf_tokenizer(name, openai_tables)
  texts = [t for t in TEXTS if "<|" not in t]
  for text, row in zip(texts, tok.encode(texts, 77), strict=True):
    eot = list(row).index(EOT)
    assert tok.decode(row) == [hf.decode(row[1:eot].tolist(), skip_special_tokens=True)], text


def test_matches_transformers_from_pretrained(hf_files, tok):
  transformers = pytest.importorskip(
    "transformers", reason="transformers is a test-only dependency (parity reference)"
  )
  hf = transformers.CLIPTokenizer.from_pretrained(str(hf_files))
  texts = TEXTS[:10]
  full = hf(texts, padding="max_length", truncation=True, max_length=77, return_tensors="np")
  want = np.where(full["attention_mask"] == 1, full["input_ids"], 0)
  np.testing.assert_array_equal(tok.encode(texts), want)


def test_backend_pipeline_equals_transformers(tok, openai_tables):
  """Same tokenizers components and settings as transformers builds (JSON serialisation)."""
  hf = json.loads(hf_tokenizer("CLIPTokenizer", openai_tables).backend_tokenizer.to_str())
  ours = json.loads(tok._backend.to_str())
  for key in ("normalizer", "pre_tokenizer", "decoder", "added_tokens", "model"):
    assert ours[key] == hf[key], key


def openai_reference(text: str, vocab: dict, ranks: dict) -> list[int]:
  """OpenAI SimpleTokenizer.encode minus ftfy and html.unescape (as transformers has no ftfy)."""
  regex = pytest.importorskip("regex", reason="the OpenAI reference needs the regex package")
  pat = regex.compile(
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+",
    regex.IGNORECASE,
  )
  byte_encoder = bytes_to_unicode()
  text = re.sub(r"\s+", " ", unicodedata.normalize("NFC", text)).strip().lower()
  ids = []
  for piece in pat.findall(text):
    if piece in ("<|startoftext|>", "<|endoftext|>"):
      ids.append(vocab[piece])
      continue
    chars = "".join(byte_encoder[b] for b in piece.encode("utf-8"))
    word = (*chars[:-1], chars[-1] + "</w>")
    while len(word) > 1:
      best = min(zip(word, word[1:], strict=False), key=lambda p: ranks.get(p, float("inf")))
      if best not in ranks:
        break
      merged, i = [], 0
      while i < len(word):
        if i + 1 < len(word) and (word[i], word[i + 1]) == best:
          merged.append(word[i] + word[i + 1])
          i += 2
        else:
          merged.append(word[i])
          i += 1
      word = tuple(merged)
    ids.extend(vocab[w] for w in word)
  return ids


def test_parity_with_openai_python_reference(tok, openai_tables):
  vocab, merges = openai_tables
  ranks = {m: i for i, m in enumerate(merges)}
  raw = [openai_reference(t, vocab, ranks) for t in TEXTS]
  for length in LENGTHS:
    np.testing.assert_array_equal(tok.encode(TEXTS, length), layout(raw, length))
  for text in OPENAI_DIVERGENT:  # Documented: we follow transformers here.
    want = layout([openai_reference(text, vocab, ranks)], 77)[0]
    assert tok.encode([text])[0].tolist() != want.tolist(), text


def test_known_openai_ids(tok):
  ids = tok.encode(["a photo of a cat", "a diagram", "a dog", "hello world"], 8)
  assert ids.dtype == np.int32 and ids.shape == (4, 8)
  np.testing.assert_array_equal(ids[0, :7], [SOT, 320, 1125, 539, 320, 2368, EOT])
  np.testing.assert_array_equal(
    ids[1:, :4], [[SOT, 320, 22697, EOT], [SOT, 320, 1929, EOT], [SOT, 3306, 1002, EOT]]
  )
  assert ids[0, 7] == 0 and (ids[1:, 4:] == 0).all()


def test_properties(tok):
  assert (tok.vocab_size, tok.pad_id, tok.sot_id, tok.eos_id) == (49408, 0, SOT, EOT)
  assert tok.context_length == 77
  assert tok.tokenize("Hello world!!") == ["hello</w>", "world</w>", "!!</w>"]


def test_layout_and_truncation(tok):
  ids = tok.encode(["", LONG], 16)
  np.testing.assert_array_equal(ids[0], [SOT, EOT] + [0] * 14)
  assert ids[1, 0] == SOT and ids[1, -1] == EOT and (ids[1, 1:-1] != EOT).all()
  np.testing.assert_array_equal(ids[1, 1:-1], tok.encode([LONG], 77)[0, 1:15])
  assert tok.encode(["a cat"], 2).tolist() == [[SOT, EOT]]
  assert tok.encode([]).shape == (0, 77)
  assert tok.encode(("a", "b")).shape == (2, 77)  # Any sequence, default length.


def test_decode_round_trip(tok):
  texts = ["a photo of a cat", "Two  Birds\tON a branch", "a cat, sitting.", "café 日本語 🐦"]
  assert tok.decode(tok.encode(texts)) == [
    "a photo of a cat",
    "two birds on a branch",
    "a cat , sitting .",
    "café 日本語 🐦",
  ]
  row = tok.encode(["a dog"], 8)[0]
  assert tok.decode(row) == ["a dog"]  # 1-D input is a batch of one; stops at EOT.
  assert tok.decode([[SOT, 320, 2368]]) == ["a cat"]  # No EOT: decodes to the end.


def test_errors(tok):
  with pytest.raises(TypeError, match="sequence of captions"):
    tok.encode("a cat")
  with pytest.raises(TypeError, match="str captions"):
    tok.encode([b"a cat"])
  with pytest.raises(ValueError, match=">= 2"):
    tok.encode(["a cat"], 1)
  with pytest.raises(ValueError, match=">= 2"):
    ClipTokenizer(context_length=1)
  with pytest.raises(ValueError, match="must lie in"):
    tok.decode([[SOT, 49408]])
  with pytest.raises(ValueError, match="shape"):
    tok.decode(np.zeros((1, 2, 3), np.int32))


def test_save_load_packaged(tok, tmp_path):
  path = tmp_path / "tok.json"
  ClipTokenizer(context_length=32).save(path)
  assert json.loads(path.read_text()) == {"type": "clip_bpe", "context_length": 32}
  loaded = ClipTokenizer.load(path)
  assert loaded == ClipTokenizer(context_length=32) and loaded != tok
  assert loaded.context_length == 32
  np.testing.assert_array_equal(loaded.encode(TEXTS), tok.encode(TEXTS, 32))
  (tmp_path / "word.json").write_text('{"type": "word", "vocab": []}')
  with pytest.raises(ValueError, match="clip_bpe"):
    ClipTokenizer.load(tmp_path / "word.json")


def test_from_hf_files_and_custom_save_load(tok, hf_files, tmp_path):
  hf = ClipTokenizer.from_hf_files(hf_files / "vocab.json", hf_files / "merges.txt", 20)
  assert hf.vocab_size == 49408 and (hf.sot_id, hf.eos_id) == (SOT, EOT)
  np.testing.assert_array_equal(hf.encode(TEXTS), tok.encode(TEXTS, 20))
  hf.save(tmp_path / "tok.json")
  data = json.loads((tmp_path / "tok.json").read_text(encoding="utf-8"))
  assert set(data) == {"type", "context_length", "vocab", "merges"} and len(data["vocab"]) == 49408
  loaded = ClipTokenizer.load(tmp_path / "tok.json")
  assert loaded == hf
  np.testing.assert_array_equal(loaded.encode(TEXTS), hf.encode(TEXTS))


def test_custom_openai_merges_file(tmp_path, tok):
  # A truncated table: fewer merges means a smaller vocabulary with specials at the end.
  with gzip.open(PACKAGED_MERGES_PATH, "rt", encoding="utf-8") as f:
    lines = f.read().split("\n")[:101]
  (tmp_path / "small.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
  small = ClipTokenizer(merges_path=tmp_path / "small.txt")
  assert (small.vocab_size, small.sot_id, small.eos_id) == (614, 612, 613)
  ids = small.encode(["the quick brown fox"], 32)
  assert ids.max() <= 613 and small.decode(ids) == ["the quick brown fox"]
  small.save(tmp_path / "small.json")
  assert ClipTokenizer.load(tmp_path / "small.json") == small
  # The packaged file by path is the default tokenizer.
  assert ClipTokenizer(merges_path=PACKAGED_MERGES_PATH) == tok


def test_pickle(tok):
  data = pickle.dumps(tok)
  assert len(data) < 1000  # The packaged vocabulary is re-read, not pickled.
  np.testing.assert_array_equal(pickle.loads(data).encode(TEXTS), tok.encode(TEXTS))


def test_runtime_needs_neither_torch_nor_transformers():
  code = (
    "import sys; from t2i_jax.text.tokenizers import load_tokenizer, ClipTokenizer; "
    "assert ClipTokenizer().encode(['a photo of a cat'])[0, 2] == 1125; "
    "bad = {'torch', 'transformers'} & set(sys.modules); assert not bad, bad"
  )
  subprocess.run([sys.executable, "-c", code], env=subprocess_env(), check=True, timeout=60)
