"""Converts a Hugging Face CLIP to an exported t2i_jax CLIP folder.

  python -m experiments.convert --hf_clip=<CLIPModel folder> --out=<dir>

The HF folder is what transformers' `CLIPModel.save_pretrained` writes (config.json,
model.safetensors), optionally with the tokenizer's vocab.json / merges.txt; without those the
packaged OpenAI BPE is used. `--out` then holds what `t2i_jax.clip.export.load_clip` reads.
"""

import os

from absl import app, flags, logging

from t2i_jax import cli
from t2i_jax.clip.export import save_clip
from t2i_jax.convert.hf_clip import CheckpointConversionError, load_hf_clip
from t2i_jax.text.clip_tokenizer import ClipTokenizer

_HF_CLIP = flags.DEFINE_string("hf_clip", None, "Hugging Face CLIPModel folder.")
_OUT = flags.DEFINE_string("out", None, "Folder to write the exported CLIP to (must be new).")
flags.mark_flags_as_required(["hf_clip", "out"])


def build_tokenizer(folder: str, context_length: int) -> ClipTokenizer:
  """The folder's own BPE files when present, else the packaged OpenAI vocabulary."""
  vocab, merges = os.path.join(folder, "vocab.json"), os.path.join(folder, "merges.txt")
  if os.path.isfile(vocab) and os.path.isfile(merges):
    return ClipTokenizer.from_hf_files(vocab, merges, context_length)
  return ClipTokenizer(context_length=context_length)


def convert(folder: str, out: str) -> None:
  clip_kwargs, params = load_hf_clip(folder)
  tokenizer = build_tokenizer(folder, clip_kwargs["context_length"])
  # Mismatches that only show up as wrong embeddings later; an export is still useful (e.g. a
  # random test model), so they warn rather than fail.
  if tokenizer.vocab_size > clip_kwargs["vocab_size"]:
    logging.warning(
      "The tokenizer has %d ids but the model's embedding only %d; add vocab.json/merges.txt "
      "to %s.",
      tokenizer.vocab_size,
      clip_kwargs["vocab_size"],
      folder,
    )
  if clip_kwargs["eos_id"] not in (None, tokenizer.eos_id):
    logging.warning(
      "The model pools at eos_id=%d but the tokenizer ends captions with %d.",
      clip_kwargs["eos_id"],
      tokenizer.eos_id,
    )
  save_clip(out, clip_kwargs, params, tokenizer)
  logging.info("Wrote %s: CLIP(%s)", out, clip_kwargs)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
  cli.run(lambda: convert(_HF_CLIP.value, _OUT.value), (CheckpointConversionError, OSError))


if __name__ == "__main__":
  app.run(main)
