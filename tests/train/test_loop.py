"""train_and_evaluate end to end on tiny configs: outputs, resume, signals, bad inputs."""

import glob
import os
import signal

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from child_process import run_python

from configs import cgan_shapes, dcgan_celeba, dcgan_shapes
from t2i_jax.gan import steps as gan_steps
from t2i_jax.train import checkpoint, loop, summaries


def tiny_cgan(num_steps=6):
  config = cgan_shapes.get_config("tiny")
  config.train.update(num_steps=num_steps, log_every=1, eval_every=4, ckpt_every=2)
  return config


def leaves(state):
  return [np.asarray(x) for x in jax.tree.leaves(jax.device_get(state))]


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("straight"))
  return loop.train_and_evaluate(tiny_cgan(), workdir), workdir


def test_run_writes_checkpoints_events_samples(straight_run):
  state, workdir = straight_run
  assert int(state.step) == 6
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["4", "6"]  # keep 2
  assert glob.glob(os.path.join(workdir, "tensorboard", "events.out.tfevents.*"))
  assert sorted(os.listdir(os.path.join(workdir, "samples"))) == [
    "step_000004.png",
    "step_000006.png",
  ]
  assert os.path.exists(os.path.join(workdir, "config.json"))
  assert os.path.exists(os.path.join(workdir, "tokenizer.json"))


def test_signal_saves_and_resume_is_bit_identical(straight_run, tmp_path, monkeypatch):
  straight_state, _ = straight_run
  workdir = str(tmp_path)
  log_metrics = summaries.log_metrics

  def log_and_terminate_at_step_3(step, metrics):
    log_metrics(step, metrics)
    if step == 3 and "train/d_loss" in metrics:
      os.kill(os.getpid(), signal.SIGTERM)  # as a scheduler's preemption notice would

  monkeypatch.setattr(summaries, "log_metrics", log_and_terminate_at_step_3)
  interrupted = loop.train_and_evaluate(tiny_cgan(), workdir)
  assert int(interrupted.step) == 3
  assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handler removed again
  assert "3" in os.listdir(os.path.join(workdir, "checkpoints"))
  monkeypatch.undo()

  resumed = loop.train_and_evaluate(tiny_cgan(), workdir)
  assert int(resumed.step) == 6
  for a, b in zip(leaves(straight_state), leaves(resumed), strict=True):
    np.testing.assert_array_equal(a, b)


def test_nonfinite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
  train_step = gan_steps.train_step

  def diverging_train_step(state, batch, rng, *, setup):
    new_state, metrics = train_step(state, batch, rng, setup=setup)
    blown_up = jnp.where(state.step >= 4, jnp.nan, 1.0)  # the 5th step's loss is NaN
    return new_state, metrics | {"train/d_loss": metrics["train/d_loss"] * blown_up}

  monkeypatch.setattr(gan_steps, "train_step", diverging_train_step)
  config = tiny_cgan(num_steps=10)
  config.train.update(log_every=3, ckpt_every=2, eval_every=100)
  with pytest.raises(loop.NonFiniteLossError) as error:
    loop.train_and_evaluate(config, str(tmp_path))
  message = str(error.value)
  assert "Non-finite training metrics at step 5" in message
  assert "last good checkpoint (step 4)" in message
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2", "4"]


def test_resume_with_another_model_is_a_clear_error(straight_run):
  _, workdir = straight_run
  before = sorted(os.listdir(os.path.join(workdir, "checkpoints")))
  config = tiny_cgan()
  config.model.g_width = 16
  with pytest.raises(
    checkpoint.CheckpointMismatchError, match=r"shape mismatch at ema_params\.project\.kernel"
  ):
    loop.train_and_evaluate(config, workdir)
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == before


@pytest.mark.slow
@pytest.mark.parametrize("config_module", [dcgan_shapes, dcgan_celeba], ids=lambda m: m.__name__)
def test_tiny_variant_trains(config_module, tmp_path):
  config = config_module.get_config("tiny")
  state = loop.train_and_evaluate(config, str(tmp_path))
  assert int(state.step) == config.train.num_steps
  assert str(config.train.num_steps) in os.listdir(tmp_path / "checkpoints")
  assert f"step_{config.train.num_steps:06d}.png" in os.listdir(tmp_path / "samples")
  assert glob.glob(str(tmp_path / "tensorboard" / "events.out.tfevents.*"))


def test_unknown_config_key_names_the_valid_keys(tmp_path):
  result = run_python(
    [
      "-m",
      "experiments.train",
      "--config=configs/cgan_shapes.py:tiny",
      f"--workdir={tmp_path}",
      "--config.train.num_stepz=3",
    ],
    timeout=120,
  )
  assert result.returncode != 0
  assert "num_stepz" in result.stderr and "num_steps" in result.stderr
  assert not os.listdir(tmp_path)


@pytest.mark.slow
def test_dcgan_celeba_trains_on_mock_tfds(tmp_path):
  """The real CelebA config path (TFDS data source, centre crop) with TFDS's offline mock data."""
  import tensorflow_datasets as tfds  # noqa: PLC0415

  config = dcgan_celeba.get_config("tiny")
  config.data.update(name="celeba", eval_split="validation", data_dir=str(tmp_path / "tfds"))
  with tfds.testing.mock_data(num_examples=16):
    state = loop.train_and_evaluate(config, str(tmp_path / "run"))
  assert int(state.step) == config.train.num_steps
  assert os.listdir(tmp_path / "run" / "samples")


def test_missing_celeba_is_one_clear_error(tmp_path):
  config = dcgan_celeba.get_config()
  config.data.data_dir = str(tmp_path / "empty")
  with pytest.raises(FileNotFoundError, match="celeb_a") as error:
    loop.train_and_evaluate(config, str(tmp_path / "run"))
  assert "downloads/manual" in str(error.value)
  assert not os.path.exists(tmp_path / "run" / "checkpoints")


def test_cli_prints_user_errors_without_traceback(tmp_path):
  result = run_python(
    [
      "-m",
      "experiments.train",
      "--config=configs/dcgan_celeba.py",
      f"--workdir={tmp_path / 'run'}",
      f"--config.data.data_dir={tmp_path / 'empty'}",
    ],
    timeout=120,
  )
  assert result.returncode == 1
  assert "error: TFDS dataset `celeb_a`" in result.stderr
  assert "Traceback" not in result.stderr
