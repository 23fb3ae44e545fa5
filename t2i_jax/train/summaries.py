"""What a run writes for people: TensorBoard events, captioned sample grids, stdout lines."""

import logging
import math
import os
import textwrap
from collections.abc import Mapping, Sequence

import jax
import numpy as np
from PIL import Image, ImageDraw, ImageFont


def to_uint8(images: np.ndarray) -> np.ndarray:
  """float images in [-1, 1] -> uint8 [0, 255]."""
  return np.clip(np.round((np.asarray(images, np.float32) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def image_grid(
  images: np.ndarray,
  columns: int,
  captions: Sequence[str] | None = None,
  cell_size: int = 96,
  padding: int = 2,
) -> np.ndarray:
  """Tiles images into a grid, each cell upscaled to `cell_size` and captioned underneath.

  Args:
    images: uint8[N, H, W, 3].
    columns: cells per row.
    captions: N strings or None (no caption strip).

  Returns:
    uint8[rows * cell_h, columns * cell_w, 3].
  """
  images = np.asarray(images)
  n, h, w, _ = images.shape
  if captions is not None and len(captions) != n:
    raise ValueError(f"{n} images but {len(captions)} captions.")
  scale = max(1, cell_size // max(h, w))
  font = ImageFont.load_default()
  chars_per_line = max(8, (w * scale) // 6)
  caption_lines = (
    [textwrap.wrap(c, chars_per_line) for c in captions] if captions is not None else []
  )
  text_h = 11 * max((len(lines) for lines in caption_lines), default=0)
  cell_w, cell_h = w * scale + 2 * padding, h * scale + text_h + 2 * padding
  rows = math.ceil(n / columns)
  canvas = Image.new("RGB", (columns * cell_w, rows * cell_h), (24, 24, 24))
  draw = ImageDraw.Draw(canvas)
  for i in range(n):
    x, y = (i % columns) * cell_w + padding, (i // columns) * cell_h + padding
    cell = Image.fromarray(images[i]).resize((w * scale, h * scale), Image.NEAREST)
    canvas.paste(cell, (x, y))
    for j, line in enumerate(caption_lines[i] if caption_lines else []):
      draw.text((x, y + h * scale + 11 * j), line, fill=(230, 230, 230), font=font)
  return np.asarray(canvas)


def save_png(path: str, image: np.ndarray) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(image).save(path)


class SummaryWriter:
  """TensorBoard scalars and images (tensorboardX, no TensorFlow); writes on process 0 only."""

  def __init__(self, logdir: str):
    self._writer = None
    if jax.process_index() == 0:
      from tensorboardX import SummaryWriter as _TBWriter  # noqa: PLC0415 (heavy import)

      self._writer = _TBWriter(logdir)

  def scalars(self, step: int, scalars: Mapping[str, float]) -> None:
    if self._writer is not None:
      for key, value in scalars.items():
        self._writer.add_scalar(key, float(value), step)

  def image(self, step: int, tag: str, image: np.ndarray) -> None:
    """image: uint8[H, W, 3]."""
    if self._writer is not None:
      self._writer.add_image(tag, image, step, dataformats="HWC")

  def flush(self) -> None:
    if self._writer is not None:
      self._writer.flush()

  def close(self) -> None:
    if self._writer is not None:
      self._writer.close()


def format_metrics(step: int, metrics: Mapping[str, float]) -> str:
  """One concise stdout line: `step 200 | train/d_loss 1.21 | ...`."""
  parts = [f"step {step}"] + [f"{k} {v:.4g}" for k, v in sorted(metrics.items())]
  return " | ".join(parts)


def log_metrics(step: int, metrics: Mapping[str, float]) -> None:
  if jax.process_index() == 0:
    logging.info("%s", format_metrics(step, metrics))
