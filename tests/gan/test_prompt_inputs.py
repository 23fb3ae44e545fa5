"""GAN `Task.prompt_inputs` + `Task.generate`: images for arbitrary captions, as the evaluator uses."""

import jax
import numpy as np
import pytest

from configs import cgan_shapes
from t2i_jax import sharding
from t2i_jax.data import shapes
from t2i_jax.train.families import build_task

CAPTIONS = [
  "a large red triangle in the top left",
  "a small cyan star in the center and a large white circle in the bottom right",
  "a small orange square in the bottom left",
]


@pytest.mark.parametrize("condition", ["none", "label", "text"])
def test_generate_gives_one_final_image_per_caption(condition):
  config = cgan_shapes.get_config("tiny")
  config.model.condition = condition
  task = build_task(config)
  inputs = task.prompt_inputs(CAPTIONS, 7)
  np.testing.assert_array_equal(inputs["z"], task.prompt_inputs(CAPTIONS, 7)["z"])  # seeded
  assert not np.array_equal(inputs["z"], task.prompt_inputs(CAPTIONS, 8)["z"])
  expected = {"none": {"z"}, "label": {"z", "label"}, "text": {"z", "tokens"}}[condition]
  assert set(inputs) == expected and inputs["z"].shape == (3, config.model.nz)
  if condition == "label":
    labels = [shapes.label_of(shapes.parse_caption(c)) for c in CAPTIONS]
    assert inputs["label"].tolist() == labels
  if condition == "text":
    assert inputs["tokens"].shape == (3, config.data.max_caption_length)
  _, shardings = sharding.abstract_state(
    task.init, jax.random.key(0), sharding.make_mesh(("data",), (-1,)), (("batch", "data"),)
  )
  state = sharding.init_sharded(task.init, jax.random.key(0), shardings)
  images = np.asarray(jax.jit(task.generate)(state, inputs, jax.random.key(1)))
  assert images.shape == (3, 32, 32, 3) and images.dtype == np.float32
  assert np.all(np.abs(images) <= 1.0)
