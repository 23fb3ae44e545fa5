"""Schedules and the forward process against diffusers 0.42.1 (DDPMScheduler) and closed forms."""

import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from child_process import REPO_ROOT

from t2i_jax.diffusion import schedules

FIXTURES = os.path.join(REPO_ROOT, "tests", "fixtures", "diffusers_schedulers")
TABLES = np.load(os.path.join(FIXTURES, "schedules.npz"))
FORWARD = np.load(os.path.join(FIXTURES, "forward.npz"))
TRAJECTORIES = np.load(os.path.join(FIXTURES, "trajectories.npz"))
# Fixture schedule name -> make_schedule kwargs (make_fixtures.SCHEDULES in our argument names).
SCHEDULES = {
  "linear": dict(kind="linear"),
  "scaled_linear": dict(kind="scaled_linear", beta_start=0.00085, beta_end=0.012),
  "squaredcos_cap_v2": dict(kind="squaredcos_cap_v2"),
  "linear_zsnr": dict(kind="linear", rescale_zero_terminal_snr=True),
  "scaled_linear_zsnr": dict(
    kind="scaled_linear", beta_start=0.00085, beta_end=0.012, rescale_zero_terminal_snr=True
  ),
  "squaredcos_cap_v2_zsnr": dict(kind="squaredcos_cap_v2", rescale_zero_terminal_snr=True),
}


@pytest.mark.parametrize("name", [n for n in SCHEDULES if not n.endswith("_zsnr")])
def test_tables_are_bitwise_diffusers(name):
  schedule = schedules.make_schedule(**SCHEDULES[name])
  assert schedule.num_train_timesteps == 1000
  assert schedule.betas.dtype == schedule.alphas_cumprod.dtype == jnp.float32
  np.testing.assert_array_equal(schedule.betas, TABLES[f"{name}__betas"])
  np.testing.assert_array_equal(schedule.alphas_cumprod, TABLES[f"{name}__alphas_cumprod"])


@pytest.mark.parametrize("name", [n for n in SCHEDULES if n.endswith("_zsnr")])
def test_zero_terminal_snr_tables_match_diffusers(name):
  """Rescaled in float64: 1e-6 of diffusers in float64, float32 rounding of diffusers in float32."""
  alphas_cumprod = np.asarray(schedules.make_schedule(**SCHEDULES[name]).alphas_cumprod)
  assert alphas_cumprod[-1] == 0.0
  float32_ref = TABLES[f"{name}__alphas_cumprod"]
  # diffusers' float32 rescale loses ~4e-5 relative on the last, ~1e-7, values: hence atol.
  np.testing.assert_allclose(alphas_cumprod, float32_ref, rtol=1e-5, atol=1e-10)
  key = f"{name}__alphas_cumprod"
  if key in TRAJECTORIES:  # the float64 tables of the schedules the sampler fixtures use
    np.testing.assert_allclose(alphas_cumprod, TRAJECTORIES[key], rtol=1e-6, atol=0)


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_add_noise_and_velocity_match_diffusers(name):
  # diffusers' own tables: for zero-SNR ones ours differ by rounding (1 - alpha_bar_0 is tiny
  # for the cosine schedule, so that rounding shows in sigma_0); the formulas are what is tested.
  schedule = schedules.Schedule(
    betas=jnp.asarray(TABLES[f"{name}__betas"]),
    alphas_cumprod=jnp.asarray(TABLES[f"{name}__alphas_cumprod"]),
  )
  x0, noise, t = FORWARD["x0"], FORWARD["noise"], FORWARD["t"]
  x_t = jax.jit(schedules.add_noise)(schedule, x0, noise, t)
  v = jax.jit(schedules.velocity)(schedule, x0, noise, t)
  np.testing.assert_allclose(x_t, FORWARD[f"{name}__add_noise"], rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(v, FORWARD[f"{name}__velocity"], rtol=1e-6, atol=1e-7)


def test_zero_terminal_snr_rescaling():
  plain = schedules.make_schedule("scaled_linear", beta_start=0.00085, beta_end=0.012)
  zsnr = schedules.make_schedule(
    "scaled_linear", beta_start=0.00085, beta_end=0.012, rescale_zero_terminal_snr=True
  )
  assert float(zsnr.alphas_cumprod[-1]) == 0.0 and float(zsnr.betas[-1]) == 1.0
  np.testing.assert_allclose(zsnr.alphas_cumprod[0], plain.alphas_cumprod[0], rtol=1e-6)
  snr = schedules.snr(zsnr, jnp.arange(1000))
  assert float(snr[-1]) == 0.0 and bool(jnp.all(jnp.diff(snr) < 0))
  # The VE sigmas read the zero alpha_bar as 2^-24, as diffusers' Euler and DPM-Solver do.
  sigmas = schedules.sigmas(zsnr)
  np.testing.assert_allclose(sigmas[-1], math.sqrt((1 - 2.0**-24) / 2.0**-24), rtol=1e-6)
  assert bool(jnp.all(jnp.isfinite(sigmas)))


def test_cosine_schedule_follows_its_alpha_bar():
  schedule = schedules.make_schedule("squaredcos_cap_v2")

  def alpha_bar(s):
    return np.cos((s + 0.008) / 1.008 * np.pi / 2) ** 2 / np.cos(0.008 / 1.008 * np.pi / 2) ** 2

  t = np.arange(1, 990)  # beta is capped at 0.999 near the end
  np.testing.assert_allclose(schedule.alphas_cumprod[t - 1], alpha_bar(t / 1000), rtol=1e-4)


def test_schedule_is_a_pytree_jit_argument():
  traces = []

  @jax.jit
  def mean_x_t(schedule, x0):
    traces.append(schedule.num_train_timesteps)  # static: it is a shape
    t = jnp.full((x0.shape[0],), schedule.num_train_timesteps - 1)
    return jnp.mean(schedules.add_noise(schedule, x0, jnp.ones_like(x0), t))

  x0 = jnp.ones((2, 3))
  a = mean_x_t(schedules.make_schedule("linear"), x0)
  b = mean_x_t(schedules.make_schedule("squaredcos_cap_v2"), x0)
  assert traces == [1000] and float(a) != float(b)


def test_from_betas_and_unknown_kind():
  betas = np.full((10,), 0.1)
  schedule = schedules.Schedule.from_betas(betas)
  np.testing.assert_allclose(schedule.alphas_cumprod, 0.9 ** np.arange(1, 11), rtol=1e-6)
  with pytest.raises(ValueError, match="squaredcos_cap_v2"):
    schedules.make_schedule("cosine")
