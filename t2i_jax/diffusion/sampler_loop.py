"""What every sampler shares: the model and noise-source signatures and the compiled step loop."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

# model_fn(x: float[B, ...], t: float32[B]) -> float[B, ...], the (guided) denoiser output.
ModelFn = Callable[[jax.Array, jax.Array], jax.Array]
# noise_fn(rng, step_index, shape, dtype) -> float[shape], the fresh noise a stochastic step adds.
NoiseFn = Callable[[jax.Array, jax.Array, tuple[int, ...], Any], jax.Array]


def gaussian_noise(rng: jax.Array, i: jax.Array, shape: tuple[int, ...], dtype) -> jax.Array:
  """Standard normal noise for step i: one key per step, folded in from the sampler's rng."""
  return jax.random.normal(jax.random.fold_in(rng, i), shape, dtype)


def call_model(model_fn: ModelFn, x: jax.Array, t: jax.Array) -> jax.Array:
  """model_fn at a scalar timestep t, given to the model as float32[B]; output cast to x's dtype."""
  return model_fn(x, jnp.full((x.shape[0],), t, jnp.float32)).astype(x.dtype)


def run_steps(
  step: Callable[[jax.Array, tuple], tuple],
  state: tuple,
  num_steps: int,
  return_trajectory: bool,
):
  """state = step(i, state) for i < num_steps in one `lax.scan`; state[0] is the sample x.

  Returns x, or (x, xs) with xs: [num_steps, B, ...] the sample after each step.
  """

  def body(state, i):
    state = step(i, state)
    return state, state[0] if return_trajectory else None

  state, xs = jax.lax.scan(body, state, jnp.arange(num_steps))
  return (state[0], xs) if return_trajectory else state[0]
