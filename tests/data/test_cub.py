"""Tests for t2i_jax.data.cub on a small fake CUB tree (tests/fake_cub.py) in the real layout."""

import os
import pickle
import shutil

import numpy as np
import pytest
from fake_cub import (
  BOX,
  HEIGHT,
  META,
  PER_SPLIT,
  WIDTH,
  build_fake_cub,
  fake_embeddings,
  needs_meta,
)

from t2i_jax.data import cub, pipeline, sources


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
  return build_fake_cub(tmp_path_factory)


def test_normalize_caption_matches_attngan_tokens():
  assert cub.normalize_caption("This bird's belly is WHITE, with café-brown wings.\n") == (
    "this bird s belly is white with caf brown wings"
  )
  assert cub.normalize_caption(" ,. \n") == ""


def test_stackgan_crop_box():
  # r = int(325 * 0.75) = 243 around (222, 179), clamped to the 500 x 375 image.
  assert cub.stackgan_crop_box((60.0, 27.0, 325.0, 304.0), 500, 375) == (0, 0, 465, 375)
  assert cub.stackgan_crop_box(BOX, WIDTH, HEIGHT) == (36, 22, 84, 70)
  assert cub.stackgan_crop_box((5, 5, 0, 0), WIDTH, HEIGHT) == (0, 0, WIDTH, HEIGHT)


def test_unpickler_refuses_other_globals(tmp_path):
  path = tmp_path / "evil.pickle"
  path.write_bytes(pickle.dumps(os.system, protocol=2))
  with pytest.raises(pickle.UnpicklingError, match="posix.system|nt.system"):
    cub._load_pickle(path)
  # Protocol 4: numpy 2 names numpy._core (the real Python 2 files name numpy.core, tested below).
  path.write_bytes(pickle.dumps([np.int64(3), np.dtype("float32")], protocol=4))
  assert cub._load_pickle(path) == [3, np.dtype("float32")]


@needs_meta
def test_real_split_is_stackgans_class_split():
  names = {s: cub._load_pickle(META / s / "filenames.pickle") for s in cub.SPLITS}
  classes = {s: {int(n[:3]) for n in names[s]} for s in cub.SPLITS}
  assert (len(names["train"]), len(names["test"])) == (8855, 2933)
  assert (len(classes["train"]), len(classes["test"])) == (150, 50)
  assert not classes["train"] & classes["test"]
  assert classes["test"] == set(cub.TEST_CLASS_IDS)
  # The hard-coded class split over images.txt reproduces both pickles, order included.
  lines = (META / "CUB_200_2011" / "images.txt").read_text().split()[1::2]
  everything = [os.path.splitext(p)[0] for p in lines]
  assert [n for n in everything if int(n[:3]) in cub.TEST_CLASS_IDS] == names["test"]
  assert [n for n in everything if int(n[:3]) not in cub.TEST_CLASS_IDS] == names["train"]
  # The real train class_info holds numpy.core.multiarray scalars: the allow-list takes them.
  class_info = cub._load_pickle(META / "train" / "class_info.pickle")
  assert [int(c) for c in class_info] == [int(n[:3]) for n in names["train"]]


@pytest.mark.parametrize("split", cub.SPLITS)
def test_both_layouts_give_the_same_records(roots, split):
  sets = [
    cub.CUB(split, data_dir=roots["both"], caption_layout="attngan"),
    cub.CUB(split, data_dir=roots["both"], caption_layout="text_c10"),  # Split: the pickles.
    cub.CUB(split, data_dir=roots["text_c10"]),  # Auto -> text_c10, split: TEST_CLASS_IDS.
  ]
  assert cub.CUB(split, data_dir=roots["both"]).caption_layout == "attngan"
  assert [s.caption_layout for s in sets] == ["attngan", "text_c10", "text_c10"]
  for source in sets:
    assert source.names == tuple(roots["picked"][split]) and len(source) == PER_SPLIT
    np.testing.assert_array_equal(source.labels, [int(n[:3]) - 1 for n in source.names])
  for i in range(PER_SPLIT):
    captions = sets[0].captions(i)
    assert len(captions) == 10 and all(c and c == c.lower() and "," not in c for c in captions)
    for other in sets[1:]:
      assert other.captions(i) == captions
      a, b = sets[0][i], other[i]
      assert a["caption"] == b["caption"] and a["label"] == b["label"]
      np.testing.assert_array_equal(a["image"], b["image"])
  assert sets[0].all_captions() == [c for i in range(PER_SPLIT) for c in sets[2].captions(i)]


def _bird_extent(image):
  """(centre row, centre col, height, width) of the box around the bright bird pixels."""
  rows, cols = np.nonzero(image.min(axis=-1) > 200)
  top, bottom, left, right = rows.min(), rows.max(), cols.min(), cols.max()
  return ((top + bottom) / 2, (left + right) / 2, bottom - top + 1, right - left + 1)


@pytest.mark.parametrize("resolution", [32, 64])
def test_stackgan_crop_centres_the_bird(roots, resolution):
  source = cub.CUB("train", resolution, data_dir=roots["both"])
  assert source.load_size == resolution * 76 // 64
  record = source[0]
  image = record["image"]
  assert image.shape == (resolution, resolution, 3) and image.dtype == np.uint8
  assert isinstance(record["caption"], str) and record["label"] == int(source.names[0][:3]) - 1
  # The bird fills 2/3 x 1/2 of the 48-px crop, which is resized to load_size (76/64 of the
  # output) and centre-cropped: the bird stays centred and both fractions grow by 76/64.
  row, col, height, width = _bird_extent(image)
  scale = resolution * 76 / 64 / 48
  assert width == pytest.approx(32 * scale, abs=2)
  assert height == pytest.approx(24 * scale, abs=2)
  assert col == pytest.approx((resolution - 1) / 2, abs=1)
  assert row == pytest.approx((resolution - 1) / 2, abs=1)
  whole = cub.CUB("train", resolution, data_dir=roots["both"], crop="none")[0]["image"]
  # Uncropped: the 96-px image height becomes load_size, so the bird is half as wide.
  assert _bird_extent(whole)[3] == pytest.approx(32 * source.load_size / HEIGHT, abs=2)


def test_clamped_crop_and_grayscale_images_still_give_rgb_squares(roots):
  source = cub.CUB("train", 64, data_dir=roots["both"], load_size=100)
  for i in (1, 2):  # 1: box at the corner (non-square crop), 2: grayscale JPEG.
    image = source[i]["image"]
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
  assert source[1]["image"].min(axis=-1).max() > 200  # The bird is in the clamped crop.
  with pytest.raises(IndexError):
    source[PER_SPLIT]


def test_draws_are_deterministic_and_follow_seed_and_draw_seed(roots):
  def batch(seed, draw_seed, augment=False):
    source = cub.CUB("test", 32, data_dir=roots["both"], seed=seed, augment=augment)
    return source.get_batch(np.arange(PER_SPLIT), draw_seed=draw_seed)

  def caption_ids(seed, draw_seed):
    source = cub.CUB("test", 32, data_dir=roots["both"], seed=seed)
    got = batch(seed, draw_seed)["caption"]
    return tuple(source.captions(i).index(c) for i, c in enumerate(got))

  first = batch(0, None)
  assert first["image"].shape == (PER_SPLIT, 32, 32, 3) and first["label"].dtype == np.int32
  assert first["caption"].dtype == object
  source = cub.CUB("test", 32, data_dir=roots["both"])
  assert list(first["caption"]) == [source[i]["caption"] for i in range(PER_SPLIT)]
  assert caption_ids(0, None) == caption_ids(0, None)
  # With 10 captions per image, 4 images collide by chance with probability 1e-4 per pair.
  assert len({caption_ids(0, None), caption_ids(1, None), caption_ids(0, 7)}) == 3
  assert caption_ids(0, 7) == caption_ids(0, 7)
  assert source.record(0, caption_index=3)["caption"] == source.captions(0)[3]
  np.testing.assert_array_equal(source.record(0, 3)["image"], source[0]["image"])


def test_augment_differs_but_is_deterministic(roots):
  plain = cub.CUB("test", 32, data_dir=roots["both"])
  aug = [cub.CUB("test", 32, data_dir=roots["both"], augment=True) for _ in range(2)]
  images = [np.stack([s[i]["image"] for i in range(PER_SPLIT)]) for s in (plain, *aug)]
  assert not np.array_equal(images[0], images[1])
  np.testing.assert_array_equal(images[1], images[2])
  assert [plain[i]["caption"] for i in range(4)] == [aug[0][i]["caption"] for i in range(4)]
  steps = [aug[0].get_batch(range(PER_SPLIT), draw_seed=s)["image"] for s in (1, 2, 1)]
  assert not np.array_equal(steps[0], steps[1])
  np.testing.assert_array_equal(steps[0], steps[2])


def _assert_guides(message):
  for expected in (
    "CUB_200_2011.tgz",
    "https://www.vision.caltech.edu/datasets/cub_200_2011/",
    "images/<class>/<name>.jpg",
    "text_c10/<class>/<name>.txt",
    "reedscot/icml2016",
    "captions.pickle  train/filenames.pickle  test/filenames.pickle",
    "birds.zip",
    "--config.data.data_dir",
  ):
    assert expected in message, expected


def test_missing_root_raises_one_clear_error(tmp_path):
  with pytest.raises(cub.DatasetNotFoundError) as info:
    cub.CUB("train", data_dir=tmp_path / "nowhere")
  assert isinstance(info.value, FileNotFoundError)
  assert f"the folder {tmp_path / 'nowhere'}/ does not exist" in str(info.value)
  _assert_guides(str(info.value))
  with pytest.raises(cub.DatasetNotFoundError, match="missing CUB_200_2011/images.txt"):
    cub.CUB("train", data_dir=tmp_path)


def test_missing_pieces_are_named(roots, tmp_path):
  images_only = tmp_path / "images_only"
  shutil.copytree(roots["both"] / "CUB_200_2011", images_only / "CUB_200_2011")
  with pytest.raises(cub.DatasetNotFoundError) as info:
    cub.CUB("train", data_dir=images_only)
  message = str(info.value)
  assert "missing the captions, text_c10/ or captions.pickle + filenames pickles." in message
  _assert_guides(message)
  with pytest.raises(cub.DatasetNotFoundError, match=r"looks like the CUB_200_2011 folder"):
    cub.CUB("train", data_dir=images_only / "CUB_200_2011")
  with pytest.raises(cub.DatasetNotFoundError, match="AttnGAN captions, captions.pickle"):
    cub.CUB("train", data_dir=roots["text_c10"], caption_layout="attngan")

  captions_only = tmp_path / "captions_only"
  shutil.copytree(roots["both"], captions_only)
  shutil.rmtree(captions_only / "CUB_200_2011" / "images")
  with pytest.raises(cub.DatasetNotFoundError) as info:
    cub.CUB("test", data_dir=captions_only)
  assert "missing the images, CUB_200_2011/images/." in str(info.value)
  _assert_guides(str(info.value))

  partial = tmp_path / "partial"
  shutil.copytree(roots["text_c10"], partial)
  name = roots["picked"]["test"][-1]
  (partial / "text_c10" / f"{name}.txt").unlink()
  (partial / "CUB_200_2011" / "images" / f"{name}.jpg").unlink()
  source = cub.CUB("test", data_dir=partial)  # Only record 0 is checked up front.
  with pytest.raises(cub.DatasetNotFoundError, match=f"missing the caption file .*{name}.txt"):
    source.captions(PER_SPLIT - 1)
  with pytest.raises(cub.DatasetNotFoundError, match=f"missing the image .*{name}.jpg"):
    source.image(PER_SPLIT - 1)


def test_bad_arguments_are_rejected(roots):
  for kwargs in (
    dict(split="val"),
    dict(caption_layout="reed"),
    dict(crop="tight"),
    dict(resolution=64, load_size=32),
  ):
    with pytest.raises(ValueError):
      cub.CUB(**{"data_dir": roots["both"], **kwargs})


def test_make_source_and_batches(roots):
  config = dict(name="cub", data_dir=str(roots["both"]), resolution=32, seed=3)
  source = sources.make_source(config, "train")
  assert isinstance(source, cub.CUB) and (len(source), source.seed) == (PER_SPLIT, 3)
  text = sources.make_source({**config, "caption_layout": "text_c10", "crop": "none"}, "test")
  assert (text.caption_layout, text.crop) == ("text_c10", "none")
  with pipeline.Batches(source, global_batch_size=2, seed=0, prefetch=0) as batches:
    batch = next(batches)
  assert batch["image"].shape == (2, 32, 32, 3) and batch["image"].dtype == np.uint8
  assert batch["label"].dtype == np.int32 and all(isinstance(c, str) for c in batch["caption"])


@pytest.mark.slow
def test_clip_cub_tiny_trains_on_the_fake_tree(roots, tmp_path):
  from configs import clip_cub  # noqa: PLC0415
  from t2i_jax.train import loop  # noqa: PLC0415

  config = clip_cub.get_config("tiny")
  config.data.data_dir = str(roots["both"])
  state = loop.train_and_evaluate(config, str(tmp_path))
  assert int(state.step) == config.train.num_steps
  assert (tmp_path / "export" / "tokenizer.json").exists()  # word vocabulary of CUB captions


def test_char_cnn_rnn_embeddings_follow_the_drawn_caption(roots):
  source = cub.CUB("test", 32, roots["both"], text_embeddings="char_cnn_rnn")
  expected = fake_embeddings(PER_SPLIT)
  for i in range(PER_SPLIT):
    record = source.record(i, draw_seed=5)
    k = source.captions(i).index(record["caption"])  # captions of a fake image are distinct
    np.testing.assert_array_equal(record["text_embedding"], expected[i, k])
  batch = source.get_batch(np.arange(PER_SPLIT), draw_seed=5)
  assert batch["text_embedding"].shape == (PER_SPLIT, expected.shape[-1])
  assert batch["text_embedding"].dtype == np.float32
  assert "text_embedding" not in cub.CUB("test", 32, roots["both"]).get_batch([0])


def test_char_cnn_rnn_embeddings_missing_or_malformed(roots, tmp_path):
  with pytest.raises(cub.DatasetNotFoundError, match=cub.EMBEDDINGS_FILE) as error:
    cub.CUB("train", 32, roots["text_c10"], text_embeddings="char_cnn_rnn")
  assert "StackGAN-Pytorch" in str(error.value)
  root = tmp_path / "copy"
  shutil.copytree(roots["both"], root)
  with open(root / "test" / cub.EMBEDDINGS_FILE, "wb") as f:
    pickle.dump(list(fake_embeddings(PER_SPLIT - 1)), f, protocol=2)
  with pytest.raises(ValueError, match=r"expected \[4 images"):
    cub.CUB("test", 32, root, text_embeddings="char_cnn_rnn")
  with pytest.raises(ValueError, match="text_embeddings"):
    cub.CUB("test", 32, root, text_embeddings="glove")
