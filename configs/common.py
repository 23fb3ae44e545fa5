"""Config groups every experiment shares (data, train, eval, mesh, distributed); not a config."""

import ml_collections
from ml_collections import config_dict


def get_common_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.data = dict(
    name="shapes",  # "shapes" (built in) | "celeba" (TFDS, manual download) | "cub"
    resolution=64,  # image size
    max_objects=1,  # shapes: objects per image, 1 or 2
    heldout_pairs=(
      ("red", "triangle"),
      ("blue", "star"),
      ("green", "square"),
      ("yellow", "circle"),
    ),
    jitter=True,  # shapes: small random offset / scale / rotation per object
    seed=0,  # shapes: which procedural dataset
    data_dir=config_dict.placeholder(str),  # dataset root / TFDS data_dir (None: TFDS default)
    eval_split="test",
    batch_size=64,  # global, over all devices and hosts
    max_caption_length=16,  # tokens per caption, EOS included
    num_threads=4,  # host threads that build batches
    prefetch=4,  # host batches built ahead of the step
  )
  c.train = dict(
    seed=0,  # params, noise and data order
    num_steps=20_000,
    log_every=100,
    eval_every=1_000,  # eval metrics (and a sample grid for generative models)
    ckpt_every=1_000,
    keep_checkpoints=3,
  )
  c.eval = dict(
    batch_size=64,  # also the batch of generation and feature extraction in sample metrics
    num_batches=4,
    seed=1,  # eval batches; which real images and captions the sample metrics use
    extra_splits=(),  # e.g. ("heldout",)
    # Sample metrics (t2i_jax/eval/suite.py) during training, e.g. ("fid", "kid",
    # "shapes_attributes"), every metrics_every steps and at the end, logged as eval/<key>;
    # `python -m experiments.evaluate` runs them on a checkpoint.
    metrics=(),
    metrics_every=5_000,
    metrics_num_samples=1_000,  # N generated (and real) images
    inception_weights=config_dict.placeholder(str),  # FID Inception .pt/.pth (fid, kid, PR, IS)
    clip_checkpoint=config_dict.placeholder(str),  # exported CLIP folder (clip_score)
    classifier_checkpoint=config_dict.placeholder(str),  # configs/shapes_classifier.py export
    cache_dir=config_dict.placeholder(str),  # real reference statistics; None: <workdir>/eval/cache
  )
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
