"""Image sharpness as high-frequency energy: the variance of the Laplacian of luminance.

The variance-of-Laplacian focus measure (Pech-Pacheco et al., ICPR 2000): blur removes high
frequencies, so an image upsampled from a lower resolution scores lower than one drawn sharply at
full resolution. Used to compare StackGAN's Stage-II outputs with Stage-I outputs upsampled to
the same size; only images of one resolution are comparable.
"""

import jax
import jax.numpy as jnp
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


def through_resolution(images: np.ndarray, resolution: int) -> np.ndarray:
  """`images` area-downsampled to `resolution` and bilinearly upsampled back.

  Area averaging is how an anti-aliased renderer or camera makes the low-resolution image, so the
  sharpness of the result is about the most a `resolution`-px image, upsampled as StackGAN's grids
  upsample Stage I, can score against these images: the ceiling of a perfect Stage I.

  Args:
    images: uint8[N, H, W, 3] with H and W multiples of `resolution`.
    resolution: side of the low-resolution copy.

  Returns:
    uint8[N, H, W, 3].
  """
  images = np.asarray(images)
  if (
    images.ndim != 4
    or images.shape[-1] != 3
    or images.shape[1] % resolution
    or images.shape[2] % resolution
  ):
    raise ValueError(
      f"Expected uint8[N, H, W, 3] images with H and W multiples of {resolution}, got "
      f"{images.shape}."
    )
  n, h, w, _ = images.shape
  blocks = images.astype(np.float32).reshape(n, resolution, h // resolution, resolution, -1, 3)
  low = blocks.mean(axis=(2, 4))
  back = jax.image.resize(jnp.asarray(low), (n, h, w, 3), "bilinear")
  return np.asarray(jnp.clip(jnp.round(back), 0, 255)).astype(np.uint8)
