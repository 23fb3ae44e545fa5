"""A self-contained text-to-image pipeline folder: what `TextToImage` loads.

Layout (written by a configs/ldm_*.py run at num_steps as `workdir/export/`, or by converting a
Stable Diffusion checkpoint with `python -m experiments.convert --diffusers_sd=DIR --out=DIR`):
  ldm_config.json   {"unet": UNet kwargs, "vae": AutoencoderKL kwargs, "text_encoder": {"kind":
                     "word" | "clip", "kwargs": module kwargs}, "schedule": make_schedule kwargs,
                     "prediction_type", "context_mask", "resolution", "sampler": defaults}
  tokenizer.json    the prompt tokenizer (`t2i_jax.text.tokenizers.load_tokenizer`)
  params/           Orbax checkpoint of {"unet", "vae", "text"} params
"""

import os
from typing import Any

import jax

from t2i_jax.diffusion.schedules import make_schedule
from t2i_jax.ldm.parts import LDMParts
from t2i_jax.models.clip import TextTransformer
from t2i_jax.models.text_encoder import WordTextEncoder
from t2i_jax.models.unet import UNet
from t2i_jax.models.vae import AutoencoderKL
from t2i_jax.text.tokenizers import load_tokenizer
from t2i_jax.train import export as export_folder

EXPORT_DIR = "export"
CONFIG_FILE = "ldm_config.json"
TOKENIZER_FILE = "tokenizer.json"
_TUPLE_FIELDS = ("block_out_channels", "cross_attention", "num_heads", "transformer_depth")


def is_export(path: str) -> bool:
  return not export_folder.missing_files(path, (CONFIG_FILE, TOKENIZER_FILE, "params"))


def save_pipeline(path: str, record: dict[str, Any], params: Any, tokenizer) -> None:
  """Writes a pipeline folder; `path` must not hold one already."""
  path = export_folder.save_export(path, CONFIG_FILE, record, params)
  if jax.process_index() == 0:
    tokenizer.save(os.path.join(path, TOKENIZER_FILE))


def _tuples(kwargs: dict[str, Any]) -> dict[str, Any]:
  return {
    k: tuple(v) if k in _TUPLE_FIELDS and isinstance(v, list) else v for k, v in kwargs.items()
  }


def parts_from_record(record: dict[str, Any], tokenizer) -> LDMParts:
  """The modules a pipeline record describes."""
  text = record["text_encoder"]
  text_module = {"word": WordTextEncoder, "clip": TextTransformer}[text["kind"]](**text["kwargs"])
  return LDMParts(
    unet=UNet(**_tuples(record["unet"])),
    vae=AutoencoderKL(**_tuples(record["vae"])),
    text_kind=text["kind"],
    text_encoder=text_module,
    pad_id=tokenizer.pad_id,
    eos_id=tokenizer.eos_id,
    context_mask=record["context_mask"],
    prediction_type=record["prediction_type"],
  )


def load_pipeline(path: str):
  """Reads a pipeline folder (or the workdir holding it as export/).

  Returns:
    (parts, params, schedule, tokenizer, record).
  """
  path = os.path.abspath(os.path.expanduser(path))
  if not is_export(path) and is_export(os.path.join(path, EXPORT_DIR)):
    path = os.path.join(path, EXPORT_DIR)
  missing = export_folder.missing_files(path, (CONFIG_FILE, TOKENIZER_FILE, "params"))
  if missing:
    raise FileNotFoundError(
      f"{path} is not a text-to-image pipeline folder: missing {', '.join(missing)}. A "
      "configs/ldm_*.py run writes <workdir>/export/ at num_steps; a Stable Diffusion folder "
      "converts with `python -m experiments.convert --diffusers_sd=DIR --out=DIR`."
    )
  record = export_folder.read_kwargs(path, CONFIG_FILE)
  tokenizer = load_tokenizer(os.path.join(path, TOKENIZER_FILE))
  parts = parts_from_record(record, tokenizer)
  schedule = make_schedule(**record["schedule"])
  return parts, export_folder.load_tree(path), schedule, tokenizer, record
