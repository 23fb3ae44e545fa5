"""The same training on 8 fake devices and on 2 processes (jax.distributed) as on 1 device."""

import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest
from child_process import REPO_ROOT, run_python, subprocess_env

from configs import cgan_shapes
from t2i_jax.train import loop

MAIN = "tests/train/tiny_run_main.py"
OVERRIDES = [
  "--config.train.num_steps=3",
  "--config.train.eval_every=3",
  "--config.train.log_every=1",
]


def tiny_config():
  config = cgan_shapes.get_config("tiny")
  config.train.update(num_steps=3, eval_every=3, log_every=1)
  return config


@pytest.fixture(scope="module")
def one_device_leaves(tmp_path_factory):
  state = loop.train_and_evaluate(tiny_config(), str(tmp_path_factory.mktemp("one_device")))
  return [np.asarray(x) for x in jax.tree.leaves(jax.device_get(state))]


def load_leaves(path):
  with np.load(path) as data:
    return [data[f"arr_{i}"] for i in range(len(data.files))]


def assert_close(expected, actual):
  assert len(expected) == len(actual)
  for a, b in zip(expected, actual, strict=True):
    np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-4)


@pytest.mark.slow
@pytest.mark.parametrize("rules", ["data_parallel", "fsdp"])
def test_eight_devices_match_one(one_device_leaves, tmp_path, rules):
  args = [MAIN, "--config=configs/cgan_shapes.py:tiny", f"--workdir={tmp_path / 'w'}"]
  args += [f"--out={tmp_path / 'p.npz'}", *OVERRIDES]
  if rules == "fsdp":
    args.append(
      "--config.sharding_rules=(('batch','data'),('conv_out','data'),('mlp','data'),"
      "('vocab','data'))"
    )
  result = run_python(args, num_devices=8, timeout=400)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "DEVICES 8 PROCESSES 1" in result.stdout
  sharded = int(result.stdout.split("SHARDED_LEAVES")[1].split()[0])
  assert (sharded > 0) == (rules == "fsdp")
  assert_close(one_device_leaves, load_leaves(tmp_path / "p.npz"))


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_agree(one_device_leaves, tmp_path):
  port = free_port()
  procs = []
  for process_id in range(2):
    args = [MAIN, "--config=configs/cgan_shapes.py:tiny", f"--workdir={tmp_path / 'w'}"]
    args += [f"--out={tmp_path / f'p{process_id}.npz'}", *OVERRIDES]
    args += [
      "--config.distributed.enabled=True",
      f"--config.distributed.coordinator_address=127.0.0.1:{port}",
      "--config.distributed.num_processes=2",
      f"--config.distributed.process_id={process_id}",
      "--config.distributed.initialization_timeout=60",
    ]
    procs.append(
      subprocess.Popen(
        [sys.executable, *args],
        cwd=REPO_ROOT,
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
      )
    )
  outputs = []
  try:
    for proc in procs:
      outputs.append(proc.communicate(timeout=400))
  finally:
    for proc in procs:
      proc.kill()
  for proc, (out, err) in zip(procs, outputs, strict=True):
    assert proc.returncode == 0, err[-3000:]
    assert "DEVICES 2 PROCESSES 2" in out
  first, second = load_leaves(tmp_path / "p0.npz"), load_leaves(tmp_path / "p1.npz")
  for a, b in zip(first, second, strict=True):
    np.testing.assert_array_equal(a, b)  # replicated params: identical on both hosts
  assert_close(one_device_leaves, first)
  assert os.listdir(tmp_path / "w" / "checkpoints") == ["3"] or "3" in os.listdir(
    tmp_path / "w" / "checkpoints"
  )
