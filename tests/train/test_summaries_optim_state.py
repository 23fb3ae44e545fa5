"""Tests for t2i_jax.train.summaries, t2i_jax.train.optim and t2i_jax.train.state."""

import glob
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from PIL import Image

from t2i_jax.train import optim, state, summaries

# --- summaries ----------------------------------------------------------------------------------

BACKGROUND = (24, 24, 24)


def coloured_images(n=6, size=32):
  """n constant-colour images, image i filled with (10 * i + 40, 200 - 10 * i, 7)."""
  colours = np.array([(10 * i + 40, 200 - 10 * i, 7) for i in range(n)], np.uint8)
  return np.broadcast_to(colours[:, None, None, :], (n, size, size, 3)).copy(), colours


def test_to_uint8():
  x = np.array([-1.0, 1.0, 0.0, -2.0, 3.0, -0.999, 0.999], np.float32)
  np.testing.assert_array_equal(summaries.to_uint8(x), [0, 255, 128, 0, 255, 0, 255])
  assert summaries.to_uint8(x).dtype == np.uint8
  assert summaries.to_uint8(jnp.zeros((2, 4, 4, 3))).shape == (2, 4, 4, 3)


def test_image_grid_without_captions():
  images, colours = coloured_images()
  grid = summaries.image_grid(images, columns=4)
  # 32 px cells upscaled x3 (cell_size 96), 2 px padding per side; 6 cells in 2 rows of 4.
  cell = 32 * 3 + 2 * 2
  assert grid.shape == (2 * cell, 4 * cell, 3) and grid.dtype == np.uint8
  for i, colour in enumerate(colours):
    top, left = (i // 4) * cell + 2, (i % 4) * cell + 2
    np.testing.assert_array_equal(
      grid[top : top + 96, left : left + 96], np.broadcast_to(colour, (96, 96, 3))
    )
  # Padding and the two empty cells of the last row are background.
  np.testing.assert_array_equal(grid[0, 0], BACKGROUND)
  np.testing.assert_array_equal(
    grid[cell:, 2 * cell :], np.broadcast_to(BACKGROUND, (cell, 2 * cell, 3))
  )


def test_image_grid_with_captions_adds_a_text_strip():
  images, _ = coloured_images()
  short = summaries.image_grid(images, columns=4, captions=[f"cell {i}" for i in range(6)])
  cell_w = 32 * 3 + 4
  assert short.shape == (2 * (cell_w + 11), 4 * cell_w, 3)  # one 11 px line of text
  strip = short[2 + 96 : 2 + 96 + 11, 2 : 2 + 96]
  assert (strip != BACKGROUND).any()  # something was written
  # A long caption wraps (16 characters per line at this cell width): every cell gets 3 lines.
  long = "a large red circle in the top left"
  wrapped = summaries.image_grid(images, columns=4, captions=[long] + ["x"] * 5)
  assert wrapped.shape == (2 * (cell_w + 33), 4 * cell_w, 3)


def test_image_grid_small_cell_and_one_column():
  images, _ = coloured_images(n=3, size=8)
  grid = summaries.image_grid(images, columns=1, cell_size=16, padding=0)
  assert grid.shape == (3 * 16, 16, 3)
  # Larger images than the cell are not shrunk.
  grid = summaries.image_grid(coloured_images(n=2, size=64)[0], columns=2, cell_size=32)
  assert grid.shape == (64 + 4, 2 * (64 + 4), 3)


def test_image_grid_caption_count_mismatch():
  images, _ = coloured_images()
  with pytest.raises(ValueError, match="6 images but 5 captions"):
    summaries.image_grid(images, columns=4, captions=["c"] * 5)


def test_save_png(tmp_path):
  images, _ = coloured_images(n=2)
  grid = summaries.image_grid(images, columns=2)
  path = tmp_path / "samples" / "step_000001.png"
  summaries.save_png(str(path), grid)
  np.testing.assert_array_equal(np.asarray(Image.open(path)), grid)


def test_format_metrics():
  line = summaries.format_metrics(200, {"train/g_loss": 0.123456, "train/d_loss": 1.21, "a": 3})
  assert line == "step 200 | a 3 | train/d_loss 1.21 | train/g_loss 0.1235"
  assert summaries.format_metrics(5, {}) == "step 5"
  assert summaries.format_metrics(1, {"x": np.float32(2.5e-7)}) == "step 1 | x 2.5e-07"


def test_summary_writer_writes_events(tmp_path):
  logdir = tmp_path / "tensorboard"
  writer = summaries.SummaryWriter(str(logdir))
  writer.scalars(1, {"train/d_loss": 1.5, "train/g_loss": np.float32(0.7)})
  writer.scalars(2, {"train/d_loss": jnp.asarray(1.25)})
  grid = summaries.image_grid(coloured_images(n=2)[0], columns=2)
  writer.image(2, "samples", grid)
  writer.flush()
  writer.close()
  events = glob.glob(str(logdir / "events.out.tfevents.*"))
  assert len(events) == 1
  assert os.path.getsize(events[0]) > grid.size // 100  # holds the (PNG-encoded) image
  with open(events[0], "rb") as f:
    data = f.read()
  assert b"train/d_loss" in data and b"train/g_loss" in data and b"samples" in data


# --- optim --------------------------------------------------------------------------------------

PARAMS = {"w": jnp.array([1.0, -2.0, 3.0]), "b": jnp.array(0.5)}
GRADS = {"w": jnp.array([0.3, -0.4, 1.2]), "b": jnp.array(-0.5)}


def first_update(tx, grads=GRADS, params=PARAMS):
  updates, _ = tx.update(grads, tx.init(params), params)
  return updates


def test_make_optimizer_unknown_name():
  with pytest.raises(ValueError, match=r"'sgd'; valid names: adam, adamw"):
    optim.make_optimizer("sgd")


def test_make_optimizer_adam_first_step_is_lr_times_sign():
  # Bias-corrected Adam's first update is -lr * g / (|g| + eps).
  updates = first_update(optim.make_optimizer("adam", learning_rate=0.1))
  for key in PARAMS:
    np.testing.assert_allclose(updates[key], -0.1 * np.sign(GRADS[key]), rtol=1e-5)


def test_make_optimizer_warmup():
  tx = optim.make_optimizer("adam", learning_rate=0.1, warmup_steps=4)
  opt_state = tx.init(PARAMS)
  sizes = []
  for _ in range(5):
    updates, opt_state = tx.update(GRADS, opt_state, PARAMS)
    sizes.append(float(jnp.abs(updates["w"][0])))
  # Linear from 0 at count 0 to the full rate at count 4 (constant gradients: |Adam step| = lr).
  np.testing.assert_allclose(sizes, [0.0, 0.025, 0.05, 0.075, 0.1], rtol=1e-4, atol=1e-7)


def test_make_optimizer_clipping():
  clip = 1e-10  # far below Adam's eps (1e-8), so the clipped step is visibly smaller
  updates = first_update(optim.make_optimizer("adam", learning_rate=0.1, grad_clip_norm=clip))
  norm = np.sqrt(sum(float(jnp.sum(g**2)) for g in jax.tree.leaves(GRADS)))
  for key in PARAMS:
    clipped = np.asarray(GRADS[key]) * clip / norm
    np.testing.assert_allclose(updates[key], -0.1 * clipped / (np.abs(clipped) + 1e-8), rtol=1e-4)
  # A norm above the gradient's changes nothing.
  loose = first_update(optim.make_optimizer("adam", learning_rate=0.1, grad_clip_norm=100.0))
  plain = first_update(optim.make_optimizer("adam", learning_rate=0.1))
  for key in PARAMS:
    np.testing.assert_allclose(loose[key], plain[key], rtol=1e-6)


def test_make_optimizer_adamw_weight_decay():
  zeros = jax.tree.map(jnp.zeros_like, GRADS)
  updates = first_update(optim.make_optimizer("adamw", 0.1, weight_decay=0.01), grads=zeros)
  for key in PARAMS:
    np.testing.assert_allclose(updates[key], -0.1 * 0.01 * np.asarray(PARAMS[key]), rtol=1e-5)
  # Plain Adam ignores weight_decay.
  updates = first_update(optim.make_optimizer("adam", 0.1, weight_decay=0.01), grads=zeros)
  assert all(float(jnp.abs(u).max()) == 0.0 for u in jax.tree.leaves(updates))


def test_make_optimizer_warmup_and_clipping_under_jit():
  tx = optim.make_optimizer("adamw", 0.1, weight_decay=0.01, warmup_steps=2, grad_clip_norm=1.0)

  @jax.jit
  def step(params, opt_state):
    updates, opt_state = tx.update(GRADS, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  params, opt_state = PARAMS, tx.init(PARAMS)
  for _ in range(3):
    params, opt_state = step(params, opt_state)
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(params))
  assert not np.array_equal(params["w"], PARAMS["w"])


# --- state --------------------------------------------------------------------------------------


def test_ema_decay_at():
  def decay(t, d=0.999):
    return float(state.ema_decay_at(jnp.asarray(t, jnp.int32), d))

  assert decay(0) == pytest.approx(0.1)
  assert decay(1) == pytest.approx(2 / 11)
  assert decay(90) == pytest.approx(91 / 100)
  assert decay(1_000_000) == pytest.approx(0.999)
  assert decay(0, 0.05) == pytest.approx(0.05)  # the warm-up never exceeds the decay
  assert decay(10**6, 0.0) == 0.0
  values = [decay(t) for t in range(0, 20_000, 500)]
  assert values == sorted(values)  # non-decreasing


def test_ema_update_math():
  ema = {"a": jnp.array([1.0, 2.0]), "b": {"c": jnp.array(-1.0)}}
  params = {"a": jnp.array([3.0, 2.0]), "b": {"c": jnp.array(1.0)}}
  out = state.ema_update(ema, params, jnp.asarray(0), 0.999)  # decay 0.1 at step 0
  np.testing.assert_allclose(out["a"], [0.1 * 1 + 0.9 * 3, 2.0], rtol=1e-6)
  np.testing.assert_allclose(out["b"]["c"], 0.1 * -1 + 0.9 * 1, rtol=1e-6)
  late = state.ema_update(ema, params, jnp.asarray(10**6), 0.9)
  np.testing.assert_allclose(late["a"], [0.9 * 1 + 0.1 * 3, 2.0], rtol=1e-6)
  copied = state.ema_update(ema, params, jnp.asarray(10**6), 0.0)
  np.testing.assert_array_equal(copied["a"], params["a"])
  np.testing.assert_array_equal(copied["b"]["c"], params["b"]["c"])


def test_network_state_create_and_variables():
  tx = optax.sgd(1.0)
  variables = {"params": {"w": jnp.ones((2,))}, "batch_stats": {"mean": jnp.zeros((2,))}}
  ns = state.NetworkState.create(variables, tx)
  assert ns.params is variables["params"] and ns.batch_stats is variables["batch_stats"]
  assert jax.tree.structure(ns.opt_state) == jax.tree.structure(tx.init(variables["params"]))
  assert set(ns.variables()) == {"params", "batch_stats"}
  other = {"w": jnp.full((2,), 7.0)}
  assert ns.variables(other)["params"] is other
  assert ns.variables()["params"] is ns.params
  # Without BatchNorm there is no batch_stats collection to pass to apply.
  bare = state.NetworkState.create({"params": {"w": jnp.ones((2,))}}, tx)
  assert bare.batch_stats == {} and set(bare.variables()) == {"params"}


def test_network_state_apply_gradients():
  tx = optax.adam(0.1)
  variables = {"params": {"w": jnp.array([1.0, 2.0])}, "batch_stats": {"mean": jnp.zeros((2,))}}
  ns = state.NetworkState.create(variables, tx)
  grads = {"w": jnp.array([1.0, -1.0])}
  kept = ns.apply_gradients(grads, tx)
  np.testing.assert_allclose(kept.params["w"], [0.9, 2.1], rtol=1e-5)
  assert kept.batch_stats is ns.batch_stats
  assert int(kept.opt_state[0].count) == 1 and int(ns.opt_state[0].count) == 0
  new_stats = {"mean": jnp.ones((2,))}
  replaced = ns.apply_gradients(grads, tx, batch_stats=new_stats)
  assert replaced.batch_stats is new_stats
  np.testing.assert_array_equal(ns.params["w"], [1.0, 2.0])  # the original is unchanged


def test_network_state_is_a_pytree_under_jit():
  tx = optax.sgd(0.5)
  ns = state.NetworkState.create({"params": {"w": jnp.array([1.0, 2.0])}}, tx)
  step = jax.jit(lambda s, g: s.apply_gradients(g, tx))
  out = step(ns, {"w": jnp.array([2.0, 2.0])})
  assert isinstance(out, state.NetworkState)
  np.testing.assert_allclose(out.params["w"], [0.0, 1.0])


def test_make_optimizer_halves_the_rate_every_n_steps_after_warmup():
  tx = optim.make_optimizer("adam", learning_rate=0.1, warmup_steps=2, halve_every_steps=3)
  opt_state = tx.init(PARAMS)
  sizes = []
  for _ in range(9):
    updates, opt_state = tx.update(GRADS, opt_state, PARAMS)
    sizes.append(float(jnp.abs(updates["w"][0])))
  # Warm-up 0, 0.05; then 0.1 for 3 steps, 0.05 for 3, 0.025 (StackGAN's step decay).
  expected = [0.0, 0.05, 0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025]
  np.testing.assert_allclose(sizes, expected, rtol=1e-4, atol=1e-7)
  with pytest.raises(ValueError, match="must be >= 0"):
    optim.make_optimizer("adam", halve_every_steps=-1)
