"""The sampling entry point: a registry of samplers and classifier-free guidance around a denoiser.

  model_fn = guided(denoise_fn, cond, uncond, guidance_scale)   # one batched model call per step
  x0 = SAMPLERS[name](model_fn, schedule, noise, rng, num_steps=..., **options)

or both at once with `sample(name, ...)`. Every sampler is one jittable function (the loop is a
`lax.scan`, the step count and options static, the schedule tables a pytree argument) that starts
from standard-normal `noise` (scaled by `init_noise_sigma` inside) and matches the diffusers 0.42.1
scheduler of the same name step for step (tests/diffusion/test_samplers.py). Shared options:
num_steps, spacing ("leading" | "trailing" | "linspace"; default "leading" with steps_offset=1, as
in Stable Diffusion's configs, for every sampler, where diffusers' defaults differ per scheduler),
prediction_type ("epsilon" | "v_prediction" | "sample"; SD 1.x: epsilon, SD 2.x 768: v) and
return_trajectory. Sampler-specific ones are documented on each function. The denoiser gets the
diffusers timestep value as float32[B] (integers, except Euler's fractional "linspace" ones).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from t2i_jax.diffusion import ddpm_ddim, dpm_solver, euler
from t2i_jax.diffusion.sampler_loop import ModelFn
from t2i_jax.diffusion.schedules import Schedule

# name -> sampler(model_fn, schedule, noise, rng, *, num_steps, **options) -> x_0 [B, ...]
SAMPLERS = {
  "ddpm": ddpm_ddim.ddpm,  # diffusers DDPMScheduler
  "ddim": ddpm_ddim.ddim,  # DDIMScheduler (eta)
  "dpmpp_2m": dpm_solver.dpmpp_2m,  # DPMSolverMultistepScheduler, dpmsolver++, order 2
  "euler": euler.euler,  # EulerDiscreteScheduler
  "euler_ancestral": euler.euler_ancestral,  # EulerAncestralDiscreteScheduler
}

# denoise_fn(x: float[B, ...], t: float32[B], cond: pytree with leading dim B) -> float[B, ...]
DenoiseFn = Callable[[jax.Array, jax.Array, Any], jax.Array]


def guided(
  denoise_fn: DenoiseFn,
  cond: Any,
  uncond: Any = None,
  guidance_scale: float | jax.Array = 1.0,
  guidance_rescale: float = 0.0,
) -> ModelFn:
  """Classifier-free guidance (Ho & Salimans 2022) as a model_fn(x, t) for the samplers.

  out = out_uncond + s (out_cond - out_uncond), with x, t and uncond/cond concatenated along the
  batch so each step makes ONE model call on 2B examples (uncond first, as SD pipelines do). A
  negative prompt is just its encoding passed as `uncond`.

  Args:
    denoise_fn: (x [B, ...], t float32[B], cond) -> output [B, ...] (eps, v or x0).
    cond: the condition, any pytree of arrays with leading dim B (e.g. text states [B, L, D]).
    uncond: same structure; leading dim B or 1 (broadcast, e.g. one empty-prompt encoding).
      None turns guidance off: out = denoise_fn(x, t, cond).
    guidance_scale: s; may be traced. A Python 1.0 also turns guidance off (same value, half
      the compute).
    guidance_rescale: phi of Lin et al. (2023) section 3.4 (diffusers' `guidance_rescale`):
      out -> phi out std(out_cond) / std(out) + (1 - phi) out, per example, against the
      over-exposure large scales cause with zero-terminal-SNR models. Static; 0 is off.
  """
  if uncond is None or (isinstance(guidance_scale, int | float) and guidance_scale == 1.0):
    return lambda x, t: denoise_fn(x, t, cond)

  def model_fn(x, t):
    both = jax.tree.map(
      lambda u, c: jnp.concatenate([jnp.broadcast_to(u, c.shape).astype(c.dtype), c]),
      uncond,
      cond,
    )
    out = denoise_fn(jnp.concatenate([x, x]), jnp.concatenate([t, t]), both)
    out_uncond, out_cond = jnp.split(out, 2)
    out = out_uncond + guidance_scale * (out_cond - out_uncond)
    if guidance_rescale > 0:
      axes = tuple(range(1, out.ndim))
      std_ratio = jnp.std(out_cond, axes, keepdims=True) / jnp.std(out, axes, keepdims=True)
      out = guidance_rescale * (out * std_ratio) + (1 - guidance_rescale) * out
    return out

  return model_fn


def sample(
  name: str,
  denoise_fn: DenoiseFn,
  schedule: Schedule,
  noise: jax.Array,
  cond: Any,
  uncond: Any,
  rng: jax.Array | None,
  *,
  num_steps: int,
  guidance_scale: float | jax.Array = 7.5,
  guidance_rescale: float = 0.0,
  **options,
):
  """Samples x_0 with sampler `name` and classifier-free guidance; jit with name/options static.

  Args:
    name: a key of SAMPLERS.
    denoise_fn, cond, uncond, guidance_scale, guidance_rescale: see `guided`.
    schedule: the schedule the denoiser was trained with.
    noise: float[B, ...] standard normal (x_T before the sampler's init_noise_sigma).
    rng: key for stochastic samplers ("ddpm", "ddim" with eta > 0, "euler_ancestral").
    num_steps: number of denoiser evaluations (each on 2B examples when guided).
    **options: spacing, steps_offset, prediction_type, return_trajectory and the sampler's own
      (ddim: eta, set_alpha_to_one; ddpm/ddim: clip_sample; ddpm/ddim/dpmpp_2m:
      dynamic_threshold; stochastic ones: noise_fn).

  Returns:
    x_0: float[B, ...] (or (x_0, trajectory [N, B, ...]) with return_trajectory=True).

  Example (`params` a jit argument, not a closed-over constant):
    @functools.partial(jax.jit, static_argnames="num_steps")
    def generate(params, schedule, noise, text, null_text, rng, num_steps=50):
      denoise = lambda x, t, c: unet.apply(params, x, t, c)
      return sample("dpmpp_2m", denoise, schedule, noise, text, null_text, rng,
                    num_steps=num_steps, guidance_scale=7.5)
  """
  if name not in SAMPLERS:
    raise ValueError(f"Unknown sampler {name!r}; valid samplers are {tuple(SAMPLERS)}.")
  model_fn = guided(denoise_fn, cond, uncond, guidance_scale, guidance_rescale)
  return SAMPLERS[name](model_fn, schedule, noise, rng, num_steps=num_steps, **options)


def init_noise_sigma(
  name: str, schedule: Schedule, *, num_steps: int, spacing: str = "leading", steps_offset: int = 1
) -> jax.Array:
  """The std of x_T the sampler starts from (it multiplies `noise` by this itself).

  1 except for the Euler samplers, whose x lives in the VE space (x_t / alpha_t): there it is the
  largest sigma visited, or sqrt(sigma^2 + 1) with "leading" spacing (diffusers'
  `init_noise_sigma`). To start from a ready x_T, pass x_T / init_noise_sigma as `noise`.
  """
  if name in ("euler", "euler_ancestral"):
    return euler.init_noise_sigma(
      schedule, num_steps=num_steps, spacing=spacing, steps_offset=steps_offset
    )
  return jnp.ones((), schedule.alphas_cumprod.dtype)
