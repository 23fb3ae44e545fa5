"""Captioned shapes: a procedural, deterministic text-to-image dataset that needs no download.

Each example is a black square image holding one or two flat-coloured shapes, and a caption from
a tiny grammar::

  a {size} {color} {shape} in the {position}
  a {size} {color} {shape} in the {position} and a {size} {color} {shape} in the {position}

Examples are a pure function of `(seed, split, index)`, so any process (e.g. a grain worker)
rebuilds exactly the same example without shared state.

Splits:
  train: in-distribution. No object of any image has a held-out colour-shape pair.
  test: the train distribution, drawn from different random streams (in-distribution
    generalisation; disjoint from train by construction, not by deduplication).
  heldout: compositional generalisation. The first object of every image has a held-out
    colour-shape pair (each colour and each shape is seen in training, the combination is not);
    any second object is in-distribution.

Coordinates are fractions of the image side, (x, y) with y pointing down ("top" is small y).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from t2i_jax.data.shape_captions import (  # noqa: F401 (the grammar is part of this module's API)
  COLORS,
  NUM_CLASSES,
  POSITIONS,
  SHAPES,
  SIZES,
  CaptionError,
  caption_of,
  label_of,
  parse_caption,
  unknown_value_message,
  validated,
  vocabulary,
)

COLOR_RGB = {
  "red": (255, 0, 0),
  "green": (0, 255, 0),
  "blue": (0, 0, 255),
  "yellow": (255, 255, 0),
  "magenta": (255, 0, 255),
  "cyan": (0, 255, 255),
  "white": (255, 255, 255),
  "orange": (255, 140, 0),
}
SPLITS = ("train", "test", "heldout")
DEFAULT_HELDOUT_PAIRS = (
  ("red", "triangle"),
  ("blue", "star"),
  ("green", "square"),
  ("yellow", "circle"),
)
MIN_RESOLUTION = 32
MAX_RESOLUTION = 256
MAX_OBJECTS = 2

# Object centres, (x, y) as fractions of the image side.
POSITION_CENTERS = {
  "top left": (0.25, 0.25),
  "top right": (0.75, 0.25),
  "bottom left": (0.25, 0.75),
  "bottom right": (0.75, 0.75),
  "center": (0.5, 0.5),
}
# Outer radius (circle radius, polygon circumradius) as a fraction of the image side. "large" is
# 0.18 rather than 0.2 so that even a fully jittered large shape in a corner stays inside the frame:
# 0.18 * 1.1 (scale) + 0.05 (offset) = 0.248 < 0.25 (distance from a corner centre to the border).
SIZE_RADII = {"small": 0.12, "large": 0.18}

# Per-example jitter ranges (uniform).
MAX_OFFSET = 0.05  # Centre offset in x and y, fraction of the image side.
SCALE_RANGE = (0.9, 1.1)  # Radius multiplier.
MAX_ANGLE_DEGREES = 10.0  # Rotation, counter-clockwise on screen.

STAR_INNER_RATIO = 0.45
# Half side of the square relative to the outer radius: big enough to read as the same size as a
# circle, small enough that a square rotated by 10 degrees stays within the radius along x and y
# (0.8 * (cos 10 + sin 10) = 0.93).
SQUARE_HALF_SIDE = 0.8

DEFAULT_LENGTHS = {"train": 1_000_000, "test": 10_000, "heldout": 10_000}

_CANONICAL_JITTER = {"dx": 0.0, "dy": 0.0, "scale": 1.0, "angle": 0.0}


def _unit_polygons() -> dict[str, tuple[tuple[float, float], ...]]:
  """Polygon vertices with outer radius 1, centred at the origin, y pointing UP."""

  def on_circle(degrees: float, radius: float = 1.0) -> tuple[float, float]:
    return (radius * math.cos(math.radians(degrees)), radius * math.sin(math.radians(degrees)))

  half = SQUARE_HALF_SIDE
  return {
    "triangle": tuple(on_circle(90 + 120 * k) for k in range(3)),
    "square": ((-half, -half), (half, -half), (half, half), (-half, half)),
    "star": tuple(
      on_circle(90 + 36 * k, 1.0 if k % 2 == 0 else STAR_INNER_RATIO) for k in range(10)
    ),
  }


_UNIT_POLYGONS = _unit_polygons()
# Furthest point from the centre in units of the outer radius; bounds the pixels we must shade.
_UNIT_EXTENT = {"circle": 1.0} | {
  name: max(math.hypot(x, y) for x, y in vertices) for name, vertices in _UNIT_POLYGONS.items()
}


def _is_int(value: Any, low: int, high: float = math.inf) -> bool:
  """Whether `value` is an int (not a bool) in [low, high]."""
  return (
    isinstance(value, int | np.integer) and not isinstance(value, bool) and low <= value <= high
  )


def _check_resolution(resolution: Any) -> int:
  if not _is_int(resolution, MIN_RESOLUTION, MAX_RESOLUTION):
    raise ValueError(
      f"resolution must be an int in [{MIN_RESOLUTION}, {MAX_RESOLUTION}], got {resolution!r}"
    )
  return int(resolution)


def _polygon_sdf(xs: np.ndarray, ys: np.ndarray, vertices: np.ndarray) -> np.ndarray:
  """Signed distance (negative inside) from pixel centres to a simple polygon.

  Args:
    xs: float32[W] pixel-centre x coordinates, in pixels.
    ys: float32[H] pixel-centre y coordinates, in pixels.
    vertices: float32[E, 2] polygon vertices (x, y) in pixels, in order.

  Returns:
    float32[H, W] signed distance in pixels.
  """
  start_x, start_y = vertices[:, 0], vertices[:, 1]
  end_y = np.roll(start_y, -1)
  edge_x = np.roll(start_x, -1) - start_x
  edge_y = end_y - start_y
  # Broadcast as [H, W, E]; offsets along x and y stay [1, W, E] and [H, 1, E] as long as possible.
  rel_x = xs[None, :, None] - start_x
  rel_y = ys[:, None, None] - start_y
  # Unsigned distance: to the closest point of each edge segment, then the closest edge.
  along = np.clip((rel_x * edge_x + rel_y * edge_y) / (edge_x * edge_x + edge_y * edge_y), 0, 1)
  off_x = rel_x - edge_x * along
  off_y = rel_y - edge_y * along
  distance = np.sqrt(np.min(off_x * off_x + off_y * off_y, axis=-1))
  # Sign by the even-odd rule: count edges crossed by a ray from the pixel towards +x. Horizontal
  # edges never straddle a row, so their (dummy) slope is never used.
  straddles = (start_y > ys[:, None, None]) != (end_y > ys[:, None, None])
  inverse_slope = edge_x / np.where(edge_y == 0, 1, edge_y)
  crossing_x = start_x + rel_y * inverse_slope
  crossings = np.count_nonzero(straddles & (xs[None, :, None] < crossing_x), axis=-1)
  return np.where(crossings % 2 == 1, -distance, distance)


def _object_coverage(obj: dict[str, Any], resolution: int) -> tuple[int, int, np.ndarray] | None:
  """Anti-aliased coverage of one object over the window of pixels it can touch.

  Coverage is clip(0.5 - signed_distance_in_pixels, 0, 1): a cheap analytic box-filter
  approximation that is exact for straight edges through a pixel centre.

  Returns:
    (top, left, float32[h, w] coverage) of the window, or None if it misses the image.
  """
  shape = obj["shape"]
  center_x, center_y = POSITION_CENTERS[obj["position"]]
  center_x = (center_x + float(obj.get("dx", 0.0))) * resolution
  center_y = (center_y + float(obj.get("dy", 0.0))) * resolution
  radius = SIZE_RADII[obj["size"]] * float(obj.get("scale", 1.0)) * resolution
  # One pixel of margin covers the 0.5 px anti-aliasing fringe.
  reach = radius * _UNIT_EXTENT[shape] + 1.0
  left, right = max(0, math.floor(center_x - reach)), min(resolution, math.ceil(center_x + reach))
  top, bottom = max(0, math.floor(center_y - reach)), min(resolution, math.ceil(center_y + reach))
  if left >= right or top >= bottom:
    return None
  xs = np.arange(left, right, dtype=np.float32) + np.float32(0.5)
  ys = np.arange(top, bottom, dtype=np.float32) + np.float32(0.5)
  if shape == "circle":
    rel_x = xs[None, :] - np.float32(center_x)
    rel_y = ys[:, None] - np.float32(center_y)
    signed_distance = np.sqrt(rel_x * rel_x + rel_y * rel_y) - np.float32(radius)
  else:
    # Rotate and scale the unit polygon in float64 scalar math (bit-reproducible), flipping y
    # because the unit polygons point up while image rows grow downwards.
    angle = math.radians(float(obj.get("angle", 0.0)))
    cos, sin = math.cos(angle), math.sin(angle)
    vertices = np.array(
      [
        (center_x + radius * (x * cos - y * sin), center_y - radius * (x * sin + y * cos))
        for x, y in _UNIT_POLYGONS[shape]
      ],
      dtype=np.float32,
    )
    signed_distance = _polygon_sdf(xs, ys, vertices)
  return top, left, np.clip(np.float32(0.5) - signed_distance, 0, 1)


def render(attributes: Sequence[dict[str, Any]], resolution: int) -> np.ndarray:
  """Draws objects on a black background; later objects are composited over earlier ones.

  Args:
    attributes: per object a dict(color, shape, size, position) and optionally the jitter keys
      dx, dy (centre offset, fraction of the image side), scale (radius multiplier) and angle
      (degrees, counter-clockwise). Missing jitter keys mean no jitter.
    resolution: image side in pixels, in [32, 256].

  Returns:
    uint8[resolution, resolution, 3] RGB image.
  """
  resolution = _check_resolution(resolution)
  canvas = np.zeros((resolution, resolution, 3), dtype=np.float32)
  for obj in attributes:
    window = _object_coverage(validated(obj), resolution)
    if window is None:
      continue
    top, left, coverage = window
    region = canvas[top : top + coverage.shape[0], left : left + coverage.shape[1]]
    color = np.asarray(COLOR_RGB[obj["color"]], dtype=np.float32)
    region += (color - region) * coverage[..., None]  # In place: `region` is a view of `canvas`.
  return np.rint(canvas).astype(np.uint8)


def _pair_indices(pairs: Iterable[Sequence[str]]) -> tuple[tuple[int, int], ...]:
  """Validates (colour, shape) pairs; returns their unique (color_index, shape_index) in order."""
  indices = []
  for pair in pairs:
    if isinstance(pair, str) or len(pair) != 2:
      raise ValueError(f"held-out pairs must be (colour, shape) pairs, got {pair!r}")
    color, shape = pair
    if color not in COLORS:
      raise ValueError(f"held-out pair {tuple(pair)!r}: " + unknown_value_message("color", color))
    if shape not in SHAPES:
      raise ValueError(f"held-out pair {tuple(pair)!r}: " + unknown_value_message("shape", shape))
    index = (COLORS.index(color), SHAPES.index(shape))
    if index not in indices:
      indices.append(index)
  return tuple(indices)


class CaptionedShapes:
  """Random-access captioned-shapes data source (`len`, `[]`; usable as a grain data source).

  `ds[i]` is a pure function of (seed, split, i, constructor arguments): every random choice
  comes from `np.random.default_rng([seed, split_id, i])`, so examples are identical in any
  process and the test split (different split_id) never replays a train example's stream.
  The first object is drawn before anything else, so it is the same for max_objects 1 and 2, and
  jitter=False gives the jittered example's canonical (un-jittered) attributes.

  Example:
    dict(image=uint8[H, W, 3], caption=str, label=int,
         attributes=[dict(color, shape, size, position, dx, dy, scale, angle), ...])

  Args:
    resolution: image side in pixels, in [32, 256].
    max_objects: 1, or 2 for one or two objects per image (two with probability 1/2).
    split: "train", "test" or "heldout" (see the module docstring).
    seed: non-negative int; the whole dataset is a function of it.
    heldout_pairs: (colour, shape) pairs absent from train/test and present in heldout.
    jitter: randomly offset, scale and rotate objects; False stores canonical jitter values.
    num_examples: length; defaults to 1_000_000 for train and 10_000 otherwise.
  """

  def __init__(
    self,
    resolution: int = 64,
    max_objects: int = 1,
    split: str = "train",
    seed: int = 0,
    heldout_pairs: Iterable[Sequence[str]] = DEFAULT_HELDOUT_PAIRS,
    jitter: bool = True,
    num_examples: int | None = None,
  ):
    """Raises ValueError naming the valid values for any invalid argument."""
    self.resolution = _check_resolution(resolution)
    if not _is_int(max_objects, 1, MAX_OBJECTS):
      raise ValueError(f"max_objects must be 1 or {MAX_OBJECTS}, got {max_objects!r}")
    if split not in SPLITS:
      raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    if not _is_int(seed, 0):
      raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if num_examples is not None and not _is_int(num_examples, 0):
      raise ValueError(f"num_examples must be None or a non-negative int, got {num_examples!r}")
    self.max_objects = int(max_objects)
    self.split = split
    self.seed = int(seed)
    self.jitter = bool(jitter)
    heldout = _pair_indices(heldout_pairs)
    self.heldout_pairs = tuple((COLORS[c], SHAPES[s]) for c, s in heldout)
    self.num_examples = DEFAULT_LENGTHS[split] if num_examples is None else int(num_examples)
    # Sample pairs by index into explicit pools: uniform over allowed pairs, no rejection loop.
    self._heldout_pool = heldout
    self._in_distribution_pool = tuple(
      (c, s) for c in range(len(COLORS)) for s in range(len(SHAPES)) if (c, s) not in heldout
    )
    if not self._in_distribution_pool:
      raise ValueError("heldout_pairs holds out every colour-shape pair; nothing left to train on")
    if split == "heldout" and not heldout:
      raise ValueError(
        "the 'heldout' split needs at least one held-out pair; heldout_pairs is empty"
      )

  def __len__(self) -> int:
    return self.num_examples

  def __repr__(self) -> str:
    return (
      f"CaptionedShapes(resolution={self.resolution}, max_objects={self.max_objects}, "
      f"split={self.split!r}, seed={self.seed}, heldout_pairs={self.heldout_pairs!r}, "
      f"jitter={self.jitter}, num_examples={self.num_examples})"
    )

  def _sample_object(
    self, rng: np.random.Generator, pool: Sequence[tuple[int, int]], position: str
  ) -> dict[str, Any]:
    color_index, shape_index = pool[int(rng.integers(len(pool)))]
    size = SIZES[int(rng.integers(len(SIZES)))]
    obj = dict(color=COLORS[color_index], shape=SHAPES[shape_index], size=size, position=position)
    # Always draw the jitter so the random stream (and the other choices) do not depend on it.
    dx, dy = (float(value) for value in rng.uniform(-MAX_OFFSET, MAX_OFFSET, size=2))
    scale = float(rng.uniform(*SCALE_RANGE))
    angle = float(rng.uniform(-MAX_ANGLE_DEGREES, MAX_ANGLE_DEGREES))
    if not self.jitter:
      return obj | _CANONICAL_JITTER
    return obj | dict(dx=dx, dy=dy, scale=scale, angle=angle)

  def attributes(self, index: int) -> list[dict[str, Any]]:
    """Returns the object attributes of example `index` without rendering it (cheap)."""
    index = self._check_index(index)
    rng = np.random.default_rng([self.seed, SPLITS.index(self.split), index])
    first_pool = self._heldout_pool if self.split == "heldout" else self._in_distribution_pool
    first_position = POSITIONS[int(rng.integers(len(POSITIONS)))]
    objects = [self._sample_object(rng, first_pool, first_position)]
    if self.max_objects == MAX_OBJECTS and rng.integers(2) == 1:
      free_positions = [position for position in POSITIONS if position != first_position]
      position = free_positions[int(rng.integers(len(free_positions)))]
      objects.append(self._sample_object(rng, self._in_distribution_pool, position))
    return objects

  def _check_index(self, index: int) -> int:
    index = operator.index(index)
    if not 0 <= index < self.num_examples:
      raise IndexError(f"index {index} out of range for {self.num_examples} examples")
    return index

  def __getitem__(self, index: int) -> dict[str, Any]:
    attributes = self.attributes(index)
    return {
      "image": render(attributes, self.resolution),
      "caption": caption_of(attributes),
      "label": label_of(attributes),
      "attributes": attributes,
    }

  def get_batch(self, indices: Sequence[int]) -> dict[str, Any]:
    """Returns the examples at `indices` stacked: exactly `[self[i] for i in indices]` batched.

    Returns:
      dict(image=uint8[B, H, W, 3], caption=list[str], label=int32[B],
           attributes=list[list[dict]]).
    """
    attributes = [self.attributes(index) for index in indices]
    images = np.empty((len(attributes), self.resolution, self.resolution, 3), dtype=np.uint8)
    for row, objects in enumerate(attributes):
      images[row] = render(objects, self.resolution)
    return {
      "image": images,
      "caption": [caption_of(objects) for objects in attributes],
      "label": np.array([label_of(objects) for objects in attributes], dtype=np.int32),
      "attributes": attributes,
    }
