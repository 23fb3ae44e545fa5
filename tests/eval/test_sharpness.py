import numpy as np
import pytest
from PIL import Image

from t2i_jax.data import shapes
from t2i_jax.eval import sharpness


def test_upsampled_renders_are_less_sharp_than_full_resolution_renders():
  sharp = shapes.CaptionedShapes(resolution=128, split="test").get_batch(np.arange(8))["image"]
  small = shapes.CaptionedShapes(resolution=64, split="test").get_batch(np.arange(8))["image"]
  upsampled = np.stack(
    [np.asarray(Image.fromarray(im).resize((128, 128), Image.BILINEAR)) for im in small]
  )
  assert sharpness.sharpness(sharp) > 2 * sharpness.sharpness(upsampled)


def test_laplacian_variance_closed_forms():
  flat = np.full((1, 8, 8, 3), 77, np.uint8)
  assert sharpness.laplacian_variance(flat)[0] == 0.0
  checker = (np.indices((6, 6)).sum(0) % 2 * 255).astype(np.uint8)
  image = np.repeat(checker[None, :, :, None], 3, axis=-1)
  # Interior Laplacian is +-4 (in [0, 1] units) with mean 0: variance 16.
  np.testing.assert_allclose(sharpness.laplacian_variance(image), [16.0], rtol=1e-6)
  with pytest.raises(ValueError, match=r"Expected uint8\[N, H >= 3"):
    sharpness.laplacian_variance(np.zeros((8, 8, 3), np.uint8))


def test_through_resolution_sets_the_ceiling_of_upsampled_images():
  sharp = shapes.CaptionedShapes(resolution=128, split="test").get_batch(np.arange(8))["image"]
  via_64 = sharpness.through_resolution(sharp, 64)
  assert via_64.shape == sharp.shape and via_64.dtype == np.uint8
  assert sharpness.sharpness(sharp) > 4 * sharpness.sharpness(via_64)
  # The round trip keeps the picture: only edges move.
  assert np.mean(np.abs(via_64.astype(int) - sharp.astype(int))) < 8
  np.testing.assert_array_equal(sharpness.through_resolution(sharp, 128), sharp)
  with pytest.raises(ValueError, match="H and W multiples of 48"):
    sharpness.through_resolution(sharp, 48)
