"""Latent diffusion text-to-image on built-in captioned shapes (32x32 images, 8x8x4 latents).

Needs the autoencoder of configs/vae_shapes.py; captions go through a small word-level
transformer trained with the UNet, or a frozen shapes CLIP (text_encoder.name=clip):

  python -m experiments.train --config=configs/vae_shapes.py --workdir=runs/vae_shapes
  python -m experiments.train --config=configs/ldm_shapes.py --workdir=runs/ldm_shapes \
    --config.model.vae_checkpoint=runs/vae_shapes
  python -m experiments.sample --workdir=runs/ldm_shapes --prompt="a large red star in the center"
"""

import ml_collections
from ml_collections import config_dict

from configs import common


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  c = common.get_common_config()
  c.model = dict(
    family="ldm",
    vae_checkpoint=config_dict.placeholder(str),  # export/ (or workdir) of a configs/vae_* run
    # "word": learned with the UNet; "clip": frozen, from an exported CLIP folder (checkpoint).
    text_encoder=dict(
      name="word",
      embed_dim=64,
      num_layers=2,
      num_heads=4,
      checkpoint=config_dict.placeholder(str),
    ),
    context_mask=True,  # hide padding tokens from cross-attention (SD checkpoints: False)
    unet=dict(
      block_out_channels=(64, 128),
      cross_attention=(True, True),
      layers_per_block=1,
      num_heads=4,
      transformer_depth=1,
      norm_num_groups=16,
      remat=False,  # recompute each block's activations in the backward pass (saves memory)
      dtype="float32",  # or "bfloat16" compute (params stay float32)
    ),
    diffusion=dict(
      schedule="scaled_linear",  # "linear" | "scaled_linear" | "squaredcos_cap_v2"
      num_train_timesteps=1000,
      beta_start=0.00085,  # Stable Diffusion's
      beta_end=0.012,
      rescale_zero_terminal_snr=False,
      prediction_type="epsilon",  # "epsilon" | "v_prediction" | "sample"
      weighting="min_snr",  # "uniform" | "min_snr"
      min_snr_gamma=5.0,
      cond_drop_prob=0.1,  # trains the unconditional model for classifier-free guidance
    ),
    # Sample grids at eval (and the exported pipeline's defaults).
    sample=dict(sampler="ddim", num_steps=25, guidance_scale=3.0),
  )
  c.data.update(resolution=32, batch_size=64)
  c.optim = dict(
    lr=1e-3,
    b1=0.9,
    b2=0.999,
    weight_decay=0.0,
    warmup_steps=200,
    grad_clip_norm=1.0,
    ema_decay=0.999,
  )
  # ~27 min on 2 CPU cores; colour, shape and position follow the prompt from ~2000 steps.
  c.train.update(num_steps=2_500, log_every=100, eval_every=500, ckpt_every=500)
  c.eval.update(batch_size=64, num_batches=2)
  if arg == "tiny":
    c.model.text_encoder.update(embed_dim=16, num_layers=1, num_heads=2)
    c.model.unet.update(block_out_channels=(16, 32), num_heads=2, norm_num_groups=8)
    c.model.sample.update(num_steps=2)
    c.data.update(batch_size=4, num_threads=2, prefetch=2)
    c.train.update(num_steps=2, log_every=1, eval_every=2, ckpt_every=2, keep_checkpoints=2)
    c.eval.update(batch_size=4, num_batches=1)
  elif arg:
    raise ValueError(f"Unknown config argument {arg!r}; valid: '' or 'tiny'.")
  return c
