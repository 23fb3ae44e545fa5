"""What a model family hands to the one training loop: its init, its steps and its samples."""

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

State = Any
Batch = Mapping[str, jax.Array]
Metrics = dict[str, jax.Array]


class UnsupportedPromptsError(ValueError):
  """A model cannot generate images for arbitrary captions (the message says why and what to use)."""


@dataclasses.dataclass(frozen=True)
class Task:
  """A model family's pure functions; the loop jits each once and owns all I/O.

  Attributes:
    init: rng -> state with params boxed in `nn.LogicallyPartitioned` (traced under `jax.jit`).
    train_step: (state, batch, rng) -> (state, metrics); folds `state.step` into rng itself.
    eval_step: (state, batch, rng) -> metrics that are *sums* over the batch (the loop adds them
      over eval batches on host in float64 and calls `finalize_eval`).
    finalize_eval: summed eval metrics -> reported eval metrics.
    sample: (state, sample_inputs, rng) -> images float32[N, H, W, 3] in [-1, 1]; None for
      families that do not generate (no sample grids).
    sample_inputs: fixed inputs for the sample grid (noise, labels, tokens), host arrays.
    sample_captions: the text drawn under each grid cell (or None).
    grid_columns: cells per grid row.
    preprocess: host-side numpy batch (image, caption, label) -> arrays the steps take.
    write_assets: writes what the run needs beside its checkpoints (e.g. a tokenizer vocabulary).
    evaluate_samples: optional uint8 grid images [N, H, W, 3] -> host metrics about them.
    export: optional (state, workdir) -> None, run once when training reaches num_steps (e.g.
      a standalone checkpoint other configs can load).
    prompt_inputs: optional (captions, seed) -> host arrays [N, ...] that `generate` takes for
      those N captions: the family's noise (e.g. `z`) drawn from `seed`, plus its condition
      (token ids, labels or text embeddings). May raise `UnsupportedPromptsError`.
    generate: optional (state, prompt_inputs(...), rng) -> float32 images [N, H, W, 3] in [-1, 1],
      the model's FINAL images for those captions (no grid pairs, no intermediate stages). The
      evaluator (t2i_jax/eval/suite.py) jits it once and calls it with a fixed N.
  """

  init: Callable[[jax.Array], State]
  train_step: Callable[[State, Batch, jax.Array], tuple[State, Metrics]]
  eval_step: Callable[[State, Batch, jax.Array], Metrics]
  finalize_eval: Callable[[dict[str, float]], dict[str, float]]
  preprocess: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]
  sample: Callable[[State, Mapping[str, jax.Array], jax.Array], jax.Array] | None = None
  sample_inputs: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)
  sample_captions: Sequence[str] | None = None
  grid_columns: int = 1
  write_assets: Callable[[str], None] = lambda workdir: None
  evaluate_samples: Callable[[np.ndarray], dict[str, float]] | None = None
  export: Callable[[State, str], None] | None = None
  prompt_inputs: Callable[[Sequence[str], int], dict[str, np.ndarray]] | None = None
  generate: Callable[[State, Mapping[str, jax.Array], jax.Array], jax.Array] | None = None
