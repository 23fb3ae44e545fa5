"""Prompt adherence on captioned shapes: does a generated image show the prompted colour and shape?

A training-free classifier for the first object of a caption: the colour is the nearest palette
colour to the mean of the bright pixels; the shape is the template (rendered by `shapes.render`,
moved and scaled to the bright region's centroid and area) with the highest IoU. On real dataset
images it is right almost always (see tests), so a generator's score is a fair reading.
"""

from collections.abc import Sequence

import numpy as np

from t2i_jax.data import shapes

_PALETTE = np.asarray([shapes.COLOR_RGB[c] for c in shapes.COLORS], np.float64)


def classify(image: np.ndarray, size: str, position: str) -> tuple[str | None, str | None]:
  """(colour, shape) of the object in `image` (uint8[H, W, 3]); (None, None) if it is empty."""
  resolution = image.shape[0]
  # Soft coverage (keeps anti-aliased edges), measured above the background level, which is the
  # median pixel since one object covers well under half the image; generated backgrounds are
  # often dark grey rather than black.
  brightness = image.max(axis=-1).astype(np.float64)
  background = np.median(brightness)
  coverage = np.clip((brightness - background) / max(brightness.max() - background, 1.0), 0, 1)
  area = coverage.sum()
  if area < 2:  # under two pixels' worth of object: nothing drawn
    return None, None
  core = coverage >= 0.9 * coverage.max()  # edge pixels are darkened by anti-aliasing
  mean_rgb = image[core].astype(np.float64).mean(axis=0)
  color = shapes.COLORS[int(np.argmin(((_PALETTE - mean_rgb) ** 2).sum(-1)))]
  centroid = _centroid(coverage)
  best_shape, best_iou = None, -1.0
  for shape in shapes.SHAPES:
    obj = dict(color="white", shape=shape, size=size, position=position)
    template = shapes.render([obj], resolution)[..., 0] / 255.0
    if template.sum() == 0:
      continue
    shift = (centroid - _centroid(template)) / resolution
    scale = float(np.sqrt(area / template.sum()))
    obj.update(dx=float(shift[0]), dy=float(shift[1]), scale=float(np.clip(scale, 0.5, 2.0)))
    fitted = shapes.render([obj], resolution)[..., 0] / 255.0
    # Soft IoU, so that sub-pixel edges of small objects still count.
    iou = np.minimum(fitted, coverage).sum() / max(np.maximum(fitted, coverage).sum(), 1e-9)
    if iou > best_iou:
      best_shape, best_iou = shape, iou
  return color, best_shape


def _centroid(weights: np.ndarray) -> np.ndarray:
  """(x, y) centre of mass of a [H, W] weight map, in pixel units."""
  ys, xs = np.indices(weights.shape)
  total = max(weights.sum(), 1e-9)
  return np.array([(xs * weights).sum(), (ys * weights).sum()]) / total + 0.5


def evaluate(images: np.ndarray, captions: Sequence[str]) -> dict[str, float]:
  """Fractions of images whose first object has the prompted colour / shape / both.

  Args:
    images: uint8[N, H, W, 3].
    captions: N captions in the shapes grammar (only the first object is checked).
  """
  if len(images) != len(captions):
    raise ValueError(f"{len(images)} images but {len(captions)} captions.")
  color_hits = shape_hits = both_hits = 0
  for image, caption in zip(images, captions, strict=True):
    target = shapes.parse_caption(caption)[0]
    color, shape = classify(np.asarray(image), target["size"], target["position"])
    color_hits += color == target["color"]
    shape_hits += shape == target["shape"]
    both_hits += color == target["color"] and shape == target["shape"]
  n = max(len(captions), 1)
  return {
    "color_accuracy": color_hits / n,
    "shape_accuracy": shape_hits / n,
    "color_and_shape_accuracy": both_hits / n,
  }
