"""Model family name -> Task builder. A plain dict: adding a family is one line here."""

import ml_collections

from t2i_jax.classifier.task import build_classifier_task
from t2i_jax.clip.task import build_clip_task
from t2i_jax.gan.stackgan_task import build_stackgan_task
from t2i_jax.gan.task import build_gan_task
from t2i_jax.ldm.task import build_ldm_task
from t2i_jax.train.task import Task
from t2i_jax.vae.task import build_vae_task

FAMILIES = {
  "gan": build_gan_task,
  "clip": build_clip_task,
  "stackgan": build_stackgan_task,
  "classifier": build_classifier_task,
  "vae": build_vae_task,
  "ldm": build_ldm_task,
}


def build_task(config: ml_collections.ConfigDict) -> Task:
  family = config.model.family
  if family not in FAMILIES:
    raise ValueError(
      f"Unknown config.model.family {family!r}; valid families: {', '.join(sorted(FAMILIES))}."
    )
  return FAMILIES[family](config)
