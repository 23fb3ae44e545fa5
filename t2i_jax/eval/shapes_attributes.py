"""Shapes attribute accuracy: does a generated image show its caption's first object (colour, shape,
size, position), as read by a classifier trained on clean renders (`configs/shapes_classifier.py`)?

Accuracy is reported per attribute and for all four at once, separately for captions whose first
object has a colour-shape pair seen in training (`shapes_*`) and one of the data config's held-out
pairs (`shapes_heldout_*`, compositional generalisation). The classifier's logits also feed the
Inception Score (`joint_logits`: its colour x shape classes). Counts accumulate over batches, so
no caller holds all images.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence

import jax
import numpy as np
import scipy.special

from t2i_jax.data import shapes
from t2i_jax.eval import inception
from t2i_jax.models.shapes_classifier import HEADS, ShapesClassifier, targets_of

GROUPS = ("seen", "heldout")  # reported as "shapes_<...>" and "shapes_heldout_<...>"


@functools.partial(jax.jit, static_argnames="model")
def _apply(model: ShapesClassifier, params, images: jax.Array) -> dict[str, jax.Array]:
  return model.apply({"params": params}, images)


def classifier_logits(
  model: ShapesClassifier, params, images: np.ndarray, batch_size: int = 64
) -> dict[str, np.ndarray]:
  """{head: float32 logits [N, classes]} of uint8 images [N, H, W, 3] (fixed-size chunks)."""
  chunks = inception.iter_batched(
    functools.partial(_apply, model), params, [np.asarray(images)], batch_size
  )
  chunks = list(chunks)
  return {head: np.concatenate([c[head] for c in chunks]) for head in HEADS}


def joint_logits(logits: dict[str, np.ndarray]) -> np.ndarray:
  """float64[N, 32]: log p(colour) + log p(shape), in `shapes.label_of` order (colour * 4 + shape).

  The classifier's colour x shape classes for the Inception Score (heads treated as independent).
  """
  color = scipy.special.log_softmax(np.asarray(logits["color"], np.float64), axis=1)
  shape = scipy.special.log_softmax(np.asarray(logits["shape"], np.float64), axis=1)
  return (color[:, :, None] + shape[:, None, :]).reshape(len(color), -1)


class AttributeAccuracy:
  """Streaming hit counts of classifier logits against captions, per attribute and group.

  Args:
    heldout_pairs: (colour, shape) pairs whose captions count in the "heldout" group.
  """

  def __init__(self, heldout_pairs: Iterable[Sequence[str]] = ()):
    self.heldout_pairs = {tuple(pair) for pair in heldout_pairs}
    self._hits = {group: np.zeros(len(HEADS) + 1, np.int64) for group in GROUPS}
    self._counts = dict.fromkeys(GROUPS, 0)

  def update(self, logits: dict[str, np.ndarray], captions: Sequence[str]) -> None:
    """Adds a batch: logits {head: [b, classes]} of images generated for `captions` [b]."""
    targets = targets_of(captions)
    predicted = np.stack([np.argmax(logits[head], axis=1) for head in HEADS], axis=1)
    correct = predicted == targets
    correct = np.concatenate([correct, correct.all(axis=1, keepdims=True)], axis=1)
    colors, kinds = np.asarray(HEADS["color"]), np.asarray(HEADS["shape"])
    pairs = zip(colors[targets[:, 0]], kinds[targets[:, 1]], strict=True)
    heldout = np.array([pair in self.heldout_pairs for pair in pairs], bool)
    for group, mask in (("seen", ~heldout), ("heldout", heldout)):
      self._hits[group] += correct[mask].sum(axis=0)
      self._counts[group] += int(mask.sum())

  def result(self) -> dict[str, float]:
    """Accuracies of each group that saw any caption: shapes[_heldout]_{attr|all}_accuracy."""
    out = {}
    for group in GROUPS:
      if not self._counts[group]:
        continue
      prefix = "shapes_" if group == "seen" else "shapes_heldout_"
      for name, hits in zip([*HEADS, "all"], self._hits[group], strict=True):
        out[f"{prefix}{name}_accuracy"] = float(hits) / self._counts[group]
    return out


def run(
  model: ShapesClassifier,
  params,
  images: np.ndarray,
  captions: Sequence[str],
  heldout_pairs: Iterable[Sequence[str]] = shapes.DEFAULT_HELDOUT_PAIRS,
  batch_size: int = 64,
) -> dict[str, float]:
  """Attribute accuracies of uint8 images [N, H, W, 3] generated for `captions` (one set in
  memory; `t2i_jax.eval.suite` streams instead). Classifier from
  `t2i_jax.classifier.export.load_classifier`."""
  if len(images) != len(captions):
    raise ValueError(f"{len(images)} images but {len(captions)} captions.")
  accuracy = AttributeAccuracy(heldout_pairs)
  accuracy.update(classifier_logits(model, params, images, batch_size), captions)
  return accuracy.result()
