"""StackGAN on a fake CUB-200-2011 tree in the real layout (tests/fake_cub.py): both stages with
StackGAN's char-CNN-RNN embeddings, Stage I with a CUB CLIP, and the missing-data message."""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from child_process import run_python
from fake_cub import EMBED_DIM, build_fake_cub

from configs import clip_cub, stackgan_cub
from t2i_jax.clip import export
from t2i_jax.clip.task import clip_kwargs_from_config, make_tokenizer
from t2i_jax.gan import stackgan_task
from t2i_jax.models.clip import CLIP
from t2i_jax.train import loop
from t2i_jax.train.families import build_task
from t2i_jax.train.task import UnsupportedPromptsError


@pytest.fixture(scope="module")
def cub_root(tmp_path_factory):
  return build_fake_cub(tmp_path_factory)["both"]


def char_cnn_rnn_config(root, variant="tiny"):
  config = stackgan_cub.get_config(variant)
  config.data.update(data_dir=str(root), text_embeddings="char_cnn_rnn")
  config.model.text_encoder.name = "char_cnn_rnn"
  return config


def test_char_cnn_rnn_cannot_generate_for_arbitrary_captions(cub_root):
  task = build_task(char_cnn_rnn_config(cub_root))
  with pytest.raises(UnsupportedPromptsError, match="needs a CLIP text encoder"):
    task.prompt_inputs(["a bird with a red crown"], 0)


@pytest.mark.slow
def test_both_stages_train_with_char_cnn_rnn_embeddings(cub_root, tmp_path):
  config = char_cnn_rnn_config(cub_root)
  assert stackgan_task._halve_every_steps(config) == 1  # 1 epoch = 4 images / batch 4
  state = loop.train_and_evaluate(config, str(tmp_path / "s1"))
  assert int(state.step) == 2
  record = json.loads((tmp_path / "s1" / "export" / stackgan_task.STAGE1_CONFIG_FILE).read_text())
  assert record["embed_dim"] == EMBED_DIM and record["text_encoder"]["name"] == "char_cnn_rnn"

  config = char_cnn_rnn_config(cub_root, "stage2_tiny")
  config.model.stage1_checkpoint = str(tmp_path / "s1")
  task = build_task(config)
  assert task.sample_inputs["text_embedding"].shape == (4, EMBED_DIM)  # 4 test images
  state = loop.train_and_evaluate(config, str(tmp_path / "s2"))
  assert int(state.step) == 2 and (tmp_path / "s2" / "samples" / "step_000002.png").exists()
  images = jax.jit(task.sample)(state, task.sample_inputs, jax.random.key(0))
  assert images.shape == (8, 256, 256, 3) and np.isfinite(images).all()


def test_stage1_with_a_cub_clip(cub_root, tmp_path):
  clip_config = clip_cub.get_config("tiny")
  clip_config.data.data_dir = str(cub_root)
  tokenizer = make_tokenizer(clip_config)  # word vocabulary of the train captions
  kwargs = clip_kwargs_from_config(clip_config, tokenizer)
  tokens = jnp.ones((1, kwargs["context_length"]), jnp.int32)
  images = jnp.zeros((1, kwargs["image_size"], kwargs["image_size"], 3))
  params = nn.unbox(CLIP(**kwargs).init(jax.random.key(0), tokens, images))["params"]
  export.save_clip(str(tmp_path / "clip"), kwargs, params, tokenizer)

  config = stackgan_cub.get_config("tiny")
  config.data.data_dir = str(cub_root)
  config.model.text_encoder.checkpoint = str(tmp_path / "clip")
  task = build_task(config)
  assert task.sample_captions and all(isinstance(c, str) for c in task.sample_captions)
  state = loop.train_and_evaluate(config, str(tmp_path / "s1"))
  assert int(state.step) == 2 and (tmp_path / "s1" / "export").is_dir()


def test_missing_cub_is_one_clear_message_from_the_cli(tmp_path):
  result = run_python(
    [
      "-m",
      "experiments.train",
      "--config=configs/stackgan_cub.py",
      f"--workdir={tmp_path / 'run'}",
      f"--config.data.data_dir={tmp_path / 'birds'}",
    ],
    timeout=120,
  )
  assert result.returncode == 1
  assert "CUB-200-2011 is not usable" in result.stderr
  assert "Expected layout" in result.stderr and "text_c10/" in result.stderr
  assert "vision.caltech.edu" in result.stderr and "AttnGAN" in result.stderr
  assert "--config.data.data_dir" in result.stderr
  assert "Traceback" not in result.stderr
  assert not (tmp_path / "run" / "checkpoints").exists()
