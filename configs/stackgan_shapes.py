"""StackGAN on built-in captioned shapes: Stage I at 64x64, Stage II at 128x128, on 2 CPU cores.

Text embeddings come from the shapes CLIP (train configs/clip_shapes.py first):

  python -m experiments.train --config=configs/clip_shapes.py --workdir=runs/clip_shapes
  python -m experiments.train --config=configs/stackgan_shapes.py --workdir=runs/stackgan_s1 \
    --config.model.text_encoder.checkpoint=runs/clip_shapes/export
  python -m experiments.train --config=configs/stackgan_shapes.py:stage2 \
    --workdir=runs/stackgan_s2 --config.model.stage1_checkpoint=runs/stackgan_s1

Stage II inherits the text encoder from its Stage I. Its sample grids put each caption's Stage-I
image (upsampled) beside the Stage-II image, and eval/samples_sharpness_* compare the two.
"""

import ml_collections

from configs import stackgan_base


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  stage, tiny = stackgan_base.parse_variant(arg)
  c = stackgan_base.get_base_config()
  c.model.update(g_width=32, d_width=32)
  c.data.update(name="shapes", batch_size=64)
  c.optim.lr_halve_every_epochs = 0  # shapes is procedural: no epochs
  c.train.update(num_steps=2_000, log_every=100, eval_every=500, ckpt_every=500)
  if stage == 2:
    stackgan_base.apply_stage2(c, resolution=128, batch_size=32)
    c.model.update(g_width=32, d_width=16, num_residual=1)
    c.optim.lr_halve_every_epochs = 0
  if tiny:
    stackgan_base.apply_tiny(c)
    c.optim.lr_halve_every_epochs = 0
  return c
