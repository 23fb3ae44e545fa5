"""Train-state containers shared by every model family."""

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct


class NetworkState(struct.PyTreeNode):
  """One network's trainable state: params, mutable collections (BatchNorm) and optimizer state."""

  params: Any
  batch_stats: Any
  opt_state: optax.OptState

  @classmethod
  def create(cls, variables: dict, tx: optax.GradientTransformation) -> "NetworkState":
    params = variables["params"]
    return cls(
      params=params, batch_stats=variables.get("batch_stats", {}), opt_state=tx.init(params)
    )

  def variables(self, params=None) -> dict:
    """The `{"params", "batch_stats"}` dict for `module.apply`, optionally with other params."""
    variables = {"params": self.params if params is None else params}
    if self.batch_stats:
      variables["batch_stats"] = self.batch_stats
    return variables

  def apply_gradients(
    self, grads, tx: optax.GradientTransformation, batch_stats=None
  ) -> "NetworkState":
    updates, opt_state = tx.update(grads, self.opt_state, self.params)
    return self.replace(
      params=optax.apply_updates(self.params, updates),
      opt_state=opt_state,
      batch_stats=self.batch_stats if batch_stats is None else batch_stats,
    )


def ema_decay_at(step: jax.Array, decay: float) -> jax.Array:
  """Warmed-up EMA decay min(decay, (1 + t) / (10 + t)), so early averages are not stuck at init."""
  t = step.astype(jnp.float32)
  return jnp.minimum(decay, (1.0 + t) / (10.0 + t))


def ema_update(ema_params, params, step: jax.Array, decay: float):
  """ema <- d * ema + (1 - d) * params with the warmed-up decay d; decay 0 copies params."""
  d = ema_decay_at(step, decay)
  return jax.tree.map(lambda e, p: d * e + (1.0 - d) * p, ema_params, params)
