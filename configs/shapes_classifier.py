"""Shapes attribute classifier: colour, shape, size and position of the first object, from pixels.

The judge of generated shapes images. It trains on clean renders of ALL colour-shape pairs (it
must read a generator's held-out pairs as well as any other) and reports its accuracy per
attribute on the test split, overall and on `model.report_pairs` (the generators' default
held-out pairs). At the end it exports `workdir/export/`, which `experiments.evaluate
--classifier_checkpoint` (or `config.eval.classifier_checkpoint`) loads for the shapes attribute
accuracy and the Inception Score over its logits.
"""

import ml_collections

from configs import common


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  c = common.get_common_config()
  c.model = dict(
    family="classifier",
    width=32,  # channels of the first conv stage (then x2, x4)
    hidden=128,
    report_pairs=c.data.heldout_pairs,  # accuracy on these pairs is reported separately
  )
  c.data.update(resolution=32, batch_size=128, max_objects=1, heldout_pairs=())  # input side
  c.optim = dict(lr=2e-3, b1=0.9, b2=0.999, weight_decay=1e-4, warmup_steps=100)  # cosine decay
  c.train.update(num_steps=800, log_every=100, eval_every=400, ckpt_every=400)
  c.eval.update(batch_size=500, num_batches=4)
  if arg == "tiny":
    c.model.update(width=8, hidden=16)
    c.data.update(batch_size=16, num_threads=2, prefetch=2)
    c.optim.warmup_steps = 1
    c.train.update(num_steps=4, log_every=2, eval_every=4, ckpt_every=2, keep_checkpoints=2)
    c.eval.update(batch_size=16, num_batches=1)
  elif arg:
    raise ValueError(f"Unknown config argument {arg!r}; valid: '' or 'tiny'.")
  return c
