"""Unconditional DCGAN (Radford et al. 2016) on built-in captioned shapes at 64x64."""

import ml_collections

from configs import gan_base


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  c = gan_base.get_base_config()
  c.model.update(condition="none")
  c.data.update(resolution=64, batch_size=64)
  c.train.update(num_steps=5_000, eval_every=500, ckpt_every=500)
  if arg == "tiny":
    gan_base.apply_tiny(c)
  elif arg:
    raise ValueError(f"Unknown config argument {arg!r}; valid: '' or 'tiny'.")
  return c
