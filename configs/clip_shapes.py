"""CLIP-style contrastive text/image encoders on built-in captioned shapes.

Evaluates image<->text retrieval and zero-shot colour / shape / size / position accuracy on the
test and held-out splits. At the end it exports `workdir/export/`, the frozen text encoder that
other shapes configs load with `--config.model.text_encoder.name=clip
--config.model.text_encoder.checkpoint=<workdir>/export`.
"""

import ml_collections

from configs import common


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  c = common.get_common_config()
  c.model = dict(
    family="clip",
    tokenizer="word",  # "word" (vocabulary of the dataset) or "clip_bpe" (OpenAI's BPE)
    text_width=128,
    text_layers=2,
    text_heads=4,
    patch_size=4,
    vision_width=128,
    vision_layers=2,
    vision_heads=4,
    projection_dim=64,
    activation="quick_gelu",  # or "gelu"
  )
  c.data.update(resolution=32, batch_size=128, max_caption_length=16)
  c.optim = dict(lr=1e-3, b1=0.9, b2=0.98, weight_decay=0.1, warmup_steps=100, grad_clip_norm=1.0)
  c.train.update(num_steps=2_000, log_every=100, eval_every=500, ckpt_every=500)
  c.eval.update(batch_size=256, num_batches=2, extra_splits=("heldout",))
  if arg == "tiny":
    apply_tiny(c)
  elif arg:
    raise ValueError(f"Unknown config argument {arg!r}; valid: '' or 'tiny'.")
  return c


def apply_tiny(c: ml_collections.ConfigDict) -> None:
  """Tests and smoke runs: seconds on CPU."""
  c.model.update(text_width=16, text_layers=1, text_heads=2, vision_width=16, vision_layers=1)
  c.model.update(vision_heads=2, patch_size=8, projection_dim=8)
  c.data.update(batch_size=8, num_threads=2, prefetch=2)
  c.train.update(num_steps=4, log_every=2, eval_every=4, ckpt_every=2, keep_checkpoints=2)
  c.eval.update(batch_size=16, num_batches=1)
