"""DCGAN on CelebA 64x64 (TFDS `celeb_a`, manual download), the paper's setting: nz=100,
ngf=ndf=64, Adam(2e-4, b1=0.5), batch 128. The `tiny` variant trains on built-in shapes so that
it runs anywhere."""

import ml_collections

from configs import gan_base


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  c = gan_base.get_base_config()
  c.model.update(condition="none")
  c.data.update(name="celeba", resolution=64, batch_size=128, eval_split="validation")
  c.train.update(num_steps=50_000, eval_every=2_000, ckpt_every=2_000)
  if arg == "tiny":
    gan_base.apply_tiny(c)
    c.data.update(name="shapes", eval_split="test")
  elif arg:
    raise ValueError(f"Unknown config argument {arg!r}; valid: '' or 'tiny'.")
  return c
