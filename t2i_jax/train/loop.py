"""`train_and_evaluate(config, workdir)`: the one training loop for every model family.

A family supplies a `Task` (init, steps, sampling); this loop jits them once over the mesh and owns
all I/O: data, logs, sample grids, evaluation and checkpoints. The data order and every random
number are functions of (seed, step), so an interrupted and resumed run matches an uninterrupted
one bit for bit.
"""

import logging
import os
import signal
import threading
import time

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from t2i_jax import sharding
from t2i_jax.data import pipeline
from t2i_jax.data.celeba import DatasetNotFoundError
from t2i_jax.data.sources import make_source
from t2i_jax.eval import suite
from t2i_jax.train import checkpoint, summaries
from t2i_jax.train.families import build_task
from t2i_jax.train.task import Task


class NonFiniteLossError(FloatingPointError):
  """A loss became NaN or inf; the run stopped without saving the broken state."""


# Errors whose message tells a user what to fix; entry points print them without a traceback.
USER_ERRORS = (
  DatasetNotFoundError,
  checkpoint.CheckpointMismatchError,
  NonFiniteLossError,
  suite.EvaluationError,
)


def maybe_initialize_distributed(distributed: ml_collections.ConfigDict) -> None:
  """`jax.distributed.initialize()` when the config says multi-host (arguments auto-detected on
  TPU pods and SLURM/Open MPI GPU clusters, or given explicitly for local tests)."""
  if not distributed.enabled or jax.distributed.is_initialized():
    return
  kwargs = {
    key: distributed[key]
    for key in ("coordinator_address", "num_processes", "process_id")
    if distributed.get(key) is not None
  }
  jax.distributed.initialize(**kwargs, initialization_timeout=distributed.initialization_timeout)


class _StopRequest:
  """Turns the first SIGTERM/SIGINT into a request to checkpoint and exit after the current step."""

  def __init__(self):
    self.signum = None
    self._previous = {}

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for signum in (signal.SIGTERM, signal.SIGINT):
        self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def _handle(self, signum, frame):
    self.signum = signum
    signal.signal(signum, self._previous[signum])  # a second signal acts as usual

  def __exit__(self, *exc):
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)

  def requested(self, sync: bool) -> bool:
    """Whether to stop; `sync` agrees across processes (a collective: call at the same steps)."""
    flag = self.signum is not None
    if sync and jax.process_count() > 1:
      flag = bool(np.any(multihost_utils.process_allgather(np.array(flag))))
    return flag


def _flush(pending: list, last_good_step: int | None, ckpt_dir: str) -> dict[str, float]:
  """Pulls per-step metrics to host, checks they are finite, returns their means."""
  if not pending:
    return {}
  steps, values = zip(*pending, strict=True)
  values = jax.device_get(values)
  pending.clear()
  for step, metrics in zip(steps, values, strict=True):
    bad = {k: float(v) for k, v in metrics.items() if not np.all(np.isfinite(v))}
    if bad:
      kept = (
        f"the last good checkpoint (step {last_good_step}) is kept in {ckpt_dir}"
        if last_good_step is not None
        else "no checkpoint had been saved yet"
      )
      raise NonFiniteLossError(
        f"Non-finite training metrics at step {step + 1}: {bad}. Stopped without saving; {kept}. "
        "Lower the learning rates or check the data, then rerun to resume."
      )
  return {k: float(np.mean([m[k] for m in values])) for k in values[0]}


def _evaluate(task: Task, eval_fn, state, eval_batches, rng) -> dict[str, float]:
  sums: dict[str, np.float64] = {}
  for i, batch in enumerate(eval_batches):
    metrics = jax.device_get(eval_fn(state, batch, jax.random.fold_in(rng, i)))
    for key, value in metrics.items():
      sums[key] = sums.get(key, np.float64(0)) + np.float64(value)
  return task.finalize_eval({k: float(v) for k, v in sums.items()})


def _write_samples(task, sample_fn, state, sample_inputs, rng, step, workdir, writer):
  images = summaries.to_uint8(jax.device_get(sample_fn(state, sample_inputs, rng)))
  metrics = {}
  if task.evaluate_samples is not None:
    metrics = task.evaluate_samples(images)
  if jax.process_index() == 0:
    grid = summaries.image_grid(images, task.grid_columns, task.sample_captions)
    summaries.save_png(os.path.join(workdir, "samples", f"step_{step:06d}.png"), grid)
    writer.image(step, "samples", grid)
  return metrics


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str):
  """Trains `config.model.family` on `config.data` into `workdir`, resuming from its checkpoints.

  Returns:
    The final train state (on the mesh).
  """
  maybe_initialize_distributed(config.distributed)
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  mesh = sharding.make_mesh(config.mesh.axes, config.mesh.shape)
  rules = sharding.rules_from_config(config.sharding_rules)
  data_sharding = sharding.batch_sharding(mesh, rules)
  repl = sharding.replicated(mesh)
  task = build_task(config)
  train_source = make_source(config.data, "train")
  # The first split reports as "eval/...", any extra ones as "eval_<split>/...".
  eval_splits = [config.data.eval_split, *config.eval.get("extra_splits", ())]
  eval_sources = {split: make_source(config.data, split) for split in eval_splits}

  init_rng, train_rng, eval_rng, sample_rng = jax.random.split(jax.random.key(config.train.seed), 4)
  abstract, shardings = sharding.abstract_state(task.init, init_rng, mesh, rules)
  ckpt_dir = os.path.join(workdir, "checkpoints")
  ckpt = checkpoint.Checkpointer(ckpt_dir, max_to_keep=config.train.keep_checkpoints)
  last_saved = ckpt.latest_step()
  if last_saved is not None:
    state, _ = ckpt.restore(last_saved, abstract)
    logging.info("Resumed from %s at step %d.", ckpt_dir, last_saved)
  else:
    state = sharding.init_sharded(task.init, init_rng, shardings)
    checkpoint.save_config_json(config, workdir)
  start_step = int(jax.device_get(state.step))
  num_steps = config.train.num_steps
  if jax.process_index() == 0:
    task.write_assets(workdir)

  train_step = jax.jit(
    task.train_step,
    in_shardings=(shardings, data_sharding, repl),
    out_shardings=(shardings, repl),
    donate_argnums=0,
  )
  eval_step = jax.jit(task.eval_step, in_shardings=(shardings, data_sharding, repl))
  # Sample metrics (FID, ...) of config.eval.metrics; weights load now, so a bad path fails early.
  sample_metrics = suite.training_metrics(config, task, workdir)
  sample_fn, sample_inputs = None, None
  if task.sample is not None:
    sample_fn = jax.jit(task.sample, in_shardings=(shardings, repl, repl), out_shardings=repl)
    sample_inputs = jax.device_put(dict(task.sample_inputs), repl)

  batch_kwargs = dict(
    process_index=jax.process_index(),
    process_count=jax.process_count(),
    preprocess=task.preprocess,
    num_threads=config.data.num_threads,
  )
  eval_batches = {}
  for split, source in eval_sources.items():
    with pipeline.Batches(
      source, global_batch_size=config.eval.batch_size, seed=config.eval.seed, **batch_kwargs
    ) as eval_host:
      eval_batches[split] = [
        pipeline.to_global_batch(eval_host.get(i), data_sharding)
        for i in range(config.eval.num_batches)
      ]
  train_host = pipeline.Batches(
    train_source,
    global_batch_size=config.data.batch_size,
    seed=config.train.seed,
    start_step=start_step,
    prefetch=config.data.prefetch,
    **batch_kwargs,
  )
  device_batches = pipeline.DevicePrefetch(iter(train_host), data_sharding, size=2)

  writer = summaries.SummaryWriter(os.path.join(workdir, "tensorboard"))
  progress = _progress_bar(start_step, num_steps)
  pending: list = []
  multihost = jax.process_count() > 1
  step = start_step

  def meta(s: int) -> dict:
    return {"step": s, "data_seed": config.train.seed, "config": config.to_json_best_effort()}

  try:
    with _StopRequest() as stop:
      while step < num_steps:
        state, metrics = train_step(state, next(device_batches), train_rng)
        pending.append((step, metrics))
        step += 1
        progress.update(1)
        is_last = step == num_steps
        if step % config.train.log_every == 0 or is_last:
          means = _flush(pending, last_saved, ckpt_dir)
          summaries.log_metrics(step, means)
          writer.scalars(step, means)
          progress.set_postfix({k.split("/")[-1]: f"{v:.3g}" for k, v in means.items()})
        if step % config.train.eval_every == 0 or is_last:
          _flush(pending, last_saved, ckpt_dir)
          t0 = time.time()
          results = {}
          for i, (split, batches) in enumerate(eval_batches.items()):
            split_results = _evaluate(task, eval_step, state, batches, eval_rng)
            prefix = "eval/" if i == 0 else f"eval_{split}/"
            results |= {prefix + k.split("/", 1)[-1]: v for k, v in split_results.items()}
          if sample_fn is not None:
            results |= _write_samples(
              task, sample_fn, state, sample_inputs, sample_rng, step, workdir, writer
            )
          summaries.log_metrics(step, results | {"eval/seconds": time.time() - t0})
          writer.scalars(step, results)
        if sample_metrics is not None and (step % config.eval.metrics_every == 0 or is_last):
          _flush(pending, last_saved, ckpt_dir)
          t0 = time.time()
          results = {f"eval/{k}": v for k, v in sample_metrics(state).items()}
          summaries.log_metrics(step, results | {"eval/metrics_seconds": time.time() - t0})
          writer.scalars(step, results)
        # Multi-host: agree on stopping at log steps only, so every process saves the same step.
        check_stop = not multihost or step % config.train.log_every == 0
        stopping = not is_last and check_stop and stop.requested(sync=multihost)
        if step % config.train.ckpt_every == 0 or is_last or stopping:
          _flush(pending, last_saved, ckpt_dir)
          ckpt.save(step, state, meta(step))
          last_saved = step
        if stopping:
          ckpt.wait()
          logging.warning(
            "Received signal %s: saved a checkpoint at step %d in %s; rerun the same command "
            "to resume.",
            signal.Signals(stop.signum).name,
            step,
            ckpt_dir,
          )
          break
    if step == num_steps and task.export is not None:
      task.export(state, workdir)
  finally:
    progress.close()
    device_batches.close()
    train_host.close()
    writer.close()
    ckpt.close()
  return state


def _progress_bar(start_step: int, num_steps: int):
  import tqdm  # noqa: PLC0415

  return tqdm.tqdm(
    total=num_steps,
    initial=start_step,
    unit="step",
    dynamic_ncols=True,
    mininterval=2.0,
    disable=jax.process_index() != 0,
  )
