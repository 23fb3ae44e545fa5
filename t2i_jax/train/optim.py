"""Optimizers built from config."""

import optax

OPTIMIZERS = ("adam", "adamw")


def make_optimizer(
  name: str = "adam",
  learning_rate: float = 2e-4,
  b1: float = 0.5,
  b2: float = 0.999,
  weight_decay: float = 0.0,
  warmup_steps: int = 0,
  grad_clip_norm: float = 0.0,
) -> optax.GradientTransformation:
  """Adam(W) with optional linear warm-up and global-norm clipping (0 disables either)."""
  if name not in OPTIMIZERS:
    raise ValueError(f"Unknown optimizer {name!r}; valid names: {', '.join(OPTIMIZERS)}.")
  lr = learning_rate
  if warmup_steps > 0:
    lr = optax.linear_schedule(0.0, learning_rate, warmup_steps)
  if name == "adam":
    tx = optax.adam(lr, b1=b1, b2=b2)
  else:
    tx = optax.adamw(lr, b1=b1, b2=b2, weight_decay=weight_decay)
  if grad_clip_norm > 0:
    tx = optax.chain(optax.clip_by_global_norm(grad_clip_norm), tx)
  return tx
