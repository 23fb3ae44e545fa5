"""A standalone CLIP checkpoint: params + model kwargs + tokenizer, written by training or import.

Layout of an exported CLIP folder (what `--config.model.text_encoder.checkpoint` points at):
  clip_config.json   keyword arguments of `t2i_jax.models.clip.CLIP`
  tokenizer.json     the tokenizer (`t2i_jax.text.tokenizers.load_tokenizer` reads it)
  params/            Orbax checkpoint of the CLIP params pytree
"""

import os
from typing import Any

import jax

from t2i_jax.train import export as export_folder

CONFIG_FILE = "clip_config.json"
TOKENIZER_FILE = "tokenizer.json"
PARAMS_DIR = export_folder.PARAMS_DIR


def save_clip(path: str, clip_kwargs: dict[str, Any], params: Any, tokenizer) -> None:
  """Writes an exported CLIP folder (overwrites nothing: `path` must not hold one already)."""
  if os.path.exists(os.path.join(os.path.abspath(path), PARAMS_DIR)):
    raise FileExistsError(
      f"{os.path.abspath(path)} already holds an exported CLIP; choose another --out."
    )
  path = export_folder.save_export(path, CONFIG_FILE, clip_kwargs, params)
  if jax.process_index() == 0:
    tokenizer.save(os.path.join(path, TOKENIZER_FILE))


def read_clip_kwargs(path: str) -> dict[str, Any]:
  """The `CLIP(**kwargs)` arguments of an exported CLIP folder."""
  _check_folder(path)
  return export_folder.read_kwargs(path, CONFIG_FILE)


def _check_folder(path: str) -> None:
  path = os.path.abspath(path)
  missing = export_folder.missing_files(path, (CONFIG_FILE, TOKENIZER_FILE, PARAMS_DIR))
  if missing:
    raise FileNotFoundError(
      f"{path} is not an exported CLIP folder: missing {', '.join(missing)}. Export one with "
      "`python -m experiments.convert --hf_clip=<HF folder> --out=<dir>` or train "
      "configs/clip_shapes.py (its workdir gets an export/ folder)."
    )


def load_clip(path: str):
  """Reads an exported CLIP folder.

  Returns:
    (model, params, tokenizer): a `CLIP` module, its params (host arrays) and the tokenizer.
  """
  from t2i_jax.models.clip import CLIP  # noqa: PLC0415 (keeps this module import-light)
  from t2i_jax.text.tokenizers import load_tokenizer  # noqa: PLC0415

  path = os.path.abspath(path)
  model = CLIP(**read_clip_kwargs(path))
  params = export_folder.load_tree(path)
  return model, params, load_tokenizer(os.path.join(path, TOKENIZER_FILE))
