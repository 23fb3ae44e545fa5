"""StackGAN state and pure steps (Zhang et al., ICCV 2017), for Stage I and Stage II.

One jitted step updates D then G as the authors' trainer does: one fake batch per step (D sees it
detached, G's loss recomputes it with the same z and CA noise through the updated D), D trained
matching-aware (GAN-CLS) and G's loss = adversarial + kl_weight * KL of conditioning augmentation.

Text enters as a fixed embedding [B, E]: the projected text embedding of a frozen CLIP, or
precomputed embeddings from the batch (StackGAN's char-CNN-RNN). Stage II refines the images of a
frozen Stage-I generator (inference-mode BatchNorm, CA sampled), so nothing of Stage I trains.
Frozen parts (text encoder, Stage-I G) live in `state.frozen`: checkpointed with the run, never
given to an optimizer.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from t2i_jax.gan import losses, steps
from t2i_jax.gan.conditioning import NOISE_RNG, kl_divergence
from t2i_jax.models.clip import CLIP
from t2i_jax.train.state import NetworkState, ema_update

TEXT_SOURCES = ("clip", "char_cnn_rnn")


class StackGANState(struct.PyTreeNode):
  step: jax.Array
  generator: NetworkState
  discriminator: NetworkState
  ema_params: Any  # EMA of the generator params, used for samples
  # {"text": frozen CLIP text params (or {}), "stage1": Stage-I G variables (Stage II, or {})}.
  frozen: Any


@struct.dataclass
class StackGANSetup:
  """The static parts of the steps (bound with functools.partial before jit)."""

  stage: int = struct.field(pytree_node=False)  # 1 or 2
  generator: nn.Module = struct.field(pytree_node=False)  # Stage1Generator | Stage2Generator
  discriminator: nn.Module = struct.field(pytree_node=False)
  g_tx: optax.GradientTransformation = struct.field(pytree_node=False)
  d_tx: optax.GradientTransformation = struct.field(pytree_node=False)
  z_dim: int = struct.field(pytree_node=False)
  resolution: int = struct.field(pytree_node=False)  # D's input side (64, 128 or 256)
  embed_dim: int = struct.field(pytree_node=False)  # E of the text embedding
  text_source: str = struct.field(pytree_node=False)  # "clip" | "char_cnn_rnn"
  cond_length: int = struct.field(pytree_node=False)  # CLIP token ids per caption
  kl_weight: float = struct.field(pytree_node=False)
  loss: str = struct.field(pytree_node=False)
  ema_decay: float = struct.field(pytree_node=False)
  clip_model: Any = struct.field(pytree_node=False, default=None)  # CLIP module ("clip")
  stage1_generator: Any = struct.field(pytree_node=False, default=None)  # Stage II
  # Host trees copied into state.frozen at init: {"text": ..., "stage1": ...}.
  frozen: Any = struct.field(pytree_node=False, default=None)


def text_embedding(setup: StackGANSetup, frozen, inputs) -> jax.Array:
  """The fixed text embedding float32[B, E] of a batch (tokens [B, L] or text_embedding [B, E])."""
  if setup.text_source == "clip":
    embed = setup.clip_model.apply(
      {"params": frozen["text"]}, inputs["tokens"], method=CLIP.embed_text
    )
  else:
    embed = inputs["text_embedding"].astype(jnp.float32)
  return jax.lax.stop_gradient(embed)


def init(rng: jax.Array, setup: StackGANSetup) -> StackGANState:
  """Boxed (logically partitioned) initial state; run under `jax.jit`/`jax.eval_shape`."""
  g_rng, d_rng = jax.random.split(rng)
  embed = jnp.zeros((2, setup.embed_dim), jnp.float32)
  if setup.stage == 1:
    g_input = jnp.zeros((2, setup.z_dim), jnp.float32)
  else:
    g_input = jnp.zeros((2, 64, 64, 3), jnp.float32)
  g_vars = dict(setup.generator.init(g_rng, g_input, embed, train=False))
  images = jnp.zeros((2, setup.resolution, setup.resolution, 3), jnp.float32)
  d_vars = dict(setup.discriminator.init(d_rng, images, embed, train=False))
  generator = NetworkState.create(g_vars, setup.g_tx)
  return StackGANState(
    step=jnp.zeros((), jnp.int32),
    generator=generator,
    discriminator=NetworkState.create(d_vars, setup.d_tx),
    ema_params=generator.params,
    frozen=jax.tree.map(jnp.asarray, setup.frozen),
  )


def _generator_input(setup: StackGANSetup, frozen, z, embed, rng, sample: bool = True):
  """Stage I: z itself. Stage II: the frozen Stage-I images float32[B, 64, 64, 3] for (z, text)."""
  if setup.stage == 1:
    return z
  images, _, _ = setup.stage1_generator.apply(
    frozen["stage1"], z, embed, train=False, sample=sample, rngs={NOISE_RNG: rng}
  )
  return jax.lax.stop_gradient(images)


def train_step(state: StackGANState, batch, rng: jax.Array, *, setup: StackGANSetup):
  """One D update then one G update on the same batch.

  Args:
    batch: image uint8[B, R, R, 3], plus tokens int32[B, L] ("clip") or text_embedding
      float32[B, E] ("char_cnn_rnn").

  Returns:
    (new state, metrics): D and G losses, the KL term and D's accuracies.
  """
  rng = jax.random.fold_in(rng, state.step)
  z_rng, ca_rng, stage1_rng = jax.random.split(rng, 3)
  real = steps.to_float_images(batch["image"])
  embed = text_embedding(setup, state.frozen, batch)
  z = jax.random.normal(z_rng, (real.shape[0], setup.z_dim), jnp.float32)
  g_input = _generator_input(setup, state.frozen, z, embed, stage1_rng)
  g, d = state.generator, state.discriminator

  def run_generator(g_params):
    (fake, mu, logvar), updates = setup.generator.apply(
      g.variables(g_params),
      g_input,
      embed,
      train=True,
      mutable=["batch_stats"],
      rngs={NOISE_RNG: ca_rng},  # the same CA draw in the D and G passes
    )
    return fake, mu, logvar, updates["batch_stats"]

  fake = jax.lax.stop_gradient(run_generator(g.params)[0])

  def d_loss_fn(d_params):
    logits, stats = steps.discriminate(setup, d.variables(d_params), real, fake, embed)
    return steps.matching_aware_d_loss(logits, setup.loss), (stats, logits)

  (d_loss, (d_stats, d_logits)), d_grads = jax.value_and_grad(d_loss_fn, has_aux=True)(d.params)
  d = d.apply_gradients(d_grads, setup.d_tx, batch_stats=d_stats)

  def g_loss_fn(g_params):
    fake, mu, logvar, g_stats = run_generator(g_params)
    logits, _ = steps.discriminate(setup, d.variables(), real, fake, embed)  # D's stats dropped
    adversarial = losses.generator_loss(logits["fake"], setup.loss)
    kl = kl_divergence(mu, logvar)
    return adversarial + setup.kl_weight * kl, (g_stats, logits, adversarial, kl)

  (g_loss, (g_stats, g_logits, adversarial, kl)), g_grads = jax.value_and_grad(
    g_loss_fn, has_aux=True
  )(g.params)
  g = g.apply_gradients(g_grads, setup.g_tx, batch_stats=g_stats)

  new_state = state.replace(
    step=state.step + 1,
    generator=g,
    discriminator=d,
    ema_params=ema_update(state.ema_params, g.params, state.step, setup.ema_decay),
  )
  metrics = {
    "train/d_loss": d_loss,
    "train/g_loss": g_loss,
    "train/g_adversarial_loss": adversarial,
    "train/kl": kl,
  }
  return new_state, metrics | steps.d_metrics(d_logits, g_logits)


def generate(state: StackGANState, z, embed, rng, *, setup: StackGANSetup, use_ema=True, sample):
  """Inference-mode images of this stage: (stage input float32[B, ...], images float32[B, R, R, 3]).

  sample: draw CA's c_hat (from `rng`) or use its mean mu; Stage II's frozen Stage I does the same.
  """
  params = state.ema_params if use_ema else state.generator.params
  stage1_rng, ca_rng = jax.random.split(rng)
  g_input = _generator_input(setup, state.frozen, z, embed, stage1_rng, sample=sample)
  images, _, _ = setup.generator.apply(
    state.generator.variables(params),
    g_input,
    embed,
    train=False,
    sample=sample,
    rngs={NOISE_RNG: ca_rng},
  )
  return g_input, images


def eval_step(state: StackGANState, batch, rng: jax.Array, *, setup: StackGANSetup):
  """D as a real/fake/mismatch classifier on held-out images and fresh samples, plus G's KL."""
  real = steps.to_float_images(batch["image"])
  embed = text_embedding(setup, state.frozen, batch)
  z_rng, g_rng = jax.random.split(rng)
  z = jax.random.normal(z_rng, (real.shape[0], setup.z_dim), jnp.float32)
  g_input, fake = generate(state, z, embed, g_rng, setup=setup, use_ema=False, sample=True)
  sums = steps.eval_sums(setup, state.discriminator.variables(), real, fake, embed)
  _, mu, logvar = setup.generator.apply(
    state.generator.variables(), g_input, embed, train=False, sample=False
  )
  sums["kl_sum"] = real.shape[0] * kl_divergence(mu, logvar)
  return sums


def finalize_eval(sums: dict[str, float]) -> dict[str, float]:
  results = steps.finalize_eval(sums)
  results["eval/kl"] = sums["kl_sum"] / max(sums["num_examples"], 1.0)
  return results


def sample(state: StackGANState, inputs, rng: jax.Array, *, setup: StackGANSetup):
  """Grid images: fixed z, CA at its mean. Stage I: [N, 64, 64, 3]. Stage II: [2N, R, R, 3],
  each caption's Stage-I image (bilinearly upsampled to R) followed by its Stage-II refinement.
  """
  del rng  # fixed inputs, so that grids of different steps compare
  embed = text_embedding(setup, state.frozen, inputs)
  g_input, images = generate(
    state, inputs["z"], embed, jax.random.key(0), setup=setup, sample=False
  )
  if setup.stage == 1:
    return images
  n, r = images.shape[0], setup.resolution
  upsampled = jax.image.resize(g_input, (n, r, r, 3), "bilinear")
  return jnp.stack([upsampled, images], axis=1).reshape(2 * n, r, r, 3)
