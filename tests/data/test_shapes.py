"""Tests for the procedural captioned-shapes dataset."""

import hashlib
import itertools
import os
import pickle
import subprocess
import sys
import time

import numpy as np
import pytest

from t2i_jax.data import shapes
from t2i_jax.data.shapes import (
  COLORS,
  DEFAULT_HELDOUT_PAIRS,
  NUM_CLASSES,
  POSITIONS,
  SHAPES,
  SIZES,
  CaptionedShapes,
  CaptionError,
  caption_of,
  label_of,
  parse_caption,
  render,
  vocabulary,
)

_CANONICAL_KEYS = ("color", "shape", "size", "position")


def _canonical(attributes):
  """Drops the jitter keys, leaving what a caption describes."""
  return [{key: obj[key] for key in _CANONICAL_KEYS} for obj in attributes]


def _pairs(attributes):
  return [(obj["color"], obj["shape"]) for obj in attributes]


def test_constants_match_spec():
  assert NUM_CLASSES == len(COLORS) * len(SHAPES) == 32
  assert set(shapes.COLOR_RGB) == set(COLORS)
  assert shapes.COLOR_RGB["orange"] == (255, 140, 0)
  assert shapes.SPLITS == ("train", "test", "heldout")


def test_examples_are_deterministic_across_instances_and_pickling():
  dataset = CaptionedShapes(max_objects=2, seed=3)
  fresh = CaptionedShapes(max_objects=2, seed=3)
  unpickled = pickle.loads(pickle.dumps(dataset))
  other_seed = CaptionedShapes(max_objects=2, seed=4)
  for index in (0, 1, 17, 999_999):
    example = dataset[index]
    for copy in (dataset[index], fresh[index], unpickled[index]):
      assert copy["image"].tobytes() == example["image"].tobytes()
      assert copy["caption"] == example["caption"]
      assert copy["attributes"] == example["attributes"]
    assert other_seed[index]["attributes"] != example["attributes"]
    assert other_seed[index]["image"].tobytes() != example["image"].tobytes()


def test_examples_are_identical_in_another_process():
  code = (
    "import hashlib; from t2i_jax.data.shapes import CaptionedShapes; "
    "ds = CaptionedShapes(max_objects=2, split='test', seed=7); "
    "print(hashlib.sha256(ds.get_batch(range(20))['image'].tobytes()).hexdigest())"
  )
  # A different hash seed would expose any dependence on Python's salted hash().
  environment = os.environ | {"PYTHONHASHSEED": "123"}
  output = subprocess.run(
    [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=environment
  ).stdout.strip()
  images = CaptionedShapes(max_objects=2, split="test", seed=7).get_batch(range(20))["image"]
  assert output == hashlib.sha256(images.tobytes()).hexdigest()


@pytest.mark.parametrize("jitter", [True, False])
@pytest.mark.parametrize("split", ["train", "heldout"])
def test_render_of_attributes_reproduces_the_image_exactly(jitter, split):
  dataset = CaptionedShapes(max_objects=2, split=split, jitter=jitter)
  for index in range(40):
    example = dataset[index]
    assert np.array_equal(render(example["attributes"], dataset.resolution), example["image"])


def test_jitter_is_stored_and_bounded_and_off_means_canonical():
  jittered = CaptionedShapes(max_objects=2)
  plain = CaptionedShapes(max_objects=2, jitter=False)
  for index in range(200):
    objects, canonical = jittered.attributes(index), plain.attributes(index)
    assert _canonical(objects) == _canonical(canonical)
    for obj in objects:
      assert abs(obj["dx"]) <= 0.05 and abs(obj["dy"]) <= 0.05
      assert 0.9 <= obj["scale"] <= 1.1 and abs(obj["angle"]) <= 10
      assert all(type(obj[key]) is float for key in ("dx", "dy", "scale", "angle"))
    for obj in canonical:
      assert (obj["dx"], obj["dy"], obj["scale"], obj["angle"]) == (0.0, 0.0, 1.0, 0.0)
  # Canonical jitter values render the same as no jitter keys at all.
  example = plain[5]
  assert np.array_equal(render(_canonical(example["attributes"]), 64), example["image"])


def test_first_object_does_not_depend_on_max_objects():
  one, two = CaptionedShapes(max_objects=1), CaptionedShapes(max_objects=2)
  for index in range(100):
    assert one.attributes(index) == two.attributes(index)[:1]


def test_every_single_object_caption_round_trips():
  combos = list(itertools.product(COLORS, SHAPES, SIZES, POSITIONS))
  assert len(combos) == 320
  for color, shape, size, position in combos:
    objects = [dict(color=color, shape=shape, size=size, position=position)]
    caption = caption_of(objects)
    assert caption == f"a {size} {color} {shape} in the {position}"
    assert parse_caption(caption) == objects


def test_dataset_captions_round_trip_with_two_objects():
  dataset = CaptionedShapes(max_objects=2, num_examples=300)
  num_two_object = 0
  for index in range(len(dataset)):
    objects = dataset.attributes(index)
    caption = caption_of(objects)
    assert parse_caption(caption) == _canonical(objects)
    if len(objects) == 2:
      num_two_object += 1
      assert " and a " in caption
  assert 100 < num_two_object < 200  # Two objects with probability 1/2.


def test_parse_caption_tolerates_case_whitespace_and_period():
  expected = [dict(color="red", shape="circle", size="small", position="top left")]
  assert parse_caption("  A Small RED circle in the Top  Left.  ") == expected
  assert parse_caption("a small red circle in the top left .") == expected


def test_parse_caption_error_names_the_word_and_lists_valid_values():
  with pytest.raises(CaptionError) as error:
    parse_caption("a small purple circle in the center")
  assert isinstance(error.value, ValueError)
  assert str(error.value) == (
    "unknown colour 'purple' in 'a small purple circle in the center'; valid colours: red, green, "
    "blue, yellow, magenta, cyan, white, orange"
  )


@pytest.mark.parametrize(
  "caption, message",
  [
    ("a small red hexagon in the center", "unknown shape 'hexagon'.*valid shapes: circle, square"),
    ("a tiny red circle in the center", "unknown size 'tiny'.*valid sizes: small, large"),
    ("a small red circle in the middle", "unknown position 'middle'.*valid positions: top left"),
    ("a small red circle in the top middle", "unknown position 'top middle'"),
    ("a red small circle in the center", "unknown size 'red'.*words must come in the order"),
    ("small red circle in the center", "expected 'a' but found 'small'"),
    ("a small red circle at the center", "expected 'in' but found 'at'"),
    ("a small red circle in the", "caption ends early: expected a position"),
    ("a small red circle in the top", "caption ends early: expected left or right"),
    ("a small red circle in the center and", "caption ends early: expected 'a'"),
    ("a small red circle in the center, please", "unknown position 'center,'"),
    ("a small red circle in the center please", "expected 'and' or the end.*'please'"),
    (
      "a small red circle in the center and a large blue star in the center",
      "two objects at the same position 'center'",
    ),
    ("", "empty caption"),
    ("   . ", "empty caption"),
  ],
)
def test_parse_caption_rejects_text_outside_the_grammar(caption, message):
  with pytest.raises(CaptionError, match=message):
    parse_caption(caption)


def test_train_and_test_never_contain_heldout_pairs():
  heldout = set(DEFAULT_HELDOUT_PAIRS)
  for split in ("train", "test"):
    dataset = CaptionedShapes(max_objects=2, split=split)
    seen_pairs = set()
    for index in range(2000):
      objects = dataset.attributes(index)
      pairs = _pairs(objects)
      assert not heldout & set(pairs), (split, index, objects)
      assert len({obj["position"] for obj in objects}) == len(objects)
      seen_pairs.update(pairs)
    # Sampling is uniform over all 28 allowed pairs, so 2000 images see every one of them.
    assert len(seen_pairs) == NUM_CLASSES - len(heldout)


def test_heldout_split_first_object_is_always_heldout():
  heldout = set(DEFAULT_HELDOUT_PAIRS)
  dataset = CaptionedShapes(max_objects=2, split="heldout")
  assert len(dataset) == 10_000
  first_pairs = set()
  for index in range(500):
    objects = dataset.attributes(index)
    assert _pairs(objects)[0] in heldout
    assert not heldout & set(_pairs(objects)[1:])  # Any second object is in-distribution.
    first_pairs.add(_pairs(objects)[0])
  assert first_pairs == heldout


def test_custom_heldout_pairs_and_empty_heldout():
  custom = (("white", "star"),)
  heldout = CaptionedShapes(split="heldout", heldout_pairs=custom)
  assert all(_pairs(heldout.attributes(i)) == [("white", "star")] for i in range(20))
  everything = CaptionedShapes(heldout_pairs=())
  assert {tuple(p) for i in range(3000) for p in _pairs(everything.attributes(i))} == set(
    itertools.product(COLORS, SHAPES)
  )
  with pytest.raises(ValueError, match="needs at least one held-out pair"):
    CaptionedShapes(split="heldout", heldout_pairs=())


def test_test_split_differs_from_train_at_the_same_index():
  train, test = CaptionedShapes(max_objects=2), CaptionedShapes(max_objects=2, split="test")
  assert (len(train), len(test)) == (1_000_000, 10_000)
  for index in range(200):
    assert train.attributes(index) != test.attributes(index)
  assert not np.array_equal(train[0]["image"], test[0]["image"])


def test_label_is_first_objects_colour_and_shape():
  dataset = CaptionedShapes(max_objects=2, heldout_pairs=())
  labels = set()
  for index in range(300):
    example = dataset[index]
    first = example["attributes"][0]
    expected = COLORS.index(first["color"]) * 4 + SHAPES.index(first["shape"])
    assert example["label"] == label_of(example["attributes"]) == expected
    assert type(example["label"]) is int
    labels.add(example["label"])
  assert labels == set(range(NUM_CLASSES))


@pytest.mark.parametrize("resolution", [32, 64, 256])
def test_example_shapes_and_dtypes(resolution):
  example = CaptionedShapes(resolution=resolution, max_objects=2)[7]
  assert example["image"].shape == (resolution, resolution, 3)
  assert example["image"].dtype == np.uint8
  assert isinstance(example["caption"], str)
  assert set(example["attributes"][0]) == {*_CANONICAL_KEYS, "dx", "dy", "scale", "angle"}


def test_get_batch_equals_stacked_items():
  dataset = CaptionedShapes(resolution=32, max_objects=2, split="test")
  indices = [5, 0, np.int64(9_999), 5, 123]
  batch = dataset.get_batch(indices)
  items = [dataset[index] for index in indices]
  assert batch["image"].shape == (5, 32, 32, 3) and batch["image"].dtype == np.uint8
  assert np.array_equal(batch["image"], np.stack([item["image"] for item in items]))
  assert batch["caption"] == [item["caption"] for item in items]
  assert batch["label"].dtype == np.int32
  assert batch["label"].tolist() == [item["label"] for item in items]
  assert batch["attributes"] == [item["attributes"] for item in items]
  assert dataset.get_batch([])["image"].shape == (0, 32, 32, 3)


def test_index_out_of_range_raises_index_error():
  dataset = CaptionedShapes(num_examples=10)
  assert len(dataset) == 10
  for index in (-1, 10, 10**9):
    with pytest.raises(IndexError):
      dataset[index]
  with pytest.raises(IndexError):
    dataset.get_batch([0, 10])


@pytest.mark.parametrize(
  "kwargs, message",
  [
    (dict(split="val"), "valid splits: train, test, heldout"),
    (dict(max_objects=3), "max_objects must be 1 or 2"),
    (dict(max_objects=0), "max_objects must be 1 or 2"),
    (dict(resolution=16), r"resolution must be an int in \[32, 256\]"),
    (dict(resolution=512), r"resolution must be an int in \[32, 256\]"),
    (dict(resolution=64.0), r"resolution must be an int in \[32, 256\]"),
    (dict(heldout_pairs=[("purple", "circle")]), "unknown colour 'purple'; valid colours: red"),
    (dict(heldout_pairs=[("red", "hexagon")]), "unknown shape 'hexagon'; valid shapes: circle"),
    (dict(heldout_pairs=["red"]), "must be \\(colour, shape\\) pairs"),
    (dict(heldout_pairs=list(itertools.product(COLORS, SHAPES))), "every colour-shape pair"),
    (dict(seed=-1), "seed must be a non-negative int"),
    (dict(num_examples=-1), "num_examples must be None or a non-negative int"),
  ],
)
def test_invalid_constructor_arguments_raise(kwargs, message):
  with pytest.raises(ValueError, match=message):
    CaptionedShapes(**kwargs)


def test_render_validates_its_inputs():
  red_circle = [dict(color="red", shape="circle", size="large", position="center")]
  for resolution in (31, 257):
    with pytest.raises(ValueError, match=r"\[32, 256\]"):
      render(red_circle, resolution)
  with pytest.raises(ValueError, match="unknown colour 'pink'"):
    render([red_circle[0] | {"color": "pink"}], 64)
  with pytest.raises(ValueError, match="lack 'position'"):
    render([dict(color="red", shape="circle", size="large")], 64)
  assert not render([], 32).any()


def test_red_circle_is_red_in_the_centre_black_in_the_corner_and_anti_aliased():
  image = render([dict(color="red", shape="circle", size="large", position="center")], 64)
  assert image[32, 32].tolist() == [255, 0, 0]
  assert image[0, 0].tolist() == [0, 0, 0]
  assert not image[..., 1:].any()
  red = image[..., 0]
  assert ((red > 0) & (red < 255)).sum() > 20  # A ring of partially covered edge pixels.


def test_later_objects_are_composited_over_earlier_ones():
  big = dict(color="blue", shape="square", size="large", position="center")
  small = dict(color="white", shape="circle", size="small", position="center")
  assert render([big, small], 64)[32, 32].tolist() == [255, 255, 255]
  assert render([small, big], 64)[32, 32].tolist() == [0, 0, 255]


@pytest.mark.parametrize("resolution", [32, 64, 256])
@pytest.mark.parametrize("shape", SHAPES)
def test_large_shapes_in_corners_stay_inside_the_frame(resolution, shape):
  for position in POSITIONS[:4]:
    image = render([dict(color="white", shape=shape, size="large", position=position)], resolution)
    border = resolution // 32  # At least one pixel at 32 px; a few at 256.
    assert not image[:border].any() and not image[-border:].any()
    assert not image[:, :border].any() and not image[:, -border:].any()
    assert image.any()


def test_shapes_point_up_and_are_centred_where_the_position_says():
  for shape, position in itertools.product(SHAPES, POSITIONS):
    obj = dict(color="white", shape=shape, size="large", position=position)
    coverage = render([obj], 128)[..., 0].astype(np.float64)
    ys, xs = np.mgrid[:128, :128] + 0.5
    centroid = np.array([(coverage * xs).sum(), (coverage * ys).sum()]) / coverage.sum() / 128
    assert np.allclose(centroid, shapes.POSITION_CENTERS[position], atol=0.01), (shape, position)
  # An up-pointing triangle is narrow at the top and wide at the bottom.
  triangle = render([dict(color="white", shape="triangle", size="large", position="center")], 64)
  rows = (triangle[..., 0] > 127).sum(axis=1)
  filled = np.flatnonzero(rows)
  assert rows[filled[0]] < rows[filled[-1]]


def test_vocabulary_covers_every_caption_word():
  words = vocabulary()
  assert words == sorted(set(words))
  assert {"a", "in", "the", "and", "top", "left", "center", "orange", "star"} <= set(words)
  assert (
    len(words) == 4 + len(SIZES) + len(COLORS) + len(SHAPES) + 5
  )  # top bottom left right center
  dataset = CaptionedShapes(max_objects=2)
  for index in range(100):
    assert set(dataset[index]["caption"].split()) <= set(words)


def test_rendering_is_fast():
  dataset = CaptionedShapes(max_objects=2)
  dataset[0]  # Warm up.
  start = time.perf_counter()
  dataset.get_batch(range(200))
  per_image = (time.perf_counter() - start) / 200
  assert per_image < 0.01  # Spec: ~2 ms per 64x64 image; generous bound against noisy machines.


def test_works_as_a_grain_data_source():
  grain = pytest.importorskip("grain")
  dataset = CaptionedShapes(resolution=32, num_examples=8)
  examples = list(grain.MapDataset.source(dataset).map(lambda example: example["label"]))
  assert examples == [dataset[index]["label"] for index in range(8)]


@pytest.mark.parametrize("angle", [0.0, 7.5])
def test_rendered_area_matches_the_analytic_area(angle):
  radius = shapes.SIZE_RADII["large"] * 128  # In pixels at 128 x 128.
  half_side = shapes.SQUARE_HALF_SIDE * radius
  inner = shapes.STAR_INNER_RATIO * radius
  expected_areas = {
    "circle": np.pi * radius**2,
    "square": (2 * half_side) ** 2,
    "triangle": 3 * np.sqrt(3) / 4 * radius**2,
    "star": 10 * 0.5 * radius * inner * np.sin(np.radians(36)),
  }
  for shape, expected in expected_areas.items():
    obj = dict(color="white", shape=shape, size="large", position="center", angle=angle)
    area = render([obj], 128)[..., 0].astype(np.float64).sum() / 255
    assert area == pytest.approx(expected, rel=0.01), shape
