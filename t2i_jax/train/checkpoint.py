"""Orbax checkpoints of a run: the train state, the config and the data position, restored sharded."""

import json
import logging
import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

STATE = "state"
META = "meta"


class CheckpointMismatchError(ValueError):
  """The checkpoint in a workdir does not fit the state the config builds."""


class Checkpointer:
  """One `CheckpointManager` per run, with items `state` (the pytree) and `meta` (JSON)."""

  def __init__(self, directory: str, *, max_to_keep: int = 3, async_save: bool = True):
    self.directory = os.path.abspath(directory)
    self._manager = ocp.CheckpointManager(
      self.directory,
      options=ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep, enable_async_checkpointing=async_save, create=True
      ),
      # Handlers named up front, so a fresh process can read metadata before any restore.
      item_handlers={STATE: ocp.StandardCheckpointHandler(), META: ocp.JsonCheckpointHandler()},
    )

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def save(self, step: int, state: Any, meta: dict) -> None:
    """Starts an (async) save; a step that is already saved is left as it is."""
    if step in self._manager.all_steps():
      return
    self._manager.save(
      step,
      args=ocp.args.Composite(
        **{STATE: ocp.args.StandardSave(state), META: ocp.args.JsonSave(meta)}
      ),
    )

  def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict]:
    """Restores `step` onto the shardings of `abstract_state` (ShapeDtypeStructs with sharding).

    Raises:
      CheckpointMismatchError: naming the entries whose shape or structure differ.
    """
    self._check_compatible(step, abstract_state)
    restored = self._manager.restore(
      step,
      args=ocp.args.Composite(
        **{STATE: ocp.args.StandardRestore(abstract_state), META: ocp.args.JsonRestore()}
      ),
    )
    return restored[STATE], dict(restored[META])

  def _check_compatible(self, step: int, abstract_state: Any) -> None:
    saved = self._manager.item_metadata(step)[STATE]
    if saved is None:
      raise CheckpointMismatchError(f"No readable state metadata in {self.directory}/{step}.")
    saved_shapes = {
      jax.tree_util.keystr(path): tuple(leaf.shape)
      for path, leaf in jax.tree_util.tree_leaves_with_path(saved)
      if hasattr(leaf, "shape")
    }
    wanted_shapes = {
      jax.tree_util.keystr(path): tuple(np.shape(leaf))
      for path, leaf in jax.tree_util.tree_leaves_with_path(abstract_state)
    }
    wanted_shapes = _normalize_keys(wanted_shapes)
    saved_shapes = _normalize_keys(saved_shapes)
    problems = []
    for key in sorted(set(wanted_shapes) - set(saved_shapes)):
      problems.append(f"missing in checkpoint: {key} {wanted_shapes[key]}")
    for key in sorted(set(saved_shapes) - set(wanted_shapes)):
      problems.append(f"unexpected in checkpoint: {key} {saved_shapes[key]}")
    for key in sorted(set(saved_shapes) & set(wanted_shapes)):
      if saved_shapes[key] != wanted_shapes[key]:
        problems.append(
          f"shape mismatch at {key}: checkpoint {saved_shapes[key]} vs config {wanted_shapes[key]}"
        )
    if problems:
      shown = "\n  ".join(problems[:10]) + ("\n  ..." if len(problems) > 10 else "")
      raise CheckpointMismatchError(
        f"The checkpoint at {self.directory}/{step} does not match the model the config builds:\n"
        f"  {shown}\nResume with the config the run was started with (saved in the workdir as "
        "config.json), or train into a new --workdir. Nothing was changed on disk."
      )

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


def _normalize_keys(shapes: dict[str, tuple]) -> dict[str, tuple]:
  """Orbax metadata names dataclass fields as dict keys: compare paths by their names only."""
  out = {}
  for key, shape in shapes.items():
    parts = key.replace("['", ".").replace("']", "").replace("[", ".").replace("]", "")
    out[parts.lstrip(".")] = shape
  return out


def save_config_json(config, workdir: str) -> None:
  """Writes the run's config beside its checkpoints (process 0), for humans and for resume checks."""
  if jax.process_index() != 0:
    return
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(config.to_json_best_effort(indent=2))
  logging.info("Wrote %s", os.path.join(workdir, "config.json"))


def load_meta_config(meta: dict) -> dict:
  return json.loads(meta.get("config", "{}"))
