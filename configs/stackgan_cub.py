"""StackGAN on CUB-200-2011 birds with their captions: Stage I (64x64), then Stage II (256x256).

Text embeddings come from a frozen CLIP trained by configs/clip_cub.py (or an imported HF CLIP),
or from StackGAN's char-CNN-RNN embeddings. Needs the CUB images and captions under
--config.data.data_dir (without them the error gives the layout and where to download):

  python -m experiments.train --config=configs/stackgan_cub.py --workdir=runs/stackgan_cub_s1 \
    --config.model.text_encoder.checkpoint=runs/clip_cub/export
  python -m experiments.train --config=configs/stackgan_cub.py:stage2 \
    --workdir=runs/stackgan_cub_s2 --config.model.stage1_checkpoint=runs/stackgan_cub_s1

Schedules as the reference: Stage I 120 epochs of 8,855 images at batch 128 (70 steps each),
Stage II 600 epochs at batch 40 (222 steps each).
"""

import ml_collections

from configs import stackgan_base


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  stage, tiny = stackgan_base.parse_variant(arg)
  c = stackgan_base.get_base_config()
  c.data.update(
    name="cub",
    data_dir="~/data/birds",  # holds CUB_200_2011/ and the captions (text_c10/ or captions.pickle)
    caption_layout="auto",  # "text_c10" | "attngan" | "auto"
    crop="stackgan",  # square crop of 0.75 x the box's larger side around the bird
    augment=True,  # train: resize to 76/64 of the resolution, random crop + flip
  )
  c.train.update(num_steps=120 * 70, log_every=100, eval_every=1_000, ckpt_every=1_000)
  if stage == 2:
    stackgan_base.apply_stage2(c, resolution=256, batch_size=40)
    c.train.update(num_steps=600 * 222, eval_every=5_000, ckpt_every=5_000)
  if tiny:
    stackgan_base.apply_tiny(c)
  return c
