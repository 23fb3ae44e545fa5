"""Tests for t2i_jax.data.celeba, offline: TFDS is mocked or pointed at an empty folder."""

import socket
import time

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from t2i_jax.data import celeba, pipeline, sources

# The real aligned CelebA image size: 218 rows, 178 columns.
HEIGHT, WIDTH = 218, 178


def _marked_face():
  """uint8[218, 178, 3]: green central 178x178 square, red bands above and below it."""
  image = np.zeros((HEIGHT, WIDTH, 3), dtype=np.uint8)
  image[..., 0] = 255
  top = (HEIGHT - WIDTH) // 2
  image[top : top + WIDTH] = (0, 255, 0)
  return image


def test_mock_records_are_64px_uint8(tmp_path):
  with tfds.testing.mock_data(num_examples=5):
    source = celeba.CelebA("validation", data_dir=str(tmp_path))
    assert len(source) == 5
    record = source[3]
  assert record["image"].shape == (64, 64, 3) and record["image"].dtype == np.uint8
  assert record["caption"] == "" and record["label"] == -1
  assert record["image"].std() > 0  # Random mock pixels survive, not a constant fill.


def test_crop_is_centred(tmp_path):
  def as_data_source(self, split, **kwargs):
    del self, split, kwargs
    return [{"image": _marked_face()}] * 3

  with tfds.testing.mock_data(as_data_source_fn=as_data_source):
    source = celeba.CelebA("train", resolution=32, data_dir=str(tmp_path))
    image = source[1]["image"]
  assert image.shape == (32, 32, 3)
  # Any red from the bands would show up at the top or bottom rows.
  np.testing.assert_array_equal(image, np.broadcast_to([0, 255, 0], (32, 32, 3)))


def test_center_crop_resize_keeps_the_central_square():
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
  np.testing.assert_array_equal(celeba.center_crop_resize(image, WIDTH), image[20:198])
  wide = image.transpose(1, 0, 2)  # 178 x 218: the crop moves to the columns.
  np.testing.assert_array_equal(celeba.center_crop_resize(wide, WIDTH), wide[:, 20:198])
  small = celeba.center_crop_resize(image, 64)
  assert small.shape == (64, 64, 3) and small.dtype == np.uint8


def test_batches_over_mock_celeba(tmp_path):
  config = ml_collections.ConfigDict(dict(name="celeba", resolution=64, data_dir=str(tmp_path)))
  with tfds.testing.mock_data(num_examples=10):
    source = sources.make_source(config, "test")
    assert isinstance(source, celeba.CelebA)
    with pipeline.Batches(source, global_batch_size=4, seed=0, num_threads=2) as batches:
      batch = next(batches)
  assert batch["image"].shape == (4, 64, 64, 3) and batch["image"].dtype == np.uint8
  np.testing.assert_array_equal(batch["label"], np.full(4, -1, np.int32))
  assert list(batch["caption"]) == [""] * 4


def test_missing_dataset_raises_one_clear_error_offline(tmp_path, monkeypatch):
  def no_network(*args, **kwargs):
    raise AssertionError("tried to open a network connection")

  monkeypatch.setattr(socket.socket, "connect", no_network)
  monkeypatch.setattr(socket, "create_connection", no_network)
  start = time.perf_counter()
  with pytest.raises(celeba.DatasetNotFoundError) as info:
    celeba.CelebA("train", data_dir=str(tmp_path))
  assert time.perf_counter() - start < 10.0
  error = info.value
  assert isinstance(error, FileNotFoundError)
  assert error.__cause__ is None and error.__suppress_context__  # No chained TFDS traceback.
  message = str(error)
  for expected in (
    "`celeb_a`",
    f"data_dir={tmp_path}",
    f"{tmp_path}/celeb_a/2.1.0/",
    f"{tmp_path}/downloads/manual/",
    *celeba.MANUAL_FILES,
    "pip install -e '.[tf]'",
    f"tfds build celeb_a --data_dir={tmp_path} --file_format=array_record",
    f"--config.data.data_dir={tmp_path}",
  ):
    assert expected in message, expected
  assert not any(tmp_path.iterdir())  # Nothing was downloaded or created.


def test_unknown_split_is_rejected():
  with pytest.raises(ValueError, match="validation"):
    celeba.CelebA("val")
