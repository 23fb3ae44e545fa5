"""Shared defaults of the StackGAN configs (Zhang et al., ICCV 2017); not a config by itself.

Defaults follow StackGAN-Pytorch's birds_s1.yml / birds_s2.yml: Adam 2e-4 (b1 0.5) for G and D,
KL weight 2, both learning rates halved every 20 (Stage I) or 100 (Stage II) epochs.
"""

import ml_collections
from ml_collections import config_dict

from configs import common


def get_base_config() -> ml_collections.ConfigDict:
  c = common.get_common_config()
  c.model = dict(
    family="stackgan",
    stage=1,  # 1: text -> 64x64; 2: refines a frozen Stage I's images to data.resolution
    z_dim=100,  # noise size (Stage II takes it from its Stage I)
    cond_dim=128,  # conditioning augmentation size N_g
    g_width=128,  # Stage I: 8*g_width channels at 4x4 (128 -> the paper's 1024); Stage II: GF_DIM
    d_width=64,  # DF_DIM
    num_residual=2,  # Stage-II G residual blocks at 16x16
    kl_weight=2.0,  # weight of the conditioning augmentation KL in G's loss
    loss="nonsaturating",  # or "hinge"
    d_condition="concat",  # how D reads the text: "concat" (paper) or "projection" (Miyato 2018)
    # "clip": a frozen exported CLIP embeds the captions (its projected text embedding);
    # "char_cnn_rnn": StackGAN's precomputed embeddings (CUB; set data.text_embeddings too).
    text_encoder=dict(name="clip", checkpoint=config_dict.placeholder(str)),
    # Stage II: the export/ folder (or workdir) of the finished Stage-I run.
    stage1_checkpoint=config_dict.placeholder(str),
  )
  c.data.update(resolution=64, batch_size=128)
  c.data.text_embeddings = config_dict.placeholder(str)  # cub: None | "char_cnn_rnn"
  c.optim = dict(
    g_lr=2e-4,
    d_lr=2e-4,
    b1=0.5,
    b2=0.999,
    ema_decay=0.999,  # samples and the Stage-I export use the EMA generator
    lr_halve_every_epochs=20,  # 0: constant learning rates
  )
  return c


def apply_stage2(c: ml_collections.ConfigDict, resolution: int, batch_size: int) -> None:
  c.model.stage = 2
  c.data.update(resolution=resolution, batch_size=batch_size)
  c.optim.lr_halve_every_epochs = 100


def apply_tiny(c: ml_collections.ConfigDict) -> None:
  """Tests and smoke runs: seconds on CPU (Stage II keeps its resolution, 128 or 256)."""
  c.model.update(z_dim=8, cond_dim=8, g_width=8, d_width=8, num_residual=1)
  c.data.update(batch_size=4, num_threads=2, prefetch=2)
  c.optim.lr_halve_every_epochs = 1
  c.train.update(num_steps=2, log_every=1, eval_every=2, ckpt_every=2, keep_checkpoints=2)
  c.eval.update(batch_size=4, num_batches=1)


def parse_variant(arg: str) -> tuple[int, bool]:
  """'' | 'tiny' | 'stage2' | 'stage2_tiny' -> (stage, tiny)."""
  variants = {"": (1, False), "tiny": (1, True), "stage2": (2, False), "stage2_tiny": (2, True)}
  if arg not in variants:
    raise ValueError(f"Unknown config argument {arg!r}; valid: {', '.join(map(repr, variants))}.")
  return variants[arg]
