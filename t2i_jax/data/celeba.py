"""CelebA aligned faces as a random-access source, read from TFDS `celeb_a` without TensorFlow.

Reading needs only the prepared array_record files (`tfds.data_source`); preparing them needs
TensorFlow once, and the raw files have to be downloaded by hand (see `DatasetNotFoundError`).
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

TFDS_NAME = "celeb_a"
SPLITS = ("train", "validation", "test")

# The files TFDS `celeb_a` 2.1.0 reads, named as in its checksums.tsv: TFDS picks each one up from
# the manual folder instead of fetching its Google Drive URL, which is quota-limited and often
# refuses scripted downloads.
MANUAL_FILES = (
  "img_align_celeba.zip",
  "list_eval_partition.txt",
  "list_attr_celeba.txt",
  "list_landmarks_align_celeba.txt",
  "identity_CelebA.txt",
)
_HOMEPAGE = "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html"


class DatasetNotFoundError(FileNotFoundError):
  """A dataset that has to be prepared offline is not where TFDS looks for it."""


def center_crop_resize(image: np.ndarray, resolution: int) -> np.ndarray:
  """Takes the central square of an image and resizes it, as DCGAN-style CelebA pipelines do.

  Equivalent (up to resampling rounding) to torchvision `Resize(res)` + `CenterCrop(res)`, the
  PyTorch DCGAN example's preprocessing: on the 178x218 aligned faces it keeps rows 20..197.
  Bilinear PIL resizing is antialiased when downscaling, like torchvision's default on PIL images.

  Args:
    image: uint8[H, W, 3].
    resolution: Output side length.

  Returns:
    uint8[resolution, resolution, 3].
  """
  height, width = image.shape[:2]
  side = min(height, width)
  top, left = (height - side) // 2, (width - side) // 2
  square = np.asarray(image[top : top + side, left : left + side], dtype=np.uint8)
  if side == resolution:
    return square
  resized = Image.fromarray(square).resize(
    (resolution, resolution), resample=Image.Resampling.BILINEAR
  )
  return np.asarray(resized, dtype=np.uint8)


def _not_prepared_message(builder: tfds.core.DatasetBuilder, cause: str | None) -> str:
  """Explains where TFDS looked for `celeb_a` and how to prepare it."""
  version_dir = os.fspath(builder.data_dir)
  # builder.data_dir is <root>/celeb_a/<version>; <root> is what --config.data.data_dir sets.
  root = os.path.dirname(os.path.dirname(version_dir))
  manual_dir = os.path.join(root, "downloads", "manual")
  if cause is None:
    found = f"found nothing usable in {version_dir}/"
  else:
    found = f"could not read {version_dir}/ as array_record ({cause})"
  files = "\n".join(f"       {name}" for name in MANUAL_FILES)
  return (
    f"TFDS dataset `{TFDS_NAME}` (version {builder.version}) is not prepared under data_dir="
    f"{root}: {found}. Expected {version_dir}/ to hold dataset_info.json and "
    f"{TFDS_NAME}-{{train,validation,test}}.array_record-* files.\n"
    "CelebA cannot be downloaded automatically. Prepare it once:\n"
    f"  1. Download from the official CelebA Google Drive ({_HOMEPAGE}) into {manual_dir}/:\n"
    f"{files}\n"
    "  2. pip install -e '.[tf]'   (TensorFlow is only needed to prepare the data)\n"
    f"  3. tfds build {TFDS_NAME} --data_dir={root} --file_format=array_record\n"
    f"Then pass --config.data.data_dir={root}."
  )


def _open_split(split: str, data_dir: str | None):
  """Returns the TFDS random-access source of one split, or raises `DatasetNotFoundError`."""
  try:
    # download=False: an unprepared dataset must fail here, never start a download.
    return tfds.data_source(TFDS_NAME, split=split, data_dir=data_dir, download=False)
  # TFDS raises KeyError, NotImplementedError, ... depending on what exactly is missing.
  except Exception as e:
    builder = tfds.builder(TFDS_NAME, data_dir=data_dir)
    cause = None
    if builder.is_prepared():  # E.g. prepared in the tfrecord format, which needs TensorFlow.
      lines = str(e).strip().splitlines()
      cause = f"{type(e).__name__}: {lines[0] if lines else ''}"
    raise DatasetNotFoundError(_not_prepared_message(builder, cause)) from None


class CelebA:
  """CelebA aligned faces, centre-cropped to a square and resized.

  Records: `dict(image=uint8[resolution, resolution, 3], caption="", label=-1)`; CelebA has no
  captions and the 40 binary attributes are not used as a class label.
  """

  def __init__(self, split: str = "train", resolution: int = 64, data_dir: str | None = None):
    """Opens one split.

    Args:
      split: "train" (162,770 images), "validation" (19,867) or "test" (19,962).
      resolution: Output side length.
      data_dir: TFDS data dir holding `celeb_a/<version>/`; None uses TFDS's default
        ($TFDS_DATA_DIR or ~/tensorflow_datasets).

    Raises:
      ValueError: Unknown split or non-positive resolution.
      DatasetNotFoundError: The dataset is not prepared in array_record format under `data_dir`.
    """
    if split not in SPLITS:
      raise ValueError(f"Unknown CelebA split {split!r}; expected one of {SPLITS}.")
    if resolution < 1:
      raise ValueError(f"resolution must be >= 1, got {resolution}.")
    self.split = split
    self.resolution = resolution
    self._source = _open_split(split, data_dir)

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int) -> dict:
    """Returns record `index` as `dict(image=uint8[res, res, 3], caption="", label=-1)`."""
    image = self._source[int(index)]["image"]
    return {
      "image": center_crop_resize(image, self.resolution),
      "caption": "",
      "label": -1,
    }
