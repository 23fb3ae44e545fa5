"""Text-conditional DCGAN on built-in captioned shapes: the quickstart model.

The generator gets a caption embedding (a word-embedding text encoder learned with it); the
discriminator is projection-conditioned and matching-aware. Trains on 2 CPU cores in ~10 minutes.
"""

import ml_collections

from configs import gan_base


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  c = gan_base.get_base_config()
  # Per-example LayerNorm in D: with BatchNorm, D cannot see that every sample in a batch has
  # the same flaw (e.g. a grey background), which it normalises away.
  c.model.update(condition="text", g_width=32, d_width=32, d_norm="layer")
  c.data.update(resolution=32, batch_size=64)
  c.train.update(num_steps=1_500, log_every=50, eval_every=250, ckpt_every=250)
  if arg == "tiny":
    gan_base.apply_tiny(c)
  elif arg:
    raise ValueError(f"Unknown config argument {arg!r}; valid: '' or 'tiny'.")
  return c
