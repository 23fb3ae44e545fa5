"""CLIP score and CLIP R-precision of (image, caption) sets, with any CLIP (ours or imported).

CLIP score follows torchmetrics' `CLIPScore`: 100 * cosine similarity of the L2-normalised image
and text embeddings, averaged over pairs, then clamped at 0 (`max(mean, 0)`; torchmetrics clamps
the mean, not each pair). CLIP R-precision follows AttnGAN/DM-GAN: for each image, its own caption
and `num_candidates - 1` captions of other pairs are ranked by similarity; a hit is the true
caption ranked first.
"""

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from t2i_jax.models.clip import CLIP, normalize_images


@functools.partial(jax.jit, static_argnames=("model",))
def _embed(model: CLIP, params, token_ids, images):
  """L2-normalised projected embeddings: ([B, P] image, [B, P] text). images: uint8[B, H, W, 3]."""
  images = images.astype(jnp.float32) / 255.0
  if images.shape[1] != model.image_size or images.shape[2] != model.image_size:
    images = jax.image.resize(
      images, (images.shape[0], model.image_size, model.image_size, 3), "bicubic"
    )
  image = model.apply({"params": params}, normalize_images(images), method=CLIP.embed_image)
  text = model.apply({"params": params}, token_ids, method=CLIP.embed_text)
  unit = lambda x: x / jnp.linalg.norm(x, axis=-1, keepdims=True)  # noqa: E731
  return unit(image), unit(text)


def embed_pairs(model, params, tokenizer, images, captions, batch_size=64):
  """Embeds images (uint8[N, H, W, 3], square) and captions in batches of a fixed size.

  Returns:
    (image_embeds float64[N, P], text_embeds float64[N, P]).
  """
  if len(images) != len(captions):
    raise ValueError(f"{len(images)} images but {len(captions)} captions.")
  image_parts, text_parts = [], []
  for start in range(0, len(images), batch_size):
    chunk_images = np.asarray(images[start : start + batch_size])
    chunk_captions = list(captions[start : start + batch_size])
    n = len(chunk_captions)
    pad = batch_size - n  # one compiled shape for every batch
    chunk_images = np.concatenate([chunk_images, np.repeat(chunk_images[-1:], pad, axis=0)])
    tokens = tokenizer.encode(chunk_captions + chunk_captions[-1:] * pad, model.context_length)
    image, text = _embed(model, params, jnp.asarray(tokens), jnp.asarray(chunk_images))
    image_parts.append(np.asarray(image, np.float64)[:n])
    text_parts.append(np.asarray(text, np.float64)[:n])
  return np.concatenate(image_parts), np.concatenate(text_parts)


def clip_score_from_embeddings(image_embeds: np.ndarray, text_embeds: np.ndarray) -> float:
  """torchmetrics CLIPScore on already normalised embeddings [N, P]."""
  per_pair = 100.0 * np.sum(image_embeds * text_embeds, axis=-1)
  return float(max(per_pair.mean(), 0.0))


def r_precision_from_embeddings(
  image_embeds: np.ndarray, text_embeds: np.ndarray, num_candidates: int = 100, seed: int = 0
) -> float:
  """Fraction of images whose own caption outranks `num_candidates - 1` other pairs' captions."""
  n = len(image_embeds)
  if n < 2:
    raise ValueError("CLIP R-precision needs at least 2 pairs.")
  num_candidates = min(num_candidates, n)
  rng = np.random.default_rng(seed)
  hits = 0
  for i in range(n):
    others = rng.choice(np.delete(np.arange(n), i), num_candidates - 1, replace=False)
    candidates = np.concatenate([[i], others])
    scores = text_embeds[candidates] @ image_embeds[i]
    hits += int(np.argmax(scores) == 0)
  return hits / n


def run(
  model: CLIP,
  params,
  tokenizer,
  images: np.ndarray,
  captions: Sequence[str],
  *,
  batch_size: int = 64,
  num_candidates: int = 100,
  seed: int = 0,
) -> dict[str, float]:
  """CLIP score and CLIP R-precision of N (image, caption) pairs.

  Args:
    model, params, tokenizer: a CLIP, e.g. from `t2i_jax.clip.export.load_clip(path)`.
    images: uint8[N, H, W, 3] square images (resized to the model's image size).
    captions: N captions.

  Returns:
    {"clip_score": float, "clip_r_precision": float}.
  """
  image_embeds, text_embeds = embed_pairs(model, params, tokenizer, images, captions, batch_size)
  return {
    "clip_score": clip_score_from_embeddings(image_embeds, text_embeds),
    "clip_r_precision": r_precision_from_embeddings(
      image_embeds, text_embeds, num_candidates, seed
    ),
  }
