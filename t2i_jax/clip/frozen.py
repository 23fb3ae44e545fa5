"""A trained CLIP text tower as a frozen text encoder inside another model.

`FrozenClipText` has the `token_ids [B, L] -> (hidden [B, L, D], pooled [B, D])` API of every
text encoder here; its params live under the host model's params (so they are checkpointed and
sharded with it) and are overwritten with the exported CLIP's after init (`load_into`). Gradients
stop at its outputs and the optimizer leaves it alone (`frozen_labels` for `optax.multi_transform`).
"""

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from t2i_jax.models.clip import CLIP

FROZEN_MODULE = "frozen_clip"


class FrozenClipText(nn.Module):
  """CLIP's text tower (pooled before projection), frozen."""

  clip_kwargs: Mapping[str, Any]

  @nn.compact
  def __call__(self, token_ids: jax.Array) -> tuple[jax.Array, jax.Array]:
    clip = CLIP(**dict(self.clip_kwargs), name=FROZEN_MODULE)
    hidden, pooled = clip.encode_text(token_ids)
    return jax.lax.stop_gradient(hidden), jax.lax.stop_gradient(pooled)


def load_into(params: Any, clip_params: Mapping[str, Any]) -> Any:
  """Replaces every `frozen_clip` subtree of `params` by the matching part of `clip_params`.

  Raises:
    ValueError: naming any entry whose shape differs (a different CLIP than the one configured).
  """

  def replace(tree):
    if not isinstance(tree, Mapping):
      return tree
    out = {}
    for key, value in tree.items():
      if key == FROZEN_MODULE:
        out[key] = _take_matching(value, clip_params, path=key)
      else:
        out[key] = replace(value)
    return out

  return replace(params)


def _take_matching(target, source, path: str):
  if isinstance(target, nn.meta.AxisMetadata):  # keep logical-partitioning boxes
    return target.replace_boxed(_take_matching(target.unbox(), source, path))
  if isinstance(target, Mapping):
    if not isinstance(source, Mapping):
      raise ValueError(f"CLIP checkpoint has no subtree at {path}.")
    missing = set(target) - set(source)
    if missing:
      raise ValueError(f"CLIP checkpoint lacks {sorted(missing)} under {path}.")
    return {k: _take_matching(v, source[k], f"{path}/{k}") for k, v in target.items()}
  if tuple(target.shape) != tuple(source.shape):
    raise ValueError(
      f"CLIP checkpoint entry {path} has shape {tuple(source.shape)}, the model expects "
      f"{tuple(target.shape)}."
    )
  return jnp.asarray(source, target.dtype)


def frozen_labels(params: Any) -> Any:
  """ "frozen" for leaves under a `frozen_clip` module, "train" elsewhere (same tree as params)."""

  def label(path, _):
    names = [getattr(p, "key", getattr(p, "name", None)) for p in path]
    return "frozen" if FROZEN_MODULE in names else "train"

  return jax.tree_util.tree_map_with_path(label, params)
