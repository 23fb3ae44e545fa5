"""A standalone shapes attribute classifier: params + model kwargs, written when training ends.

Layout of an exported classifier folder (what `--classifier_checkpoint` points at):
  classifier_config.json   keyword arguments of `t2i_jax.models.shapes_classifier.ShapesClassifier`
  params/                  Orbax checkpoint of its params pytree
"""

import os
from typing import Any

from t2i_jax.train import export as export_folder

CONFIG_FILE = "classifier_config.json"
EXPORT_DIR = "export"
HOW_TO_GET = (
  "Train one with `python -m experiments.train --config=configs/shapes_classifier.py "
  "--workdir=runs/shapes_classifier` (a few minutes on a CPU); it exports "
  "runs/shapes_classifier/export/."
)


def save_classifier(path: str, kwargs: dict[str, Any], params: Any) -> str:
  """Writes an exported classifier folder; returns its absolute path (refuses to overwrite)."""
  return export_folder.save_export(path, CONFIG_FILE, kwargs, params)


def resolve(path: str) -> str:
  """The export folder at `path`, or at `path/export/` when `path` is a classifier workdir.

  Raises:
    FileNotFoundError: neither holds an export; the message says how to make one.
  """
  path = os.path.abspath(os.path.expanduser(path))
  if not os.path.exists(os.path.join(path, CONFIG_FILE)) and os.path.isdir(
    os.path.join(path, EXPORT_DIR)
  ):
    path = os.path.join(path, EXPORT_DIR)
  missing = export_folder.missing_files(path, (CONFIG_FILE, export_folder.PARAMS_DIR))
  if missing:
    raise FileNotFoundError(
      f"{path} is not an exported shapes attribute classifier: missing {', '.join(missing)}. "
      + HOW_TO_GET
    )
  return path


def load_classifier(path: str):
  """Reads an exported classifier folder (or a classifier workdir).

  Returns:
    (model, params): a `ShapesClassifier` and its params (host numpy arrays).
  """
  from t2i_jax.models.shapes_classifier import ShapesClassifier  # noqa: PLC0415 (import-light)

  path = resolve(path)
  model = ShapesClassifier(**export_folder.read_kwargs(path, CONFIG_FILE))
  return model, export_folder.load_tree(path)
