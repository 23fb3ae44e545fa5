"""KL autoencoder (Stable Diffusion design) on built-in captioned shapes: 32x32 -> 8x8x4 latents.

Its export (workdir/export/, with the latent scaling factor measured on training images) is the
autoencoder of configs/ldm_shapes.py.
"""

import ml_collections

from configs import common


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  c = common.get_common_config()
  c.model = dict(
    family="vae",
    block_out_channels=(16, 32, 32),  # 3 levels: downsampling factor 4
    layers_per_block=1,
    latent_channels=4,
    norm_num_groups=8,
    mid_attention=True,
    # l2: with small objects on a flat background an L1 loss settles on the background (its
    # median) and never draws the shapes; LDM pairs L1 with LPIPS instead.
    recon_loss="l2",
    kl_weight=1e-6,  # LDM's; both terms are sums per image (t2i_jax/vae/task.py)
    disc_weight=0.0,  # > 0 adds the patch discriminator (hinge) after disc_start steps
    disc_start=5_000,
    disc_width=32,
    disc_layers=2,
  )
  c.data.update(resolution=32, batch_size=32)
  c.optim = dict(lr=1e-3, b1=0.9, b2=0.999, warmup_steps=100)
  c.train.update(num_steps=1_000, log_every=100, eval_every=500, ckpt_every=500)
  c.eval.update(batch_size=64, num_batches=2)
  if arg == "tiny":
    c.model.update(block_out_channels=(8, 16, 16), disc_width=8)
    c.model.update(disc_weight=0.1, disc_start=1)  # exercises the discriminator path
    c.data.update(batch_size=4, num_threads=2, prefetch=2)
    c.train.update(num_steps=2, log_every=1, eval_every=2, ckpt_every=2, keep_checkpoints=2)
    c.eval.update(batch_size=4, num_batches=1)
  elif arg:
    raise ValueError(f"Unknown config argument {arg!r}; valid: '' or 'tiny'.")
  return c
