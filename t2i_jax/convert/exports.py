"""Converted checkpoints written as t2i_jax export folders (what `experiments.convert` runs).

  export_hf_clip(folder, out)        HF CLIPModel -> `t2i_jax.clip.export.load_clip` folder
  export_diffusers_vae(folder, out)  diffusers AutoencoderKL -> `t2i_jax.vae.export.load_vae`
                                     folder (`config.model.vae_checkpoint` of configs/ldm_*.py)

A whole Stable Diffusion folder converts with `t2i_jax.convert.stable_diffusion`.
"""

import logging
import os

from t2i_jax.clip.export import save_clip
from t2i_jax.convert.diffusers_vae import load_diffusers_vae
from t2i_jax.convert.hf_clip import load_hf_clip
from t2i_jax.text.clip_tokenizer import ClipTokenizer
from t2i_jax.train import export as export_folder
from t2i_jax.vae.export import save_vae


def clip_tokenizer_for(folder: str, context_length: int) -> ClipTokenizer:
  """The HF folder's own BPE files when present, else the packaged OpenAI vocabulary."""
  vocab, merges = os.path.join(folder, "vocab.json"), os.path.join(folder, "merges.txt")
  if os.path.isfile(vocab) and os.path.isfile(merges):
    return ClipTokenizer.from_hf_files(vocab, merges, context_length)
  return ClipTokenizer(context_length=context_length)


def export_hf_clip(folder: str, out: str) -> None:
  """A transformers `CLIPModel.save_pretrained` folder (config.json, model.safetensors, optionally
  the tokenizer's vocab.json / merges.txt) -> an exported CLIP folder `out` (must be new)."""
  out = export_folder.require_new_folder(out)
  clip_kwargs, params = load_hf_clip(folder)
  tokenizer = clip_tokenizer_for(folder, clip_kwargs["context_length"])
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


def export_diffusers_vae(folder: str, out: str) -> None:
  """A diffusers `AutoencoderKL` folder (e.g. a Stable Diffusion folder's vae/) -> an exported
  autoencoder folder `out` (must be new)."""
  out = export_folder.require_new_folder(out)
  vae_kwargs, params = load_diffusers_vae(folder)
  save_vae(out, vae_kwargs, params)
  logging.info("Wrote %s: AutoencoderKL(%s)", out, vae_kwargs)
