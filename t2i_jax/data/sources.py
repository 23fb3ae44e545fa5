"""Builds the random-access data source named by a data config.

`SOURCES` maps each name to a builder `(data_config, split) -> source`; add a dataset by adding
an entry. Builders import their module lazily so that e.g. the shapes source does not pay for
importing TFDS.

`data_config` may be an `ml_collections.ConfigDict`, a plain dict or any attribute namespace
(e.g. `types.SimpleNamespace`); fields other than `name` are optional and default as below.

Fields:
  name: "shapes" | "celeba" | "cub".
  resolution: Image side length (default 64).
  max_objects: Shapes per image (shapes only; default 1).
  heldout_pairs: [colour, shape] pairs kept out of the shapes train split (default: the shapes
    module's DEFAULT_HELDOUT_PAIRS).
  seed: Seed of the shapes generator, or of cub's caption and augmentation draws (default 0).
  jitter: Random position/size jitter of the shapes (default True).
  num_examples: Override of the shapes split size (default None: the module's default).
  data_dir: TFDS data dir for celeba (default None: TFDS's default); for cub the root folder of
    `t2i_jax.data.cub.LAYOUT` (default None: `cub.DEFAULT_DATA_DIR`).
  caption_layout: cub: "auto" | "text_c10" | "attngan" (default "auto").
  crop: cub: "stackgan" | "none" (default "stackgan").
  text_embeddings: cub: None | "char_cnn_rnn" (StackGAN's precomputed embeddings; default None).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_MISSING = object()


def config_field(data_config: Any, name: str, default: Any = _MISSING) -> Any:
  """Reads `name` from a ConfigDict, a dict or an attribute namespace.

  Raises:
    KeyError: `name` is absent and no default was given.
  """
  get = getattr(data_config, "get", None)
  value = get(name, _MISSING) if callable(get) else getattr(data_config, name, _MISSING)
  if value is _MISSING:
    if default is _MISSING:
      raise KeyError(f"Data config has no field {name!r}.")
    return default
  return value


def _build_shapes(data_config: Any, split: str):
  from t2i_jax.data import shapes  # Lazy: see the module docstring.

  kwargs = dict(
    resolution=int(config_field(data_config, "resolution", 64)),
    max_objects=int(config_field(data_config, "max_objects", 1)),
    split=split,
    seed=int(config_field(data_config, "seed", 0)),
    jitter=bool(config_field(data_config, "jitter", True)),
  )
  heldout_pairs = config_field(data_config, "heldout_pairs", None)
  if heldout_pairs is not None:
    # Configs hold lists (ConfigDict and command-line overrides); the source expects hashable
    # (colour, shape) tuples.
    kwargs["heldout_pairs"] = tuple(tuple(pair) for pair in heldout_pairs)
  num_examples = config_field(data_config, "num_examples", None)
  if num_examples is not None:
    kwargs["num_examples"] = int(num_examples)
  return shapes.CaptionedShapes(**kwargs)


def _build_celeba(data_config: Any, split: str):
  from t2i_jax.data import celeba  # Lazy: imports TFDS.

  return celeba.CelebA(
    split=split,
    resolution=int(config_field(data_config, "resolution", 64)),
    data_dir=config_field(data_config, "data_dir", None),
  )


def _build_cub(data_config: Any, split: str):
  from t2i_jax.data import cub  # Lazy, like the others.

  return cub.CUB(
    split=split,
    resolution=int(config_field(data_config, "resolution", 64)),
    data_dir=config_field(data_config, "data_dir", None),
    seed=int(config_field(data_config, "seed", 0)),
    caption_layout=config_field(data_config, "caption_layout", "auto"),
    crop=config_field(data_config, "crop", "stackgan"),
    # Random crop + flip only where training reads; evaluation splits stay deterministic.
    augment=bool(config_field(data_config, "augment", False)) and split == "train",
    text_embeddings=config_field(data_config, "text_embeddings", None),
  )


SOURCES: dict[str, Callable[[Any, str], Any]] = {
  "shapes": _build_shapes,
  "celeba": _build_celeba,
  "cub": _build_cub,
}


def make_source(data_config: Any, split: str):
  """Builds the source `data_config.name` for `split`.

  Args:
    data_config: ConfigDict / dict / namespace with the fields in the module docstring.
    split: Split name understood by that source (e.g. "train", "test"; CelebA also has
      "validation").

  Returns:
    A random-access source (`__len__`, `__getitem__`) of dicts with `image` uint8[H, W, 3],
    `caption` str and `label` int.

  Raises:
    ValueError: Unknown source name.
  """
  name = config_field(data_config, "name")
  if name not in SOURCES:
    raise ValueError(f"Unknown data source {name!r}; valid names: {sorted(SOURCES)}.")
  return SOURCES[name](data_config, split)
