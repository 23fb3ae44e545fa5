"""A standalone autoencoder: `vae_config.json` (AutoencoderKL kwargs) + `params/` (Orbax).

Written by a configs/vae_*.py run at num_steps (`workdir/export/`) or by converting a diffusers
AutoencoderKL folder; `config.model.vae_checkpoint` of the latent-diffusion configs points here.
"""

import os
from typing import Any

from t2i_jax.train import export as export_folder

EXPORT_DIR = "export"
CONFIG_FILE = "vae_config.json"


def is_export(path: str) -> bool:
  return not export_folder.missing_files(os.path.abspath(path), (CONFIG_FILE, "params"))


def save_vae(path: str, vae_kwargs: dict[str, Any], params: Any) -> None:
  export_folder.save_export(path, CONFIG_FILE, vae_kwargs, params)


def load_vae(path: str):
  """(AutoencoderKL module, params as host arrays) of an exported autoencoder folder."""
  from t2i_jax.models.vae import AutoencoderKL  # noqa: PLC0415 (keeps this module import-light)

  path = os.path.abspath(os.path.expanduser(path))
  if not is_export(path) and is_export(os.path.join(path, EXPORT_DIR)):
    path = os.path.join(path, EXPORT_DIR)  # a VAE workdir
  missing = export_folder.missing_files(path, (CONFIG_FILE, export_folder.PARAMS_DIR))
  if missing:
    raise FileNotFoundError(
      f"{path} is not an exported autoencoder: missing {', '.join(missing)}. Train "
      "configs/vae_shapes.py (its workdir gets an export/ folder at num_steps) or convert a "
      "diffusers AutoencoderKL folder with `python -m experiments.convert --diffusers_vae=DIR "
      "--out=DIR`."
    )
  kwargs = export_folder.read_kwargs(path, CONFIG_FILE)
  kwargs["block_out_channels"] = tuple(kwargs["block_out_channels"])
  return AutoencoderKL(**kwargs), export_folder.load_tree(path)
