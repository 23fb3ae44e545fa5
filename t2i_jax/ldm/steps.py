"""Latent-diffusion state and pure steps: denoising loss on autoencoder latents, EMA, samples.

The autoencoder (and a pretrained CLIP text tower) are frozen: they sit in `state.frozen`,
checkpointed with the run and never given to the optimizer. A text encoder trained with the UNet
("word") lives in the trained params beside it: `state.net.params = {"unet": ..., "text": ...}`.
Classifier-free guidance is trained by swapping an example's caption for the empty caption with
probability `cond_drop_prob`.
"""

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

from t2i_jax.diffusion import losses
from t2i_jax.diffusion.schedules import Schedule
from t2i_jax.gan.steps import to_float_images
from t2i_jax.ldm.parts import LDMParts, generate
from t2i_jax.train.state import NetworkState, ema_update


class LDMState(struct.PyTreeNode):
  step: jax.Array
  net: NetworkState  # params {"unet": ..., "text": ... (when trained)}
  ema_params: Any  # EMA of net.params, used for samples and the export
  frozen: Any  # {"vae": ..., "text": ... (a frozen CLIP text tower, else {})}


@struct.dataclass
class LDMSetup:
  parts: LDMParts = struct.field(pytree_node=False)
  tx: optax.GradientTransformation = struct.field(pytree_node=False)
  schedule: Schedule  # noise-schedule tables (constants of the jitted steps)
  uncond_tokens: jax.Array  # int32[1, L]: the empty caption
  latent_shape: tuple[int, int, int] = struct.field(pytree_node=False)
  cond_length: int = struct.field(pytree_node=False)
  train_text: bool = struct.field(pytree_node=False)
  weighting: str = struct.field(pytree_node=False)
  min_snr_gamma: float = struct.field(pytree_node=False)
  cond_drop_prob: float = struct.field(pytree_node=False)
  ema_decay: float = struct.field(pytree_node=False)
  sampler: str = struct.field(pytree_node=False)
  num_sample_steps: int = struct.field(pytree_node=False)
  guidance_scale: float = struct.field(pytree_node=False)
  frozen: Any = struct.field(pytree_node=False, default=None)  # host trees copied at init
  text_init: Any = struct.field(pytree_node=False, default=None)  # "word": init of the encoder


def text_params(setup: LDMSetup, params, frozen):
  return params["text"] if setup.train_text else frozen["text"]


def all_params(setup: LDMSetup, params, frozen) -> dict[str, Any]:
  """The {"unet", "vae", "text"} params `generate` takes."""
  return {"unet": params["unet"], "vae": frozen["vae"], "text": text_params(setup, params, frozen)}


def init(rng: jax.Array, setup: LDMSetup) -> LDMState:
  """Boxed (logically partitioned) initial state; run under `jax.jit`/`jax.eval_shape`."""
  unet_rng, text_rng = jax.random.split(rng)
  h, w, c = setup.latent_shape
  frozen = jax.tree.map(jnp.asarray, setup.frozen)
  tokens = jnp.ones((1, setup.cond_length), jnp.int32)
  params = {}
  if setup.train_text:
    params["text"] = setup.text_init(text_rng, tokens)["params"]
  cond = setup.parts.encode_text(text_params(setup, params, frozen), tokens)
  x = jnp.zeros((1, h, w, c), jnp.float32)
  t = jnp.zeros((1,), jnp.float32)
  params["unet"] = setup.parts.unet.init(unet_rng, x, t, cond["context"], cond["mask"])["params"]
  net = NetworkState.create({"params": params}, setup.tx)
  return LDMState(step=jnp.zeros((), jnp.int32), net=net, ema_params=net.params, frozen=frozen)


def _loss(setup: LDMSetup, params, frozen, latents, tokens, rng):
  parts = setup.parts
  text = text_params(setup, params, frozen)
  cond = parts.encode_text(text, tokens)
  uncond = parts.encode_text(text, setup.uncond_tokens)

  def denoise(x, t, c):
    return parts.denoise(params["unet"], x, t, c)

  return losses.diffusion_loss(
    denoise,
    setup.schedule,
    latents,
    cond,
    rng,
    prediction_type=parts.prediction_type,
    weighting=setup.weighting,
    min_snr_gamma=setup.min_snr_gamma,
    uncond=uncond,
    cond_drop_prob=setup.cond_drop_prob,
  )


def train_step(state: LDMState, batch, rng: jax.Array, *, setup: LDMSetup):
  """One optimizer step on the denoising loss.

  Args:
    batch: image uint8[B, H, W, 3], tokens int32[B, L].
  """
  rng = jax.random.fold_in(rng, state.step)
  latent_rng, loss_rng = jax.random.split(rng)
  images = to_float_images(batch["image"])
  latents = setup.parts.encode_images(state.frozen["vae"], images, latent_rng)
  latents = jax.lax.stop_gradient(latents)

  def loss_fn(params):
    return _loss(setup, params, state.frozen, latents, batch["tokens"], loss_rng)

  (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.net.params)
  net = state.net.apply_gradients(grads, setup.tx)
  new_state = state.replace(
    step=state.step + 1,
    net=net,
    ema_params=ema_update(state.ema_params, net.params, state.step, setup.ema_decay),
  )
  return new_state, {
    "train/loss": loss,
    "train/mse": metrics["mse"],
    "train/cond_drop_rate": metrics["cond_drop_rate"],
    "train/grad_norm": optax.tree.norm(grads),
  }


def eval_step(state: LDMState, batch, rng: jax.Array, *, setup: LDMSetup):
  """Denoising loss of the EMA model on held-out images (random t, posterior mean), summed."""
  images = to_float_images(batch["image"])
  latents = setup.parts.encode_images(state.frozen["vae"], images, None)
  n = images.shape[0]
  no_drop = setup.replace(cond_drop_prob=0.0)
  loss, metrics = _loss(no_drop, state.ema_params, state.frozen, latents, batch["tokens"], rng)
  return {
    "loss_sum": n * loss,
    "mse_sum": n * metrics["mse"],
    "num_examples": jnp.asarray(n, jnp.float32),
  }


def finalize_eval(sums: dict[str, float]) -> dict[str, float]:
  n = max(sums["num_examples"], 1.0)
  return {"eval/loss": sums["loss_sum"] / n, "eval/mse": sums["mse_sum"] / n}


def sample(state: LDMState, inputs, rng: jax.Array, *, setup: LDMSetup):
  """EMA-model images for inputs {"tokens" int32[N, L], "noise" float32[N, h, w, C]}, with the
  config's sampler, step count and guidance scale. float32[N, H, W, 3] in [-1, 1]."""
  params = all_params(setup, state.ema_params, state.frozen)
  return generate(
    params,
    setup.schedule,
    inputs["tokens"],
    setup.uncond_tokens,
    inputs["noise"],
    rng,
    jnp.float32(setup.guidance_scale),
    parts=setup.parts,
    sampler=setup.sampler,
    num_steps=setup.num_sample_steps,
  )
