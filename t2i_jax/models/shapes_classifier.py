"""A small conv net that reads the first object of a captioned-shapes image: colour, shape, size
and position, one softmax head each.

It is the judge of generated shapes images (`t2i_jax.eval.shapes_attributes`), trained on clean
renders (`configs/shapes_classifier.py`). Any input resolution is resized (antialiased) to the
net's own `image_size`, so one classifier judges 32, 64 and 128 px generations alike.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from t2i_jax.data import shapes
from t2i_jax.layers import initializers

# Head name -> its classes, in the order of the logits; the attribute keys of `parse_caption`.
HEADS: dict[str, tuple[str, ...]] = {
  "color": shapes.COLORS,
  "shape": shapes.SHAPES,
  "size": shapes.SIZES,
  "position": shapes.POSITIONS,
}


def _he_normal(fan_in: int, axes: tuple[str | None, ...]):
  """N(0, 2 / fan_in) drawn flat (fast to compile on CPU), with logical axis names."""
  return nn.with_logical_partitioning(initializers.normal(math.sqrt(2.0 / fan_in)), axes)


def resize_to(images: jax.Array, size: int) -> jax.Array:
  """[B, H, W, 3] (uint8 or float in [0, 255]) -> float32[B, size, size, 3] in [-1, 1].

  Antialiased linear resize, so a 128 px generation shrinks the way a render at `size` is drawn
  (area coverage), not by skipping pixels.
  """
  x = images.astype(jnp.float32) / 127.5 - 1.0
  if x.shape[1:3] != (size, size):
    x = jax.image.resize(x, (x.shape[0], size, size, x.shape[3]), "linear", antialias=True)
  return x


class ShapesClassifier(nn.Module):
  """images [B, H, W, 3] (uint8, any square size) -> {head: float32 logits [B, len(HEADS[head])]}.

  Three stride-2 stages (image_size -> image_size / 8) then a dense layer over the flattened map:
  flattening (rather than global pooling) keeps where the object is, which the position head needs.

  Attributes:
    image_size: side the input is resized to (the render resolution it was trained on).
    width: channels of the first stage; doubled at each of the next two.
    hidden: units of the dense layer before the heads.
  """

  image_size: int = 32
  width: int = 32
  hidden: int = 128

  @nn.compact
  def __call__(self, images: jax.Array) -> dict[str, jax.Array]:
    if images.ndim != 4 or images.shape[-1] != 3:
      raise ValueError(f"Expected RGB images [B, H, W, 3], got shape {images.shape}.")
    x = resize_to(images, self.image_size)
    channels_in = 3
    for stage, channels in enumerate((self.width, 2 * self.width, 4 * self.width)):
      for strides in (1, 2):
        in_name = None if channels_in == 3 else "conv_in"
        x = nn.Conv(
          channels,
          (3, 3),
          strides=strides,
          kernel_init=_he_normal(9 * channels_in, ("conv_h", "conv_w", in_name, "conv_out")),
          bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("conv_out",)),
          name=f"conv{stage}_{strides}",
        )(x)
        x = nn.relu(x)
        channels_in = channels
    x = x.reshape(x.shape[0], -1)
    x = nn.Dense(
      self.hidden,
      kernel_init=_he_normal(x.shape[-1], ("embed", "mlp")),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), ("mlp",)),
      name="hidden",
    )(x)
    x = nn.relu(x)
    return {
      head: nn.Dense(
        len(classes),
        kernel_init=_he_normal(self.hidden, ("mlp", None)),
        name=f"head_{head}",
      )(x)
      for head, classes in HEADS.items()
    }


def targets_of(captions: Sequence[str]) -> np.ndarray:
  """int32[N, 4]: the class index of each head (HEADS order) for each caption's first object."""
  out = np.empty((len(captions), len(HEADS)), np.int32)
  for i, caption in enumerate(captions):
    first = shapes.parse_caption(str(caption))[0]
    out[i] = [classes.index(first[head]) for head, classes in HEADS.items()]
  return out
