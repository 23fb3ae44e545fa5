"""Builds the shapes attribute classifier `Task`: cross-entropy on clean renders, per-attribute
accuracy on the eval splits, an export folder when training ends."""

import functools
import logging
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import struct

from t2i_jax.classifier import export
from t2i_jax.data import shapes
from t2i_jax.models.shapes_classifier import HEADS, ShapesClassifier, targets_of
from t2i_jax.train.state import NetworkState
from t2i_jax.train.task import Task


class ClassifierState(struct.PyTreeNode):
  step: jax.Array
  net: NetworkState


def init(rng, *, model: ShapesClassifier, tx) -> ClassifierState:
  images = jnp.zeros((2, model.image_size, model.image_size, 3), jnp.uint8)
  variables = model.init(rng, images)
  return ClassifierState(step=jnp.zeros((), jnp.int32), net=NetworkState.create(variables, tx))


def _per_head(logits: dict[str, jax.Array], targets: jax.Array):
  """(cross-entropy [B, 4], correct bool[B, 4]) per example and head (HEADS order)."""
  losses, correct = [], []
  for i, head in enumerate(HEADS):
    losses.append(optax.softmax_cross_entropy_with_integer_labels(logits[head], targets[:, i]))
    correct.append(jnp.argmax(logits[head], axis=-1) == targets[:, i])
  return jnp.stack(losses, axis=1), jnp.stack(correct, axis=1)


def train_step(state: ClassifierState, batch, rng, *, model: ShapesClassifier, tx):
  """One optimizer step on the sum of the four heads' mean cross-entropies.

  Args:
    batch: image uint8[B, H, W, 3], targets int32[B, 4] (class per head, HEADS order).
  """
  del rng  # deterministic model and data: nothing random in a step

  def loss_fn(params):
    losses, correct = _per_head(model.apply({"params": params}, batch["image"]), batch["targets"])
    return jnp.sum(jnp.mean(losses, axis=0)), correct

  (loss, correct), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.net.params)
  accuracy = jnp.mean(correct.astype(jnp.float32), axis=0)
  new_state = state.replace(step=state.step + 1, net=state.net.apply_gradients(grads, tx))
  return new_state, {"train/loss": loss} | {
    f"train/{head}_accuracy": accuracy[i] for i, head in enumerate(HEADS)
  }


def eval_step(state: ClassifierState, batch, rng, *, model: ShapesClassifier, report_pairs):
  """Summed hits per head and of all four heads at once, overall and on the examples whose
  colour-shape pair is in `report_pairs` (bool[num colours, num shapes]), and the counts."""
  del rng
  _, correct = _per_head(
    model.apply({"params": state.net.params}, batch["image"]), batch["targets"]
  )
  correct = jnp.concatenate([correct, jnp.all(correct, axis=1, keepdims=True)], axis=1)
  correct = correct.astype(jnp.float32)
  in_pairs = report_pairs[batch["targets"][:, 0], batch["targets"][:, 1]].astype(jnp.float32)
  sums = {}
  for i, name in enumerate([*HEADS, "all"]):
    sums[f"{name}_correct"] = jnp.sum(correct[:, i])
    sums[f"{name}_pairs_correct"] = jnp.sum(correct[:, i] * in_pairs)
  sums["num_examples"] = jnp.asarray(correct.shape[0], jnp.float32)
  sums["num_pairs_examples"] = jnp.sum(in_pairs)
  return sums


def finalize_eval(sums: dict[str, float]) -> dict[str, float]:
  n, n_pairs = max(sums.pop("num_examples"), 1.0), sums.pop("num_pairs_examples")
  results = {}
  for key, value in sums.items():
    name = key.removesuffix("_correct")
    if name.endswith("_pairs"):
      if n_pairs:  # "heldout_pairs": the generators' held-out pairs, which this judge trains on
        results[f"eval/heldout_pairs_{name.removesuffix('_pairs')}_accuracy"] = value / n_pairs
    else:
      results[f"eval/{name}_accuracy"] = value / n
  return results


def build_classifier_task(config: ml_collections.ConfigDict) -> Task:
  if config.data.name != "shapes":
    raise ValueError(
      f"The attribute classifier reads captioned shapes; config.data.name={config.data.name!r}."
    )
  if config.data.heldout_pairs:
    raise ValueError(
      "The attribute classifier judges every colour-shape pair, so it must train on all of "
      "them: set config.data.heldout_pairs=() (model.report_pairs picks pairs to report)."
    )
  if config.data.max_objects != 1:
    raise ValueError(
      "The attribute classifier learns the first object of one-object renders (which object of "
      "two is first is only in the caption): set config.data.max_objects=1."
    )
  m, o = config.model, config.optim
  kwargs = dict(image_size=config.data.resolution, width=m.width, hidden=m.hidden)
  model = ShapesClassifier(**kwargs)
  report_pairs = np.zeros((len(shapes.COLORS), len(shapes.SHAPES)), bool)
  for color, shape in m.report_pairs:
    report_pairs[shapes.COLORS.index(color), shapes.SHAPES.index(shape)] = True
  # Warm-up, then cosine decay to 0 at num_steps: the last steps settle the decision boundaries.
  schedule = optax.warmup_cosine_decay_schedule(
    0.0, o.lr, max(o.warmup_steps, 1), max(config.train.num_steps, o.warmup_steps + 1)
  )
  tx = optax.adamw(schedule, b1=o.b1, b2=o.b2, weight_decay=o.weight_decay)

  def preprocess(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"image": batch["image"], "targets": targets_of(list(batch["caption"]))}

  def export_classifier(state: ClassifierState, workdir: str) -> None:
    path = os.path.join(workdir, export.EXPORT_DIR)
    if os.path.exists(os.path.join(path, export.CONFIG_FILE)):
      return  # already exported by an earlier run that reached num_steps
    export.save_classifier(path, kwargs, jax.device_get(state.net.params))
    logging.info("Exported the attribute classifier to %s (--classifier_checkpoint).", path)

  return Task(
    init=functools.partial(init, model=model, tx=tx),
    train_step=functools.partial(train_step, model=model, tx=tx),
    eval_step=functools.partial(eval_step, model=model, report_pairs=jnp.asarray(report_pairs)),
    finalize_eval=finalize_eval,
    preprocess=preprocess,
    export=export_classifier,
  )
