"""Tests for t2i_jax.eval.shapes_adherence: right on real images, wrong on wrong ones."""

import functools

import numpy as np
import pytest

from t2i_jax.data import shapes
from t2i_jax.eval import shapes_adherence

NUM_IMAGES = 96


@functools.cache
def examples(resolution):
  """(images, captions, first-object attributes) of the first test-split examples."""
  data = shapes.CaptionedShapes(resolution=resolution, split="test")
  batch = data.get_batch(range(NUM_IMAGES))
  return batch["image"], batch["caption"], [objects[0] for objects in batch["attributes"]]


@pytest.mark.parametrize("resolution", [32, 64])
def test_real_images_score_high(resolution):
  images, captions, _ = examples(resolution)
  results = shapes_adherence.evaluate(images, captions)
  assert set(results) == {"color_accuracy", "shape_accuracy", "color_and_shape_accuracy"}
  assert results["color_accuracy"] >= 0.97, results
  assert results["shape_accuracy"] >= 0.97, results
  assert results["color_and_shape_accuracy"] >= 0.95, results


def test_two_object_images_are_judged_by_the_first_object():
  data = shapes.CaptionedShapes(resolution=64, split="test", max_objects=2)
  batch = data.get_batch(range(48))
  assert any(len(objects) == 2 for objects in batch["attributes"])
  first_only = [shapes.caption_of(objects[:1]) for objects in batch["attributes"]]
  singles = np.stack([shapes.render(objects[:1], 64) for objects in batch["attributes"]])
  assert shapes_adherence.evaluate(singles, first_only)["color_and_shape_accuracy"] >= 0.95


@pytest.mark.parametrize("resolution", [32, 64])
def test_classify_real_images(resolution):
  images, _, firsts = examples(resolution)
  hits = 0
  for image, obj in zip(images[:24], firsts[:24], strict=True):
    color, shape = shapes_adherence.classify(image, obj["size"], obj["position"])
    assert color in shapes.COLORS and shape in shapes.SHAPES
    hits += (color, shape) == (obj["color"], obj["shape"])
  assert hits >= 23


@pytest.mark.parametrize("resolution", [32, 64])
def test_swapped_captions_score_near_chance(resolution):
  images, captions, firsts = examples(resolution)
  swapped = captions[1:] + captions[:1]
  wrong = firsts[1:] + firsts[:1]
  # Chance: how often the swapped caption happens to name the image's own colour / shape.
  chance_color = np.mean([a["color"] == b["color"] for a, b in zip(firsts, wrong, strict=True)])
  chance_shape = np.mean([a["shape"] == b["shape"] for a, b in zip(firsts, wrong, strict=True)])
  results = shapes_adherence.evaluate(images, swapped)
  assert results["color_accuracy"] == pytest.approx(chance_color, abs=0.05), results
  assert results["shape_accuracy"] == pytest.approx(chance_shape, abs=0.1), results
  assert results["color_accuracy"] < 0.3 and results["shape_accuracy"] < 0.45, results
  assert results["color_and_shape_accuracy"] < 0.1, results


def _other(values, value, offset=1):
  return values[(values.index(value) + offset) % len(values)]


@pytest.mark.parametrize("resolution", [32, 64])
def test_wrong_colour_rendered(resolution):
  _, captions, firsts = examples(resolution)
  recoloured = [obj | {"color": _other(shapes.COLORS, obj["color"])} for obj in firsts]
  images = np.stack([shapes.render([obj], resolution) for obj in recoloured])
  results = shapes_adherence.evaluate(images, captions)
  assert results["color_accuracy"] <= 0.03, results
  assert results["color_and_shape_accuracy"] <= 0.03, results
  assert results["shape_accuracy"] >= 0.97, results  # the shape is still right


@pytest.mark.parametrize("resolution", [32, 64])
def test_wrong_shape_rendered(resolution):
  _, captions, firsts = examples(resolution)
  # Circle <-> triangle and square <-> star.
  reshaped = [obj | {"shape": _other(shapes.SHAPES, obj["shape"], 2)} for obj in firsts]
  images = np.stack([shapes.render([obj], resolution) for obj in reshaped])
  results = shapes_adherence.evaluate(images, captions)
  assert results["shape_accuracy"] <= 0.03, results
  assert results["color_and_shape_accuracy"] <= 0.03, results
  assert results["color_accuracy"] >= 0.97, results  # the colour is still right


def test_black_image_counts_as_wrong():
  black = np.zeros((2, 32, 32, 3), np.uint8)
  assert shapes_adherence.classify(black[0], "large", "center") == (None, None)
  captions = ["a large red circle in the center", "a small white star in the top left"]
  results = shapes_adherence.evaluate(black, captions)
  assert results == {
    "color_accuracy": 0.0,
    "shape_accuracy": 0.0,
    "color_and_shape_accuracy": 0.0,
  }


def test_nearly_empty_image_is_empty():
  image = np.zeros((32, 32, 3), np.uint8)
  image[3, 4] = (200, 0, 0)  # a single lit pixel is no object
  assert shapes_adherence.classify(image, "small", "top left") == (None, None)


def test_mismatched_lengths_raise():
  images, captions, _ = examples(32)
  with pytest.raises(ValueError, match=r"3 images but 2 captions"):
    shapes_adherence.evaluate(images[:3], captions[:2])


def test_empty_input_scores_zero():
  results = shapes_adherence.evaluate(np.zeros((0, 32, 32, 3), np.uint8), [])
  assert results == {
    "color_accuracy": 0.0,
    "shape_accuracy": 0.0,
    "color_and_shape_accuracy": 0.0,
  }


def test_bad_caption_raises_caption_error():
  images, _, _ = examples(32)
  with pytest.raises(shapes.CaptionError):
    shapes_adherence.evaluate(images[:1], ["a huge red circle in the center"])
