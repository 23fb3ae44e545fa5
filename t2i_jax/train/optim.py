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
  halve_every_steps: int = 0,
) -> optax.GradientTransformation:
  """Adam(W) with optional linear warm-up, step decay and global-norm clipping (0 disables each).

  halve_every_steps: the learning rate halves every that many steps (StackGAN's "halve every N
  epochs" with N epochs converted to steps); counted after the warm-up.
  """
  if name not in OPTIMIZERS:
    raise ValueError(f"Unknown optimizer {name!r}; valid names: {', '.join(OPTIMIZERS)}.")
  if halve_every_steps < 0 or warmup_steps < 0:
    raise ValueError(
      f"warmup_steps ({warmup_steps}) and halve_every_steps ({halve_every_steps}) must be >= 0."
    )
  lr = learning_rate
  if halve_every_steps > 0:
    lr = optax.exponential_decay(learning_rate, halve_every_steps, 0.5, staircase=True)
  if warmup_steps > 0:
    warmup = optax.linear_schedule(0.0, learning_rate, warmup_steps)
    lr = optax.join_schedules([warmup, lr], [warmup_steps]) if halve_every_steps else warmup
  if name == "adam":
    tx = optax.adam(lr, b1=b1, b2=b2)
  else:
    tx = optax.adamw(lr, b1=b1, b2=b2, weight_decay=weight_decay)
  if grad_clip_norm > 0:
    tx = optax.chain(optax.clip_by_global_norm(grad_clip_norm), tx)
  return tx
