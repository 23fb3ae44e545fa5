"""Shared defaults of the GAN configs (DCGAN and the conditional GAN); not a config by itself."""

import ml_collections
from ml_collections import config_dict

from configs import common


def get_base_config() -> ml_collections.ConfigDict:
  c = common.get_common_config()
  c.model = dict(
    family="gan",
    name="dcgan",
    condition="none",  # "none" | "label" (class label) | "text" (caption)
    nz=100,  # latent size (Radford et al. 2016)
    g_width=64,  # ngf: G channels at the last upsampling stage
    d_width=64,  # ndf: D channels after the first conv
    cond_dim=128,  # size of the label/text embedding concatenated to z
    num_classes=32,  # labels of captioned shapes: colour x shape
    loss="nonsaturating",  # or "hinge"
    d_norm="batch",  # discriminator normalisation: "batch" (paper), "layer" or "none"
    # "word": learned with the GAN; "clip": frozen, from an exported CLIP folder (checkpoint).
    text_encoder=dict(
      name="word",
      embed_dim=128,
      num_layers=1,
      num_heads=4,
      checkpoint=config_dict.placeholder(str),
    ),
  )
  c.optim = dict(g_lr=2e-4, d_lr=2e-4, b1=0.5, b2=0.999, ema_decay=0.999)
  return c


def apply_tiny(c: ml_collections.ConfigDict) -> None:
  """Tests and smoke runs: seconds on CPU."""
  c.model.update(g_width=8, d_width=8, nz=16, cond_dim=16)
  c.model.text_encoder.update(embed_dim=16, num_layers=1, num_heads=2)
  c.data.update(resolution=32, batch_size=8, num_threads=2, prefetch=2)
  c.train.update(num_steps=4, log_every=2, eval_every=4, ckpt_every=2, keep_checkpoints=2)
  c.eval.update(batch_size=8, num_batches=1)
