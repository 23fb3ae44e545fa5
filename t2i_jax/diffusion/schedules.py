"""Discrete-time noise schedules (Ho et al. 2020) and the forward process they define.

A `Schedule` holds, for t = 0 .. T-1,

  betas[t]            beta_t
  alphas_cumprod[t]   alpha_bar_t = prod_{s <= t} (1 - beta_s)

as a pytree of arrays, so a jitted loss or sampler takes it as an ordinary argument and one
compilation serves every schedule of the same length T.

The tables are built on the host as diffusers 0.42.1 builds them (`DDPMScheduler.__init__` and
friends): float32 betas from `torch.linspace` (reproduced here bit for bit, see `_linspace`), the
cosine betas in float64 then rounded, and alpha_bar accumulated in float64 and rounded to float32
as torch's CPU `cumprod` does. tests/diffusion/test_schedules.py checks the tables are bitwise equal
to diffusers' for every kind; zero-terminal-SNR rescaling is done in float64 instead (see
`rescale_betas_zero_terminal_snr`), within 1e-6 of diffusers run in float64.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")


class Schedule(struct.PyTreeNode):
  """Noise-schedule tables, float32[T] each; T = `num_train_timesteps` is static (a shape)."""

  betas: jax.Array
  alphas_cumprod: jax.Array  # alpha_bar_t

  @property
  def num_train_timesteps(self) -> int:
    return self.betas.shape[0]

  @classmethod
  def from_betas(cls, betas) -> Schedule:
    """The schedule of the given betas float[T] (numpy or jax, rounded to float32)."""
    betas = np.asarray(betas, np.float32)
    alphas = np.float32(1.0) - betas
    # torch's CPU cumprod accumulates float32 in float64; matching it keeps tables bitwise equal.
    alphas_cumprod = np.cumprod(alphas.astype(np.float64)).astype(np.float32)
    return cls(betas=jnp.asarray(betas), alphas_cumprod=jnp.asarray(alphas_cumprod))


def make_schedule(
  kind: str = "linear",
  num_train_timesteps: int = 1000,
  beta_start: float = 1e-4,
  beta_end: float = 0.02,
  rescale_zero_terminal_snr: bool = False,
) -> Schedule:
  """A named schedule with diffusers' arguments (`beta_schedule`, `rescale_betas_zero_snr`).

  kind: "linear" (Ho et al.), "scaled_linear" (Stable Diffusion: linear in sqrt(beta); SD uses
  beta_start=0.00085, beta_end=0.012) or "squaredcos_cap_v2" (Nichol & Dhariwal's cosine schedule;
  ignores beta_start/beta_end).
  """
  if kind == "linear":
    betas = _linspace(beta_start, beta_end, num_train_timesteps)
  elif kind == "scaled_linear":
    betas = _linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps) ** 2
  elif kind == "squaredcos_cap_v2":
    betas = cosine_betas(num_train_timesteps)
  else:
    raise ValueError(f"Unknown beta schedule {kind!r}; valid kinds are {BETA_SCHEDULES}.")
  if rescale_zero_terminal_snr:
    betas = rescale_betas_zero_terminal_snr(betas)
  return Schedule.from_betas(betas)


def _linspace(start: float, end: float, num: int) -> np.ndarray:
  """float32[num], bitwise equal to `torch.linspace(start, end, num, dtype=torch.float32)`.

  torch's CPU kernel rounds start, end and step = (end - start) / (num - 1) to float32, fills the
  first half as fma(step, i, start) and the second half from the end; a float64 product of two
  float32 values is exact, so one rounding of the float64 sum is that fma.
  """
  start32, end32 = np.float32(start), np.float32(end)
  if num == 1:
    return np.array([start32])
  step = np.float64((end32 - start32) / np.float32(num - 1))
  i = np.arange(num)
  half = num // 2
  first = np.float64(start32) + step * i[:half]
  second = np.float64(end32) - step * (num - 1 - i[half:])
  return np.concatenate([first, second]).astype(np.float32)


def cosine_betas(num_train_timesteps: int, max_beta: float = 0.999) -> np.ndarray:
  """Nichol & Dhariwal (2021) eq. 17: beta_t = min(1 - alpha_bar(t+1/T) / alpha_bar(t/T), 0.999).

  alpha_bar(s) = cos^2((s + 0.008) / 1.008 * pi / 2), in float64 like diffusers'
  `betas_for_alpha_bar`, then rounded to float32.
  """

  def alpha_bar(s):
    return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2

  n = num_train_timesteps
  betas = [min(1 - alpha_bar((i + 1) / n) / alpha_bar(i / n), max_beta) for i in range(n)]
  return np.asarray(betas, np.float32)


def rescale_betas_zero_terminal_snr(betas: np.ndarray) -> np.ndarray:
  """Lin et al. (2023) Algorithm 1: shift and scale sqrt(alpha_bar) so alpha_bar_{T-1} = 0.

  sqrt(alpha_bar) -> (sqrt(alpha_bar) - sqrt(alpha_bar_{T-1})) * sqrt(alpha_bar_0)
  / (sqrt(alpha_bar_0) - sqrt(alpha_bar_{T-1})): the first value is kept, the last becomes 0 (so
  the terminal SNR is exactly zero and the last step sees pure noise). Computed in float64, then
  rounded: diffusers' float32 version (`rescale_zero_terminal_snr`) inherits torch's float32 sqrt,
  which is not always correctly rounded, so its alpha_bar differs from this by up to ~5e-6
  relative (and its small betas, 1 - alpha_bar_t / alpha_bar_{t-1}, by up to ~1e-3 relative).
  """
  alphas_cumprod = np.cumprod(1.0 - np.asarray(betas, np.float32).astype(np.float64))
  sqrt_ab = np.sqrt(alphas_cumprod)
  first, last = sqrt_ab[0], sqrt_ab[-1]
  sqrt_ab = (sqrt_ab - last) * (first / (first - last))
  alphas_bar = sqrt_ab**2
  alphas = np.concatenate([alphas_bar[:1], alphas_bar[1:] / alphas_bar[:-1]])
  return (1.0 - alphas).astype(np.float32)


def _gather(table: jax.Array, t: jax.Array, ndim: int) -> jax.Array:
  """table[t] for integer t: int[B], reshaped to [B, 1, ...] to broadcast against rank `ndim`."""
  values = table[jnp.asarray(t, jnp.int32)]
  return values.reshape(values.shape + (1,) * (ndim - values.ndim))


def alpha_sigma(schedule: Schedule, t: jax.Array, ndim: int = 1) -> tuple[jax.Array, jax.Array]:
  """(alpha_t, sigma_t) = (sqrt(alpha_bar_t), sqrt(1 - alpha_bar_t)) at integer t: int[B].

  Each is float32[B, 1, ...] with `ndim` dims in all, to broadcast against a [B, ...] sample.
  """
  alpha_bar = _gather(schedule.alphas_cumprod, t, ndim)
  return jnp.sqrt(alpha_bar), jnp.sqrt(1 - alpha_bar)


def snr(schedule: Schedule, t: jax.Array) -> jax.Array:
  """Signal-to-noise ratio alpha_bar_t / (1 - alpha_bar_t) at integer t: int[B] -> float32[B]."""
  alpha_bar = schedule.alphas_cumprod[jnp.asarray(t, jnp.int32)]
  return alpha_bar / (1 - alpha_bar)


def add_noise(schedule: Schedule, x0: jax.Array, noise: jax.Array, t: jax.Array) -> jax.Array:
  """Sample q(x_t | x_0): x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps (Ho et al. eq. 4).

  x0, noise: float[B, ...]; t: int[B]. Returns float[B, ...] (diffusers' `add_noise`).
  """
  alpha_t, sigma_t = alpha_sigma(schedule, t, x0.ndim)
  return alpha_t * x0 + sigma_t * noise


def velocity(schedule: Schedule, x0: jax.Array, noise: jax.Array, t: jax.Array) -> jax.Array:
  """The v target: v_t = sqrt(alpha_bar_t) eps - sqrt(1 - alpha_bar_t) x_0 (Salimans & Ho 2022).

  x0, noise: float[B, ...]; t: int[B]. Returns float[B, ...] (diffusers' `get_velocity`).
  """
  alpha_t, sigma_t = alpha_sigma(schedule, t, x0.ndim)
  return alpha_t * noise - sigma_t * x0


def sigmas(schedule: Schedule) -> jax.Array:
  """sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t), float32[T]: the noise level of x_t / alpha_t.

  The variance-exploding view used by Euler samplers and DPM-Solver. A zero alpha_bar (the last step
  of a zero-terminal-SNR schedule) is read as 2^-24, as diffusers does for those schedulers, so the
  top sigma is finite (about 4096).
  """
  alpha_bar = schedule.alphas_cumprod
  alpha_bar = jnp.where(alpha_bar == 0, jnp.asarray(2.0**-24, alpha_bar.dtype), alpha_bar)
  return jnp.sqrt((1 - alpha_bar) / alpha_bar)
