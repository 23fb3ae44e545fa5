"""Builds the KL-autoencoder `Task` (Stable Diffusion design) for latent diffusion.

Loss, per image as in LDM: the reconstruction error (l1 | l2) summed over pixels + kl_weight * KL
summed over latent dims, and optionally disc_weight * a patch discriminator's hinge loss (per
pixel, so disc_weight is relative to the reconstruction) switched on after `disc_start` steps. At num_steps the run exports
`workdir/export/` (`t2i_jax.vae.export`), with the latent scaling factor measured on training
images (1 / std of the latents, how Stable Diffusion's 0.18215 was chosen), for configs/ldm_*.py.
"""

import functools
import logging
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import struct

from t2i_jax.data.sources import make_source
from t2i_jax.gan.steps import to_float_images
from t2i_jax.models import vae_losses
from t2i_jax.models.vae import AutoencoderKL
from t2i_jax.train.optim import make_optimizer
from t2i_jax.train.state import NetworkState
from t2i_jax.train.task import Task
from t2i_jax.vae import export

GRID_IMAGES = 16
SCALE_IMAGES = 256  # training images whose latents set the scaling factor


class VAEState(struct.PyTreeNode):
  step: jax.Array
  vae: NetworkState
  disc: NetworkState | None  # the patch discriminator (None when disc_weight = 0)


@struct.dataclass
class VAESetup:
  model: AutoencoderKL = struct.field(pytree_node=False)
  disc: Any = struct.field(pytree_node=False)  # PatchDiscriminator or None
  tx: optax.GradientTransformation = struct.field(pytree_node=False)
  disc_tx: Any = struct.field(pytree_node=False)
  resolution: int = struct.field(pytree_node=False)
  recon_loss: str = struct.field(pytree_node=False)
  kl_weight: float = struct.field(pytree_node=False)
  disc_weight: float = struct.field(pytree_node=False)
  disc_start: int = struct.field(pytree_node=False)


def init(rng: jax.Array, setup: VAESetup) -> VAEState:
  vae_rng, disc_rng = jax.random.split(rng)
  images = jnp.zeros((1, setup.resolution, setup.resolution, 3), jnp.float32)
  disc = None
  if setup.disc is not None:
    disc = NetworkState.create(setup.disc.init(disc_rng, images), setup.disc_tx)
  return VAEState(
    step=jnp.zeros((), jnp.int32),
    vae=NetworkState.create(setup.model.init(vae_rng, images), setup.tx),
    disc=disc,
  )


def train_step(state: VAEState, batch, rng: jax.Array, *, setup: VAESetup):
  """One autoencoder update (and one discriminator update when it is on).

  Args:
    batch: image uint8[B, H, W, 3].
  """
  rng = jax.random.fold_in(rng, state.step)
  x = to_float_images(batch["image"])
  use_disc = setup.disc is not None
  # 0 before disc_start: the adversarial term joins once reconstructions are reasonable.
  adv_on = (state.step >= setup.disc_start).astype(jnp.float32) if use_disc else 0.0

  pixels = x.shape[1] * x.shape[2] * x.shape[3]

  def loss_fn(params):
    out = setup.model.apply({"params": params}, x, rng)
    rec = vae_losses.reconstruction_loss(x, out["recon"], setup.recon_loss)
    kl = vae_losses.kl_loss(out["mean"], out["logvar"])
    # LDM's balance: the reconstruction error summed over pixels (like the KL over latent dims),
    # so kl_weight means what it does there (1e-6); a per-pixel mean against a summed KL lets the
    # KL win and the latents collapse.
    loss = pixels * rec + setup.kl_weight * kl
    g_adv = jnp.zeros(())
    if use_disc:
      g_adv = vae_losses.generator_adversarial_loss(
        setup.disc.apply({"params": state.disc.params}, out["recon"])
      )
      loss = loss + adv_on * setup.disc_weight * pixels * g_adv
    return loss, (out["recon"], rec, kl, g_adv)

  (loss, (recon, rec, kl, g_adv)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
    state.vae.params
  )
  new_state = state.replace(step=state.step + 1, vae=state.vae.apply_gradients(grads, setup.tx))
  metrics = {"train/loss": loss, "train/reconstruction": rec, "train/kl": kl}
  if use_disc:
    fake = jax.lax.stop_gradient(recon)

    def disc_loss_fn(params):
      real_logits = setup.disc.apply({"params": params}, x)
      fake_logits = setup.disc.apply({"params": params}, fake)
      return vae_losses.discriminator_hinge_loss(real_logits, fake_logits)

    d_loss, d_grads = jax.value_and_grad(disc_loss_fn)(state.disc.params)
    d_grads = jax.tree.map(lambda g: adv_on * g, d_grads)  # D waits for disc_start too
    new_state = new_state.replace(disc=state.disc.apply_gradients(d_grads, setup.disc_tx))
    metrics |= {"train/g_adversarial": g_adv, "train/d_loss": d_loss}
  return new_state, metrics


def eval_step(state: VAEState, batch, rng: jax.Array, *, setup: VAESetup):
  """Sums over the batch of posterior-mean reconstruction errors, PSNR and KL."""
  del rng
  x = to_float_images(batch["image"])
  out = setup.model.apply({"params": state.vae.params}, x)
  per_image_mse = jnp.mean(jnp.square(out["recon"] - x), axis=(1, 2, 3))
  per_image_l1 = jnp.mean(jnp.abs(out["recon"] - x), axis=(1, 2, 3))
  # PSNR of [0, 1] images: the [-1, 1] MSE is 4x larger.
  psnr = 10.0 * jnp.log10(4.0 / jnp.maximum(per_image_mse, 1e-10))
  return {
    "mse_sum": jnp.sum(per_image_mse),
    "l1_sum": jnp.sum(per_image_l1),
    "psnr_sum": jnp.sum(psnr),
    "kl_sum": x.shape[0] * vae_losses.kl_loss(out["mean"], out["logvar"]),
    "num_examples": jnp.asarray(x.shape[0], jnp.float32),
  }


def finalize_eval(sums: dict[str, float]) -> dict[str, float]:
  n = max(sums["num_examples"], 1.0)
  names = {"mse_sum": "mse", "l1_sum": "l1", "psnr_sum": "psnr", "kl_sum": "kl"}
  return {f"eval/{name}": sums[key] / n for key, name in names.items()}


def sample(state: VAEState, inputs, rng: jax.Array, *, setup: VAESetup):
  """Grid: each fixed eval image followed by its reconstruction. [2N, H, W, 3] in [-1, 1]."""
  del rng
  x = to_float_images(inputs["image"])
  recon = setup.model.apply({"params": state.vae.params}, x)["recon"]
  return jnp.stack([x, jnp.clip(recon, -1.0, 1.0)], axis=1).reshape(-1, *x.shape[1:])


def latent_std(model: AutoencoderKL, params, images: np.ndarray, batch_size: int = 64) -> float:
  """Std of the posterior-mean latents (unscaled) of uint8 images [N, H, W, 3], in float64."""
  encode = jax.jit(lambda p, x: model.apply({"params": p}, to_float_images(x), method="encode")[0])
  latents = [
    np.asarray(encode(params, images[i : i + batch_size]), np.float64)
    for i in range(0, len(images), batch_size)
  ]
  return float(np.concatenate(latents).std())


def vae_kwargs(config: ml_collections.ConfigDict) -> dict[str, Any]:
  m = config.model
  return dict(
    block_out_channels=tuple(m.block_out_channels),
    layers_per_block=m.layers_per_block,
    latent_channels=m.latent_channels,
    norm_num_groups=m.norm_num_groups,
    mid_attention=m.mid_attention,
  )


def build_vae_task(config: ml_collections.ConfigDict) -> Task:
  m, o = config.model, config.optim
  if m.recon_loss not in vae_losses.RECONSTRUCTION_KINDS:
    raise ValueError(
      f"Unknown config.model.recon_loss {m.recon_loss!r}; valid: "
      f"{', '.join(vae_losses.RECONSTRUCTION_KINDS)}."
    )
  kwargs = vae_kwargs(config)
  model = AutoencoderKL(**kwargs)
  if config.data.resolution % model.downsampling_factor:
    raise ValueError(
      f"config.data.resolution={config.data.resolution} is not divisible by the autoencoder's "
      f"downsampling factor {model.downsampling_factor} (2^(len(block_out_channels) - 1))."
    )
  disc = None
  if m.disc_weight > 0:
    disc = vae_losses.PatchDiscriminator(
      base_channels=m.disc_width, num_layers=m.disc_layers, norm_num_groups=m.norm_num_groups
    )
  tx = make_optimizer("adam", o.lr, o.b1, o.b2, warmup_steps=o.warmup_steps)
  setup = VAESetup(
    model=model,
    disc=disc,
    tx=tx,
    disc_tx=None if disc is None else make_optimizer("adam", o.lr, o.b1, o.b2),
    resolution=config.data.resolution,
    recon_loss=m.recon_loss,
    kl_weight=m.kl_weight,
    disc_weight=m.disc_weight,
    disc_start=m.disc_start,
  )
  eval_source = make_source(config.data, config.data.eval_split)
  grid_images = eval_source.get_batch(np.arange(min(GRID_IMAGES, len(eval_source))))["image"]

  def export_vae(state: VAEState, workdir: str) -> None:
    path = os.path.join(workdir, export.EXPORT_DIR)
    if export.is_export(path):
      return  # already exported by an earlier run that reached num_steps
    train = make_source(config.data, "train")
    images = train.get_batch(np.arange(min(SCALE_IMAGES, len(train))))["image"]
    params = jax.device_get(state.vae.params)
    scaling = 1.0 / max(latent_std(model, params, images), 1e-6)
    export.save_vae(path, kwargs | {"scaling_factor": scaling}, params)
    logging.info("Exported the autoencoder to %s (latent scaling factor %.4f).", path, scaling)

  return Task(
    init=functools.partial(init, setup=setup),
    train_step=functools.partial(train_step, setup=setup),
    eval_step=functools.partial(eval_step, setup=setup),
    finalize_eval=finalize_eval,
    sample=functools.partial(sample, setup=setup),
    sample_inputs={"image": grid_images},
    sample_captions=None,
    grid_columns=8,
    preprocess=lambda batch: {"image": batch["image"]},
    export=export_vae,
  )
