"""Reopens a training run for inference: its config, its task and its newest checkpoint."""

import dataclasses
import json
import os
from typing import Any

import jax
import ml_collections

from t2i_jax import sharding
from t2i_jax.train import checkpoint
from t2i_jax.train.families import build_task
from t2i_jax.train.task import Task

CONFIG_FILE = "config.json"


@dataclasses.dataclass(frozen=True)
class RestoredRun:
  config: ml_collections.ConfigDict
  task: Task
  state: Any  # the train state, on the local devices
  step: int


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
  """The config a run in `workdir` was started with (its config.json)."""
  path = os.path.join(os.path.abspath(os.path.expanduser(workdir)), CONFIG_FILE)
  if not os.path.isfile(path):
    raise FileNotFoundError(
      f"{path} does not exist: {workdir} is not a training workdir (python -m experiments.train "
      "writes config.json there when it starts)."
    )
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def restore_latest(workdir: str, config: ml_collections.ConfigDict | None = None) -> RestoredRun:
  """Builds the run's task (from `config`, default its config.json) and restores its newest
  checkpoint onto all local devices (replicated, or sharded by the config's rules)."""
  workdir = os.path.abspath(os.path.expanduser(workdir))
  config = load_run_config(workdir) if config is None else config
  task = build_task(config)
  ckpt = checkpoint.Checkpointer(os.path.join(workdir, "checkpoints"), async_save=False)
  try:
    step = ckpt.latest_step()
    if step is None:
      raise FileNotFoundError(f"{workdir}/checkpoints holds no checkpoint yet.")
    mesh = sharding.make_mesh(config.mesh.axes, config.mesh.shape)
    rules = sharding.rules_from_config(config.sharding_rules)
    init_rng = jax.random.split(jax.random.key(config.train.seed), 4)[0]
    abstract, _ = sharding.abstract_state(task.init, init_rng, mesh, rules)
    state, _ = ckpt.restore(step, abstract)
  finally:
    ckpt.close()
  return RestoredRun(config=config, task=task, state=state, step=step)
