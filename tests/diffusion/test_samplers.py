"""Samplers against diffusers 0.42.1 trajectories, and classifier-free guidance.

The fixture (tests/fixtures/diffusers_schedulers/make_fixtures.py) ran each diffusers scheduler in
float64 with a fake linear denoiser under batched guidance; here the same denoiser, written in jnp,
drives our jitted samplers from the same z, with the schedulers' recorded per-step noise substituted
for our noise source (`noise_fn`). In float64 (x64 enabled for the test) every intermediate sample
matches within 1e-5 relative (observed: 2e-13 at worst). The SD-style configs also run in float32
against the same reference, within 1e-5; a float32 Euler run from a huge sigma_max (cosine:
~2e4) cancels most of x in its first step and lands ~2e-4 off, in diffusers as here.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from child_process import REPO_ROOT

from t2i_jax.diffusion import euler, samplers, schedules

FIXTURES = os.path.join(REPO_ROOT, "tests", "fixtures", "diffusers_schedulers")
TRAJECTORIES = np.load(os.path.join(FIXTURES, "trajectories.npz"))
CONFIGS = json.loads(str(TRAJECTORIES["configs"]))
FLOAT32_CONFIGS = [c for c in CONFIGS if c[0].endswith("_sd")]
RTOL = 1e-5


def fake_denoiser(x, t, cond):
  """out = 0.9 x + 0.1 (t / 1000) pattern + cond: make_fixtures.fake_denoiser in jnp."""
  pattern = jnp.asarray(TRAJECTORIES["pattern"], x.dtype)
  t = t.astype(x.dtype)[:, None, None, None]
  return 0.9 * x + 0.1 * (t / 1000) * pattern + cond[:, None, None, :]


def fixture_schedule(name: str, dtype) -> schedules.Schedule:
  """The diffusers tables ("with the same betas"); samplers only read alphas_cumprod."""
  alphas_cumprod = TRAJECTORIES[f"{name}__alphas_cumprod"]
  betas = 1 - alphas_cumprod / np.append(1.0, alphas_cumprod[:-1])
  return schedules.Schedule(
    betas=jnp.asarray(betas, dtype), alphas_cumprod=jnp.asarray(alphas_cumprod, dtype)
  )


def sampler_options(sampler: str, extra: dict) -> dict:
  """diffusers scheduler kwargs -> our sampler's keyword arguments."""
  options = {"eta": extra["eta"]} if "eta" in extra else {}
  if extra.get("clip_sample"):
    options["clip_sample"] = extra["clip_sample_range"]
  if extra.get("thresholding"):
    options["dynamic_threshold"] = (extra["dynamic_thresholding_ratio"], extra["sample_max_value"])
  if "set_alpha_to_one" in extra:
    options["set_alpha_to_one"] = extra["set_alpha_to_one"]
  elif sampler == "ddim":
    options["set_alpha_to_one"] = True  # diffusers' default (ours is SD's False)
  return options


def run_config(config, dtype):
  """Our sampler on a fixture config in `dtype`: (init_noise_sigma, xs [N, ...], reference)."""
  name, sampler, schedule_name, prediction, spacing, offset, num_steps, scale, extra = config
  ref = {k.split("__")[1]: TRAJECTORIES[k] for k in TRAJECTORIES if k.startswith(f"{name}__")}
  schedule = fixture_schedule(schedule_name, dtype)
  options = sampler_options(sampler, extra)
  if "noise" in ref:
    noise = jnp.asarray(ref["noise"], dtype)
    options["noise_fn"] = lambda rng, i, shape, dtype: noise[i]  # the scheduler's own draws
  cond = jnp.asarray(TRAJECTORIES["cond"], dtype)
  uncond = jnp.asarray(TRAJECTORIES["uncond"], dtype) if scale != 1.0 else None

  @jax.jit
  def run(schedule, z, cond, uncond, rng):
    x0, xs = samplers.sample(
      sampler, fake_denoiser, schedule, z, cond, uncond, rng,
      num_steps=num_steps, guidance_scale=scale, spacing=spacing, steps_offset=offset,
      prediction_type=prediction, return_trajectory=True, **options,
    )  # fmt: skip
    init_sigma = samplers.init_noise_sigma(
      sampler, schedule, num_steps=num_steps, spacing=spacing, steps_offset=offset
    )
    return x0, xs, init_sigma

  x0, xs, init_sigma = run(schedule, jnp.asarray(ref["z"], dtype), cond, uncond, jax.random.key(0))
  np.testing.assert_array_equal(x0, xs[-1])
  assert xs.dtype == dtype
  return init_sigma, xs, ref


def relative_error(ours, ref) -> float:
  """max |ours - ref| / max |ref| per step (leading axis), maximised over steps."""
  axes = tuple(range(1, ref.ndim))
  scale = np.max(np.abs(ref), axis=axes)
  return float(np.max(np.max(np.abs(np.asarray(ours, np.float64) - ref), axis=axes) / scale))


@pytest.mark.parametrize("config", CONFIGS, ids=[c[0] for c in CONFIGS])
def test_trajectory_matches_diffusers_float64(config):
  with jax.enable_x64(True):
    init_sigma, xs, ref = run_config(config, jnp.float64)
  np.testing.assert_allclose(init_sigma, ref["init_noise_sigma"], rtol=RTOL)
  error = relative_error(xs, ref["xs"][1:])
  print(f"{config[0]} float64: max relative error {error:.2e}")
  assert error < RTOL


@pytest.mark.parametrize("config", FLOAT32_CONFIGS, ids=[c[0] for c in FLOAT32_CONFIGS])
def test_trajectory_float32_close_to_float64_reference(config):
  init_sigma, xs, ref = run_config(config, jnp.float32)
  np.testing.assert_allclose(init_sigma, ref["init_noise_sigma"], rtol=1e-6)
  error = relative_error(xs, ref["xs"][1:])
  print(f"{config[0]} float32: max relative error {error:.2e}")
  assert error < RTOL


def point_mass_eps(schedule, target):
  """The exact eps-denoiser for data that is always `target`: eps = (x_t - alpha_t c) / sigma_t."""

  def denoise(x, t, cond):
    del cond
    alpha, sigma = schedules.alpha_sigma(schedule, t.astype(jnp.int32), x.ndim)
    return (x - alpha * target) / sigma

  return denoise


@pytest.mark.parametrize("name", list(samplers.SAMPLERS))
def test_every_sampler_recovers_a_point_mass(name):
  schedule = schedules.make_schedule("scaled_linear", beta_start=0.00085, beta_end=0.012)
  target = jnp.linspace(-1.0, 1.0, 4 * 4 * 3).reshape(1, 4, 4, 3)  # broadcast over any batch
  cond = jnp.ones((2, 5, 8))
  options = {"set_alpha_to_one": True} if name == "ddim" else {}  # the last step lands on x_0

  @jax.jit
  def run(schedule, noise, rng):
    return samplers.sample(
      name, point_mass_eps(schedule, target), schedule, noise, cond, jnp.zeros((1, 5, 8)), rng,
      num_steps=5, guidance_scale=3.0, **options,
    )  # fmt: skip

  x0 = run(schedule, jax.random.normal(jax.random.key(1), (2, 4, 4, 3)), jax.random.key(2))
  np.testing.assert_allclose(x0, jnp.broadcast_to(target, x0.shape), atol=2e-4)


def test_guidance_is_one_batched_call():
  calls = []

  def denoise(x, t, cond):
    calls.append((x.shape, t.shape, jax.tree.map(jnp.shape, cond)))
    return x * cond["scale"][:, None, None, None] + t[:, None, None, None]

  x = jax.random.normal(jax.random.key(0), (3, 2, 2, 1))
  t = jnp.full((3,), 7.0)
  cond = {"scale": jnp.array([1.0, 2.0, 3.0])}
  uncond = {"scale": jnp.array([0.5])}  # one "empty prompt" encoding, broadcast over the batch
  out = samplers.guided(denoise, cond, uncond, guidance_scale=4.0)(x, t)
  assert calls == [((6, 2, 2, 1), (6,), {"scale": (6,)})]
  want_cond = denoise(x, t, cond)
  want_uncond = denoise(x, t, {"scale": jnp.full((3,), 0.5)})
  np.testing.assert_allclose(out, want_uncond + 4.0 * (want_cond - want_uncond), rtol=1e-6)
  calls.clear()
  np.testing.assert_array_equal(samplers.guided(denoise, cond, uncond, 1.0)(x, t), want_cond)
  np.testing.assert_array_equal(samplers.guided(denoise, cond, None, 4.0)(x, t), want_cond)
  assert [c[0][0] for c in calls] == [3, 3]  # no uncond half when guidance is off


def test_guidance_rescale_matches_diffusers_formula():
  out_cond, out_uncond = np.random.default_rng(0).normal(size=(2, 1, 3, 3, 4))

  def denoise(x, t, cond):  # cond 1 -> out_cond, cond 0 -> out_uncond
    return jnp.where(cond[:, None, None, None] > 0, out_cond, out_uncond) + 0 * x

  guided = samplers.guided(denoise, jnp.ones((1,)), jnp.zeros((1,)), 5.0, guidance_rescale=0.7)
  # diffusers' rescale_noise_cfg, with torch's unbiased std (the ratio does not depend on it).
  cfg = out_uncond + 5.0 * (out_cond - out_uncond)
  rescaled = cfg * np.std(out_cond, ddof=1) / np.std(cfg, ddof=1)
  want = 0.7 * rescaled + 0.3 * cfg
  np.testing.assert_allclose(guided(jnp.ones((1, 3, 3, 4)), jnp.zeros((1,))), want, rtol=1e-5)


def test_stochastic_samplers_use_their_rng():
  schedule = schedules.make_schedule()
  noise = jax.random.normal(jax.random.key(0), (1, 2, 2, 1))
  run = jax.jit(
    lambda rng: samplers.sample(
      "euler_ancestral", lambda x, t, c: 0.5 * x, schedule, noise, None, None, rng, num_steps=3
    )
  )
  a, b, c = run(jax.random.key(1)), run(jax.random.key(1)), run(jax.random.key(2))
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)


def test_unknown_sampler_names_valid_ones():
  with pytest.raises(ValueError, match="dpmpp_2m"):
    samplers.sample("plms", None, None, None, None, None, None, num_steps=1)


def test_init_noise_sigma():
  schedule = schedules.make_schedule("scaled_linear", beta_start=0.00085, beta_end=0.012)
  assert float(samplers.init_noise_sigma("ddim", schedule, num_steps=10)) == 1.0
  sigma_max = euler.step_sigmas(schedule, 10, "trailing", 0)[1][0]
  got = samplers.init_noise_sigma("euler", schedule, num_steps=10, spacing="trailing")
  assert float(got) == float(sigma_max)
