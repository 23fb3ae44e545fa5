"""GAN state and pure steps: one jitted step updates D then G (Radford et al. 2016 schedule).

Conditional models are trained matching-aware (GAN-CLS, Reed et al. 2016): D scores a real image
with a mismatched condition as fake, next to generated images with the right condition.
"""

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from t2i_jax.gan import losses
from t2i_jax.train.state import NetworkState, ema_update


class GANState(struct.PyTreeNode):
  """Generator and discriminator in one struct, so one jitted step updates both."""

  step: jax.Array
  generator: NetworkState
  discriminator: NetworkState
  ema_params: Any  # EMA of the generator params, used for samples


@struct.dataclass
class GANSetup:
  """The static parts of the steps (bound with functools.partial before jit)."""

  generator: nn.Module = struct.field(pytree_node=False)
  discriminator: nn.Module = struct.field(pytree_node=False)
  g_tx: optax.GradientTransformation = struct.field(pytree_node=False)
  d_tx: optax.GradientTransformation = struct.field(pytree_node=False)
  nz: int = struct.field(pytree_node=False)
  resolution: int = struct.field(pytree_node=False)
  condition: str = struct.field(pytree_node=False)  # "none" | "label" | "text"
  cond_length: int = struct.field(pytree_node=False)  # token ids per caption ("text")
  loss: str = struct.field(pytree_node=False)
  ema_decay: float = struct.field(pytree_node=False)
  # Applied to freshly initialised G and D params, e.g. to load a frozen pretrained text encoder.
  prepare_params: Any = struct.field(pytree_node=False, default=lambda params: params)


def condition_of(batch, condition: str):
  """The conditioning input in a batch: labels int32[B], token ids int32[B, L] or None."""
  return {"none": None, "label": batch.get("label"), "text": batch.get("tokens")}[condition]


def _dummy_condition(setup: GANSetup, batch_size: int):
  if setup.condition == "label":
    return jnp.zeros((batch_size,), jnp.int32)
  if setup.condition == "text":
    return jnp.ones((batch_size, setup.cond_length), jnp.int32)
  return None


def init(rng: jax.Array, setup: GANSetup) -> GANState:
  """Boxed (logically partitioned) initial state; run under `jax.jit`/`jax.eval_shape`."""
  g_rng, d_rng = jax.random.split(rng)
  z = jnp.zeros((2, setup.nz), jnp.float32)
  cond = _dummy_condition(setup, 2)
  g_vars = dict(setup.generator.init(g_rng, z, cond, train=False))
  images = jnp.zeros((2, setup.resolution, setup.resolution, 3), jnp.float32)
  d_vars = dict(setup.discriminator.init(d_rng, images, cond, train=False))
  g_vars["params"] = setup.prepare_params(g_vars["params"])
  d_vars["params"] = setup.prepare_params(d_vars["params"])
  generator = NetworkState.create(g_vars, setup.g_tx)
  return GANState(
    step=jnp.zeros((), jnp.int32),
    generator=generator,
    discriminator=NetworkState.create(d_vars, setup.d_tx),
    ema_params=generator.params,
  )


def _mismatched(cond: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Each example paired with the next one's condition, and whether that really differs."""
  wrong = jnp.roll(cond, 1, axis=0)
  differs = cond != wrong if cond.ndim == 1 else jnp.any(cond != wrong, axis=-1)
  return wrong, differs.astype(jnp.float32)


def to_float_images(images: jax.Array) -> jax.Array:
  """uint8[B, H, W, C] -> float32 in [-1, 1]."""
  return images.astype(jnp.float32) / 127.5 - 1.0


def discriminate(setup: GANSetup, d_variables, real, fake, cond):
  """D's logits on real, fake and (if conditional) real-with-mismatched-condition images.

  The D step, the G step and evaluation all score images through this one function, so D sees
  every kind of image the same way in each. With BatchNorm each kind is its own batch (as in the
  PyTorch DCGAN; a mixed batch lets D win on batch statistics alone); per-example norms take all
  kinds as one batch, which is the same function and one call.

  Args:
    real, fake: float32[B, H, W, 3] in [-1, 1].
    cond: labels [B], token ids [B, L] or None.

  Returns:
    (logits, new batch_stats): logits has "real", "fake" [B] and, when conditional, "mismatch"
    [B] with "mismatch_weight" [B] (0 where the rolled condition happens to equal the true one).
  """
  kinds = {"real": (real, cond), "fake": (fake, cond)}
  logits = {}
  if cond is not None:
    wrong, logits["mismatch_weight"] = _mismatched(cond)
    kinds["mismatch"] = (real, wrong)
  apply = functools.partial(setup.discriminator.apply, train=True, mutable=["batch_stats"])
  if getattr(setup.discriminator, "norm", "batch") == "batch":
    stats = d_variables.get("batch_stats")
    for kind, (images, conds) in kinds.items():
      logits[kind], updates = apply(d_variables | {"batch_stats": stats}, images, conds)
      stats = updates["batch_stats"]
    return logits, stats
  images = jnp.concatenate([images for images, _ in kinds.values()])
  conds = None if cond is None else jnp.concatenate([c for _, c in kinds.values()])
  out, updates = apply(d_variables, images, conds)
  b = real.shape[0]
  for i, kind in enumerate(kinds):
    logits[kind] = out[i * b : (i + 1) * b]
  return logits, updates.get("batch_stats", {})


def matching_aware_d_loss(logits, loss: str) -> jax.Array:
  """D's loss on `discriminate` logits: real vs fake, plus GAN-CLS's mismatched pairs if present.

  GAN-CLS (and StackGAN): the "fake" side averages generated images and real images with a wrong
  condition, each weighted 1/2.
  """
  real_term = losses.discriminator_term(logits["real"], loss, is_real=True)
  fake_term = losses.discriminator_term(logits["fake"], loss, is_real=False)
  if "mismatch" in logits:
    wrong_term = losses.discriminator_term(
      logits["mismatch"], loss, is_real=False, weights=logits["mismatch_weight"]
    )
    fake_term = 0.5 * (fake_term + wrong_term)
  return real_term + fake_term


def d_metrics(d_logits, g_logits) -> dict[str, jax.Array]:
  """Train metrics of D's logits in the D step and of D(G(z)) in the G step."""
  metrics = {
    "train/d_real_accuracy": jnp.mean(d_logits["real"] > 0),
    "train/d_fake_accuracy": jnp.mean(d_logits["fake"] < 0),
    "train/d_of_g_z": jnp.mean(jax.nn.sigmoid(g_logits["fake"])),
  }
  if "mismatch" in d_logits:
    weight = d_logits["mismatch_weight"]
    metrics["train/d_mismatch_accuracy"] = jnp.sum((d_logits["mismatch"] < 0) * weight) / (
      jnp.maximum(jnp.sum(weight), 1.0)
    )
  return metrics


def eval_sums(setup, d_variables, real, fake, cond) -> dict[str, jax.Array]:
  """Summed eval counts of D as a real/fake (and mismatch) classifier; see `finalize_eval`."""
  logits, _ = discriminate(setup, d_variables, real, fake, cond)
  real_logits, fake_logits = logits["real"], logits["fake"]
  counts = losses.real_fake_confusion(real_logits, fake_logits)
  metrics = {k: v.astype(jnp.float32) for k, v in counts.items()}
  metrics["d_loss_sum"] = real.shape[0] * losses.discriminator_loss(
    real_logits, fake_logits, setup.loss
  )
  metrics["num_examples"] = jnp.asarray(real.shape[0], jnp.float32)
  if cond is not None:
    weight = logits["mismatch_weight"]
    metrics["mismatch_correct"] = jnp.sum((logits["mismatch"] < 0) * weight)
    metrics["mismatch_total"] = jnp.sum(weight)
  return metrics


def train_step(state: GANState, batch, rng: jax.Array, *, setup: GANSetup):
  """One D update then one G update on the same batch.

  Args:
    batch: image uint8[B, H, W, 3], plus label int32[B] or tokens int32[B, L] when conditional.

  Returns:
    (new state, metrics of this step).
  """
  rng = jax.random.fold_in(rng, state.step)
  d_noise_rng, g_noise_rng = jax.random.split(rng)
  real = to_float_images(batch["image"])
  cond = condition_of(batch, setup.condition)
  b = real.shape[0]
  g, d = state.generator, state.discriminator

  z = jax.random.normal(d_noise_rng, (b, setup.nz), jnp.float32)
  fake, g_updates = setup.generator.apply(
    g.variables(), z, cond, train=True, mutable=["batch_stats"]
  )
  fake = jax.lax.stop_gradient(fake)

  def d_loss_fn(d_params):
    logits, stats = discriminate(setup, d.variables(d_params), real, fake, cond)
    return matching_aware_d_loss(logits, setup.loss), (stats, logits)

  (d_loss, (d_stats, d_logits)), d_grads = jax.value_and_grad(d_loss_fn, has_aux=True)(d.params)
  d = d.apply_gradients(d_grads, setup.d_tx, batch_stats=d_stats)

  z = jax.random.normal(g_noise_rng, (b, setup.nz), jnp.float32)

  def g_loss_fn(g_params):
    fake, updates = setup.generator.apply(
      g.variables(g_params), z, cond, train=True, mutable=["batch_stats"]
    )
    logits, _ = discriminate(setup, d.variables(), real, fake, cond)  # D's stat updates dropped
    return losses.generator_loss(logits["fake"], setup.loss), (updates["batch_stats"], logits)

  (g_loss, (g_stats, g_logits)), g_grads = jax.value_and_grad(g_loss_fn, has_aux=True)(g.params)
  g = g.apply_gradients(g_grads, setup.g_tx, batch_stats=g_stats)
  del g_updates  # G's statistics come from its own update pass

  new_state = state.replace(
    step=state.step + 1,
    generator=g,
    discriminator=d,
    ema_params=ema_update(state.ema_params, g.params, state.step, setup.ema_decay),
  )
  metrics = {"train/d_loss": d_loss, "train/g_loss": g_loss} | d_metrics(d_logits, g_logits)
  return new_state, metrics


def generate(state: GANState, z: jax.Array, cond, *, setup: GANSetup, use_ema: bool = True):
  """Generator in inference mode (running BatchNorm statistics). z: [B, nz] -> [B, H, W, 3]."""
  params = state.ema_params if use_ema else state.generator.params
  return setup.generator.apply(state.generator.variables(params), z, cond, train=False)


def eval_step(state: GANState, batch, rng: jax.Array, *, setup: GANSetup):
  """D as a real/fake classifier on held-out real images and fresh samples (summed counts)."""
  real = to_float_images(batch["image"])
  cond = condition_of(batch, setup.condition)
  z = jax.random.normal(rng, (real.shape[0], setup.nz), jnp.float32)
  fake = generate(state, z, cond, setup=setup, use_ema=False)
  return eval_sums(setup, state.discriminator.variables(), real, fake, cond)


def finalize_eval(sums: dict[str, float]) -> dict[str, float]:
  counts = {k: sums[k] for k in ("true_pos", "false_neg", "false_pos", "true_neg")}
  results = {f"eval/d_{k}": float(v) for k, v in losses.classifier_metrics(counts).items()}
  results["eval/d_loss"] = sums["d_loss_sum"] / max(sums["num_examples"], 1.0)
  if "mismatch_total" in sums:
    results["eval/d_mismatch_accuracy"] = sums["mismatch_correct"] / max(sums["mismatch_total"], 1)
  return results


def sample(state: GANState, inputs, rng: jax.Array, *, setup: GANSetup):
  """Fixed-noise samples for the grid: inputs has `z` [N, nz] and `label`/`tokens` if conditional."""
  del rng  # the grid uses fixed noise so that steps are comparable
  return generate(state, inputs["z"], condition_of(inputs, setup.condition), setup=setup)
