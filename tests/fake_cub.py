"""A small fake CUB-200-2011 tree in the real layout, built from the real metadata in shared/.

The real captions, filenames pickles and CUB text files come from shared/data/cub_birds_meta
(no images there); the fake tree keeps a handful of those images, drawn as small placeholder
JPEGs: a solid colour per class with a bright rectangle (the "bird") at the written bounding box.
"""

import os
import pathlib
import pickle
import shutil

import numpy as np
import pytest
from PIL import Image

from t2i_jax.data import cub

EMBED_DIM = 16  # of the fake char-CNN-RNN embeddings


def fake_embeddings(num_images: int) -> np.ndarray:
  """float32[num_images, 10, EMBED_DIM]; entry [i, k, :] = i + k / 10, so a draw is traceable."""
  values = np.arange(num_images)[:, None] + np.arange(cub.CAPTIONS_PER_IMAGE)[None, :] / 10
  return np.repeat(values[..., None], EMBED_DIM, axis=-1).astype(np.float32)


def _find_shared() -> pathlib.Path:
  repo = pathlib.Path(__file__).resolve().parents[2]
  candidates = (repo / "shared", repo.parent / "shared")
  for candidate in candidates:
    if candidate.is_dir():
      print(f"fake_cub: using shared data at {candidate}")
      return candidate
  print(f"fake_cub: no shared data at {' or '.join(map(str, candidates))}")
  return candidates[-1]


META = _find_shared() / "data" / "cub_birds_meta"
needs_meta = pytest.mark.skipif(
  not META.is_dir(), reason=f"CUB metadata not found at {META} (needs the shared/ folder)"
)

WIDTH, HEIGHT = 120, 96
BIRD = (255, 255, 255)
# (x, y, w, h): the StackGAN crop of this box lies inside the image: r = 24, centre (60, 46),
# crop x 36..84, y 22..70 (48 x 48), in which the bird spans 2/3 of the width, 1/2 of the height.
BOX = (44.0, 34.0, 32.0, 24.0)
CORNER_BOX = (2.0, 3.0, 40.0, 30.0)  # The crop is clamped at the top-left corner: not square.
PER_SPLIT = 4  # Images per split: 2 classes x 2 images.


def _pick(names):
  """The first two images of the first two classes of a filenames list."""
  picked, classes = [], []
  for name in names:
    cls = name.split("/")[0]
    if cls not in classes:
      if len(classes) == 2:
        break
      classes.append(cls)
    if sum(n.startswith(cls + "/") for n in picked) < 2:
      picked.append(name)
  return picked


def _write_image(path, label, box, grayscale):
  colour = tuple(int(c) for c in np.random.default_rng(label).integers(0, 120, 3))
  pixels = np.empty((HEIGHT, WIDTH, 3), np.uint8)
  pixels[:] = colour
  x, y, w, h = (int(v) for v in box)
  pixels[y : y + h, x : x + w] = BIRD
  pixels[y : y + h // 3, x : x + w // 4] = (255, 0, 0)  # Asymmetric: flips show.
  image = Image.fromarray(pixels)
  path.parent.mkdir(parents=True, exist_ok=True)
  (image.convert("L") if grayscale else image).save(path, quality=95)


def _text_c10_line(caption):
  # Raw Reed et al. style: capitals and punctuation that normalize_caption removes.
  return caption.capitalize().replace(" with ", ", with ") + ".\n"


def build_fake_cub(tmp_path_factory) -> dict:
  """{"both": captions.pickle + text_c10/ + char-CNN-RNN embeddings, "text_c10": text_c10/ only,
  "picked": {split: image names}}, the same 8 images; skips the test without the metadata."""
  if not META.is_dir():
    pytest.skip(f"CUB metadata not found at {META} (needs the shared/ folder)")
  load = cub._load_pickle
  train_caps, test_caps, ixtoword, wordtoix = load(META / "captions.pickle")
  full = {s: load(META / s / "filenames.pickle") for s in cub.SPLITS}
  encoded = {"train": train_caps, "test": test_caps}
  picked = {s: _pick(full[s]) for s in cub.SPLITS}
  keep = {n for names in picked.values() for n in names}

  root = tmp_path_factory.mktemp("cub") / "both"
  meta = root / "CUB_200_2011"
  meta.mkdir(parents=True)
  shutil.copy(META / "CUB_200_2011" / "classes.txt", meta)
  lines = (META / "CUB_200_2011" / "images.txt").read_text().splitlines()
  rows = [line.split() for line in lines]
  rows = [(int(i), p) for i, p in rows if os.path.splitext(p)[0] in keep]
  labels = dict(
    line.split()
    for line in (META / "CUB_200_2011" / "image_class_labels.txt").read_text().split("\n")
    if line
  )
  boxes = {}
  for k, (image_id, path) in enumerate(rows):
    boxes[image_id] = CORNER_BOX if k == 1 else BOX
    _write_image(meta / "images" / path, int(labels[str(image_id)]), boxes[image_id], k == 2)
  (meta / "images.txt").write_text("".join(f"{i} {p}\n" for i, p in rows))
  (meta / "bounding_boxes.txt").write_text(
    "".join(f"{i} {' '.join(str(v) for v in boxes[i])}\n" for i, _ in rows)
  )
  (meta / "image_class_labels.txt").write_text("".join(f"{i} {labels[str(i)]}\n" for i, _ in rows))

  captions = {}
  for split in cub.SPLITS:
    (root / split).mkdir()
    rows_of = [full[split].index(n) for n in picked[split]]
    captions[split] = [c for r in rows_of for c in encoded[split][10 * r : 10 * r + 10]]
    with open(root / split / "filenames.pickle", "wb") as f:
      pickle.dump(picked[split], f, protocol=2)
    class_ids = [int(n[:3]) for n in picked[split]]
    if split == "train":  # numpy scalars, as in the real train file.
      class_ids = [np.int64(c) for c in class_ids]
    with open(root / split / "class_info.pickle", "wb") as f:
      pickle.dump(class_ids, f, protocol=4)  # Python 3's protocol 2 would need _codecs.encode.
    with open(root / split / cub.EMBEDDINGS_FILE, "wb") as f:  # a list of [10, D] arrays
      pickle.dump(list(fake_embeddings(len(picked[split]))), f, protocol=2)
    for k, name in enumerate(picked[split]):
      text = [" ".join(ixtoword[w] for w in c if w) for c in captions[split][10 * k : 10 * k + 10]]
      path = root / "text_c10" / f"{name}.txt"
      path.parent.mkdir(parents=True, exist_ok=True)
      path.write_text("".join(_text_c10_line(t) for t in text) + "\n")
  with open(root / "captions.pickle", "wb") as f:
    pickle.dump([captions["train"], captions["test"], ixtoword, wordtoix], f, protocol=2)

  text_only = root.parent / "text_c10"
  shutil.copytree(root / "CUB_200_2011", text_only / "CUB_200_2011")
  shutil.copytree(root / "text_c10", text_only / "text_c10")
  return {"both": root, "text_c10": text_only, "picked": picked}
