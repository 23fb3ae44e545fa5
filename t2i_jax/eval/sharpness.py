"""Image sharpness as high-frequency energy: the variance of the Laplacian of luminance.

The variance-of-Laplacian focus measure (Pech-Pacheco et al., ICPR 2000): blur removes high
frequencies, so an image upsampled from a lower resolution scores lower than one drawn sharply at
full resolution. Used to compare StackGAN's Stage-II outputs with Stage-I outputs upsampled to
the same size; only images of one resolution are comparable.
"""

import numpy as np

# ITU-R BT.601 luma weights.
_LUMA = np.asarray([0.299, 0.587, 0.114], np.float64)


def laplacian_variance(images: np.ndarray) -> np.ndarray:
  """Per-image variance of the 4-neighbour Laplacian of luminance in [0, 1].

  Args:
    images: uint8[N, H, W, 3] (H, W >= 3).

  Returns:
    float64[N].
  """
  images = np.asarray(images)
  if images.ndim != 4 or images.shape[-1] != 3 or min(images.shape[1:3]) < 3:
    raise ValueError(f"Expected uint8[N, H >= 3, W >= 3, 3] images, got shape {images.shape}.")
  y = images.astype(np.float64) @ _LUMA / 255.0
  lap = y[:, :-2, 1:-1] + y[:, 2:, 1:-1] + y[:, 1:-1, :-2] + y[:, 1:-1, 2:] - 4.0 * y[:, 1:-1, 1:-1]
  return lap.reshape(lap.shape[0], -1).var(axis=1)


def sharpness(images: np.ndarray) -> float:
  """Mean `laplacian_variance` over a set of images (uint8[N, H, W, 3])."""
  return float(np.mean(laplacian_variance(images)))
