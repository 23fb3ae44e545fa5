"""Shared defaults of the GAN configs (DCGAN and the conditional GAN); not a config by itself."""

import ml_collections
from ml_collections import config_dict


def get_base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
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
    text_encoder=dict(name="word", embed_dim=128, num_layers=1, num_heads=4),
  )
  c.data = dict(
    name="shapes",  # "shapes" (built in) | "celeba" (TFDS, manual download)
    resolution=64,  # 32, 64 or 128 (sets the DCGAN depth)
    max_objects=1,  # shapes: objects per image, 1 or 2
    heldout_pairs=(
      ("red", "triangle"),
      ("blue", "star"),
      ("green", "square"),
      ("yellow", "circle"),
    ),
    jitter=True,  # shapes: small random offset / scale / rotation per object
    seed=0,  # shapes: which procedural dataset
    data_dir=config_dict.placeholder(str),  # TFDS data_dir (None: ~/tensorflow_datasets)
    eval_split="test",
    batch_size=64,  # global, over all devices and hosts
    max_caption_length=16,  # tokens per caption, EOS included
    num_threads=4,  # host threads that build batches
    prefetch=4,  # host batches built ahead of the step
  )
  c.optim = dict(g_lr=2e-4, d_lr=2e-4, b1=0.5, b2=0.999, ema_decay=0.999)
  c.train = dict(
    seed=0,  # params, noise and data order
    num_steps=20_000,
    log_every=100,
    eval_every=1_000,  # eval metrics and a sample grid
    ckpt_every=1_000,
    keep_checkpoints=3,
  )
  c.eval = dict(batch_size=64, num_batches=4, seed=1)
  c.mesh = dict(axes=("data",), shape=(-1,))
  # logical axis -> mesh axis. FSDP: add ("conv_out", "data"), ("mlp", "data"), ("vocab", "data").
  c.sharding_rules = (("batch", "data"),)
  c.distributed = dict(
    enabled=False,  # call jax.distributed.initialize() (TPU pods, SLURM/MPI GPU clusters)
    coordinator_address=config_dict.placeholder(str),  # "host:port"; None: auto-detect
    num_processes=config_dict.placeholder(int),
    process_id=config_dict.placeholder(int),
    initialization_timeout=300,
  )
  return c


def apply_tiny(c: ml_collections.ConfigDict) -> None:
  """Tests and smoke runs: seconds on CPU."""
  c.model.update(g_width=8, d_width=8, nz=16, cond_dim=16)
  c.model.text_encoder.update(embed_dim=16, num_layers=1, num_heads=2)
  c.data.update(resolution=32, batch_size=8, num_threads=2, prefetch=2)
  c.train.update(num_steps=4, log_every=2, eval_every=4, ckpt_every=2, keep_checkpoints=2)
  c.eval.update(batch_size=8, num_batches=1)
