"""A diffusers Stable Diffusion 1.x / 2.x folder -> a t2i_jax text-to-image pipeline folder.

  record, params, tokenizer = read_stable_diffusion("stable-diffusion-v1-5")
  convert_stable_diffusion("stable-diffusion-v1-5", "runs/sd15")  # TextToImage.from_export

The source is what ``StableDiffusionPipeline.save_pretrained(dir, safe_serialization=True)``
writes (or a Hub snapshot of such a repository); see ``LAYOUT``. The UNet, autoencoder and
``CLIPTextModel`` go through their converters (diffusers_unet.py, diffusers_vae.py,
hf_clip.py), each raising on any missing, unexpected or mis-shaped tensor; the tokenizer is the
folder's own BPE (``ClipTokenizer.from_hf_files``, padding with its pad token as transformers
does); the noise schedule and prediction type come from scheduler/scheduler_config.json. The
safety checker and feature extractor are not converted.

The record (t2i_jax/ldm/export.py) keeps ``context_mask`` off, since SD's UNet attends to all 77
text states (padding included), and its resolution is the UNet's sample_size times the
autoencoder's factor, as diffusers' default height and width.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

from t2i_jax.convert.diffusers_common import INDEX_NAME, WEIGHTS_NAME, read_config
from t2i_jax.convert.diffusers_unet import load_diffusers_unet, unet_kwargs_from_diffusers_config
from t2i_jax.convert.diffusers_vae import load_diffusers_vae, vae_kwargs_from_diffusers_config
from t2i_jax.convert.hf_clip import (
  CheckpointConversionError,
  load_hf_clip_text,
  text_kwargs_from_hf_config,
)
from t2i_jax.diffusion.predictions import PREDICTION_TYPES
from t2i_jax.diffusion.schedules import BETA_SCHEDULES
from t2i_jax.ldm import export
from t2i_jax.text.clip_tokenizer import EOT_TOKEN, ClipTokenizer
from t2i_jax.train import export as export_folder

LAYOUT = (
  "A diffusers Stable Diffusion folder (what StableDiffusionPipeline.save_pretrained(dir, "
  "safe_serialization=True) writes, or a Hub snapshot of e.g. stable-diffusion-v1-5) holds "
  "model_index.json; unet/ and vae/ (config.json, diffusion_pytorch_model.safetensors); "
  "text_encoder/ (config.json, model.safetensors); tokenizer/ (vocab.json, merges.txt, "
  "tokenizer_config.json); scheduler/scheduler_config.json."
)
# Files the conversion reads; a tuple lists alternatives (single or sharded weights).
_FILES = (
  "model_index.json",
  "unet/config.json",
  ("unet/" + WEIGHTS_NAME, "unet/" + INDEX_NAME),
  "vae/config.json",
  ("vae/" + WEIGHTS_NAME, "vae/" + INDEX_NAME),
  "text_encoder/config.json",
  ("text_encoder/model.safetensors", "text_encoder/model.safetensors.index.json"),
  "tokenizer/vocab.json",
  "tokenizer/merges.txt",
  "scheduler/scheduler_config.json",
)
# model_index.json component -> the (library, class) names it must have.
_COMPONENTS = {
  "unet": {("diffusers", "UNet2DConditionModel")},
  "vae": {("diffusers", "AutoencoderKL")},
  "text_encoder": {("transformers", "CLIPTextModel")},
  "tokenizer": {("transformers", "CLIPTokenizer"), ("transformers", "CLIPTokenizerFast")},
}
_IGNORED_COMPONENTS = ("scheduler", "safety_checker", "feature_extractor", "image_encoder")

# diffusers scheduler class -> the default sampler of the converted pipeline (TextToImage's
# `sampler`); the classes without one of ours still define the same discrete beta schedule.
_SAMPLERS = {
  "DDIMScheduler": "ddim",
  "DDPMScheduler": "ddpm",
  "DPMSolverMultistepScheduler": "dpmpp_2m",
  "EulerDiscreteScheduler": "euler",
  "EulerAncestralDiscreteScheduler": "euler_ancestral",
  "PNDMScheduler": "ddim",
  "LMSDiscreteScheduler": "ddim",
  "UniPCMultistepScheduler": "ddim",
  "DEISMultistepScheduler": "ddim",
  "HeunDiscreteScheduler": "ddim",
}
# Schedule options with diffusers' defaults (DDIMScheduler / PNDMScheduler).
_SCHEDULE_DEFAULTS = dict(
  num_train_timesteps=1000,
  beta_start=0.0001,
  beta_end=0.02,
  beta_schedule="linear",
  trained_betas=None,
  prediction_type="epsilon",
  rescale_betas_zero_snr=False,
)
# Sampling options that must, where a config sets them, equal what TextToImage's samplers do
# (SD 1.x / 2.x configs all do): "leading" timesteps + 1, DDIM's final alpha_bar_0, no clipping.
_SAMPLING = dict(
  timestep_spacing="leading",
  steps_offset=1,
  set_alpha_to_one=False,
  clip_sample=False,
  thresholding=False,
  use_karras_sigmas=False,
)


def missing_files(folder: str) -> list[str]:
  """What of ``LAYOUT`` ``folder`` lacks: whole subfolders ("unet/"), else files ("a | b" where
  either would do)."""
  missing = []
  for names in _FILES:
    names = (names,) if isinstance(names, str) else names
    subfolder = os.path.dirname(names[0])
    if subfolder and not os.path.isdir(os.path.join(folder, subfolder)):
      if subfolder + "/" not in missing:
        missing.append(subfolder + "/")
    elif not any(os.path.isfile(os.path.join(folder, name)) for name in names):
      missing.append(" | ".join(names))
  return missing


def _read_json(path: str) -> dict[str, Any]:
  with open(path) as f:
    try:
      return json.load(f)
    except json.JSONDecodeError as error:
      raise CheckpointConversionError(f"{path} is not valid JSON: {error}") from error


def check_model_index(model_index: dict[str, Any], path: str) -> None:
  """Raises unless the pipeline's components are the ones a Stable Diffusion 1.x / 2.x has."""
  problems = []
  for name, allowed in _COMPONENTS.items():
    found = tuple(model_index.get(name) or (None, None))
    if found not in allowed:
      problems.append(f"{name} is {found}; expected one of {sorted(allowed)}")
  ignored = set(_COMPONENTS) | set(_IGNORED_COMPONENTS)
  for name, value in sorted(model_index.items()):
    if name.startswith("_") or name in ignored:
      continue
    if isinstance(value, list) and any(v is not None for v in value):
      problems.append(f"an extra component {name}={value} (e.g. SDXL's second text encoder)")
  if problems:
    raise CheckpointConversionError(
      f"{path} ({model_index.get('_class_name')}) is not a Stable Diffusion 1.x / 2.x pipeline: "
      + "; ".join(problems)
      + "."
    )


def schedule_from_config(config: dict[str, Any], path: str) -> tuple[dict[str, Any], str, str]:
  """A scheduler_config.json -> (``make_schedule`` kwargs, prediction_type, default sampler).

  Raises:
    CheckpointConversionError: naming every unsupported class or value (trained_betas, an
      unknown beta_schedule or prediction_type, sampling options TextToImage does not use).
  """
  c = _SCHEDULE_DEFAULTS | config
  problems = []
  class_name = config.get("_class_name")
  if class_name not in _SAMPLERS:
    problems.append(f"_class_name={class_name!r} (implemented: {', '.join(_SAMPLERS)})")
  if c["trained_betas"] is not None:
    problems.append("trained_betas (an explicit beta table) is not supported; only beta_schedule")
  if c["beta_schedule"] not in BETA_SCHEDULES:
    problems.append(f"beta_schedule={c['beta_schedule']!r} (implemented: {BETA_SCHEDULES})")
  if c["prediction_type"] not in PREDICTION_TYPES:
    problems.append(f"prediction_type={c['prediction_type']!r} (valid: {PREDICTION_TYPES})")
  for key, value in _SAMPLING.items():
    if key in config and config[key] != value:
      problems.append(f"{key}={config[key]!r} (TextToImage samples with {value!r})")
  if problems:
    raise CheckpointConversionError(f"Unsupported scheduler config {path}: " + "; ".join(problems))
  schedule = dict(
    kind=c["beta_schedule"],
    num_train_timesteps=int(c["num_train_timesteps"]),
    beta_start=float(c["beta_start"]),
    beta_end=float(c["beta_end"]),
    rescale_zero_terminal_snr=bool(c["rescale_betas_zero_snr"]),
  )
  return schedule, c["prediction_type"], _SAMPLERS[class_name]


def _token(value: Any) -> str | None:
  """A tokenizer_config.json special token: a string or an AddedToken dict."""
  return value.get("content") if isinstance(value, dict) else value


def read_tokenizer(folder: str, max_positions: int) -> ClipTokenizer:
  """tokenizer/ -> ``ClipTokenizer`` padding with the folder's pad token (transformers' default:
  <|endoftext|>) to model_max_length, at most the text encoder's ``max_positions``."""
  config = {}
  for name in ("special_tokens_map.json", "tokenizer_config.json"):  # the latter wins
    path = os.path.join(folder, name)
    if os.path.isfile(path):
      config |= {k: v for k, v in _read_json(path).items() if v is not None}
  context_length = min(int(config.get("model_max_length", max_positions)), max_positions)
  pad_token = _token(config.get("pad_token", EOT_TOKEN))
  vocab, merges = os.path.join(folder, "vocab.json"), os.path.join(folder, "merges.txt")
  try:
    return ClipTokenizer.from_hf_files(vocab, merges, context_length, pad_token=pad_token)
  except ValueError as error:  # a pad token or special token missing from vocab.json
    raise CheckpointConversionError(f"Cannot build the tokenizer of {folder}: {error}") from error


def _first(value: Any) -> Any:
  return value[0] if isinstance(value, list | tuple) else value


def check_parts(
  unet: dict[str, Any], vae: dict[str, Any], text: dict[str, Any], where: str
) -> None:
  """Cross-checks the UNet, autoencoder and text encoder config.json dicts (before any weights
  are read): each must be convertible, and their widths and channels must fit together."""
  unet_kwargs_from_diffusers_config(unet)  # raises on unsupported options
  latent_channels = vae_kwargs_from_diffusers_config(vae)["latent_channels"]
  width = text_kwargs_from_hf_config(text)["width"]
  cross = _first(unet.get("cross_attention_dim", 1280))  # diffusers' defaults
  problems = []
  if width != cross:
    problems.append(
      f"the text encoder's hidden_size={width} differs from the UNet's cross_attention_dim={cross}"
    )
  channels = (unet.get("in_channels", 4), unet.get("out_channels", 4))
  if channels != (latent_channels, latent_channels):
    problems.append(
      f"the UNet's in_channels, out_channels={channels} differ from the autoencoder's "
      f"latent_channels={latent_channels} (inpainting and other conditioned UNets are not "
      "supported)"
    )
  if problems:
    raise CheckpointConversionError(f"{where}: the parts do not fit: " + "; ".join(problems) + ".")


def default_resolution(unet: dict[str, Any], vae: dict[str, Any]) -> int:
  """diffusers' default image side: the UNet's sample_size x the autoencoder's downsampling
  factor, else (no UNet sample_size) the autoencoder's own sample_size."""
  if unet.get("sample_size") is None:
    return int(_first(vae.get("sample_size", 32)))
  levels = len(vae.get("block_out_channels", (64,)))  # diffusers' default: one level
  return int(_first(unet["sample_size"])) * 2 ** (levels - 1)


def read_stable_diffusion(folder: str) -> tuple[dict[str, Any], dict[str, Any], ClipTokenizer]:
  """Reads a diffusers Stable Diffusion folder (see ``LAYOUT``).

  Returns:
    (record, params, tokenizer): the pipeline record of t2i_jax/ldm/export.py, params
    {"unet", "vae", "text"} (float32 numpy arrays) and the prompt tokenizer.

  Raises:
    CheckpointConversionError: a missing file (all of them named), another kind of pipeline,
      an unsupported scheduler or model option, mismatched parts, or any tensor problem.
  """
  folder = os.path.abspath(os.path.expanduser(folder))
  missing = missing_files(folder)
  if missing:
    raise CheckpointConversionError(
      f"{folder} is not a diffusers Stable Diffusion folder: missing {', '.join(missing)}. "
      + LAYOUT
    )
  path = os.path.join(folder, "model_index.json")
  check_model_index(_read_json(path), path)
  path = os.path.join(folder, "scheduler", "scheduler_config.json")
  schedule, prediction_type, sampler = schedule_from_config(_read_json(path), path)
  unet_config = read_config(os.path.join(folder, "unet"), "UNet2DConditionModel")
  vae_config = read_config(os.path.join(folder, "vae"), "AutoencoderKL")
  text_config = _read_json(os.path.join(folder, "text_encoder", "config.json"))
  check_parts(unet_config, vae_config, text_config, folder)

  unet_kwargs, unet_params = load_diffusers_unet(os.path.join(folder, "unet"))
  vae_kwargs, vae_params = load_diffusers_vae(os.path.join(folder, "vae"))
  text_kwargs, text_params = load_hf_clip_text(os.path.join(folder, "text_encoder"))
  tokenizer = read_tokenizer(os.path.join(folder, "tokenizer"), text_kwargs["context_length"])
  if tokenizer.vocab_size > text_kwargs["vocab_size"]:
    raise CheckpointConversionError(
      f"tokenizer/vocab.json has {tokenizer.vocab_size} ids but the text encoder's embedding "
      f"only {text_kwargs['vocab_size']}."
    )
  resolution = default_resolution(unet_config, vae_config)
  record = {
    "unet": unet_kwargs,
    "vae": vae_kwargs,
    "text_encoder": {"kind": "clip", "kwargs": text_kwargs},
    "schedule": schedule,
    "prediction_type": prediction_type,
    "context_mask": False,  # SD's UNet attends to every text state, padding included
    "resolution": resolution,
    "context_length": tokenizer.context_length,
    "sampler": {"name": sampler, "num_steps": 50, "guidance_scale": 7.5},
  }
  try:  # the record must build, and its resolution must fit the UNet's levels
    export.parts_from_record(record, tokenizer).latent_shape(resolution, resolution)
  except ValueError as error:
    raise CheckpointConversionError(f"{folder}: {error}") from error
  return record, {"unet": unet_params, "vae": vae_params, "text": text_params}, tokenizer


def convert_stable_diffusion(folder: str, out: str) -> str:
  """Converts a diffusers Stable Diffusion folder into a new pipeline folder ``out``, which
  ``t2i_jax.pipelines.TextToImage.from_export`` (and experiments.sample --workdir) loads.

  Returns:
    The absolute path of ``out``.

  Raises:
    CheckpointConversionError: see ``read_stable_diffusion``. FileExistsError: ``out`` exists
      and is not an empty folder.
  """
  out = export_folder.require_new_folder(out)  # fail before reading gigabytes
  record, params, tokenizer = read_stable_diffusion(folder)
  export.save_pipeline(out, record, params, tokenizer)
  size = record["resolution"]
  logging.info("Wrote %s: a %dx%d text-to-image pipeline from %s.", out, size, size, folder)
  return out
