"""CUB-200-2011 birds with Reed et al.'s captions, as StackGAN / AttnGAN / DF-GAN use them.

Split: StackGAN's class split, 150 train classes (8,855 images) and 50 test classes (2,933
images) that do not overlap; it is not CUB's own train_test_split.txt. Images are cropped around
their bounding box as StackGAN does (`stackgan_crop_box`). Captions are normalised the way
AttnGAN built captions.pickle (`normalize_caption`), so both caption layouts (see `LAYOUT`) give
the same strings.

Per-step randomness: the caption (one of 10) and the optional augmentation of a record are drawn
from `np.random.default_rng` seeded with `(seed, index, draw_seed)`, never from global state.
`source[i]` uses no draw seed, so it returns the same record on every call and in every epoch
(what evaluation wants); a training loop that wants a fresh caption and crop each time it visits an
image passes a different `draw_seed` per step to `get_batch(indices, draw_seed=step)`.
"""

from __future__ import annotations

import importlib
import os
import pickle
import re
from collections.abc import Sequence

import numpy as np
from PIL import Image

from t2i_jax.data.celeba import DatasetNotFoundError  # One error type for every dataset.

SPLITS = ("train", "test")
CAPTION_LAYOUTS = ("auto", "text_c10", "attngan")
CROPS = ("stackgan", "none")
TEXT_EMBEDDINGS = (None, "char_cnn_rnn")
CAPTIONS_PER_IMAGE = 10
NUM_CLASSES = 200
DEFAULT_DATA_DIR = "~/data/birds"  # The folder name AttnGAN / DF-GAN use (data/birds).

# CUB class ids (1..200, as in classes.txt) of StackGAN's 50 test classes; the other 150 are the
# train classes. Derived once from AttnGAN's test/filenames.pickle (birds.zip metadata, the split
# StackGAN introduced); the same pickles reproduce this split image for image in images.txt order.
TEST_CLASS_IDS = (
  1, 4, 6, 8, 9, 14, 23, 29, 31, 33, 34, 35, 36, 37, 38, 43, 49, 51, 53, 66,
  72, 79, 83, 84, 86, 91, 95, 96, 98, 101, 102, 103, 112, 114, 119, 121, 130, 135, 138, 147,
  156, 163, 165, 166, 180, 183, 185, 186, 187, 197,
)  # fmt: skip

_CUB = "CUB_200_2011"
_META_FILES = ("images.txt", "bounding_boxes.txt", "image_class_labels.txt")
_TEXT_DIRS = ("text_c10", "text")  # Reed et al. name it text_c10; AttnGAN's text.zip, text/.
_CAPTIONS_PICKLE = "captions.pickle"
_CAPTION_STREAM, _AUGMENT_STREAM = 0, 1
EMBEDDINGS_FILE = "char-CNN-RNN-embeddings.pickle"  # StackGAN's precomputed text embeddings

LAYOUT = f"""\
  <data_dir>/
    {_CUB}/                  from CUB_200_2011.tgz
      images/<class>/<name>.jpg   e.g. images/001.Black_footed_Albatross/<name>.jpg
      images.txt  bounding_boxes.txt  image_class_labels.txt  classes.txt
    and the captions in either layout:
    text_c10/<class>/<name>.txt     Reed et al.: 10 captions per image, one per line
                                    (AttnGAN's text/ folder is the same and also works)
    captions.pickle  train/filenames.pickle  test/filenames.pickle
                                    AttnGAN / DF-GAN birds metadata (+ optional class_info.pickle)
"""
SOURCES = """\
  - images and CUB_200_2011/*.txt: CUB_200_2011.tgz from the Caltech data site,
    https://www.vision.caltech.edu/datasets/cub_200_2011/ (extract it into <data_dir>)
  - text_c10: Reed et al.'s captions, github.com/reedscot/icml2016 (links the cvpr2016 CUB data,
    `cub_icml`, which holds text_c10/)
  - or captions.pickle + train|test/filenames.pickle: AttnGAN's birds.zip metadata
    (github.com/taoxugit/AttnGAN, data/birds), also shipped with DF-GAN
  - optional, for text_embeddings="char_cnn_rnn": train|test/char-CNN-RNN-embeddings.pickle
    (+ train|test/filenames.pickle) from StackGAN's preprocessed birds data
    (github.com/hanzhanggit/StackGAN-Pytorch, "Data" in its README)
"""


def normalize_caption(text: str) -> str:
  """Lower-cases and keeps the ASCII part of `\\w+` words, joined by single spaces (AttnGAN)."""
  words = (w.encode("ascii", "ignore").decode("ascii") for w in re.findall(r"\w+", text.lower()))
  return " ".join(w for w in words if w)


def stackgan_crop_box(bbox: Sequence[float], width: int, height: int) -> tuple[int, int, int, int]:
  """StackGAN's crop around a bird (its `custom_crop`, also AttnGAN's and DF-GAN's `get_imgs`).

  A square of half-side r = int(0.75 * max(w, h)) around the integer box centre, i.e. 1.5x the
  larger box side, clamped to the image (so birds near an edge get a non-square crop).

  Args:
    bbox: CUB box (x, y, w, h) in pixels, x/y of the top-left corner.
    width: Image width.
    height: Image height.

  Returns:
    (left, top, right, bottom) for `PIL.Image.crop`; the whole image for a degenerate box.
  """
  x, y, w, h = (float(v) for v in bbox)
  r = int(max(w, h) * 0.75)
  cx, cy = int((2 * x + w) / 2), int((2 * y + h) / 2)
  box = (max(0, cx - r), max(0, cy - r), min(width, cx + r), min(height, cy + r))
  if box[2] <= box[0] or box[3] <= box[1]:
    return (0, 0, width, height)
  return box


def _numpy_global(module: str, name: str):
  # numpy 2 moved numpy.core to numpy._core; pickles written by numpy 1 name the old module.
  for candidate in (module, module.replace("numpy.core", "numpy._core")):
    try:
      return getattr(importlib.import_module(candidate), name)
    except (ImportError, AttributeError):
      continue
  raise pickle.UnpicklingError(f"Cannot resolve {module}.{name} in this numpy.")


class _SafeUnpickler(pickle.Unpickler):
  """Rebuilds only plain Python data, numpy scalars and arrays: any other global is refused.

  The AttnGAN pickles hold lists, dicts, str and int, except train/class_info.pickle, whose class
  ids are numpy int64 scalars (`numpy.core.multiarray.scalar(dtype, bytes)`); StackGAN's
  char-CNN-RNN embeddings are a list of float arrays.
  """

  _ALLOWED = frozenset(
    {
      ("numpy.core.multiarray", "scalar"),
      ("numpy._core.multiarray", "scalar"),
      ("numpy", "dtype"),
      # ndarrays, for StackGAN's char-CNN-RNN embeddings.
      ("numpy.core.multiarray", "_reconstruct"),
      ("numpy._core.multiarray", "_reconstruct"),
      ("numpy", "ndarray"),
      ("_codecs", "encode"),  # bytes in protocol-2 pickles written by Python 3
    }
  )

  def find_class(self, module: str, name: str):
    if (module, name) not in self._ALLOWED:
      raise pickle.UnpicklingError(f"Refusing to unpickle global {module}.{name}.")
    return _numpy_global(module, name)


def _load_pickle(path: str):
  with open(path, "rb") as f:
    # latin1: the AttnGAN pickles were written by Python 2 (str = bytes).
    return _SafeUnpickler(f, encoding="latin1").load()


def _read_table(path: str) -> dict[int, list[str]]:
  """Reads a CUB metadata file: `<image id> <values...>` per line -> {id: [values]}."""
  with open(path, encoding="utf-8") as f:
    return {int(p[0]): p[1:] for p in (line.split() for line in f) if p}


def _not_found(root: str, problem: str) -> DatasetNotFoundError:
  return DatasetNotFoundError(
    f"CUB-200-2011 is not usable under data_dir={root}: {problem}\n"
    f"Expected layout:\n{LAYOUT}Where to get it (no automatic download):\n{SOURCES}"
    f"Then pass --config.data.data_dir=<data_dir>."
  )


def _find_layout(root: str, caption_layout: str) -> tuple[str, str | None]:
  """Checks the folder and returns (layout, text folder or None); raises `DatasetNotFoundError`."""
  if not os.path.isdir(root):
    raise _not_found(root, f"the folder {root}/ does not exist.")
  cub = os.path.join(root, _CUB)
  text_dir = next(
    (p for p in (os.path.join(root, d) for d in _TEXT_DIRS) if os.path.isdir(p)), None
  )
  pickles = [_CAPTIONS_PICKLE] + [os.path.join(s, "filenames.pickle") for s in SPLITS]
  pickles_missing = [p for p in pickles if not os.path.isfile(os.path.join(root, p))]
  layout = caption_layout
  if layout == "auto":  # Both layouts hold the same captions; the pickle is one fast read.
    layout = "attngan" if not pickles_missing or text_dir is None else "text_c10"
  missing = [
    f"{_CUB}/{name}" for name in _META_FILES if not os.path.isfile(os.path.join(cub, name))
  ]
  if not os.path.isdir(os.path.join(cub, "images")):
    missing.append(f"the images, {_CUB}/images/")
  if layout == "text_c10" and text_dir is None:
    missing.append("the captions, text_c10/ (caption_layout='text_c10')")
  elif layout == "attngan" and pickles_missing:
    if caption_layout == "auto" and len(pickles_missing) == len(pickles):
      missing.append("the captions, text_c10/ or captions.pickle + filenames pickles")
    else:
      missing.append("the AttnGAN captions, " + ", ".join(pickles_missing))
  if missing:
    hint = ""
    if os.path.isfile(os.path.join(root, "images.txt")):
      hint = f" ({root} looks like the {_CUB} folder itself: pass its parent.)"
    raise _not_found(root, f"missing {'; '.join(missing)}.{hint}")
  return layout, text_dir


class CUB:
  """CUB-200-2011 birds, cropped around the bird, with one of the 10 captions of each image.

  Records: `dict(image=uint8[resolution, resolution, 3], caption=str, label=int)`, label being
  the CUB class id - 1 (0..199). Images: crop (`crop`), resize the shorter side to `load_size`,
  then centre-crop `resolution` (AttnGAN/DF-GAN resize to 76 and random-crop 64); with
  `augment=True` a random crop and a random horizontal flip instead, drawn per record as
  described in the module docstring.
  """

  def __init__(
    self,
    split: str = "train",
    resolution: int = 64,
    data_dir: str | os.PathLike | None = None,
    seed: int = 0,
    caption_layout: str = "auto",
    crop: str = "stackgan",
    load_size: int | None = None,
    augment: bool = False,
    text_embeddings: str | None = None,
  ):
    """Reads the metadata and captions of one split (images are read per record).

    Args:
      split: "train" (150 classes, 8,855 images) or "test" (50 classes, 2,933 images).
      resolution: Output side length.
      data_dir: Root folder laid out as in `LAYOUT`; None: `DEFAULT_DATA_DIR`.
      seed: Seed of the caption and augmentation draws, >= 0.
      caption_layout: "text_c10" (Reed et al.'s text files), "attngan" (captions.pickle and
        filenames pickles) or "auto" (those pickles when all present, else text_c10/ or text/).
        With text_c10 the split comes from the filenames pickles when present, else from
        `TEST_CLASS_IDS` in images.txt order (which gives the same lists).
      crop: "stackgan" (`stackgan_crop_box`) or "none" (the whole image).
      load_size: Side the cropped bird is resized to (shorter side) before the final crop;
        None: int(resolution * 76 / 64), AttnGAN's ratio (76 for 64, 304 for 256).
      augment: Random crop + horizontal flip (training) instead of the centre crop.
      text_embeddings: None, or "char_cnn_rnn": records also carry StackGAN's precomputed
        char-CNN-RNN embedding of their caption (`<split>/EMBEDDINGS_FILE`, rows in the order
        of `<split>/filenames.pickle`, 10 per image in caption order).

    Raises:
      ValueError: Bad argument, or metadata files that disagree with each other.
      DatasetNotFoundError: `data_dir` lacks images, metadata or captions.
    """
    for value, name, valid in (
      (split, "split", SPLITS),
      (caption_layout, "caption_layout", CAPTION_LAYOUTS),
      (crop, "crop", CROPS),
      (text_embeddings, "text_embeddings", TEXT_EMBEDDINGS),
    ):
      if value not in valid:
        raise ValueError(f"Unknown CUB {name} {value!r}; expected one of {valid}.")
    load_size = int(resolution * 76 / 64) if load_size is None else int(load_size)
    if not 1 <= resolution <= load_size:
      raise ValueError(f"Need 1 <= resolution <= load_size, got {resolution}, {load_size}.")
    if seed < 0:
      raise ValueError(f"seed must be >= 0, got {seed}.")
    self.split, self.resolution, self.load_size = split, int(resolution), load_size
    self.seed, self.crop, self.augment = int(seed), crop, bool(augment)
    root = os.path.abspath(os.path.expanduser(os.fspath(data_dir or DEFAULT_DATA_DIR)))
    self.data_dir = root
    self.caption_layout, self._text_dir = _find_layout(root, caption_layout)

    cub = os.path.join(root, _CUB)
    paths = _read_table(os.path.join(cub, "images.txt"))
    boxes = _read_table(os.path.join(cub, "bounding_boxes.txt"))
    classes = _read_table(os.path.join(cub, "image_class_labels.txt"))
    id_by_name = {os.path.splitext(p[0])[0]: i for i, p in paths.items()}
    filenames = os.path.join(root, split, "filenames.pickle")
    from_pickle = os.path.isfile(filenames)
    if from_pickle:
      names = [str(n) for n in _load_pickle(filenames)]
      unknown = [n for n in names if n not in id_by_name]
      if unknown:
        raise ValueError(f"{filenames} names images not in images.txt, e.g. {unknown[:3]}.")
    else:  # text_c10 without the AttnGAN pickles: StackGAN's class split, images.txt order.
      test = split == "test"
      names = [n for n, i in id_by_name.items() if (int(classes[i][0]) in TEST_CLASS_IDS) == test]
    ids = [id_by_name[n] for n in names]
    self.names = tuple(names)  # "<class folder>/<image name>", no extension.
    self.labels = np.array([int(classes[i][0]) - 1 for i in ids], np.int32)
    self.boxes = np.array([[float(v) for v in boxes[i]] for i in ids], np.float32).reshape(-1, 4)
    self._image_paths = [os.path.join(cub, "images", paths[i][0]) for i in ids]
    self._check_class_info(os.path.join(root, split, "class_info.pickle"), from_pickle)
    self._captions = None
    if self.caption_layout == "attngan":
      self._captions = self._decode_attngan(os.path.join(root, _CAPTIONS_PICKLE))
    self._embeddings = None
    if text_embeddings == "char_cnn_rnn":
      self._embeddings = _load_embeddings(root, split, len(names), from_pickle)
    if names:  # Catches a misplaced tree now rather than at the first training step.
      self._read_image(0)
      self.captions(0)

  def _check_class_info(self, path: str, names_from_pickle: bool) -> None:
    # Optional AttnGAN file, parallel to filenames.pickle; a mismatch means pickles from another
    # release or a re-sorted split, which would silently mislabel every image.
    if names_from_pickle and os.path.isfile(path):
      class_ids = [int(c) for c in _load_pickle(path)]
      if class_ids != [int(label) + 1 for label in self.labels]:
        raise ValueError(f"{path} disagrees with {_CUB}/image_class_labels.txt.")

  def _decode_attngan(self, path: str) -> list[tuple[str, ...]]:
    train, test, ixtoword, _ = _load_pickle(path)
    encoded = train if self.split == "train" else test
    if len(encoded) != CAPTIONS_PER_IMAGE * len(self.names):
      raise ValueError(
        f"{path} has {len(encoded)} {self.split} captions for {len(self.names)} filenames; "
        f"expected {CAPTIONS_PER_IMAGE} per image, in filenames order."
      )
    decoded = [" ".join(ixtoword[w] for w in c if w) for c in encoded]  # Word 0 is <end>.
    k = CAPTIONS_PER_IMAGE
    return [tuple(decoded[i * k : (i + 1) * k]) for i in range(len(self.names))]

  def __len__(self) -> int:
    return len(self.names)

  def captions(self, index: int) -> tuple[str, ...]:
    """Returns all captions of image `index` (10 for CUB), normalised by `normalize_caption`."""
    if self._captions is not None:
      return self._captions[index]
    path = os.path.join(self._text_dir, self.names[index] + ".txt")
    try:
      # Invalid bytes become U+FFFD, which is no \w and so splits words as AttnGAN's cleanup does.
      with open(path, encoding="utf-8", errors="replace") as f:
        lines = [normalize_caption(line) for line in f]
    except FileNotFoundError:
      raise _not_found(self.data_dir, f"missing the caption file {path}.") from None
    # AttnGAN skips blank lines and keeps the first 10 captions; caption order is shared.
    return tuple([line for line in lines if line][:CAPTIONS_PER_IMAGE])

  def all_captions(self) -> list[str]:
    """Every caption of the split, image by image (e.g. to build a word vocabulary)."""
    return [c for i in range(len(self)) for c in self.captions(i)]

  def _rng(self, stream: int, index: int, draw_seed: int | None) -> np.random.Generator:
    # Fixed-length entropy: SeedSequence pads short lists with zeros, so [a, b] == [a, b, 0].
    if draw_seed is not None and draw_seed < 0:
      raise ValueError(f"draw_seed must be >= 0, got {draw_seed}.")
    drawn = (0, 0) if draw_seed is None else (1, int(draw_seed))
    return np.random.default_rng([self.seed, stream, int(index), *drawn])

  def _read_image(self, index: int) -> Image.Image:
    path = self._image_paths[index]
    try:
      with Image.open(path) as image:
        image = image.convert("RGB")  # Some CUB images are grayscale (and a few CMYK).
    except FileNotFoundError:
      raise _not_found(self.data_dir, f"missing the image {path}.") from None
    if self.crop == "stackgan":
      image = image.crop(stackgan_crop_box(self.boxes[index], *image.size))
    return image

  def image(self, index: int, draw_seed: int | None = None) -> np.ndarray:
    """Returns uint8[resolution, resolution, 3]: image `index` cropped, resized and cropped."""
    image = self._read_image(index)
    width, height = image.size
    # torchvision's Resize(int): the shorter side becomes load_size, int() for the other.
    if width <= height:
      size = (self.load_size, int(self.load_size * height / width))
    else:
      size = (int(self.load_size * width / height), self.load_size)
    image = image.resize(size, resample=Image.Resampling.BILINEAR)
    pixels = np.asarray(image, dtype=np.uint8)
    res, flip = self.resolution, False
    if self.augment:
      rng = self._rng(_AUGMENT_STREAM, index, draw_seed)
      top, left = (int(rng.integers(n - res + 1)) for n in pixels.shape[:2])
      flip = bool(rng.integers(2))
    else:  # torchvision's CenterCrop rounding.
      top, left = (int(round((n - res) / 2.0)) for n in pixels.shape[:2])
    pixels = pixels[top : top + res, left : left + res]
    return np.ascontiguousarray(pixels[:, ::-1] if flip else pixels)

  def record(
    self, index: int, caption_index: int | None = None, draw_seed: int | None = None
  ) -> dict:
    """Returns record `index` with caption `caption_index` (None: drawn, see the module doc).

    Args:
      index: Record in [0, len(self)) (negative values count from the end).
      caption_index: Which of the image's captions, in [0, 10); None draws one.
      draw_seed: Per-step seed (>= 0) of the caption and augmentation draws; None: fixed draws.

    Returns:
      dict(image=uint8[resolution, resolution, 3], caption=str, label=int in [0, 200)).
    """
    index = int(index)
    if not -len(self) <= index < len(self):
      raise IndexError(f"CUB index {index} out of range [0, {len(self)}).")
    index %= len(self)
    captions = self.captions(index)
    if caption_index is None:
      caption_index = int(self._rng(_CAPTION_STREAM, index, draw_seed).integers(len(captions)))
    record = {
      "image": self.image(index, draw_seed),
      "caption": captions[caption_index],
      "label": int(self.labels[index]),
    }
    if self._embeddings is not None:
      record["text_embedding"] = self._embeddings[index, caption_index]
    return record

  def __getitem__(self, index: int) -> dict:
    """Returns `record(index)`: the same caption and crop on every call."""
    return self.record(index)

  def get_batch(self, indices: Sequence[int], draw_seed: int | None = None) -> dict:
    """Loads records `indices` (sequentially; the pipeline overlaps whole steps).

    Args:
      indices: int[B] record indices.
      draw_seed: As in `record`; pass e.g. the training step for new captions/crops each step.

    Returns:
      dict(image=uint8[B, res, res, 3], caption=object[B] of str, label=int32[B]), plus
      text_embedding=float32[B, D] with `text_embeddings="char_cnn_rnn"`.
    """
    records = [self.record(int(i), draw_seed=draw_seed) for i in indices]
    caption = np.empty(len(records), dtype=object)
    caption[:] = [r["caption"] for r in records]
    image = np.zeros((0, self.resolution, self.resolution, 3), np.uint8)
    batch = {
      "image": np.stack([r["image"] for r in records]) if records else image,
      "caption": caption,
      "label": np.array([r["label"] for r in records], np.int32),
    }
    if self._embeddings is not None:
      empty = np.zeros((0, self._embeddings.shape[-1]), np.float32)
      batch["text_embedding"] = (
        np.stack([r["text_embedding"] for r in records]) if records else empty
      )
    return batch


def _load_embeddings(root: str, split: str, num_images: int, names_from_pickle: bool) -> np.ndarray:
  """StackGAN's char-CNN-RNN embeddings of one split: float32[num_images, 10, D]."""
  path = os.path.join(root, split, EMBEDDINGS_FILE)
  if not os.path.isfile(path):
    raise _not_found(root, f"missing {path} (text_embeddings='char_cnn_rnn').")
  if not names_from_pickle:
    raise _not_found(
      root,
      f"{split}/filenames.pickle is needed with {EMBEDDINGS_FILE}: its rows follow that order.",
    )
  embeddings = np.asarray(_load_pickle(path), np.float32)
  if embeddings.ndim != 3 or embeddings.shape[:2] != (num_images, CAPTIONS_PER_IMAGE):
    raise ValueError(
      f"{path} holds embeddings of shape {embeddings.shape}; expected [{num_images} images of "
      f"{split}/filenames.pickle, {CAPTIONS_PER_IMAGE} captions, D]."
    )
  return embeddings
