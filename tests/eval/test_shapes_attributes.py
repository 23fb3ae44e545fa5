"""Shapes attribute accuracy: counting against captions, held-out grouping, IS logits."""

import numpy as np
import pytest

from t2i_jax.data import shapes
from t2i_jax.eval import shapes_attributes
from t2i_jax.models.shapes_classifier import HEADS, targets_of

CAPTIONS = [
  "a small red circle in the top left",
  "a large blue square in the center",
  "a large red triangle in the bottom right",  # held out by default
  "a small blue star in the top right and a large green circle in the center",  # held out
]


def perfect_logits(captions, flip=()):
  """One-hot logits of each caption's first object; heads named in `flip` get a wrong class."""
  targets = targets_of(captions)
  logits = {}
  for i, (head, classes) in enumerate(HEADS.items()):
    chosen = (targets[:, i] + (1 if head in flip else 0)) % len(classes)
    logits[head] = 10.0 * np.eye(len(classes))[chosen]
  return logits


def test_targets_follow_the_first_object():
  assert targets_of(CAPTIONS[3:]).tolist() == [[2, 3, 0, 1]]  # blue, star, small, top right


def test_perfect_logits_score_one_per_group():
  accuracy = shapes_attributes.AttributeAccuracy(shapes.DEFAULT_HELDOUT_PAIRS)
  accuracy.update(perfect_logits(CAPTIONS[:2]), CAPTIONS[:2])  # batches of any size add up
  accuracy.update(perfect_logits(CAPTIONS[2:]), CAPTIONS[2:])
  result = accuracy.result()
  assert len(result) == 10 and all(v == 1.0 for v in result.values())


def test_each_attribute_counts_separately():
  accuracy = shapes_attributes.AttributeAccuracy(shapes.DEFAULT_HELDOUT_PAIRS)
  accuracy.update(perfect_logits(CAPTIONS[:1], flip=("shape",)), CAPTIONS[:1])
  accuracy.update(perfect_logits(CAPTIONS[1:2]), CAPTIONS[1:2])
  accuracy.update(perfect_logits(CAPTIONS[2:], flip=("color", "position")), CAPTIONS[2:])
  result = accuracy.result()
  assert result["shapes_shape_accuracy"] == 0.5 and result["shapes_color_accuracy"] == 1.0
  assert result["shapes_all_accuracy"] == 0.5
  assert result["shapes_heldout_color_accuracy"] == 0.0
  assert result["shapes_heldout_position_accuracy"] == 0.0
  assert result["shapes_heldout_size_accuracy"] == 1.0
  assert result["shapes_heldout_all_accuracy"] == 0.0


def test_groups_without_captions_are_not_reported():
  accuracy = shapes_attributes.AttributeAccuracy(())  # nothing held out
  accuracy.update(perfect_logits(CAPTIONS), CAPTIONS)
  assert not any(key.startswith("shapes_heldout") for key in accuracy.result())
  with pytest.raises(ValueError, match="expected 'a'"):
    accuracy.update(perfect_logits(CAPTIONS[:1]), ["the red circle"])


def test_joint_logits_are_log_probabilities_in_label_order():
  rng = np.random.default_rng(0)
  logits = {head: rng.normal(size=(5, len(classes))) for head, classes in HEADS.items()}
  joint = shapes_attributes.joint_logits(logits)
  assert joint.shape == (5, shapes.NUM_CLASSES)
  np.testing.assert_allclose(np.exp(joint).sum(axis=1), 1.0)
  objects = [dict(color="cyan", shape="triangle", size="small", position="center")]
  label = shapes.label_of(objects)
  color = np.exp(logits["color"][:, 5]) / np.exp(logits["color"]).sum(axis=1)
  shape = np.exp(logits["shape"][:, 2]) / np.exp(logits["shape"]).sum(axis=1)
  np.testing.assert_allclose(np.exp(joint[:, label]), color * shape)
