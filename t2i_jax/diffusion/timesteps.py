"""Inference timesteps: which of the T training timesteps a sampler visits, as diffusers 0.42.1.

Host-side numpy: a sampler calls these while tracing, with a static step count, so the timesteps are
constants of the compiled loop. Spacings (Lin et al. 2023, Table 2), with r the step ratio:

  "leading"   0, r, 2r, ... (r = T // N), reversed, plus `steps_offset` (SD configs use 1)
  "trailing"  T, T - r, ... (r = T / N), rounded, minus 1: starts at T - 1 (needed with a
              zero-terminal-SNR schedule, whose last step is pure noise)
  "linspace"  N points from 0 to T - 1, reversed

diffusers applies `steps_offset` only to "leading", and each scheduler family has its own variant,
reproduced here: `discrete_timesteps` (DDPMScheduler, DDIMScheduler), `dpm_solver_timesteps`
(DPMSolverMultistepScheduler: N + 1 points with the last dropped, `lambda_min_clipped` unsupported)
and `euler_timesteps` (Euler*DiscreteScheduler: float32, "linspace" not rounded, so fractional).
"""

from __future__ import annotations

import numpy as np

SPACINGS = ("leading", "trailing", "linspace")


def _check(spacing: str, num_steps: int, num_train_timesteps: int) -> None:
  if spacing not in SPACINGS:
    raise ValueError(f"Unknown timestep spacing {spacing!r}; valid spacings are {SPACINGS}.")
  if not 1 <= num_steps <= num_train_timesteps:
    raise ValueError(f"num_steps={num_steps} must be in [1, {num_train_timesteps}].")


def discrete_timesteps(
  num_train_timesteps: int, num_steps: int, spacing: str, steps_offset: int = 0
) -> np.ndarray:
  """int64[N], descending: DDPMScheduler / DDIMScheduler `set_timesteps`."""
  _check(spacing, num_steps, num_train_timesteps)
  t_max = num_train_timesteps
  if spacing == "linspace":
    return np.linspace(0, t_max - 1, num_steps).round()[::-1].astype(np.int64)
  if spacing == "leading":
    ratio = t_max // num_steps
    return (np.arange(num_steps) * ratio).round()[::-1].astype(np.int64) + steps_offset
  return np.round(np.arange(t_max, 0, -t_max / num_steps)).astype(np.int64) - 1


def dpm_solver_timesteps(
  num_train_timesteps: int, num_steps: int, spacing: str, steps_offset: int = 0
) -> np.ndarray:
  """int64[N], descending: DPMSolverMultistepScheduler `set_timesteps` (default sigmas)."""
  _check(spacing, num_steps, num_train_timesteps)
  t_max = num_train_timesteps
  if spacing == "linspace":
    return np.linspace(0, t_max - 1, num_steps + 1).round()[::-1][:-1].astype(np.int64)
  if spacing == "leading":
    ratio = t_max // (num_steps + 1)
    steps = (np.arange(num_steps + 1) * ratio).round()[::-1][:-1].astype(np.int64)
    return steps + steps_offset
  return np.arange(t_max, 0, -t_max / num_steps).round().astype(np.int64) - 1


def euler_timesteps(
  num_train_timesteps: int, num_steps: int, spacing: str, steps_offset: int = 0
) -> np.ndarray:
  """float32[N], descending: Euler(Ancestral)DiscreteScheduler `set_timesteps`."""
  _check(spacing, num_steps, num_train_timesteps)
  t_max = num_train_timesteps
  if spacing == "linspace":
    return np.linspace(0, t_max - 1, num_steps, dtype=np.float32)[::-1].copy()
  if spacing == "leading":
    ratio = t_max // num_steps
    steps = (np.arange(num_steps) * ratio).round()[::-1].astype(np.float32)
    return steps + np.float32(steps_offset)
  return np.arange(t_max, 0, -t_max / num_steps).round().astype(np.float32) - np.float32(1)
