"""Tests for t2i_jax.gan.steps and t2i_jax.gan.task on the tiny captioned-shapes config.

Each condition ("none", "label", "text") compiles init and train_step once (module-scoped
fixtures); eval_step and sample compile once, for the text model only. Config errors are checked
with jax.eval_shape or at build time, which trace without compiling.
"""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import cgan_shapes
from t2i_jax.data import shapes
from t2i_jax.gan import steps, task
from t2i_jax.gan.losses import LOSS_KINDS
from t2i_jax.models import GANS

CONDITIONS = ("none", "label", "text")
BATCH_SIZE = 8
TRAIN_KEYS = {
  "train/d_loss",
  "train/g_loss",
  "train/d_real_accuracy",
  "train/d_fake_accuracy",
  "train/d_of_g_z",
}
EVAL_KEYS = {
  "eval/d_accuracy_real",
  "eval/d_accuracy_fake",
  "eval/d_precision",
  "eval/d_recall",
  "eval/d_f1",
  "eval/d_loss",
}


def tiny_config(condition="text", **model_overrides):
  config = cgan_shapes.get_config("tiny")
  config.model.condition = condition
  config.model.update(model_overrides)
  return config


def host_batch(resolution=32, start=0):
  """A source batch as the pipeline hands it to `preprocess` (numpy arrays, captions as objects)."""
  raw = shapes.CaptionedShapes(resolution=resolution).get_batch(range(start, start + BATCH_SIZE))
  captions = np.empty(BATCH_SIZE, dtype=object)
  captions[:] = raw["caption"]
  return {"image": raw["image"], "caption": captions, "label": raw["label"].astype(np.int32)}


def leaves(tree):
  return [np.asarray(x) for x in jax.tree.leaves(jax.device_get(tree))]


def trees_equal(a, b):
  la, lb = leaves(a), leaves(b)
  return len(la) == len(lb) and all(np.array_equal(x, y) for x, y in zip(la, lb, strict=True))


def changed_fraction(before, after):
  pairs = list(zip(leaves(before), leaves(after), strict=True))
  return sum(not np.array_equal(x, y) for x, y in pairs) / len(pairs)


@dataclasses.dataclass
class Run:
  condition: str
  task: object
  state: object  # after init
  batch: dict
  new_state: object  # after one train step
  metrics: dict
  again: tuple  # (state, metrics) of the same step run a second time


@pytest.fixture(scope="module", params=CONDITIONS)
def run(request):
  """Init and one train step per condition (each jitted function compiled once)."""
  condition = request.param
  gan = task.build_gan_task(tiny_config(condition))
  state = jax.jit(lambda rng: nn.unbox(gan.init(rng)))(jax.random.key(0))
  batch = gan.preprocess(host_batch())
  train_step = jax.jit(gan.train_step)
  rng = jax.random.key(1)
  new_state, metrics = train_step(state, batch, rng)
  again = train_step(state, batch, rng)
  return Run(condition, gan, state, batch, new_state, jax.device_get(metrics), again)


@pytest.fixture(scope="module")
def text_run():
  """The text model's init state and batch, for eval_step and sample (compiled once each)."""
  gan = task.build_gan_task(tiny_config("text"))
  state = jax.jit(lambda rng: nn.unbox(gan.init(rng)))(jax.random.key(0))
  return gan, state, gan.preprocess(host_batch(start=100))


# --- preprocess and init ------------------------------------------------------------------------


def test_preprocess_keeps_only_what_the_steps_take(run):
  want = {"none": {"image"}, "label": {"image", "label"}, "text": {"image", "tokens"}}
  assert set(run.batch) == want[run.condition]
  assert run.batch["image"].shape == (BATCH_SIZE, 32, 32, 3)
  assert run.batch["image"].dtype == np.uint8
  if run.condition == "label":
    assert run.batch["label"].dtype == np.int32
  if run.condition == "text":
    tokens = run.batch["tokens"]
    assert tokens.shape == (BATCH_SIZE, tiny_config().data.max_caption_length)
    assert np.issubdtype(tokens.dtype, np.integer)
    assert len({tuple(row) for row in tokens}) > 1  # different captions, different tokens


def test_init_state(run):
  state = run.state
  assert int(state.step) == 0
  assert trees_equal(state.ema_params, state.generator.params)
  # Unboxed: no LogicallyPartitioned wrappers left, every leaf a float32 array.
  for leaf in jax.tree.leaves(state):
    assert isinstance(leaf, jax.Array)
  for leaf in jax.tree.leaves(state.generator.params) + jax.tree.leaves(state.discriminator.params):
    assert leaf.dtype == jnp.float32
  assert state.generator.batch_stats and state.discriminator.batch_stats
  g_params = state.generator.params
  if run.condition == "label":
    assert "label_embed" in g_params
  if run.condition == "text":
    assert "text_encoder" in g_params and "text_encoder" in state.discriminator.params
  if run.condition == "none":
    assert "label_embed" not in g_params and "text_encoder" not in g_params


# --- train_step ---------------------------------------------------------------------------------


def test_train_step_increments_step_and_updates_both_networks(run):
  old, new = run.state, run.new_state
  assert int(new.step) == 1
  for name in ("generator", "discriminator"):
    before, after = getattr(old, name), getattr(new, name)
    # Adam moves every param that got a gradient; embedding rows of unused labels get none.
    assert changed_fraction(before.params, after.params) > 0.5, name
    assert changed_fraction(before.batch_stats, after.batch_stats) == 1.0, name
    assert not trees_equal(before.opt_state, after.opt_state), name


def test_train_step_ema_is_warmed_up_average(run):
  # At step 0 the warmed-up decay is min(0.999, 1 / 10) = 0.1.
  old, new = run.state, run.new_state
  want = jax.tree.map(lambda e, p: 0.1 * e + 0.9 * p, old.ema_params, new.generator.params)
  for got, expected in zip(leaves(new.ema_params), leaves(want), strict=True):
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
  assert not trees_equal(new.ema_params, new.generator.params)


def test_train_step_metrics(run):
  metrics = run.metrics
  want = TRAIN_KEYS | ({"train/d_mismatch_accuracy"} if run.condition != "none" else set())
  assert set(metrics) == want
  for key, value in metrics.items():
    assert np.shape(value) == (), key
    assert np.isfinite(value), key
  for key in want - {"train/d_loss", "train/g_loss"}:
    assert 0.0 <= metrics[key] <= 1.0, key
  assert metrics["train/d_loss"] > 0 and metrics["train/g_loss"] > 0
  # Accuracies are over 8 examples: multiples of 1/8.
  for key in ("train/d_real_accuracy", "train/d_fake_accuracy"):
    assert float(metrics[key] * BATCH_SIZE) == pytest.approx(round(metrics[key] * BATCH_SIZE))


def test_train_step_is_deterministic(run):
  state, metrics = run.again
  assert trees_equal(state, run.new_state)
  assert {k: float(v) for k, v in jax.device_get(metrics).items()} == {
    k: float(v) for k, v in run.metrics.items()
  }


# --- _mismatched --------------------------------------------------------------------------------


def test_mismatched_labels():
  labels = jnp.array([1, 1, 2, 3, 3], jnp.int32)
  wrong, weight = steps._mismatched(labels)
  np.testing.assert_array_equal(wrong, [3, 1, 1, 2, 3])
  np.testing.assert_array_equal(weight, [1.0, 0.0, 1.0, 1.0, 0.0])
  assert weight.dtype == jnp.float32


def test_mismatched_token_rows():
  tokens = jnp.array([[5, 6, 2, 0], [5, 6, 2, 0], [5, 7, 2, 0], [5, 6, 2, 0]], jnp.int32)
  wrong, weight = steps._mismatched(tokens)
  np.testing.assert_array_equal(wrong, np.roll(np.asarray(tokens), 1, axis=0))
  # Row 1 gets row 0 (identical) and row 0 gets row 3 (identical): both must not count.
  np.testing.assert_array_equal(weight, [0.0, 0.0, 1.0, 1.0])


def test_mismatched_all_equal_gives_zero_weight():
  _, weight = steps._mismatched(jnp.full((4,), 7, jnp.int32))
  np.testing.assert_array_equal(weight, np.zeros(4))


@pytest.mark.parametrize("condition", CONDITIONS)
def test_discriminate_keys_and_shapes(condition):
  gan = task.build_gan_task(tiny_config(condition))
  setup = gan.train_step.keywords["setup"]
  state = jax.eval_shape(lambda rng: nn.unbox(gan.init(rng)), jax.random.key(0))
  batch = gan.preprocess(host_batch())
  real = steps.to_float_images(batch["image"])
  cond = steps.condition_of(batch, condition)
  logits, stats = jax.eval_shape(
    lambda v: steps.discriminate(setup, v, real, real, cond), state.discriminator.variables()
  )
  want = {"real", "fake"} | ({"mismatch", "mismatch_weight"} if condition != "none" else set())
  assert set(logits) == want
  assert all(v.shape == (BATCH_SIZE,) for v in logits.values())
  assert jax.tree.structure(stats) == jax.tree.structure(state.discriminator.batch_stats)


# --- eval_step, finalize_eval, sample ----------------------------------------------------------


def test_eval_step_and_finalize(text_run):
  gan, state, batch = text_run
  sums = jax.device_get(jax.jit(gan.eval_step)(state, batch, jax.random.key(3)))
  assert set(sums) == {
    "true_pos",
    "false_neg",
    "false_pos",
    "true_neg",
    "d_loss_sum",
    "num_examples",
    "mismatch_correct",
    "mismatch_total",
  }
  assert float(sums["true_pos"] + sums["false_neg"]) == BATCH_SIZE
  assert float(sums["false_pos"] + sums["true_neg"]) == BATCH_SIZE
  assert float(sums["num_examples"]) == BATCH_SIZE
  assert 0 < float(sums["mismatch_total"]) <= BATCH_SIZE
  assert 0 <= float(sums["mismatch_correct"]) <= float(sums["mismatch_total"])
  results = gan.finalize_eval({k: float(v) for k, v in sums.items()})
  assert set(results) == EVAL_KEYS | {"eval/d_mismatch_accuracy"}
  for key, value in results.items():
    assert np.isfinite(value), key
    if key != "eval/d_loss":
      assert 0.0 <= value <= 1.0, key
  assert results["eval/d_loss"] > 0


def test_finalize_eval_by_hand():
  sums = dict(
    true_pos=3.0,
    false_neg=1.0,
    false_pos=2.0,
    true_neg=2.0,
    d_loss_sum=6.0,
    num_examples=4.0,
  )
  results = steps.finalize_eval(sums)
  assert set(results) == EVAL_KEYS
  want = {
    "eval/d_accuracy_real": 0.75,
    "eval/d_accuracy_fake": 0.5,
    "eval/d_precision": 0.6,
    "eval/d_recall": 0.75,
    "eval/d_f1": 2 * 0.6 * 0.75 / 1.35,
    "eval/d_loss": 1.5,
  }
  for key, value in want.items():
    assert results[key] == pytest.approx(value, rel=1e-6), key
  with_mismatch = steps.finalize_eval(sums | dict(mismatch_correct=3.0, mismatch_total=4.0))
  assert with_mismatch["eval/d_mismatch_accuracy"] == pytest.approx(0.75)


def test_finalize_eval_empty_sums_are_zero_not_nan():
  zeros = dict.fromkeys(
    ["true_pos", "false_neg", "false_pos", "true_neg", "d_loss_sum", "num_examples"], 0.0
  )
  results = steps.finalize_eval(zeros | dict(mismatch_correct=0.0, mismatch_total=0.0))
  assert all(value == 0.0 for value in results.values()), results


def test_sample_shape_and_range(text_run):
  gan, state, _ = text_run
  images = np.asarray(jax.jit(gan.sample)(state, gan.sample_inputs, jax.random.key(0)))
  n = len(gan.sample_inputs["z"])
  assert n == 32
  assert images.shape == (n, 32, 32, 3) and images.dtype == np.float32
  assert np.all(np.isfinite(images)) and images.min() >= -1.0 and images.max() <= 1.0
  assert gan.sample_captions is not None and len(gan.sample_captions) == n


@pytest.mark.parametrize("condition", CONDITIONS)
def test_sample_inputs_and_grid(condition):
  gan = task.build_gan_task(tiny_config(condition))
  inputs = gan.sample_inputs
  n = 64 if condition == "none" else 32
  assert inputs["z"].shape == (n, tiny_config().model.nz) and inputs["z"].dtype == np.float32
  _, labels = task.shapes_grid_prompts()
  if condition == "none":
    assert set(inputs) == {"z"} and gan.sample_captions is None and gan.grid_columns == 8
    assert gan.evaluate_samples is None
  else:
    assert gan.grid_columns == len(shapes.SHAPES) and len(gan.sample_captions) == n
    assert gan.evaluate_samples is not None
  if condition == "label":
    np.testing.assert_array_equal(inputs["label"], labels)
    assert gan.sample_captions[:2] == ["red circle", "red square"]
  if condition == "text":
    assert inputs["tokens"].shape == (n, tiny_config().data.max_caption_length)
  # Fixed by the seed: building twice gives the same noise.
  np.testing.assert_array_equal(
    task.build_gan_task(tiny_config(condition)).sample_inputs["z"], inputs["z"]
  )


def test_sample_shape_unconditional_traced():
  gan = task.build_gan_task(tiny_config("none"))
  state = jax.eval_shape(lambda rng: nn.unbox(gan.init(rng)), jax.random.key(0))
  images = jax.eval_shape(gan.sample, state, gan.sample_inputs, jax.random.key(0))
  assert images.shape == (64, 32, 32, 3)


def test_evaluate_samples_on_real_images():
  gan = task.build_gan_task(tiny_config("label"))
  captions, _ = task.shapes_grid_prompts()
  images = np.stack([shapes.render(shapes.parse_caption(c), 32) for c in captions])
  results = gan.evaluate_samples(images)
  assert results == {
    "eval/samples_color_accuracy": 1.0,
    "eval/samples_shape_accuracy": 1.0,
    "eval/samples_color_and_shape_accuracy": 1.0,
  }


# --- shapes_grid_prompts ------------------------------------------------------------------------


def test_shapes_grid_prompts():
  captions, labels = task.shapes_grid_prompts()
  assert len(captions) == len(labels) == len(shapes.COLORS) * len(shapes.SHAPES) == 32
  assert len(set(captions)) == 32
  assert labels == list(range(32))  # rows colours, columns shapes
  for i, (caption, label) in enumerate(zip(captions, labels, strict=True)):
    objects = shapes.parse_caption(caption)
    assert len(objects) == 1
    assert objects[0]["color"] == shapes.COLORS[i // len(shapes.SHAPES)]
    assert objects[0]["shape"] == shapes.SHAPES[i % len(shapes.SHAPES)]
    assert objects[0]["size"] == "large"
    assert shapes.label_of(objects) == label
  # Held-out pairs are in the grid on purpose.
  pairs = {(o["color"], o["shape"]) for c in captions for o in shapes.parse_caption(c)}
  assert set(shapes.DEFAULT_HELDOUT_PAIRS) <= pairs


# --- config errors ------------------------------------------------------------------------------


def test_unknown_condition_names_valid_ones():
  with pytest.raises(ValueError, match=r"'bogus'.*none, label, text"):
    task.build_gan_task(tiny_config("bogus"))


def test_unknown_model_name_names_valid_ones():
  with pytest.raises(ValueError, match=r"'bogus'.*" + ", ".join(GANS)):
    task.build_gan_task(tiny_config("label", name="bogus"))


def test_unknown_text_encoder_names_valid_ones():
  config = tiny_config("text")
  config.model.text_encoder.name = "bogus"
  with pytest.raises(ValueError, match=r"'bogus'.*word"):
    task.build_gan_task(config)


def test_text_condition_needs_captions():
  config = tiny_config("text")
  config.data.name = "celeba"
  with pytest.raises(ValueError, match=r"'celeba'.*none.*label"):
    task.build_gan_task(config)


def test_label_condition_needs_labels():
  config = tiny_config("label")
  config.data.name = "celeba"
  with pytest.raises(ValueError, match=r"'celeba'"):
    task.build_gan_task(config)


def test_unknown_loss_raises_by_the_first_step():
  # The loss kind is checked when the step is traced (build_gan_task does not check it).
  try:
    gan = task.build_gan_task(tiny_config("label", loss="bogus"))
  except ValueError as error:
    assert "nonsaturating" in str(error) and "hinge" in str(error)
    return
  state = jax.eval_shape(lambda rng: nn.unbox(gan.init(rng)), jax.random.key(0))
  batch = gan.preprocess(host_batch())
  with pytest.raises(ValueError, match=r"'bogus'.*nonsaturating.*hinge"):
    jax.eval_shape(gan.train_step, state, batch, jax.random.key(0))
  with pytest.raises(ValueError, match=r"'bogus'.*nonsaturating.*hinge"):
    jax.eval_shape(gan.eval_step, state, batch, jax.random.key(0))


@pytest.mark.parametrize("loss", LOSS_KINDS)
def test_every_loss_kind_traces(loss):
  gan = task.build_gan_task(tiny_config("label", loss=loss))
  state = jax.eval_shape(lambda rng: nn.unbox(gan.init(rng)), jax.random.key(0))
  new_state, metrics = jax.eval_shape(
    gan.train_step, state, gan.preprocess(host_batch()), jax.random.key(0)
  )
  assert jax.tree.structure(new_state) == jax.tree.structure(state)
  assert all(m.shape == () for m in metrics.values())


def test_train_step_with_per_example_discriminator_norm():
  """d_norm="none" scores real, fake and mismatched images as one batch (one D call)."""
  gan = task.build_gan_task(tiny_config("label", d_norm="none"))
  state = jax.jit(lambda r: nn.unbox(gan.init(r)))(jax.random.key(0))
  assert not state.discriminator.batch_stats
  batch = {k: jnp.asarray(v) for k, v in gan.preprocess(host_batch()).items()}
  new_state, metrics = jax.jit(gan.train_step)(state, batch, jax.random.key(1))
  assert int(new_state.step) == 1
  assert all(np.isfinite(float(v)) for v in metrics.values())
