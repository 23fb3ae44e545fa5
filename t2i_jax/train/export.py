"""Standalone export folders: a params pytree (Orbax) beside a JSON file of model arguments.

Other configs load these as frozen parts (a CLIP text encoder, a Stage-I StackGAN generator), so a
run's export must never be overwritten in place: saving into a folder that holds one raises.
"""

import json
import os
from typing import Any

import jax
import orbax.checkpoint as ocp

PARAMS_DIR = "params"


def save_export(path: str, config_file: str, kwargs: dict[str, Any], tree: Any) -> str:
  """Writes `tree` to `path/params/` and `kwargs` to `path/config_file`; returns the abs path."""
  path = os.path.abspath(path)
  if os.path.exists(os.path.join(path, PARAMS_DIR)):
    raise FileExistsError(f"{path} already holds an export; choose another folder.")
  os.makedirs(path, exist_ok=True)
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(os.path.join(path, PARAMS_DIR), tree)
  checkpointer.wait_until_finished()
  if jax.process_index() == 0:
    with open(os.path.join(path, config_file), "w") as f:
      json.dump(kwargs, f, indent=2, sort_keys=True)
  return path


def require_new_folder(path: str) -> str:
  """`path` as an absolute path if it is free for a new export: absent or an empty folder.

  Converters write a whole folder (params, config, tokenizer), so they must neither overwrite an
  export nor mix files into a training workdir (whose tokenizer.json they would replace).
  """
  path = os.path.abspath(os.path.expanduser(path))
  if os.path.exists(os.path.join(path, PARAMS_DIR)):
    raise FileExistsError(f"{path} already holds an export; choose another folder.")
  if os.path.exists(path) and (not os.path.isdir(path) or os.listdir(path)):
    raise FileExistsError(
      f"{path} exists and is not empty; converted checkpoints go into a new folder: choose "
      "another --out."
    )
  return path


def missing_files(path: str, names: tuple[str, ...]) -> list[str]:
  """Which of `names` (files or folders) `path` lacks."""
  return [name for name in names if not os.path.exists(os.path.join(path, name))]


def read_kwargs(path: str, config_file: str) -> dict[str, Any]:
  with open(os.path.join(os.path.abspath(path), config_file)) as f:
    return json.load(f)


def load_tree(path: str) -> Any:
  """The params pytree of an export folder, as host numpy arrays (no restore target needed)."""
  return ocp.StandardCheckpointer().restore(os.path.join(os.path.abspath(path), PARAMS_DIR))
