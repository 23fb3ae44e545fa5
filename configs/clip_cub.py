"""CLIP-style contrastive encoders on CUB-200-2011 birds with their captions (Reed et al. 2016).

Needs the CUB images and captions under --config.data.data_dir (the error message without them
gives the layout and where to download). Its export (workdir/export/) is the frozen text encoder
of the StackGAN CUB configs.
"""

import ml_collections

from configs import clip_shapes


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  c = clip_shapes.get_config()
  c.model.update(text_width=256, text_layers=4, text_heads=4, vision_width=256)
  c.model.update(vision_layers=4, vision_heads=4, patch_size=8, projection_dim=128)
  c.data.update(
    name="cub",
    data_dir="~/data/birds",  # holds CUB_200_2011/ and the captions (text_c10/ or captions.pickle)
    resolution=64,
    batch_size=128,
    max_caption_length=32,
    caption_layout="auto",  # "text_c10" | "attngan" | "auto"
    crop="stackgan",  # crop around the bounding box as StackGAN does, or "none"
    augment=True,  # random crop + flip of the 76px load for training
  )
  c.train.update(num_steps=20_000, eval_every=1_000, ckpt_every=1_000)
  c.eval.update(batch_size=256, num_batches=1, extra_splits=())
  if arg == "tiny":
    clip_shapes.apply_tiny(c)
    c.eval.batch_size = 8
  elif arg:
    raise ValueError(f"Unknown config argument {arg!r}; valid: '' or 'tiny'.")
  return c
